//! The PHM paper's artificial-data experiment, small and fast: a PHM layer trained on data made
//! by a known rule recovers it — entry by entry when the blocks are known (setting a), up to
//! the mixing symmetry when rules and blocks are both learned (setting b).
use ndarray::{Axis, Ix3};
use phm_nn::algebra::Algebra;
use phm_nn::init::{Fans, Init};
use phm_nn::loss::mse;
use phm_nn::optim::{Adam, AdamConfig, Optimizer};
use phm_nn::research::synthetic::{self, Dataset, RuleTask, TrueRule};
use phm_nn::{Module, PhmLinear, PhmLinearConfig};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Every block `S_i` is `BLOCK × BLOCK`: the layer is `(BLOCK·n) → (BLOCK·n)`.
const BLOCK: usize = 4;
const SAMPLES: usize = 512;
const BATCH: usize = 32;

/// A task with `BLOCK × BLOCK` blocks and its data.
fn data(n: usize, rule: TrueRule, noise: f64, rng: &mut StdRng) -> Dataset<f64> {
    RuleTask::new(BLOCK * n, BLOCK * n, n, rule)
        .with_samples(SAMPLES)
        .with_noise_std(noise)
        .generate(rng)
        .unwrap()
}

/// Mini-batch Adam, learning rate decaying exponentially from 1e-2 to 1e-4.
fn train(layer: &mut PhmLinear<f64>, data: &Dataset<f64>, epochs: usize, rng: &mut StdRng) {
    let (lr0, lr1) = (1e-2, 1e-4);
    let mut opt = Adam::new(AdamConfig {
        lr: lr0,
        ..AdamConfig::default()
    })
    .unwrap();
    let mut order: Vec<usize> = (0..data.x.nrows()).collect();
    for epoch in 0..epochs {
        let t = epoch as f64 / (epochs - 1) as f64;
        opt.set_learning_rate(lr0 * (lr1 / lr0).powf(t)).unwrap();
        order.shuffle(rng);
        for batch in order.chunks(BATCH) {
            let (xb, yb) = (data.x.select(Axis(0), batch), data.y.select(Axis(0), batch));
            layer.zero_grad();
            let pred = layer.forward(xb.view().into_dyn());
            let loss = mse(pred.view(), yb.view().into_dyn());
            layer.backward(loss.grad.view().into_dyn());
            opt.step(layer).unwrap();
        }
    }
    let loss = mse(
        layer.infer(data.x.view().into_dyn()).view(),
        data.y.view().into_dyn(),
    )
    .value;
    eprintln!("{epochs} epochs, final loss {loss:.3e}");
}

/// Setting (a): blocks fixed to the true ones, rules learned from a random init. Returns the
/// max entry error of the learned rules.
fn blocks_known(n: usize, rule: TrueRule, noise: f64, epochs: usize, seed: u64) -> f64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = data(n, rule, noise, &mut rng);
    let rules = Init::UnitFibers
        .sample::<f64, _>(&[n, n, n], Fans::new(n, n), &mut rng)
        .unwrap()
        .into_dimensionality::<Ix3>()
        .unwrap();
    let mut layer = PhmLinear::from_parts(rules, data.true_blocks.clone(), None).unwrap();
    layer.set_blocks_trainable(false);
    let before = synthetic::rule_error(layer.rules().view(), data.true_rules.view()).unwrap();
    assert!(before > 0.5, "the random init is already close: {before}");
    train(&mut layer, &data, epochs, &mut rng);
    assert_eq!(layer.blocks(), data.true_blocks, "fixed blocks moved");
    let err = synthetic::rule_error(layer.rules().view(), data.true_rules.view()).unwrap();
    eprintln!("n = {n}: max |A - A*| {before:.3} -> {err:.3e}");
    err
}

/// Setting (b): rules and blocks learned from the default init. Returns
/// (‖W − W*‖/‖W*‖, subspace distance, aligned residual).
fn both_learned(n: usize, rule: TrueRule, epochs: usize, seed: u64) -> (f64, f64, f64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = data(n, rule, 0.0, &mut rng);
    let mut layer = PhmLinearConfig::new(BLOCK * n, BLOCK * n, n)
        .with_bias(false)
        .init::<f64, _>(&mut rng)
        .unwrap();
    let truth = data.true_rules.view();
    let before = synthetic::subspace_distance(layer.rules().view(), truth).unwrap();
    assert!(
        before > 0.5,
        "the random init already spans the rules: {before}"
    );
    train(&mut layer, &data, epochs, &mut rng);
    let w =
        synthetic::relative_weight_error(layer.weight().view(), data.true_weight.view()).unwrap();
    let dist = synthetic::subspace_distance(layer.rules().view(), truth).unwrap();
    let residual = synthetic::align_rules(layer.rules().view(), truth)
        .unwrap()
        .residual;
    // The entrywise error stays large: the layer found a mixture A* M, not A* itself.
    let entrywise = synthetic::rule_error(layer.rules().view(), truth).unwrap();
    eprintln!(
        "n = {n}: |W - W*|/|W*| {w:.3e}, subspace {before:.3} -> {dist:.3e}, aligned residual \
         {residual:.3e}, max |A - A*| {entrywise:.3}"
    );
    assert!(
        entrywise > 0.1,
        "learned exactly A*, not a mixture: {entrywise}"
    );
    (w, dist, residual)
}

#[test]
fn blocks_known_quaternion_rules_are_recovered_entry_by_entry() {
    let err = blocks_known(4, TrueRule::Algebra(Algebra::Quaternion), 0.0, 300, 1);
    assert!(err < 1e-3, "max |A - A*| = {err}");
}

#[test]
fn blocks_known_random_n3_rules_are_recovered_entry_by_entry() {
    let err = blocks_known(3, TrueRule::Random, 0.0, 300, 2);
    assert!(err < 1e-3, "max |A - A*| = {err}");
}

#[test]
fn blocks_known_with_noise_recovers_rules_to_the_noise_level() {
    let err = blocks_known(4, TrueRule::Algebra(Algebra::Quaternion), 0.01, 300, 3);
    assert!(err < 1e-2, "max |A - A*| = {err}");
}

#[test]
fn both_learned_quaternion_recovers_w_and_the_span_of_the_rules() {
    let (w, dist, residual) = both_learned(4, TrueRule::Algebra(Algebra::Quaternion), 300, 4);
    assert!(w < 1e-3, "|W - W*|/|W*| = {w}");
    assert!(dist < 1e-3, "subspace distance {dist}");
    assert!(residual < 1e-3, "aligned residual {residual}");
}

#[test]
fn both_learned_random_n3_recovers_w_and_the_span_of_the_rules() {
    let (w, dist, residual) = both_learned(3, TrueRule::Random, 300, 5);
    assert!(w < 1e-3, "|W - W*|/|W*| = {w}");
    assert!(dist < 1e-3, "subspace distance {dist}");
    assert!(residual < 1e-3, "aligned residual {residual}");
}

#[test]
fn octonion_rules_are_recovered_in_both_settings() {
    let octonion = TrueRule::Algebra(Algebra::Octonion);
    let err = blocks_known(8, octonion, 0.0, 600, 6);
    assert!(err < 1e-3, "max |A - A*| = {err}");
    let (w, dist, residual) = both_learned(8, octonion, 300, 7);
    assert!(w < 1e-3, "|W - W*|/|W*| = {w}");
    assert!(dist < 1e-3, "subspace distance {dist}");
    assert!(residual < 1e-3, "aligned residual {residual}");
}
