//! Parameter-efficient fine-tuning on the bundled digits: a dense MLP pretrained on digits 0–4
//! is adapted to digits 5–9 (with a new head) in four ways, and a table compares trainable
//! parameters, test accuracy and time:
//!
//! - full fine-tuning: every weight of the pretrained body trains, plus the new head;
//! - linear probe: the body is frozen, only the new head trains;
//! - dense adapters: the body is frozen, a dense bottleneck adapter (Houlsby) after each hidden
//!   layer and the new head train;
//! - Compacter adapters: the same adapters with low-rank PHM projections (n = 4, rank 1) that
//!   all share one rule set.
//!
//! Run: `cargo run --release --example adapters`

use std::error::Error;
use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use phm_nn::data::{digits, Dataset, SplitFractions};
use phm_nn::nn::{freeze, insert_adapters, AdapterConfig, ParameterCount, Projection};
use phm_nn::prelude::*;

const HIDDEN: usize = 128;
const CLASSES: usize = 5;
const BATCH: usize = 32;
const PRETRAIN_EPOCHS: usize = 30;
const ADAPT_EPOCHS: usize = 30;
const BOTTLENECK: usize = 16;
const N: usize = 4;
const RANK: usize = 1;

/// The rows of `data` whose label is in `lo..lo + CLASSES`, relabelled `0..CLASSES`.
fn digits_from(data: &Dataset<f32>, lo: usize) -> phm_nn::Result<Dataset<f32>> {
    let rows: Vec<usize> = (0..data.len())
        .filter(|&i| (lo..lo + CLASSES).contains(&data.y()[i]))
        .collect();
    let (x, y) = data.select(&rows).into_parts();
    Dataset::new(x, y.into_iter().map(|label| label - lo).collect())
}

/// The pretrained body: 64 → 128 → ReLU → 128 → ReLU (hidden layers at indices 1 and 3).
fn body(rng: &mut StdRng) -> phm_nn::Result<Sequential<f32>> {
    Ok(Sequential::new()
        .add(LinearConfig::new(64, HIDDEN).init(rng)?)
        .add(Relu::new())
        .add(LinearConfig::new(HIDDEN, HIDDEN).init(rng)?)
        .add(Relu::new()))
}

fn head(rng: &mut StdRng) -> phm_nn::Result<Linear<f32>> {
    LinearConfig::new(HIDDEN, CLASSES).init(rng)
}

/// Trains the trainable parameters of `model` with Adam; one tick of `progress` per epoch.
fn train(
    model: &mut Sequential<f32>,
    data: &Dataset<f32>,
    epochs: usize,
    lr: f64,
    rng: &mut StdRng,
    progress: &ProgressBar,
) -> phm_nn::Result<()> {
    let mut opt = Adam::new(AdamConfig {
        lr,
        ..AdamConfig::default()
    })?;
    for _ in 0..epochs {
        for batch in data.batches(BATCH, rng)? {
            model.zero_grad();
            let logits = model.forward(batch.x.view().into_dyn());
            let loss = cross_entropy(logits.view(), &batch.y)?;
            model.backward(loss.grad.view());
            opt.step(model)?;
        }
        progress.inc(1);
    }
    Ok(())
}

fn test_accuracy(model: &Sequential<f32>, data: &Dataset<f32>) -> f64 {
    accuracy(model.infer(data.x().into_dyn()).view(), data.y())
}

/// One way to adapt.
#[derive(Clone, Copy)]
enum Method {
    FullFineTuning,
    LinearProbe,
    DenseAdapters,
    CompacterAdapters,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::FullFineTuning => "full fine-tuning",
            Method::LinearProbe => "linear probe",
            Method::DenseAdapters => "dense adapters",
            Method::CompacterAdapters => "Compacter (LPHM, shared rules)",
        }
    }

    /// Adam's learning rate: the usual larger rate for the small parameter-efficient sets.
    fn lr(self) -> f64 {
        match self {
            Method::FullFineTuning => 3e-3,
            _ => 1e-2,
        }
    }

    /// The pretrained body (a copy), prepared for this method, with a new head.
    fn model(
        self,
        pretrained: &Sequential<f32>,
        rng: &mut StdRng,
    ) -> phm_nn::Result<Sequential<f32>> {
        let mut body = pretrained.clone();
        let new_head = head(rng)?;
        let after = [1, 3];
        match self {
            Method::FullFineTuning => {}
            Method::LinearProbe => freeze(&body),
            Method::DenseAdapters => {
                freeze(&body);
                let cfg = AdapterConfig::new(HIDDEN, BOTTLENECK, Projection::Dense);
                insert_adapters(&mut body, &after, |_| cfg.init(rng))?;
            }
            Method::CompacterAdapters => {
                freeze(&body);
                let cfg = AdapterConfig::new(HIDDEN, BOTTLENECK, Projection::low_rank(N, RANK));
                let rules = cfg.new_rules(rng)?;
                insert_adapters(&mut body, &after, |_| cfg.init_shared(&rules, rng))?;
            }
        }
        Ok(Sequential::new().add(body).add(new_head))
    }
}

struct Row {
    method: Method,
    count: ParameterCount,
    accuracy: f64,
    seconds: f64,
}

fn main() -> std::result::Result<(), Box<dyn Error>> {
    let mut rng = StdRng::seed_from_u64(2021);
    let data = digits::bundled::<f32>()?;
    let fractions = SplitFractions::new(0.6, 0.0, 0.4)?;
    let source = digits_from(&data, 0)?.stratified_split(fractions, &mut rng)?;
    let target = digits_from(&data, 5)?.stratified_split(fractions, &mut rng)?;
    let methods = [
        Method::FullFineTuning,
        Method::LinearProbe,
        Method::DenseAdapters,
        Method::CompacterAdapters,
    ];

    let total = (PRETRAIN_EPOCHS + methods.len() * ADAPT_EPOCHS) as u64;
    let progress = if std::io::stderr().is_terminal() {
        ProgressBar::new(total).with_style(ProgressStyle::with_template(
            "{msg:>32} [{bar:30}] {pos}/{len} epochs, {elapsed}",
        )?)
    } else {
        ProgressBar::hidden()
    };

    // Pretrain body + head on digits 0–4.
    progress.set_message("pretraining on digits 0–4");
    let start = Instant::now();
    let mut pretrained = Sequential::new().add(body(&mut rng)?).add(head(&mut rng)?);
    train(
        &mut pretrained,
        &source.train,
        PRETRAIN_EPOCHS,
        1e-3,
        &mut rng,
        &progress,
    )?;
    let pretrain_seconds = start.elapsed().as_secs_f64();
    let source_accuracy = test_accuracy(&pretrained, &source.test);
    let body = pretrained
        .get::<Sequential<f32>>(0)
        .expect("the body is layer 0")
        .clone();

    let mut rows = Vec::new();
    for method in methods {
        progress.set_message(method.name());
        // The same seed for every method: the same new head and batch order.
        let mut rng = StdRng::seed_from_u64(5);
        let mut model = method.model(&body, &mut rng)?;
        let count = ParameterCount::of(&model);
        let start = Instant::now();
        train(
            &mut model,
            &target.train,
            ADAPT_EPOCHS,
            method.lr(),
            &mut rng,
            &progress,
        )?;
        rows.push(Row {
            method,
            count,
            accuracy: test_accuracy(&model, &target.test),
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    progress.finish_and_clear();

    println!(
        "Pretrained on digits 0–4 ({} train / {} test images): test accuracy {:.1} %, {:.1} s",
        source.train.len(),
        source.test.len(),
        100.0 * source_accuracy,
        pretrain_seconds
    );
    println!(
        "Adapted to digits 5–9 ({} train / {} test images), {ADAPT_EPOCHS} epochs of Adam each \
         (lr 3e-3 for full fine-tuning, 1e-2 for the others):\n",
        target.train.len(),
        target.test.len()
    );
    println!(
        "| {:<30} | {:>16} | {:>10} | {:>13} | {:>8} |",
        "method", "trainable params", "% of model", "test accuracy", "time"
    );
    println!(
        "|{:-<32}|{:->18}|{:->12}|{:->15}|{:->10}|",
        "", "", "", "", ""
    );
    for row in &rows {
        println!(
            "| {:<30} | {:>16} | {:>8.2} % | {:>11.1} % | {:>6.2} s |",
            row.method.name(),
            row.count.trainable,
            row.count.trainable_percent(),
            100.0 * row.accuracy,
            row.seconds
        );
    }
    println!(
        "\n% of model: trainable / all parameters of the adapted model (frozen body included).\n\
         Adapters: bottleneck {BOTTLENECK} after each hidden layer; Compacter: n = {N}, rank {RANK}, one \
         rule tensor ({} values) shared by all four projections.",
        N * N * N
    );
    Ok(())
}
