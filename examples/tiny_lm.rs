//! A character-level Transformer language model on the bundled Shakespeare, dense against PHM.
//!
//! ```text
//! cargo run --release --example tiny_lm              # default run, a few minutes on 2 cores
//! cargo run --release --example tiny_lm -- --long    # 8× more training steps
//! cargo run --release --example tiny_lm -- --steps 2000
//! ```
//!
//! Trains three decoder-only Transformers of the same widths (d = 128, 4 heads, 2 blocks,
//! feed-forward 512, context 64) with the same seed, data order, optimizer (AdamW, warm-up
//! then cosine, gradient norm clipped to 1) and number of steps: every block projection dense,
//! PHM n = 2 or PHM n = 4 (learned rules, one rule tensor per layer); the vocabulary head is
//! dense in all three. The validation split is the last 10 % of the text.
//!
//! Prints a Markdown table (trainable parameters, validation loss and bits per character,
//! training and generation speed with and without the key/value cache), saves each model to
//! `target/tiny_lm/<name>.safetensors`, reloads it into a freshly initialised model (checking
//! its logits are the trained model's) and samples text from the reloaded model. Writes the
//! validation curves to `docs/tiny_lm_loss.svg`.
use std::error::Error;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use phm_nn::data::text::{random_windows, sequential_windows, TextCorpus};
use phm_nn::io;
use phm_nn::nn::transformer::{Sampling, TransformerLm, TransformerLmConfig};
use phm_nn::nn::Projection;
use phm_nn::optim::schedule::Schedule;
use phm_nn::prelude::*;
use plotters::prelude::*;

/// Model width.
const D: usize = 128;
const HEADS: usize = 4;
const LAYERS: usize = 2;
const FFN: usize = 512;
/// Context length (tokens per training window).
const T: usize = 64;
const BATCH: usize = 16;
const LR: f64 = 3e-3;
const CLIP: f64 = 1.0;
/// Training steps of the default run; `--long` multiplies them by `LONG_FACTOR`.
const STEPS: usize = 500;
const LONG_FACTOR: usize = 8;
/// Validation curve points (evaluations after step 0, evenly spaced).
const EVALS: usize = 12;
/// Validation windows of `T` tokens (the first ones of the validation split, in order).
const VAL_WINDOWS: usize = 128;
const VAL_FRACTION: f64 = 0.1;
const SEED: u64 = 7;
const PROMPT: &str = "ROMEO:\n";
/// Characters generated per model (for the sample and the generation speed).
const GEN: usize = 200;
const LN2: f64 = std::f64::consts::LN_2;

#[derive(Clone, Copy)]
enum Kind {
    Dense,
    Phm(usize),
}

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::Dense => "dense".into(),
            Kind::Phm(n) => format!("PHM n={n}"),
        }
    }

    fn file_stem(self) -> String {
        match self {
            Kind::Dense => "dense".into(),
            Kind::Phm(n) => format!("phm{n}"),
        }
    }

    fn config(self, vocab: usize) -> TransformerLmConfig {
        let config = TransformerLmConfig::new(vocab, D, HEADS, LAYERS, T).with_ffn_width(FFN);
        match self {
            Kind::Dense => config,
            Kind::Phm(n) => config
                .with_projection(Projection::phm(n))
                .with_shared_rules(false),
        }
    }
}

/// One trained model and its measurements.
struct Run {
    kind: Kind,
    params: usize,
    val_loss: f64,
    train_tok_s: f64,
    /// `(step, validation bits/char, smoothed training bits/char)`.
    curve: Vec<(usize, f64, f64)>,
    model: TransformerLm<f32>,
}

/// Mean cross-entropy (nats per character) over the fixed validation windows.
fn val_loss(model: &TransformerLm<f32>, val: &[usize]) -> phm_nn::Result<f64> {
    let (mut total, mut count) = (0.0, 0usize);
    for (inputs, targets) in sequential_windows(val, 32, T)?.take(VAL_WINDOWS / 32) {
        let logits = model.infer_ids(inputs.view(), None);
        let labels: Vec<usize> = targets.iter().copied().collect();
        let loss = cross_entropy(logits.view(), &labels)?;
        total += f64::from(loss.value) * labels.len() as f64;
        count += labels.len();
    }
    Ok(total / count as f64)
}

fn train(
    kind: Kind,
    vocab: usize,
    data: (&[usize], &[usize]),
    steps: usize,
    progress: &ProgressBar,
) -> std::result::Result<Run, Box<dyn Error>> {
    let (train_tokens, val) = data;
    let mut model = kind
        .config(vocab)
        .init::<f32, _>(&mut StdRng::seed_from_u64(SEED))?;
    let params = model.num_parameters();
    let mut opt = AdamW::new(AdamWConfig {
        lr: LR,
        ..AdamWConfig::default()
    })?;
    let warmup = (steps / 20).max(1);
    let mut schedule = Schedule::cosine(LR, steps.saturating_sub(warmup).max(1), LR / 10.0)?
        .with_warmup(warmup, 0.01)?;
    // The same batches, in the same order, for every model.
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let eval_every = (steps / EVALS).max(1);
    let mut curve = vec![(0, val_loss(&model, val)? / LN2, f64::NAN)];
    // Bias-corrected exponential moving average of the training loss.
    let (beta, mut ema) = (0.98, 0.0);
    let mut train_seconds = 0.0;
    for step in 1..=steps {
        let (inputs, targets) = random_windows(train_tokens, BATCH, T, &mut rng)?;
        let labels: Vec<usize> = targets.iter().copied().collect();
        let start = Instant::now();
        model.zero_grad();
        let logits = model.forward_ids(inputs.view(), None);
        let loss = cross_entropy(logits.view(), &labels)?;
        model.backward_logits(loss.grad.view());
        clip_grad_norm(&model, CLIP)?;
        schedule.advance(&mut opt)?;
        opt.step(&mut model)?;
        train_seconds += start.elapsed().as_secs_f64();

        let value = f64::from(loss.value);
        if !value.is_finite() {
            return Err(format!("{}: training loss {value} at step {step}", kind.name()).into());
        }
        ema = beta * ema + (1.0 - beta) * value;
        let smoothed = ema / (1.0 - beta.powi(step as i32));
        progress.set_message(format!("{:>9} loss {smoothed:.3}", kind.name()));
        progress.inc(1);
        if step % eval_every == 0 || step == steps {
            if curve.last().is_some_and(|c| c.0 == step) {
                continue;
            }
            curve.push((step, val_loss(&model, val)? / LN2, smoothed / LN2));
        }
    }
    let val_loss = val_loss(&model, val)?;
    Ok(Run {
        kind,
        params,
        val_loss,
        train_tok_s: (steps * BATCH * T) as f64 / train_seconds,
        curve,
        model,
    })
}

fn parse_steps() -> std::result::Result<usize, Box<dyn Error>> {
    let mut steps = STEPS;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--long" => steps = STEPS * LONG_FACTOR,
            "--steps" => {
                let value = args.next().ok_or("--steps needs a number")?;
                steps = value.parse().map_err(|e| format!("--steps {value}: {e}"))?;
                if steps == 0 {
                    return Err("--steps must be at least 1".into());
                }
            }
            other => {
                return Err(
                    format!("unknown argument {other} (expected --long or --steps N)").into(),
                )
            }
        }
    }
    Ok(steps)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

fn main() -> std::result::Result<(), Box<dyn Error>> {
    let steps = parse_steps()?;
    let start = Instant::now();
    let corpus = TextCorpus::shakespeare()?;
    let vocab = corpus.vocab();
    let (train_tokens, val) = corpus.split(VAL_FRACTION)?;
    println!(
        "Shakespeare: {} characters, vocabulary {}; {} train, {} validation ({} windows of {T} \
         evaluated)",
        corpus.len(),
        vocab.len(),
        train_tokens.len(),
        val.len(),
        VAL_WINDOWS.min((val.len() - 1) / T),
    );
    println!(
        "Transformer d = {D}, {HEADS} heads, {LAYERS} blocks, feed-forward {FFN}, context {T}; \
         AdamW lr {LR} (warm-up {} steps, cosine to {:.1e}), batch {BATCH}, {steps} steps, clip {CLIP}; \
         {} threads; load average at start {}",
        (steps / 20).max(1),
        LR / 10.0,
        phm_nn::kernels::num_threads(),
        load_average(),
    );

    let kinds = [Kind::Dense, Kind::Phm(2), Kind::Phm(4)];
    let progress = if std::io::stderr().is_terminal() {
        ProgressBar::new((kinds.len() * steps) as u64).with_style(ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} steps, {elapsed} (eta {eta})",
        )?)
    } else {
        ProgressBar::hidden()
    };
    let mut runs = Vec::new();
    for kind in kinds {
        runs.push(train(
            kind,
            vocab.len(),
            (train_tokens, val),
            steps,
            &progress,
        )?);
    }
    progress.finish_and_clear();
    let train_time = start.elapsed().as_secs_f64();

    // Save each model, reload it into a fresh model with other initial weights, check it
    // computes the same logits, and generate from the reloaded model.
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tiny_lm");
    std::fs::create_dir_all(&out)?;
    let prompt = vocab.encode(PROMPT)?;
    let (window, _) = sequential_windows(val, 4, T)?
        .next()
        .ok_or("no validation window")?;
    let sampling = Sampling::new(0.8, Some(10));
    let mut rows = Vec::new();
    let mut samples = Vec::new();
    for run in &runs {
        let path = out.join(format!("{}.safetensors", run.kind.file_stem()));
        io::save_model(&run.model, &path)?;
        let mut reloaded = run
            .kind
            .config(vocab.len())
            .init::<f32, _>(&mut StdRng::seed_from_u64(SEED + 1000))?;
        io::load_model(&mut reloaded, &path)?;
        assert_eq!(
            reloaded.infer_ids(window.view(), None),
            run.model.infer_ids(window.view(), None),
            "{}: the reloaded model's logits differ from the trained model's",
            run.kind.name()
        );

        let t0 = Instant::now();
        let cached = reloaded.generate(&prompt, GEN, sampling, &mut StdRng::seed_from_u64(SEED))?;
        let cached_s = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let uncached =
            reloaded.generate_uncached(&prompt, GEN, sampling, &mut StdRng::seed_from_u64(SEED))?;
        let uncached_s = t0.elapsed().as_secs_f64();
        assert_eq!(
            cached, uncached,
            "generation with and without the cache differ"
        );
        rows.push((GEN as f64 / cached_s, GEN as f64 / uncached_s));
        samples.push((run.kind.name(), path, vocab.decode(&cached)?));
    }

    let dense = runs[0].params as f64;
    println!();
    println!(
        "| model | trainable params | params vs dense | val loss (nats) | bits/char | train tok/s | gen tok/s (cached) | gen tok/s (no cache) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (run, (gen_cached, gen_uncached)) in runs.iter().zip(&rows) {
        println!(
            "| {} | {} | {:.0} % | {:.3} | {:.3} | {:.0} | {:.0} | {:.0} |",
            run.kind.name(),
            run.params,
            100.0 * run.params as f64 / dense,
            run.val_loss,
            run.val_loss / LN2,
            run.train_tok_s,
            gen_cached,
            gen_uncached,
        );
    }
    println!(
        "\nval: the first {} validation windows of {T} characters; train tok/s: {BATCH}×{T} \
         tokens per step over the timed steps (forward, backward, clipping, AdamW); gen: {GEN} \
         new characters after {PROMPT:?} (temperature {}, top-k {}), the same characters with \
         and without the cache",
        VAL_WINDOWS.min((val.len() - 1) / T),
        sampling.temperature,
        sampling.top_k.unwrap_or(0),
    );

    for (name, path, text) in &samples {
        println!(
            "\n--- {name}, reloaded from {} ---",
            path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
                .unwrap_or(path)
                .display()
        );
        println!("{text}");
    }

    let svg = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tiny_lm_loss.svg");
    plot(&svg, &runs, steps)?;
    println!("\nplot: docs/tiny_lm_loss.svg");
    println!(
        "training {train_time:.1} s, total time {:.1} s; load average at end {}",
        start.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}

/// Validation bits per character (solid) and smoothed training bits per character (dashed)
/// against the training step, one colour per model.
fn plot(path: &Path, runs: &[Run], steps: usize) -> std::result::Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    // Start the y axis after the first evaluation (step 0 is the untrained ~log2(vocab)).
    let points = || runs.iter().flat_map(|r| r.curve.iter().skip(1));
    let lo = points()
        .flat_map(|c| [c.1, c.2])
        .filter(|v| v.is_finite())
        .fold(f64::INFINITY, f64::min);
    let top = runs
        .iter()
        .flat_map(|r| r.curve.first())
        .map(|c| c.1)
        .fold(0.0, f64::max);
    let (y0, y1) = ((lo * 4.0).floor() / 4.0 - 0.25, (top * 2.0).ceil() / 2.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Shakespeare, character LM (d = {D}, {LAYERS} blocks, context {T}): bits per character"
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0..steps, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(format!("training step (batch {BATCH} × {T} characters)"))
        .y_desc("bits per character")
        .y_label_formatter(&|v| format!("{v:.1}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let colours = [BLACK, BLUE, RED];
    for (run, colour) in runs.iter().zip(colours) {
        let final_bits = run.val_loss / LN2;
        chart
            .draw_series(LineSeries::new(
                run.curve.iter().map(|c| (c.0, c.1)),
                colour.stroke_width(2),
            ))?
            .label(format!(
                "{} validation ({} params): {final_bits:.3}",
                run.kind.name(),
                run.params
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(DashedLineSeries::new(
                run.curve.iter().skip(1).map(|c| (c.0, c.2)),
                6,
                4,
                colour.stroke_width(1),
            ))?
            .label(format!("{} training (smoothed)", run.kind.name()))
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (7, 0)], colour.stroke_width(1))
                    + PathElement::new(vec![(12, 0), (19, 0)], colour.stroke_width(1))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
