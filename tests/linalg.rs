//! The small dense linear algebra: eigendecomposition, solve and orthonormal bases against
//! independent checks (definitions, closed forms, power iteration).
mod common;

use common::{assert_close, xorshift};
use ndarray::{array, Array2};
use phm_nn::linalg::{orthonormal_basis, solve, symmetric_eigen};

fn symmetric(seed: u64, m: usize) -> Array2<f64> {
    let a: Array2<f64> = xorshift(seed, (m, m));
    &a + &a.t()
}

#[test]
fn eigenpairs_satisfy_the_definition_and_are_orthonormal() {
    for (seed, m) in [(1, 1), (2, 2), (3, 5), (4, 9), (5, 16)] {
        let a = symmetric(seed, m);
        let (values, vectors) = symmetric_eigen(&a);
        // A v = λ v for every pair.
        let av = a.dot(&vectors);
        for j in 0..m {
            for i in 0..m {
                assert_close(av[[i, j]], values[j] * vectors[[i, j]], 1e-12, "A v = λ v");
            }
        }
        // Vᵀ V = I.
        let gram = vectors.t().dot(&vectors);
        for i in 0..m {
            for j in 0..m {
                assert_close(gram[[i, j]], f64::from(u8::from(i == j)), 1e-13, "VᵀV = I");
            }
        }
        // Descending, and they add up to the trace.
        assert!(values.windows(2).into_iter().all(|w| w[0] >= w[1]));
        assert_close(values.sum(), a.diag().sum(), 1e-12, "Σλ = trace");
    }
}

#[test]
fn eigenvalues_match_closed_forms_and_power_iteration() {
    // [[a, b], [b, c]]: λ = (a + c)/2 ± √(((a − c)/2)² + b²).
    let (a, b, c) = (2.0, -3.0, 0.5);
    let (values, _) = symmetric_eigen(&array![[a, b], [b, c]]);
    let mid = (a + c) / 2.0;
    let rad = (((a - c) / 2.0f64).powi(2) + b * b).sqrt();
    assert_close(values[0], mid + rad, 1e-15, "λ₁");
    assert_close(values[1], mid - rad, 1e-15, "λ₂");

    // The largest eigenvalue of a positive definite matrix by power iteration.
    let s = symmetric(7, 6);
    let spd = s.t().dot(&s) + Array2::<f64>::eye(6);
    let mut v = ndarray::Array1::<f64>::ones(6);
    let mut lambda = 0.0;
    for _ in 0..2000 {
        let w = spd.dot(&v);
        lambda = w.dot(&v) / v.dot(&v);
        v = &w / w.dot(&w).sqrt();
    }
    let (values, _) = symmetric_eigen(&spd);
    assert_close(values[0], lambda, 1e-10, "top eigenvalue");
    assert!(
        values.iter().all(|&l| l >= 1.0 - 1e-12),
        "spd + I has eigenvalues ≥ 1"
    );
}

#[test]
fn repeated_and_zero_eigenvalues() {
    let (values, vectors) = symmetric_eigen(&Array2::<f64>::eye(4));
    assert_eq!(values.to_vec(), [1.0; 4]);
    assert_eq!(vectors, Array2::<f64>::eye(4));
    let (values, _) = symmetric_eigen(&Array2::<f64>::zeros((3, 3)));
    assert_eq!(values.to_vec(), [0.0; 3]);
    // Rank one: u uᵀ has eigenvalues ‖u‖², 0, 0.
    let u = array![[1.0], [2.0], [2.0]];
    let (values, vectors) = symmetric_eigen(&u.dot(&u.t()));
    assert_close(values[0], 9.0, 1e-14, "‖u‖²");
    assert!(values[1].abs() < 1e-14 && values[2].abs() < 1e-14);
    assert_close(vectors[[0, 0]].abs(), 1.0 / 3.0, 1e-14, "u/‖u‖");
}

#[test]
fn solve_inverts_and_refuses_singular_matrices() {
    let g = symmetric(8, 5) + Array2::<f64>::eye(5) * 6.0;
    let x_true: Array2<f64> = xorshift(9, (5, 3));
    let b = g.dot(&x_true);
    let x = solve(g.clone(), b).unwrap();
    for (a, b) in x.iter().zip(&x_true) {
        assert_close(*a, *b, 1e-12, "solve");
    }
    // Pivoting: a zero in the leading position.
    let x = solve(array![[0.0, 1.0], [1.0, 0.0]], array![[2.0], [3.0]]).unwrap();
    assert_eq!(x, array![[3.0], [2.0]]);
    let err = solve(array![[1.0, 2.0], [2.0, 4.0]], array![[1.0], [1.0]]).unwrap_err();
    assert!(err.to_string().contains("singular"), "{err}");
}

#[test]
fn orthonormal_basis_spans_the_columns_and_drops_dependent_ones() {
    let a = array![
        [1.0, 2.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 2.0, 1.0],
        [0.0, 0.0, 0.0]
    ];
    let q = orthonormal_basis(&a);
    assert_eq!(q.ncols(), 2, "column 1 is twice column 0");
    let gram = q.t().dot(&q);
    for i in 0..2 {
        for j in 0..2 {
            assert_close(gram[[i, j]], f64::from(u8::from(i == j)), 1e-14, "QᵀQ = I");
        }
    }
    // Every column of a is in the span: a = Q Qᵀ a.
    let proj = q.dot(&q.t().dot(&a));
    for (x, y) in proj.iter().zip(&a) {
        assert_close(*x, *y, 1e-14, "projection");
    }
}
