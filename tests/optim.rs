//! SGD, Adam and AdamW against hand-computed PyTorch updates and, bit for bit, against their
//! rules written out element by element; non-finite gradients; frozen parameters.
use ndarray::{array, Array2};
use phm_nn::optim::{Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
use phm_nn::{Linear, Module, PhmError, PhmLinear};

/// A 1×1 linear layer without bias whose gradient we set by hand.
fn scalar_layer(w: f64) -> Linear<f64> {
    Linear::from_parts(array![[w]], None).unwrap()
}

fn set_grad(layer: &mut Linear<f64>, g: f64) {
    layer.visit_params(&mut |_, p| p.write().grad_mut().fill(g));
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
    let mut model = phm_nn::module::sequential::Sequential::new()
        .add(Linear::from_parts(array![[1.0, 2.0]], Some(array![0.5])).unwrap())
        .add(Linear::from_parts(array![[3.0]], None).unwrap());
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..Default::default()
    })
    .unwrap();
    model.visit_params(&mut |name, p| {
        p.write()
            .grad_mut()
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
    model.visit_params(&mut |_, p| p.write().grad_mut().fill(1.0));
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
        let y = layer.forward(Array2::ones((2, 2)).view().into_dyn());
        layer.backward(y.view().into_dyn());
        // Even a poisoned gradient on a frozen parameter is ignored.
        layer.visit_params(&mut |name, p| {
            if name == "rules" {
                p.write().grad_mut().fill(f64::NAN);
            }
        });
        opt.step(&mut layer).unwrap();
    }
    assert_eq!(layer.rules(), rules);
    assert_ne!(layer.blocks(), ndarray::Array3::<f64>::ones((2, 1, 1)));
}

/// Runs one optimizer step on a 1×1 layer after setting its gradient to `g`.
fn step_with(opt: &mut dyn Optimizer<f64>, l: &mut Linear<f64>, g: f64) {
    set_grad(l, g);
    opt.step(l).unwrap();
}

#[test]
fn adam_first_and_second_steps() {
    // lr 0.1, betas (0.9, 0.999), eps 1e-8; gradients 2 then −1, from θ = 1.
    let mut l = scalar_layer(1.0);
    let mut opt = Adam::new(AdamConfig {
        lr: 0.1,
        ..Default::default()
    })
    .unwrap();
    step_with(&mut opt, &mut l, 2.0);
    // m = 0.1·2 = 0.2, v = 0.001·4 = 0.004; m̂ = 0.2/0.1 = 2, v̂ = 0.004/0.001 = 4.
    let w1 = 1.0 - 0.1 * 2.0 / (2.0 + 1e-8);
    assert!((weight(&l) - w1).abs() < 1e-15, "{} vs {w1}", weight(&l));
    assert!((weight(&l) - 0.9).abs() < 1e-8); // the first step is lr·sign(g)
    step_with(&mut opt, &mut l, -1.0);
    // m = 0.9·0.2 − 0.1 = 0.08, v = 0.999·0.004 + 0.001 = 0.004996;
    // m̂ = 0.08/0.19, v̂ = 0.004996/0.001999.
    let (m_hat, v_hat) = (0.08 / 0.19, 0.004996 / 0.001999);
    let w2 = w1 - 0.1 * m_hat / (f64::sqrt(v_hat) + 1e-8);
    assert!((weight(&l) - w2).abs() < 1e-14, "{} vs {w2}", weight(&l));
}

#[test]
fn adam_first_step_is_lr_times_sign_for_every_entry() {
    let grads: Array2<f64> = array![[2.0, -1e-3, 100.0], [0.0, -7.5, 1e-6]];
    let mut l = Linear::<f64>::from_parts(Array2::zeros((2, 3)), None).unwrap();
    l.visit_params(&mut |_, p| p.write().grad_mut().assign(&grads.view().into_dyn()));
    let mut opt = Adam::new(AdamConfig {
        lr: 0.01,
        ..Default::default()
    })
    .unwrap();
    opt.step(&mut l).unwrap();
    for (w, g) in l.weight().iter().zip(grads.iter()) {
        let expected = -0.01 * g / (g.abs() + 1e-8);
        assert!((w - expected).abs() < 1e-16, "{w} vs {expected}");
    }
    // Up to ε, that is lr·sign(g) (and no move for a zero gradient).
    assert_eq!(l.weight()[[1, 0]], 0.0);
    assert!((l.weight()[[0, 1]] - 0.01).abs() < 1e-6);
    assert!((l.weight()[[0, 2]] + 0.01).abs() < 1e-11);
}

#[test]
fn adam_l2_weight_decay_enters_the_gradient() {
    // lr 0.1, λ 0.5, θ = 1, g = −0.3: g + λθ = 0.2 > 0, so θ moves *down* by lr.
    let mut l = scalar_layer(1.0);
    let mut opt = Adam::new(AdamConfig {
        lr: 0.1,
        weight_decay: 0.5,
        ..Default::default()
    })
    .unwrap();
    step_with(&mut opt, &mut l, -0.3);
    let w1 = 1.0 - 0.1 * 0.2 / (0.2 + 1e-8);
    assert!((weight(&l) - w1).abs() < 1e-15);
    // Second step, g = 1: g' = 1 + 0.5·w1.
    step_with(&mut opt, &mut l, 1.0);
    let g2 = 1.0 + 0.5 * w1;
    let m = 0.9 * (0.1 * 0.2) + 0.1 * g2;
    let v = 0.999 * (0.001 * 0.04) + 0.001 * g2 * g2;
    let (m_hat, v_hat) = (m / (1.0 - 0.81), v / (1.0 - 0.998001));
    let w2 = w1 - 0.1 * m_hat / (v_hat.sqrt() + 1e-8);
    assert!((weight(&l) - w2).abs() < 1e-14, "{} vs {w2}", weight(&l));
}

#[test]
fn adamw_decoupled_weight_decay() {
    // lr 0.1, λ 0.5, θ = 1, g = −0.3: θ ← θ(1 − 0.05) first, then the Adam step +lr.
    let mut l = scalar_layer(1.0);
    let mut opt = AdamW::new(AdamWConfig {
        lr: 0.1,
        weight_decay: 0.5,
        ..Default::default()
    })
    .unwrap();
    step_with(&mut opt, &mut l, -0.3);
    let w1 = 0.95 + 0.1 * 0.3 / (0.3 + 1e-8);
    assert!((weight(&l) - w1).abs() < 1e-15, "{} vs {w1}", weight(&l));
    // Second step, g = 2: the moments see only the raw gradients −0.3 and 2.
    step_with(&mut opt, &mut l, 2.0);
    let m: f64 = 0.9 * (0.1 * -0.3) + 0.1 * 2.0;
    let v: f64 = 0.999 * (0.001 * 0.09) + 0.001 * 4.0;
    let (m_hat, v_hat) = (m / 0.19, v / 0.001999);
    let w2 = w1 * 0.95 - 0.1 * m_hat / (v_hat.sqrt() + 1e-8);
    assert!((weight(&l) - w2).abs() < 1e-14, "{} vs {w2}", weight(&l));
    // Without weight decay AdamW is Adam.
    let (mut a, mut b) = (scalar_layer(1.0), scalar_layer(1.0));
    let mut adam = Adam::new(AdamConfig::default()).unwrap();
    let mut adamw = AdamW::new(AdamWConfig {
        weight_decay: 0.0,
        ..Default::default()
    })
    .unwrap();
    for g in [0.5, -2.0, 3.0] {
        step_with(&mut adam, &mut a, g);
        step_with(&mut adamw, &mut b, g);
    }
    assert_eq!(weight(&a), weight(&b));
}

#[test]
fn amsgrad_uses_the_running_maximum() {
    // β2 = 0.5 so that v shrinks: g = 2 then 0.1 gives v = 2, then 1.005 < 2.
    let cfg = AdamConfig {
        lr: 0.1,
        betas: (0.9, 0.5),
        ..Default::default()
    };
    let mut plain = scalar_layer(1.0);
    let mut ams = scalar_layer(1.0);
    let mut opt_plain = Adam::new(cfg).unwrap();
    let mut opt_ams = Adam::new(AdamConfig {
        amsgrad: true,
        ..cfg
    })
    .unwrap();
    for g in [2.0, 0.1] {
        step_with(&mut opt_plain, &mut plain, g);
        step_with(&mut opt_ams, &mut ams, g);
    }
    let w1 = 1.0 - 0.1 * 2.0 / (2.0 + 1e-8);
    let m_hat = (0.9 * 0.2 + 0.1 * 0.1) / 0.19;
    let bc2 = 1.0 - 0.25;
    let plain_w2 = w1 - 0.1 * m_hat / (f64::sqrt(1.005 / bc2) + 1e-8);
    let ams_w2 = w1 - 0.1 * m_hat / (f64::sqrt(2.0 / bc2) + 1e-8);
    assert!((weight(&plain) - plain_w2).abs() < 1e-14);
    assert!((weight(&ams) - ams_w2).abs() < 1e-14);
}

#[test]
fn adam_defaults_and_invalid_hyperparameters() {
    let d = AdamConfig::default();
    assert_eq!(
        (d.lr, d.betas, d.eps, d.weight_decay, d.amsgrad),
        (1e-3, (0.9, 0.999), 1e-8, 0.0, false)
    );
    let d = AdamWConfig::default();
    assert_eq!(
        (d.lr, d.betas, d.eps, d.weight_decay, d.amsgrad),
        (1e-3, (0.9, 0.999), 1e-8, 1e-2, false)
    );
    let adam = |c: AdamConfig| Adam::<f64>::new(c).unwrap_err().to_string();
    let adamw = |c: AdamWConfig| AdamW::<f32>::new(c).unwrap_err().to_string();
    let cases = [
        (
            adam(AdamConfig {
                betas: (1.0, 0.999),
                ..Default::default()
            }),
            "invalid beta1: beta1 must be in [0, 1), got 1",
        ),
        (
            adam(AdamConfig {
                betas: (0.9, f64::NAN),
                ..Default::default()
            }),
            "beta2 must be in [0, 1), got NaN",
        ),
        (
            adam(AdamConfig {
                eps: -1e-8,
                ..Default::default()
            }),
            "eps must be finite and >= 0, got -0.00000001",
        ),
        (
            adam(AdamConfig {
                lr: f64::INFINITY,
                ..Default::default()
            }),
            "lr must be finite and >= 0, got inf",
        ),
        (
            adamw(AdamWConfig {
                betas: (-0.5, 0.999),
                ..Default::default()
            }),
            "beta1 must be in [0, 1), got -0.5",
        ),
        (
            adamw(AdamWConfig {
                weight_decay: -0.01,
                ..Default::default()
            }),
            "weight_decay must be finite and >= 0, got -0.01",
        ),
    ];
    for (err, expected) in cases {
        assert!(
            err.contains(expected),
            "{err:?} should contain {expected:?}"
        );
    }
    // β = 0 is allowed (no averaging).
    Adam::<f64>::new(AdamConfig {
        betas: (0.0, 0.0),
        eps: 0.0,
        ..Default::default()
    })
    .unwrap();
    let mut opt = AdamW::<f64>::new(AdamWConfig::default()).unwrap();
    assert!(opt.set_learning_rate(-1.0).is_err());
    assert_eq!(opt.learning_rate(), 1e-3);
    opt.set_learning_rate(0.5).unwrap();
    assert_eq!((opt.learning_rate(), opt.config().lr), (0.5, 0.5));
}

/// A two-layer model whose last parameter can be poisoned.
fn two_layers() -> phm_nn::module::sequential::Sequential<f64> {
    phm_nn::module::sequential::Sequential::new()
        .add(Linear::from_parts(array![[1.0, 2.0]], Some(array![0.5])).unwrap())
        .add(Linear::from_parts(array![[3.0]], None).unwrap())
}

fn values(model: &dyn Module<f64>) -> Vec<f64> {
    let mut v = Vec::new();
    model.visit_params(&mut |_, p| v.extend(p.value().iter().copied()));
    v
}

fn set_grads(model: &mut dyn Module<f64>, f: &dyn Fn(&str, usize) -> f64) {
    model.visit_params(&mut |name, p| {
        for (i, g) in p.write().grad_mut().iter_mut().enumerate() {
            *g = f(name, i);
        }
    });
}

#[test]
fn adam_non_finite_gradient_changes_nothing() {
    let good1 = |name: &str, i: usize| {
        if name == "0.weight" {
            1.0 + i as f64
        } else {
            -0.5
        }
    };
    let good2 = |name: &str, i: usize| {
        if name == "1.weight" {
            2.0
        } else {
            0.25 * i as f64 - 1.0
        }
    };
    let poison = |name: &str, i: usize| {
        if name == "1.weight" {
            f64::NAN
        } else {
            good2(name, i)
        }
    };
    type MakeOpt = fn() -> Box<dyn Optimizer<f64>>;
    let makers: [(&str, MakeOpt); 3] = [
        ("adam", || {
            Box::new(
                Adam::new(AdamConfig {
                    lr: 0.1,
                    weight_decay: 0.1,
                    ..Default::default()
                })
                .unwrap(),
            )
        }),
        ("adam amsgrad", || {
            Box::new(
                Adam::new(AdamConfig {
                    lr: 0.1,
                    amsgrad: true,
                    ..Default::default()
                })
                .unwrap(),
            )
        }),
        ("adamw", || {
            Box::new(
                AdamW::new(AdamWConfig {
                    lr: 0.1,
                    weight_decay: 0.1,
                    ..Default::default()
                })
                .unwrap(),
            )
        }),
    ];
    for (what, make) in makers {
        // Poisoned run: good step, NaN step (an error, changes nothing), good step.
        let (mut model, mut opt) = (two_layers(), make());
        set_grads(&mut model, &good1);
        opt.step(&mut model).unwrap();
        let before = values(&model);
        set_grads(&mut model, &poison);
        let err = opt.step(&mut model).unwrap_err();
        assert_eq!(
            err,
            PhmError::NonFiniteGradient {
                param: "1.weight".into()
            },
            "{what}"
        );
        assert_eq!(values(&model), before, "{what}: a parameter changed");
        set_grads(&mut model, &good2);
        opt.step(&mut model).unwrap();
        // Reference run without the NaN step: the same values, so no state changed either
        // (a counted step or updated moment would change the second update).
        let (mut reference, mut opt_ref) = (two_layers(), make());
        set_grads(&mut reference, &good1);
        opt_ref.step(&mut reference).unwrap();
        set_grads(&mut reference, &good2);
        opt_ref.step(&mut reference).unwrap();
        assert_eq!(values(&model), values(&reference), "{what}: state changed");
    }
}

#[test]
fn adam_and_adamw_never_touch_frozen_parameters() {
    let opts: [Box<dyn Optimizer<f64>>; 2] = [
        Box::new(
            Adam::new(AdamConfig {
                lr: 0.1,
                weight_decay: 0.5,
                ..Default::default()
            })
            .unwrap(),
        ),
        Box::new(
            AdamW::new(AdamWConfig {
                lr: 0.1,
                weight_decay: 0.5,
                ..Default::default()
            })
            .unwrap(),
        ),
    ];
    for mut opt in opts {
        let mut layer = PhmLinear::from_parts(
            phm_nn::algebra::complex(),
            ndarray::Array3::ones((2, 1, 1)),
            None,
        )
        .unwrap();
        layer.set_rules_trainable(false);
        let rules = layer.rules().to_owned();
        for _ in 0..3 {
            layer.zero_grad();
            let y = layer.forward(Array2::ones((2, 2)).view().into_dyn());
            layer.backward(y.view().into_dyn());
            layer.visit_params(&mut |name, p| {
                if name == "rules" {
                    p.write().grad_mut().fill(f64::NAN);
                }
            });
            opt.step(&mut layer).unwrap();
        }
        assert_eq!(layer.rules(), rules);
        assert_ne!(layer.blocks(), ndarray::Array3::<f64>::ones((2, 1, 1)));
    }
}

#[test]
fn adam_in_f32() {
    let mut l = Linear::<f32>::from_parts(array![[1.0f32, -1.0]], None).unwrap();
    l.visit_params(&mut |_, p| {
        p.write()
            .grad_mut()
            .assign(&array![[3.0f32, -0.5]].into_dyn())
    });
    let mut opt = AdamW::new(AdamWConfig {
        lr: 0.25,
        weight_decay: 0.0,
        ..Default::default()
    })
    .unwrap();
    opt.step(&mut l).unwrap();
    assert_eq!(l.weight(), array![[0.75f32, -0.75]]);
}

/// Layer `k` of [`four_layers`]: 40×40 with bias.
fn layer40(k: usize) -> Linear<f64> {
    let w = Array2::from_shape_fn((40, 40), |(i, j)| ((i * 7 + j * 3 + k) % 11) as f64 - 5.0);
    let b = ndarray::Array1::from_shape_fn(40, |i| 0.1 * (i + k) as f64);
    Linear::from_parts(w, Some(b)).unwrap()
}

/// Four 40×40 layers with bias: enough entries (6 560) for a step to be split across two
/// threads.
fn four_layers() -> phm_nn::module::sequential::Sequential<f64> {
    phm_nn::module::sequential::Sequential::new()
        .add(layer40(0))
        .add(layer40(1))
        .add(layer40(2))
        .add(layer40(3))
}

fn adamw() -> AdamW<f64> {
    AdamW::new(AdamWConfig {
        lr: 0.01,
        weight_decay: 0.1,
        ..Default::default()
    })
    .unwrap()
}

/// A step split across the pool updates every parameter exactly as stepping it alone (one
/// thread, its own optimizer) does, on 1 and 2 threads.
#[test]
fn adamw_step_split_across_threads_matches_parameter_by_parameter() {
    let grads = |step: usize| {
        move |name: &str, i: usize| {
            ((i * 13 + name.bytes().map(usize::from).sum::<usize>() * 5 + step * 3) % 17) as f64
                * 0.3
                - 2.0
        }
    };
    // Reference: each layer stepped alone (too small to split).
    phm_nn::kernels::set_num_threads(1);
    let mut want = Vec::new();
    for k in 0..4 {
        let mut alone = layer40(k);
        let mut opt = adamw();
        for step in 0..3 {
            // The layer's parameters are named "{k}.weight"/"{k}.bias" in the whole model.
            let g = grads(step);
            alone.visit_params(&mut |name, p| {
                let full = format!("{k}.{name}");
                for (i, x) in p.write().grad_mut().iter_mut().enumerate() {
                    *x = g(&full, i);
                }
            });
            opt.step(&mut alone).unwrap();
        }
        want.extend(values(&alone));
    }
    // Split even small passes, so that the split paths are the ones checked.
    phm_nn::kernels::set_elementwise_min_work(0);
    for threads in [1, 2] {
        phm_nn::kernels::set_num_threads(threads);
        let mut model = four_layers();
        let mut opt = adamw();
        for step in 0..3 {
            set_grads(&mut model, &grads(step));
            opt.step(&mut model).unwrap();
        }
        assert_eq!(values(&model), want, "{threads} thread(s)");
    }
    phm_nn::kernels::set_num_threads(1);
}

/// On 2 threads, a non-finite gradient is reported before a non-finite update of an earlier
/// parameter, and nothing changes.
#[test]
fn split_step_reports_the_gradient_first_and_changes_nothing() {
    // Split even small passes, so that the split paths are the ones checked.
    phm_nn::kernels::set_elementwise_min_work(0);
    phm_nn::kernels::set_num_threads(2);
    let mut model = four_layers();
    let mut opt = Adam::new(AdamConfig {
        lr: 0.1,
        eps: 0.0,
        ..Default::default()
    })
    .unwrap();
    // "0.weight" has a zero entry (0/0 with eps = 0: a NaN update); "3.bias" a NaN gradient.
    set_grads(&mut model, &|name: &str, i: usize| match name {
        "0.weight" if i == 5 => 0.0,
        "3.bias" if i == 7 => f64::NAN,
        _ => 1.0,
    });
    let before = values(&model);
    let err = opt.step(&mut model).unwrap_err();
    assert_eq!(
        err,
        PhmError::NonFiniteGradient {
            param: "3.bias".into()
        }
    );
    assert_eq!(values(&model), before);
    set_grads(&mut model, &|name: &str, i: usize| match name {
        "0.weight" if i == 5 => 0.0,
        _ => 1.0,
    });
    let err = opt.step(&mut model).unwrap_err();
    assert_eq!(
        err,
        PhmError::NonFiniteUpdate {
            param: "0.weight".into()
        }
    );
    assert_eq!(values(&model), before);
    phm_nn::kernels::set_num_threads(1);
}

/// Three layers, 4 192 entries (enough for a step to be split across two threads), whose
/// values include `0` and `-0` (the sign of a zero must come out as the formula gives it).
fn three_layers<F: phm_nn::Float>() -> phm_nn::module::sequential::Sequential<F> {
    let entry = |i: usize| -> F {
        match i % 29 {
            0 => F::of(0.0),
            1 => F::of(-0.0),
            _ => F::of(((i * 37 % 101) as f64 - 50.0) / 23.0),
        }
    };
    let layer = |k: usize, d: usize, bias: bool, at: usize| {
        let w = Array2::from_shape_fn((k, d), |(i, j)| entry(at + i * d + j));
        let b = bias.then(|| ndarray::Array1::from_shape_fn(k, |i| entry(at + k * d + i)));
        Linear::from_parts(w, b).unwrap()
    };
    phm_nn::module::sequential::Sequential::new()
        .add(layer(64, 48, true, 0))
        .add(layer(16, 64, true, 7))
        .add(layer(1, 16, false, 13))
}

/// The gradient of entry `i` of parameter `p` at step `s`: mixed signs and magnitudes, some
/// `0` and `-0`.
fn grad_entry<F: phm_nn::Float>(p: usize, i: usize, s: usize) -> F {
    match (i + 3 * p + s) % 31 {
        0 => F::of(0.0),
        1 => F::of(-0.0),
        _ => {
            let x = ((i * 13 + p * 7 + s * 5) % 97) as f64 - 48.0;
            F::of(x * 10f64.powi((i % 5) as i32 - 2) / 17.0)
        }
    }
}

/// The bits of `x` (`f32` and `f64` alike), for comparisons that tell `0` from `-0`.
fn bits<F: phm_nn::Float>(x: F) -> u64 {
    x.as_f64().to_bits()
}

/// One optimizer's update of one entry written out plainly, in the arithmetic order of the
/// crate's documented rule, with `F` rounding: the per-parameter state is `(m, v, v_max)`
/// for Adam and `(buffer, _, _)` for SGD.
#[derive(Clone, Copy, Debug)]
enum Rule {
    Adam(AdamConfig),
    Sgd(SgdConfig),
}

/// The reference: every parameter of `values` after `steps` steps, element by element.
// Every operation spelt out as a binary one, in the rule's order.
#[allow(clippy::assign_op_pattern)]
fn reference_steps<F: phm_nn::Float>(rule: Rule, values: &mut [Vec<F>], steps: usize) {
    let mut states: Vec<Vec<[F; 3]>> = values
        .iter()
        .map(|v| vec![[F::of(0.0); 3]; v.len()])
        .collect();
    for s in 0..steps {
        let t = (s + 1) as i32;
        for (p, (theta, state)) in values.iter_mut().zip(&mut states).enumerate() {
            for (i, (x, st)) in theta.iter_mut().zip(state.iter_mut()).enumerate() {
                let mut g: F = grad_entry(p, i, s);
                match rule {
                    Rule::Adam(c) => {
                        let (b1, b2) = c.betas;
                        if c.weight_decay != 0.0 {
                            if c.decoupled_weight_decay {
                                *x = *x * F::of(1.0 - c.lr * c.weight_decay);
                            } else {
                                g = g + F::of(c.weight_decay) * *x;
                            }
                        }
                        st[0] = F::of(b1) * st[0] + F::of(1.0 - b1) * g;
                        st[1] = F::of(b2) * st[1] + F::of(1.0 - b2) * g * g;
                        let second = if c.amsgrad {
                            st[2] = st[2].max(st[1]);
                            st[2]
                        } else {
                            st[1]
                        };
                        let step_size = F::of(c.lr / (1.0 - b1.powi(t)));
                        let bias_correction2_sqrt = F::of((1.0 - b2.powi(t)).sqrt());
                        *x = *x
                            - step_size * st[0]
                                / (second.sqrt() / bias_correction2_sqrt + F::of(c.eps));
                    }
                    Rule::Sgd(c) => {
                        if c.weight_decay != 0.0 {
                            g = g + F::of(c.weight_decay) * *x;
                        }
                        if c.momentum != 0.0 {
                            let mu = F::of(c.momentum);
                            st[0] = if s == 0 {
                                g
                            } else {
                                st[0] * mu + g * F::of(1.0 - c.dampening)
                            };
                            g = if c.nesterov { g + mu * st[0] } else { st[0] };
                        }
                        *x = *x + -F::of(c.lr) * g;
                    }
                }
            }
        }
    }
}

/// Every optimizer configuration, stepped several times in `f32` and `f64` on 1 and 2
/// threads, equals the update rule written out element by element, bit for bit.
fn steps_equal_the_reference_bit_for_bit<F: phm_nn::Float>() {
    let adam = AdamConfig {
        lr: 0.03,
        weight_decay: 0.2,
        ..AdamConfig::default()
    };
    let sgd = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        ..SgdConfig::default()
    };
    let rules = [
        Rule::Adam(AdamConfig {
            weight_decay: 0.0,
            ..adam
        }),
        Rule::Adam(adam),
        Rule::Adam(AdamConfig {
            amsgrad: true,
            ..adam
        }),
        Rule::Adam(AdamWConfig::default().into()),
        Rule::Adam(AdamConfig {
            decoupled_weight_decay: true,
            ..adam
        }),
        Rule::Adam(AdamConfig {
            decoupled_weight_decay: true,
            amsgrad: true,
            betas: (0.5, 0.75),
            eps: 1e-3,
            ..adam
        }),
        Rule::Sgd(SgdConfig {
            momentum: 0.0,
            ..sgd
        }),
        Rule::Sgd(SgdConfig {
            momentum: 0.0,
            weight_decay: 0.1,
            ..sgd
        }),
        Rule::Sgd(SgdConfig {
            dampening: 0.3,
            weight_decay: 0.1,
            ..sgd
        }),
        Rule::Sgd(SgdConfig {
            nesterov: true,
            weight_decay: 0.1,
            ..sgd
        }),
    ];
    let steps = 5;
    for rule in rules {
        let model = three_layers::<F>();
        let mut want: Vec<Vec<F>> = phm_nn::module::params(&model)
            .iter()
            .map(|(_, p)| p.value().iter().copied().collect())
            .collect();
        reference_steps(rule, &mut want, steps);
        // Split even small passes, so that the split paths are the ones checked.
        phm_nn::kernels::set_elementwise_min_work(0);
        for threads in [1, 2] {
            phm_nn::kernels::set_num_threads(threads);
            let mut model = three_layers::<F>();
            let mut opt: Box<dyn Optimizer<F>> = match rule {
                Rule::Adam(c) => Box::new(Adam::new(c).unwrap()),
                Rule::Sgd(c) => Box::new(Sgd::new(c).unwrap()),
            };
            for s in 0..steps {
                for (p, (_, param)) in phm_nn::module::params(&model).iter().enumerate() {
                    for (i, g) in param.write().grad_mut().iter_mut().enumerate() {
                        *g = grad_entry(p, i, s);
                    }
                }
                opt.step(&mut model).unwrap();
            }
            for ((name, param), want) in phm_nn::module::params(&model).iter().zip(&want) {
                let got = param.value();
                for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
                    assert_eq!(
                        bits(a),
                        bits(b),
                        "{rule:?}, {threads} thread(s), {name}[{i}]: {a:?} vs {b:?}"
                    );
                }
            }
        }
    }
    phm_nn::kernels::set_num_threads(1);
}

#[test]
fn steps_equal_the_reference_bit_for_bit_f64() {
    steps_equal_the_reference_bit_for_bit::<f64>();
}

#[test]
fn steps_equal_the_reference_bit_for_bit_f32() {
    steps_equal_the_reference_bit_for_bit::<f32>();
}
