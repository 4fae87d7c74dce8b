//! Profile helper: training steps of the `tiny_lm` Transformer (forward, cross-entropy,
//! backward, gradient clipping, AdamW), for a profiler such as `valgrind --tool=callgrind` or
//! `perf record`, or for a quick per-step time.
//!
//! Run: `cargo run --release --example profile_lm -- <dense|phm4|phm2> <steps> [train|infer]`
//! e.g. `valgrind --tool=callgrind target/release/examples/profile_lm dense 3`; `infer` times
//! the inference forward (`infer_ids`) instead of the training step.
//!
//! The model is `tiny_lm`'s: vocabulary 73, d = 128, 4 heads, 2 pre-norm blocks, feed-forward
//! 512 (exact GELU), context 64, batch 16. Prints the median step time of the timed steps
//! (after one untimed warm-up step) and the thread count.

use std::hint::black_box;
use std::time::Instant;

use ndarray::Array2;
use phm_nn::nn::transformer::TransformerLmConfig;
use phm_nn::nn::Projection;
use phm_nn::prelude::*;

const VOCAB: usize = 73;
const D: usize = 128;
const HEADS: usize = 4;
const LAYERS: usize = 2;
const FFN: usize = 512;
const T: usize = 64;
const BATCH: usize = 16;

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: profile_lm <dense|phm2|phm4> <steps> [train|infer]";
    let kind = args.first().map(String::as_str).unwrap_or("dense");
    let steps: usize = args.get(1).map_or(Ok(10), |s| s.parse())?;
    let infer = match args.get(2).map(String::as_str) {
        None | Some("train") => false,
        Some("infer") => true,
        _ => return Err(usage.into()),
    };
    let config = TransformerLmConfig::new(VOCAB, D, HEADS, LAYERS, T).with_ffn_width(FFN);
    let config = match kind {
        "dense" => config,
        "phm2" => config
            .with_projection(Projection::phm(2))
            .with_shared_rules(false),
        "phm4" => config
            .with_projection(Projection::phm(4))
            .with_shared_rules(false),
        _ => return Err(usage.into()),
    };
    let mut rng = StdRng::seed_from_u64(7);
    let mut model = config.init::<f32, _>(&mut rng)?;
    let mut opt = AdamW::new(AdamWConfig {
        lr: 3e-3,
        ..AdamWConfig::default()
    })?;
    let inputs = Array2::from_shape_fn((BATCH, T), |(b, t)| (b * 31 + t * 7) % VOCAB);
    let labels: Vec<usize> = (0..BATCH * T).map(|i| (i * 13 + 5) % VOCAB).collect();
    let mut times = Vec::with_capacity(steps);
    for step in 0..=steps {
        let start = Instant::now();
        if infer {
            black_box(model.infer_ids(inputs.view(), None));
            if step > 0 {
                times.push(start.elapsed().as_secs_f64());
            }
            continue;
        }
        model.zero_grad();
        let logits = model.forward_ids(inputs.view(), None);
        let loss = cross_entropy(logits.view(), &labels)?;
        model.backward_logits(loss.grad.view());
        black_box(clip_grad_norm(&model, 1.0)?);
        opt.step(&mut model)?;
        if step > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    if let Some(median) = times.get(times.len() / 2) {
        println!(
            "{kind}: median {} {:.2} ms over {steps} steps ({:.1} k tokens/s), {} thread(s)",
            if infer { "forward" } else { "step" },
            median * 1e3,
            (BATCH * T) as f64 / median / 1e3,
            phm_nn::kernels::num_threads()
        );
    }
    Ok(())
}
