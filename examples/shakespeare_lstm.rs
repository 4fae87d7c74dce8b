//! Which tragedy is this passage from? LSTM against PHM-LSTM on the bundled Shakespeare.
//!
//! ```text
//! cargo run --release --example shakespeare_lstm              # default, a few minutes on 2 cores
//! cargo run --release --example shakespeare_lstm -- --long    # 4× more training steps
//! cargo run --release --example shakespeare_lstm -- --steps 600
//! ```
//!
//! The bundled text holds seven tragedies (Hamlet, Macbeth, King Lear, Othello, Romeo and
//! Juliet, Julius Caesar, Antony and Cleopatra). A passage is 100 consecutive characters; its
//! label is the play. The last 20 % of every play is held out: the test set is 60 evenly
//! spaced passages from each play's held-out part (420 passages), the training passages are
//! drawn at random from the first 80 % (a play chosen uniformly, then a position).
//!
//! The model: character embedding (73 → 32), one LSTM layer (32 → 64), the mean of its
//! outputs over the passage, a dense head (64 → 7). Four LSTMs at the same widths, the same
//! data order and optimizer (Adam, lr 3e-3, gradient norm clipped to 1): dense (PyTorch's
//! LSTM), PHM n = 2 and n = 4 with learned rules (the PHM-LSTM), and n = 4 with the fixed
//! quaternion rules (a quaternion LSTM). Each is trained from 3 seeds.
//!
//! Prints a Markdown table (LSTM and total trainable parameters, test accuracy as mean ± standard
//! deviation over the seeds, training time per run) and the confusion matrix of the best model
//! (seed 0), and writes the test accuracy during training (mean over seeds) to
//! `docs/shakespeare_lstm_accuracy.svg`.
use std::error::Error;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use phm_nn::data::text::TextCorpus;
use phm_nn::nn::{Embedding, EmbeddingConfig, Projection};
use phm_nn::prelude::*;
use phm_nn::rand::RngExt;
use plotters::prelude::*;

const PASSAGE: usize = 100;
const EMBED: usize = 32;
const HIDDEN: usize = 64;
const BATCH: usize = 32;
const LR: f64 = 3e-3;
const CLIP: f64 = 1.0;
/// Training steps of the default run; `--long` multiplies them by `LONG_FACTOR`.
const STEPS: usize = 300;
const LONG_FACTOR: usize = 4;
/// Test-accuracy evaluations during training (after step 0, evenly spaced).
const EVALS: usize = 6;
const TEST_FRACTION: f64 = 0.2;
const TEST_PER_PLAY: usize = 60;
const SEEDS: [u64; 3] = [1, 2, 3];

/// Each play's short name and the title line that starts it, in the order of the text.
const PLAYS: [(&str, &str); 7] = [
    ("Hamlet", "HAMLET, PRINCE OF DENMARK\n"),
    ("Macbeth", "\nMACBETH\n"),
    ("Lear", "THE TRAGEDY OF KING LEAR\n"),
    ("Othello", "OTHELLO, THE MOOR OF VENICE\n"),
    ("Romeo", "ROMEO AND JULIET\n"),
    ("Caesar", "\nJULIUS CAESAR\n"),
    ("Antony", "ANTONY AND CLEOPATRA\n"),
];

fn kinds() -> [(&'static str, Projection); 4] {
    [
        ("LSTM (dense)", Projection::Dense),
        ("PHM-LSTM n = 2", Projection::phm(2)),
        ("PHM-LSTM n = 4", Projection::phm(4)),
        (
            "quaternion LSTM",
            Projection::Phm {
                n: 4,
                rule: Rule::Fixed(Algebra::Quaternion),
            },
        ),
    ]
}

/// Embedding → LSTM → mean over time → dense head; ids travel as floats (the `Module`
/// interface of [`Embedding`]).
#[derive(Clone, Debug)]
struct Classifier {
    emb: Embedding<f32>,
    lstm: Lstm<f32>,
    head: Linear<f32>,
}

impl Classifier {
    fn new(projection: Projection, vocab: usize, seed: u64) -> phm_nn::Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        Ok(Classifier {
            emb: EmbeddingConfig::new(vocab, EMBED).init(&mut rng)?,
            lstm: LstmConfig::new(EMBED, HIDDEN)
                .with_projection(projection)
                .init(None, &mut rng)?,
            head: LinearConfig::new(HIDDEN, PLAYS.len()).init(&mut rng)?,
        })
    }

    fn mean_over_time(y: &ArrayD<f32>) -> ArrayD<f32> {
        y.mean_axis(Axis(1)).expect("T > 0")
    }
}

impl Module<f32> for Classifier {
    fn forward(&mut self, ids: ArrayViewD<'_, f32>) -> ArrayD<f32> {
        let e = self.emb.forward(ids);
        let y = self.lstm.forward(e.view());
        self.head.forward(Self::mean_over_time(&y).view())
    }

    fn backward(&mut self, grad: ArrayViewD<'_, f32>) -> ArrayD<f32> {
        let d_mean = self.head.backward(grad);
        let (b, h) = (d_mean.shape()[0], d_mean.shape()[1]);
        let dy = d_mean
            .into_shape_with_order((b, 1, h))
            .expect("(B, h)")
            .broadcast((b, PASSAGE, h))
            .expect("over T")
            .mapv(|v| v / PASSAGE as f32)
            .into_dyn();
        let de = self.lstm.backward(dy.view());
        self.emb.backward(de.view())
    }

    fn infer(&self, ids: ArrayViewD<'_, f32>) -> ArrayD<f32> {
        let y = self.lstm.infer(self.emb.infer(ids).view());
        self.head.infer(Self::mean_over_time(&y).view())
    }

    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<f32>)) {
        f("emb", &self.emb);
        f("lstm", &self.lstm);
        f("head", &self.head);
    }

    fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<f32>)) {
        f("emb", &mut self.emb);
        f("lstm", &mut self.lstm);
        f("head", &mut self.head);
    }
}

/// The train and test parts of every play, as token ranges.
struct Split {
    train: Vec<std::ops::Range<usize>>,
    test: Vec<std::ops::Range<usize>>,
}

fn split(text: &str) -> std::result::Result<Split, Box<dyn Error>> {
    let mut starts = Vec::new();
    let mut from = 0;
    for (name, title) in PLAYS {
        let at = text[from..]
            .find(title)
            .ok_or_else(|| format!("title of {name} not found"))?;
        starts.push(from + at);
        from += at + title.len();
    }
    starts.push(text.len());
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for w in starts.windows(2) {
        let cut = w[0] + ((w[1] - w[0]) as f64 * (1.0 - TEST_FRACTION)) as usize;
        train.push(w[0]..cut - PASSAGE);
        test.push(cut..w[1]);
    }
    Ok(Split { train, test })
}

/// `(ids (B, PASSAGE) as floats, labels)` of passages starting at `starts` (play, offset).
fn batch(tokens: &[usize], starts: &[(usize, usize)]) -> (ArrayD<f32>, Vec<usize>) {
    let ids = ArrayD::from_shape_fn(IxDyn(&[starts.len(), PASSAGE]), |i| {
        tokens[starts[i[0]].1 + i[1]] as f32
    });
    (ids, starts.iter().map(|s| s.0).collect())
}

/// The test passages: `TEST_PER_PLAY` evenly spaced starts in each play's held-out part.
fn test_starts(split: &Split) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (play, r) in split.test.iter().enumerate() {
        let room = r.len() - PASSAGE;
        for k in 0..TEST_PER_PLAY {
            out.push((play, r.start + k * room / TEST_PER_PLAY));
        }
    }
    out
}

/// Test accuracy and confusion matrix (`[true][predicted]`).
fn evaluate_test(
    model: &Classifier,
    tokens: &[usize],
    test: &[(usize, usize)],
) -> (f64, Vec<Vec<usize>>) {
    let mut confusion = vec![vec![0; PLAYS.len()]; PLAYS.len()];
    for chunk in test.chunks(105) {
        let (ids, labels) = batch(tokens, chunk);
        let logits = model.infer(ids.view());
        for (row, &label) in logits.outer_iter().zip(&labels) {
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |m, (j, &v)| if v > m.1 { (j, v) } else { m },
                )
                .0;
            confusion[label][best] += 1;
        }
    }
    let correct: usize = (0..PLAYS.len()).map(|i| confusion[i][i]).sum();
    (correct as f64 / test.len() as f64, confusion)
}

struct Run {
    kind: usize,
    lstm_params: usize,
    params: usize,
    accuracy: f64,
    seconds: f64,
    /// `(step, test accuracy)`.
    curve: Vec<(usize, f64)>,
    confusion: Vec<Vec<usize>>,
}

fn train(
    kind: usize,
    seed: u64,
    steps: usize,
    corpus: &TextCorpus,
    split: &Split,
    test: &[(usize, usize)],
    progress: &ProgressBar,
) -> std::result::Result<Run, Box<dyn Error>> {
    let (name, projection) = kinds()[kind];
    let tokens = corpus.tokens();
    let mut model = Classifier::new(projection, corpus.vocab().len(), seed)?;
    let mut opt = Adam::new(AdamConfig {
        lr: LR,
        ..AdamConfig::default()
    })?;
    // The same data order for every model of a seed.
    let mut data_rng = StdRng::seed_from_u64(1000 + seed);
    let mut curve = vec![(0, evaluate_test(&model, tokens, test).0)];
    progress.set_message(format!("{name}, seed {seed}"));
    let start = Instant::now();
    let mut eval_time = 0.0;
    for step in 1..=steps {
        let starts: Vec<(usize, usize)> = (0..BATCH)
            .map(|_| {
                let play = data_rng.random_range(0..PLAYS.len());
                let r = &split.train[play];
                (play, data_rng.random_range(r.clone()))
            })
            .collect();
        let (ids, labels) = batch(tokens, &starts);
        model.zero_grad();
        let logits = model.forward(ids.view());
        let loss = cross_entropy(logits.view(), &labels)?;
        model.backward(loss.grad.view());
        clip_grad_norm(&model, CLIP)?;
        opt.step(&mut model)?;
        if step % (steps / EVALS).max(1) == 0 || step == steps {
            let t = Instant::now();
            curve.push((step, evaluate_test(&model, tokens, test).0));
            eval_time += t.elapsed().as_secs_f64();
        }
        progress.inc(1);
    }
    let seconds = start.elapsed().as_secs_f64() - eval_time;
    let (accuracy, confusion) = evaluate_test(&model, tokens, test);
    Ok(Run {
        kind,
        lstm_params: model.lstm.num_parameters(),
        params: model.num_parameters(),
        accuracy,
        seconds,
        curve,
        confusion,
    })
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1).max(1) as f64;
    (mean, var.sqrt())
}

fn main() -> std::result::Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mut steps = STEPS;
    if args.iter().any(|a| a == "--long") {
        steps *= LONG_FACTOR;
    }
    if let Some(i) = args.iter().position(|a| a == "--steps") {
        steps = args.get(i + 1).ok_or("--steps needs a number")?.parse()?;
    }
    let corpus = TextCorpus::shakespeare()?;
    let split = split(corpus.text())?;
    let test = test_starts(&split);
    println!(
        "{} plays, {} test passages of {PASSAGE} characters; {steps} steps of {BATCH} passages; \
         embedding {EMBED}, hidden {HIDDEN}; {} GEMM thread(s)",
        PLAYS.len(),
        test.len(),
        phm_nn::kernels::num_threads()
    );
    let progress = if std::io::stderr().is_terminal() {
        ProgressBar::new((kinds().len() * SEEDS.len() * steps) as u64).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} steps, {elapsed} (eta {eta})",
            )?,
        )
    } else {
        ProgressBar::hidden()
    };
    let mut runs = Vec::new();
    for kind in 0..kinds().len() {
        for seed in SEEDS {
            runs.push(train(kind, seed, steps, &corpus, &split, &test, &progress)?);
        }
    }
    progress.finish_and_clear();

    println!(
        "\n| model | LSTM parameters | total parameters | test accuracy (3 seeds) | per seed | training time per run |"
    );
    println!("|---|---:|---:|---:|---|---:|");
    let mut best = (0, 0.0);
    for (kind, (name, _)) in kinds().iter().enumerate() {
        let rs: Vec<&Run> = runs.iter().filter(|r| r.kind == kind).collect();
        let acc: Vec<f64> = rs.iter().map(|r| r.accuracy).collect();
        let (mean, sd) = mean_sd(&acc);
        if mean > best.1 {
            best = (kind, mean);
        }
        let secs = rs.iter().map(|r| r.seconds).sum::<f64>() / rs.len() as f64;
        let per: Vec<String> = acc.iter().map(|a| format!("{:.1}", 100.0 * a)).collect();
        println!(
            "| {name} | {} | {} | {:.1} ± {:.1} % | {} | {secs:.1} s |",
            rs[0].lstm_params,
            rs[0].params,
            100.0 * mean,
            100.0 * sd,
            per.join(", ")
        );
    }
    println!(
        "\nChance is {:.1} %. Confusion matrix of {} (seed {}), rows the true play:\n",
        100.0 / PLAYS.len() as f64,
        kinds()[best.0].0,
        SEEDS[0]
    );
    let run = runs.iter().find(|r| r.kind == best.0).expect("a run");
    let names: Vec<&str> = PLAYS.iter().map(|p| p.0).collect();
    println!("| true \\ predicted | {} |", names.join(" | "));
    println!("|---|{}", "---:|".repeat(PLAYS.len()));
    for (i, row) in run.confusion.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|c| c.to_string()).collect();
        println!("| {} | {} |", names[i], cells.join(" | "));
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/shakespeare_lstm_accuracy.svg");
    plot(&path, &runs, steps)?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// Test accuracy during training, mean over seeds, one line per model.
fn plot(path: &Path, runs: &[Run], steps: usize) -> std::result::Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    // Room above the best curve for the legend (upper left, where the curves are still low).
    let best = runs
        .iter()
        .flat_map(|r| r.curve.iter().map(|c| 100.0 * c.1))
        .fold(0.0, f64::max);
    let top = ((best + 25.0) / 10.0).ceil().min(10.0) * 10.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Which of 7 tragedies? {PASSAGE}-character passages, LSTM hidden {HIDDEN}: test accuracy"
            ),
            ("sans-serif", 19),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0..steps, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc(format!("training step (batch {BATCH})"))
        .y_desc("test accuracy, %, mean of 3 seeds")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let colours = [BLACK, BLUE, RED, GREEN];
    for (kind, ((name, _), colour)) in kinds().iter().zip(colours).enumerate() {
        let rs: Vec<&Run> = runs.iter().filter(|r| r.kind == kind).collect();
        let curve: Vec<(usize, f64)> = (0..rs[0].curve.len())
            .map(|i| {
                let m = rs.iter().map(|r| r.curve[i].1).sum::<f64>() / rs.len() as f64;
                (rs[0].curve[i].0, 100.0 * m)
            })
            .collect();
        let last = curve.last().map_or(0.0, |c| c.1);
        chart
            .draw_series(LineSeries::new(curve, colour.stroke_width(2)))?
            .label(format!(
                "{name} ({} LSTM params): {last:.1} %",
                rs[0].lstm_params
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .draw_series(LineSeries::new(
            [
                (0, 100.0 / PLAYS.len() as f64),
                (steps, 100.0 / PLAYS.len() as f64),
            ],
            BLACK.mix(0.4).stroke_width(1),
        ))?
        .label("chance (1/7)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
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
