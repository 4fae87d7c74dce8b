//! The per-image lowering of convolutions (transposed im2col, products written channels-first,
//! images split across threads): forward, input, kernel and bias gradients against plain
//! loops over the definition at odd shapes (stride 2, dilation, padding, 1×1, batch 1 and 3,
//! channel counts that are multiples of nothing), f32 and f64, 1 and 2 threads; the PHC kernel
//! cache follows parameter changes.
mod common;

use common::{rng, uniform_d};
use ndarray::{Array1, Array3, Array4, Array5, ArrayD, Ix1, Ix3, Ix4, Ix5};
use phm_nn::prelude::*;

/// `(stride, padding, dilation)`.
type Options = ((usize, usize), (usize, usize), (usize, usize));

/// `(batch, C_in, C_out, (kh, kw), options, (H, W))`.
type Case = (usize, usize, usize, (usize, usize), Options, (usize, usize));

/// Odd shapes: stride 2, dilation, padding wider than the kernel, 1×1 (with and without
/// stride), "same" 3×3, batch 1 and 3, prime channel counts, rectangular everything.
const CASES: [Case; 9] = [
    (3, 5, 7, (3, 3), ((1, 1), (1, 1), (1, 1)), (7, 6)),
    (1, 3, 2, (3, 3), ((2, 2), (1, 1), (1, 1)), (9, 8)),
    (3, 7, 5, (1, 1), ((1, 1), (0, 0), (1, 1)), (5, 4)),
    (3, 5, 3, (1, 1), ((2, 1), (1, 0), (1, 1)), (5, 5)),
    (1, 2, 3, (3, 2), ((1, 2), (2, 1), (2, 1)), (6, 7)),
    (3, 3, 5, (2, 3), ((2, 1), (0, 3), (1, 2)), (8, 5)),
    (3, 1, 1, (5, 5), ((1, 1), (2, 2), (1, 1)), (3, 4)),
    (1, 5, 7, (3, 3), ((1, 1), (2, 2), (2, 2)), (6, 5)),
    (3, 2, 3, (4, 4), ((3, 1), (3, 2), (1, 1)), (2, 3)),
];

/// Input row and column read by output `(oh, ow)` at tap `(i, j)`, if inside the input.
fn source(
    (oh, ow): (usize, usize),
    (i, j): (usize, usize),
    (s, p, d): Options,
    (h, w): (usize, usize),
) -> Option<(usize, usize)> {
    let ih = (oh * s.0 + i * d.0) as isize - p.0 as isize;
    let iw = (ow * s.1 + j * d.1) as isize - p.1 as isize;
    ((0..h as isize).contains(&ih) && (0..w as isize).contains(&iw))
        .then_some((ih as usize, iw as usize))
}

/// Forward and every gradient from the definition, one term at a time:
/// `Y = Σ K X + b`, `dX[b,c,ih,iw] = Σ G[b,o,oh,ow] K[o,c,i,j]`,
/// `dK[o,c,i,j] = Σ G[b,o,oh,ow] X[b,c,ih,iw]`, `db[o] = Σ G[b,o,…]`.
fn definition(
    x: &Array4<f64>,
    k: &Array4<f64>,
    bias: &Array1<f64>,
    g: &Array4<f64>,
    opts: Options,
) -> (Array4<f64>, Array4<f64>, Array4<f64>, Array1<f64>) {
    let (batch, c, h, w) = x.dim();
    let (o, _, kh, kw) = k.dim();
    let (_, _, ho, wo) = g.dim();
    let mut y = Array4::zeros((batch, o, ho, wo));
    let mut dx = Array4::zeros(x.raw_dim());
    let mut dk = Array4::zeros(k.raw_dim());
    let mut db = Array1::zeros(o);
    for b in 0..batch {
        for oi in 0..o {
            for oh in 0..ho {
                for ow in 0..wo {
                    let gv = g[[b, oi, oh, ow]];
                    y[[b, oi, oh, ow]] += bias[oi];
                    db[oi] += gv;
                    for ci in 0..c {
                        for i in 0..kh {
                            for j in 0..kw {
                                if let Some((ih, iw)) = source((oh, ow), (i, j), opts, (h, w)) {
                                    y[[b, oi, oh, ow]] += k[[oi, ci, i, j]] * x[[b, ci, ih, iw]];
                                    dx[[b, ci, ih, iw]] += gv * k[[oi, ci, i, j]];
                                    dk[[oi, ci, i, j]] += gv * x[[b, ci, ih, iw]];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (y, dx, dk, db)
}

/// Small integers (exact in f32 and f64 sums of the sizes used here).
fn integers(shape: &[usize], seed: u64) -> ArrayD<f64> {
    uniform_d(&mut rng(seed), shape).mapv(|v| (v * 4.0).round())
}

fn output_size(case: &Case) -> (usize, usize) {
    let (_, _, _, (kh, kw), (s, p, d), (h, w)) = *case;
    (
        (h + 2 * p.0 - d.0 * (kh - 1) - 1) / s.0 + 1,
        (w + 2 * p.1 - d.1 * (kw - 1) - 1) / s.1 + 1,
    )
}

/// The layer's forward, `dX`, `dK`, `db` in f64 for `F` parameters and data.
fn run_dense<F: Float>(
    x: &Array4<f64>,
    k: &Array4<f64>,
    bias: &Array1<f64>,
    g: &Array4<f64>,
    (s, p, d): Options,
) -> [ArrayD<f64>; 4] {
    let cast = |a: &ArrayD<f64>| a.mapv(|v| F::from(v).unwrap());
    let back = |a: &ArrayD<F>| a.mapv(|v| v.to_f64().unwrap());
    let mut layer = Conv2d::from_parts(
        cast(&k.clone().into_dyn())
            .into_dimensionality::<Ix4>()
            .unwrap(),
        Some(
            cast(&bias.clone().into_dyn())
                .into_dimensionality::<Ix1>()
                .unwrap(),
        ),
        s,
        p,
        d,
    )
    .unwrap();
    let xf = cast(&x.clone().into_dyn());
    let y = layer.forward(xf.view());
    assert_eq!(back(&layer.infer(xf.view())), back(&y), "infer = forward");
    let dx = layer.backward(cast(&g.clone().into_dyn()).view());
    [
        back(&y),
        back(&dx),
        back(&layer.weight_param().grad()),
        back(&layer.bias_param().unwrap().grad()),
    ]
}

fn assert_close(got: &ArrayD<f64>, want: &ArrayD<f64>, tol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (a, b) in got.iter().zip(want) {
        assert!(
            (a - b).abs() <= tol * scale,
            "{what}: got {a}, expected {b} (tolerance {tol} × {scale})"
        );
    }
}

fn check_cases<F: Float>(tol: f64, threads: usize) {
    // Split even small passes, so that the split paths are the ones checked.
    phm_nn::kernels::set_elementwise_min_work(0);
    phm_nn::kernels::set_num_threads(threads);
    for (idx, case) in CASES.iter().enumerate() {
        let (batch, c_in, c_out, (kh, kw), opts, (h, w)) = *case;
        let (ho, wo) = output_size(case);
        let seed = 100 * idx as u64;
        let x = uniform_d(&mut rng(seed), &[batch, c_in, h, w])
            .into_dimensionality::<Ix4>()
            .unwrap();
        let k = uniform_d(&mut rng(seed + 1), &[c_out, c_in, kh, kw])
            .into_dimensionality::<Ix4>()
            .unwrap();
        let bias = uniform_d(&mut rng(seed + 2), &[c_out])
            .into_dimensionality::<Ix1>()
            .unwrap();
        let g = uniform_d(&mut rng(seed + 3), &[batch, c_out, ho, wo])
            .into_dimensionality::<Ix4>()
            .unwrap();
        let want = definition(&x, &k, &bias, &g, opts);
        let got = run_dense::<F>(&x, &k, &bias, &g, opts);
        let want = [
            want.0.into_dyn(),
            want.1.into_dyn(),
            want.2.into_dyn(),
            want.3.into_dyn(),
        ];
        for (what, (got, want)) in ["forward", "dX", "dK", "db"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            assert_close(
                got,
                want,
                tol,
                &format!("case {idx} {case:?}, {threads} threads: {what}"),
            );
        }
    }
}

#[test]
fn dense_lowering_is_the_definition_f64() {
    check_cases::<f64>(1e-12, 1);
    check_cases::<f64>(1e-12, 2);
}

#[test]
fn dense_lowering_is_the_definition_f32() {
    check_cases::<f32>(1e-5, 1);
    check_cases::<f32>(1e-5, 2);
}

/// With enough work to split the batch across two threads (over 2¹⁹ multiply-adds; batches
/// of 3, 5, 7 images: chunks of unequal sizes; and batch 1, never split), every output and
/// gradient is bitwise the one-thread result and the definition's (integer data: every sum
/// is exact in f32 and f64).
#[test]
fn two_threads_equal_one_thread() {
    for (batch, c_in, c_out, hw, opts) in [
        (5, 8, 8, (16, 16), ((1, 1), (1, 1), (1, 1))),
        (7, 6, 8, (20, 18), ((2, 1), (1, 2), (1, 2))),
        (3, 16, 16, (32, 32), ((1, 1), (0, 0), (1, 1))),
        (1, 6, 6, (12, 12), ((1, 1), (1, 1), (1, 1))),
    ] {
        let (kh, kw) = if opts.1 == (0, 0) { (1, 1) } else { (3, 3) };
        let case: Case = (batch, c_in, c_out, (kh, kw), opts, hw);
        let (ho, wo) = output_size(&case);
        let x = integers(&[batch, c_in, hw.0, hw.1], 1)
            .into_dimensionality::<Ix4>()
            .unwrap();
        let k = integers(&[c_out, c_in, kh, kw], 2)
            .into_dimensionality::<Ix4>()
            .unwrap();
        let bias = integers(&[c_out], 3).into_dimensionality::<Ix1>().unwrap();
        let g = integers(&[batch, c_out, ho, wo], 4)
            .into_dimensionality::<Ix4>()
            .unwrap();
        let want = definition(&x, &k, &bias, &g, opts);
        let want = [
            want.0.into_dyn(),
            want.1.into_dyn(),
            want.2.into_dyn(),
            want.3.into_dyn(),
        ];
        phm_nn::kernels::set_num_threads(1);
        let one64 = run_dense::<f64>(&x, &k, &bias, &g, opts);
        let one32 = run_dense::<f32>(&x, &k, &bias, &g, opts);
        // Split even small passes, so that the split paths are the ones checked.
        phm_nn::kernels::set_elementwise_min_work(0);
        phm_nn::kernels::set_num_threads(2);
        let two64 = run_dense::<f64>(&x, &k, &bias, &g, opts);
        let two32 = run_dense::<f32>(&x, &k, &bias, &g, opts);
        phm_nn::kernels::set_num_threads(1);
        for i in 0..4 {
            assert_eq!(one64[i], want[i], "{case:?}: f64, 1 thread, output {i}");
            assert_eq!(two64[i], one64[i], "{case:?}: f64, 2 threads, output {i}");
            assert_eq!(one32[i], want[i], "{case:?}: f32, 1 thread, output {i}");
            assert_eq!(two32[i], one32[i], "{case:?}: f32, 2 threads, output {i}");
        }
    }
}

fn kron_kernel(a: &Array3<f64>, f: &Array5<f64>) -> Array4<f64> {
    let (n, o, q, kh, kw) = f.dim();
    Array4::from_shape_fn((n * o, n * q, kh, kw), |(row, col, i, j)| {
        (0..n)
            .map(|t| a[[t, row / o, col / q]] * f[[t, row % o, col % q, i, j]])
            .sum()
    })
}

/// PHC runs the dense lowering on `K = Σ A_i ⊗ F_i`: its forward and input gradient are the
/// definition's with that kernel, at 1 and 2 threads, with and without the cached `K`; after
/// a parameter changes, both `forward` and `infer` use the new kernel (the cache is not
/// stale).
#[test]
fn phc_uses_the_current_kronecker_kernel() {
    let opts = ((1, 1), (1, 1), (1, 1));
    let (batch, c_in, c_out, n) = (3, 8, 12, 4);
    let a = uniform_d(&mut rng(7), &[n, n, n])
        .into_dimensionality::<Ix3>()
        .unwrap();
    let f = uniform_d(&mut rng(8), &[n, c_out / n, c_in / n, 3, 3])
        .into_dimensionality::<Ix5>()
        .unwrap();
    let bias = uniform_d(&mut rng(9), &[c_out])
        .into_dimensionality::<Ix1>()
        .unwrap();
    let x = uniform_d(&mut rng(10), &[batch, c_in, 7, 9])
        .into_dimensionality::<Ix4>()
        .unwrap();
    let g = uniform_d(&mut rng(11), &[batch, c_out, 7, 9])
        .into_dimensionality::<Ix4>()
        .unwrap();
    // Split even small passes, so that the split paths are the ones checked.
    phm_nn::kernels::set_elementwise_min_work(0);
    for threads in [1, 2] {
        phm_nn::kernels::set_num_threads(threads);
        let mut layer =
            PhmConv2d::from_parts(a.clone(), f.clone(), Some(bias.clone()), 1, 1, 1).unwrap();
        for _ in 0..2 {
            let k = kron_kernel(&layer.rules(), &layer.kernels());
            let (y, dx, _, db) = definition(&x, &k, &layer.bias().unwrap(), &g, opts);
            let fresh = layer.infer(x.view().into_dyn());
            assert_close(&fresh, &y.clone().into_dyn(), 1e-12, "infer, K built");
            layer.zero_grad();
            let out = layer.forward(x.view().into_dyn());
            assert_close(&out, &y.clone().into_dyn(), 1e-12, "forward");
            assert!(layer.linear().weight_is_current(), "forward caches K");
            let cached = layer.infer(x.view().into_dyn());
            assert_close(&cached, &y.clone().into_dyn(), 1e-12, "infer, K cached");
            let got_dx = layer.backward(g.view().into_dyn());
            assert_close(&got_dx, &dx.into_dyn(), 1e-12, "dX");
            assert_close(
                &layer.bias_param().unwrap().grad(),
                &db.into_dyn(),
                1e-12,
                "db",
            );
            // An optimizer-like change of every parameter: the cached K is stale now.
            layer.visit_params(&mut |_, p| {
                p.write().value_mut().mapv_inplace(|v| 0.5 * v + 0.25);
            });
            assert!(
                !layer.linear().weight_is_current(),
                "K is stale after a change"
            );
        }
    }
    phm_nn::kernels::set_num_threads(1);
}
