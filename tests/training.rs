//! SGD drives a synthetic regression loss down by a large factor for PhmLinear and Linear.
mod common;

use common::{rng, uniform2};
use ndarray::Array2;
use phm_nn::loss::mse;
use phm_nn::optim::{Optimizer, Sgd, SgdConfig};
use phm_nn::{LinearConfig, Module, PhmLinearConfig};

/// Trains `model` on `y = x W*ᵀ` with full-batch SGD; returns (initial loss, final loss).
fn train(
    model: &mut dyn Module<f64>,
    x: &Array2<f64>,
    y: &ndarray::ArrayD<f64>,
    steps: usize,
) -> (f64, f64) {
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        ..Default::default()
    })
    .unwrap();
    let initial = mse(model.infer(x.view().into_dyn()).view(), y.view()).value;
    for _ in 0..steps {
        model.zero_grad();
        let pred = model.forward(x.view().into_dyn());
        let loss = mse(pred.view(), y.view());
        model.backward(loss.grad.view().into_dyn());
        opt.step(model).unwrap();
    }
    let last = mse(model.infer(x.view().into_dyn()).view(), y.view()).value;
    eprintln!("loss {initial:.3e} -> {last:.3e}");
    (initial, last)
}

#[test]
fn sgd_fits_a_linear_target() {
    let mut r = rng(2024);
    let (d, k, batch) = (16, 8, 128);
    let teacher = PhmLinearConfig::new(d, k, 4)
        .init::<f64, _>(&mut r)
        .unwrap();
    let x = uniform2(&mut r, batch, d) * 2.0;
    let y = teacher.infer(x.view().into_dyn());

    let mut dense = LinearConfig::new(d, k).init::<f64, _>(&mut r).unwrap();
    let (l0, l1) = train(&mut dense, &x, &y, 300);
    assert!(l1 < l0 / 100.0, "dense: {l0} -> {l1}");

    for n in [2, 4] {
        // A teacher of the same n: a PHM layer represents it exactly.
        let teacher = PhmLinearConfig::new(d, k, n)
            .init::<f64, _>(&mut r)
            .unwrap();
        let y = teacher.infer(x.view().into_dyn());
        let mut phm = PhmLinearConfig::new(d, k, n)
            .init::<f64, _>(&mut r)
            .unwrap();
        let (l0, l1) = train(&mut phm, &x, &y, 600);
        assert!(l1 < l0 / 100.0, "phm n={n}: {l0} -> {l1}");
    }
}
