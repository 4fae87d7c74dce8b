//! Dense → PHM compression (Van Loan–Pitsianis): turn the linear layers of a dense model's
//! state dict into PHM layers, or (no arguments) run the demo on the digits data.
//!
//! ```text
//! cargo run --release --example compress -- IN.safetensors OUT.safetensors --n 4 [--layers 0,2] [--force]
//! cargo run --release --example compress -- --help
//! cargo run --release --example compress          # the demo (about 20 s)
//! ```
//!
//! IN is a state dict as PyTorch writes it (`safetensors.torch.save_file(model.state_dict(),
//! path)`): 2-D `<name>.weight` `(out, in)` tensors and `<name>.bias`. Every layer with a bias
//! (or named in `--layers`) whose sizes `n` divides becomes a PHM layer (`<name>.rules`,
//! `<name>.blocks`, `<name>.bias`, the names `PhmLinear` uses); other tensors are copied
//! unchanged, in their dtype. A 2-D weight without a bias may be an embedding table and is
//! kept unless named. OUT is a safetensors state dict that loads into a phm-nn model with PHM
//! layers at those names; an existing OUT is replaced only with `--force`. Errors are printed
//! as messages (exit status 1); a bad command line prints the usage (exit status 2).

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use phm_nn::compress::{compress_file, from_dense, LayerReport};
use phm_nn::data::{digits, Dataset, SplitFractions};
use phm_nn::nn::PhmLinear;
use phm_nn::prelude::*;
use phm_nn::train::{evaluate, fit_epoch, FitConfig};

mod cli;
use cli::{Command, USAGE};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match cli::parse(&args) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            Ok(())
        }
        Ok(Command::Demo) => demo(),
        Ok(Command::Compress {
            input,
            output,
            n,
            layers,
            force,
        }) => compress_file(&input, &output, n, layers.as_ref(), force).map(|reports| {
            print_reports(&reports);
            println!("wrote {output}");
        }),
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        // The message (Display), not the Debug form of the error.
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// One line per layer: sizes, parameters, weight error, or why it was kept dense.
fn print_reports(reports: &[LayerReport]) {
    println!(
        "{:<12} {:>10} {:>12} {:>10} {:>14}",
        "layer", "out×in", "dense params", "PHM params", "weight error"
    );
    for r in reports {
        let shape = format!("{}×{}", r.shape.0, r.shape.1);
        match (r.phm_parameters, r.relative_error, &r.kept) {
            (Some(p), Some(e), _) => println!(
                "{:<12} {shape:>10} {:>12} {p:>10} {e:>14.4e}",
                r.name, r.dense_parameters
            ),
            (_, _, kept) => println!(
                "{:<12} {shape:>10} {:>12} {:>10} {:>14}   kept dense: {}",
                r.name,
                r.dense_parameters,
                "-",
                "-",
                kept.as_deref().unwrap_or("")
            ),
        }
    }
}

const HIDDEN: usize = 128;
const EPOCHS: usize = 30;
const FINE_TUNE: usize = 3;

/// `64 → 128 → 128 → 10` with ReLU; hidden layers dense, or PHM of dimension `n`.
fn mlp(n: Option<usize>, rng: &mut StdRng) -> Result<Sequential<f32>> {
    let hidden = |d, k, rng: &mut StdRng| -> Result<Box<dyn Module<f32>>> {
        Ok(match n {
            None => Box::new(LinearConfig::new(d, k).init(rng)?),
            Some(n) => Box::new(PhmLinearConfig::new(d, k, n).init(rng)?),
        })
    };
    let mut model = Sequential::new();
    model.push_boxed(hidden(64, HIDDEN, rng)?);
    model.push(Relu::new());
    model.push_boxed(hidden(HIDDEN, HIDDEN, rng)?);
    model.push(Relu::new());
    model.push(LinearConfig::new(HIDDEN, 10).init(rng)?);
    Ok(model)
}

/// Trains `model` for `epochs` with Adam; returns the seconds taken.
fn train(
    model: &mut Sequential<f32>,
    data: &Dataset<f32>,
    epochs: usize,
    lr: f64,
    rng: &mut StdRng,
    bar: &ProgressBar,
) -> Result<f64> {
    let mut opt = Adam::new(AdamConfig {
        lr,
        ..AdamConfig::default()
    })?;
    let config = FitConfig {
        batch_size: 32,
        max_grad_norm: Some(5.0),
    };
    let start = Instant::now();
    for _ in 0..epochs {
        fit_epoch(model, &mut opt, None, data, &config, rng)?;
        bar.inc(1);
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The dense model with its hidden layers replaced by their best PHM approximations.
fn compressed(dense: &Sequential<f32>, n: usize) -> Result<(Sequential<f32>, f64)> {
    let mut model = dense.clone();
    let mut worst: f64 = 0.0;
    for i in [0, 2] {
        let layer = dense
            .get::<Linear<f32>>(i)
            .expect("hidden layers are dense");
        let (phm, err) = from_dense(layer, n)?;
        worst = worst.max(err);
        let mut layers: Vec<Box<dyn Module<f32>>> = model.layers().to_vec();
        layers[i] = Box::new(phm);
        model = Sequential::from(layers);
    }
    Ok((model, worst))
}

fn demo() -> Result<()> {
    let data = digits::bundled::<f32>()?;
    let mut rng = StdRng::seed_from_u64(7);
    let split = data.stratified_split(SplitFractions::new(0.7, 0.15, 0.15)?, &mut rng)?;
    let total = (EPOCHS + 3 * (FINE_TUNE + EPOCHS)) as u64;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} epochs {elapsed}")
            .expect("a valid template"),
    );
    let acc = |m: &Sequential<f32>| -> Result<f64> {
        Ok(100.0 * evaluate(m, &split.test, 256)?.accuracy)
    };

    let mut dense = mlp(None, &mut rng)?;
    train(&mut dense, &split.train, EPOCHS, 3e-3, &mut rng, &bar)?;
    let dense_params = dense.num_parameters();
    let mut rows = vec![format!(
        "| dense (trained {EPOCHS} epochs) | {dense_params} | 100 % | – | {:.2} % | – | – |",
        acc(&dense)?
    )];
    for n in [2, 4, 8] {
        let (mut model, err) = compressed(&dense, n)?;
        let right_after = acc(&model)?;
        train(&mut model, &split.train, FINE_TUNE, 1e-3, &mut rng, &bar)?;
        let tuned = acc(&model)?;
        let mut scratch = mlp(Some(n), &mut rng)?;
        train(&mut scratch, &split.train, EPOCHS, 3e-3, &mut rng, &bar)?;
        let params = model.num_parameters();
        assert_eq!(params, scratch.num_parameters());
        rows.push(format!(
            "| PHM n = {n} | {params} | {:.0} % | {err:.3} | {right_after:.2} % | {tuned:.2} % | {:.2} % |",
            100.0 * params as f64 / dense_params as f64,
            acc(&scratch)?
        ));
        let first = model.get::<PhmLinear<f32>>(0).expect("compressed layer");
        assert_eq!(first.shape().n(), n);
    }
    bar.finish_and_clear();
    println!("Digits MLP 64 → {HIDDEN} → {HIDDEN} → 10: the hidden layers compressed to PHM (output layer dense)\n");
    println!("| model | params | vs dense | weight error (worst layer) | test acc. right after | after {FINE_TUNE} fine-tune epochs | PHM trained from scratch ({EPOCHS} epochs) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
