//! What the phm-burn examples share: command-line options, the devices, one data-parallel
//! training step, a progress bar and the loss-curve SVG.

#![allow(dead_code)]

use std::error::Error;
use std::io::IsTerminal;
use std::path::Path;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use phm_burn::burn;
use plotters::prelude::*;

/// `--steps N`, `--devices N`, `--out FILE.svg`.
pub struct Args {
    /// Training steps.
    pub steps: usize,
    /// Devices the batch is split over.
    pub devices: usize,
    /// Where the loss curve goes.
    pub out: String,
}

impl Args {
    /// Parses `std::env::args`, with the defaults given.
    pub fn parse(steps: usize, out: &str) -> Result<Self, Box<dyn Error>> {
        let mut args = Args {
            steps,
            devices: 1,
            out: out.to_string(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--steps" => args.steps = value()?.parse()?,
                "--devices" => args.devices = value()?.parse()?,
                "--out" => args.out = value()?,
                other => {
                    return Err(
                        format!("unknown option {other} (--steps, --devices, --out)").into(),
                    )
                }
            }
        }
        if args.devices == 0 || args.steps == 0 {
            return Err("--steps and --devices must be at least 1".into());
        }
        Ok(args)
    }
}

/// `n` autodiff devices of the backend burn picks (`BURN_DEVICE` overrides: `cuda`, `flex`, …),
/// and a line saying what they are. CUDA devices are numbered `0..n`; burn's CPU backend has one
/// device (`device_count = 1`), so there the `n` shards run on forks of the same device.
pub fn devices(n: usize) -> (Vec<Device>, String) {
    let default = Device::default();
    #[cfg(feature = "cuda")]
    if std::env::var("BURN_DEVICE").map_or(true, |d| d.eq_ignore_ascii_case("cuda")) {
        let devices = (0..n).map(|i| Device::cuda(i).autodiff()).collect();
        return (devices, format!("{n} CUDA device(s)"));
    }
    let what = if n == 1 {
        format!("{default:?}")
    } else {
        format!("{default:?}, {n} shards on forks of it (one CPU device: data parallelism is exercised, not sped up)")
    };
    (vec![default.autodiff(); n], what)
}

/// One data-parallel step, as burn-train's multi-device strategy (`OptimMainDevice`) does it:
/// shard `i` runs on a fork of `model` on `devices[i]`, its gradients go to the first device
/// and are summed (burn's `GradientsAccumulator`), then one optimizer step. `shard_loss(model,
/// i, device)` must return shard `i`'s loss **summed** over its rows and divided by the whole
/// batch size, so the step equals the one-device step of the whole batch. Returns the model
/// and the batch loss.
pub fn step<M: Module>(
    model: M,
    devices: &[Device],
    optim: &mut ModuleOptimizer,
    lr: f64,
    shard_loss: impl Fn(&M, usize, &Device) -> Tensor<1>,
) -> (M, f64) {
    let main = &devices[0];
    let mut accumulator = GradientsAccumulator::<M>::new();
    let mut loss = 0.0;
    for (i, device) in devices.iter().enumerate() {
        let fork = if i == 0 {
            model.clone()
        } else {
            model.clone().fork(device)
        };
        let l = shard_loss(&fork, i, device);
        loss += l.clone().into_scalar::<f64>();
        let grads = GradientsParams::from_grads(l.backward(), &fork);
        accumulator.accumulate(&model, grads.to_device(main, &fork));
    }
    (optim.step(lr, model, accumulator.grads()), loss)
}

/// Rows `i·b/n .. (i+1)·b/n` of a batch of `b` rows split in `n` shards.
pub fn shard(i: usize, n: usize, b: usize) -> std::ops::Range<usize> {
    i * b / n..(i + 1) * b / n
}

/// A progress bar over `total` steps (hidden when stderr is not a terminal).
pub fn progress(total: u64) -> Result<ProgressBar, Box<dyn Error>> {
    Ok(if std::io::stderr().is_terminal() {
        ProgressBar::new(total).with_style(ProgressStyle::with_template(
            "{msg:>24} [{bar:30}] {pos}/{len} steps, {elapsed}",
        )?)
    } else {
        ProgressBar::hidden()
    })
}

/// One curve of the plot: a label and `(step, value)` points.
pub struct Curve {
    /// Legend text.
    pub label: String,
    /// `(step, value)`.
    pub points: Vec<(usize, f64)>,
}

/// Draws `curves` against the training step to an SVG at `path`.
pub fn plot(
    path: &Path,
    title: &str,
    y_desc: &str,
    steps: usize,
    curves: &[Curve],
) -> Result<(), Box<dyn Error>> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let values = || curves.iter().flat_map(|c| c.points.iter().map(|p| p.1));
    let lo = values().fold(f64::INFINITY, f64::min).min(0.0);
    let hi = values().fold(0.0, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0..steps, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("training step")
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{v:.1}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (curve, colour) in curves.iter().zip([BLACK, BLUE, RED, GREEN]) {
        chart
            .draw_series(LineSeries::new(
                curve.points.iter().copied(),
                colour.stroke_width(2),
            ))?
            .label(curve.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

/// The smoothed curve: the mean of each window of `w` consecutive steps, at its last step.
pub fn smooth(losses: &[f64], w: usize) -> Vec<(usize, f64)> {
    losses
        .chunks(w)
        .enumerate()
        .map(|(i, c)| (i * w + c.len(), c.iter().sum::<f64>() / c.len() as f64))
        .collect()
}

/// The 1-minute load average, for the figures printed next to it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
