//! Trains the character-level PHM Transformer language model on the bundled Shakespeare with
//! phm-burn (burn's autodiff): dense projections against PHM n = 4, on the CPU by default, a
//! GPU with `--features cuda`, the batch split over `--devices N`.
//!
//! ```text
//!     cargo run --release -p phm-burn --example burn_char_lm
//!     cargo run --release -p phm-burn --example burn_char_lm -- --devices 2 --steps 200
//!     cargo run --release -p phm-burn --features cuda --example burn_char_lm   # CUDA device(s)
//! ```
//!
//! Model: phm-burn's `TransformerLm`, d = 64, 4 heads, 2 pre-norm blocks, FFN 256, context 64,
//! every projection dense or PHM n = 4 (learned rules), f32, Adam (lr 3e-3), batch 16 random
//! windows. The table gives the trainable parameters, validation bits per character (on the
//! last 10 % of the text, 16 windows) and training throughput in tokens per second; the loss
//! curves in bits per character (mean over 10 steps) go to an SVG (`--out`, default
//! `target/phm_burn_char_lm.svg`).

mod common;

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::AdamConfig;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use common::{Args, Curve};
use phm_burn::burn;
use phm_burn::linear::ProjectionConfig;
use phm_burn::transformer::{TransformerLm, TransformerLmConfig};
use phm_nn::data::text::{random_windows, TextCorpus};
use phm_nn::ndarray::{s, Array2};
use phm_nn::rand::{rngs::StdRng, SeedableRng};

const D: usize = 64;
const HEADS: usize = 4;
const LAYERS: usize = 2;
const FFN: usize = 256;
const T: usize = 64;
const BATCH: usize = 16;
const LR: f64 = 3e-3;
const LN2: f64 = std::f64::consts::LN_2;

/// Token ids `(b, T)` as an Int tensor on `device`.
fn ids(a: &Array2<usize>, device: &Device) -> Tensor<2, Int> {
    let (b, t) = a.dim();
    let v: Vec<i64> = a.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, [b, t]), device)
}

/// Cross-entropy of next-character logits `(b, T, V)`, summed, divided by `total` positions.
fn loss(
    model: &TransformerLm,
    x: &Array2<usize>,
    y: &Array2<usize>,
    total: usize,
    device: &Device,
) -> Tensor<1> {
    let logits = model.forward(ids(x, device), None);
    let [b, t, v] = logits.dims();
    let logp = log_softmax(logits.reshape([b * t, v]), 1);
    let targets = ids(y, device).reshape([b * t, 1]);
    -logp.gather(1, targets).sum() / total as f64
}

struct Run {
    name: String,
    params: usize,
    val_bits: f64,
    tokens_per_s: f64,
    curve: Vec<f64>,
}

fn train(
    projection: ProjectionConfig,
    name: &str,
    corpus: &TextCorpus,
    args: &Args,
    devices: &[Device],
    progress: &indicatif::ProgressBar,
) -> Result<Run, Box<dyn Error>> {
    let (train_tokens, val_tokens) = corpus.split(0.1)?;
    let mut model = TransformerLmConfig::new(corpus.vocab().len(), D, HEADS, LAYERS, T)
        .with_ffn_width(FFN)
        .with_projection(projection)
        .with_seed(7)
        .init::<f32>(&devices[0])?;
    let params = model.num_params();
    let mut optim = AdamConfig::new().init();
    let mut rng = StdRng::seed_from_u64(11);
    let mut curve = Vec::with_capacity(args.steps);
    progress.set_message(name.to_string());
    let start = Instant::now();
    for _ in 0..args.steps {
        let (x, y) = random_windows(train_tokens, BATCH, T, &mut rng)?;
        let loss_value;
        (model, loss_value) = common::step(model, devices, &mut optim, LR, |m, i, device| {
            let rows = common::shard(i, devices.len(), BATCH);
            let (xs, ys) = (
                x.slice(s![rows.clone(), ..]).to_owned(),
                y.slice(s![rows, ..]).to_owned(),
            );
            loss(m, &xs, &ys, BATCH * T, device)
        });
        curve.push(loss_value / LN2);
        progress.inc(1);
    }
    let seconds = start.elapsed().as_secs_f64();
    // Validation on the first device, without autodiff.
    let device = devices[0].clone().inner();
    let model = model.valid();
    let (x, y) = random_windows(val_tokens, 16, T, &mut StdRng::seed_from_u64(5))?;
    let val = loss(&model, &x, &y, 16 * T, &device).into_scalar::<f64>();
    Ok(Run {
        name: name.to_string(),
        params,
        val_bits: val / LN2,
        tokens_per_s: (args.steps * BATCH * T) as f64 / seconds,
        curve,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse(300, "target/phm_burn_char_lm.svg")?;
    let (devices, what) = common::devices(args.devices);
    let corpus = TextCorpus::shakespeare()?;
    println!(
        "character LM with phm-burn: {} characters, vocabulary {}, d = {D}, {LAYERS} blocks, context {T}, batch {BATCH}, {} steps on {what}",
        corpus.len(),
        corpus.vocab().len(),
        args.steps
    );
    let kinds = [
        ("dense projections", ProjectionConfig::Dense),
        ("PHM n = 4 (learned rules)", ProjectionConfig::phm(4)),
    ];
    let progress = common::progress((kinds.len() * args.steps) as u64)?;
    let mut runs = Vec::new();
    for (name, kind) in kinds {
        runs.push(train(kind, name, &corpus, &args, &devices, &progress)?);
    }
    progress.finish_and_clear();

    println!();
    println!(
        "| {:<28} | {:>10} | {:>14} | {:>12} |",
        "model", "parameters", "val bits/char", "tokens / s"
    );
    println!("|{:-<30}|{:->12}|{:->16}|{:->14}|", "", "", "", "");
    for r in &runs {
        println!(
            "| {:<28} | {:>10} | {:>14.3} | {:>12.0} |",
            r.name, r.params, r.val_bits, r.tokens_per_s
        );
    }
    let curves: Vec<Curve> = runs
        .iter()
        .map(|r| Curve {
            label: format!(
                "{} ({} params): {:.3} val bits/char",
                r.name, r.params, r.val_bits
            ),
            points: common::smooth(&r.curve, 10),
        })
        .collect();
    common::plot(
        Path::new(&args.out),
        &format!(
            "Shakespeare, character LM with phm-burn (d = {D}, {LAYERS} blocks): training loss"
        ),
        "bits per character",
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
