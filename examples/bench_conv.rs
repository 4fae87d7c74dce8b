//! Convolution bench: dense and PHM convolutions at 1 and 2 threads, beside PyTorch's
//! `nn.Conv2d` on the same machine; prints a Markdown table of medians and ratios.
//!
//! Run: `cargo run --release --example bench_conv -- --torch /path/to/python` (`--quick` for
//! a smaller case; `--threads 1` or `--threads 1,2,4` for other thread counts, default `1,2`;
//! without `--torch`, phm-nn only). `--torch` runs
//! `scripts/torch_conv_bench.py` with that Python (it needs `torch`) after phm-nn's samples,
//! and the table shows both.
//!
//! The case is a 3×3 convolution, 64 → 64 channels, padding 1, on 32×32 images, batch 32, f32
//! (`--quick`: 16×16 images, batch 8), and a PHM convolution (PHC) n = 4 of the same shape.
//! Contenders are interleaved sample by sample, so the noise of a shared machine hits them
//! alike; each figure is the median of 7 samples of at least 40 ms. "forward" is `infer` (no
//! saved state); "training step" is `zero_grad`, `forward`, `backward` (input gradient
//! included) and a change of every parameter (as an optimizer step makes, so the PHC kernel
//! is rebuilt once per step). GFLOP/s count `2·B·H_out·W_out·C_out·C_in·kh·kw` per forward
//! (dense-equivalent). The CPU model, the SIMD level the GEMM dispatches to and the load
//! average are printed with the figures.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayD, Axis, Ix4, IxDyn};
use phm_nn::kernels::im2col::{im2col, ConvGeometry};
use phm_nn::kernels::matmul;
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

/// `/proc/loadavg`'s first three fields (Linux), or "unknown".
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_string())
}

/// PyTorch's figures `(threads, layer) → (forward ms, step ms)` from
/// `scripts/torch_conv_bench.py`, run with `python`.
fn torch_figures(python: &str, quick: bool, threads: &[usize]) -> Vec<(usize, String, f64, f64)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/torch_conv_bench.py");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(script).arg("--threads");
    cmd.args(threads.iter().map(ToString::to_string));
    if quick {
        cmd.arg("--quick");
    }
    println!(
        "PyTorch: {cmd:?} (run after phm-nn's samples; load {})",
        load()
    );
    let out = match cmd.output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            println!("  failed: {}", String::from_utf8_lossy(&o.stderr).trim());
            return Vec::new();
        }
        Err(e) => {
            println!("  could not run: {e}");
            return Vec::new();
        }
    };
    out.lines()
        .filter_map(|line| {
            if line.starts_with('#') {
                println!("  {}", line.trim_start_matches("# "));
            }
            let fields: Vec<&str> = line.strip_prefix("torch ")?.split(' ').collect();
            let get = |key: &str| {
                fields
                    .iter()
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
            };
            Some((
                get("threads")?.parse().ok()?,
                get("layer")?.to_string(),
                get("forward_ms")?.parse().ok()?,
                get("step_ms")?.parse().ok()?,
            ))
        })
        .collect()
}

fn main() -> phm_nn::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let python = args
        .iter()
        .position(|a| a == "--torch")
        .and_then(|i| args.get(i + 1).cloned());
    let (batch, size) = if quick { (8, 16) } else { (32, 32) };
    let (c_in, c_out, k, n) = (64, 64, 3, 4);
    let thread_counts: Vec<usize> = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .map_or(vec![1, 2], |t| {
            t.split(',')
                .map(|v| v.parse().expect("--threads takes counts like 1,2"))
                .collect()
        });
    println!("CPU: {}", cpu_model());
    println!(
        "GEMM SIMD (runtime dispatch of the gemm backend): {}; threads: {thread_counts:?} \
         (set_num_threads; available: {})",
        phm_nn::kernels::simd_level(),
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    println!(
        "case: conv {k}×{k}, {c_in} → {c_out} channels, padding 1, {size}×{size} images, batch {batch}, f32; PHC n = {n}"
    );
    println!("load average before: {}", load());

    let mut rng = StdRng::seed_from_u64(0);
    let x = ArrayD::from_shape_simple_fn(IxDyn(&[batch, c_in, size, size]), || {
        rng.random_range(-1.0f32..1.0)
    });
    let g = ArrayD::from_shape_simple_fn(IxDyn(&[batch, c_out, size, size]), || {
        rng.random_range(-1.0f32..1.0)
    });
    let flops = 2.0 * (batch * size * size * c_out * c_in * k * k) as f64;

    let mut dense: Box<dyn Module<f32>> = Box::new(
        Conv2dConfig::new(c_in, c_out, k)
            .with_padding(1)
            .init::<f32, _>(&mut rng)?,
    );
    let phc = PhmConv2dConfig::new(c_in, c_out, k, n)
        .with_padding(1)
        .init::<f32, _>(&mut rng)?;
    let mut phc_cached = phc.clone();
    phc_cached.linear_mut().cache_weight()?;
    let mut phc: Box<dyn Module<f32>> = Box::new(phc);

    // Per thread count: forward of dense, PHC (K built per call), PHC (K cached); training
    // step of dense and PHC (K built once per step: every step changes the parameters).
    let mut figures: Vec<(usize, Vec<f64>, Vec<f64>)> = Vec::new();
    for &threads in &thread_counts {
        phm_nn::kernels::set_num_threads(threads);
        let forward = {
            let layers: [&dyn Module<f32>; 3] = [&*dense, &*phc, &phc_cached];
            let mut contenders: Vec<Box<dyn FnMut() + '_>> = layers
                .into_iter()
                .map(|l| {
                    let x = &x;
                    Box::new(move || {
                        black_box(l.infer(x.view()));
                    }) as Box<dyn FnMut()>
                })
                .collect();
            interleaved(&mut contenders)
        };
        let step = {
            let mut contenders: Vec<Box<dyn FnMut() + '_>> = [&mut dense, &mut phc]
                .into_iter()
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
        println!("threads {threads}: sampled, load average {}", load());
        figures.push((threads, forward, step));
    }
    // The lowering and the product alone, one thread, over the batch (a profile of forward).
    phm_nn::kernels::set_num_threads(1);
    let parts = {
        let geometry = ConvGeometry::new(c_in, (k, k), (1, 1), (1, 1), (1, 1))?;
        let x4 = x.view().into_dimensionality::<Ix4>().expect("4-D");
        let kernel = Array2::<f32>::ones((c_out, geometry.cols()));
        let mut cols = Array2::<f32>::zeros((geometry.cols(), size * size));
        im2col(
            x4.index_axis(Axis(0), 0),
            &geometry,
            (size, size),
            cols.view_mut(),
        );
        let mut y = Array2::<f32>::zeros((c_out, size * size));
        let mut lower = {
            let mut buffer = cols.clone();
            move || {
                for image in x4.outer_iter() {
                    im2col(image, &geometry, (size, size), buffer.view_mut());
                }
                black_box(&buffer);
            }
        };
        let mut contenders: Vec<Box<dyn FnMut() + '_>> = vec![
            Box::new(|| {
                for _ in 0..batch {
                    matmul(1.0, kernel.view(), cols.view(), 0.0, y.view_mut());
                }
                black_box(&y);
            }),
            Box::new(&mut lower),
        ];
        interleaved(&mut contenders)
    };

    let torch = python
        .as_deref()
        .map(|p| torch_figures(p, quick, &thread_counts))
        .unwrap_or_default();
    let pt = |threads: usize, layer: &str| {
        torch
            .iter()
            .find(|(t, l, _, _)| *t == threads && l == layer)
            .map(|&(_, _, f, s)| (f, s))
    };
    let versus = |ours: f64, theirs: Option<f64>| {
        theirs.map_or("— | —".to_string(), |t| {
            format!("{:.2} | {:.2}×", t, ours * 1e3 / t)
        })
    };

    println!();
    println!(
        "| layer | threads | forward (ms) | PyTorch nn.Conv2d (ms) | vs PyTorch | training step (ms) | PyTorch nn.Conv2d (ms) | vs PyTorch | forward GFLOP/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let names = [
        "dense Conv2d",
        "PhmConv2d n = 4 (K built per call / per step)",
        "PhmConv2d n = 4, K cached (forward only)",
    ];
    for (i, name) in names.iter().enumerate() {
        for (threads, forward, step) in &figures {
            let (pf, ps) = pt(*threads, "conv").unzip();
            let step_cells = step.get(i).map_or("— | — | —".to_string(), |&s| {
                format!("{:.2} | {}", s * 1e3, versus(s, ps))
            });
            println!(
                "| {name} | {threads} | {:.2} | {} | {step_cells} | {:.1} |",
                forward[i] * 1e3,
                versus(forward[i], pf),
                flops / forward[i] / 1e9
            );
        }
    }
    if let Some((f, s)) = pt(1, "phc4") {
        let two = pt(2, "phc4").map_or(String::new(), |(f2, s2)| {
            format!("; 2 threads: forward {f2:.2} ms, step {s2:.2} ms")
        });
        println!(
            "\nPyTorch PHC n = 4 (einsum-built K, then F.conv2d), 1 thread: forward {f:.2} ms, step {s:.2} ms{two}"
        );
    }
    println!();
    println!("Two threads over one (time at 1 thread / time at 2 threads):");
    if let [(1, f1, s1), (2, f2, s2), ..] = figures.as_slice() {
        for (i, name) in names.iter().enumerate() {
            let step = s1.get(i).zip(s2.get(i)).map_or(String::new(), |(a, b)| {
                format!(", training step {:.2}×", a / b)
            });
            println!("- {name}: forward {:.2}×{step}", f1[i] / f2[i]);
        }
    }
    println!();
    println!(
        "Profile of the forward at 1 thread, over the batch: products K̂·cols {:.2} ms ({:.1} GFLOP/s), im2col {:.2} ms",
        parts[0] * 1e3,
        flops / parts[0] / 1e9,
        parts[1] * 1e3
    );
    println!("load average after: {}", load());
    Ok(())
}
