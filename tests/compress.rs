//! Dense → PHM compression: exact recovery of PHM weights, the optimal error on random
//! weights (against an SVD computed here by another method), degenerate inputs, the bias.
mod common;

use common::{assert_close, rng, uniform2, xorshift};
use ndarray::{Array2, Array3};
use phm_nn::compress::{from_dense, kronecker_approx};
use phm_nn::kernels::phm::{build_weight, rearrange};
use phm_nn::prelude::*;

/// Singular values of `m` by the one-sided Jacobi method (Hestenes): rotate pairs of columns
/// until they are orthogonal; the column norms are then the singular values. Independent of
/// the eigenvalue route the crate takes.
fn singular_values(m: &Array2<f64>) -> Vec<f64> {
    let mut a = if m.nrows() >= m.ncols() {
        m.clone()
    } else {
        m.t().to_owned()
    };
    let cols = a.ncols();
    for _sweep in 0..60 {
        let mut off = 0.0f64;
        for i in 0..cols {
            for j in i + 1..cols {
                let (ci, cj) = (a.column(i).to_owned(), a.column(j).to_owned());
                let (alpha, beta, gamma) = (ci.dot(&ci), cj.dot(&cj), ci.dot(&cj));
                if gamma == 0.0 {
                    continue;
                }
                off = off.max(gamma.abs() / (alpha * beta).sqrt());
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                a.column_mut(i).assign(&(&ci * c - &cj * s));
                a.column_mut(j).assign(&(&ci * s + &cj * c));
            }
        }
        if off < 1e-15 {
            break;
        }
    }
    let mut sv: Vec<f64> = a.columns().into_iter().map(|c| c.dot(&c).sqrt()).collect();
    sv.sort_by(|x, y| y.total_cmp(x));
    sv
}

fn frobenius(w: &Array2<f64>) -> f64 {
    w.iter().map(|v| v * v).sum::<f64>().sqrt()
}

#[test]
fn a_phm_weight_is_recovered_exactly() {
    for (n, d, k) in [(2, 6, 4), (3, 9, 6), (4, 16, 8), (4, 4, 4), (1, 5, 3)] {
        let a: Array3<f64> = xorshift(n as u64, (n, n, n));
        let s: Array3<f64> = xorshift(10 + n as u64, (n, k / n, d / n));
        let w = build_weight(a.view(), s.view()).unwrap();
        let fit = kronecker_approx(w.view(), n, n).unwrap();
        assert!(fit.relative_error < 1e-12, "n={n}: {}", fit.relative_error);
        let back = fit.weight();
        for (x, y) in back.iter().zip(&w) {
            assert_close(*x, *y, 1e-12, &format!("n={n} rebuilt weight"));
        }
    }
}

#[test]
fn the_error_is_the_dropped_singular_values_the_optimum() {
    for (seed, n, d, k) in [(1, 2, 8, 6), (2, 4, 12, 8), (3, 3, 9, 9)] {
        let w: Array2<f64> = xorshift(seed, (k, d));
        let sv = singular_values(&rearrange(w.view(), n).unwrap());
        let norm = frobenius(&w);
        for terms in 1..=(n * n).min(sv.len()) {
            let fit = kronecker_approx(w.view(), n, terms).unwrap();
            let dropped: f64 = sv[terms..].iter().map(|s| s * s).sum::<f64>().sqrt();
            assert_close(
                fit.relative_error,
                dropped / norm,
                1e-10,
                "error = √Σ dropped σ² / ‖W‖",
            );
            // And it is what the rebuilt weight actually achieves.
            assert_close(
                frobenius(&(&w - &fit.weight())) / norm,
                fit.relative_error,
                1e-10,
                "measured",
            );
            for (a, b) in fit.singular_values.iter().zip(&sv) {
                assert_close(*a, *b, 1e-10, "singular values");
            }
        }
        // n² terms are always exact.
        let full = kronecker_approx(w.view(), n, n * n).unwrap();
        assert!(full.relative_error < 1e-10, "{}", full.relative_error);
    }
}

#[test]
fn rank_deficient_zero_and_tiny_weights() {
    // Rank one in R-space: a single Kronecker product, fitted with n = 2 terms.
    let a = ndarray::array![[1.0, 2.0], [3.0, 4.0]];
    let s = ndarray::array![[0.5, -1.0, 2.0]];
    let w = ndarray::linalg::kron(&a, &s);
    let fit = kronecker_approx::<f64>(w.view(), 2, 2).unwrap();
    assert!(fit.relative_error < 1e-14);
    assert!(fit.singular_values[1] < 1e-12);
    assert!(fit.rules.iter().chain(&fit.blocks).all(|v| v.is_finite()));

    let zero = Array2::<f64>::zeros((4, 6));
    let fit = kronecker_approx(zero.view(), 2, 2).unwrap();
    assert_eq!(fit.relative_error, 0.0);
    assert!(fit.weight().iter().all(|v| *v == 0.0));

    // Tiny and huge scales give the same relative fit.
    let w: Array2<f64> = xorshift(5, (6, 6));
    let base = kronecker_approx(w.view(), 3, 2).unwrap().relative_error;
    for scale in [1e-300, 1e-150, 1e150] {
        let fit = kronecker_approx((&w * scale).view(), 3, 2).unwrap();
        assert_close(fit.relative_error, base, 1e-10, &format!("scale {scale:e}"));
    }
    // f32 works too.
    let w32 = w.mapv(|v| v as f32);
    let fit = kronecker_approx(w32.view(), 3, 2).unwrap();
    assert!((fit.relative_error - base).abs() < 1e-5);
}

#[test]
fn from_dense_keeps_the_bias_and_reports_errors() {
    let mut r = rng(6);
    let dense = LinearConfig::new(8, 4).init::<f64, _>(&mut r).unwrap();
    let (phm, err) = from_dense(&dense, 2).unwrap();
    assert_eq!(phm.bias(), dense.bias());
    assert_eq!(phm.shape(), PhmShape::new(8, 4, 2).unwrap());
    let x = uniform2(&mut r, 3, 8).into_dyn();
    // The outputs differ by at most the weight error times the input norm.
    let diff = &dense.infer(x.view().into_dyn()) - &phm.infer(x.view().into_dyn());
    let w_err = frobenius(&(&dense.weight() - &phm.weight()));
    assert_close(
        w_err / frobenius(&dense.weight()),
        err,
        1e-10,
        "reported error",
    );
    for (row, xr) in diff.outer_iter().zip(x.outer_iter()) {
        let norm = |v: ndarray::ArrayViewD<'_, f64>| v.iter().map(|e| e * e).sum::<f64>().sqrt();
        assert!(norm(row) <= w_err * norm(xr) + 1e-12);
    }
    let e = from_dense(&dense, 3).unwrap_err();
    assert_eq!(e.to_string(), "in_features 8 is not divisible by n = 3");
    let e = kronecker_approx(dense.weight().view(), 2, 5).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid terms: terms must be between 1 and n² = 4, got 5"
    );
    let mut nan = dense.weight();
    nan[[0, 0]] = f64::NAN;
    assert!(kronecker_approx(nan.view(), 2, 2).is_err());
}

#[test]
fn a_state_dict_written_by_pytorch_compresses_and_loads_into_a_phm_model() {
    use phm_nn::compress::compress_state_dict;
    use phm_nn::io::{load_model, load_state_dict, save_state_dict};
    // nn.Sequential(Linear(16, 8), ReLU, Linear(8, 4)), saved by safetensors.torch.save_file.
    let path = format!(
        "{}/tests/data/dense_mlp.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    let dict = load_state_dict::<f32>(&path).unwrap();
    let keys: Vec<&String> = dict.keys().collect();
    assert_eq!(keys, ["0.bias", "0.weight", "2.bias", "2.weight"]);
    let (out, reports) = compress_state_dict(&dict, 2, None).unwrap();
    // Layer 0 (8×16): 8 + 64 weights instead of 128; layer 2 (4×8): 8 + 16 instead of 32.
    let phm: Vec<Option<usize>> = reports.iter().map(|r| r.phm_parameters).collect();
    assert_eq!(phm, [Some(72), Some(24)]);
    assert!(reports.iter().all(|r| r.relative_error.unwrap() < 1.0));
    // With n = 4 the small layer would not shrink (64 + 8 ≥ 32): it stays dense.
    let (_, reports4) = compress_state_dict(&dict, 4, None).unwrap();
    assert_eq!(reports4[1].kept.as_deref(), Some("PHM (72) is not smaller"));

    // The result is a phm-nn checkpoint for the matching PHM model.
    let file =
        std::env::temp_dir().join(format!("phm-compress-{}.safetensors", std::process::id()));
    save_state_dict(&out, &file).unwrap();
    let mut r = rng(9);
    let mut model = Sequential::<f32>::new()
        .add(PhmLinearConfig::new(16, 8, 2).init(&mut r).unwrap())
        .add(Relu::new())
        .add(PhmLinearConfig::new(8, 4, 2).init(&mut r).unwrap());
    load_model(&mut model, &file).unwrap();
    std::fs::remove_file(&file).ok();
    let first = model.get::<phm_nn::nn::PhmLinear<f32>>(0).unwrap();
    assert_eq!(first.bias().unwrap().into_dyn(), dict["0.bias"]);
    // Its weight is the best n = 2 approximation of PyTorch's weight.
    let w: Array2<f32> = dict["0.weight"].clone().into_dimensionality().unwrap();
    let fit = kronecker_approx(w.view(), 2, 2).unwrap();
    assert_eq!(first.weight(), fit.weight());
    let e = compress_state_dict(&dict, 2, Some(&["9".to_string()].into())).unwrap_err();
    assert!(e.to_string().contains("`9` has no 2-D `9.weight`"), "{e}");
}
