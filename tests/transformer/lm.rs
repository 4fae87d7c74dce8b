//! The pre-norm block and the decoder-only language model: finite-difference checks (f64),
//! generation with the key/value cache against generation without it, save and reload, and
//! a short algorithmic task (reversing a sequence) that the whole stack must learn.

use crate::common::{assert_close, rng};
use ndarray::{s, Array2, ArrayD};
use phm_nn::io::{load_model_from_bytes, model_to_bytes};
use phm_nn::module::params;
use phm_nn::nn::transformer::{Positional, Sampling, TransformerLm, TransformerLmConfig};
use phm_nn::nn::Projection;
use phm_nn::prelude::*;

const TOL: f64 = 1e-6;

fn kinds() -> [Projection; 3] {
    [
        Projection::Dense,
        Projection::phm(2),
        Projection::low_rank(2, 1),
    ]
}

/// Cross-entropy of the model's next-token logits, as f64.
fn lm_loss(lm: &mut TransformerLm<f64>, ids: &Array2<usize>, targets: &[usize]) -> f64 {
    let logits = lm.infer_ids(ids.view(), None);
    cross_entropy(logits.view(), targets).unwrap().value
}

/// Every parameter gradient of the model against central differences of the loss.
fn check_lm_gradients(mut lm: TransformerLm<f64>) {
    let ids = Array2::from_shape_fn((2, 5), |(b, t)| (3 * b + 2 * t + 1) % lm.vocab());
    let targets: Vec<usize> = ids.iter().map(|&i| (i * 7 + 2) % lm.vocab()).collect();
    lm.zero_grad();
    let logits = lm.forward_ids(ids.view(), None);
    let loss = cross_entropy(logits.view(), &targets).unwrap();
    assert_close(
        loss.value,
        lm_loss(&mut lm, &ids, &targets),
        1e-12,
        "forward == infer",
    );
    lm.backward_logits(loss.grad.view());
    assert_eq!(lm.pending(), 0, "backward consumes every saved state");
    let eps = 1e-6;
    for (name, p) in params(&lm) {
        let grad = p.grad();
        for flat in 0..grad.len() {
            let shift = |delta: f64| {
                let mut w = p.write();
                *w.value_mut().iter_mut().nth(flat).unwrap() += delta;
            };
            shift(eps);
            let plus = lm_loss(&mut lm, &ids, &targets);
            shift(-2.0 * eps);
            let minus = lm_loss(&mut lm, &ids, &targets);
            shift(eps);
            let numeric = (plus - minus) / (2.0 * eps);
            assert_close(
                *grad.iter().nth(flat).unwrap(),
                numeric,
                TOL,
                &format!("d{name}[{flat}]"),
            );
        }
    }
}

#[test]
fn language_model_gradients_match_finite_differences() {
    let base = TransformerLmConfig::new(6, 8, 2, 2, 8).with_ffn_width(8);
    check_lm_gradients(base.clone().init(&mut rng(1)).unwrap());
    check_lm_gradients(
        base.clone()
            .with_projection(Projection::phm(2))
            .with_shared_rules(true)
            .with_positional(Positional::Sinusoidal)
            .with_tied_embeddings(true)
            .init(&mut rng(2))
            .unwrap(),
    );
    check_lm_gradients(
        base.with_projection(Projection::low_rank(2, 1))
            .init(&mut rng(3))
            .unwrap(),
    );
}

#[test]
fn shared_rules_are_counted_once_in_the_model() {
    let base = TransformerLmConfig::new(10, 16, 2, 3, 8).with_projection(Projection::phm(4));
    let private = base.clone().init::<f32, _>(&mut rng(0)).unwrap();
    let shared = base
        .with_shared_rules(true)
        .init::<f32, _>(&mut rng(0))
        .unwrap();
    // 3 blocks × 6 projections each own 4³ rule entries; shared: 4³ once.
    assert_eq!(
        private.num_parameters() - shared.num_parameters(),
        (18 - 1) * 64
    );
    let rule_tensors = params(&shared)
        .iter()
        .filter(|(p, _)| p.ends_with("rules"))
        .count();
    assert_eq!(rule_tensors, 1);
}

fn small_lm(projection: Projection, seed: u64) -> TransformerLm<f64> {
    TransformerLmConfig::new(7, 8, 2, 2, 6)
        .with_projection(projection)
        .init(&mut rng(seed))
        .unwrap()
}

#[test]
fn cached_generation_equals_uncached_generation() {
    for (i, projection) in kinds().into_iter().enumerate() {
        let lm = small_lm(projection, 10 + i as u64);
        // 17 steps from a 2-token prompt with max_len 6: the context restarts several times.
        for sampling in [
            Sampling::greedy(),
            Sampling::new(1.0, None),
            Sampling::new(0.7, Some(3)),
        ] {
            let a = lm.generate(&[1, 4], 17, sampling, &mut rng(99)).unwrap();
            let b = lm
                .generate_uncached(&[1, 4], 17, sampling, &mut rng(99))
                .unwrap();
            assert_eq!(a, b, "{projection:?} {sampling:?}");
            assert_eq!(a.len(), 19);
            assert!(a.iter().all(|&t| t < 7));
        }
    }
}

#[test]
fn infer_step_gives_the_full_pass_logits() {
    let lm = small_lm(Projection::phm(2), 5);
    let ids = Array2::from_shape_fn((3, 6), |(b, t)| (b + 2 * t) % 7);
    let full = lm.infer_ids(ids.view(), None);
    let mut cache = lm.new_cache(3);
    let first = lm.infer_step(ids.slice(s![.., ..4]), &mut cache).unwrap();
    let second = lm.infer_step(ids.slice(s![.., 4..]), &mut cache).unwrap();
    for (a, b) in first.iter().chain(second.iter()).zip(
        full.slice(s![.., ..4, ..])
            .iter()
            .chain(full.slice(s![.., 4.., ..]).iter()),
    ) {
        assert!((a - b).abs() < 1e-12);
    }
    // Full: one more token does not fit, and nothing is appended.
    let err = lm
        .infer_step(ids.slice(s![.., ..1]), &mut cache)
        .unwrap_err();
    assert!(err.to_string().contains("max_len"), "{err}");
    assert_eq!(cache.len(), 6);
    // A batch the cache does not hold, and a bad id.
    assert!(lm
        .infer_step(ids.slice(s![..1, ..1]), &mut lm.new_cache(2))
        .is_err());
    let bad = Array2::from_elem((3, 1), 7usize);
    assert!(lm.infer_step(bad.view(), &mut lm.new_cache(3)).is_err());
}

#[test]
fn generation_rejects_bad_input() {
    let lm = small_lm(Projection::Dense, 1);
    let mut r = rng(0);
    assert!(lm.generate(&[], 3, Sampling::greedy(), &mut r).is_err());
    assert!(lm.generate(&[7], 3, Sampling::greedy(), &mut r).is_err());
    assert!(lm
        .generate(&[1], 3, Sampling::new(-1.0, None), &mut r)
        .is_err());
    assert!(lm
        .generate(&[1], 3, Sampling::new(f64::NAN, None), &mut r)
        .is_err());
    assert!(lm
        .generate(&[1], 3, Sampling::new(1.0, Some(0)), &mut r)
        .is_err());
}

#[test]
fn greedy_generation_takes_the_arg_max() {
    let lm = small_lm(Projection::phm(2), 3);
    let out = lm
        .generate(&[2, 5], 1, Sampling::greedy(), &mut rng(0))
        .unwrap();
    let logits = lm.infer_ids(
        Array2::from_shape_vec((1, 2), vec![2, 5]).unwrap().view(),
        None,
    );
    let last = logits.slice(s![0, 1, ..]);
    let best = (0..7)
        .max_by(|&a, &b| last[a].total_cmp(&last[b]).then(b.cmp(&a)))
        .unwrap();
    assert_eq!(out[2], best);
}

#[test]
fn a_saved_model_reloads_and_samples_the_same() {
    let config = TransformerLmConfig::new(7, 8, 2, 2, 6).with_projection(Projection::phm(2));
    let lm = config.clone().init::<f32, _>(&mut rng(1)).unwrap();
    let bytes = model_to_bytes(&lm).unwrap();
    let mut fresh = config.init::<f32, _>(&mut rng(2)).unwrap();
    let ids = Array2::from_shape_fn((1, 6), |(_, t)| t);
    assert_ne!(
        lm.infer_ids(ids.view(), None),
        fresh.infer_ids(ids.view(), None)
    );
    let meta = load_model_from_bytes(&mut fresh, &bytes).unwrap();
    assert_eq!(
        lm.infer_ids(ids.view(), None),
        fresh.infer_ids(ids.view(), None)
    );
    assert!(meta.values().any(|v| v.contains("phm n=2")), "{meta:?}");
    let a = lm
        .generate(&[3], 10, Sampling::new(1.0, None), &mut rng(5))
        .unwrap();
    let b = fresh
        .generate(&[3], 10, Sampling::new(1.0, None), &mut rng(5))
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn the_module_interface_takes_ids_as_floats() {
    let mut lm = small_lm(Projection::Dense, 4);
    let ids = Array2::from_shape_fn((2, 3), |(b, t)| b + t);
    let floats = ids.mapv(|i| i as f64).into_dyn();
    let a = lm.infer(floats.view());
    assert_eq!(a, lm.infer_ids(ids.view(), None).into_dyn());
    let y = lm.forward(floats.view());
    let dx = lm.backward(ArrayD::ones(y.raw_dim()).view());
    assert_eq!(dx.shape(), &[2, 3]);
    assert!(dx.iter().all(|&v| v == 0.0), "ids have no gradient");
    assert_eq!(lm.pending(), 0);
}

/// Sequences `a₁ … a_L SEP a_L … a₁`: after the separator the model must copy the first half
/// backwards, which only attention over the right earlier position can do.
#[test]
fn the_stack_learns_to_reverse_a_sequence() {
    const L: usize = 5;
    const SYMBOLS: usize = 8;
    const SEP: usize = SYMBOLS;
    let mut data_rng = rng(7);
    let mut batch = |size: usize| {
        let mut ids = Array2::zeros((size, 2 * L));
        let mut targets = Vec::new();
        for b in 0..size {
            let seq: Vec<usize> = (0..L)
                .map(|_| rand::RngExt::random_range(&mut data_rng, 0..SYMBOLS))
                .collect();
            let full: Vec<usize> = seq
                .iter()
                .copied()
                .chain([SEP])
                .chain(seq.iter().rev().copied())
                .collect();
            for t in 0..2 * L {
                ids[[b, t]] = full[t];
            }
            targets.push(full[1..].to_vec());
        }
        (ids, targets)
    };
    let mut lm = TransformerLmConfig::new(SYMBOLS + 1, 32, 4, 2, 2 * L)
        .with_projection(Projection::phm(4))
        .init::<f32, _>(&mut rng(8))
        .unwrap();
    let mut opt = Adam::new(AdamConfig {
        lr: 3e-3,
        ..AdamConfig::default()
    })
    .unwrap();
    for _ in 0..400 {
        let (ids, targets) = batch(32);
        let flat: Vec<usize> = targets.iter().flatten().copied().collect();
        lm.zero_grad();
        let logits = lm.forward_ids(ids.view(), None);
        let loss = cross_entropy(logits.view(), &flat).unwrap();
        lm.backward_logits(loss.grad.view());
        opt.step(&mut lm).unwrap();
    }
    // Accuracy on the reversed half of fresh sequences (chance: 1/8).
    let (ids, targets) = batch(200);
    let logits = lm.infer_ids(ids.view(), None);
    let (mut right, mut total) = (0, 0);
    for (b, target) in targets.iter().enumerate() {
        for (t, &want) in target.iter().enumerate().skip(L) {
            let row = logits.slice(s![b, t, ..]);
            let guess = (0..=SYMBOLS)
                .max_by(|&i, &j| row[i].total_cmp(&row[j]))
                .unwrap();
            right += usize::from(guess == want);
            total += 1;
        }
    }
    let accuracy = right as f64 / total as f64;
    assert!(
        accuracy > 0.9,
        "reversal accuracy {accuracy:.3} (chance 0.125)"
    );
}

/// One training step (forward, cross-entropy, backward, clipping, AdamW) of a model whose
/// element-wise, normalisation, attention and optimizer passes are large enough to be split
/// across the pool (its products are not: they stay below the GEMM's threading threshold):
/// the loss, the norm and every parameter after the step are bit-identical at 1 and 2
/// threads, in f32 and f64, dense and PHM.
#[test]
fn a_training_step_is_bit_identical_at_one_and_two_threads() {
    fn step<F: Float>(projection: Projection, threads: usize) -> (F, f64, Vec<ArrayD<F>>) {
        // Split even small passes, so that the split paths are the ones checked.
        phm_nn::kernels::set_elementwise_min_work(0);
        phm_nn::kernels::set_num_threads(threads);
        let mut lm = TransformerLmConfig::new(19, 32, 4, 2, 24)
            .with_ffn_width(128)
            .with_projection(projection)
            .init::<F, _>(&mut rng(11))
            .unwrap();
        let mut opt = AdamW::new(AdamWConfig {
            lr: 1e-2,
            ..AdamWConfig::default()
        })
        .unwrap();
        let ids = Array2::from_shape_fn((6, 24), |(b, t)| (5 * b + 3 * t + 1) % 19);
        let targets: Vec<usize> = ids.iter().map(|&i| (i * 7 + 2) % 19).collect();
        lm.zero_grad();
        let logits = lm.forward_ids(ids.view(), None);
        let loss = cross_entropy(logits.view(), &targets).unwrap();
        lm.backward_logits(loss.grad.view());
        let norm = clip_grad_norm(&lm, 0.5).unwrap();
        opt.step(&mut lm).unwrap();
        let values = params(&lm).into_iter().map(|(_, p)| p.value()).collect();
        (loss.value, norm, values)
    }
    for projection in [Projection::Dense, Projection::phm(4)] {
        let one = step::<f64>(projection, 1);
        let two = step::<f64>(projection, 2);
        assert!(one == two, "f64 {projection:?}: 1 and 2 threads differ");
        let one = step::<f32>(projection, 1);
        let two = step::<f32>(projection, 2);
        assert!(one == two, "f32 {projection:?}: 1 and 2 threads differ");
    }
    phm_nn::kernels::set_num_threads(1);
}
