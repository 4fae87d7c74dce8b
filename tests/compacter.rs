//! The Compacter family together: rules shared by layers of different sizes and kinds
//! (gradients accumulate, counted once, updated once per step by Sgd, Adam and AdamW), fixed
//! and factorized rules shared, and adapters (near-identity init, gradients, insertion into a
//! frozen model, counts, cloning).
mod common;

use common::{assert_close, check_gradients, rng, uniform2, uniform_d};
use ndarray::ArrayD;
use phm_nn::algebra::Algebra;
use phm_nn::module::{for_each_mut, params};
use phm_nn::nn::{
    freeze, insert_adapters, Adapter, AdapterConfig, LphmLinear, LphmLinearConfig, ParameterCount,
    PhmRules,
};
use phm_nn::optim::{Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
use phm_nn::prelude::*;

/// PhmLinear 8 → 4, LphmLinear 4 → 12 (rank 1), PhmLinear 12 → 6, all on `rules`.
fn shared_model(rules: &PhmRules<f64>, seed: u64) -> Sequential<f64> {
    let mut r = rng(seed);
    let full = rules.full_param().expect("full rules");
    Sequential::new()
        .add(
            PhmLinearConfig::new(8, 4, 2)
                .init_shared(full, &mut r)
                .unwrap(),
        )
        .add(Tanh::new())
        .add(
            LphmLinearConfig::new(4, 12, 2, 1)
                .init_shared(rules, &mut r)
                .unwrap(),
        )
        .add(Tanh::new())
        .add(
            PhmLinearConfig::new(12, 6, 2)
                .init_shared(full, &mut r)
                .unwrap(),
        )
}

fn learned_rules(n: usize, seed: u64) -> PhmRules<f64> {
    PhmRules::new(n, Rule::Learned(Init::UnitFibers), &mut rng(seed)).unwrap()
}

/// One forward/backward of `model` on fixed data with a fixed output gradient.
fn step_grads(model: &mut Sequential<f64>, seed: u64) {
    let x = uniform2(&mut rng(seed), 5, 8).into_dyn();
    model.zero_grad();
    let y = model.forward(x.view());
    let c = uniform_d(&mut rng(seed + 100), y.shape());
    model.backward(c.view());
}

#[test]
fn shared_rules_are_listed_and_counted_once() {
    let rules = learned_rules(2, 1);
    let model = shared_model(&rules, 2);
    let paths: Vec<String> = params(&model).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        ["0.rules", "0.blocks", "0.bias", "2.u", "2.v", "2.bias", "4.blocks", "4.bias"]
    );
    let blocks = 8 * 4 / 2 + 4 + (4 + 12) + 12 + 12 * 6 / 2 + 6;
    assert_eq!(model.num_parameters(), 8 + blocks);
    let mut visits = 0;
    model.visit_params(&mut |_, p| visits += usize::from(p.shape() == [2, 2, 2]));
    assert_eq!(visits, 3, "the shared tensor is visited at every layer");
}

#[test]
fn shared_rules_gradient_is_the_sum_over_layers_and_exact() {
    let rules = learned_rules(2, 3);
    let mut model = shared_model(&rules, 4);
    step_grads(&mut model, 5);
    let shared_grad = rules.full_param().unwrap().grad();

    // The same model with a private copy of the rules in each layer: the sum of their
    // gradients is the shared gradient.
    let mut split = phm_nn::module::clone_model(&model);
    let mut copies = Vec::new();
    for_each_mut::<f64, PhmLinear<f64>>(&mut split, &mut |_, l| {
        let own = l.rules_param().clone();
        *l = PhmLinear::from_params(
            own.share(),
            l.blocks_param().share(),
            l.bias_param().map(|b| b.share()),
        )
        .unwrap();
        copies.push(own);
    });
    for_each_mut::<f64, LphmLinear<f64>>(&mut split, &mut |_, l| {
        let own = PhmRules::full(l.rules().full_param().unwrap().clone()).unwrap();
        *l = LphmLinear::from_params(
            &own,
            l.u_param().share(),
            l.v_param().share(),
            l.bias_param().map(|b| b.share()),
        )
        .unwrap();
        copies.push(own.full_param().unwrap().share());
    });
    assert_eq!(params(&split).len(), params(&model).len() + 2);
    step_grads(&mut split, 5);
    let sum = copies
        .iter()
        .fold(ArrayD::zeros(shared_grad.raw_dim()), |acc, p| {
            acc + p.grad()
        });
    for (a, b) in shared_grad.iter().zip(sum.iter()) {
        assert_close(*a, *b, 1e-12, "shared dA = Σ layers' dA");
    }
    // And it is the exact gradient (finite differences through all three layers).
    check_gradients(&mut model, &uniform2(&mut rng(6), 3, 8), 7, 1e-6);
}

/// A module holding only `rules` as a trainable tensor (the blocks frozen), to apply "one
/// update with the summed gradient".
fn rules_only(rules: &phm_nn::Param<f64>) -> PhmLinear<f64> {
    let blocks = phm_nn::Param::frozen(ndarray::Array3::<f64>::zeros((2, 1, 1)).into_dyn());
    PhmLinear::from_params(rules.share(), blocks, None).unwrap()
}

fn check_once_per_step(mut make: impl FnMut() -> Box<dyn Optimizer<f64>>, name: &str) {
    let rules = learned_rules(2, 8);
    let mut model = shared_model(&rules, 9);
    let shared = rules.full_param().unwrap().share();
    let reference = phm_nn::Param::new(shared.value());
    let mut ref_module = rules_only(&reference);
    let (mut opt, mut ref_opt) = (make(), make());
    let initial = shared.value();
    for step in 0..3 {
        step_grads(&mut model, 10 + step);
        let g = shared.grad();
        ref_module.zero_grad();
        reference.write().grad_mut().assign(&g);
        opt.step(&mut model).unwrap();
        ref_opt.step(&mut ref_module).unwrap();
        let (got, want) = (shared.value(), reference.value());
        for (a, b) in got.iter().zip(want.iter()) {
            assert_close(*a, *b, 1e-13, &format!("{name} step {step}: once per step"));
        }
    }
    assert_ne!(shared.value(), initial, "{name}: the rules moved");
}

#[test]
fn shared_rules_are_updated_once_per_step_by_every_optimizer() {
    check_once_per_step(
        || {
            Box::new(
                Sgd::new(SgdConfig {
                    lr: 0.1,
                    momentum: 0.9,
                    ..SgdConfig::default()
                })
                .unwrap(),
            )
        },
        "Sgd",
    );
    check_once_per_step(
        || {
            Box::new(
                Adam::new(AdamConfig {
                    lr: 0.01,
                    ..AdamConfig::default()
                })
                .unwrap(),
            )
        },
        "Adam",
    );
    check_once_per_step(
        || {
            Box::new(
                AdamW::new(AdamWConfig {
                    lr: 0.01,
                    weight_decay: 0.1,
                    ..AdamWConfig::default()
                })
                .unwrap(),
            )
        },
        "AdamW",
    );
}

#[test]
fn fixed_algebra_rules_shared_stay_fixed_and_are_counted_as_frozen_once() {
    let mut r = rng(11);
    let quat = PhmRules::<f64>::new(4, Rule::Fixed(Algebra::Quaternion), &mut r).unwrap();
    let mut model = Sequential::new()
        .add(
            PhmLinearConfig::new(8, 4, 4)
                .init_shared(quat.full_param().unwrap(), &mut r)
                .unwrap(),
        )
        .add(Tanh::new())
        .add(
            LphmLinearConfig::new(4, 16, 4, 2)
                .init_shared(&quat, &mut r)
                .unwrap(),
        );
    assert_eq!(model.num_frozen_parameters(), 64);
    assert_eq!(model.num_parameters(), 8 * 4 / 4 + 4 + 2 * (4 + 16) + 16);
    let before = quat.matrices();
    let x = uniform2(&mut r, 3, 8);
    check_gradients(&mut model, &x, 12, 1e-6);
    let mut opt = Adam::new(AdamConfig::default()).unwrap();
    model.forward(x.view().into_dyn());
    model.backward(ArrayD::ones(vec![3, 16]).view());
    opt.step(&mut model).unwrap();
    assert_eq!(quat.matrices(), before);
}

#[test]
fn factorized_rules_shared_by_layers_of_different_sizes() {
    let mut r = rng(13);
    let rules = PhmRules::<f64>::new_factorized(3, None, &mut r).unwrap();
    let mut model = Sequential::new()
        .add(
            LphmLinearConfig::new(6, 9, 3, 1)
                .init_shared(&rules, &mut r)
                .unwrap(),
        )
        .add(Tanh::new())
        .add(
            LphmLinearConfig::new(9, 3, 3, 2)
                .init_shared(&rules, &mut r)
                .unwrap(),
        );
    assert_eq!(
        model.num_parameters(),
        2 * 9 + (6 + 9) + 9 + 2 * (9 + 3) + 3
    );
    for strategy in [Strategy::Materialized, Strategy::Factored] {
        for_each_mut::<f64, LphmLinear<f64>>(&mut model, &mut |_, l| l.set_strategy(strategy));
        check_gradients(&mut model, &uniform2(&mut r, 4, 6), 14, 1e-6);
    }
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.5,
        ..SgdConfig::default()
    })
    .unwrap();
    let (a0, b0) = rules.factors().unwrap();
    step_like(&mut model, 6, 3);
    let (ga, gb) = {
        let ps = params(&model);
        (ps[0].1.grad(), ps[1].1.grad())
    };
    opt.step(&mut model).unwrap();
    let (a1, b1) = rules.factors().unwrap();
    for ((x0, x1), g) in a0.iter().zip(a1.iter()).zip(ga.iter()) {
        assert_close(*x1, x0 - 0.5 * g, 1e-14, "left factor: one SGD update");
    }
    for ((x0, x1), g) in b0.iter().zip(b1.iter()).zip(gb.iter()) {
        assert_close(*x1, x0 - 0.5 * g, 1e-14, "right factor: one SGD update");
    }
}

fn step_like(model: &mut Sequential<f64>, width: usize, out: usize) {
    let x = uniform2(&mut rng(20), 4, width).into_dyn();
    model.zero_grad();
    model.forward(x.view());
    model.backward(ArrayD::ones(vec![4, out]).view());
}

const KINDS: [Projection; 3] = [
    Projection::Dense,
    Projection::phm(4),
    Projection::low_rank(4, 2),
];

#[test]
fn fresh_adapters_are_near_the_identity() {
    let mut r = rng(21);
    let h = uniform_d(&mut r, &[16, 32]);
    for kind in KINDS {
        let a = AdapterConfig::new(32, 8, kind)
            .init::<f64, _>(&mut r)
            .unwrap();
        let dev = (&a.infer(h.view()) - &h)
            .iter()
            .fold(0.0f64, |m, e| m.max(e.abs()));
        assert!(dev < 1e-3, "{kind:?}: {dev}");
        assert!(dev > 0.0, "{kind:?}: the up-projection is not exactly zero");
        let exact = AdapterConfig::new(32, 8, kind)
            .with_up_init_std(0.0)
            .init::<f64, _>(&mut r)
            .unwrap();
        assert_eq!(
            exact.infer(h.view()),
            h,
            "{kind:?} with std 0 is the identity"
        );
        // Not the identity once the up-projection is of ordinary size.
        let big = AdapterConfig::new(32, 8, kind)
            .with_up_init_std(0.3)
            .init::<f64, _>(&mut r)
            .unwrap();
        let dev = (&big.infer(h.view()) - &h)
            .iter()
            .fold(0.0f64, |m, e| m.max(e.abs()));
        assert!(dev > 0.05, "{kind:?}: {dev}");
    }
}

#[test]
fn adapter_gradients_on_both_kernels() {
    let mut r = rng(22);
    for kind in KINDS {
        for strategy in [Strategy::Materialized, Strategy::Factored] {
            let mut a = AdapterConfig::new(8, 4, kind)
                .with_up_init_std(0.5)
                .init::<f64, _>(&mut r)
                .unwrap();
            for_each_mut::<f64, LphmLinear<f64>>(&mut a, &mut |_, l| l.set_strategy(strategy));
            for_each_mut::<f64, PhmLinear<f64>>(&mut a, &mut |_, l| l.set_strategy(strategy));
            let x = uniform_d(&mut r, &[2, 3, 8]);
            common::check_gradients_d(&mut a, &x, 23, 1e-6);
        }
    }
}

fn base_model(r: &mut StdRng) -> Sequential<f64> {
    Sequential::new()
        .add(LinearConfig::new(16, 12).init(r).unwrap())
        .add(Relu::new())
        .add(LinearConfig::new(12, 12).init(r).unwrap())
        .add(Relu::new())
        .add(LinearConfig::new(12, 3).init(r).unwrap())
}

#[test]
fn insert_freeze_count_and_train_only_the_adapters() {
    let mut r = rng(24);
    let mut model = base_model(&mut r);
    let base_total = model.num_parameters();
    freeze(&model);
    assert_eq!(model.num_parameters(), 0);
    let cfg = AdapterConfig::new(12, 4, Projection::low_rank(4, 1));
    let rules = cfg.new_rules::<f64, _>(&mut r).unwrap();
    let at = insert_adapters(&mut model, &[3, 1], |_| cfg.init_shared(&rules, &mut r)).unwrap();
    assert_eq!(at, [2, 5]);
    assert_eq!(model.len(), 7);
    assert!(model.get::<Adapter<f64>>(2).is_some() && model.get::<Adapter<f64>>(5).is_some());
    let paths: Vec<String> = params(&model).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        &paths[2..6],
        ["2.down.rules", "2.down.u", "2.down.v", "2.down.bias"]
    );
    let per_adapter = (12 + 4) + 4 + (4 + 12) + 12;
    let count = ParameterCount::of(&model);
    assert_eq!(
        count,
        ParameterCount {
            trainable: 64 + 2 * per_adapter,
            frozen: base_total
        }
    );
    assert!(
        (count.trainable_percent() - 100.0 * count.trainable as f64 / count.total() as f64).abs()
            < 1e-12
    );

    // A fresh adapted model computes (almost) what the base computed.
    let x = uniform_d(&mut r, &[5, 16]);
    let base = base_model(&mut rng(24));
    let dev = (&model.infer(x.view()) - &base.infer(x.view()))
        .iter()
        .fold(0.0f64, |m, e| m.max(e.abs()));
    assert!(dev < 1e-3, "{dev}");

    // Training moves the adapters and the rules, nothing frozen.
    let frozen: Vec<(String, ArrayD<f64>)> = params(&model)
        .into_iter()
        .filter(|(_, p)| !p.is_trainable())
        .map(|(n, p)| (n, p.value()))
        .collect();
    let rules_before = rules.matrices();
    let mut opt = Adam::new(AdamConfig {
        lr: 0.01,
        ..AdamConfig::default()
    })
    .unwrap();
    for _ in 0..3 {
        model.zero_grad();
        let y = model.forward(x.view());
        let loss = cross_entropy(y.view(), &[0, 1, 2, 0, 1]).unwrap();
        model.backward(loss.grad.view());
        opt.step(&mut model).unwrap();
    }
    for (name, before) in frozen {
        let now = params(&model)
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
            .value();
        assert_eq!(now, before, "{name} is frozen");
    }
    assert_ne!(rules.matrices(), rules_before);

    // A clone keeps one shared rule set (counted once) and shares nothing with the original.
    let copy = model.clone();
    assert_eq!(ParameterCount::of(&copy), count);
    let copied_rules: Vec<_> = params(&copy)
        .into_iter()
        .filter(|(p, _)| p.ends_with("rules"))
        .collect();
    assert_eq!(copied_rules.len(), 1);
    assert!(!copied_rules[0]
        .1
        .is_shared_with(rules.full_param().unwrap()));
}

#[test]
fn insertion_and_config_errors() {
    let mut r = rng(25);
    let mut model = base_model(&mut r);
    let cfg = AdapterConfig::new(12, 4, Projection::Dense);
    let err = insert_adapters(&mut model, &[5], |_| cfg.init(&mut r)).unwrap_err();
    assert!(
        err.to_string()
            .contains("layer 5 is past the end (5 layers)"),
        "{err}"
    );
    let err = insert_adapters(&mut model, &[1, 1], |_| cfg.init(&mut r)).unwrap_err();
    assert!(err.to_string().contains("layer 1 is listed twice"), "{err}");
    assert_eq!(model.len(), 5);
    let err = AdapterConfig::new(12, 6, Projection::phm(4))
        .init::<f64, _>(&mut r)
        .unwrap_err();
    assert_eq!(err.to_string(), "out_features 6 is not divisible by n = 4");
    let fact = PhmRules::<f64>::new_factorized(4, None, &mut r).unwrap();
    let err = AdapterConfig::new(12, 4, Projection::phm(4))
        .init_shared(&fact, &mut r)
        .unwrap_err();
    assert!(err.to_string().contains("factorized"), "{err}");
    assert!(AdapterConfig::new(12, 4, Projection::low_rank(4, 1))
        .init_shared(&fact, &mut r)
        .is_ok());
    let err = AdapterConfig::new(12, 4, Projection::low_rank(2, 1))
        .init_shared(&fact, &mut r)
        .unwrap_err();
    assert!(
        err.to_string().contains("n = 4") && err.to_string().contains("n = 2"),
        "{err}"
    );
    let err = AdapterConfig::new(12, 4, Projection::Dense)
        .with_up_init_std(-1.0)
        .init::<f64, _>(&mut r)
        .unwrap_err();
    assert!(err.to_string().contains("-1"), "{err}");
    let err = Adapter::new(
        12,
        LinearConfig::new(12, 4).init::<f64, _>(&mut r).unwrap(),
        Relu::new(),
        LinearConfig::new(4, 10).init::<f64, _>(&mut r).unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("[1, 10]"), "{err}");
}

#[test]
fn summary_of_an_adapted_model_lists_the_adapters() {
    let mut r = rng(26);
    let mut model = base_model(&mut r);
    freeze(&model);
    let cfg = AdapterConfig::new(12, 4, Projection::low_rank(4, 1));
    let rules = cfg.new_rules::<f64, _>(&mut r).unwrap();
    insert_adapters(&mut model, &[1], |_| cfg.init_shared(&rules, &mut r)).unwrap();
    let text = summary(&model, &[2, 16]).to_string();
    assert!(text.contains("2: Adapter(12 → 4 → 12)"), "{text}");
    assert!(text.contains("(+64 shared)"), "{text}");
    assert!(
        text.contains("LphmLinear(4 → 12, n = 4, rank 1, learned rules)"),
        "{text}"
    );
}

#[test]
fn rules_are_sampled_with_phm_rules() {
    let mut r = rng(27);
    // The tensor PhmRules::new wraps is the one Rule::sample draws from the same generator.
    let sampled: Param<f64> = Rule::Learned(Init::UnitFibers)
        .sample(4, &mut rng(5))
        .unwrap();
    let rules = PhmRules::<f64>::new(4, Rule::Learned(Init::UnitFibers), &mut rng(5)).unwrap();
    assert_eq!(rules.full_param().unwrap().value(), sampled.value());
    let quat: Param<f64> = Rule::Fixed(Algebra::Quaternion).sample(4, &mut r).unwrap();
    assert!(!quat.is_trainable());
    assert_eq!(
        Rule::Learned(Init::UnitFibers)
            .sample::<f64, _>(0, &mut r)
            .unwrap_err(),
        PhmError::ZeroN
    );
    let err = Rule::Fixed(Algebra::Quaternion)
        .sample::<f64, _>(2, &mut r)
        .unwrap_err();
    assert!(err.to_string().contains("dimension 4"), "{err}");
}

#[test]
fn scaled_projections_have_the_asked_weight_spread_and_a_zero_bias() {
    let mut r = rng(28);
    let (d, k, std) = (64, 64, 0.02);
    for projection in [
        Projection::Dense,
        Projection::phm(4),
        Projection::low_rank(4, 4),
    ] {
        let layer = projection
            .build_scaled::<f64, _>(d, k, std, None, &mut r)
            .unwrap();
        // The layer's map on the identity: row j is W's column j, plus the bias (zero).
        let eye = ArrayD::from_shape_fn(vec![d, d], |i| f64::from(u8::from(i[0] == i[1])));
        let w = layer.infer(eye.view());
        let zero = layer.infer(ArrayD::zeros(vec![1, d]).view());
        assert!(zero.iter().all(|&b| b == 0.0), "{projection:?}");
        let var = w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64;
        assert!(
            (var.sqrt() / std - 1.0).abs() < 0.25,
            "{projection:?}: std {} for {std}",
            var.sqrt()
        );
    }
    assert!(Projection::Dense
        .build_scaled::<f64, _>(4, 4, f64::NAN, None, &mut r)
        .is_err());
}
