//! Small dense linear algebra in `f64`, for the matrices of size `n²` and below that the
//! crate's research metrics and dense → PHM compression work on: an orthonormal basis
//! (Gram–Schmidt), the symmetric eigendecomposition (cyclic Jacobi), and a linear solve
//! (Gaussian elimination with partial pivoting). No LAPACK: these matrices are tiny.
//!
//! ```text
//!     A = V Λ Vᵀ     (A symmetric; V orthogonal, its columns the eigenvectors; Λ descending)
//! ```
//!
//! ```
//! use ndarray::array;
//! use phm_nn::linalg::symmetric_eigen;
//! let (values, vectors) = symmetric_eigen(&array![[2.0, 1.0], [1.0, 2.0]]);
//! assert!((values[0] - 3.0).abs() < 1e-14 && (values[1] - 1.0).abs() < 1e-14);
//! // The eigenvector of 3 is (1, 1)/√2, up to sign:
//! assert!((vectors[[0, 0]].abs() - 0.5f64.sqrt()).abs() < 1e-14);
//! assert!((vectors[[0, 0]] - vectors[[1, 0]]).abs() < 1e-14);
//! ```

use ndarray::{Array1, Array2};

use crate::error::{PhmError, Result};

/// An orthonormal basis (as columns) of the span of `a`'s columns: modified Gram–Schmidt,
/// each vector orthogonalized twice; remainders below `1e-10 ·` the largest column norm are
/// dropped, so the basis has as many columns as `a` has (numerical) rank.
pub fn orthonormal_basis(a: &Array2<f64>) -> Array2<f64> {
    let scale = a
        .columns()
        .into_iter()
        .map(|c| c.dot(&c).sqrt())
        .fold(0.0, f64::max);
    let tol = 1e-10 * scale;
    let mut basis: Vec<Array1<f64>> = Vec::new();
    for col in a.columns() {
        let mut v = col.to_owned();
        for _ in 0..2 {
            for q in &basis {
                let proj = q.dot(&v);
                v.scaled_add(-proj, q);
            }
        }
        let norm = v.dot(&v).sqrt();
        if norm > tol && norm > 0.0 {
            basis.push(v / norm);
        }
    }
    let mut q = Array2::zeros((a.nrows(), basis.len()));
    for (j, b) in basis.iter().enumerate() {
        q.column_mut(j).assign(b);
    }
    q
}

/// Eigenvalues (descending) and eigenvectors (the columns of an orthogonal matrix, in the same
/// order) of a symmetric matrix, by the cyclic Jacobi method: rotations zero the
/// off-diagonal entries until their norm is below `1e-15` of the diagonal's; the product of
/// the rotations is the eigenvector matrix. Accurate to a few units of rounding relative to
/// `‖A‖`; meant for small matrices (it costs `O(m³)` per sweep).
///
/// Only the upper triangle's symmetry is assumed, not checked.
pub fn symmetric_eigen(a: &Array2<f64>) -> (Array1<f64>, Array2<f64>) {
    let m = a.nrows();
    let mut a = a.clone();
    let mut v = Array2::<f64>::eye(m);
    for _sweep in 0..100 {
        let off: f64 = (0..m)
            .flat_map(|p| (0..m).filter(move |&q| q != p).map(move |q| (p, q)))
            .map(|(p, q)| a[[p, q]].powi(2))
            .sum();
        let diag: f64 = (0..m).map(|p| a[[p, p]].powi(2)).sum();
        if off <= 1e-30 * diag || off == 0.0 {
            break;
        }
        for p in 0..m {
            for q in p + 1..m {
                let apq = a[[p, q]];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p, q] (Golub & Van Loan, Algorithm 8.5.1).
                let tau = (a[[q, q]] - a[[p, p]]) / (2.0 * apq);
                let t = if tau == 0.0 {
                    1.0
                } else {
                    tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt())
                };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                for k in 0..m {
                    let (akp, akq) = (a[[k, p]], a[[k, q]]);
                    a[[k, p]] = c * akp - s * akq;
                    a[[k, q]] = s * akp + c * akq;
                }
                for k in 0..m {
                    let (apk, aqk) = (a[[p, k]], a[[q, k]]);
                    a[[p, k]] = c * apk - s * aqk;
                    a[[q, k]] = s * apk + c * aqk;
                }
                for k in 0..m {
                    let (vkp, vkq) = (v[[k, p]], v[[k, q]]);
                    v[[k, p]] = c * vkp - s * vkq;
                    v[[k, q]] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| a[[j, j]].total_cmp(&a[[i, i]]));
    let values = order.iter().map(|&i| a[[i, i]]).collect();
    let mut vectors = Array2::zeros((m, m));
    for (to, &from) in order.iter().enumerate() {
        vectors.column_mut(to).assign(&v.column(from));
    }
    (values, vectors)
}

/// Solves `g X = b` for a square `g` by Gaussian elimination with partial pivoting.
///
/// # Errors
/// [`PhmError::InvalidArgument`] if `g` is singular to working precision (a pivot below
/// `1e-12 ·` the largest diagonal entry), naming the pivot and the column.
///
/// # Panics
/// If `g` is not square or `b` does not have `g`'s number of rows.
#[track_caller]
pub fn solve(mut g: Array2<f64>, mut b: Array2<f64>) -> Result<Array2<f64>> {
    let n = g.nrows();
    assert!(
        g.ncols() == n && b.nrows() == n,
        "solve: g has shape {:?} and b {:?}; expected a square g with b's rows",
        g.shape(),
        b.shape()
    );
    let scale = (0..n).map(|i| g[[i, i]].abs()).fold(0.0, f64::max);
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| g[[i, col]].abs().total_cmp(&g[[j, col]].abs()))
            .expect("col < n");
        let p = g[[pivot, col]];
        if p.abs() <= 1e-12 * scale || p == 0.0 {
            return Err(PhmError::InvalidArgument {
                what: "matrix",
                reason: format!(
                    "the {n}×{n} matrix is singular to working precision (pivot {p:e} in column \
                     {col}, largest diagonal entry {scale:e})"
                ),
            });
        }
        if pivot != col {
            for k in 0..n {
                g.swap([pivot, k], [col, k]);
            }
            for k in 0..b.ncols() {
                b.swap([pivot, k], [col, k]);
            }
        }
        for row in col + 1..n {
            let factor = g[[row, col]] / p;
            if factor == 0.0 {
                continue;
            }
            for k in col..n {
                g[[row, k]] -= factor * g[[col, k]];
            }
            for k in 0..b.ncols() {
                b[[row, k]] -= factor * b[[col, k]];
            }
        }
    }
    for col in (0..n).rev() {
        for k in 0..b.ncols() {
            let mut v = b[[col, k]];
            for j in col + 1..n {
                v -= g[[col, j]] * b[[j, k]];
            }
            b[[col, k]] = v / g[[col, col]];
        }
    }
    Ok(b)
}
