//! SGD against hand-computed PyTorch updates; non-finite gradients; frozen parameters.
use ndarray::{array, Array2};
use phm_nn::optim::{Optimizer, Sgd, SgdConfig};
use phm_nn::{Linear, Module, PhmError, PhmLinear};

/// A 1×1 linear layer without bias whose gradient we set by hand.
fn scalar_layer(w: f64) -> Linear<f64> {
    Linear::from_parts(array![[w]], None).unwrap()
}

fn set_grad(layer: &mut Linear<f64>, g: f64) {
    layer.visit_params_mut(&mut |_, p| p.grad_mut().fill(g));
}

fn weight(layer: &Linear<f64>) -> f64 {
    layer.weight()[[0, 0]]
}

#[test]
fn plain_sgd() {
    let mut l = scalar_layer(1.0);
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.1,
        ..Default::default()
    })
    .unwrap();
    set_grad(&mut l, 2.0);
    opt.step(&mut l).unwrap();
    assert!((weight(&l) - 0.8).abs() < 1e-15);
}

#[test]
fn momentum_dampening_and_weight_decay() {
    // lr 0.1, momentum 0.9, dampening 0.5, weight decay 0.01; grads 1.0 then 0.5.
    let mut l = scalar_layer(1.0);
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.5,
        weight_decay: 0.01,
        nesterov: false,
    };
    let mut opt = Sgd::new(cfg).unwrap();
    set_grad(&mut l, 1.0);
    opt.step(&mut l).unwrap();
    // g = 1 + 0.01·1 = 1.01; b = g (first step, no dampening); w = 1 − 0.1·1.01
    let w1 = 1.0 - 0.1 * 1.01;
    assert!((weight(&l) - w1).abs() < 1e-14);
    set_grad(&mut l, 0.5);
    opt.step(&mut l).unwrap();
    let g2 = 0.5 + 0.01 * w1;
    let b2 = 0.9 * 1.01 + 0.5 * g2;
    assert!((weight(&l) - (w1 - 0.1 * b2)).abs() < 1e-14);
}

#[test]
fn nesterov() {
    let mut l = scalar_layer(0.0);
    let cfg = SgdConfig {
        lr: 0.5,
        momentum: 0.5,
        nesterov: true,
        ..Default::default()
    };
    let mut opt = Sgd::new(cfg).unwrap();
    set_grad(&mut l, 1.0);
    opt.step(&mut l).unwrap();
    // b = 1; g = 1 + 0.5·1 = 1.5; w = −0.75
    assert!((weight(&l) + 0.75).abs() < 1e-15);
    set_grad(&mut l, 2.0);
    opt.step(&mut l).unwrap();
    // b = 0.5·1 + 2 = 2.5; g = 2 + 0.5·2.5 = 3.25; w = −0.75 − 1.625
    assert!((weight(&l) + 2.375).abs() < 1e-15);
}

#[test]
fn invalid_hyperparameters() {
    let err = Sgd::<f32>::new(SgdConfig {
        lr: -1.0,
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("lr must be finite and >= 0, got -1"),
        "{err}"
    );
    let err = Sgd::<f32>::new(SgdConfig {
        nesterov: true,
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("momentum = 0"), "{err}");
    let err = Sgd::<f32>::new(SgdConfig {
        momentum: f64::NAN,
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("momentum"), "{err}");
    assert_eq!(SgdConfig::default().lr, 1e-3);
    let mut opt = Sgd::<f32>::new(SgdConfig::default()).unwrap();
    assert!(opt.set_learning_rate(f64::INFINITY).is_err());
    opt.set_learning_rate(0.5).unwrap();
    assert_eq!(opt.learning_rate(), 0.5);
}

#[test]
fn non_finite_gradient_changes_nothing() {
    let mut model = phm_nn::sequential::Sequential::new()
        .add(Linear::from_parts(array![[1.0, 2.0]], Some(array![0.5])).unwrap())
        .add(Linear::from_parts(array![[3.0]], None).unwrap());
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    })
    .unwrap();
    model.visit_params_mut(&mut |name, p| {
        p.grad_mut()
            .fill(if name == "1.weight" { f64::NAN } else { 1.0 })
    });
    let err = opt.step(&mut model).unwrap_err();
    assert_eq!(
        err,
        PhmError::NonFiniteGradient {
            param: "1.weight".into()
        }
    );
    assert!(err.to_string().contains("`1.weight`"));
    let mut values = Vec::new();
    model.visit_params(&mut |_, p| values.extend(p.value().iter().copied()));
    assert_eq!(values, [1.0, 2.0, 0.5, 3.0]);
    // After fixing the gradient the first step behaves as a first step (no stale momentum).
    model.visit_params_mut(&mut |_, p| p.grad_mut().fill(1.0));
    opt.step(&mut model).unwrap();
    let mut values = Vec::new();
    model.visit_params(&mut |_, p| values.extend(p.value().iter().copied()));
    assert_eq!(values, [0.9, 1.9, 0.4, 2.9]);
}

#[test]
fn frozen_parameters_are_never_changed() {
    let mut layer = PhmLinear::from_parts(
        phm_nn::algebra::complex(),
        ndarray::Array3::ones((2, 1, 1)),
        None,
    )
    .unwrap();
    layer.set_rules_trainable(false);
    let rules = layer.rules().to_owned();
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.1,
        weight_decay: 0.5,
        ..Default::default()
    })
    .unwrap();
    for _ in 0..3 {
        layer.zero_grad();
        let y = layer.forward(Array2::ones((2, 2)).view());
        layer.backward(y.view());
        // Even a poisoned gradient on a frozen parameter is ignored.
        layer.visit_params_mut(&mut |name, p| {
            if name == "rules" {
                p.grad_mut().fill(f64::NAN);
            }
        });
        opt.step(&mut layer).unwrap();
    }
    assert_eq!(layer.rules(), rules);
    assert_ne!(layer.blocks(), ndarray::Array3::<f64>::ones((2, 1, 1)));
}
