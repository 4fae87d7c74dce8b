//! Times phm-burn on burn's CPU backend (flex) against phm-nn's native kernels, side by side in
//! one process: `PhmLinear` 1024 → 1024, n = 4, f32, inference at batch 1, 32 and 256, and
//! one training step (forward + backward) at batch 256; and one training step (forward,
//! cross-entropy, backward; no optimizer update) of the tiny LM of the root crate's
//! `examples/tiny_lm` (vocabulary 73, d = 128, 4 heads, 2 blocks, FFN 512, context 64, batch
//! 16), dense and PHM n = 4.
//!
//! ```text
//!     cargo run --release -p phm-burn --example bench_burn -- --threads 1
//!     /work/torchenv/bin/python scripts/torch_bench.py --threads 1   # PyTorch, same cases
//! ```
//!
//! Method (as the root crate's `bench_report` and `scripts/torch_bench.py`): each contender is
//! warmed up once, its sample sized to at least 25 ms, then 7 samples are taken round-robin
//! across the contenders and the median per call is reported. phm-burn's layer is timed on each
//! of its paths (`Auto`, `Materialized`: `W` built then one matmul; `Factored`: two matmuls).
//! burn's output is read back (`into_data`) so that the work is done and counted; phm-nn's
//! `infer` returns its array. A training step computes the input's and every parameter's
//! gradient (burn: `backward` of the sum of the output; phm-nn: `forward` + `backward` with an
//! all-ones output gradient).

use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor};
use phm_burn::bridge::tensor_from_array;
use phm_burn::burn;
use phm_burn::kernels::PhmPath;
use phm_burn::linear::PhmLinearConfig;
use phm_burn::Bridge;
use phm_nn::ndarray::{Array2, ArrayD, IxDyn};
use phm_nn::Module as _;

const SAMPLE: Duration = Duration::from_millis(25);
const SAMPLES: usize = 7;

/// Median seconds per call of each closure, sampled round-robin.
fn race(contenders: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let iters: Vec<usize> = contenders
        .iter_mut()
        .map(|f| {
            let start = Instant::now();
            f();
            let once = start.elapsed().max(Duration::from_nanos(50));
            (SAMPLE.as_secs_f64() / once.as_secs_f64())
                .ceil()
                .clamp(1.0, 1e6) as usize
        })
        .collect();
    let mut samples = vec![Vec::with_capacity(SAMPLES); contenders.len()];
    for _ in 0..SAMPLES {
        for (i, f) in contenders.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..iters[i] {
                f();
            }
            samples[i].push(start.elapsed().as_secs_f64() / iters[i] as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(|a, b| a.partial_cmp(b).unwrap());
            s[s.len() / 2]
        })
        .collect()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut threads = 1;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => threads = args.next().ok_or("--threads needs a value")?.parse()?,
            other => return Err(format!("unknown option {other} (--threads N)").into()),
        }
    }
    // burn's CPU backend runs on rayon's global pool; phm-nn on its own thread setting.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    phm_nn::kernels::set_num_threads(threads);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{} ({} SIMD), {threads} thread(s), load average {}",
        cpu_model(),
        phm_nn::kernels::simd_level(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("PhmLinear 1024 → 1024, n = 4, f32; medians of {SAMPLES} interleaved samples, ms per call\n");
    println!(
        "| {:<22} | {:>8} | {:>9} | {:>9} | {:>9} | {:>9} | {:>11} |",
        "case", "phm-nn", "burn Auto", "burn W", "burn fact.", "burn/nn", "path (Auto)"
    );
    println!(
        "|{:-<24}|{:->10}|{:->11}|{:->11}|{:->11}|{:->11}|{:->13}|",
        "", "", "", "", "", "", ""
    );

    let (d, k, n) = (1024, 1024, 4);
    for (batch, train) in [(1, false), (32, false), (256, false), (256, true)] {
        let device = if train {
            Device::default().autodiff()
        } else {
            Device::default()
        };
        let layer = PhmLinearConfig::new(d, k, n)
            .with_seed(1)
            .init::<f32>(&device)?;
        let mut native = layer.to_native::<f32>()?;
        let x = Array2::from_shape_fn((batch, d), |(i, j)| {
            ((i * 31 + j * 17) % 97) as f32 / 97.0 - 0.5
        })
        .into_dyn();
        let ones = ArrayD::<f32>::ones(IxDyn(&[batch, k]));
        let xt: Tensor<2> = tensor_from_array(x.view(), &device);
        let paths = [PhmPath::Auto, PhmPath::Materialized, PhmPath::Factored];
        let layers: Vec<_> = paths.iter().map(|&p| layer.clone().with_path(p)).collect();

        let mut nn = || {
            if train {
                native.zero_grad();
                let _y = native.forward(x.view());
                std::hint::black_box(native.backward(ones.view()));
            } else {
                std::hint::black_box(native.infer(x.view()));
            }
        };
        let run = |l: &phm_burn::linear::PhmLinear| {
            if train {
                let xg = xt.clone().require_grad();
                let grads = l.forward(xg.clone()).sum().backward();
                std::hint::black_box(xg.grad(&grads).map(|g| g.into_data()));
            } else {
                std::hint::black_box(l.forward(xt.clone()).into_data());
            }
        };
        let (mut b0, mut b1, mut b2) = (|| run(&layers[0]), || run(&layers[1]), || run(&layers[2]));
        let t = race(&mut [&mut nn, &mut b0, &mut b1, &mut b2]);
        let ms = |s: f64| s * 1e3;
        println!(
            "| {:<22} | {:>8.3} | {:>9.3} | {:>9.3} | {:>10.3} | {:>9.2} | {:>11} |",
            format!(
                "{} batch {batch}",
                if train { "train step" } else { "inference" }
            ),
            ms(t[0]),
            ms(t[1]),
            ms(t[2]),
            ms(t[3]),
            t[1] / t[0],
            format!("{:?}", PhmPath::Auto.resolve(batch, n, d, k))
        );
    }
    lm_steps()?;
    Ok(())
}

/// One training step of the tiny LM in phm-burn and in phm-nn, side by side.
fn lm_steps() -> Result<(), Box<dyn std::error::Error>> {
    use burn::tensor::activation::log_softmax;
    use burn::tensor::{Int, TensorData};
    use phm_burn::linear::ProjectionConfig;
    use phm_burn::transformer::TransformerLmConfig;

    let (vocab, d, heads, layers, ffn, t, batch) = (73, 128, 4, 2, 512, 64, 16);
    println!("\nTiny LM training step (vocabulary {vocab}, d = {d}, {layers} blocks, FFN {ffn}, context {t}, batch {batch}), ms per step\n");
    println!(
        "| {:<22} | {:>8} | {:>9} | {:>9} |",
        "projections", "phm-nn", "phm-burn", "burn/nn"
    );
    println!("|{:-<24}|{:->10}|{:->11}|{:->11}|", "", "", "", "");
    let ids = Array2::from_shape_fn((batch, t + 1), |(b, i)| (b * 13 + i * 7) % vocab);
    let (x, y) = (
        ids.slice(phm_nn::ndarray::s![.., ..t]).to_owned(),
        ids.slice(phm_nn::ndarray::s![.., 1..]).to_owned(),
    );
    let labels: Vec<usize> = y.iter().copied().collect();
    let device = Device::default().autodiff();
    let to_int = |a: &Array2<usize>| -> Tensor<2, Int> {
        let v: Vec<i64> = a.iter().map(|&i| i as i64).collect();
        Tensor::from_data(TensorData::new(v, [a.nrows(), a.ncols()]), &device)
    };
    let (xt, yt) = (to_int(&x), to_int(&y));
    for (name, projection) in [
        ("dense", ProjectionConfig::Dense),
        ("PHM n = 4", ProjectionConfig::phm(4)),
    ] {
        let lm = TransformerLmConfig::new(vocab, d, heads, layers, t)
            .with_ffn_width(ffn)
            .with_projection(projection)
            .with_seed(7)
            .init::<f32>(&device)?;
        let mut native = lm.to_native::<f32>()?;
        let mut nn = || {
            native.zero_grad();
            let logits = native.forward_ids(x.view(), None);
            let loss = phm_nn::loss::cross_entropy(logits.view(), &labels).expect("labels < vocab");
            native.backward_logits(loss.grad.view());
        };
        let mut burn_step = || {
            let logits = lm.forward(xt.clone(), None);
            let [b, tt, v] = logits.dims();
            let logp = log_softmax(logits.reshape([b * tt, v]), 1);
            let loss = -logp.gather(1, yt.clone().reshape([b * tt, 1])).mean();
            std::hint::black_box(loss.backward());
        };
        let ts = race(&mut [&mut nn, &mut burn_step]);
        println!(
            "| {:<22} | {:>8.2} | {:>9.2} | {:>9.2} |",
            name,
            ts[0] * 1e3,
            ts[1] * 1e3,
            ts[1] / ts[0]
        );
    }
    Ok(())
}
