//! Property tests: the GEMM-built weight against the naive Kronecker sum, n = 1 against a
//! dense layer, f32 against f64, and the weight-gradient map against its definition.
mod common;

use approx::AbsDiffEq;
use ndarray::{Array1, Array2, Array3, Axis};
use phm_nn::kernels::phm;
use phm_nn::{Linear, Module, PhmLinear};
use proptest::prelude::*;

/// Sizes `(n, p, q, batch)` and a seed: blocks are `p × q`, so `k = n·p`, `d = n·q`.
fn sizes() -> impl Strategy<Value = (usize, usize, usize, usize, u64)> {
    (
        prop::sample::select(vec![1usize, 2, 3, 4, 8]),
        1usize..5,
        1usize..5,
        1usize..6,
        any::<u64>(),
    )
}

fn random3(seed: u64, shape: (usize, usize, usize)) -> Array3<f64> {
    common::xorshift(seed, shape)
}

fn naive_weight(a: &Array3<f64>, s: &Array3<f64>) -> Array2<f64> {
    let n = a.dim().0;
    let (p, q) = (s.dim().1, s.dim().2);
    let mut w = Array2::zeros((n * p, n * q));
    for i in 0..n {
        w += &phm::kron(a.index_axis(Axis(0), i), s.index_axis(Axis(0), i));
    }
    w
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn gemm_weight_equals_kron_sum((n, p, q, _b, seed) in sizes()) {
        let a = random3(seed, (n, n, n));
        let s = random3(seed.wrapping_add(1), (n, p, q));
        let w = phm::build_weight(a.view(), s.view()).unwrap();
        prop_assert!(w.abs_diff_eq(&naive_weight(&a, &s), 1e-12));
        // Non-standard layouts are accepted too.
        use ndarray::ShapeBuilder;
        let mut a_col_major = Array3::zeros((n, n, n).f());
        a_col_major.assign(&a);
        let w2 = phm::build_weight(a_col_major.view(), s.view()).unwrap();
        prop_assert_eq!(w2, w);
    }

    #[test]
    fn weight_grad_map_is_the_adjoint((n, p, q, _b, seed) in sizes()) {
        // <dW, W(A, S)> is linear in A for fixed S and in S for fixed A, so
        // dA[i,r,c] = <dW, A-unit(i,r,c) ⊗ S_i> and dS[i,u,v] = <dW, A_i ⊗ S-unit(u,v)>.
        let a = random3(seed, (n, n, n));
        let s = random3(seed.wrapping_add(7), (n, p, q));
        let dw = random3(seed.wrapping_add(9), (1, n * p, n * q)).index_axis_move(Axis(0), 0);
        let (da, ds) = phm::weight_grad_to_parts(a.view(), s.view(), dw.view()).unwrap();
        for ((i, r, c), got) in da.indexed_iter() {
            let mut unit = Array3::zeros((n, n, n));
            unit[[i, r, c]] = 1.0;
            let want = (&dw * &naive_weight(&unit, &s)).sum();
            prop_assert!((got - want).abs() < 1e-10, "dA[{},{},{}] {} vs {}", i, r, c, got, want);
        }
        for ((i, u, v), got) in ds.indexed_iter() {
            let mut unit = Array3::zeros((n, p, q));
            unit[[i, u, v]] = 1.0;
            let want = (&dw * &naive_weight(&a, &unit)).sum();
            prop_assert!((got - want).abs() < 1e-10, "dS[{},{},{}] {} vs {}", i, u, v, got, want);
        }
    }

    #[test]
    fn n1_phm_equals_dense((_n, p, q, b, seed) in sizes()) {
        let a = random3(seed, (1, 1, 1));
        let s = random3(seed.wrapping_add(2), (1, p, q));
        let bias = random3(seed.wrapping_add(3), (1, 1, p)).into_shape_with_order(p).unwrap();
        let x = random3(seed.wrapping_add(4), (1, b, q)).index_axis_move(Axis(0), 0);
        let g = random3(seed.wrapping_add(5), (1, b, p)).index_axis_move(Axis(0), 0);
        let w = a[[0, 0, 0]] * &s.index_axis(Axis(0), 0);
        let mut phm_layer = PhmLinear::from_parts(a.clone(), s.clone(), Some(bias.clone())).unwrap();
        let mut dense = Linear::from_parts(w, Some(bias)).unwrap();
        let y1 = phm_layer.forward(x.view().into_dyn());
        let y2 = dense.forward(x.view().into_dyn());
        prop_assert!(y1.abs_diff_eq(&y2, 1e-12));
        let dx1 = phm_layer.backward(g.view().into_dyn());
        let dx2 = dense.backward(g.view().into_dyn());
        prop_assert!(dx1.abs_diff_eq(&dx2, 1e-12));
        // dS = a · dW and dbias agree.
        let mut grads = Vec::new();
        phm_layer.visit_params(&mut |name, p| grads.push((name.to_string(), p.grad().to_owned())));
        let mut dense_grads = Vec::new();
        dense.visit_params(&mut |_, p| dense_grads.push(p.grad().to_owned()));
        let ds = grads[1].1.clone().into_shape_with_order((p, q)).unwrap();
        let dw = dense_grads[0].clone().into_shape_with_order((p, q)).unwrap();
        prop_assert!(ds.abs_diff_eq(&(a[[0, 0, 0]] * &dw), 1e-12));
        prop_assert!(grads[2].1.abs_diff_eq(&dense_grads[1], 1e-12));
    }

    #[test]
    fn f32_and_f64_agree((n, p, q, b, seed) in sizes()) {
        let a = random3(seed, (n, n, n));
        let s = random3(seed.wrapping_add(1), (n, p, q));
        let bias: Array1<f64> = random3(seed.wrapping_add(2), (1, 1, n * p)).into_shape_with_order(n * p).unwrap();
        let x = random3(seed.wrapping_add(3), (1, b, n * q)).index_axis_move(Axis(0), 0);
        let g = random3(seed.wrapping_add(4), (1, b, n * p)).index_axis_move(Axis(0), 0);
        let mut l64 = PhmLinear::from_parts(a.clone(), s.clone(), Some(bias.clone())).unwrap();
        let mut l32 = PhmLinear::from_parts(a.mapv(|v| v as f32), s.mapv(|v| v as f32), Some(bias.mapv(|v| v as f32))).unwrap();
        let y64 = l64.forward(x.view().into_dyn());
        let y32 = l32.forward(x.mapv(|v| v as f32).view().into_dyn()).mapv(f64::from);
        prop_assert!(y32.abs_diff_eq(&y64, 1e-4));
        let dx64 = l64.backward(g.view().into_dyn());
        let dx32 = l32.backward(g.mapv(|v| v as f32).view().into_dyn()).mapv(f64::from);
        prop_assert!(dx32.abs_diff_eq(&dx64, 1e-4));
        let mut g64 = Vec::new();
        l64.visit_params(&mut |_, p| g64.push(p.grad().to_owned()));
        let mut i = 0;
        l32.visit_params(&mut |name, p| {
            let diff = (&p.grad().mapv(f64::from) - &g64[i]).mapv(f64::abs).fold(0.0, |m: f64, v| m.max(*v));
            assert!(diff < 1e-4, "{name}: f32 and f64 gradients differ by {diff}");
            i += 1;
        });
    }
}
