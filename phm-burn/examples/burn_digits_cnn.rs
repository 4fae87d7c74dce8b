//! Trains the digits CNN with phm-burn (burn's autodiff): dense convolutions against PHM
//! convolutions (PHC, n = 4, learned rules), on the CPU by default, a GPU with
//! `--features cuda`, the batch split over `--devices N`.
//!
//! ```text
//!     cargo run --release -p phm-burn --example burn_digits_cnn
//!     cargo run --release -p phm-burn --example burn_digits_cnn -- --devices 2 --steps 300
//!     cargo run --release -p phm-burn --features cuda --example burn_digits_cnn   # CUDA device(s)
//! ```
//!
//! Model (the root crate's `examples/digits_cnn.rs`): conv 3×3 (→ 16 channels, padding 1) →
//! ReLU → max pool 2×2 → conv 3×3 (16 → 32, padding 1) → ReLU → global average pool → linear
//! 32 → 10. The PHC model replaces both convolutions and sees the image repeated on n = 4
//! channels (n must divide a PHC layer's input channels). f32, Adam (lr 3e-3), batch 64, on a
//! stratified 80/20 split. The table gives the trainable parameters, test accuracy and training
//! throughput; the loss curves (mean over 25 steps) go to an SVG (`--out`, default
//! `target/phm_burn_digits_cnn.svg`).

mod common;

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::AdamConfig;
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{Args, Curve};
use phm_burn::burn;
use phm_burn::conv::{Conv2d, Conv2dConfig, PhmConv2d, PhmConv2dConfig};
use phm_burn::linear::{Linear, LinearConfig};
use phm_burn::pool::{GlobalAvgPool, MaxPool2d};
use phm_nn::data::{digits, Dataset, SplitFractions};
use phm_nn::rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

const C1: usize = 16;
const C2: usize = 32;
const BATCH: usize = 64;
const LR: f64 = 3e-3;

/// A dense or a PHM convolution.
#[derive(Module, Debug)]
enum Conv {
    Dense(Conv2d),
    Phm(PhmConv2d),
}

impl Conv {
    /// `c_in → c_out`, 3×3, padding 1; PHM with `n > 1`.
    fn new(
        c_in: usize,
        c_out: usize,
        n: usize,
        seed: u64,
        device: &Device,
    ) -> phm_nn::Result<Self> {
        Ok(if n == 1 {
            Conv::Dense(
                Conv2dConfig::new(c_in, c_out, [3, 3])
                    .with_padding([1, 1])
                    .with_seed(seed)
                    .init::<f32>(device)?,
            )
        } else {
            Conv::Phm(
                PhmConv2dConfig::new(c_in, c_out, [3, 3], n)
                    .with_padding([1, 1])
                    .with_seed(seed)
                    .init::<f32>(device)?,
            )
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Conv::Dense(c) => c.forward(x),
            Conv::Phm(c) => c.forward(x),
        }
    }
}

/// conv → ReLU → max pool → conv → ReLU → global average pool → linear.
#[derive(Module, Debug)]
struct Cnn {
    conv1: Conv,
    pool: MaxPool2d,
    conv2: Conv,
    gap: GlobalAvgPool,
    out: Linear,
    /// Input channels: the image repeated `n` times.
    channels: usize,
}

impl Cnn {
    fn new(n: usize, device: &Device) -> phm_nn::Result<Self> {
        Ok(Self {
            conv1: Conv::new(n, C1, n, 1, device)?,
            pool: MaxPool2d::new([2, 2], [2, 2], [0, 0])?,
            conv2: Conv::new(C1, C2, n, 2, device)?,
            gap: GlobalAvgPool,
            out: LinearConfig::new(C2, 10).with_seed(3).init::<f32>(device)?,
            channels: n,
        })
    }

    /// Logits `(b, 10)` of flattened 8×8 images `(b, 64)`.
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [b, _] = x.dims();
        let x = x.reshape([b, 1, 8, 8]).repeat_dim(1, self.channels);
        let h = self.pool.forward(relu(self.conv1.forward(x)));
        self.out
            .forward(self.gap.forward(relu(self.conv2.forward(h))))
    }
}

/// Rows `rows` of `data` as an `(b, d)` tensor and `(b)` labels on `device`.
fn batch(data: &Dataset<f32>, rows: &[usize], device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let d = data.n_features();
    let x: Vec<f32> = rows
        .iter()
        .flat_map(|&r| data.x().row(r).to_vec())
        .collect();
    let y: Vec<i64> = rows.iter().map(|&r| data.y()[r] as i64).collect();
    (
        Tensor::from_data(TensorData::new(x, [rows.len(), d]), device),
        Tensor::from_data(TensorData::new(y, [rows.len()]), device),
    )
}

/// Cross-entropy summed over the rows, divided by `total`.
fn loss(logits: Tensor<2>, labels: Tensor<1, Int>, total: usize) -> Tensor<1> {
    let picked = log_softmax(logits, 1).gather(1, labels.unsqueeze_dim(1));
    -picked.sum() / total as f64
}

struct Run {
    name: String,
    params: usize,
    accuracy: f64,
    samples_per_s: f64,
    curve: Vec<f64>,
}

fn train(
    n: usize,
    name: &str,
    train: &Dataset<f32>,
    test: &Dataset<f32>,
    args: &Args,
    devices: &[Device],
    progress: &indicatif::ProgressBar,
) -> Result<Run, Box<dyn Error>> {
    let mut model = Cnn::new(n, &devices[0])?;
    let params = model.num_params();
    let mut optim = AdamConfig::new().init();
    let mut rng = StdRng::seed_from_u64(3);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut curve = Vec::with_capacity(args.steps);
    progress.set_message(name.to_string());
    let start = Instant::now();
    for s in 0..args.steps {
        let at = (s * BATCH) % (train.len() - BATCH + 1);
        if at < BATCH {
            order.shuffle(&mut rng);
        }
        let rows = &order[at..at + BATCH];
        let loss_value;
        (model, loss_value) = common::step(model, devices, &mut optim, LR, |m, i, device| {
            let shard = &rows[common::shard(i, devices.len(), BATCH)];
            let (x, y) = batch(train, shard, device);
            loss(m.forward(x), y, BATCH)
        });
        curve.push(loss_value);
        progress.inc(1);
    }
    let seconds = start.elapsed().as_secs_f64();
    // Test accuracy on the first device, without autodiff.
    let device = devices[0].clone().inner();
    let model = model.valid();
    let all: Vec<usize> = (0..test.len()).collect();
    let (x, y) = batch(test, &all, &device);
    let predicted = model.forward(x).argmax(1).squeeze_dim::<1>(1);
    let correct = predicted.equal(y).int().sum().into_scalar::<i64>();
    Ok(Run {
        name: name.to_string(),
        params,
        accuracy: correct as f64 / test.len() as f64,
        samples_per_s: (args.steps * BATCH) as f64 / seconds,
        curve,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse(1500, "target/phm_burn_digits_cnn.svg")?;
    let (devices, what) = common::devices(args.devices);
    let data = digits::bundled::<f32>()?;
    let split = data.stratified_split(
        SplitFractions::new(0.8, 0.0, 0.2)?,
        &mut StdRng::seed_from_u64(0),
    )?;
    println!(
        "digits CNN with phm-burn: {} training / {} test images, batch {BATCH}, {} steps on {what}",
        split.train.len(),
        split.test.len(),
        args.steps
    );
    let kinds = [("dense convolutions", 1), ("PHC n = 4 (learned rules)", 4)];
    let progress = common::progress((kinds.len() * args.steps) as u64)?;
    let mut runs = Vec::new();
    for (name, kind) in &kinds {
        runs.push(train(
            *kind,
            name,
            &split.train,
            &split.test,
            &args,
            &devices,
            &progress,
        )?);
    }
    progress.finish_and_clear();

    println!();
    println!(
        "| {:<28} | {:>10} | {:>13} | {:>14} |",
        "model", "parameters", "test accuracy", "samples / s"
    );
    println!("|{:-<30}|{:->12}|{:->15}|{:->16}|", "", "", "", "");
    for r in &runs {
        println!(
            "| {:<28} | {:>10} | {:>12.1} % | {:>14.0} |",
            r.name,
            r.params,
            100.0 * r.accuracy,
            r.samples_per_s
        );
    }
    let curves: Vec<Curve> = runs
        .iter()
        .map(|r| Curve {
            label: format!(
                "{} ({} params): {:.1} % test",
                r.name,
                r.params,
                100.0 * r.accuracy
            ),
            points: common::smooth(&r.curve, 25),
        })
        .collect();
    common::plot(
        Path::new(&args.out),
        "Digits CNN with phm-burn: training loss (mean over 25 steps)",
        "cross-entropy",
        args.steps,
        &curves,
    )?;
    println!(
        "\nplot: {}   (load average {})",
        args.out,
        common::load_average()
    );
    Ok(())
}
