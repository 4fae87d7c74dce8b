//! The linear family in burn against phm-nn, in f64 on the default CPU device with autodiff:
//! forward values and the gradients of the input and of every parameter equal phm-nn's
//! manual forward/backward to 1e-10 relative to the largest entry; Bridge round trips are
//! bit-exact in f32 and f64.

mod common;

use common::parity::{assert_match, data, grad};
use phm_burn::bridge::{array_from_tensor, tensor_from_array};
use phm_burn::burn::tensor::Gradients;
use phm_burn::burn::tensor::{DType, Device, Tensor};
use phm_burn::kernels::{build_weight, PhmPath};
use phm_burn::linear::{
    Linear, LinearConfig, LphmLinear, LphmLinearConfig, PhmLinear, PhmLinearConfig, Projection,
    ProjectionConfig,
};
use phm_burn::rules::{rule_of, PhmRules};
use phm_burn::Bridge;
use phm_nn::ndarray::{ArrayD, IxDyn};
use phm_nn::nn::PhmRules as NativeRules;
use phm_nn::rand::{rngs::StdRng, SeedableRng};
use phm_nn::{Float, Module};

const PATHS: [PhmPath; 2] = [PhmPath::Materialized, PhmPath::Factored];

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn ad() -> Device {
    Device::default().autodiff()
}

/// Runs the burn forward `f` on `x` with `L = Σ Y ⊙ G`; returns `(Y, dX, grads)`.
fn run<const D: usize>(
    x: &ArrayD<f64>,
    g: &ArrayD<f64>,
    f: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> (Tensor<D>, Tensor<D>, Gradients) {
    let dev = ad();
    let xt = tensor_from_array::<f64, D>(x.view(), &dev).require_grad();
    let gt = tensor_from_array::<f64, D>(g.view(), &dev);
    let y = f(xt.clone());
    let grads = (y.clone() * gt).sum().backward();
    let dx = xt.grad(&grads).expect("dX");
    (y, dx, grads)
}

fn out_shape(lead: &[usize], last: usize) -> Vec<usize> {
    let mut s = lead.to_vec();
    s.push(last);
    s
}

fn phm_case<const D: usize>(
    d: usize,
    k: usize,
    n: usize,
    lead: [usize; 2],
    fixed: bool,
    path: PhmPath,
) {
    let lead = &lead[..D - 1];
    let seed = (d * 31 + k * 7 + n) as u64;
    let mut native = phm_nn::PhmLinearConfig::new(d, k, n)
        .with_rule(rule_of(n, fixed))
        .init::<f64, _>(&mut rng(seed))
        .unwrap();
    let layer = PhmLinear::from_native(&native, &ad())
        .unwrap()
        .with_path(path);
    assert_eq!(layer.fixed_rules, fixed);
    let x = data(seed + 1, &out_shape(lead, d));
    let g = data(seed + 2, &out_shape(lead, k));
    let y_ref = native.forward(x.view());
    let dx_ref = native.backward(g.view());
    let (y, dx, grads) = run::<D>(&x, &g, |x| layer.forward(x));
    let case = format!("PHM {d}→{k} n={n} lead={lead:?} fixed={fixed} {path:?}");
    assert_match(&format!("{case} Y"), &y, &y_ref);
    assert_match(&format!("{case} dX"), &dx, &dx_ref);
    let rules = layer.rules.as_ref().unwrap();
    if fixed {
        assert!(
            rules.grad(&grads).is_none(),
            "{case}: fixed rules took a gradient"
        );
    } else {
        let da = grad(rules, &grads, "rules");
        assert_match(&format!("{case} dA"), &da, &native.rules_param().grad());
    }
    let ds = grad(&layer.blocks, &grads, "blocks");
    assert_match(&format!("{case} dS"), &ds, &native.blocks_param().grad());
    let db = grad(layer.bias.as_ref().unwrap(), &grads, "bias");
    assert_match(
        &format!("{case} db"),
        &db,
        &native.bias_param().unwrap().grad(),
    );
}

#[test]
fn phm_matches_phm_nn_for_n_1_2_3_4_8_both_paths() {
    for path in PATHS {
        for (d, k, n) in [
            (5, 3, 1),
            (6, 4, 2),
            (9, 6, 3),
            (8, 12, 4),
            (16, 8, 8),
            (24, 8, 4),
        ] {
            phm_case::<2>(d, k, n, [5, 0], false, path);
        }
    }
}

#[test]
fn phm_matches_phm_nn_on_rank_3_inputs() {
    for path in PATHS {
        for (d, k, n) in [(6, 4, 2), (8, 12, 4), (12, 6, 3)] {
            phm_case::<3>(d, k, n, [3, 5], false, path);
        }
    }
}

#[test]
fn phm_with_fixed_quaternion_and_complex_rules_matches_and_freezes_them() {
    for path in PATHS {
        phm_case::<2>(8, 12, 4, [3, 0], true, path);
        phm_case::<3>(6, 4, 2, [3, 2], true, path);
    }
}

#[test]
fn auto_path_matches_both_forced_paths() {
    let dev = Device::default();
    let layer = PhmLinearConfig::new(16, 8, 4)
        .with_seed(3)
        .init::<f64>(&dev)
        .unwrap();
    // Rows 1 (factored) and 64 (materialized) under the Auto rule.
    assert_eq!(PhmPath::Auto.resolve(1, 4, 16, 8), PhmPath::Factored);
    assert_eq!(PhmPath::Auto.resolve(64, 4, 16, 8), PhmPath::Materialized);
    // Low rank: per row 4·8·(16 + 16 + 16) = 1536 against 512 + 1024 + 256·B.
    assert_eq!(
        PhmPath::Auto.resolve_low_rank(1, 4, 16, 16, 8),
        PhmPath::Factored
    );
    assert_eq!(
        PhmPath::Auto.resolve_low_rank(100, 4, 16, 16, 8),
        PhmPath::Materialized
    );
    assert_eq!(
        PhmPath::Materialized.resolve_low_rank(1, 4, 16, 16, 8),
        PhmPath::Materialized
    );
    for rows in [1, 64] {
        let x = tensor_from_array::<f64, 2>(data(rows as u64, &[rows, 16]).view(), &dev);
        let want = layer
            .clone()
            .with_path(PhmPath::Materialized)
            .forward(x.clone());
        let want = array_from_tensor::<f64, 2>(&want, "y").unwrap();
        for path in [PhmPath::Auto, PhmPath::Factored] {
            let y = layer.clone().with_path(path).forward(x.clone());
            assert_match(&format!("rows {rows} {path:?}"), &y, &want);
        }
    }
}

#[test]
fn build_weight_matches_phm_nn() {
    for (d, k, n) in [(6, 4, 2), (9, 6, 3), (16, 8, 8)] {
        let native = phm_nn::PhmLinearConfig::new(d, k, n)
            .init::<f64, _>(&mut rng(9))
            .unwrap();
        let layer = PhmLinear::from_native(&native, &Device::default()).unwrap();
        assert_match(
            "W",
            &build_weight(layer.rules.unwrap().val(), layer.blocks.val()),
            &native.weight().into_dyn(),
        );
    }
}

#[test]
fn dense_matches_phm_nn() {
    let mut native = phm_nn::LinearConfig::new(7, 5)
        .init::<f64, _>(&mut rng(4))
        .unwrap();
    let layer = Linear::from_native(&native, &ad()).unwrap();
    let (x, g) = (data(1, &[3, 2, 7]), data(2, &[3, 2, 5]));
    let y_ref = native.forward(x.view());
    let dx_ref = native.backward(g.view());
    let (y, dx, grads) = run::<3>(&x, &g, |x| layer.forward(x));
    assert_match("Y", &y, &y_ref);
    assert_match("dX", &dx, &dx_ref);
    assert_match(
        "dW",
        &grad(&layer.weight, &grads, "weight"),
        &native.weight_param().grad(),
    );
    assert_match(
        "db",
        &grad(layer.bias.as_ref().unwrap(), &grads, "bias"),
        &native.bias_param().unwrap().grad(),
    );
}

fn lphm_case(d: usize, k: usize, n: usize, rank: usize, factorized: bool, path: PhmPath) {
    let seed = (d + 10 * k + 100 * n + 1000 * rank) as u64;
    let mut native = phm_nn::LphmLinearConfig::new(d, k, n, rank)
        .with_factorized_rules(factorized)
        .init::<f64, _>(&mut rng(seed))
        .unwrap();
    let layer = LphmLinear::from_native(&native, &ad())
        .unwrap()
        .with_path(path);
    let (x, g) = (data(seed, &[3, 2, d]), data(seed + 1, &[3, 2, k]));
    let y_ref = native.forward(x.view());
    let dx_ref = native.backward(g.view());
    let (y, dx, grads) = run::<3>(&x, &g, |x| layer.forward(x));
    let case = format!("LPHM {d}→{k} n={n} r={rank} factorized={factorized} {path:?}");
    assert_match(&format!("{case} Y"), &y, &y_ref);
    assert_match(&format!("{case} dX"), &dx, &dx_ref);
    let mut want = std::collections::HashMap::new();
    native.visit_params(&mut |name, p| {
        want.insert(name.to_string(), p.grad());
    });
    if factorized {
        assert!(layer.rules.is_none());
        let l = grad(layer.rules_left.as_ref().unwrap(), &grads, "rules_left");
        let r = grad(layer.rules_right.as_ref().unwrap(), &grads, "rules_right");
        assert_match(&format!("{case} da"), &l, &want["rules_left"]);
        assert_match(&format!("{case} db_rules"), &r, &want["rules_right"]);
    } else {
        let a = grad(layer.rules.as_ref().unwrap(), &grads, "rules");
        assert_match(&format!("{case} dA"), &a, &want["rules"]);
    }
    assert_match(
        &format!("{case} dU"),
        &grad(&layer.u, &grads, "u"),
        &want["u"],
    );
    assert_match(
        &format!("{case} dV"),
        &grad(&layer.v, &grads, "v"),
        &want["v"],
    );
    let db = grad(layer.bias.as_ref().unwrap(), &grads, "bias");
    assert_match(&format!("{case} db"), &db, &want["bias"]);
}

#[test]
fn lphm_matches_phm_nn_rank_1_and_2_full_and_factorized_rules() {
    for path in PATHS {
        for factorized in [false, true] {
            lphm_case(8, 12, 4, 1, factorized, path);
            lphm_case(6, 9, 3, 2, factorized, path);
            lphm_case(16, 8, 2, 2, factorized, path);
        }
    }
}

/// A PHM (or LPHM) layer then an LPHM layer on one rule set held by the caller: the rules'
/// gradient is the sum over both uses, as phm-nn's shared handle accumulates it.
fn shared_case(factorized: bool, path: PhmPath) {
    let n = 2;
    let mut r = rng(21);
    let native_rules = if factorized {
        NativeRules::<f64>::new_factorized(n, None, &mut r).unwrap()
    } else {
        NativeRules::<f64>::new(n, rule_of(n, false), &mut r).unwrap()
    };
    // PhmLinear takes full rules only; with factorized rules the chain is LPHM → LPHM.
    let mut first: Box<dyn Module<f64>> = if factorized {
        Box::new(
            phm_nn::LphmLinearConfig::new(6, 8, n, 2)
                .init_shared(&native_rules, &mut r)
                .unwrap(),
        )
    } else {
        Box::new(
            phm_nn::PhmLinearConfig::new(6, 8, n)
                .init_shared(native_rules.full_param().unwrap(), &mut r)
                .unwrap(),
        )
    };
    let mut second = phm_nn::LphmLinearConfig::new(8, 4, n, 1)
        .init_shared(&native_rules, &mut r)
        .unwrap();
    let dev = ad();
    let rules = PhmRules::from_native(&native_rules, &dev).unwrap();
    let p1 = Projection::from_native(first.as_ref(), true, &dev).unwrap();
    let p2 = Projection::from_native(&second, true, &dev).unwrap();
    assert!(p1.uses_shared_rules() && p2.uses_shared_rules());
    let (p1, p2) = (p1.with_path(path), p2.with_path(path));

    let (x, g) = (data(5, &[5, 6]), data(6, &[5, 4]));
    let h = first.forward(x.view());
    let y_ref = second.forward(h.view());
    let dh = second.backward(g.view());
    let dx_ref = first.backward(dh.view());

    let (y, dx, grads) = run::<2>(&x, &g, |x| {
        let a = rules.matrices();
        p2.forward_with_rules(p1.forward_with_rules(x, Some(&a)), Some(&a))
    });
    let case = format!("shared factorized={factorized} {path:?}");
    assert_match(&format!("{case} Y"), &y, &y_ref);
    assert_match(&format!("{case} dX"), &dx, &dx_ref);
    let mut want = std::collections::HashMap::new();
    native_rules.visit(&mut |name, p| {
        want.insert(name.to_string(), p.grad());
    });
    if factorized {
        let l = grad(rules.rules_left.as_ref().unwrap(), &grads, "rules_left");
        let r = grad(rules.rules_right.as_ref().unwrap(), &grads, "rules_right");
        assert_match(&format!("{case} da"), &l, &want["rules_left"]);
        assert_match(&format!("{case} db_rules"), &r, &want["rules_right"]);
    } else {
        let a = grad(rules.rules.as_ref().unwrap(), &grads, "rules");
        assert_match(&format!("{case} dA"), &a, &want["rules"]);
    }
    // The projections' own parameters too.
    let Projection::LowRankPhm(l2) = &p2 else {
        panic!("second is LPHM")
    };
    assert_match("dU", &grad(&l2.u, &grads, "u"), &second.u_param().grad());
    assert_match("dV", &grad(&l2.v, &grads, "v"), &second.v_param().grad());
    // And back: the phm-nn twin shares the phm-nn rules again.
    let back = p2.to_native::<f64>(Some(&native_rules)).unwrap();
    let mut ids = Vec::new();
    back.visit_params(&mut |name, p| ids.push((name.to_string(), p.id())));
    let mut rule_ids = Vec::new();
    native_rules.visit(&mut |name, p| rule_ids.push((name.to_string(), p.id())));
    for id in rule_ids {
        assert!(ids.contains(&id), "{id:?} not shared by the phm-nn twin");
    }
}

#[test]
fn shared_rules_accumulate_gradients_from_every_projection() {
    for path in PATHS {
        shared_case(false, path);
        shared_case(true, path);
    }
}

#[test]
fn shared_layers_need_the_models_rules() {
    let dev = Device::default();
    let rules = ProjectionConfig::phm(2)
        .new_rules::<f64>(0, &dev)
        .unwrap()
        .unwrap();
    let p = ProjectionConfig::phm(2)
        .init_shared::<f64>(4, 4, Some(&rules), 1, &dev)
        .unwrap();
    assert!(p.uses_shared_rules());
    assert!(p.to_native::<f64>(None).is_err());
    let Projection::Phm(layer) = &p else {
        panic!("PHM")
    };
    assert!(layer.to_native::<f64>().is_err());
    let x = Tensor::<2>::ones([1, 4], &dev);
    let missing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.forward(x.clone())));
    assert!(missing.is_err(), "a shared layer without rules must panic");
    // Factorized rules cannot serve a PHM projection; another n is refused.
    let fact = phm_burn::rules::PhmRulesConfig::new(2)
        .with_factorized(true)
        .init::<f64>(&dev)
        .unwrap();
    assert!(ProjectionConfig::phm(2)
        .init_shared::<f64>(4, 4, Some(&fact), 1, &dev)
        .is_err());
    assert!(ProjectionConfig::low_rank(4, 1)
        .init_shared::<f64>(8, 8, Some(&rules), 1, &dev)
        .is_err());
}

#[test]
fn configs_initialise_as_phm_nn_does() {
    let dev = Device::default();
    let native = phm_nn::PhmLinearConfig::new(8, 4, 2)
        .init::<f64, _>(&mut rng(11))
        .unwrap();
    let layer = PhmLinearConfig::new(8, 4, 2)
        .with_seed(11)
        .init::<f64>(&dev)
        .unwrap();
    assert_eq!(layer.to_native::<f64>().unwrap().blocks(), native.blocks());
    assert_eq!(layer.to_native::<f64>().unwrap().rules(), native.rules());
    let native = phm_nn::nn::Projection::low_rank(4, 2)
        .build::<f32, _>(8, 12, None, &mut rng(3))
        .unwrap();
    let p = ProjectionConfig::low_rank(4, 2)
        .init::<f32>(8, 12, 3, &dev)
        .unwrap();
    let back = p.to_native::<f32>(None).unwrap();
    let values = |m: &dyn Module<f32>| {
        let mut v = Vec::new();
        m.visit_params(&mut |name, p| v.push((name.to_string(), p.value())));
        v
    };
    assert_eq!(values(back.as_ref()), values(native.as_ref()));
    // Bad sizes are phm-nn's typed errors.
    assert!(PhmLinearConfig::new(10, 4, 4).init::<f64>(&dev).is_err());
    assert!(LphmLinearConfig::new(8, 4, 4, 0).init::<f64>(&dev).is_err());
    assert!(LinearConfig::new(0, 4).init::<f64>(&dev).is_err());
}

/// phm-nn → burn → phm-nn keeps every parameter bit for bit, and fixed rules frozen.
fn round_trip<F: Float>() {
    let dev = Device::default();
    let models: Vec<Box<dyn Module<F>>> = vec![
        Box::new(
            phm_nn::LinearConfig::new(5, 3)
                .init::<F, _>(&mut rng(1))
                .unwrap(),
        ),
        Box::new(
            phm_nn::PhmLinearConfig::new(8, 12, 4)
                .init::<F, _>(&mut rng(2))
                .unwrap(),
        ),
        Box::new(
            phm_nn::PhmLinearConfig::new(8, 4, 4)
                .with_rule(rule_of(4, true))
                .with_bias(false)
                .init::<F, _>(&mut rng(3))
                .unwrap(),
        ),
        Box::new(
            phm_nn::LphmLinearConfig::new(8, 12, 4, 2)
                .init::<F, _>(&mut rng(4))
                .unwrap(),
        ),
        Box::new(
            phm_nn::LphmLinearConfig::new(6, 9, 3, 1)
                .with_factorized_rules(true)
                .init::<F, _>(&mut rng(5))
                .unwrap(),
        ),
        Box::new(
            phm_nn::LphmLinearConfig::new(4, 8, 2, 1)
                .with_rule(rule_of(2, true))
                .init::<F, _>(&mut rng(6))
                .unwrap(),
        ),
    ];
    for native in &models {
        let p = Projection::from_native(native.as_ref(), false, &dev).unwrap();
        let back = p.to_native::<F>(None).unwrap();
        let list = |m: &dyn Module<F>| {
            let mut v = Vec::new();
            m.visit_params(&mut |name, p| {
                v.push((name.to_string(), p.value(), p.is_trainable()));
            });
            v
        };
        assert_eq!(
            list(back.as_ref()),
            list(native.as_ref()),
            "{}",
            native.describe()
        );
        // The other float type is an error naming the tensor, not a rounding.
        let wrong = if std::mem::size_of::<F>() == 4 {
            p.to_native::<f64>(None).err()
        } else {
            p.to_native::<f32>(None).err()
        };
        assert!(
            wrong.is_some(),
            "{}: dtype mismatch accepted",
            native.describe()
        );
    }
    // The rule set alone.
    let rules = NativeRules::<F>::new_factorized(3, None, &mut rng(7)).unwrap();
    let back = PhmRules::from_native(&rules, &dev)
        .unwrap()
        .to_native::<F>()
        .unwrap();
    assert_eq!(back.factors(), rules.factors());
}

#[test]
fn bridge_round_trip_is_bit_exact_f32() {
    round_trip::<f32>();
}

#[test]
fn bridge_round_trip_is_bit_exact_f64() {
    round_trip::<f64>();
}

#[test]
fn fixed_rules_stay_frozen_through_init_and_bridge() {
    let dev = Device::default();
    let layer = LphmLinearConfig::new(8, 4, 4, 1)
        .with_fixed_rules(true)
        .init::<f64>(&dev)
        .unwrap();
    assert!(layer.fixed_rules);
    let native = layer.to_native::<f64>().unwrap();
    assert!(!native.rules().is_trainable());
    assert_eq!(native.num_parameters(), 4 + 8 + 4); // U, V, bias only
}

/// Central differences of `L = Σ Y ⊙ G` through burn's own forward (both paths) agree with
/// burn's autodiff for a few entries of every parameter and of the input.
#[test]
fn autodiff_matches_finite_differences() {
    let native = phm_nn::LphmLinearConfig::new(6, 9, 3, 2)
        .with_factorized_rules(true)
        .init::<f64, _>(&mut rng(30))
        .unwrap();
    let (x, g) = (data(31, &[3, 6]), data(32, &[3, 9]));
    let dev = ad();
    let loss = |layer: &LphmLinear, x: &ArrayD<f64>| -> f64 {
        let xt = tensor_from_array::<f64, 2>(x.view(), &Device::default());
        let y = layer.forward(xt);
        let y = array_from_tensor::<f64, 2>(&y, "y").unwrap();
        (&y * &g).sum()
    };
    let eps = 1e-6;
    for path in PATHS {
        let layer = LphmLinear::from_native(&native, &dev)
            .unwrap()
            .with_path(path);
        let (_, dx, grads) = run::<2>(&x, &g, |x| layer.forward(x));
        let plain = LphmLinear::from_native(&native, &Device::default())
            .unwrap()
            .with_path(path);
        // The input.
        let dx = array_from_tensor::<f64, 2>(&dx, "dx").unwrap();
        for idx in [[0, 0], [2, 5], [1, 3]] {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[IxDyn(&idx)] += eps;
            xm[IxDyn(&idx)] -= eps;
            let fd = (loss(&plain, &xp) - loss(&plain, &xm)) / (2.0 * eps);
            assert!(
                (fd - dx[idx]).abs() < 1e-6,
                "{path:?} dX{idx:?}: {fd} vs {}",
                dx[idx]
            );
        }
        // Each parameter, through phm-nn's values perturbed and converted again.
        let mut names = Vec::new();
        native.visit_params(&mut |name, _| names.push(name.to_string()));
        for name in names {
            let grad_of = |l: &LphmLinear| -> ArrayD<f64> {
                let t = match name.as_str() {
                    "rules_left" => array_from_tensor::<f64, 2>(
                        &grad(l.rules_left.as_ref().unwrap(), &grads, "l"),
                        "l",
                    ),
                    "rules_right" => array_from_tensor::<f64, 2>(
                        &grad(l.rules_right.as_ref().unwrap(), &grads, "r"),
                        "r",
                    ),
                    "u" => array_from_tensor::<f64, 3>(&grad(&l.u, &grads, "u"), "u"),
                    "v" => array_from_tensor::<f64, 3>(&grad(&l.v, &grads, "v"), "v"),
                    _ => array_from_tensor::<f64, 1>(
                        &grad(l.bias.as_ref().unwrap(), &grads, "b"),
                        "b",
                    ),
                };
                t.unwrap()
            };
            let auto = grad_of(&layer);
            for flat in [0, auto.len() / 2, auto.len() - 1] {
                let shifted = |delta: f64| {
                    let moved = native.clone();
                    moved.visit_params(&mut |n, p| {
                        if n == name {
                            let mut w = p.write();
                            let mut v = w.value_mut();
                            let cell = v.iter_mut().nth(flat).unwrap();
                            *cell += delta;
                        }
                    });
                    let l = LphmLinear::from_native(&moved, &Device::default())
                        .unwrap()
                        .with_path(path);
                    loss(&l, &x)
                };
                let fd = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
                let a = *auto.iter().nth(flat).unwrap();
                assert!(
                    (fd - a).abs() < 1e-6,
                    "{path:?} d{name}[{flat}]: {fd} vs {a}"
                );
            }
        }
    }
}

#[test]
#[should_panic(expected = "PhmLinear::forward: input of dtype F32, but the parameters are F64")]
fn an_input_of_another_dtype_is_a_clear_panic() {
    let dev = Device::default();
    let layer = PhmLinearConfig::new(4, 4, 2).init::<f64>(&dev).unwrap();
    let _ = layer.forward(Tensor::<2>::ones([1, 4], (&dev, DType::F32)));
}

#[test]
fn frozen_rules_stay_frozen_when_a_plain_module_moves_to_autodiff() {
    use phm_burn::burn::module::Module as BurnModule;
    let dev = Device::default();
    for fixed in [false, true] {
        let layer = PhmLinearConfig::new(8, 4, 4)
            .with_fixed_rules(fixed)
            .init::<f64>(&dev)
            .unwrap()
            .train();
        let x = Tensor::<2>::ones([2, 8], (&dev.clone().autodiff(), DType::F64));
        let grads = layer.forward(x).sum().backward();
        let rules = layer.rules.as_ref().unwrap();
        assert_eq!(rules.grad(&grads).is_some(), !fixed, "fixed = {fixed}");
        assert!(layer.blocks.grad(&grads).is_some());
    }
}
