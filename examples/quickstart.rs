//! Quickstart: a PHM MLP and a dense MLP of the same widths trained on the same synthetic
//! regression task; prints a table of parameter counts and final losses.
//!
//! Run: `cargo run --release --example quickstart`

use std::time::Instant;

use phm_nn::prelude::*;
use phm_nn::rand::seq::SliceRandom;
use phm_nn::rand::RngExt;

const IN: usize = 64;
const HIDDEN: usize = 256;
const OUT: usize = 16;
const TRAIN: usize = 4096;
const TEST: usize = 1024;
const EPOCHS: usize = 40;
const BATCH: usize = 64;

/// Dense MLP `IN → HIDDEN → HIDDEN → OUT` with ReLU.
fn dense_mlp(rng: &mut StdRng) -> phm_nn::Result<Sequential<f32>> {
    Ok(Sequential::new()
        .add(LinearConfig::new(IN, HIDDEN).init(rng)?)
        .add(Relu::new())
        .add(LinearConfig::new(HIDDEN, HIDDEN).init(rng)?)
        .add(Relu::new())
        .add(LinearConfig::new(HIDDEN, OUT).init(rng)?))
}

/// The same widths with every layer a PHM layer of dimension `n`.
fn phm_mlp(n: usize, rng: &mut StdRng) -> phm_nn::Result<Sequential<f32>> {
    Ok(Sequential::new()
        .add(PhmLinearConfig::new(IN, HIDDEN, n).init(rng)?)
        .add(Relu::new())
        .add(PhmLinearConfig::new(HIDDEN, HIDDEN, n).init(rng)?)
        .add(Relu::new())
        .add(PhmLinearConfig::new(HIDDEN, OUT, n).init(rng)?))
}

/// Train and test splits.
struct Data {
    x: ArrayD<f32>,
    y: ArrayD<f32>,
    x_test: ArrayD<f32>,
    y_test: ArrayD<f32>,
}

/// Synthetic task: targets of a random two-layer tanh network, inputs uniform in [-1, 1].
fn dataset(rng: &mut StdRng) -> phm_nn::Result<Data> {
    let teacher = Sequential::new()
        .add(
            LinearConfig::new(IN, 128)
                .with_weight_init(Init::GlorotNormal { gain: 2.0 })
                .init(rng)?,
        )
        .add(Tanh::new())
        .add(
            LinearConfig::new(128, OUT)
                .with_weight_init(Init::GlorotNormal { gain: 1.0 })
                .init(rng)?,
        );
    let mut inputs =
        |rows| ArrayD::from_shape_simple_fn(IxDyn(&[rows, IN]), || rng.random_range(-1.0f32..1.0));
    let (x, x_test) = (inputs(TRAIN), inputs(TEST));
    let (y, y_test) = (
        teacher.infer(x.view().into_dyn()),
        teacher.infer(x_test.view().into_dyn()),
    );
    Ok(Data {
        x,
        y,
        x_test,
        y_test,
    })
}

struct Outcome {
    initial_test: f32,
    final_train: f32,
    final_test: f32,
    seconds: f64,
}

fn train(model: &mut Sequential<f32>, data: &Data, rng: &mut StdRng) -> phm_nn::Result<Outcome> {
    let Data {
        x,
        y,
        x_test,
        y_test,
    } = data;
    let test_loss =
        |m: &Sequential<f32>| mse(m.infer(x_test.view().into_dyn()).view(), y_test.view()).value;
    let initial_test = test_loss(model);
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.02,
        momentum: 0.9,
        ..SgdConfig::default()
    })?;
    let mut order: Vec<usize> = (0..x.len_of(Axis(0))).collect();
    let start = Instant::now();
    for epoch in 0..EPOCHS {
        if epoch == EPOCHS * 3 / 4 {
            opt.set_learning_rate(0.002)?;
        }
        order.shuffle(rng);
        for batch in order.chunks(BATCH) {
            let (xb, yb) = (x.select(Axis(0), batch), y.select(Axis(0), batch));
            model.zero_grad();
            let pred = model.forward(xb.view().into_dyn());
            let loss = mse(pred.view(), yb.view());
            model.backward(loss.grad.view().into_dyn());
            opt.step(model)?;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let final_train = mse(model.infer(x.view().into_dyn()).view(), y.view()).value;
    Ok(Outcome {
        initial_test,
        final_train,
        final_test: test_loss(model),
        seconds,
    })
}

fn main() -> phm_nn::Result<()> {
    let mut rng = StdRng::seed_from_u64(7);
    let data = dataset(&mut rng)?;
    println!(
        "Synthetic regression: {IN} inputs -> {OUT} outputs, {TRAIN} train / {TEST} test samples"
    );
    println!("MLP {IN} -> {HIDDEN} -> {HIDDEN} -> {OUT} (ReLU), SGD momentum 0.9, batch {BATCH}, {EPOCHS} epochs\n");
    println!(
        "{:<10} {:>12} {:>9} {:>13} {:>12} {:>12} {:>8}",
        "model", "parameters", "vs dense", "initial test", "final train", "final test", "time"
    );
    let mut dense_params = 0;
    let mut rows: Vec<(String, Sequential<f32>)> = vec![("dense".into(), dense_mlp(&mut rng)?)];
    for n in [2, 4, 8] {
        rows.push((format!("PHM n={n}"), phm_mlp(n, &mut rng)?));
    }
    for (name, mut model) in rows {
        let params = model.num_parameters();
        if dense_params == 0 {
            dense_params = params;
        }
        let out = train(&mut model, &data, &mut rng)?;
        println!(
            "{:<10} {:>12} {:>8.1}% {:>13.5} {:>12.5} {:>12.5} {:>7.2}s",
            name,
            params,
            100.0 * params as f64 / dense_params as f64,
            out.initial_test,
            out.final_train,
            out.final_test,
            out.seconds
        );
    }
    Ok(())
}
