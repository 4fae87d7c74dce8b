//! Bench report: PHM layers against dense layers of the same shape, side by side in one
//! process; prints a Markdown table (time ratios, parameter ratios, GFLOP/s).
//!
//! Run: `cargo run --release --example bench_report` (add `-- --quick` for a smaller grid,
//! `-- --key` for the key cases only (the ones `scripts/torch_bench.py` times in PyTorch),
//! `-- --f64` for the f64 case, `-- --threads-sweep` for where threads start to pay,
//! `-- --layouts` for the products with a weight in every layout, rows 1 … 1024, and dense
//! `Linear` at the cases `scripts/torch_bench.py --linear` times,
//! `-- --transformer` for one Transformer block only, dense against PHM n = 2, 4, 8; the full
//! report ends with that table; `-- --models [--threads 1|2]` for whole models, see
//! [`models_report`]). Threads: `PHM_NN_NUM_THREADS=1` for one. Every figure is the
//! median of interleaved samples, and GFLOP/s count `2·B·k·d` per forward (dense-equivalent),
//! `6·B·k·d` per training step. The report starts with the CPU model, the SIMD level the GEMM
//! dispatched to and the thread count, and ends with the peak memory of one training step
//! (a counting global allocator).
//!
//! Calibrating `Strategy::Auto` for a machine: run the full grid; where the `Auto/best`
//! column is above 1, Auto picked the slower kernel (`mat/fact` says which was faster). Adjust
//! the fields of `phm_nn::kernels::strategy::CostModel` (e.g. `build` up when materialized
//! wins too often in training, `call`/`mix` up when factored does), install it with
//! `set_cost_model`, and rerun until `Auto/best` stays near 1.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ndarray::Array2;
use phm_nn::{Float, Kernel, LinearConfig, Mode, Module, PhmLinear, PhmLinearConfig, Strategy};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Counts live bytes and their peak, to measure the memory of one training step.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: same layout, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak bytes allocated above the level at the start while `f` runs.
fn peak_bytes(f: impl FnOnce()) -> usize {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed).saturating_sub(start)
}

/// The CPU model from /proc/cpuinfo (Linux), or "unknown".
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Minimum time of one sample.
const SAMPLE: Duration = Duration::from_millis(25);
/// Samples per contender; contenders are interleaved sample by sample.
const SAMPLES: usize = 7;

/// Median seconds per call of each closure, sampled round-robin so that noise hits all alike.
fn race(contenders: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    // Warm up and size each contender's sample.
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

fn random<F: Float>(rng: &mut StdRng, rows: usize, cols: usize) -> Array2<F> {
    Array2::from_shape_simple_fn((rows, cols), || F::of(rng.random_range(-1.0..1.0)))
}

/// Marks every parameter as changed, as an optimizer step does (so a cached `W` is stale).
fn touch<F: Float>(m: &mut dyn Module<F>) {
    m.visit_params(&mut |_, p| {
        p.write().value_mut();
    });
}

fn kernel_name(k: Kernel) -> &'static str {
    match k {
        Kernel::Materialized => "mat",
        Kernel::Factored => "fact",
    }
}

struct Case {
    d: usize,
    k: usize,
    batch: usize,
    n: usize,
    train: bool,
}

fn run_case<F: Float>(case: &Case, rng: &mut StdRng) -> String {
    let Case {
        d,
        k,
        batch,
        n,
        train,
    } = *case;
    let x: Array2<F> = random(rng, batch, d);
    let g: Array2<F> = random(rng, batch, k);
    let mut dense = LinearConfig::new(d, k).init::<F, _>(rng).unwrap();
    let base: PhmLinear<F> = PhmLinearConfig::new(d, k, n).init(rng).unwrap();
    let mut layers: Vec<PhmLinear<F>> =
        [Strategy::Auto, Strategy::Materialized, Strategy::Factored]
            .iter()
            .map(|s| base.clone().with_strategy(*s))
            .collect();
    let flops = if train { 6.0 } else { 2.0 } * (batch * k * d) as f64;
    let mode = if train {
        Mode::Training
    } else {
        Mode::Inference
    };
    let w = dense.weight().to_owned();
    let mut y_gemm = Array2::<F>::zeros((batch, k));

    let times = if train {
        let [auto, mat, fact] = &mut layers[..] else {
            unreachable!()
        };
        let step = |m: &mut dyn Module<F>| {
            touch(m);
            black_box(m.forward(x.view().into_dyn()));
            black_box(m.backward(g.view().into_dyn()));
        };
        race(&mut [
            &mut || step(&mut dense),
            &mut || step(auto),
            &mut || step(mat),
            &mut || step(fact),
            &mut || {
                phm_nn::kernels::matmul(F::one(), x.view(), w.t(), F::zero(), y_gemm.view_mut())
            },
        ])
    } else {
        for l in layers.iter_mut() {
            // Inference after training, as the README recommends: W cached for whoever wants it.
            if l.strategy() != Strategy::Factored {
                l.cache_weight().unwrap();
            }
        }
        let [auto, mat, fact] = &layers[..] else {
            unreachable!()
        };
        race(&mut [
            &mut || {
                black_box(dense.infer(x.view().into_dyn()));
            },
            &mut || {
                black_box(auto.infer(x.view().into_dyn()));
            },
            &mut || {
                black_box(mat.infer(x.view().into_dyn()));
            },
            &mut || {
                black_box(fact.infer(x.view().into_dyn()));
            },
            &mut || {
                phm_nn::kernels::matmul(F::one(), x.view(), w.t(), F::zero(), y_gemm.view_mut())
            },
        ])
    };
    let [t_dense, t_auto, t_mat, t_fact, t_gemm] = times[..] else {
        unreachable!()
    };
    let chosen = layers[0].kernel_for(batch, mode);
    let params = base.num_parameters() as f64 / dense.num_parameters() as f64;
    let best = t_mat.min(t_fact);
    format!(
        "| {d}×{k} | {batch} | {n} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} |",
        if train { "train" } else { "infer" },
        t_dense * 1e3,
        t_auto * 1e3,
        t_auto / t_dense,
        t_auto / best,
        kernel_name(chosen),
        params,
        flops / t_dense / 1e9,
        flops / t_auto / 1e9,
        if train { f64::NAN } else { flops / t_gemm / 1e9 },
        t_mat / t_fact,
    )
}

/// Peak bytes of one training step (forward + backward) of a fresh layer, for dense and
/// each PHM kernel, with the parameter bytes for scale.
fn memory_table(shapes: &[(usize, usize, usize, usize)]) {
    println!("\nPeak bytes allocated by one training step (fresh layer: includes the buffers it keeps; counting allocator), f32\n");
    println!("| in×out | batch | n | dense params | dense step | PHM params | PHM mat step | PHM fact step | fact/dense |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rng = StdRng::seed_from_u64(3);
    let mib = |b: usize| format!("{:.2} MiB", b as f64 / (1 << 20) as f64);
    for &(d, k, n, batch) in shapes {
        let x: Array2<f32> = random(&mut rng, batch, d);
        let g: Array2<f32> = random(&mut rng, batch, k);
        let mut dense = LinearConfig::new(d, k).init::<f32, _>(&mut rng).unwrap();
        let base: PhmLinear<f32> = PhmLinearConfig::new(d, k, n).init(&mut rng).unwrap();
        let step = |m: &mut dyn Module<f32>| {
            peak_bytes(|| {
                black_box(m.forward(x.view().into_dyn()));
                black_box(m.backward(g.view().into_dyn()));
            })
        };
        let dense_step = step(&mut dense);
        let mat_step = step(&mut base.clone().with_strategy(Strategy::Materialized));
        let fact_step = step(&mut base.clone().with_strategy(Strategy::Factored));
        println!(
            "| {d}×{k} | {batch} | {n} | {} | {} | {} | {} | {} | {:.2} |",
            mib(dense.num_parameters() * 4),
            mib(dense_step),
            mib(base.num_parameters() * 4),
            mib(mat_step),
            mib(fact_step),
            fact_step as f64 / dense_step as f64,
        );
    }
}

/// 1 thread against `num_threads()` threads on products of growing size, every product
/// threaded (threshold 0): where the ratio crosses 1 is where threads start to pay.
fn threads_sweep() {
    let threads = phm_nn::kernels::num_threads();
    println!("GEMM f32, 1 thread vs {threads} threads (every product threaded for this sweep)\n");
    println!("| m×k×n | multiply-adds | 1 thread µs | {threads} threads µs | speed-up |");
    println!("|---|---:|---:|---:|---:|");
    let mut rng = StdRng::seed_from_u64(2);
    for (m, k, n) in [
        (1, 256, 256),
        (8, 256, 256),
        (32, 256, 256),
        (64, 256, 256),
        (1, 1024, 1024),
        (4, 1024, 1024),
        (128, 128, 128),
        (128, 128, 256),
        (256, 128, 128),
        (32, 512, 512),
        (512, 128, 128),
        (1024, 128, 128),
        (1024, 128, 512),
        (1024, 512, 128),
        (4096, 576, 64),
        (128, 256, 256),
        (16, 1024, 1024),
        (256, 256, 256),
        (32, 1024, 1024),
        (256, 512, 512),
        (256, 1024, 1024),
    ] {
        let a: Array2<f32> = random(&mut rng, m, k);
        let w: Array2<f32> = random(&mut rng, n, k);
        let mut c = Array2::<f32>::zeros((m, n));
        phm_nn::kernels::set_parallel_min_work(0);
        let mut time_with = |t: usize| {
            phm_nn::kernels::set_num_threads(t);
            race(&mut [&mut || phm_nn::kernels::matmul(1.0, a.view(), w.t(), 0.0, c.view_mut())])[0]
        };
        let one = time_with(1);
        let many = time_with(threads);
        println!(
            "| {m}×{k}×{n} | {} | {:.1} | {:.1} | {:.2} |",
            m * k * n,
            one * 1e6,
            many * 1e6,
            one / many
        );
    }
    phm_nn::kernels::set_num_threads(threads);
    phm_nn::kernels::set_parallel_min_work(phm_nn::kernels::PARALLEL_MIN_WORK);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--threads-sweep") {
        threads_sweep();
        return;
    }
    if args.iter().any(|a| a == "--models") {
        models_report(&model_threads(&args));
        return;
    }
    if args.iter().any(|a| a == "--layouts") {
        layouts_sweep();
        return;
    }
    if args.iter().any(|a| a == "--transformer") {
        print_machine();
        transformer_table();
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let key = args.iter().any(|a| a == "--key");
    let f64_case = args.iter().any(|a| a == "--f64");
    let mut rng = StdRng::seed_from_u64(1);
    print_machine();
    let sizes: &[(usize, usize)] = if quick {
        &[(256, 256), (1024, 1024)]
    } else {
        &[
            (256, 256),
            (1024, 1024),
            (4096, 1024),
            (1024, 4096),
            (4096, 4096),
        ]
    };
    let ns: &[usize] = if quick { &[4] } else { &[2, 4, 8, 16] };
    let mut cases = Vec::new();
    if key {
        // (in, out, batch, n, train): the side-by-side cases and the targets.
        for (d, k, batch, n, train) in [
            (1024, 1024, 256, 4, true),
            (1024, 1024, 256, 4, false),
            (1024, 1024, 32, 4, false),
            (1024, 1024, 32, 4, true),
            (4096, 1024, 256, 8, true),
            (1024, 1024, 1, 4, false),
            (4096, 4096, 1, 4, false),
            (256, 256, 32, 4, true),
            (256, 256, 32, 8, true),
        ] {
            cases.push(Case {
                d,
                k,
                batch,
                n,
                train,
            });
        }
    } else {
        for &(d, k) in sizes {
            for batch in [1, 32, 256] {
                for &n in ns {
                    for train in [false, true] {
                        if train && d * k > 4096 * 1024 {
                            continue; // 4096×4096: forward only
                        }
                        cases.push(Case {
                            d,
                            k,
                            batch,
                            n,
                            train,
                        });
                    }
                }
            }
        }
    }
    println!("PHM vs dense, {} (medians of {SAMPLES} interleaved samples; ratios < 1 mean PHM is faster)\n", if f64_case { "f64" } else { "f32" });
    println!("| in×out | batch | n | pass | dense ms | PHM ms | PHM/dense | Auto/best | Auto kernel | params PHM/dense | dense GFLOP/s | PHM GFLOP/s | plain GEMM GFLOP/s | mat/fact |");
    println!("|---|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|");
    for case in &cases {
        let line = if f64_case {
            run_case::<f64>(case, &mut rng)
        } else {
            run_case::<f32>(case, &mut rng)
        };
        println!("{line}");
    }
    if !f64_case {
        memory_table(&[
            (256, 256, 4, 32),
            (1024, 1024, 4, 32),
            (1024, 1024, 4, 256),
            (4096, 1024, 8, 256),
        ]);
        if !quick && !key {
            transformer_table();
        }
    }
}

/// The CPU model, the SIMD level the GEMM dispatched to and the thread count.
fn print_machine() {
    println!(
        "CPU: {} · GEMM SIMD: {} · threads: {} ({}={})\n",
        cpu_model(),
        phm_nn::kernels::simd_level(),
        phm_nn::kernels::num_threads(),
        phm_nn::kernels::NUM_THREADS_ENV,
        std::env::var(phm_nn::kernels::NUM_THREADS_ENV).unwrap_or_else(|_| "unset".into()),
    );
}

/// One pre-norm Transformer block (d = 256, 4 heads, FFN 1024, T = 128, batch 8, causal),
/// dense against PHM n = 2, 4, 8 (all six projections PHM): inference, training step
/// (forward + backward), parameters and the peak bytes of one training step.
fn transformer_table() {
    use phm_nn::nn::transformer::BlockConfig;
    use phm_nn::nn::Projection;
    let (d, heads, ffn, t, batch) = (256, 4, 1024, 128, 8);
    println!("\nOne Transformer block, d = {d}, {heads} heads, FFN {ffn}, T = {t}, batch {batch}, causal, f32 (medians of {SAMPLES} interleaved samples)\n");
    println!("| projections | params | infer ms | train step ms | infer vs dense | train vs dense | step peak memory |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut rng = StdRng::seed_from_u64(5);
    let x = ndarray::ArrayD::from_shape_simple_fn(ndarray::IxDyn(&[batch, t, d]), || {
        rng.random_range(-1.0f32..1.0)
    });
    let g = x.mapv(|v| 0.5 * v);
    let kinds = [
        Projection::Dense,
        Projection::phm(2),
        Projection::phm(4),
        Projection::phm(8),
    ];
    let mut blocks: Vec<_> = kinds
        .iter()
        .map(|&p| {
            BlockConfig::new(d, heads, ffn)
                .with_projection(p)
                .init::<f32, _>(None, 0, &mut rng)
                .unwrap()
        })
        .collect();
    let infer: Vec<f64> = {
        let mut fs: Vec<Box<dyn FnMut() + '_>> = blocks
            .iter()
            .map(|b| {
                Box::new(|| {
                    black_box(b.infer(x.view()));
                }) as Box<dyn FnMut()>
            })
            .collect();
        let mut refs: Vec<&mut dyn FnMut()> = fs
            .iter_mut()
            .map(|f| &mut **f as &mut dyn FnMut())
            .collect();
        race(&mut refs)
    };
    let train: Vec<f64> = {
        let mut fs: Vec<Box<dyn FnMut() + '_>> = blocks
            .iter_mut()
            .map(|b| {
                Box::new(|| {
                    b.zero_grad();
                    black_box(b.forward(x.view()));
                    black_box(b.backward(g.view()));
                    touch(b);
                }) as Box<dyn FnMut()>
            })
            .collect();
        let mut refs: Vec<&mut dyn FnMut()> = fs
            .iter_mut()
            .map(|f| &mut **f as &mut dyn FnMut())
            .collect();
        race(&mut refs)
    };
    for (i, (kind, block)) in kinds.iter().zip(blocks.iter_mut()).enumerate() {
        let mut fresh = block.clone();
        let peak = peak_bytes(|| {
            black_box(fresh.forward(x.view()));
            black_box(fresh.backward(g.view()));
        });
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} MiB |",
            kind.name(),
            block.num_parameters(),
            infer[i] * 1e3,
            train[i] * 1e3,
            infer[i] / infer[0],
            train[i] / train[0],
            peak as f64 / (1 << 20) as f64,
        );
    }
}

/// Warm-up calls before each timed block of the models report.
const MODEL_WARMUP: usize = 2;
/// Rounds; each round times every row at every thread count in turn.
const MODEL_ROUNDS: usize = 3;
/// Timed calls per block (each timed alone): `MODEL_ROUNDS · MODEL_REPS` per figure.
const MODEL_REPS: usize = 5;

/// The thread counts after `--threads` (`--threads 1`, `--threads 2`, `--threads 1 2`), or
/// 1 and 2.
fn model_threads(args: &[String]) -> Vec<usize> {
    let Some(at) = args.iter().position(|a| a == "--threads") else {
        return vec![1, 2];
    };
    let counts: Vec<usize> = args[at + 1..]
        .iter()
        .map_while(|a| a.parse().ok())
        .collect();
    assert!(
        !counts.is_empty() && counts.iter().all(|&t| t > 0),
        "--threads needs one or more positive thread counts, e.g. --threads 1 2"
    );
    counts
}

/// One row of the models report: a whole-model pass and what it processes.
struct ModelRow<'a> {
    model: String,
    pass: &'static str,
    batch: String,
    params: usize,
    /// Tokens or images per call, and their unit.
    items: (f64, &'static str),
    run: Box<dyn FnMut() + 'a>,
}

/// Median and minimum seconds of one call of each row at each thread count. Each round runs
/// every row at every thread count in turn (`MODEL_WARMUP` untimed calls, then `MODEL_REPS`
/// calls timed one by one), so that the load of a shared machine, drifting over the run,
/// hits every row and thread count alike. Result: `[row][thread count]`.
fn time_models(threads: &[usize], rows: &mut [ModelRow<'_>]) -> Vec<Vec<(f64, f64)>> {
    let mut samples =
        vec![vec![Vec::with_capacity(MODEL_ROUNDS * MODEL_REPS); threads.len()]; rows.len()];
    for round in 1..=MODEL_ROUNDS {
        eprintln!("models: round {round} of {MODEL_ROUNDS}");
        for (row, row_samples) in rows.iter_mut().zip(samples.iter_mut()) {
            for (&t, thread_samples) in threads.iter().zip(row_samples.iter_mut()) {
                phm_nn::kernels::set_num_threads(t);
                for _ in 0..MODEL_WARMUP {
                    (row.run)();
                }
                for _ in 0..MODEL_REPS {
                    let start = Instant::now();
                    (row.run)();
                    thread_samples.push(start.elapsed().as_secs_f64());
                }
            }
        }
    }
    samples
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|mut s| {
                    s.sort_by(f64::total_cmp);
                    (s[s.len() / 2], s[0])
                })
                .collect()
        })
        .collect()
}

/// `12.3 k tok/s`-style throughput.
fn per_second(items: f64, unit: &str, seconds: f64) -> String {
    let rate = items / seconds;
    if rate >= 1e3 {
        format!("{:.1} k {unit}/s", rate / 1e3)
    } else {
        format!("{rate:.1} {unit}/s")
    }
}

/// The load average (1, 5, 15 minutes) from /proc/loadavg, or "n/a".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

/// The `tiny_lm` Transformer (`examples/tiny_lm.rs`: vocabulary 73, d = 128, 4 heads, 2
/// pre-norm blocks, FFN 512 exact GELU, context 64, batch 16), dense or PHM n = 4 with learned
/// rules (one rule tensor per layer): training step (zero_grad, forward, cross-entropy,
/// backward, gradient clipping at 1, AdamW lr 3e-3, weight decay 0.01) and forward (`infer_ids`).
fn lm_rows(phm: Option<usize>) -> Vec<ModelRow<'static>> {
    use phm_nn::prelude::{
        clip_grad_norm, cross_entropy, AdamW, AdamWConfig, Optimizer, Projection,
        TransformerLmConfig,
    };
    let (vocab, d, heads, layers, ffn, t, batch) = (73, 128, 4, 2, 512, 64, 16);
    let mut config = TransformerLmConfig::new(vocab, d, heads, layers, t).with_ffn_width(ffn);
    let name = match phm {
        None => "tiny_lm dense".to_string(),
        Some(n) => {
            config = config
                .with_projection(Projection::phm(n))
                .with_shared_rules(false);
            format!("tiny_lm PHM n={n}")
        }
    };
    let mut model = config
        .init::<f32, _>(&mut StdRng::seed_from_u64(7))
        .unwrap();
    let params = model.num_parameters();
    // The same ids as scripts/torch_models.py: (13·b + 7·t) mod 73, targets shifted by one.
    let ids = Array2::from_shape_fn((batch, t + 1), |(b, i)| (13 * b + 7 * i) % vocab);
    let inputs = ids.slice(ndarray::s![.., ..t]).to_owned();
    let labels: Vec<usize> = ids.slice(ndarray::s![.., 1..]).iter().copied().collect();
    let frozen = model.clone();
    let mut opt = AdamW::new(AdamWConfig {
        lr: 3e-3,
        weight_decay: 0.01,
        ..AdamWConfig::default()
    })
    .unwrap();
    let forward_inputs = inputs.clone();
    let tokens = (batch * t) as f64;
    vec![
        ModelRow {
            model: name.clone(),
            pass: "train step",
            batch: format!("{batch}×{t}"),
            params,
            items: (tokens, "tok"),
            run: Box::new(move || {
                model.zero_grad();
                let logits = model.forward_ids(inputs.view(), None);
                let loss = cross_entropy(logits.view(), &labels).unwrap();
                model.backward_logits(loss.grad.view());
                clip_grad_norm(&model, 1.0).unwrap();
                opt.step(&mut model).unwrap();
            }),
        },
        ModelRow {
            model: name,
            pass: "forward",
            batch: format!("{batch}×{t}"),
            params,
            items: (tokens, "tok"),
            run: Box::new(move || {
                black_box(frozen.infer_ids(forward_inputs.view(), None));
            }),
        },
    ]
}

/// The digits CNN (`examples/digits_cnn.rs`): conv 3×3 → 16 (padding 1), ReLU, max pool 2×2,
/// conv 3×3 16 → 32 (padding 1), ReLU, global average pool, linear 32 → 10, on 8×8 images,
/// batch 32; PHC n = 4 (learned rules) replaces both convolutions and sees the image on 4
/// channels. Training step (zero_grad, forward, cross-entropy, backward, Adam lr 3e-3) and
/// forward (`infer`).
fn cnn_rows(phc: Option<usize>) -> Vec<ModelRow<'static>> {
    use phm_nn::prelude::{
        cross_entropy, Adam, AdamConfig, Conv2dConfig, GlobalAvgPool, Init, LinearConfig,
        MaxPool2d, Optimizer, PhmConv2dConfig, Relu, Rule, Sequential,
    };
    let (batch, c1, c2) = (32, 16, 32);
    let rng = &mut StdRng::seed_from_u64(1);
    let (name, channels, model) = match phc {
        None => (
            "digits CNN dense".to_string(),
            1,
            Sequential::<f32>::new()
                .add(
                    Conv2dConfig::new(1, c1, 3)
                        .with_padding(1)
                        .init(rng)
                        .unwrap(),
                )
                .add(Relu::new())
                .add(MaxPool2d::new(2, 2, 0).unwrap())
                .add(
                    Conv2dConfig::new(c1, c2, 3)
                        .with_padding(1)
                        .init(rng)
                        .unwrap(),
                ),
        ),
        Some(n) => {
            let rule = Rule::Learned(Init::UnitFibers);
            (
                format!("digits CNN PHC n={n}"),
                n,
                Sequential::<f32>::new()
                    .add(
                        PhmConv2dConfig::new(n, c1, 3, n)
                            .with_rule(rule)
                            .with_padding(1)
                            .init(rng)
                            .unwrap(),
                    )
                    .add(Relu::new())
                    .add(MaxPool2d::new(2, 2, 0).unwrap())
                    .add(
                        PhmConv2dConfig::new(c1, c2, 3, n)
                            .with_rule(rule)
                            .with_padding(1)
                            .init(rng)
                            .unwrap(),
                    ),
            )
        }
    };
    let mut model = model
        .add(Relu::new())
        .add(GlobalAvgPool::new())
        .add(LinearConfig::new(c2, 10).init(rng).unwrap());
    let params = model.num_parameters();
    let x = ndarray::ArrayD::from_shape_simple_fn(ndarray::IxDyn(&[batch, channels, 8, 8]), || {
        rng.random_range(0.0f32..1.0)
    });
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let frozen = model.clone();
    let x_forward = x.clone();
    let mut opt = Adam::new(AdamConfig {
        lr: 3e-3,
        ..AdamConfig::default()
    })
    .unwrap();
    vec![
        ModelRow {
            model: name.clone(),
            pass: "train step",
            batch: batch.to_string(),
            params,
            items: (batch as f64, "img"),
            run: Box::new(move || {
                model.zero_grad();
                let logits = model.forward(x.view());
                let loss = cross_entropy(logits.view(), &labels).unwrap();
                model.backward(loss.grad.view());
                opt.step(&mut model).unwrap();
            }),
        },
        ModelRow {
            model: name,
            pass: "forward",
            batch: batch.to_string(),
            params,
            items: (batch as f64, "img"),
            run: Box::new(move || {
                black_box(frozen.infer(x_forward.view()));
            }),
        },
    ]
}

/// A layer of the models report, behind the layer contract.
type BoxedLayer = Box<dyn Module<f32>>;

/// The bench conv layer (`examples/bench_conv.rs`: 3×3, 64 → 64, padding 1, 32×32 images,
/// batch 32), `Conv2d` or `PhmConv2d` n = 4: forward (`infer`; for PHC also with the kernel
/// cached) and training step (zero_grad, forward, backward, a change of every parameter as
/// an optimizer step makes, so no cached kernel is reused; no optimizer).
fn conv_rows(phc: Option<usize>) -> Vec<ModelRow<'static>> {
    use phm_nn::prelude::{Conv2dConfig, PhmConv2dConfig};
    let (batch, size, c, k) = (32, 32, 64, 3);
    let rng = &mut StdRng::seed_from_u64(0);
    let x = ndarray::ArrayD::from_shape_simple_fn(ndarray::IxDyn(&[batch, c, size, size]), || {
        rng.random_range(-1.0f32..1.0)
    });
    let g = ndarray::ArrayD::from_shape_simple_fn(ndarray::IxDyn(&[batch, c, size, size]), || {
        rng.random_range(-1.0f32..1.0)
    });
    let (name, layer, cached): (String, BoxedLayer, Option<BoxedLayer>) = match phc {
        None => (
            format!("conv {k}×{k} {c}→{c} {size}×{size} Conv2d"),
            Box::new(
                Conv2dConfig::new(c, c, k)
                    .with_padding(1)
                    .init::<f32, _>(rng)
                    .unwrap(),
            ),
            None,
        ),
        Some(n) => {
            let layer = PhmConv2dConfig::new(c, c, k, n)
                .with_padding(1)
                .init::<f32, _>(rng)
                .unwrap();
            let mut with_k = layer.clone();
            with_k.linear_mut().cache_weight().unwrap();
            (
                format!("conv {k}×{k} {c}→{c} {size}×{size} PhmConv2d n={n}"),
                Box::new(layer),
                Some(Box::new(with_k)),
            )
        }
    };
    let params = layer.num_parameters();
    let frozen = layer.clone_box();
    let mut layer = layer;
    let images = (batch as f64, "img");
    let x_step = x.clone();
    let mut rows = vec![ModelRow {
        model: name.clone(),
        pass: "forward",
        batch: batch.to_string(),
        params,
        items: images,
        run: Box::new({
            let x = x.clone();
            move || {
                black_box(frozen.infer(x.view()));
            }
        }),
    }];
    if let Some(cached) = cached {
        let x = x.clone();
        rows.push(ModelRow {
            model: format!("{name}, K cached"),
            pass: "forward",
            batch: batch.to_string(),
            params,
            items: images,
            run: Box::new(move || {
                black_box(cached.infer(x.view()));
            }),
        });
    }
    rows.push(ModelRow {
        model: name,
        pass: "train step",
        batch: batch.to_string(),
        params,
        items: images,
        run: Box::new(move || {
            layer.zero_grad();
            layer.forward(x_step.view());
            black_box(layer.backward(g.view()));
            touch(&mut *layer);
        }),
    });
    rows
}

/// Whole models, the same way for each (`--models`): the `tiny_lm` Transformer, the digits
/// CNN and the bench conv layer, dense and PHM n = 4, training steps and forward passes, at
/// each requested thread count in one process (`--threads 1 2` by default). Every figure: in
/// each of `MODEL_ROUNDS` rounds, every row at every thread count in turn, `MODEL_WARMUP`
/// untimed calls then `MODEL_REPS` calls timed one by one; median and minimum over the
/// timed calls. `scripts/torch_models.py` times the same models in PyTorch the same way and
/// prints the same columns.
fn models_report(threads: &[usize]) {
    let initial = phm_nn::kernels::num_threads();
    print_machine();
    println!(
        "Whole models, f32; thread counts {threads:?}; {MODEL_ROUNDS} rounds, each running every row at every thread count in turn ({MODEL_WARMUP} warm-up + {MODEL_REPS} timed calls); median and min of the {} timed calls; load average at start {}\n",
        MODEL_ROUNDS * MODEL_REPS,
        load_average()
    );
    let mut header = "| model | pass | batch | params |".to_string();
    let mut rule = "|---|---|---:|---:|".to_string();
    for t in threads {
        let s = if *t == 1 { "" } else { "s" };
        header += &format!(
            " {t} thread{s} median ms | {t} thread{s} min ms | {t} thread{s} throughput |"
        );
        rule += "---:|---:|---:|";
    }
    if threads.len() == 2 {
        header += &format!(" speed-up {}→{} |", threads[0], threads[1]);
        rule += "---:|";
    }
    println!("{header}\n{rule}");
    let builders: [fn() -> Vec<ModelRow<'static>>; 6] = [
        || lm_rows(None),
        || lm_rows(Some(4)),
        || cnn_rows(None),
        || cnn_rows(Some(4)),
        || conv_rows(None),
        || conv_rows(Some(4)),
    ];
    let mut rows: Vec<ModelRow<'static>> = builders.iter().flat_map(|build| build()).collect();
    let times = time_models(threads, &mut rows);
    for (row, times) in rows.iter().zip(&times) {
        let mut line = format!(
            "| {} | {} | {} | {} |",
            row.model, row.pass, row.batch, row.params
        );
        for &(median, min) in times {
            line += &format!(
                " {:.2} | {:.2} | {} |",
                median * 1e3,
                min * 1e3,
                per_second(row.items.0, row.items.1, median)
            );
        }
        if times.len() == 2 {
            line += &format!(" {:.2}× |", times[0].0 / times[1].0);
        }
        println!("{line}");
    }
    println!("\nload average at end {}", load_average());
    phm_nn::kernels::set_num_threads(initial);
}

/// Dense `Linear` (f32), inference and training step (forward + backward, every parameter
/// marked changed first, as after an optimizer step), at the cases `scripts/torch_bench.py
/// --linear` times for PyTorch's `nn.Linear`; run once per thread count
/// (`PHM_NN_NUM_THREADS=1`, `=2`).
fn linear_table() {
    println!("\nDense Linear, f32, {} thread(s) (medians of {SAMPLES} interleaved samples; compare with `scripts/torch_bench.py --linear`)\n", phm_nn::kernels::num_threads());
    println!("| in×out | batch | pass | Linear ms | GFLOP/s |");
    println!("|---|---:|---|---:|---:|");
    let mut rng = StdRng::seed_from_u64(4);
    for (d, k, batch) in [
        (1024, 1024, 1),
        (1024, 1024, 32),
        (1024, 1024, 256),
        (4096, 1024, 32),
    ] {
        let x: Array2<f32> = random(&mut rng, batch, d);
        let g: Array2<f32> = random(&mut rng, batch, k);
        let mut layer = LinearConfig::new(d, k).init::<f32, _>(&mut rng).unwrap();
        let t = race(&mut [&mut || {
            black_box(layer.infer(x.view().into_dyn()));
        }])[0];
        let flops = 2.0 * (batch * k * d) as f64;
        println!(
            "| {d}×{k} | {batch} | infer | {:.3} | {:.1} |",
            t * 1e3,
            gflops(flops, t)
        );
        let t = race(&mut [&mut || {
            touch(&mut layer);
            black_box(layer.forward(x.view().into_dyn()));
            black_box(layer.backward(g.view().into_dyn()));
        }])[0];
        println!(
            "| {d}×{k} | {batch} | train | {:.3} | {:.1} |",
            t * 1e3,
            gflops(3.0 * flops, t)
        );
    }
}

/// GFLOP/s of `flops` floating-point operations done in `seconds`.
fn gflops(flops: f64, seconds: f64) -> f64 {
    flops / seconds / 1e9
}

/// The layout sweep (`--layouts`): every product with a weight that the linear family runs
/// (`Y = X Wᵀ` forward, `dW = Gᵀ X` and `dX = G W` in training), for 1 … 1024 rows, through
/// the crate's entry point (`kernels::matmul` with the operands as the layers pass them), and
/// the same product in the other layouts the backend accepts: the weight stored transposed
/// (a row-major `Wᵀ`, not counted), the output written column-major (plus the copy back to
/// row-major, counted). `crate/best` is the crate's rate over the best layout's: 1 or more
/// means the crate already takes the best layout.
fn layouts_sweep() {
    use ndarray::ShapeBuilder;
    use phm_nn::kernels::matmul;
    print_machine();
    println!("Products with a weight, f32: GFLOP/s of the crate's path and of the best layout (medians of {SAMPLES} interleaved samples)\n");
    println!(
        "| product | in→out | rows | crate GFLOP/s | best GFLOP/s | best layout | crate/best |"
    );
    println!("|---|---|---:|---:|---:|---|---:|");
    let mut rng = StdRng::seed_from_u64(3);
    for (d, k) in [(1024usize, 1024usize), (4096, 1024)] {
        let w: Array2<f32> = random(&mut rng, k, d);
        let w_t = w.t().as_standard_layout().into_owned(); // (d, k) row-major
        for m in [1usize, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] {
            let x: Array2<f32> = random(&mut rng, m, d);
            let g: Array2<f32> = random(&mut rng, m, k);
            let flops = 2.0 * (m * k * d) as f64;
            let mut y = Array2::<f32>::zeros((m, k));
            let mut y2 = Array2::<f32>::zeros((m, k));
            let mut y3 = Array2::<f32>::zeros((m, k));
            let mut y_f = Array2::<f32>::zeros((m, k).f());
            let mut dw = Array2::<f32>::zeros((k, d));
            let mut dw2 = Array2::<f32>::zeros((k, d));
            let mut dw_f = Array2::<f32>::zeros((k, d).f());
            let mut dx = Array2::<f32>::zeros((m, d));
            let mut dx2 = Array2::<f32>::zeros((m, d));
            let mut dx3 = Array2::<f32>::zeros((m, d));
            let mut dx_f = Array2::<f32>::zeros((m, d).f());
            // Forward Y = X Wᵀ.
            let t = race(&mut [
                &mut || matmul(1.0, x.view(), w.t(), 0.0, y.view_mut()),
                &mut || matmul(1.0, x.view(), w_t.view(), 0.0, y2.view_mut()),
                &mut || {
                    matmul(1.0, x.view(), w.t(), 0.0, y_f.view_mut());
                    y3.assign(&y_f);
                },
            ]);
            layout_line(
                "Y = X·Wᵀ",
                d,
                k,
                m,
                flops,
                &t,
                &["Wᵀ row-major", "Y col-major + copy"],
            );
            // dW = Gᵀ X.
            let t = race(&mut [
                &mut || matmul(1.0, g.t(), x.view(), 0.0, dw.view_mut()),
                &mut || {
                    matmul(1.0, g.t(), x.view(), 0.0, dw_f.view_mut());
                    dw2.assign(&dw_f);
                },
            ]);
            layout_line("dW = Gᵀ·X", d, k, m, flops, &t, &["dW col-major + copy"]);
            // dX = G W.
            let t = race(&mut [
                &mut || matmul(1.0, g.view(), w.view(), 0.0, dx.view_mut()),
                &mut || matmul(1.0, g.view(), w_t.t(), 0.0, dx2.view_mut()),
                &mut || {
                    matmul(1.0, g.view(), w.view(), 0.0, dx_f.view_mut());
                    dx3.assign(&dx_f);
                },
            ]);
            layout_line(
                "dX = G·W",
                d,
                k,
                m,
                flops,
                &t,
                &["W col-major", "dX col-major + copy"],
            );
        }
    }
    linear_table();
}

/// One row of [`layouts_sweep`]: `t[0]` is the crate's path, `t[1..]` the other layouts.
fn layout_line(what: &str, d: usize, k: usize, m: usize, flops: f64, t: &[f64], names: &[&str]) {
    let (best, name) =
        t[1..].iter().zip(names).fold(
            (t[0], "crate's"),
            |(bt, bn), (&ti, &ni)| if ti < bt { (ti, ni) } else { (bt, bn) },
        );
    println!(
        "| {what} | {d}→{k} | {m} | {:.1} | {:.1} | {name} | {:.2} |",
        gflops(flops, t[0]),
        gflops(flops, best),
        best / t[0]
    );
}
