//! LphmLinear (low-rank PHM, Compacter): finite-difference gradients on both kernels with
//! full, factorized and fixed rules; equality with the PhmLinear built from `S = U Vᵀ`
//! (forward and backward, property test); counts, the kernel rule, init, errors, panics.
mod common;

use common::{check_gradients, check_gradients_d, rng, uniform2, uniform_d, xorshift};
use ndarray::{Array1, Array2, Array3, ArrayD, Axis, Ix3};
use phm_nn::algebra::Algebra;
use phm_nn::kernels::low_rank::{build_blocks, LowRankShape, FACTORED_SLOWDOWN};
use phm_nn::nn::{LphmLinear, LphmLinearConfig, PhmRules};
use phm_nn::{Init, Kernel, Module, Param, PhmError, PhmLinear, Rule, Strategy};
use proptest::prelude::*;

const KERNELS: [Strategy; 2] = [Strategy::Materialized, Strategy::Factored];

fn arr3(seed: u64, dim: (usize, usize, usize)) -> Array3<f64> {
    xorshift(seed, dim)
}

/// A layer with uniform random parameters: full, factorized or quaternion rules.
fn layer(
    rules: &str,
    (d, k, n, r): (usize, usize, usize, usize),
    bias: bool,
    seed: u64,
) -> LphmLinear<f64> {
    let rules = match rules {
        "full" => PhmRules::full(Param::new(arr3(seed, (n, n, n)).into_dyn())).unwrap(),
        "factorized" => PhmRules::factorized(
            Param::new(xorshift(seed + 1, (n, n)).into_dyn()),
            Param::new(xorshift(seed + 2, (n, n)).into_dyn()),
        )
        .unwrap(),
        _ => PhmRules::new(n, Rule::Fixed(Algebra::Quaternion), &mut rng(0)).unwrap(),
    };
    let u = Param::new(arr3(seed + 3, (n, k / n, r)).into_dyn());
    let v = Param::new(arr3(seed + 4, (n, d / n, r)).into_dyn());
    let b = bias.then(|| Param::new(xorshift(seed + 5, k).into_dyn()));
    LphmLinear::from_params(&rules, u, v, b).unwrap()
}

#[test]
fn gradients_full_rules_both_kernels() {
    for (n, r) in [(1, 1), (2, 1), (2, 3), (4, 2)] {
        for bias in [true, false] {
            for strategy in KERNELS {
                let mut l =
                    layer("full", (2 * n, 3 * n, n, r), bias, n as u64).with_strategy(strategy);
                let x = uniform2(&mut rng(9), 3, 2 * n);
                check_gradients(&mut l, &x, 7, 1e-6);
            }
        }
    }
}

#[test]
fn gradients_factorized_rules_both_kernels() {
    for (n, r) in [(2, 1), (3, 2), (4, 1)] {
        for strategy in KERNELS {
            let mut l = layer("factorized", (2 * n, n, n, r), true, 3).with_strategy(strategy);
            let x = uniform_d(&mut rng(5), &[2, 2, 2 * n]); // rank-3 input
            check_gradients_d(&mut l, &x, 11, 1e-6);
        }
    }
}

#[test]
fn gradients_fixed_rules_and_frozen_factors() {
    for strategy in KERNELS {
        let mut l = layer("quaternion", (8, 4, 4, 2), true, 4).with_strategy(strategy);
        assert!(!l.rules().is_trainable());
        let x = uniform2(&mut rng(1), 2, 8);
        check_gradients(&mut l, &x, 2, 1e-6); // also checks the frozen rules get nothing
        l.v_param().set_trainable(false);
        check_gradients(&mut l, &x, 3, 1e-6);
    }
}

/// Every output and gradient of one forward/backward.
fn lphm_run(
    a: &Array3<f64>,
    u: &Array3<f64>,
    v: &Array3<f64>,
    b: &Array1<f64>,
    x: &Array2<f64>,
    g: &Array2<f64>,
    strategy: Strategy,
) -> (Array2<f64>, Array2<f64>, Vec<ArrayD<f64>>) {
    let mut l = LphmLinear::from_parts(a.clone(), u.clone(), v.clone(), Some(b.clone()))
        .unwrap()
        .with_strategy(strategy);
    let y = l.forward(x.view().into_dyn());
    let dx = l.backward(g.view().into_dyn());
    let mut grads = Vec::new();
    l.visit_params(&mut |_, p| grads.push(p.grad()));
    (
        y.into_dimensionality().unwrap(),
        dx.into_dimensionality().unwrap(),
        grads,
    )
}

fn max_diff<D: ndarray::Dimension>(a: &ndarray::Array<f64, D>, b: &ndarray::Array<f64, D>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 36, ..ProptestConfig::default() })]

    /// LPHM equals PhmLinear::from_parts with S = U Vᵀ, forward and backward, on both
    /// kernels; ranks from 1 to beyond full (r ≥ min(k, d)/n is allowed).
    #[test]
    fn lphm_equals_phm_with_product_blocks(
        n in prop::sample::select(vec![1usize, 2, 3, 4]),
        p in 1usize..4,
        q in 1usize..4,
        r in 1usize..5,
        batch in prop::sample::select(vec![1usize, 2, 5]),
        seed in any::<u64>(),
    ) {
        let (k, d) = (n * p, n * q);
        let a = arr3(seed, (n, n, n));
        let u = arr3(seed ^ 1, (n, p, r));
        let v = arr3(seed ^ 2, (n, q, r));
        let b: Array1<f64> = xorshift(seed ^ 3, k);
        let x: Array2<f64> = xorshift(seed ^ 4, (batch, d));
        let g: Array2<f64> = xorshift(seed ^ 5, (batch, k));
        let s = build_blocks(u.view(), v.view());

        let mut phm = PhmLinear::from_parts(a.clone(), s.clone(), Some(b.clone())).unwrap();
        let y_ref = phm.forward(x.view().into_dyn()).into_dimensionality::<ndarray::Ix2>().unwrap();
        let dx_ref = phm.backward(g.view().into_dyn()).into_dimensionality::<ndarray::Ix2>().unwrap();
        let da_ref = phm.rules_param().grad();
        let ds_ref = phm.blocks_param().grad().into_dimensionality::<Ix3>().unwrap();
        let db_ref = phm.bias_param().unwrap().grad();
        // dU_i = dS_i V_i, dV_i = dS_iᵀ U_i.
        let mut du_ref = Array3::zeros(u.raw_dim());
        let mut dv_ref = Array3::zeros(v.raw_dim());
        for i in 0..n {
            du_ref.index_axis_mut(Axis(0), i).assign(&ds_ref.index_axis(Axis(0), i).dot(&v.index_axis(Axis(0), i)));
            dv_ref.index_axis_mut(Axis(0), i).assign(&ds_ref.index_axis(Axis(0), i).t().dot(&u.index_axis(Axis(0), i)));
        }
        for strategy in KERNELS {
            let (y, dx, grads) = lphm_run(&a, &u, &v, &b, &x, &g, strategy);
            let tol = 1e-10;
            prop_assert!(max_diff(&y, &y_ref) < tol, "{strategy:?} forward");
            prop_assert!(max_diff(&dx, &dx_ref) < tol, "{strategy:?} dX");
            prop_assert!(max_diff(&grads[0], &da_ref) < tol, "{strategy:?} dA");
            prop_assert!(max_diff(&grads[1], &du_ref.clone().into_dyn()) < tol, "{strategy:?} dU");
            prop_assert!(max_diff(&grads[2], &dv_ref.clone().into_dyn()) < tol, "{strategy:?} dV");
            prop_assert!(max_diff(&grads[3], &db_ref) < tol, "{strategy:?} db");
        }
    }
}

#[test]
fn full_rank_layer_reaches_any_phm_layer() {
    // r = min(p, q): any blocks S_i factor as U_i V_iᵀ (U_i = S_i, V_i = I when q ≤ p).
    let (n, p, q) = (2, 3, 2);
    let a = arr3(1, (n, n, n));
    let s = arr3(2, (n, p, q));
    let mut v = Array3::zeros((n, q, q));
    for i in 0..n {
        v.index_axis_mut(Axis(0), i).assign(&Array2::eye(q));
    }
    let lphm = LphmLinear::from_parts(a.clone(), s.clone(), v, None).unwrap();
    assert!(lphm.shape().is_full_rank());
    let phm = PhmLinear::from_parts(a, s, None).unwrap();
    assert!(max_diff(&lphm.weight(), &phm.weight()) < 1e-14);
}

#[test]
fn parameter_counts_follow_the_formulas() {
    let mut r = rng(0);
    for (d, k, n, rank) in [(16, 8, 2, 1), (12, 24, 4, 3), (9, 6, 3, 5)] {
        let shape = LowRankShape::new(d, k, n, rank).unwrap();
        assert_eq!(
            shape.num_weight_parameters(),
            n * n * n + n * rank * (k + d) / n
        );
        let full = LphmLinearConfig::new(d, k, n, rank)
            .init::<f64, _>(&mut r)
            .unwrap();
        assert_eq!(full.num_parameters(), n.pow(3) + rank * (k + d) + k);
        let fact = LphmLinearConfig::new(d, k, n, rank)
            .with_factorized_rules(true)
            .with_bias(false)
            .init::<f64, _>(&mut r)
            .unwrap();
        assert_eq!(fact.num_parameters(), 2 * n * n + rank * (k + d));
        let names: Vec<String> = phm_nn::module::params(&fact)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(names, ["rules_left", "rules_right", "u", "v"]);
    }
}

#[test]
fn auto_kernel_follows_the_flop_rule() {
    let low = LowRankShape::new(256, 256, 4, 2).unwrap();
    for batch in [1, 16, 1024] {
        assert_eq!(low.kernel(Strategy::Auto, batch), Kernel::Factored);
    }
    let full = LowRankShape::new(256, 256, 4, 64).unwrap();
    assert!(full.is_full_rank());
    assert_eq!(full.kernel(Strategy::Auto, 1024), Kernel::Materialized);
    assert_eq!(full.kernel(Strategy::Factored, 1024), Kernel::Factored);
    assert_eq!(low.kernel(Strategy::Materialized, 1), Kernel::Materialized);
    // A narrow output at a rank of 2/3 of the full rank and a large batch: build W.
    let narrow = LowRankShape::new(768, 48, 4, 8).unwrap();
    assert_eq!(narrow.kernel(Strategy::Auto, 256), Kernel::Materialized);
    assert_eq!(narrow.kernel(Strategy::Auto, 1), Kernel::Factored);
    // The rule is exactly the weighted FLOP comparison.
    for (shape, b) in [(low, 7), (full, 7), (full, 3000), (narrow, 40)] {
        let want = if FACTORED_SLOWDOWN * shape.factored_flops(b) <= shape.materialized_flops(b) {
            Kernel::Factored
        } else {
            Kernel::Materialized
        };
        assert_eq!(shape.kernel(Strategy::Auto, b), want);
    }
}

#[test]
fn default_init_matches_the_dense_variance() {
    let mut r = rng(3);
    for (rule, n) in [
        (Rule::Learned(Init::UnitFibers), 4),
        (Rule::Fixed(Algebra::Quaternion), 4),
        (Rule::Learned(Init::UnitFibers), 2),
    ] {
        let (d, k, rank) = (256, 256, 8);
        let l = LphmLinearConfig::new(d, k, n, rank)
            .with_rule(rule)
            .init::<f64, _>(&mut r)
            .unwrap();
        let w = l.weight();
        let var = w.mapv(|x| x * x).mean().unwrap();
        let want = 1.0 / (3.0 * d as f64);
        assert!(
            (var / want - 1.0).abs() < 0.15,
            "{rule:?}: var {var}, want {want}"
        );
    }
}

#[test]
fn config_errors_name_the_values() {
    let mut r = rng(0);
    let err = LphmLinearConfig::new(10, 8, 4, 1)
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert_eq!(err.to_string(), "in_features 10 is not divisible by n = 4");
    let err = LphmLinearConfig::new(8, 8, 4, 0)
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert_eq!(err, PhmError::ZeroSize { what: "rank" });
    let err = LphmLinearConfig::new(8, 8, 4, 1)
        .with_rule(Rule::Fixed(Algebra::Quaternion))
        .with_factorized_rules(true)
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert!(err.to_string().contains("cannot be factorized"), "{err}");
    let rules = PhmRules::<f32>::new(2, Rule::Learned(Init::UnitFibers), &mut r).unwrap();
    let err = LphmLinearConfig::new(8, 8, 4, 1)
        .init_shared(&rules, &mut r)
        .unwrap_err();
    assert!(
        err.to_string().contains("n = 2") && err.to_string().contains("n = 4"),
        "{err}"
    );
    let err = LphmLinear::<f64>::from_parts(
        Array3::zeros((2, 2, 2)),
        Array3::zeros((2, 3, 1)),
        Array3::zeros((2, 4, 2)),
        None,
    )
    .unwrap_err();
    assert_eq!(
        err,
        PhmError::ShapeMismatch {
            what: "v",
            expected: vec![2, 4, 1],
            got: vec![2, 4, 2]
        }
    );
    let same = Param::<f64>::new(Array2::zeros((2, 2)).into_dyn());
    assert!(PhmRules::factorized(same.share(), same).is_err());
    let uv = Param::<f64>::new(Array3::zeros((2, 2, 1)).into_dyn());
    let rules = PhmRules::full(Param::new(Array3::zeros((2, 2, 2)).into_dyn())).unwrap();
    let err = LphmLinear::from_params(&rules, uv.share(), uv, None).unwrap_err();
    assert!(err.to_string().contains("distinct"), "{err}");
    let err = LowRankShape::new(8, 8, 2, usize::MAX / 4).unwrap_err();
    assert!(err.to_string().contains("overflows"), "{err}");
}

#[test]
#[should_panic(expected = "LphmLinear::forward: input has shape [2, 5], expected [.., 8]")]
fn forward_shape_mismatch_panics() {
    let mut l = layer("full", (8, 4, 2, 1), true, 0);
    l.forward(ArrayD::zeros(vec![2, 5]).view());
}

#[test]
#[should_panic(expected = "LphmLinear::backward: grad_output has shape [2, 3], expected [2, 4]")]
fn backward_shape_mismatch_panics() {
    let mut l = layer("full", (8, 4, 2, 1), true, 0);
    l.forward(ArrayD::zeros(vec![2, 8]).view());
    l.backward(ArrayD::zeros(vec![2, 3]).view());
}

#[test]
#[should_panic(expected = "LphmLinear::backward called before forward")]
fn backward_without_forward_panics() {
    let mut l = layer("full", (8, 4, 2, 1), true, 0);
    l.backward(ArrayD::zeros(vec![2, 4]).view());
}

#[test]
fn reused_buffers_do_not_leak_between_steps() {
    // Steps of different inputs and batch sizes, two forwards before their backwards: every
    // result equals that of a fresh layer.
    let fresh = || layer("full", (8, 12, 4, 2), true, 31).with_strategy(Strategy::Factored);
    let mut l = fresh();
    for (step, batch) in [3usize, 3, 5, 3].into_iter().enumerate() {
        let x1 = uniform2(&mut rng(40 + step as u64), batch, 8).into_dyn();
        let x2 = uniform2(&mut rng(50 + step as u64), batch, 8).into_dyn();
        let g = uniform2(&mut rng(60 + step as u64), batch, 12).into_dyn();
        l.zero_grad();
        let y1 = l.forward(x1.view());
        let y2 = l.forward(x2.view());
        let dx2 = l.backward(g.view());
        let dx1 = l.backward(g.view());
        let mut reference = fresh();
        assert_eq!(y1, reference.forward(x1.view()), "step {step}");
        assert_eq!(y2, reference.forward(x2.view()), "step {step}");
        assert_eq!(dx2, reference.backward(g.view()), "step {step}");
        assert_eq!(dx1, reference.backward(g.view()), "step {step}");
        assert_eq!(
            l.u_param().grad(),
            reference.u_param().grad(),
            "step {step}"
        );
    }
}
