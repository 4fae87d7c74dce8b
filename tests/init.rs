//! Init: empirical variances match the documented targets (fixed seeds, statistical tolerance).
mod common;

use common::rng;
use phm_nn::algebra::Algebra;
use phm_nn::init::{Fans, Init};
use phm_nn::{LinearConfig, PhmLinearConfig, Rule};

fn mean_var(xs: impl Iterator<Item = f64>) -> (f64, f64, usize) {
    let v: Vec<f64> = xs.collect();
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
    (m, var, v.len())
}

#[test]
fn schemes_have_their_documented_variance() {
    let fans = Fans::new(300, 100);
    let shape = [200, 300];
    for init in [
        Init::TorchLinear,
        Init::GlorotUniform { gain: 1.0 },
        Init::GlorotUniform { gain: 2f64.sqrt() },
        Init::GlorotNormal { gain: 1.0 },
        Init::Normal { std: 0.02 },
        Init::Uniform { bound: 0.5 },
    ] {
        let a = init.sample::<f64, _>(&shape, fans, &mut rng(1)).unwrap();
        let (mean, var, _) = mean_var(a.iter().copied());
        let target = init.variance(&shape, fans);
        // 60 000 samples: the relative standard error of a variance is below 1%.
        assert!(
            (var / target - 1.0).abs() < 0.03,
            "{init:?}: variance {var} vs {target}"
        );
        assert!(mean.abs() < 0.03 * target.sqrt(), "{init:?}: mean {mean}");
    }
    // Independent formulas for the targets.
    assert_eq!(Init::TorchLinear.variance(&shape, fans), 1.0 / 900.0);
    assert_eq!(
        Init::GlorotNormal { gain: 1.0 }.variance(&shape, fans),
        2.0 / 400.0
    );
    let c = Init::Constant(0.25)
        .sample::<f32, _>(&[3], fans, &mut rng(0))
        .unwrap();
    assert!(c.iter().all(|v| *v == 0.25));
}

#[test]
fn unit_fibers_are_unit_vectors() {
    let a = Init::UnitFibers
        .sample::<f64, _>(&[5, 5, 5], Fans::new(5, 5), &mut rng(2))
        .unwrap();
    for fiber in a.lanes(ndarray::Axis(0)) {
        let norm2: f64 = fiber.iter().map(|v| v * v).sum();
        assert!((norm2 - 1.0).abs() < 1e-12);
    }
}

#[test]
fn default_phm_weight_has_dense_default_variance() {
    // Target: PyTorch nn.Linear default, Var(W) = 1/(3·in_features), for every n and for
    // learned and fixed rules.
    let (d, k) = (256, 128);
    let target = 1.0 / (3.0 * d as f64);
    let dense = LinearConfig::new(d, k).init::<f64, _>(&mut rng(0)).unwrap();
    let (_, var, _) = mean_var(dense.weight().iter().copied());
    assert!((var / target - 1.0).abs() < 0.03, "dense {var} vs {target}");
    let cases = [
        (1, Rule::Learned(Init::UnitFibers)),
        (2, Rule::Learned(Init::UnitFibers)),
        (4, Rule::Learned(Init::UnitFibers)),
        (8, Rule::Learned(Init::UnitFibers)),
        (4, Rule::Fixed(Algebra::Quaternion)),
        (8, Rule::Fixed(Algebra::Octonion)),
    ];
    for (n, rule) in cases {
        let layer = PhmLinearConfig::new(d, k, n)
            .with_rule(rule)
            .init::<f64, _>(&mut rng(n as u64))
            .unwrap();
        let (mean, var, count) = mean_var(layer.weight().iter().copied());
        assert_eq!(count, d * k);
        assert!(
            (var / target - 1.0).abs() < 0.05,
            "n={n} {rule:?}: Var(W) {var} vs {target}"
        );
        assert!(mean.abs() < 0.05 * target.sqrt(), "n={n}: mean {mean}");
    }
}

#[test]
fn glorot_rules_match_in_expectation() {
    // Independent Glorot rules have Var(A) = 1/n, so Var(W) = Var(S) on average over draws.
    let (d, k, n) = (64, 64, 4);
    let target = 1.0 / (3.0 * d as f64);
    let mut pooled = Vec::new();
    for seed in 0..40 {
        let layer = PhmLinearConfig::new(d, k, n)
            .with_rule(Rule::Learned(Init::GlorotNormal { gain: 1.0 }))
            .init::<f64, _>(&mut rng(100 + seed))
            .unwrap();
        pooled.extend(layer.weight().iter().copied());
    }
    let (_, var, _) = mean_var(pooled.into_iter());
    assert!((var / target - 1.0).abs() < 0.08, "{var} vs {target}");
}
