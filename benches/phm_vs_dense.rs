//! Criterion benches: PHM layers (n ∈ {2, 4, 8, 16}, `Strategy::Auto`) against dense layers of
//! the same shape, for inference (`infer`) and a training step (forward + backward, with the
//! parameters marked changed as an optimizer step does). Throughput is in dense-equivalent
//! FLOPs: `2·B·k·d` per forward, `6·B·k·d` per training step.
//!
//! Run: `cargo bench --bench phm_vs_dense` (filter with e.g. `-- 1024x1024/b32`; one thread:
//! `PHM_NN_NUM_THREADS=1 cargo bench ...`). It first prints the CPU model, the SIMD level the
//! GEMM dispatched to and the thread count. `cargo run --release --example bench_report`
//! prints the same grid as one ratio table.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array2;
use phm_nn::{Float, LinearConfig, Module, PhmLinearConfig};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const SIZES: [(usize, usize); 4] = [(256, 256), (1024, 1024), (4096, 1024), (4096, 4096)];
const BATCHES: [usize; 3] = [1, 32, 256];
const NS: [usize; 4] = [2, 4, 8, 16];

fn random<F: Float>(rng: &mut StdRng, rows: usize, cols: usize) -> Array2<F> {
    Array2::from_shape_simple_fn((rows, cols), || F::of(rng.random_range(-1.0..1.0)))
}

/// Marks every parameter as changed, as an optimizer step does.
fn touch<F: Float>(m: &mut dyn Module<F>) {
    m.visit_params(&mut |_, p| {
        p.write().value_mut();
    });
}

/// One group per (size, batch): dense and every n side by side.
fn bench_grid<F: Float>(
    c: &mut Criterion,
    label: &str,
    sizes: &[(usize, usize)],
    batches: &[usize],
) {
    let mut rng = StdRng::seed_from_u64(0);
    for &(d, k) in sizes {
        for &batch in batches {
            let x: Array2<F> = random(&mut rng, batch, d);
            let g: Array2<F> = random(&mut rng, batch, k);
            let mut layers: Vec<(String, Box<dyn Module<F>>)> = vec![(
                "dense".into(),
                Box::new(LinearConfig::new(d, k).init::<F, _>(&mut rng).unwrap()),
            )];
            for n in NS {
                let mut layer = PhmLinearConfig::new(d, k, n)
                    .init::<F, _>(&mut rng)
                    .unwrap();
                // Inference after training, as the README recommends: W cached, Auto decides.
                layer.cache_weight().unwrap();
                layers.push((format!("phm_n{n}"), Box::new(layer)));
            }
            let forward_flops = 2 * (batch * k * d) as u64;
            let mut group = c.benchmark_group(format!("{label}/{d}x{k}/b{batch}/infer"));
            group.throughput(Throughput::Elements(forward_flops));
            for (name, layer) in layers.iter_mut() {
                group.bench_function(BenchmarkId::from_parameter(name.as_str()), |b| {
                    b.iter(|| black_box(layer.infer(x.view().into_dyn())))
                });
            }
            group.finish();
            if d * k > 4096 * 1024 {
                continue; // 4096×4096: forward only
            }
            let mut group = c.benchmark_group(format!("{label}/{d}x{k}/b{batch}/train"));
            group.throughput(Throughput::Elements(3 * forward_flops));
            for (name, layer) in layers.iter_mut() {
                group.bench_function(BenchmarkId::from_parameter(name.as_str()), |b| {
                    b.iter(|| {
                        touch(layer.as_mut());
                        black_box(layer.forward(x.view().into_dyn()));
                        black_box(layer.backward(g.view().into_dyn()))
                    })
                });
            }
            group.finish();
        }
    }
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

fn benches(c: &mut Criterion) {
    eprintln!(
        "CPU: {} · GEMM SIMD: {} · threads: {}",
        cpu_model(),
        phm_nn::kernels::simd_level(),
        phm_nn::kernels::num_threads()
    );
    bench_grid::<f32>(c, "f32", &SIZES, &BATCHES);
    bench_grid::<f64>(c, "f64", &[(1024, 1024)], &[32]);
}

criterion_group! {
    name = phm_vs_dense;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(phm_vs_dense);
