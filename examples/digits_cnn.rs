//! A small CNN on the bundled 8×8 digits: dense convolutions against PHM convolutions (PHC)
//! with n = 2 and 4 (learned rules) and quaternion rules.
//!
//! ```text
//!     cargo run --release --example digits_cnn
//! ```
//!
//! Model: conv 3×3 (→ 16 channels, padding 1) → ReLU → max pool 2×2 → conv 3×3 (16 → 32,
//! padding 1) → ReLU → global average pool → linear 32 → 10. The PHC models replace both
//! convolutions; the classifier head stays dense (10 classes are not divisible by 4).
//!
//! The images have one channel, and `n` must divide a PHC layer's input channels. The PHC
//! models therefore see the image **repeated** on `n` channels: the first layer's kernels
//! `F: (n, 16/n, 1, 3, 3)` then hold `16·9` values, exactly as many as the dense first layer's
//! `(16, 1, 3, 3)`, and every convolution of the model is a PHC layer. (The alternatives — a
//! dense first layer, or zero channels — would either leave the first layer out of the
//! comparison or feed the layer inputs that are always zero.)
//!
//! Each model trains with Adam (lr 3e-3, batch 32) for a fixed number of epochs on a stratified
//! 80/20 split (the split is the same for every run), for 3 seeds; the table reports trainable
//! parameters, test accuracy (mean ± std over the seeds) and training time per run.

use std::error::Error;
use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{concatenate, Array4, Axis};
use phm_nn::data::{digits, Dataset, SplitFractions};
use phm_nn::prelude::*;

const EPOCHS: usize = 40;
const BATCH: usize = 32;
const SEEDS: [u64; 3] = [1, 2, 3];
const C1: usize = 16;
const C2: usize = 32;

#[derive(Clone, Copy)]
enum Variant {
    Dense,
    Phc { n: usize, rule: Option<Algebra> },
}

impl Variant {
    fn name(&self) -> String {
        match self {
            Variant::Dense => "dense conv".to_string(),
            Variant::Phc { n, rule: None } => format!("PHC n = {n}, learned rules"),
            Variant::Phc {
                n,
                rule: Some(algebra),
            } => format!("PHC n = {n}, {algebra} rules"),
        }
    }

    /// Input channels: the image repeated `n` times for PHC models.
    fn channels(&self) -> usize {
        match self {
            Variant::Dense => 1,
            Variant::Phc { n, .. } => *n,
        }
    }

    fn model(&self, rng: &mut StdRng) -> phm_nn::Result<Sequential<f32>> {
        let model = Sequential::new();
        let model = match *self {
            Variant::Dense => model
                .add(Conv2dConfig::new(1, C1, 3).with_padding(1).init(rng)?)
                .add(Relu::new())
                .add(MaxPool2d::new(2, 2, 0)?)
                .add(Conv2dConfig::new(C1, C2, 3).with_padding(1).init(rng)?),
            Variant::Phc { n, rule } => {
                let rule = rule.map_or(Rule::Learned(Init::UnitFibers), Rule::Fixed);
                model
                    .add(
                        PhmConv2dConfig::new(n, C1, 3, n)
                            .with_rule(rule)
                            .with_padding(1)
                            .init(rng)?,
                    )
                    .add(Relu::new())
                    .add(MaxPool2d::new(2, 2, 0)?)
                    .add(
                        PhmConv2dConfig::new(C1, C2, 3, n)
                            .with_rule(rule)
                            .with_padding(1)
                            .init(rng)?,
                    )
            }
        };
        Ok(model
            .add(Relu::new())
            .add(GlobalAvgPool::new())
            .add(LinearConfig::new(C2, 10).init(rng)?))
    }
}

/// Rows of 64 pixels as images `(N, channels, 8, 8)`, the one channel repeated.
fn images(x: ndarray::ArrayView2<'_, f32>, channels: usize) -> ArrayD<f32> {
    let one: Array4<f32> = x
        .to_owned()
        .into_shape_with_order((x.nrows(), 1, 8, 8))
        .expect("64 pixels per row");
    let copies = vec![one.view(); channels];
    concatenate(Axis(1), &copies)
        .expect("same shapes")
        .into_dyn()
}

struct Run {
    params: usize,
    accuracy: f64,
    seconds: f64,
}

fn train(
    variant: Variant,
    seed: u64,
    train_set: &Dataset<f32>,
    test_set: &Dataset<f32>,
    progress: &ProgressBar,
) -> std::result::Result<Run, Box<dyn Error>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = variant.model(&mut rng)?;
    let mut opt = Adam::new(AdamConfig {
        lr: 3e-3,
        ..AdamConfig::default()
    })?;
    let start = Instant::now();
    for _ in 0..EPOCHS {
        for batch in train_set.batches(BATCH, &mut rng)? {
            let x = images(batch.x.view(), variant.channels());
            model.zero_grad();
            let logits = model.forward(x.view());
            let loss = cross_entropy(logits.view(), &batch.y)?;
            model.backward(loss.grad.view());
            opt.step(&mut model)?;
        }
        progress.inc(1);
    }
    let seconds = start.elapsed().as_secs_f64();
    let logits = model.infer(images(test_set.x(), variant.channels()).view());
    Ok(Run {
        params: model.num_parameters(),
        accuracy: accuracy(logits.view(), test_set.y()),
        seconds,
    })
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1).max(1) as f64;
    (mean, var.sqrt())
}

fn main() -> std::result::Result<(), Box<dyn Error>> {
    let data = digits::bundled::<f32>()?;
    let split = data.stratified_split(
        SplitFractions::new(0.8, 0.0, 0.2)?,
        &mut StdRng::seed_from_u64(0),
    )?;
    println!(
        "digits 8×8: {} training and {} test images; {EPOCHS} epochs, batch {BATCH}, seeds {SEEDS:?}",
        split.train.len(),
        split.test.len()
    );
    let variants = [
        Variant::Dense,
        Variant::Phc { n: 2, rule: None },
        Variant::Phc { n: 4, rule: None },
        Variant::Phc {
            n: 4,
            rule: Some(Algebra::Quaternion),
        },
    ];
    let total = (variants.len() * SEEDS.len() * EPOCHS) as u64;
    let progress = if std::io::stderr().is_terminal() {
        ProgressBar::new(total).with_style(ProgressStyle::with_template(
            "{msg:>32} [{bar:30}] {pos}/{len} epochs, {elapsed}",
        )?)
    } else {
        ProgressBar::hidden()
    };
    let mut rows = Vec::new();
    for variant in variants {
        progress.set_message(variant.name());
        let mut runs = Vec::new();
        for seed in SEEDS {
            runs.push(train(variant, seed, &split.train, &split.test, &progress)?);
        }
        rows.push((variant, runs));
    }
    progress.finish_and_clear();

    println!();
    println!(
        "| {:<30} | {:>10} | {:>16} | {:>12} |",
        "model", "parameters", "test accuracy", "time per run"
    );
    println!("|{:-<32}|{:->12}|{:->18}|{:->14}|", "", "", "", "");
    for (variant, runs) in &rows {
        let acc: Vec<f64> = runs.iter().map(|r| 100.0 * r.accuracy).collect();
        let (mean, std) = mean_std(&acc);
        let secs = runs.iter().map(|r| r.seconds).sum::<f64>() / runs.len() as f64;
        println!(
            "| {:<30} | {:>10} | {:>7.2} ± {:<4.2} % | {:>10.2} s |",
            variant.name(),
            runs[0].params,
            mean,
            std,
            secs
        );
    }
    Ok(())
}
