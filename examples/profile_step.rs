//! Profile helper: runs training steps (or inference calls) of one layer shape, for a profiler
//! such as `valgrind --tool=callgrind` or `perf record`.
//!
//! Run: `cargo run --release --example profile_step -- <dense|auto|mat|fact> <in> <out> <n> <batch> <steps> [infer]`
//! e.g. `valgrind --tool=callgrind target/release/examples/profile_step fact 256 256 4 32 200`

use std::hint::black_box;

use ndarray::Array2;
use phm_nn::{LinearConfig, Module, PhmLinearConfig, Strategy};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn main() -> phm_nn::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: profile_step <dense|auto|mat|fact> <in> <out> <n> <batch> <steps> [infer]";
    let num = |i: usize| -> usize {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{usage}"))
    };
    let (kind, d, k, n, batch, steps) = (
        args.first().expect(usage).as_str(),
        num(1),
        num(2),
        num(3),
        num(4),
        num(5),
    );
    let infer = args.get(6).is_some_and(|a| a == "infer");
    let mut rng = StdRng::seed_from_u64(0);
    let mut layer: Box<dyn Module<f32>> = match kind {
        "dense" => Box::new(LinearConfig::new(d, k).init(&mut rng)?),
        other => {
            let strategy = match other {
                "auto" => Strategy::Auto,
                "mat" => Strategy::Materialized,
                "fact" => Strategy::Factored,
                _ => panic!("{usage}"),
            };
            Box::new(
                PhmLinearConfig::new(d, k, n)
                    .init::<f32, _>(&mut rng)?
                    .with_strategy(strategy),
            )
        }
    };
    let x = Array2::from_shape_simple_fn((batch, d), || rng.random_range(-1.0f32..1.0));
    let g = Array2::from_shape_simple_fn((batch, k), || rng.random_range(-1.0f32..1.0));
    for _ in 0..steps {
        if infer {
            black_box(layer.infer(x.view().into_dyn()));
        } else {
            // An optimizer step changes the parameters: mark them so.
            layer.visit_params(&mut |_, p| {
                p.write().value_mut();
            });
            black_box(layer.forward(x.view().into_dyn()));
            black_box(layer.backward(g.view().into_dyn()));
        }
    }
    Ok(())
}
