//! Faults found by probing the crate with bad input: each is refused with an error, and
//! nothing is changed.
mod common;

use common::{rng, uniform2};
use ndarray::ArrayD;
use phm_nn::init::{Fans, Init};
use phm_nn::module::params;
use phm_nn::prelude::*;

fn values(m: &dyn Module<f64>) -> Vec<ArrayD<f64>> {
    params(m).iter().map(|(_, p)| p.value()).collect()
}

/// A small model with its gradients filled by one backward pass.
fn model_with_grads() -> Sequential<f64> {
    let mut r = rng(1);
    let mut model = Sequential::new()
        .add(
            PhmLinearConfig::new(4, 4, 2)
                .init::<f64, _>(&mut r)
                .unwrap(),
        )
        .add(Tanh::new())
        .add(LinearConfig::new(4, 2).init::<f64, _>(&mut r).unwrap());
    let x = uniform2(&mut r, 3, 4).into_dyn();
    let y = model.forward(x.view().into_dyn());
    model.backward(ArrayD::ones(y.raw_dim()).view().into_dyn());
    model
}

#[test]
fn adam_with_eps_zero_and_a_zero_gradient_is_refused_not_nan() {
    let mut model = model_with_grads();
    // A zero gradient entry: m = v = 0, so the update is 0 / (0 + eps) = NaN with eps = 0.
    let (_, bias) = params(&model).remove(2);
    bias.write().grad_mut()[0] = 0.0;
    let before = values(&model);
    let mut opt = Adam::new(AdamConfig {
        eps: 0.0,
        ..AdamConfig::default()
    })
    .unwrap();
    let err = opt.step(&mut model).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the update of parameter `0.bias` is not finite (NaN or inf); no parameter was updated"
    );
    assert_eq!(values(&model), before);
    // The optimizer state did not advance either.
    assert!(opt.state(&model).tensors.is_empty());
}

#[test]
fn a_huge_learning_rate_is_refused_not_infinite() {
    let mut model = model_with_grads();
    let before = values(&model);
    let mut opt = Sgd::new(SgdConfig {
        lr: 1e308,
        momentum: 0.9,
        ..SgdConfig::default()
    })
    .unwrap();
    assert!(matches!(
        opt.step(&mut model),
        Err(PhmError::NonFiniteUpdate { .. })
    ));
    assert_eq!(values(&model), before);
    assert!(
        opt.state(&model).tensors.is_empty(),
        "no momentum buffer was stored"
    );
    // In f32 a merely large rate overflows: refused too.
    let mut r = rng(2);
    let mut small = LinearConfig::new(2, 2).init::<f32, _>(&mut r).unwrap();
    small.forward(ArrayD::ones(IxDyn(&[1, 2])).view().into_dyn());
    small.backward(ArrayD::ones(IxDyn(&[1, 2])).view().into_dyn());
    let mut opt = Sgd::new(SgdConfig {
        lr: 1e39,
        ..SgdConfig::default()
    })
    .unwrap();
    assert!(matches!(
        opt.step(&mut small),
        Err(PhmError::NonFiniteUpdate { .. })
    ));
}

#[test]
fn init_values_beyond_the_float_range_are_rejected() {
    let mut r = rng(3);
    let fans = Fans::new(4, 4);
    let err = Init::Uniform { bound: 1e308 }
        .sample::<f64, _>(&[2, 2], fans, &mut r)
        .unwrap_err();
    assert!(err.to_string().contains("beyond the range of f64"), "{err}");
    let err = Init::Constant(1e39)
        .sample::<f32, _>(&[2], fans, &mut r)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid init: Constant(1e39) draws values beyond the range of f32 (largest 3.4028234663852886e38)"
    );
    assert!(Init::Constant(1e39)
        .sample::<f64, _>(&[2], fans, &mut r)
        .is_ok());
    assert!(Init::Normal { std: 1e37 }
        .sample::<f32, _>(&[2], fans, &mut r)
        .is_err());
    // Through a layer config.
    let err = LinearConfig::new(2, 2)
        .with_weight_init(Init::Constant(1e39))
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert!(matches!(
        err,
        PhmError::InvalidArgument { what: "init", .. }
    ));
}

#[test]
fn sizes_that_overflow_are_errors_not_wrong_counts() {
    let big = 1usize << 33;
    let err = PhmShape::new(big, big, 1).unwrap_err();
    assert!(matches!(err, PhmError::TooLarge { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("8589934592 → 8589934592 with n = 1"),
        "{err}"
    );
    // n³ overflowing is caught too.
    assert!(PhmShape::new(1 << 22, 1 << 22, 1 << 22).is_err());
    // A size that fits: the count is exact.
    let s = PhmShape::new(1 << 20, 1 << 20, 1 << 10).unwrap();
    assert_eq!(s.num_weight_parameters(), (1 << 30) + (1 << 30));
}

#[test]
fn a_layer_too_large_for_memory_is_an_error_at_init() {
    // 2^20 × 2^20 dense weights in f32: 4 TiB, more than this machine can hold.
    let err = LinearConfig::new(1 << 20, 1 << 20)
        .init::<f32, _>(&mut rng(4))
        .unwrap_err();
    assert!(
        matches!(err, PhmError::TooLarge { what: "tensor", .. }),
        "{err}"
    );
    let err = PhmLinearConfig::new(1 << 21, 1 << 21, 2)
        .init::<f32, _>(&mut rng(4))
        .unwrap_err();
    assert!(matches!(err, PhmError::TooLarge { .. }), "{err}");
}

#[test]
fn a_parameter_cannot_change_shape() {
    let layer = LinearConfig::new(3, 2).init::<f64, _>(&mut rng(5)).unwrap();
    let (_, weight) = params(&layer).remove(0);
    let err = weight
        .set_value(ArrayD::zeros(IxDyn(&[4, 6])).view())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "parameter value has shape [4, 6], expected [2, 3]"
    );
    assert_eq!(weight.shape(), [2, 3]);
    assert_eq!((layer.in_features(), layer.out_features()), (3, 2));
    // The visitor hands out shared references only: there is no way to swap a parameter.
    layer.visit_params(&mut |_, p| assert_eq!(p.shape().len(), if p.len() == 2 { 1 } else { 2 }));
}
