//! Convolution bench: PHM convolutions (PHC) against a dense convolution of the same shape,
//! side by side in one process; prints a Markdown table of medians and ratios.
//!
//! Run: `cargo run --release --example bench_conv` (`-- --quick` for a smaller case).
//!
//! The case is a 3×3 convolution, 64 → 64 channels, padding 1, on 32×32 images, batch 32, f32
//! (`-- --quick`: 16×16 images, batch 8). Contenders are interleaved sample by sample, so the
//! noise of a shared machine hits them alike; each figure is the median of the samples.
//! "forward" is `infer` (no saved state); "training step" is `zero_grad`, `forward`, `backward`
//! and a change of every parameter (as an optimizer step makes, so no cached kernel is reused).
//! GFLOP/s count `2·B·H_out·W_out·C_out·C_in·kh·kw` per forward (dense-equivalent) and three
//! times that per training step.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayD, Ix4, IxDyn};
use phm_nn::kernels::im2col::{im2col, ConvGeometry};
use phm_nn::prelude::*;
use rand::RngExt;

/// Minimum time of one sample.
const SAMPLE: Duration = Duration::from_millis(40);
/// Samples per contender.
const SAMPLES: usize = 7;

/// Median seconds per call of each contender, sampled round-robin.
fn interleaved(contenders: &mut [Box<dyn FnMut() + '_>]) -> Vec<f64> {
    let reps: Vec<usize> = contenders
        .iter_mut()
        .map(|f| {
            let start = Instant::now();
            f();
            let once = start.elapsed().as_secs_f64().max(1e-7);
            ((SAMPLE.as_secs_f64() / once).ceil() as usize).clamp(1, 100_000)
        })
        .collect();
    let mut samples = vec![Vec::new(); contenders.len()];
    for _ in 0..SAMPLES {
        for (i, f) in contenders.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..reps[i] {
                f();
            }
            samples[i].push(start.elapsed().as_secs_f64() / reps[i] as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect()
}

/// The CPU model from `/proc/cpuinfo` (Linux), or "unknown".
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn touch(m: &mut dyn Module<f32>) {
    m.visit_params(&mut |_, p| {
        p.write().value_mut();
    });
}

fn main() -> phm_nn::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (batch, size) = if quick { (8, 16) } else { (32, 32) };
    let (c_in, c_out, k) = (64, 64, 3);
    // The count the crate's GEMM runs on (PHM_NN_NUM_THREADS, or set_num_threads).
    let threads = phm_nn::kernels::num_threads();
    println!("CPU: {}", cpu_model());
    println!(
        "GEMM SIMD: {}; GEMM threads: {threads}",
        phm_nn::kernels::simd_level()
    );
    println!(
        "case: conv {k}×{k}, {c_in} → {c_out} channels, padding 1, {size}×{size} images, batch {batch}, f32"
    );

    let mut rng = StdRng::seed_from_u64(0);
    let x = ArrayD::from_shape_simple_fn(IxDyn(&[batch, c_in, size, size]), || {
        rng.random_range(-1.0f32..1.0)
    });
    let g = ArrayD::from_shape_simple_fn(IxDyn(&[batch, c_out, size, size]), || {
        rng.random_range(-1.0f32..1.0)
    });
    let flops = 2.0 * (batch * size * size * c_out * c_in * k * k) as f64;

    let mut names = vec!["dense Conv2d".to_string()];
    let mut layers: Vec<Box<dyn Module<f32>>> = vec![Box::new(
        Conv2dConfig::new(c_in, c_out, k)
            .with_padding(1)
            .init::<f32, _>(&mut rng)?,
    )];
    let mut params = vec![layers[0].num_parameters()];
    // The same PHC layers with the built kernel cached (`cache_weight`), as for inference
    // after training: Auto may then use one plain GEMM.
    let mut cached: Vec<Option<Box<dyn Module<f32>>>> = vec![None];
    for n in [2, 4, 8] {
        let layer = PhmConv2dConfig::new(c_in, c_out, k, n)
            .with_padding(1)
            .init::<f32, _>(&mut rng)?;
        let rows = batch * size * size;
        let kernel = match layer.linear().kernel_for(rows, Mode::Training) {
            Kernel::Materialized => "materialized",
            Kernel::Factored => "factored",
        };
        names.push(format!("PhmConv2d n = {n} (train: {kernel})"));
        params.push(layer.num_parameters());
        let mut with_k = layer.clone();
        with_k.linear_mut().cache_weight();
        cached.push(Some(Box::new(with_k)));
        layers.push(Box::new(layer));
    }

    // Forward: every layer as after a training step (no cached K), then the PHC layers with
    // K cached, all interleaved.
    let forward = {
        let all = layers
            .iter()
            .map(|l| &**l)
            .chain(cached.iter().flatten().map(|l| &**l));
        let mut contenders: Vec<Box<dyn FnMut() + '_>> = all
            .map(|l| {
                let x = &x;
                Box::new(move || {
                    black_box(l.infer(x.view()));
                }) as Box<dyn FnMut()>
            })
            .collect();
        interleaved(&mut contenders)
    };
    // The GEMM alone, on a precomputed im2col matrix: what the lowering costs on top.
    let gemm_only = {
        let geometry = ConvGeometry::new(c_in, (k, k), (1, 1), (1, 1), (1, 1))?;
        let x4 = x.view().into_dimensionality::<Ix4>().expect("4-D");
        let mut cols = Array2::<f32>::zeros((batch * size * size, geometry.cols()));
        im2col(x4, &geometry, (size, size), cols.view_mut());
        let kernel = Array2::<f32>::ones((c_out, geometry.cols()));
        let mut y = Array2::<f32>::zeros((batch * size * size, c_out));
        let mut im2col_only = {
            let mut buffer = Array2::<f32>::zeros(cols.dim());
            move || {
                im2col(x4, &geometry, (size, size), buffer.view_mut());
                black_box(&buffer);
            }
        };
        let mut contenders: Vec<Box<dyn FnMut() + '_>> = vec![
            Box::new(|| {
                general_mat_mul(1.0, &cols, &kernel.t(), 0.0, &mut y);
                black_box(&y);
            }),
            Box::new(&mut im2col_only),
        ];
        interleaved(&mut contenders)
    };
    let count = layers.len();
    let with_cached = |i: usize| (i > 0).then(|| forward[count + i - 1]);
    let step = {
        let mut contenders: Vec<Box<dyn FnMut() + '_>> = layers
            .iter_mut()
            .map(|l| {
                let (x, g) = (&x, &g);
                Box::new(move || {
                    l.zero_grad();
                    l.forward(x.view());
                    black_box(l.backward(g.view()));
                    touch(&mut **l);
                }) as Box<dyn FnMut()>
            })
            .collect();
        interleaved(&mut contenders)
    };

    println!();
    println!(
        "| layer | parameters | forward (ms) | vs dense | GFLOP/s | forward, K cached (ms) | vs dense | training step (ms) | vs dense | GFLOP/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for i in 0..names.len() {
        let cached = with_cached(i).map_or("— | —".to_string(), |t| {
            format!("{:.2} | {:.2}×", t * 1e3, t / forward[0])
        });
        println!(
            "| {} | {} | {:.2} | {:.2}× | {:.1} | {cached} | {:.2} | {:.2}× | {:.1} |",
            names[i],
            params[i],
            forward[i] * 1e3,
            forward[i] / forward[0],
            flops / forward[i] / 1e9,
            step[i] * 1e3,
            step[i] / step[0],
            3.0 * flops / step[i] / 1e9
        );
    }
    println!(
        "| (plain GEMM cols·K̂ᵀ, no im2col) | | {:.2} | {:.2}× | {:.1} | | | | | |",
        gemm_only[0] * 1e3,
        gemm_only[0] / forward[0],
        flops / gemm_only[0] / 1e9
    );
    println!(
        "| (im2col alone) | | {:.2} | {:.2}× | | | | | | |",
        gemm_only[1] * 1e3,
        gemm_only[1] / forward[0]
    );
    println!();
    println!("(\"vs dense\": time relative to the dense convolution; below 1 is faster.)");
    Ok(())
}
