//! Convolutions: forward against a direct loop over the definition, finite-difference
//! gradients (f64) for every layer and option, shared rules, output sizes, errors and panics.
mod common;

use common::{check_gradients_d, rng, uniform_d};
use ndarray::{Array1, Array3, Array4, Array5, ArrayD, Ix1, Ix3, Ix4, Ix5, IxDyn};
use phm_nn::prelude::*;

const KERNELS: [Strategy; 2] = [Strategy::Materialized, Strategy::Factored];

/// `(stride, padding, dilation)` of a 2-D convolution.
type Options2d = ((usize, usize), (usize, usize), (usize, usize));

/// `(stride, padding, dilation)` combinations the 2-D tests sweep.
const OPTIONS_2D: [Options2d; 4] = [
    ((1, 1), (0, 0), (1, 1)),
    ((2, 2), (1, 1), (1, 1)),
    ((1, 2), (2, 1), (2, 1)),
    ((2, 1), (0, 1), (1, 2)),
];

/// `(stride, padding, dilation)` combinations the 1-D tests sweep.
const OPTIONS_1D: [(usize, usize, usize); 3] = [(1, 0, 1), (2, 1, 1), (3, 2, 2)];

/// The definition, one term at a time: `Y[b,o,oh,ow] = bias[o] + Σ K[o,c,i,j] X[b,c,ih,iw]`
/// over in-bounds `ih = oh·s − p + i·d`, `iw = ow·s − p + j·d`.
fn direct_conv2d(
    x: &Array4<f64>,
    k: &Array4<f64>,
    bias: Option<&Array1<f64>>,
    (s, p, d): Options2d,
) -> Array4<f64> {
    let (b, c, h, w) = x.dim();
    let (o, _, kh, kw) = k.dim();
    let ho = (h + 2 * p.0 - d.0 * (kh - 1) - 1) / s.0 + 1;
    let wo = (w + 2 * p.1 - d.1 * (kw - 1) - 1) / s.1 + 1;
    let mut y = Array4::zeros((b, o, ho, wo));
    for ((bi, oi, oh, ow), v) in y.indexed_iter_mut() {
        let mut acc = bias.map_or(0.0, |b| b[oi]);
        for ci in 0..c {
            for i in 0..kh {
                for j in 0..kw {
                    let ih = (oh * s.0 + i * d.0) as isize - p.0 as isize;
                    let iw = (ow * s.1 + j * d.1) as isize - p.1 as isize;
                    if ih >= 0 && iw >= 0 && (ih as usize) < h && (iw as usize) < w {
                        acc += k[[oi, ci, i, j]] * x[[bi, ci, ih as usize, iw as usize]];
                    }
                }
            }
        }
        *v = acc;
    }
    y
}

/// `K[r·O + o, c·I + q, …] = Σ_i A_i[r, c] F_i[o, q, …]` (O = C_out/n, I = C_in/n), entry by
/// entry.
fn kron_kernel(a: &Array3<f64>, f: &Array5<f64>) -> Array4<f64> {
    let (n, o, q, kh, kw) = f.dim();
    Array4::from_shape_fn((n * o, n * q, kh, kw), |(row, col, i, j)| {
        (0..n)
            .map(|t| a[[t, row / o, col / q]] * f[[t, row % o, col % q, i, j]])
            .sum()
    })
}

fn random_phm2d(
    c_in: usize,
    c_out: usize,
    n: usize,
    kernel: (usize, usize),
    bias: bool,
    seed: u64,
) -> (Array3<f64>, Array5<f64>, Option<Array1<f64>>) {
    let mut r = rng(seed);
    let a = uniform_d(&mut r, &[n, n, n])
        .into_dimensionality::<Ix3>()
        .unwrap();
    let f = uniform_d(&mut r, &[n, c_out / n, c_in / n, kernel.0, kernel.1])
        .into_dimensionality::<Ix5>()
        .unwrap();
    let b = bias.then(|| {
        uniform_d(&mut r, &[c_out])
            .into_dimensionality::<Ix1>()
            .unwrap()
    });
    (a, f, b)
}

#[test]
fn phm_conv2d_is_the_convolution_with_the_kronecker_kernel() {
    // n = 2 with 4 input channels: each column segment must hold its own input channels.
    for (n, c_in, c_out) in [(1, 2, 3), (2, 4, 6), (4, 4, 8)] {
        for (idx, opts) in OPTIONS_2D.into_iter().enumerate() {
            let (a, f, b) = random_phm2d(c_in, c_out, n, (3, 2), idx % 2 == 0, 5 + idx as u64);
            let x = uniform_d(&mut rng(50), &[2, c_in, 6, 5])
                .into_dimensionality::<Ix4>()
                .unwrap();
            let k = kron_kernel(&a, &f);
            let expected = direct_conv2d(&x, &k, b.as_ref(), opts);
            for strategy in KERNELS {
                let mut layer =
                    PhmConv2d::from_parts(a.clone(), f.clone(), b.clone(), opts.0, opts.1, opts.2)
                        .unwrap();
                layer.linear_mut().set_strategy(strategy);
                assert!(layer.weight().abs_diff_eq(&k, 1e-13), "built K, n = {n}");
                assert_eq!(layer.kernels(), f);
                let y = layer.forward(x.view().into_dyn());
                let y = y.into_dimensionality::<Ix4>().unwrap();
                assert!(y.abs_diff_eq(&expected, 1e-12), "n = {n}, options {opts:?}");
                assert!(layer
                    .infer(x.view().into_dyn())
                    .abs_diff_eq(&y.clone().into_dyn(), 1e-12));
            }
            let dense = Conv2d::from_parts(k.clone(), b.clone(), opts.0, opts.1, opts.2).unwrap();
            let y = dense
                .infer(x.view().into_dyn())
                .into_dimensionality::<Ix4>()
                .unwrap();
            assert!(y.abs_diff_eq(&expected, 1e-12), "dense, options {opts:?}");
        }
    }
}

#[test]
fn conv1d_layers_are_the_height_one_convolution() {
    let mut r = rng(3);
    for (s, p, d) in OPTIONS_1D {
        let (n, c_in, c_out, k) = (2, 4, 6, 3);
        let a = uniform_d(&mut r, &[n, n, n])
            .into_dimensionality::<Ix3>()
            .unwrap();
        let f = uniform_d(&mut r, &[n, c_out / n, c_in / n, k])
            .into_dimensionality::<Ix4>()
            .unwrap();
        let b = uniform_d(&mut r, &[c_out])
            .into_dimensionality::<Ix1>()
            .unwrap();
        let x = uniform_d(&mut r, &[2, c_in, 10]);
        let f5 = f.clone().insert_axis(ndarray::Axis(3));
        let k4 = kron_kernel(&a, &f5);
        let x4 = x
            .clone()
            .insert_axis(ndarray::Axis(2))
            .into_dimensionality::<Ix4>()
            .unwrap();
        let expected = direct_conv2d(&x4, &k4, Some(&b), ((1, s), (0, p), (1, d)))
            .index_axis_move(ndarray::Axis(2), 0)
            .into_dyn();
        let phm = PhmConv1d::from_parts(a, f, Some(b.clone()), s, p, d).unwrap();
        assert!(phm
            .weight()
            .abs_diff_eq(&k4.index_axis(ndarray::Axis(2), 0), 1e-13));
        assert!(phm.infer(x.view()).abs_diff_eq(&expected, 1e-12));
        let k3 = k4.index_axis_move(ndarray::Axis(2), 0);
        let dense = Conv1d::from_parts(k3, Some(b), s, p, d).unwrap();
        assert!(dense.infer(x.view()).abs_diff_eq(&expected, 1e-12));
    }
}

#[test]
fn gradients_dense_conv2d() {
    let mut r = rng(1);
    for (idx, (s, p, d)) in OPTIONS_2D.into_iter().enumerate() {
        let mut layer = Conv2dConfig::new(2, 3, (2, 3))
            .with_stride(s)
            .with_padding(p)
            .with_dilation(d)
            .with_bias(idx != 2)
            .init::<f64, _>(&mut r)
            .unwrap();
        let x = uniform_d(&mut r, &[2, 2, 5, 6]);
        check_gradients_d(&mut layer, &x, 10 + idx as u64, 1e-6);
    }
}

#[test]
fn gradients_phm_conv2d_learned_rules_both_kernels() {
    let mut r = rng(2);
    for n in [1, 2] {
        for (idx, (s, p, d)) in OPTIONS_2D.into_iter().enumerate() {
            for strategy in KERNELS {
                let (a, f, b) = random_phm2d(2, 4, n, (2, 3), idx != 1, 20 + idx as u64);
                let mut layer = PhmConv2d::from_parts(a, f, b, s, p, d).unwrap();
                layer.linear_mut().set_strategy(strategy);
                let x = uniform_d(&mut r, &[2, 2, 5, 6]);
                check_gradients_d(&mut layer, &x, 30 + idx as u64, 1e-6);
            }
        }
    }
}

#[test]
fn gradients_phm_conv2d_fixed_rules() {
    let mut r = rng(4);
    for (algebra, c) in [(Algebra::Complex, 2), (Algebra::Quaternion, 4)] {
        let n = algebra.dim();
        for strategy in KERNELS {
            let mut layer = PhmConv2dConfig::new(c, c, 2, n)
                .with_rule(Rule::Fixed(algebra))
                .with_padding(1)
                .with_stride((1, 2))
                .init::<f64, _>(&mut r)
                .unwrap();
            assert!(!layer.rules_trainable());
            layer.linear_mut().set_strategy(strategy);
            let x = uniform_d(&mut r, &[2, c, 3, 4]);
            check_gradients_d(&mut layer, &x, 5, 1e-6);
        }
    }
}

#[test]
fn gradients_dense_and_phm_conv1d() {
    let mut r = rng(5);
    for (idx, (s, p, d)) in OPTIONS_1D.into_iter().enumerate() {
        let mut dense = Conv1dConfig::new(2, 3, 3)
            .with_stride(s)
            .with_padding(p)
            .with_dilation(d)
            .with_bias(idx != 1)
            .init::<f64, _>(&mut r)
            .unwrap();
        let x = uniform_d(&mut r, &[2, 2, 9]);
        check_gradients_d(&mut dense, &x, 40 + idx as u64, 1e-6);
        for strategy in KERNELS {
            let mut phm = PhmConv1dConfig::new(2, 4, 3, 2)
                .with_stride(s)
                .with_padding(p)
                .with_dilation(d)
                .with_bias(idx != 0)
                .init::<f64, _>(&mut r)
                .unwrap();
            phm.linear_mut().set_strategy(strategy);
            check_gradients_d(&mut phm, &x, 50 + idx as u64, 1e-6);
        }
        let mut quat = PhmConv1dConfig::new(4, 4, 2, 4)
            .with_rule(Rule::Fixed(Algebra::Quaternion))
            .with_stride(s)
            .with_padding(p)
            .with_dilation(d)
            .init::<f64, _>(&mut r)
            .unwrap();
        check_gradients_d(&mut quat, &uniform_d(&mut r, &[1, 4, 7]), 60, 1e-6);
    }
}

/// One rule tensor shared by two 2-D PHC layers of different sizes and a PHM linear layer:
/// its gradient collects all three uses, and it is one parameter.
#[test]
fn shared_rules_across_conv_and_linear_layers() {
    let mut r = rng(6);
    let first = PhmConv2dConfig::new(2, 4, 2, 2)
        .with_padding(1)
        .init::<f64, _>(&mut r)
        .unwrap();
    let rules = first.rules_param().share();
    let second = PhmConv2dConfig::new(4, 2, (2, 1), 2)
        .with_stride(2)
        .init_shared::<f64, _>(&rules, &mut r)
        .unwrap();
    let head = PhmLinearConfig::new(2, 4, 2)
        .init_shared::<f64, _>(&rules, &mut r)
        .unwrap();
    let mut model = Sequential::new()
        .add(first)
        .add(Tanh::new())
        .add(second)
        .add(GlobalAvgPool::new())
        .add(head);
    let paths: Vec<String> = params(&model).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        ["0.rules", "0.blocks", "0.bias", "2.blocks", "2.bias", "4.blocks", "4.bias"]
    );
    assert_eq!(
        model.num_parameters(),
        8 + 2 * 4 * 4 / 2 + 4 + 4 * 2 * 2 / 2 + 2 + 4 + 4
    );
    let x = uniform_d(&mut r, &[2, 2, 4, 3]);
    check_gradients_d(&mut model, &x, 7, 1e-6);
}

/// Forward twice, backward in reverse order: each backward uses its own forward's state.
#[test]
fn saved_states_form_a_stack() {
    let mut r = rng(8);
    let mut layer = PhmConv2dConfig::new(2, 2, 3, 2)
        .with_padding(1)
        .init::<f64, _>(&mut r)
        .unwrap();
    let (x1, x2) = (
        uniform_d(&mut r, &[1, 2, 4, 4]),
        uniform_d(&mut r, &[2, 2, 3, 5]),
    );
    let (g1, g2) = (
        uniform_d(&mut r, &[1, 2, 4, 4]),
        uniform_d(&mut r, &[2, 2, 3, 5]),
    );
    let separate = |x: &ArrayD<f64>, g: &ArrayD<f64>| {
        let mut l = layer.clone();
        l.zero_grad();
        l.forward(x.view());
        (l.backward(g.view()), l.blocks_param().grad())
    };
    let ((dx1, db1), (dx2, db2)) = (separate(&x1, &g1), separate(&x2, &g2));
    layer.zero_grad();
    layer.forward(x1.view());
    layer.forward(x2.view());
    assert_eq!(layer.pending(), 2);
    assert!(layer.backward(g2.view()).abs_diff_eq(&dx2, 1e-12));
    assert!(layer.backward(g1.view()).abs_diff_eq(&dx1, 1e-12));
    assert_eq!(layer.pending(), 0);
    assert!(layer
        .blocks_param()
        .grad()
        .abs_diff_eq(&(&db1 + &db2), 1e-12));
}

#[test]
fn output_size_is_pytorchs_formula() {
    let mut r = rng(9);
    // ⌊(7 + 2·1 − 2·(3 − 1) − 1)/2⌋ + 1 = 3 and ⌊(10 + 0 − 1·(2 − 1) − 1)/3⌋ + 1 = 3.
    let conv = Conv2dConfig::new(1, 1, (3, 2))
        .with_stride((2, 3))
        .with_padding((1, 0))
        .with_dilation((2, 1))
        .init::<f32, _>(&mut r)
        .unwrap();
    assert_eq!(conv.output_shape(&[5, 1, 7, 10]), Some(vec![5, 1, 3, 3]));
    assert_eq!(
        conv.infer(ArrayD::zeros(IxDyn(&[5, 1, 7, 10])).view())
            .shape(),
        &[5, 1, 3, 3]
    );
    assert_eq!(conv.output_shape(&[5, 2, 7, 10]), None, "wrong channels");
    // A kernel exactly as large as the padded input gives one position.
    let phm = PhmConv1dConfig::new(2, 2, 5, 2)
        .with_padding(1)
        .init::<f32, _>(&mut r)
        .unwrap();
    assert_eq!(phm.output_shape(&[1, 2, 3]), Some(vec![1, 2, 1]));
    assert_eq!(phm.output_shape(&[1, 2, 2]), None);
}

#[test]
fn parameter_counts_and_descriptions() {
    let mut r = rng(10);
    let dense = Conv2dConfig::new(64, 64, 3).init::<f32, _>(&mut r).unwrap();
    assert_eq!(dense.num_parameters(), 64 * 64 * 9 + 64);
    for n in [2, 4, 8] {
        let phm = PhmConv2dConfig::new(64, 64, 3, n)
            .init::<f32, _>(&mut r)
            .unwrap();
        assert_eq!(phm.num_parameters(), n * n * n + 64 * 64 * 9 / n + 64);
        assert_eq!(phm.weight().dim(), (64, 64, 3, 3));
    }
    let quat = PhmConv2dConfig::new(8, 4, 3, 4)
        .with_rule(Rule::Fixed(Algebra::Quaternion))
        .with_bias(false)
        .with_stride(2)
        .init::<f32, _>(&mut r)
        .unwrap();
    assert_eq!(quat.num_parameters(), 4 * 8 * 9 / 4);
    assert_eq!(quat.num_frozen_parameters(), 64);
    assert_eq!(
        quat.describe(),
        "PhmConv2d(8 → 4, kernel 3×3, n = 4, fixed rules, stride 2, no bias)"
    );
    let c1 = Conv1dConfig::new(3, 5, 7)
        .with_dilation(2)
        .init::<f32, _>(&mut r)
        .unwrap();
    assert_eq!(c1.describe(), "Conv1d(3 → 5, kernel 7, dilation 2)");
    assert_eq!(c1.weight().dim(), (5, 3, 7));
}

#[test]
fn config_errors() {
    let mut r = rng(11);
    let err = |e: PhmError| e.to_string();
    let e = PhmConv2dConfig::new(6, 8, 3, 4)
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert!(
        matches!(
            e,
            PhmError::NotDivisible {
                what: "in_channels",
                size: 6,
                n: 4
            }
        ),
        "{e}"
    );
    let e = PhmConv1dConfig::new(8, 6, 3, 4)
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert!(
        matches!(
            e,
            PhmError::NotDivisible {
                what: "out_channels",
                size: 6,
                n: 4
            }
        ),
        "{e}"
    );
    // 3·3·3 = 27 columns would not tell: the channels are checked, not C_in·kh·kw.
    let e = PhmConv2dConfig::new(3, 3, 3, 3).init::<f32, _>(&mut r);
    assert!(e.is_ok());
    let e = PhmConv2dConfig::new(2, 3, 3, 3)
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert!(matches!(
        e,
        PhmError::NotDivisible {
            what: "in_channels",
            ..
        }
    ));
    assert!(matches!(
        PhmConv2dConfig::new(4, 4, 3, 0)
            .init::<f32, _>(&mut r)
            .unwrap_err(),
        PhmError::ZeroN
    ));
    let e = Conv2dConfig::new(2, 2, 3)
        .with_stride((1, 0))
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert!(err(e).contains("stride"));
    let e = Conv1dConfig::new(2, 2, 3)
        .with_stride(0)
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert!(matches!(
        e,
        PhmError::InvalidArgument { what: "stride", .. }
    ));
    let e = PhmConv1dConfig::new(2, 2, 3, 2)
        .with_dilation(0)
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert!(matches!(
        e,
        PhmError::InvalidArgument {
            what: "dilation",
            ..
        }
    ));
    let e = Conv2dConfig::new(2, 2, (0, 3))
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert!(matches!(
        e,
        PhmError::ZeroSize {
            what: "kernel_size"
        }
    ));
    let e = Conv2dConfig::new(2, 0, 3)
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert!(matches!(
        e,
        PhmError::ZeroSize {
            what: "out_channels"
        }
    ));
    let e = PhmConv2dConfig::new(4, 4, 3, 2)
        .with_rule(Rule::Fixed(Algebra::Quaternion))
        .init::<f32, _>(&mut r)
        .unwrap_err();
    assert!(matches!(e, PhmError::InvalidArgument { what: "rule", .. }));
    let rules = PhmLinearConfig::new(4, 4, 4)
        .new_rules::<f32, _>(&mut r)
        .unwrap();
    let e = PhmConv2dConfig::new(4, 4, 3, 2)
        .init_shared(&rules, &mut r)
        .unwrap_err();
    assert!(matches!(e, PhmError::ShapeMismatch { what: "rules", .. }));
    // from_parts: a bias of the wrong length.
    let e = Conv2d::<f32>::from_parts(Array4::zeros((3, 2, 1, 1)), Some(Array1::zeros(2)), 1, 0, 1)
        .unwrap_err();
    assert!(matches!(e, PhmError::ShapeMismatch { what: "bias", .. }));
    // The kernel larger than the padded input, as an error from the geometry.
    let g = phm_nn::kernels::im2col::ConvGeometry::new(1, (5, 3), (1, 1), (1, 0), (1, 1)).unwrap();
    let e = g.output_size(2, 3).unwrap_err().to_string();
    assert!(e.contains("spans 5") && e.contains("only 4"), "{e}");
    assert_eq!(g.output_size(3, 3).unwrap(), (1, 1));
}

#[test]
#[should_panic(
    expected = "Conv1d::forward: input has shape [1, 1, 4]: invalid kernel_size: the dilated kernel spans 5 along width (kernel 3, dilation 2) but the padded input has only 4"
)]
fn kernel_larger_than_padded_input_panics_in_forward() {
    let mut layer = Conv1dConfig::new(1, 1, 3)
        .with_dilation(2)
        .init::<f64, _>(&mut rng(0))
        .unwrap();
    layer.forward(ArrayD::zeros(IxDyn(&[1, 1, 4])).view());
}

#[test]
#[should_panic(
    expected = "input has shape [2, 3, 5, 5], expected [batch, channels, height, width] with 4 channels"
)]
fn wrong_channels_panic_naming_both_shapes() {
    let layer = PhmConv2dConfig::new(4, 4, 3, 2)
        .init::<f64, _>(&mut rng(0))
        .unwrap();
    layer.infer(ArrayD::zeros(IxDyn(&[2, 3, 5, 5])).view());
}

#[test]
#[should_panic(
    expected = "Conv2d::backward: grad_output has shape [1, 2, 3, 3], expected [1, 2, 2, 2]"
)]
fn wrong_grad_shape_panics() {
    let mut layer = Conv2dConfig::new(1, 2, 2)
        .init::<f64, _>(&mut rng(0))
        .unwrap();
    layer.forward(ArrayD::zeros(IxDyn(&[1, 1, 3, 3])).view());
    layer.backward(ArrayD::zeros(IxDyn(&[1, 2, 3, 3])).view());
}

/// f32 layers agree with f64 layers on the same parameters.
#[test]
fn f32_matches_f64() {
    let (a, f, b) = random_phm2d(4, 4, 2, (3, 3), true, 12);
    let x = uniform_d(&mut rng(13), &[2, 4, 5, 5]);
    let l64 = PhmConv2d::from_parts(a.clone(), f.clone(), b.clone(), 1, 1, 1).unwrap();
    let l32 = PhmConv2d::from_parts(
        a.mapv(|v| v as f32),
        f.mapv(|v| v as f32),
        b.map(|b| b.mapv(|v| v as f32)),
        1,
        1,
        1,
    )
    .unwrap();
    let y64 = l64.infer(x.view());
    let y32 = l32.infer(x.mapv(|v| v as f32).view());
    for (p, q) in y64.iter().zip(y32.iter()) {
        assert!((p - *q as f64).abs() < 1e-4);
    }
}

#[test]
#[should_panic(expected = "PhmConv1d::backward called before forward")]
fn backward_without_forward_panics() {
    let mut layer = PhmConv1dConfig::new(2, 2, 3, 2)
        .init::<f64, _>(&mut rng(0))
        .unwrap();
    layer.backward(ArrayD::zeros(IxDyn(&[1, 2, 1])).view());
}
