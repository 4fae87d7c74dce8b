//! PhmLinear: finite-difference gradients, algebra identities, errors and panics.
mod common;

use approx::AbsDiffEq;
use common::{check_gradients, rng, uniform2, uniform_d};
use ndarray::{array, Array1, Array2, Array3, Ix1, Ix3};
use phm_nn::algebra::{self, Algebra};
use phm_nn::{Module, PhmError, PhmLinear, PhmLinearConfig, Rule, Strategy};

const KERNELS: [Strategy; 2] = [Strategy::Materialized, Strategy::Factored];

fn random_layer(n: usize, d: usize, k: usize, bias: bool, seed: u64) -> PhmLinear<f64> {
    let mut r = rng(seed);
    let a = uniform_d(&mut r, &[n, n, n])
        .into_dimensionality::<Ix3>()
        .unwrap();
    let s = uniform_d(&mut r, &[n, k / n, d / n])
        .into_dimensionality::<Ix3>()
        .unwrap();
    let b = bias.then(|| {
        uniform_d(&mut r, &[k])
            .into_dimensionality::<Ix1>()
            .unwrap()
    });
    PhmLinear::from_parts(a, s, b).unwrap()
}

#[test]
fn gradients_learned_rules() {
    for n in [1, 2, 4] {
        for bias in [true, false] {
            let (d, k) = (2 * n, 3 * n);
            for strategy in KERNELS {
                let mut layer = random_layer(n, d, k, bias, 10 + n as u64).with_strategy(strategy);
                let x = uniform2(&mut rng(99), 3, d);
                check_gradients(&mut layer, &x, 7, 1e-6);
            }
        }
    }
}

#[test]
fn gradients_fixed_rules() {
    for (n, alg) in [
        (1, Algebra::Real),
        (2, Algebra::Complex),
        (4, Algebra::Quaternion),
    ] {
        for bias in [true, false] {
            let mut layer = PhmLinearConfig::new(2 * n, n, n)
                .with_bias(bias)
                .with_rule(Rule::Fixed(alg))
                .init::<f64, _>(&mut rng(3))
                .unwrap();
            assert!(!layer.rules_trainable());
            let x = uniform2(&mut rng(5), 4, 2 * n);
            for strategy in KERNELS {
                layer.set_strategy(strategy);
                check_gradients(&mut layer, &x, 11, 1e-6);
            }
        }
    }
}

#[test]
fn gradients_with_frozen_blocks() {
    for strategy in KERNELS {
        let mut layer = random_layer(2, 4, 6, true, 1).with_strategy(strategy);
        layer.set_blocks_trainable(false);
        let x = uniform2(&mut rng(2), 3, 4);
        check_gradients(&mut layer, &x, 3, 1e-6);
    }
}

fn hamilton(a: [f64; 4], b: [f64; 4]) -> [f64; 4] {
    let [a1, b1, c1, d1] = a;
    let [a2, b2, c2, d2] = b;
    [
        a1 * a2 - b1 * b2 - c1 * c2 - d1 * d2,
        a1 * b2 + b1 * a2 + c1 * d2 - d1 * c2,
        a1 * c2 - b1 * d2 + c1 * a2 + d1 * b2,
        a1 * d2 + b1 * c2 - c1 * b2 + d1 * a2,
    ]
}

#[test]
fn quaternion_layer_computes_hamilton_product() {
    let mut r = rng(42);
    for _ in 0..20 {
        let q = uniform_d(&mut r, &[4]);
        let s = q.clone().into_shape_with_order((4, 1, 1)).unwrap();
        let mut layer = PhmLinear::from_parts(algebra::quaternion(), s, None).unwrap();
        let p = uniform2(&mut r, 1, 4);
        let y = layer.forward(p.view().into_dyn());
        let want = hamilton(
            [q[0], q[1], q[2], q[3]],
            [p[[0, 0]], p[[0, 1]], p[[0, 2]], p[[0, 3]]],
        );
        for j in 0..4 {
            assert!((y[[0, j]] - want[j]).abs() < 1e-12, "{y} vs {want:?}");
        }
        // The inference path agrees.
        assert_eq!(layer.infer(p.view().into_dyn()), y);
    }
}

#[test]
fn complex_layer_with_blocks_multiplies_complex_vectors() {
    // n = 2, blocks 3×2: y = (S_1 + i S_2)(x_re + i x_im) component-wise.
    let mut r = rng(8);
    let s = uniform_d(&mut r, &[2, 3, 2])
        .into_dimensionality::<Ix3>()
        .unwrap();
    let layer = PhmLinear::from_parts(algebra::complex(), s.clone(), None).unwrap();
    let x = uniform2(&mut r, 2, 4);
    let y = layer.infer(x.view().into_dyn());
    let (s1, s2) = (
        s.index_axis(ndarray::Axis(0), 0),
        s.index_axis(ndarray::Axis(0), 1),
    );
    for b in 0..2 {
        let xr = x.row(b).slice(ndarray::s![0..2]).to_owned();
        let xi = x.row(b).slice(ndarray::s![2..4]).to_owned();
        let re = s1.dot(&xr) - s2.dot(&xi);
        let im = s1.dot(&xi) + s2.dot(&xr);
        for u in 0..3 {
            assert!((y[[b, u]] - re[u]).abs() < 1e-12);
            assert!((y[[b, 3 + u]] - im[u]).abs() < 1e-12);
        }
    }
}

#[test]
fn parameter_count_formula() {
    let mut r = rng(0);
    for (n, d, k) in [(1, 8, 4), (2, 8, 4), (4, 16, 8), (8, 64, 32)] {
        let layer = PhmLinearConfig::new(d, k, n)
            .init::<f32, _>(&mut r)
            .unwrap();
        assert_eq!(layer.num_parameters(), n * n * n + k * d / n + k);
        let no_bias = PhmLinearConfig::new(d, k, n)
            .with_bias(false)
            .init::<f32, _>(&mut r)
            .unwrap();
        assert_eq!(no_bias.num_parameters(), n * n * n + k * d / n);
    }
    let quat = PhmLinearConfig::new(16, 8, 4)
        .with_rule(Rule::Fixed(Algebra::Quaternion))
        .init::<f32, _>(&mut r)
        .unwrap();
    assert_eq!(quat.num_parameters(), 16 * 8 / 4 + 8);
}

#[test]
fn weight_matches_sum_of_kron_and_forward_uses_it() {
    let layer = random_layer(2, 4, 6, true, 4);
    let a = layer.rules().to_owned();
    let s = layer.blocks().to_owned();
    let mut w = Array2::<f64>::zeros((6, 4));
    for i in 0..2 {
        w += &phm_nn::kernels::phm::kron(
            a.index_axis(ndarray::Axis(0), i),
            s.index_axis(ndarray::Axis(0), i),
        );
    }
    assert!(layer.weight().abs_diff_eq(&w, 1e-14));
    let x = uniform2(&mut rng(1), 3, 4);
    let want = x.dot(&w.t()) + layer.bias().unwrap();
    assert!(layer
        .infer(x.view().into_dyn())
        .abs_diff_eq(&want.into_dyn(), 1e-12));
}

#[test]
fn cached_weight_follows_parameter_changes() {
    let mut layer = random_layer(2, 4, 4, false, 6);
    let x = uniform2(&mut rng(1), 2, 4);
    let before = layer.forward(x.view().into_dyn());
    layer.backward(Array2::ones((2, 4)).view().into_dyn());
    // Change the blocks through the visitor, as an optimizer does.
    layer.visit_params(&mut |name, p| {
        if name == "blocks" {
            p.write().value_mut().mapv_inplace(|v| 2.0 * v);
        }
    });
    let after = layer.forward(x.view().into_dyn());
    assert!(after.abs_diff_eq(&(2.0 * &before), 1e-12));
    // And the rules.
    layer.visit_params(&mut |name, p| {
        if name == "rules" {
            p.write().value_mut().mapv_inplace(|v| -v);
        }
    });
    assert!(layer
        .forward(x.view().into_dyn())
        .abs_diff_eq(&(-2.0 * &before), 1e-12));
    assert!(layer
        .infer(x.view().into_dyn())
        .abs_diff_eq(&(-2.0 * &before), 1e-12));
}

#[test]
fn config_errors_name_the_values() {
    let mut r = rng(0);
    let err = PhmLinearConfig::new(10, 8, 4)
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert_eq!(
        err,
        PhmError::NotDivisible {
            what: "in_features",
            size: 10,
            n: 4
        }
    );
    assert_eq!(err.to_string(), "in_features 10 is not divisible by n = 4");
    let err = PhmLinearConfig::new(8, 6, 4)
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert_eq!(err.to_string(), "out_features 6 is not divisible by n = 4");
    let err = PhmLinearConfig::new(8, 8, 0)
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert_eq!(err, PhmError::ZeroN);
    assert!(err.to_string().contains("n = 0"));
    let err = PhmLinearConfig::new(0, 8, 2)
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert_eq!(err.to_string(), "in_features must be at least 1, got 0");
    let err = PhmLinearConfig::new(8, 8, 2)
        .with_rule(Rule::Fixed(Algebra::Quaternion))
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("quaternion has dimension 4, but the layer has n = 2"),
        "{err}"
    );
    let err = PhmLinearConfig::new(8, 8, 2)
        .with_block_init(phm_nn::Init::Normal { std: -1.0 })
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert!(err.to_string().contains("-1"), "{err}");
}

#[test]
fn from_parts_errors_name_the_shapes() {
    let err =
        PhmLinear::<f64>::from_parts(Array3::zeros((2, 2, 3)), Array3::zeros((2, 2, 2)), None)
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "rules has shape [2, 2, 3], expected [2, 2, 2]"
    );
    let err =
        PhmLinear::<f64>::from_parts(Array3::zeros((2, 2, 2)), Array3::zeros((3, 2, 2)), None)
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "blocks has shape [3, 2, 2], expected [2, 2, 2]"
    );
    let err = PhmLinear::<f64>::from_parts(
        Array3::zeros((2, 2, 2)),
        Array3::zeros((2, 3, 1)),
        Some(Array1::zeros(5)),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "bias has shape [5], expected [6]");
    let err =
        PhmLinear::<f64>::from_parts(Array3::zeros((0, 0, 0)), Array3::zeros((0, 1, 1)), None)
            .unwrap_err();
    assert_eq!(err, PhmError::ZeroN);
    let err =
        PhmLinear::<f64>::from_parts(Array3::zeros((2, 2, 2)), Array3::zeros((2, 0, 1)), None)
            .unwrap_err();
    assert_eq!(err.to_string(), "out_features must be at least 1, got 0");
}

#[test]
#[should_panic(expected = "PhmLinear::forward: input has shape [3, 5], expected [.., 4]")]
fn forward_shape_mismatch_panics() {
    let mut layer = random_layer(2, 4, 4, true, 0);
    layer.forward(Array2::zeros((3, 5)).view().into_dyn());
}

#[test]
#[should_panic(expected = "PhmLinear::infer: input has shape [3, 5], expected [.., 4]")]
fn infer_shape_mismatch_panics() {
    let layer = random_layer(2, 4, 4, true, 0);
    layer.infer(Array2::zeros((3, 5)).view().into_dyn());
}

#[test]
#[should_panic(expected = "PhmLinear::backward: grad_output has shape [3, 5], expected [3, 4]")]
fn backward_shape_mismatch_panics() {
    let mut layer = random_layer(2, 4, 4, true, 0);
    layer.forward(Array2::zeros((3, 4)).view().into_dyn());
    layer.backward(Array2::zeros((3, 5)).view().into_dyn());
}

#[test]
#[should_panic(expected = "PhmLinear::backward called before forward")]
fn backward_without_forward_panics() {
    let mut layer = random_layer(2, 4, 4, true, 0);
    layer.backward(Array2::zeros((3, 4)).view().into_dyn());
}

#[test]
fn n1_layer_is_dense() {
    let mut r = rng(12);
    let s = uniform_d(&mut r, &[1, 3, 5])
        .into_dimensionality::<Ix3>()
        .unwrap();
    let layer = PhmLinear::from_parts(array![[[2.0]]], s.clone(), None).unwrap();
    let w = 2.0 * &s.index_axis(ndarray::Axis(0), 0);
    assert!(layer.weight().abs_diff_eq(&w, 1e-15));
}
