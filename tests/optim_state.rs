//! Optimizer state by parameter identity: one optimizer over two models never mixes state,
//! and the state exports and imports by path.
mod common;

use common::{rng, uniform2};
use ndarray::ArrayD;
use phm_nn::module::params;
use phm_nn::optim::OptimizerState;
use phm_nn::prelude::*;

/// Two models with the same architecture (so the same paths) and different weights.
fn model(seed: u64) -> Sequential<f64> {
    let mut r = rng(seed);
    Sequential::new()
        .add(
            PhmLinearConfig::new(4, 8, 2)
                .init::<f64, _>(&mut r)
                .unwrap(),
        )
        .add(Tanh::new())
        .add(LinearConfig::new(8, 3).init::<f64, _>(&mut r).unwrap())
}

fn step(m: &mut Sequential<f64>, opt: &mut dyn Optimizer<f64>, seed: u64) {
    let x = uniform2(&mut rng(seed), 5, 4).into_dyn();
    m.zero_grad();
    let y = m.forward(x.view().into_dyn());
    let loss = mse(y.view(), ArrayD::zeros(y.raw_dim()).view());
    m.backward(loss.grad.view().into_dyn());
    opt.step(m).unwrap();
}

fn values(m: &Sequential<f64>) -> Vec<ArrayD<f64>> {
    params(m).iter().map(|(_, p)| p.value()).collect()
}

/// Makes a fresh optimizer.
type Make = Box<dyn Fn() -> Box<dyn Optimizer<f64>>>;

fn optimizers() -> Vec<(&'static str, Make)> {
    vec![
        (
            "sgd momentum",
            Box::new(|| {
                Box::new(
                    Sgd::new(SgdConfig {
                        lr: 0.1,
                        momentum: 0.9,
                        ..SgdConfig::default()
                    })
                    .unwrap(),
                )
            }),
        ),
        (
            "adam",
            Box::new(|| {
                Box::new(
                    Adam::new(AdamConfig {
                        lr: 0.01,
                        ..AdamConfig::default()
                    })
                    .unwrap(),
                )
            }),
        ),
        (
            "adamw amsgrad",
            Box::new(|| {
                Box::new(
                    AdamW::new(AdamWConfig {
                        amsgrad: true,
                        ..AdamWConfig::default()
                    })
                    .unwrap(),
                )
            }),
        ),
    ]
}

#[test]
fn one_optimizer_over_two_models_equals_one_optimizer_each() {
    for (name, make) in optimizers() {
        let (mut a, mut b) = (model(1), model(2));
        let (mut a_ref, mut b_ref) = (model(1), model(2));
        let mut shared = make();
        let (mut own_a, mut own_b) = (make(), make());
        for k in 0..5 {
            step(&mut a, shared.as_mut(), 10 + k);
            step(&mut b, shared.as_mut(), 20 + k);
            step(&mut a_ref, own_a.as_mut(), 10 + k);
            step(&mut b_ref, own_b.as_mut(), 20 + k);
        }
        assert_eq!(values(&a), values(&a_ref), "{name}: model a");
        assert_eq!(values(&b), values(&b_ref), "{name}: model b");
    }
}

#[test]
fn state_exports_by_path_and_resumes_exactly() {
    for (name, make) in optimizers() {
        let mut straight = model(3);
        let mut opt = make();
        for k in 0..6 {
            step(&mut straight, opt.as_mut(), k);
        }

        let mut first = model(3);
        let mut opt1 = make();
        for k in 0..3 {
            step(&mut first, opt1.as_mut(), k);
        }
        let state = opt1.state(&first);
        // A fresh model of the same architecture (other ids), the values copied by path.
        let resumed = model(99);
        for ((_, to), (_, from)) in params(&resumed).iter().zip(params(&first)) {
            to.set_value(from.value().view()).unwrap();
        }
        let mut resumed = resumed;
        let mut opt2 = make();
        opt2.load_state(&resumed, &state).unwrap();
        assert_eq!(opt2.state(&resumed), state, "{name}: state round trip");
        for k in 3..6 {
            step(&mut resumed, opt2.as_mut(), k);
        }
        assert_eq!(
            values(&resumed),
            values(&straight),
            "{name}: resumed = straight"
        );
    }
}

#[test]
fn state_names_follow_the_paths() {
    let mut m = model(4);
    let mut opt = Adam::new(AdamConfig::default()).unwrap();
    step(&mut m, &mut opt, 0);
    let state = opt.state(&m);
    let names: Vec<&String> = state.tensors.keys().collect();
    assert!(names.contains(&&"0.rules.exp_avg".to_string()), "{names:?}");
    assert!(
        names.contains(&&"2.weight.exp_avg_sq".to_string()),
        "{names:?}"
    );
    assert_eq!(state.scalars["0.blocks.step"], 1.0);
    assert_eq!(state.scalars["hyper.lr"], 1e-3);
}

#[test]
fn bad_states_are_refused_and_change_nothing() {
    let mut m = model(5);
    let mut opt = Adam::new(AdamConfig::default()).unwrap();
    step(&mut m, &mut opt, 0);
    let good = opt.state(&m);

    let mut wrong_shape = good.clone();
    wrong_shape
        .tensors
        .insert("0.rules.exp_avg".into(), ArrayD::zeros(IxDyn(&[3])));
    let err = opt.load_state(&m, &wrong_shape).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid optimizer state: entry `0.rules.exp_avg` has shape [3], expected [2, 2, 2]"
    );

    let mut extra = good.clone();
    extra.scalars.insert("7.weight.step".into(), 1.0);
    let err = opt.load_state(&m, &extra).unwrap_err();
    assert!(
        err.to_string()
            .contains("`7.weight.step` matches no parameter"),
        "{err}"
    );

    let mut missing = good.clone();
    missing.tensors.remove("2.bias.exp_avg_sq");
    let err = opt.load_state(&m, &missing).unwrap_err();
    assert!(
        err.to_string().contains("`2.bias.exp_avg_sq` is missing"),
        "{err}"
    );

    let mut bad_lr = good.clone();
    bad_lr.scalars.insert("hyper.lr".into(), -1.0);
    assert!(opt.load_state(&m, &bad_lr).is_err());

    assert!(opt.load_state(&m, &OptimizerState::default()).is_err());
    assert_eq!(opt.state(&m), good, "failed loads changed nothing");
}
