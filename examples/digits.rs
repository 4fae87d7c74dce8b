//! PHM against dense on real data: the UCI handwritten digits (8×8 images, 10 classes).
//!
//! MLPs `64 → h → h → 10` with ReLU, trained with the same seeds, optimizer, schedule and
//! epochs: dense, PHM with n = 2, 4, 8 (learned rules) and n = 4 with fixed quaternion rules.
//! The two hidden layers are PHM; the output layer is dense in every model (10 is not a
//! multiple of 4 or 8), so the models differ only in their hidden layers.
//!
//! Prints a table (trainable parameters, test accuracy mean ± std over the seeds, time per
//! run), writes `docs/digits_accuracy.svg` (test accuracy against parameters), saves the
//! model with the best validation accuracy with `phm_nn::io::save_model`, reloads it into a
//! fresh model and reports its test accuracy from the reloaded file.
//!
//! ```text
//! cargo run --release --example digits
//! ```
use std::error::Error;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use phm_nn::data::{digits, Dataset, SplitFractions};
use phm_nn::io;
use phm_nn::optim::schedule::Schedule;
use phm_nn::prelude::*;
use phm_nn::train::evaluate;
use plotters::prelude::*;

/// Hidden width.
const H: usize = 128;
const EPOCHS: usize = 40;
const SEEDS: [u64; 5] = [1, 2, 3, 4, 5];
const BATCH: usize = 32;
const LR: f64 = 3e-3;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Dense,
    Phm(usize),
    Quaternion,
}

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::Dense => "dense".into(),
            Kind::Phm(n) => format!("PHM n={n} (learned)"),
            Kind::Quaternion => "PHM n=4 (quaternion)".into(),
        }
    }

    fn build(self, seed: u64) -> phm_nn::Result<Sequential<f32>> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut model = Sequential::new();
        for (d, k) in [(64, H), (H, H)] {
            match self {
                Kind::Dense => model.push(LinearConfig::new(d, k).init::<f32, _>(&mut rng)?),
                Kind::Phm(n) => model.push(PhmLinearConfig::new(d, k, n).init::<f32, _>(&mut rng)?),
                Kind::Quaternion => model.push(
                    PhmLinearConfig::new(d, k, 4)
                        .with_rule(Rule::Fixed(Algebra::Quaternion))
                        .init::<f32, _>(&mut rng)?,
                ),
            }
            model.push(Relu::new());
        }
        model.push(LinearConfig::new(H, 10).init::<f32, _>(&mut rng)?);
        Ok(model)
    }
}

struct Run {
    test: f64,
    best_val: f64,
    best_bytes: Vec<u8>,
    seconds: f64,
}

fn train(
    kind: Kind,
    seed: u64,
    data: &phm_nn::data::Split<f32>,
    progress: &ProgressBar,
) -> std::result::Result<Run, Box<dyn Error>> {
    let start = Instant::now();
    let mut model = kind.build(seed)?;
    let mut opt = Adam::new(AdamConfig {
        lr: LR,
        ..AdamConfig::default()
    })?;
    let steps_per_epoch = data.train.len().div_ceil(BATCH);
    let mut schedule = Schedule::cosine(LR, EPOCHS * steps_per_epoch, LR / 100.0)?
        .with_warmup(steps_per_epoch, 0.1)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let config = FitConfig {
        batch_size: BATCH,
        max_grad_norm: Some(5.0),
    };
    let (mut best_val, mut best_bytes) = (-1.0, Vec::new());
    for _ in 0..EPOCHS {
        fit_epoch(
            &mut model,
            &mut opt,
            Some(&mut schedule),
            &data.train,
            &config,
            &mut rng,
        )?;
        let val = evaluate(&model, &data.validation, 256)?.accuracy;
        if val > best_val {
            best_val = val;
            best_bytes = io::model_to_bytes(&model)?;
        }
        progress.inc(1);
    }
    // Test accuracy of the final model (every model the same number of epochs).
    let test = evaluate(&model, &data.test, 256)?.accuracy;
    Ok(Run {
        test,
        best_val,
        best_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() as f64 - 1.0).max(1.0);
    (m, var.sqrt())
}

/// Trainable parameters of the two hidden layers.
fn hidden_params(model: &Sequential<f32>) -> usize {
    model.layers()[..4].iter().map(|l| l.num_parameters()).sum()
}

fn main() -> std::result::Result<(), Box<dyn Error>> {
    let all: Dataset<f32> = digits::bundled()?;
    let fractions = SplitFractions::new(0.7, 0.15, 0.15)?;
    let data = all.stratified_split(fractions, &mut ChaCha8Rng::seed_from_u64(0))?;
    println!(
        "UCI digits: {} train, {} validation, {} test; MLP 64 → {H} → {H} → 10, Adam lr {LR} \
         (1 epoch warm-up, cosine), batch {BATCH}, {EPOCHS} epochs, clip 5, seeds {SEEDS:?}",
        data.train.len(),
        data.validation.len(),
        data.test.len()
    );
    let kinds = [
        Kind::Dense,
        Kind::Phm(2),
        Kind::Phm(4),
        Kind::Phm(8),
        Kind::Quaternion,
    ];
    let total = (kinds.len() * SEEDS.len() * EPOCHS) as u64;
    let progress = if std::io::stderr().is_terminal() {
        ProgressBar::new(total).with_style(ProgressStyle::with_template(
            "{msg:>30} [{bar:30}] {pos}/{len} epochs, {elapsed}",
        )?)
    } else {
        ProgressBar::hidden()
    };

    struct Row {
        kind: Kind,
        params: usize,
        hidden: usize,
        acc: (f64, f64),
        seconds: f64,
    }
    let mut rows = Vec::new();
    let mut best: Option<(f64, Kind, u64, Vec<u8>)> = None;
    let start = Instant::now();
    for kind in kinds {
        let mut accs = Vec::new();
        let mut seconds = 0.0;
        for seed in SEEDS {
            progress.set_message(format!("{} seed {seed}", kind.name()));
            let run = train(kind, seed, &data, &progress)?;
            accs.push(run.test);
            seconds += run.seconds;
            if best.as_ref().is_none_or(|b| run.best_val > b.0) {
                best = Some((run.best_val, kind, seed, run.best_bytes));
            }
        }
        let model = kind.build(0)?;
        rows.push(Row {
            kind,
            params: model.num_parameters(),
            hidden: hidden_params(&model),
            acc: mean_std(&accs),
            seconds: seconds / SEEDS.len() as f64,
        });
    }
    progress.finish_and_clear();

    let dense_hidden = rows[0].hidden as f64;
    println!();
    println!("| model | trainable params | hidden-layer params | test accuracy (mean ± std, {} seeds) | time per run |", SEEDS.len());
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} ({:.0} %) | {:.2} ± {:.2} % | {:.1} s |",
            r.kind.name(),
            r.params,
            r.hidden,
            100.0 * r.hidden as f64 / dense_hidden,
            100.0 * r.acc.0,
            100.0 * r.acc.1,
            r.seconds
        );
    }
    println!("\ntotal time {:.1} s", start.elapsed().as_secs_f64());

    // The best model by validation accuracy: save it, reload it into a fresh model, test it.
    let (val, kind, seed, bytes) = best.expect("at least one run");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/digits");
    std::fs::create_dir_all(&out)?;
    let path = out.join("best.safetensors");
    let mut best_model = kind.build(seed)?;
    io::load_model_from_bytes(&mut best_model, &bytes)?;
    io::save_model(&best_model, &path)?;
    let mut reloaded = kind.build(12345)?;
    let meta = io::load_model(&mut reloaded, &path)?;
    let test = evaluate(&reloaded, &data.test, 256)?;
    // Bit-exact reload: the same predictions as the model that was saved.
    assert_eq!(test, evaluate(&best_model, &data.test, 256)?);
    println!(
        "\nbest validation accuracy: {} seed {seed} ({:.2} %), saved to {} ({} bytes, written by phm-nn {});",
        kind.name(),
        100.0 * val,
        path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(&path).display(),
        std::fs::metadata(&path)?.len(),
        meta["phm_nn.version"],
    );
    println!(
        "reloaded into a fresh model: test accuracy {:.2} %",
        100.0 * test.accuracy
    );
    println!("{}", test.confusion);

    let svg = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/digits_accuracy.svg");
    plot(
        &svg,
        &rows
            .iter()
            .map(|r| (r.kind.name(), r.params, r.acc))
            .collect::<Vec<_>>(),
    )?;
    println!("plot: docs/digits_accuracy.svg");
    Ok(())
}

/// Test accuracy (mean ± std) against trainable parameters, one labelled point per model.
fn plot(
    path: &Path,
    rows: &[(String, usize, (f64, f64))],
) -> std::result::Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let lo = rows
        .iter()
        .map(|r| r.2 .0 - r.2 .1)
        .fold(f64::INFINITY, f64::min);
    let hi = rows.iter().map(|r| r.2 .0 + r.2 .1).fold(0.0, f64::max);
    // Room above the points for the legend.
    let (y0, y1) = (
        (100.0 * lo - 1.0).floor(),
        (100.0 * hi + 3.0).ceil().min(100.0),
    );
    let pmax = rows.iter().map(|r| r.1).max().unwrap_or(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("UCI digits, MLP 64 → {H} → {H} → 10: test accuracy vs parameters"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..pmax * 1.1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("trainable parameters")
        .y_desc(format!(
            "test accuracy, % (mean ± std, {} seeds)",
            SEEDS.len()
        ))
        .x_label_formatter(&|v| {
            if *v == 0.0 {
                "0".to_string()
            } else {
                format!("{}k", v / 1000.0)
            }
        })
        .y_label_formatter(&|v| format!("{v:.1}"))
        .x_labels(12)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let colours = [BLACK, BLUE, RED, RGBColor(0, 150, 0), MAGENTA];
    for ((name, params, (m, s)), colour) in rows.iter().zip(colours) {
        let x = *params as f64;
        let (m, s) = (100.0 * m, 100.0 * s);
        chart.draw_series(LineSeries::new(
            vec![(x, m - s), (x, m + s)],
            colour.stroke_width(2),
        ))?;
        chart
            .draw_series(std::iter::once(Circle::new((x, m), 5, colour.filled())))?
            .label(format!("{name}: {m:.1} ± {s:.1} %"))
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
