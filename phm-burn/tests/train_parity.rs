//! Training parity: the same PHM classifier (`PhmLinear(64 → 32, n = 4)` → ReLU →
//! `Linear(32 → 10)`) trained for 300 steps of plain SGD on the bundled digits, in f64, with
//! the same initial weights (through the bridge) and the same batches, in phm-nn (manual
//! backward, `phm_nn::train::train_step` with `phm_nn::optim::Sgd`) and in phm-burn (burn's
//! autodiff on the CPU backend, `burn::optim::Sgd` through `GradientsParams`): the loss
//! curves and the final weights agree to float noise.
//!
//! And data parallelism as burn-train's multi-device strategy (`OptimMainDevice`) does it:
//! each device computes the gradients of its shard on a fork of the model, the gradients are
//! moved to the main device and summed by burn's `GradientsAccumulator`, and one optimizer
//! step follows. With each shard's loss summed over its rows and divided by the combined batch
//! size, that is exactly the step of the combined batch on one device. (burn's CPU backend
//! has one device, `device_count = 1`: the shards run on forks on the same device, which is
//! what this machine can exercise; on GPUs the forks are on distinct devices.)

mod common;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, SgdConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Device, Tensor};
use common::{native_mlp, TinyPhmMlp};
use phm_burn::bridge::tensor_from_array;
use phm_burn::{burn, Bridge};
use phm_nn::data::{digits, Batch, Batches};
use phm_nn::module::params;
use phm_nn::ndarray::Array2;
use phm_nn::optim::Sgd;

const STEPS: usize = 300;
const BATCH: usize = 32;
const LR: f64 = 0.05;

/// Cross-entropy of `logits` `(b, c)` against `labels`, summed over the rows and divided by
/// `total` (`total = b`: the mean, as phm-nn's `cross_entropy`).
fn cross_entropy(logits: Tensor<2>, labels: &[usize], total: usize, device: &Device) -> Tensor<1> {
    let [b, c] = logits.dims();
    let one_hot = Array2::from_shape_fn((b, c), |(i, j)| f64::from(u8::from(labels[i] == j)));
    let one_hot: Tensor<2> = tensor_from_array(one_hot.into_dyn().view(), device);
    -(log_softmax(logits, 1) * one_hot).sum() / total as f64
}

#[test]
fn sgd_on_digits_gives_the_same_loss_curve_in_phm_nn_and_phm_burn() {
    let data = digits::bundled::<f64>().unwrap();
    let batches: Vec<Batch<f64>> = Batches::in_order(&data, BATCH)
        .unwrap()
        .drop_last(true)
        .collect();

    let mut native = native_mlp::<f64>(data.n_features(), 32, 10, 4, 2024);
    let device = Device::default().autodiff();
    let mut model = TinyPhmMlp::from_native(&native, &device).unwrap();
    assert_eq!(model.phm.blocks.val().dtype(), DType::F64);

    // phm-nn.
    let mut sgd = Sgd::new(phm_nn::optim::SgdConfig {
        lr: LR,
        ..Default::default()
    })
    .unwrap();
    let native_losses: Vec<f64> = (0..STEPS)
        .map(|s| {
            phm_nn::train::train_step(
                &mut native,
                &mut sgd,
                None,
                &batches[s % batches.len()],
                None,
            )
            .unwrap()
            .loss
        })
        .collect();

    // phm-burn.
    let mut optim = SgdConfig::new().init();
    let mut burn_losses = Vec::with_capacity(STEPS);
    for s in 0..STEPS {
        let batch = &batches[s % batches.len()];
        let x: Tensor<2> = tensor_from_array(batch.x.view().into_dyn(), &device);
        let loss = cross_entropy(model.forward(x), &batch.y, batch.y.len(), &device);
        assert_eq!(loss.dtype(), DType::F64);
        burn_losses.push(loss.clone().into_scalar::<f64>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(LR, model, grads);
    }

    // It learned something, in both.
    let tail = |l: &[f64]| l[STEPS - 20..].iter().sum::<f64>() / 20.0;
    assert!(
        tail(&native_losses) < 0.5 * native_losses[0],
        "{native_losses:?}"
    );

    let rel = native_losses
        .iter()
        .zip(&burn_losses)
        .map(|(a, b)| (a - b).abs() / a.abs())
        .fold(0.0, f64::max);
    eprintln!("max relative loss difference over {STEPS} steps: {rel:e}");
    assert!(rel < 1e-9, "max relative loss difference {rel:e}");

    // The final weights too, relative to each tensor's largest entry.
    let trained = model.to_native::<f64>().unwrap();
    for ((path, a), (_, b)) in params(&native).into_iter().zip(params(&trained)) {
        let (a, b) = (a.value(), b.value());
        let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = (&a - &b).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            diff <= 1e-9 * scale,
            "{path}: max difference {diff:e} (scale {scale:e})"
        );
    }
}

#[test]
fn two_shards_through_the_gradient_accumulator_equal_one_combined_batch() {
    let data = digits::bundled::<f64>().unwrap();
    let batches: Vec<Batch<f64>> = Batches::in_order(&data, 2 * BATCH)
        .unwrap()
        .drop_last(true)
        .collect();
    let native = native_mlp::<f64>(data.n_features(), 32, 10, 4, 7);
    let main = Device::default().autodiff();
    let devices = [main.clone(), main.clone()];
    let mut one = TinyPhmMlp::from_native(&native, &main).unwrap();
    let mut two = TinyPhmMlp::from_native(&native, &main).unwrap();
    let (mut optim_one, mut optim_two) = (SgdConfig::new().init(), SgdConfig::new().init());

    for batch in batches.iter().take(20) {
        let total = batch.y.len();
        // One device, the combined batch.
        let x: Tensor<2> = tensor_from_array(batch.x.view().into_dyn(), &main);
        let loss = cross_entropy(one.forward(x), &batch.y, total, &main);
        let grads = GradientsParams::from_grads(loss.backward(), &one);
        one = optim_one.step(LR, one, grads);

        // Two shards, each on its device's fork, summed on the main device.
        let mut accumulator = GradientsAccumulator::<TinyPhmMlp>::new();
        for (shard, device) in devices.iter().enumerate() {
            let rows = shard * total / 2..(shard + 1) * total / 2;
            let fork = two.clone().fork(device);
            let x = batch
                .x
                .slice(phm_nn::ndarray::s![rows.clone(), ..])
                .to_owned();
            let x: Tensor<2> = tensor_from_array(x.into_dyn().view(), device);
            let loss = cross_entropy(fork.forward(x), &batch.y[rows], total, device);
            let grads = GradientsParams::from_grads(loss.backward(), &fork);
            accumulator.accumulate(&two, grads.to_device(&main, &fork));
        }
        two = optim_two.step(LR, two, accumulator.grads());
    }

    let (a, b) = (
        one.to_native::<f64>().unwrap(),
        two.to_native::<f64>().unwrap(),
    );
    let start = native_mlp::<f64>(data.n_features(), 32, 10, 4, 7);
    for (((path, p), (_, q)), (_, p0)) in params(&a).into_iter().zip(params(&b)).zip(params(&start))
    {
        let (p, q, p0) = (p.value(), q.value(), p0.value());
        let moved = (&p - &p0).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = (&p - &q).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(moved > 1e-3, "{path}: did not train ({moved:e})");
        assert!(
            diff <= 1e-12 * moved,
            "{path}: max difference {diff:e} (moved {moved:e})"
        );
    }
}
