//! Convolutions in burn against phm-nn, in f64 on the default CPU device with autodiff:
//! forward values and the gradients of the input and of every parameter equal phm-nn's
//! manual forward/backward to 1e-10 relative to the largest entry, with stride, padding and
//! dilation; Bridge round trips are bit-exact in f32 and f64.

mod common;

use common::parity::{assert_match, data, grad};
use std::collections::HashMap;

use phm_burn::bridge::tensor_from_array;
use phm_burn::burn::tensor::{Device, Gradients, Tensor};
use phm_burn::conv::{
    Conv1d, Conv1dConfig, Conv2d, Conv2dConfig, PhmConv1d, PhmConv1dConfig, PhmConv2d,
    PhmConv2dConfig,
};
use phm_burn::rules::rule_of;
use phm_burn::Bridge;
use phm_nn::ndarray::{ArrayD, IxDyn};
use phm_nn::rand::{rngs::StdRng, SeedableRng};
use phm_nn::{Float, Module};

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// phm-nn's results: `Y`, the `G` used, `dX` and the gradients by parameter name.
struct NativeRun {
    y: ArrayD<f64>,
    g: ArrayD<f64>,
    dx: ArrayD<f64>,
    grads: HashMap<String, ArrayD<f64>>,
}

/// phm-nn's forward and backward with a seeded `G`.
fn native_run(m: &mut dyn Module<f64>, x: &ArrayD<f64>, g_seed: u64) -> NativeRun {
    let y = m.forward(x.view());
    let g = data(g_seed, y.shape());
    let dx = m.backward(g.view());
    let mut grads = HashMap::new();
    m.visit_params(&mut |name, p| {
        grads.insert(name.to_string(), p.grad());
    });
    NativeRun { y, g, dx, grads }
}

/// burn's forward on `x` with `L = Σ Y ⊙ G`: `(Y, dX, grads)`.
fn burn_run<const D: usize>(
    x: &ArrayD<f64>,
    g: &ArrayD<f64>,
    f: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> (Tensor<D>, Tensor<D>, Gradients) {
    let dev = Device::default().autodiff();
    let xt = tensor_from_array::<f64, D>(x.view(), &dev).require_grad();
    let gt = tensor_from_array::<f64, D>(g.view(), &dev);
    let y = f(xt.clone());
    let grads = (y.clone() * gt).sum().backward();
    let dx = xt.grad(&grads).expect("dX");
    (y, dx, grads)
}

struct Window2 {
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
}

const WINDOWS2: [Window2; 3] = [
    Window2 {
        kernel: (3, 3),
        stride: (1, 1),
        padding: (0, 0),
        dilation: (1, 1),
    },
    Window2 {
        kernel: (3, 2),
        stride: (2, 1),
        padding: (1, 2),
        dilation: (1, 2),
    },
    Window2 {
        kernel: (2, 3),
        stride: (1, 3),
        padding: (2, 1),
        dilation: (2, 1),
    },
];

fn phm_conv2d_case(cin: usize, cout: usize, n: usize, fixed: bool, w: &Window2) {
    let case = format!("PhmConv2d {cin}→{cout} n={n} fixed={fixed} {:?}", w.kernel);
    let mut native = phm_nn::nn::PhmConv2dConfig::new(cin, cout, w.kernel, n)
        .with_stride(w.stride)
        .with_padding(w.padding)
        .with_dilation(w.dilation)
        .with_rule(rule_of(n, fixed))
        .init::<f64, _>(&mut rng((cin * 10 + cout + n) as u64))
        .unwrap();
    let layer = PhmConv2d::from_native(&native, &Device::default().autodiff()).unwrap();
    let x = data(1, &[3, cin, 7, 8]);
    let NativeRun {
        y: y_ref,
        g,
        dx: dx_ref,
        grads: want,
    } = native_run(&mut native, &x, 2);
    let (y, dx, grads) = burn_run::<4>(&x, &g, |x| layer.forward(x));
    assert_match(&format!("{case} Y"), &y, &y_ref);
    assert_match(&format!("{case} dX"), &dx, &dx_ref);
    if fixed {
        assert!(
            layer.rules.as_ref().unwrap().grad(&grads).is_none(),
            "{case}: fixed rules trained"
        );
    } else {
        let da = grad(layer.rules.as_ref().unwrap(), &grads, "rules");
        assert_match(&format!("{case} dA"), &da, &want["rules"]);
    }
    let ds = grad(&layer.blocks, &grads, "blocks");
    assert_match(&format!("{case} dF"), &ds, &want["blocks"]);
    let db = grad(layer.bias.as_ref().unwrap(), &grads, "bias");
    assert_match(&format!("{case} db"), &db, &want["bias"]);
    // The built kernel is phm-nn's.
    assert_match(
        &format!("{case} K"),
        &layer.weight(),
        &native.weight().into_dyn(),
    );
}

#[test]
fn phm_conv2d_matches_phm_nn_with_stride_padding_dilation() {
    for w in &WINDOWS2 {
        phm_conv2d_case(4, 6, 2, false, w);
        phm_conv2d_case(3, 6, 3, false, w);
        phm_conv2d_case(2, 3, 1, false, w);
        phm_conv2d_case(8, 4, 4, true, w);
    }
}

#[test]
fn dense_conv2d_matches_phm_nn() {
    for w in &WINDOWS2 {
        let mut native = phm_nn::nn::Conv2dConfig::new(3, 5, w.kernel)
            .with_stride(w.stride)
            .with_padding(w.padding)
            .with_dilation(w.dilation)
            .init::<f64, _>(&mut rng(5))
            .unwrap();
        let layer = Conv2d::from_native(&native, &Device::default().autodiff()).unwrap();
        let x = data(3, &[5, 3, 7, 8]);
        let NativeRun {
            y: y_ref,
            g,
            dx: dx_ref,
            grads: want,
        } = native_run(&mut native, &x, 4);
        let (y, dx, grads) = burn_run::<4>(&x, &g, |x| layer.forward(x));
        assert_match("Y", &y, &y_ref);
        assert_match("dX", &dx, &dx_ref);
        assert_match(
            "dK",
            &grad(&layer.weight, &grads, "weight"),
            &want["weight"],
        );
        let db = grad(layer.bias.as_ref().unwrap(), &grads, "bias");
        assert_match("db", &db, &want["bias"]);
    }
}

/// `(kernel, stride, padding, dilation)` of 1-D windows.
const WINDOWS1: [(usize, usize, usize, usize); 3] = [(3, 1, 0, 1), (3, 2, 1, 2), (2, 3, 2, 1)];

#[test]
fn phm_conv1d_matches_phm_nn_with_stride_padding_dilation() {
    for (k, s, p, d) in WINDOWS1 {
        for (cin, cout, n, fixed) in [(4, 6, 2, false), (3, 3, 3, false), (4, 8, 4, true)] {
            let case = format!("PhmConv1d {cin}→{cout} n={n} k={k} s={s} p={p} d={d}");
            let mut native = phm_nn::nn::PhmConv1dConfig::new(cin, cout, k, n)
                .with_stride(s)
                .with_padding(p)
                .with_dilation(d)
                .with_rule(rule_of(n, fixed))
                .init::<f64, _>(&mut rng(7))
                .unwrap();
            let layer = PhmConv1d::from_native(&native, &Device::default().autodiff()).unwrap();
            let x = data(8, &[5, cin, 11]);
            let NativeRun {
                y: y_ref,
                g,
                dx: dx_ref,
                grads: want,
            } = native_run(&mut native, &x, 9);
            let (y, dx, grads) = burn_run::<3>(&x, &g, |x| layer.forward(x));
            assert_match(&format!("{case} Y"), &y, &y_ref);
            assert_match(&format!("{case} dX"), &dx, &dx_ref);
            if fixed {
                assert!(
                    layer.rules.as_ref().unwrap().grad(&grads).is_none(),
                    "{case}: fixed rules trained"
                );
            } else {
                let da = grad(layer.rules.as_ref().unwrap(), &grads, "rules");
                assert_match(&format!("{case} dA"), &da, &want["rules"]);
            }
            let ds = grad(&layer.blocks, &grads, "blocks");
            assert_match(&format!("{case} dF"), &ds, &want["blocks"]);
            let db = grad(layer.bias.as_ref().unwrap(), &grads, "bias");
            assert_match(&format!("{case} db"), &db, &want["bias"]);
        }
    }
}

#[test]
fn dense_conv1d_matches_phm_nn() {
    for (k, s, p, d) in WINDOWS1 {
        let mut native = phm_nn::nn::Conv1dConfig::new(3, 4, k)
            .with_stride(s)
            .with_padding(p)
            .with_dilation(d)
            .init::<f64, _>(&mut rng(6))
            .unwrap();
        let layer = Conv1d::from_native(&native, &Device::default().autodiff()).unwrap();
        let x = data(10, &[3, 3, 11]);
        let NativeRun {
            y: y_ref,
            g,
            dx: dx_ref,
            grads: want,
        } = native_run(&mut native, &x, 11);
        let (y, dx, grads) = burn_run::<3>(&x, &g, |x| layer.forward(x));
        assert_match("Y", &y, &y_ref);
        assert_match("dX", &dx, &dx_ref);
        assert_match(
            "dK",
            &grad(&layer.weight, &grads, "weight"),
            &want["weight"],
        );
        let db = grad(layer.bias.as_ref().unwrap(), &grads, "bias");
        assert_match("db", &db, &want["bias"]);
    }
}

/// Every parameter's name, value and trainability.
fn params<F: Float>(m: &dyn Module<F>) -> Vec<(String, ArrayD<F>, bool)> {
    let mut v = Vec::new();
    m.visit_params(&mut |name, p| v.push((name.to_string(), p.value(), p.is_trainable())));
    v
}

/// phm-nn → burn → phm-nn keeps every parameter bit for bit, the window, and fixed rules
/// frozen; the configs draw what phm-nn draws from the same seed.
fn round_trip<F: Float>() {
    let dev = Device::default();
    let phm2 = phm_nn::nn::PhmConv2dConfig::new(8, 4, (3, 2), 4)
        .with_stride((2, 1))
        .with_padding((1, 0))
        .with_dilation((1, 2))
        .with_rule(rule_of(4, true))
        .init::<F, _>(&mut rng(1))
        .unwrap();
    let back = PhmConv2d::from_native(&phm2, &dev)
        .unwrap()
        .to_native::<F>()
        .unwrap();
    assert_eq!(params(&back), params(&phm2));
    assert_eq!(back.geometry(), phm2.geometry());

    let phm1 = phm_nn::nn::PhmConv1dConfig::new(4, 6, 3, 2)
        .with_stride(2)
        .with_padding(1)
        .with_dilation(2)
        .init::<F, _>(&mut rng(2))
        .unwrap();
    let back = PhmConv1d::from_native(&phm1, &dev)
        .unwrap()
        .to_native::<F>()
        .unwrap();
    assert_eq!(params(&back), params(&phm1));
    assert_eq!(back.geometry(), phm1.geometry());

    let c2 = phm_nn::nn::Conv2dConfig::new(3, 5, (2, 3))
        .with_padding((1, 1))
        .init::<F, _>(&mut rng(3))
        .unwrap();
    let back = Conv2d::from_native(&c2, &dev)
        .unwrap()
        .to_native::<F>()
        .unwrap();
    assert_eq!(params(&back), params(&c2));
    assert_eq!(back.geometry(), c2.geometry());

    let c1 = phm_nn::nn::Conv1dConfig::new(3, 5, 4)
        .with_stride(3)
        .init::<F, _>(&mut rng(4))
        .unwrap();
    let back = Conv1d::from_native(&c1, &dev)
        .unwrap()
        .to_native::<F>()
        .unwrap();
    assert_eq!(params(&back), params(&c1));
    assert_eq!(back.geometry(), c1.geometry());

    // The configs: one init code path, phm-nn's.
    let cfg = PhmConv2dConfig::new(8, 4, [3, 2], 4)
        .with_stride([2, 1])
        .with_padding([1, 0])
        .with_dilation([1, 2])
        .with_fixed_rules(true)
        .with_seed(1);
    assert_eq!(
        params(&cfg.init::<F>(&dev).unwrap().to_native::<F>().unwrap()),
        params(&phm2)
    );
    let cfg = PhmConv1dConfig::new(4, 6, 3, 2)
        .with_stride(2)
        .with_padding(1)
        .with_dilation(2)
        .with_seed(2);
    assert_eq!(
        params(&cfg.init::<F>(&dev).unwrap().to_native::<F>().unwrap()),
        params(&phm1)
    );
    let cfg = Conv2dConfig::new(3, 5, [2, 3])
        .with_padding([1, 1])
        .with_seed(3);
    assert_eq!(
        params(&cfg.init::<F>(&dev).unwrap().to_native::<F>().unwrap()),
        params(&c2)
    );
    let cfg = Conv1dConfig::new(3, 5, 4).with_stride(3).with_seed(4);
    assert_eq!(
        params(&cfg.init::<F>(&dev).unwrap().to_native::<F>().unwrap()),
        params(&c1)
    );
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
fn bad_configs_are_typed_errors() {
    let dev = Device::default();
    assert!(PhmConv2dConfig::new(6, 8, [3, 3], 4)
        .init::<f64>(&dev)
        .is_err());
    assert!(PhmConv1dConfig::new(4, 8, 3, 4)
        .with_stride(0)
        .init::<f64>(&dev)
        .is_err());
    let layer = PhmConv2dConfig::new(4, 4, [1, 1], 2)
        .init::<f64>(&dev)
        .unwrap();
    assert!(layer.to_native::<f32>().is_err(), "dtype mismatch accepted");
}

#[test]
fn pooling_and_flatten_match_phm_nn() {
    use phm_burn::pool::{Flatten, GlobalAvgPool, MaxPool2d};
    let x = data(12, &[3, 2, 7, 6]);
    for (k, s, p) in [([2, 2], [2, 2], [0, 0]), ([3, 2], [2, 1], [1, 1])] {
        let pool = MaxPool2d::new(k, s, p).unwrap();
        let mut native = pool.to_native();
        let NativeRun {
            y: y_ref,
            g,
            dx: dx_ref,
            ..
        } = native_run(&mut native, &x, 13);
        let (y, dx, _) = burn_run::<4>(&x, &g, |x| pool.forward(x));
        assert_match(&format!("max pool {k:?} {s:?} {p:?} Y"), &y, &y_ref);
        assert_match(&format!("max pool {k:?} {s:?} {p:?} dX"), &dx, &dx_ref);
    }
    assert!(MaxPool2d::new([2, 2], [0, 1], [0, 0]).is_err());
    // phm-nn → burn → phm-nn keeps the window, stride and padding (each of its two axes).
    let native = phm_nn::nn::MaxPool2d::new((3, 2), (2, 1), (1, 0)).unwrap();
    let pool = MaxPool2d::from_native(&native);
    assert_eq!(
        (pool.kernel_size, pool.stride, pool.padding),
        ([3, 2], [2, 1], [1, 0])
    );
    let back = pool.to_native();
    assert_eq!(
        (back.kernel(), back.stride(), back.padding()),
        ((3, 2), (2, 1), (1, 0))
    );
    assert!(MaxPool2d::new([2, 2], [1, 1], [2, 0]).is_err());

    let mut native = phm_nn::nn::GlobalAvgPool::new();
    let y_ref = Module::<f64>::forward(&mut native, x.view());
    let g = data(14, y_ref.shape());
    let dx_ref = Module::<f64>::backward(&mut native, g.view());
    let dev = Device::default().autodiff();
    let xt = tensor_from_array::<f64, 4>(x.view(), &dev).require_grad();
    let y = GlobalAvgPool.forward(xt.clone());
    let grads = (y.clone() * tensor_from_array::<f64, 2>(g.view(), &dev))
        .sum()
        .backward();
    assert_match("global avg Y", &y, &y_ref);
    assert_match("global avg dX", &xt.grad(&grads).unwrap(), &dx_ref);

    let y_ref = Module::<f64>::infer(&phm_nn::nn::Flatten::new(), x.view());
    let y = Flatten.forward(tensor_from_array::<f64, 4>(x.view(), &dev));
    assert_match("flatten", &y, &y_ref);
}

/// One rule set shared by a PHM convolution and a PHM linear head, held by the caller: the
/// rules' gradient sums both uses, as phm-nn's shared handle accumulates it; the phm-nn
/// twins built back share the phm-nn rules.
#[test]
fn shared_rules_across_conv_and_linear_match_phm_nn() {
    use phm_burn::linear::PhmLinear;
    use phm_burn::pool::GlobalAvgPool;
    use phm_burn::rules::PhmRules;
    use phm_nn::nn::PhmRules as NativeRules;
    let mut r = rng(40);
    let native_rules = NativeRules::<f64>::new(2, rule_of(2, false), &mut r).unwrap();
    let full = native_rules.full_param().unwrap();
    let mut conv = phm_nn::nn::PhmConv2dConfig::new(4, 6, 3, 2)
        .with_padding(1)
        .with_stride(2)
        .init_shared::<f64, _>(full, &mut r)
        .unwrap();
    let mut conv1 = phm_nn::nn::PhmConv1dConfig::new(6, 6, 2, 2)
        .init_shared::<f64, _>(full, &mut r)
        .unwrap();
    let mut gap = phm_nn::nn::GlobalAvgPool::new();
    let mut head = phm_nn::PhmLinearConfig::new(6, 4, 2)
        .init_shared::<f64, _>(full, &mut r)
        .unwrap();
    let x = data(41, &[3, 4, 6, 5]);
    // (B, 4, 6, 5) → conv → (B, 6, 3, 3) → reshape (B, 6, 9) → conv1 → (B, 6, 8) → mean → head.
    let h = conv.forward(x.view());
    let h1 = h.clone().into_shape_with_order(IxDyn(&[3, 6, 9])).unwrap();
    let h2 = conv1.forward(h1.view());
    let h3 = Module::<f64>::forward(&mut gap, h2.view());
    let y_ref = head.forward(h3.view());
    let g = data(42, y_ref.shape());
    let d3 = head.backward(g.view());
    let d2 = Module::<f64>::backward(&mut gap, d3.view());
    let d1 = conv1.backward(d2.view());
    let d1 = d1.into_shape_with_order(IxDyn(&[3, 6, 3, 3])).unwrap();
    let dx_ref = conv.backward(d1.view());

    let dev = Device::default().autodiff();
    let rules = PhmRules::from_native(&native_rules, &dev).unwrap();
    let bconv = PhmConv2d::from_native_shared(&conv, &dev);
    let bconv1 = PhmConv1d::from_native_shared(&conv1, &dev);
    let bhead = PhmLinear::from_native_shared(&head, &dev);
    assert!(bconv.rules.is_none() && bconv1.rules.is_none());
    assert!(
        bconv.to_native::<f64>().is_err(),
        "shared conv without rules"
    );
    let (y, dx, grads) = burn_run::<4>(
        &x,
        &g.clone()
            .into_shape_with_order(IxDyn(&[3, 4, 1, 1]))
            .unwrap(),
        |x| {
            let a = rules.matrices();
            let h = bconv.forward_with_rules(x, Some(&a));
            let h = h.reshape([3, 6, 9]);
            let h = bconv1.forward_with_rules(h, Some(&a));
            let y = bhead.forward_with_rules(GlobalAvgPool.forward(h), Some(&a));
            y.reshape([3, 4, 1, 1])
        },
    );
    let y_ref = y_ref.into_shape_with_order(IxDyn(&[3, 4, 1, 1])).unwrap();
    assert_match("shared Y", &y, &y_ref);
    assert_match("shared dX", &dx, &dx_ref);
    let da = grad(rules.rules.as_ref().unwrap(), &grads, "rules");
    assert_match("shared dA", &da, &full.grad());
    assert_match(
        "conv dF",
        &grad(&bconv.blocks, &grads, "blocks"),
        &conv.blocks_param().grad(),
    );
    assert_match(
        "conv1 dF",
        &grad(&bconv1.blocks, &grads, "blocks"),
        &conv1.blocks_param().grad(),
    );

    // Back to phm-nn: the twins share the phm-nn rules and keep the values.
    let back = bconv.to_native_with_rules(&native_rules).unwrap();
    assert!(back.rules_param().is_shared_with(full));
    assert_eq!(back.kernels(), conv.kernels());
    assert_eq!(back.bias(), conv.bias());
    assert_eq!(back.geometry(), conv.geometry());
    let back1 = bconv1.to_native_with_rules(&native_rules).unwrap();
    assert!(back1.rules_param().is_shared_with(full));
    assert_eq!(back1.kernels(), conv1.kernels());
    assert_eq!(back1.geometry(), conv1.geometry());

    // The config builds the same shared layer phm-nn builds from the same seed.
    let cfg = PhmConv2dConfig::new(4, 6, [3, 3], 2)
        .with_padding([1, 1])
        .with_stride([2, 2])
        .with_seed(5);
    let ours = cfg.init_shared::<f64>(&rules, &Device::default()).unwrap();
    let theirs = phm_nn::nn::PhmConv2dConfig::new(4, 6, 3, 2)
        .with_padding(1)
        .with_stride(2)
        .init_shared::<f64, _>(full, &mut rng(5))
        .unwrap();
    let ours = ours.to_native_with_rules(&native_rules).unwrap();
    assert_eq!(ours.kernels(), theirs.kernels());
    assert_eq!(ours.bias(), theirs.bias());
}
