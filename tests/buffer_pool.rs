//! The buffer pool (`kernels::buffer_pool`) changes no result. Training steps give
//! bit-identical losses and parameters with the pool off and on, where from the second step
//! on the layers write into buffers that still hold an earlier step's values (saved inputs,
//! outputs, im2col columns, gradients): a buffer taken "for overwrite" that
//! some pass failed to overwrite entirely would show here.
//!
//! One test function: the pool and its limit are global to the process.

mod common;

use common::rng;
use ndarray::{Array2, ArrayD, Dimension};
use phm_nn::kernels::buffer_pool;
use phm_nn::kernels::strategy::Strategy;
use phm_nn::module::params;
use phm_nn::nn::transformer::TransformerLmConfig;
use phm_nn::nn::Projection;
use phm_nn::prelude::*;

/// Losses and every parameter after `steps` training steps of a fresh model.
type Trace<F> = (Vec<F>, Vec<ArrayD<F>>);

fn lm_steps<F: Float>(projection: Projection, steps: usize) -> Trace<F> {
    let mut lm = TransformerLmConfig::new(19, 32, 4, 2, 24)
        .with_ffn_width(128)
        .with_projection(projection)
        .with_dropout(0.1, 5)
        .init::<F, _>(&mut rng(11))
        .unwrap();
    let mut opt = AdamW::new(AdamWConfig {
        lr: 1e-2,
        ..AdamWConfig::default()
    })
    .unwrap();
    let mut losses = Vec::new();
    for step in 0..steps {
        let ids = Array2::from_shape_fn((6, 24), |(b, t)| (5 * b + 3 * t + step) % 19);
        let targets: Vec<usize> = ids.iter().map(|&i| (i * 7 + 2) % 19).collect();
        lm.zero_grad();
        let logits = lm.forward_ids(ids.view(), None);
        let loss = cross_entropy(logits.view(), &targets).unwrap();
        lm.backward_logits(loss.grad.view());
        clip_grad_norm(&lm, 0.5).unwrap();
        opt.step(&mut lm).unwrap();
        losses.push(loss.value);
        // Inference between steps takes and gives buffers too.
        lm.infer_ids(ids.view(), None);
    }
    (
        losses,
        params(&lm).into_iter().map(|(_, p)| p.value()).collect(),
    )
}

/// The PHM layer on both kernels, without a bias (its output then comes from the product
/// alone), as the conv steps below: two forwards, then two backwards.
fn phm_linear_steps(strategy: Strategy, steps: usize) -> Trace<f64> {
    let mut layer: Box<dyn Module<f64>> = Box::new(
        PhmLinearConfig::new(12, 8, 4)
            .with_bias(false)
            .init(&mut rng(4))
            .unwrap()
            .with_strategy(strategy),
    );
    layer_steps(&mut *layer, &[9, 12], steps)
}

fn conv_steps(phm: bool, steps: usize) -> Trace<f64> {
    let mut r = rng(3);
    let mut layer: Box<dyn Module<f64>> = if phm {
        Box::new(
            PhmConv2dConfig::new(4, 8, 3, 2)
                .with_padding(1)
                .init(&mut r)
                .unwrap(),
        )
    } else {
        Box::new(
            Conv2dConfig::new(4, 8, 3)
                .with_padding(1)
                .init(&mut r)
                .unwrap(),
        )
    };
    layer_steps(&mut *layer, &[5, 4, 7, 6], steps)
}

/// SGD steps of `layer` on inputs of `shape`: in each, two forward passes, then their
/// backward passes in reverse, so the second backward's input gradient is written into a
/// buffer the first one's saved input gave back.
fn layer_steps(layer: &mut dyn Module<f64>, shape: &[usize], steps: usize) -> Trace<f64> {
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        ..SgdConfig::default()
    })
    .unwrap();
    let mut losses = Vec::new();
    let mut input_grads = Vec::new();
    for step in 0..steps {
        let x = |k: usize| {
            ArrayD::from_shape_fn(shape, |i| {
                let j = i.slice().iter().fold(step + k, |acc, &v| acc * 7 + v);
                ((j % 23) as f64 - 11.0) / 7.0
            })
        };
        layer.zero_grad();
        // Two forward passes, then their backward passes in reverse: the second backward's
        // input gradient is written into the buffer the first one's saved input gave back.
        let (y1, y2) = (layer.forward(x(0).view()), layer.forward(x(1).view()));
        // L = ½‖Y₁‖² + ½‖Y₂‖²: dL/dY = Y.
        losses.push(0.5 * y1.iter().chain(&y2).map(|v| v * v).sum::<f64>());
        input_grads.push(layer.backward(y2.view()).sum());
        input_grads.push(layer.backward(y1.view()).sum());
        opt.step(&mut *layer).unwrap();
    }
    let mut values: Vec<ArrayD<f64>> = params(layer).into_iter().map(|(_, p)| p.value()).collect();
    values.push(ndarray::Array1::from(input_grads).into_dyn());
    (losses, values)
}

/// `run` with the pool off, then on (from empty): the same losses and parameters, bit for bit,
/// and the pool really held buffers in the second run.
fn same_with_and_without_the_pool<T: PartialEq + std::fmt::Debug>(what: &str, run: impl Fn() -> T) {
    buffer_pool::set_limit(0);
    let off = run();
    assert_eq!(buffer_pool::held_bytes(), 0, "{what}: the pool is off");
    buffer_pool::set_limit(buffer_pool::DEFAULT_LIMIT);
    buffer_pool::clear();
    let on = run();
    assert!(
        buffer_pool::held_bytes() > 0,
        "{what}: no buffer went back to the pool"
    );
    assert!(off == on, "{what}: the pool changed the result");
}

#[test]
fn training_steps_are_bit_identical_with_and_without_the_buffer_pool() {
    for projection in [Projection::Dense, Projection::phm(4)] {
        same_with_and_without_the_pool(&format!("f64 LM {projection:?}"), || {
            lm_steps::<f64>(projection, 3)
        });
        same_with_and_without_the_pool(&format!("f32 LM {projection:?}"), || {
            lm_steps::<f32>(projection, 3)
        });
    }
    same_with_and_without_the_pool("Conv2d", || conv_steps(false, 3));
    same_with_and_without_the_pool("PhmConv2d", || conv_steps(true, 3));
    for strategy in [Strategy::Materialized, Strategy::Factored] {
        same_with_and_without_the_pool(&format!("PhmLinear {strategy:?}"), || {
            phm_linear_steps(strategy, 3)
        });
    }
    // The limit bounds what the pool holds.
    buffer_pool::set_limit(1000);
    assert!(buffer_pool::held_bytes() <= 1000);
    buffer_pool::set_limit(buffer_pool::DEFAULT_LIMIT);
}
