//! Learn rules: PHM layers recover the complex, quaternion, octonion and a random n = 3 rule from
//! artificial data (the paper's experiment); prints a table and draws SVG pictures.
//!
//! Run: `cargo run --release --example learn_rules` (optionally `-- --noise 0.05`; default
//! 0.01). Pictures land in `out/learn_rules/`.
//!
//! For each `n`, data `y = W* x + ε` come from `W* = Σ A*_i ⊗ S*_i` (see `phm_nn::research::synthetic`)
//! and one PHM layer without bias is trained on them with Adam, in two settings:
//! (a) blocks fixed to the true `S*`, only the rules `A` learned — compared entry by entry;
//! (b) rules and blocks both learned from a random init — compared up to the mixing symmetry
//! `Σ A_i ⊗ S_i = Σ (A M)_i ⊗ (M⁻¹ S)_i` (subspace distance, aligned residual) and by `W`.

use std::error::Error;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array3, Axis, Ix3};
use phm_nn::algebra::Algebra;
use phm_nn::init::{Fans, Init};
use phm_nn::loss::mse;
use phm_nn::optim::{Adam, AdamConfig, Optimizer};
use phm_nn::research::synthetic::{self, Dataset, RuleTask, TrueRule};
use phm_nn::{Module, PhmLinear, PhmLinearConfig};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Each block `S_i` is `BLOCK × BLOCK`, so the layer is `(BLOCK·n) → (BLOCK·n)`.
const BLOCK: usize = 8;
const SAMPLES: usize = 2048;
const BATCH: usize = 64;
const EPOCHS: usize = 150;
/// Adam's learning rate decays exponentially from the first value to the second.
const LR: (f64, f64) = (1e-2, 1e-4);
const DEFAULT_NOISE: f64 = 0.01;
/// A run counts as a recovery when its rule error (a) or subspace distance and W error (b)
/// are below this.
const RECOVERED: f64 = 1e-2;

/// The rules to recover: three algebras and one `n` where no algebra exists.
const CASES: [(usize, TrueRule); 4] = [
    (2, TrueRule::Algebra(Algebra::Complex)),
    (3, TrueRule::Random),
    (4, TrueRule::Algebra(Algebra::Quaternion)),
    (8, TrueRule::Algebra(Algebra::Octonion)),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setting {
    /// (a): blocks fixed to `S*`, rules learned.
    BlocksKnown,
    /// (b): rules and blocks learned.
    BothLearned,
}

impl Setting {
    fn label(self) -> &'static str {
        match self {
            Setting::BlocksKnown => "(a) S* fixed",
            Setting::BothLearned => "(b) A, S learned",
        }
    }
}

/// Metrics after one epoch.
#[derive(Clone, Copy)]
struct Epoch {
    loss: f64,
    /// (a): max |A − A*|; (b): subspace distance.
    rule: f64,
}

/// One trained layer and how it got there.
struct Run {
    n: usize,
    rule_name: String,
    setting: Setting,
    history: Vec<Epoch>,
    data: Dataset<f64>,
    rules: Array3<f64>,
    max_entry_error: f64,
    subspace: f64,
    aligned: Option<synthetic::RuleAlignment>,
    weight_error: f64,
    seconds: f64,
}

impl Run {
    fn recovered(&self) -> bool {
        match self.setting {
            Setting::BlocksKnown => self.max_entry_error < RECOVERED,
            Setting::BothLearned => self.subspace < RECOVERED && self.weight_error < RECOVERED,
        }
    }
}

fn rule_name(rule: TrueRule) -> String {
    match rule {
        TrueRule::Algebra(a) => a.name(),
        TrueRule::Random => "random".to_string(),
    }
}

/// The metric the curves follow: entrywise in (a), up to the mixing symmetry in (b).
fn rule_metric(setting: Setting, layer: &PhmLinear<f64>, data: &Dataset<f64>) -> f64 {
    let (rules, truth) = (layer.rules(), data.true_rules.view());
    let rules = rules.view();
    match setting {
        Setting::BlocksKnown => synthetic::rule_error(rules, truth),
        Setting::BothLearned => synthetic::subspace_distance(rules, truth),
    }
    .expect("the layer's rules have the task's shape")
}

/// Trains one layer on one task with mini-batch Adam; returns the finished run.
fn train(
    n: usize,
    rule: TrueRule,
    setting: Setting,
    noise: f64,
    progress: &ProgressBar,
) -> phm_nn::Result<Run> {
    // Both settings of one n use the same seed, so they see the same data.
    let mut rng = StdRng::seed_from_u64(2021 + n as u64);
    let d = BLOCK * n;
    let data = RuleTask::new(d, d, n, rule)
        .with_samples(SAMPLES)
        .with_noise_std(noise)
        .generate::<f64, _>(&mut rng)?;
    let mut layer = match setting {
        Setting::BlocksKnown => {
            let rules = Init::UnitFibers
                .sample::<f64, _>(&[n, n, n], Fans::new(n, n), &mut rng)?
                .into_dimensionality::<Ix3>()
                .expect("a rule tensor is 3-D");
            let layer = PhmLinear::from_parts(rules, data.true_blocks.clone(), None)?;
            layer.set_blocks_trainable(false);
            layer
        }
        Setting::BothLearned => PhmLinearConfig::new(d, d, n)
            .with_bias(false)
            .init(&mut rng)?,
    };
    let mut opt = Adam::new(AdamConfig {
        lr: LR.0,
        ..AdamConfig::default()
    })?;
    let evaluate = |layer: &PhmLinear<f64>| Epoch {
        loss: mse(
            layer.infer(data.x.view().into_dyn()).view(),
            data.y.view().into_dyn(),
        )
        .value,
        rule: rule_metric(setting, layer, &data),
    };
    let mut history = vec![evaluate(&layer)];
    let mut order: Vec<usize> = (0..SAMPLES).collect();
    let start = Instant::now();
    for epoch in 0..EPOCHS {
        let t = epoch as f64 / (EPOCHS - 1) as f64;
        opt.set_learning_rate(LR.0 * (LR.1 / LR.0).powf(t))?;
        order.shuffle(&mut rng);
        for batch in order.chunks(BATCH) {
            let (xb, yb) = (data.x.select(Axis(0), batch), data.y.select(Axis(0), batch));
            layer.zero_grad();
            let pred = layer.forward(xb.view().into_dyn());
            let loss = mse(pred.view(), yb.view().into_dyn());
            layer.backward(loss.grad.view().into_dyn());
            opt.step(&mut layer)?;
        }
        history.push(evaluate(&layer));
        progress.inc(1);
    }
    let seconds = start.elapsed().as_secs_f64();
    let rules = layer.rules();
    let truth = data.true_rules.view();
    Ok(Run {
        n,
        rule_name: rule_name(rule),
        setting,
        history,
        max_entry_error: synthetic::rule_error(rules.view(), truth)?,
        subspace: synthetic::subspace_distance(rules.view(), truth)?,
        // Linearly dependent learned rules have no unique alignment: shown as "-".
        aligned: synthetic::align_rules(rules.view(), truth).ok(),
        weight_error: synthetic::relative_weight_error(
            layer.weight().view(),
            data.true_weight.view(),
        )?,
        rules,
        data,
        seconds,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let noise = parse_noise()?;
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("out/learn_rules");
    std::fs::create_dir_all(&out_dir)?;

    let total = (CASES.len() * 2 * EPOCHS) as u64;
    let progress = if std::io::stderr().is_terminal() {
        ProgressBar::new(total).with_style(ProgressStyle::with_template(
            "{msg:>28} [{bar:30}] {pos}/{len} epochs, {elapsed}",
        )?)
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    let mut runs = Vec::new();
    for (n, rule) in CASES {
        for setting in [Setting::BlocksKnown, Setting::BothLearned] {
            progress.set_message(format!("n = {n} {} {}", rule_name(rule), setting.label()));
            runs.push(train(n, rule, setting, noise, &progress)?);
        }
    }
    progress.finish_and_clear();

    println!(
        "PHM layers {BLOCK}n -> {BLOCK}n (blocks {BLOCK}x{BLOCK}), {SAMPLES} samples, noise std \
         {noise}, Adam batch {BATCH}, lr {:.0e} -> {:.0e}, {EPOCHS} epochs\n",
        LR.0, LR.1
    );
    print_table(&runs);
    println!(
        "\n(a) compares the learned rules with A* entry by entry. In (b) only W is determined: \
         the learned rules are A* M for some invertible M,\nso max|A-A*| is meaningless there; \
         'subspace' is ||P_A - P_A*||_2 between the spans of the rules, 'aligned' is\n\
         ||A* - A M||/||A*|| for the least-squares M. The loss floor is noise^2 = {:.1e}.",
        noise * noise
    );
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| !r.recovered())
        .map(|r| format!("n = {} {}", r.n, r.setting.label()))
        .collect();
    if failed.is_empty() {
        println!("Every rule was recovered (errors below {RECOVERED:.0e}).");
    } else {
        println!(
            "NOT recovered (error above {RECOVERED:.0e}): {}",
            failed.join(", ")
        );
    }

    curves(
        &out_dir.join("loss_curves.svg"),
        "training loss (MSE over all samples)",
        &runs,
        |e| e.loss,
    )?;
    curves(
        &out_dir.join("rule_error_curves.svg"),
        "rule error: (a) max |A - A*|, (b) subspace distance",
        &runs,
        |e| e.rule,
    )?;
    let mut pictures = vec![
        "loss_curves.svg".to_string(),
        "rule_error_curves.svg".into(),
    ];
    for pair in runs.chunks(2) {
        let name = format!("rules_n{}_{}.svg", pair[0].n, pair[0].rule_name);
        rule_heat_maps(&out_dir.join(&name), pair)?;
        pictures.push(name);
    }
    println!(
        "\nPictures in {}: {}",
        out_dir.display(),
        pictures.join(", ")
    );
    println!("Total time {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// `--noise σ` (default 0.01).
fn parse_noise() -> Result<f64, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(DEFAULT_NOISE),
        [flag, value] if flag == "--noise" => Ok(value.parse()?),
        _ => Err(format!("usage: learn_rules [--noise STD], got {args:?}").into()),
    }
}

fn print_table(runs: &[Run]) {
    println!(
        "{:>2} {:<10} {:<17} {:>10} {:>10} {:>9} {:>9} {:>12} {:>6} {:>7} {:>9}",
        "n",
        "rule",
        "setting",
        "final loss",
        "max|A-A*|",
        "subspace",
        "aligned",
        "|W-W*|/|W*|",
        "epochs",
        "time",
        "recovered"
    );
    for r in runs {
        let aligned = r
            .aligned
            .as_ref()
            .map_or("-".to_string(), |a| format!("{:.2e}", a.residual));
        println!(
            "{:>2} {:<10} {:<17} {:>10.2e} {:>10.2e} {:>9.2e} {:>9} {:>12.2e} {:>6} {:>6.2}s {:>9}",
            r.n,
            r.rule_name,
            r.setting.label(),
            r.history.last().expect("at least the initial epoch").loss,
            r.max_entry_error,
            r.subspace,
            aligned,
            r.weight_error,
            EPOCHS,
            r.seconds,
            if r.recovered() { "yes" } else { "NO" }
        );
    }
}

/// Line colours, one per `n` (colour-blind safe).
const COLOURS: [RGBColor; 4] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
];

/// Two panels, (a) and (b), of a per-epoch metric on a log scale, one line per `n`.
fn curves(
    path: &Path,
    title: &str,
    runs: &[Run],
    metric: fn(&Epoch) -> f64,
) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let panels = root.split_evenly((1, 2));
    for (panel, setting) in panels
        .iter()
        .zip([Setting::BlocksKnown, Setting::BothLearned])
    {
        let selected: Vec<&Run> = runs.iter().filter(|r| r.setting == setting).collect();
        let values = selected
            .iter()
            .flat_map(|r| r.history.iter().map(metric))
            .filter(|v| v.is_finite() && *v > 0.0);
        let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let mut chart = ChartBuilder::on(panel)
            .caption(setting.label(), ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0..EPOCHS, (lo / 2.0..hi * 2.0).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (r, colour) in selected.iter().zip(COLOURS) {
            let points = r
                .history
                .iter()
                .enumerate()
                .map(|(epoch, e)| (epoch, metric(e).max(lo)));
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
                .label(format!("n = {} ({})", r.n, r.rule_name))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Blue for negative, white for zero, red for positive; `t` in `[-1, 1]` (clipped).
fn diverging(t: f64) -> RGBColor {
    let t = t.clamp(-1.0, 1.0);
    let (end, s) = if t >= 0.0 {
        ((178.0, 24.0, 43.0), t)
    } else {
        ((33.0, 102.0, 172.0), -t)
    };
    let mix = |e: f64| (255.0 + (e - 255.0) * s).round() as u8;
    RGBColor(mix(end.0), mix(end.1), mix(end.2))
}

/// Heat maps of `A*_i` and the rules learned in (a) and (b) of one `n` (`pair`), row by row:
/// true, (a) learned, (b) learned as it is, (b) aligned `A M`.
fn rule_heat_maps(path: &PathBuf, pair: &[Run]) -> Result<(), Box<dyn Error>> {
    let (a, b) = (&pair[0], &pair[1]);
    let n = a.n;
    let truth = &a.data.true_rules;
    let mut rows: Vec<(String, Array3<f64>)> = vec![
        ("true A*".into(), truth.clone()),
        (
            format!("(a) learned, S* fixed: max err {:.1e}", a.max_entry_error),
            a.rules.clone(),
        ),
        (
            format!("(b) learned: max err {:.2} (a mixture)", b.max_entry_error),
            b.rules.clone(),
        ),
    ];
    if let Some(al) = &b.aligned {
        rows.push((
            format!("(b) aligned A·M: residual {:.1e}", al.residual),
            al.aligned.clone(),
        ));
    }
    let vmax = truth.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let (cell, label_w, bar_w, title_h, row_h) = (96u32, 250u32, 95u32, 40u32, 124u32);
    let width = label_w + n as u32 * cell + bar_w;
    let height = title_h + rows.len() as u32 * row_h;
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "n = {n}, {} rules: A_1 … A_{n} (colour clipped at ±{vmax:.2})",
            a.rule_name
        ),
        ("sans-serif", 18),
    )?;
    let (body, bar) = root.split_horizontally(label_w + n as u32 * cell);
    let (labels, grid) = body.split_horizontally(label_w);
    let label_style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    let cells = grid.split_evenly((rows.len(), n));
    for (row, (label, _)) in labels.split_evenly((rows.len(), 1)).iter().zip(&rows) {
        let (w, h) = row.dim_in_pixel();
        row.draw_text(label, &label_style, (w as i32 - 8, h as i32 / 2))?;
    }
    for (r, (_, rules)) in rows.iter().enumerate() {
        for i in 0..n {
            let mut chart = ChartBuilder::on(&cells[r * n + i])
                .caption(format!("A_{}", i + 1), ("sans-serif", 12))
                .margin(4)
                .build_cartesian_2d(0.0..n as f64, 0.0..n as f64)?;
            let a_i = rules.index_axis(Axis(0), i);
            chart.draw_series(a_i.indexed_iter().map(|((row, col), v)| {
                let (x, y) = (col as f64, (n - 1 - row) as f64);
                Rectangle::new([(x, y), (x + 1.0, y + 1.0)], diverging(v / vmax).filled())
            }))?;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (n as f64, n as f64)],
                BLACK.stroke_width(1),
            )))?;
        }
    }
    let mut colour_bar = ChartBuilder::on(&bar)
        .margin_top(20)
        .margin_bottom(20)
        .margin_right(15)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..1.0, -vmax..vmax)?;
    colour_bar
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(5)
        .y_label_style(("sans-serif", 13))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .draw()?;
    let steps = 64;
    colour_bar.draw_series((0..steps).map(|k| {
        let lo = -vmax + 2.0 * vmax * k as f64 / steps as f64;
        let hi = lo + 2.0 * vmax / steps as f64;
        Rectangle::new(
            [(0.0, lo), (1.0, hi)],
            diverging((lo + hi) / (2.0 * vmax)).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}
