//! The one GEMM entry point every layer and kernel goes through, and the one shape check
//! that `forward`/`backward` use for programmer errors.

use ndarray::linalg::{general_mat_mul, general_mat_vec_mul};
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};

use crate::Float;

/// `c ← alpha · a · b + beta · c`.
///
/// A single-row `a` whose `b` has contiguous columns goes through ndarray's matrix–vector path
/// (a dot product per output), which is several times faster than the packed GEMM for one row.
///
/// # Panics
/// If the shapes are not `(m, k)·(k, n) → (m, n)` (callers check shapes first).
#[inline]
pub(crate) fn gemm<F: Float>(
    alpha: F,
    a: &ArrayView2<F>,
    b: &ArrayView2<F>,
    beta: F,
    c: &mut ArrayViewMut2<F>,
) {
    if a.nrows() == 1 && b.ncols() > 1 && b.strides()[0] == 1 {
        // c[0, j] = alpha · Σ_l a[0, l] b[l, j] + beta · c[0, j]; b's columns are contiguous.
        general_mat_vec_mul(alpha, &b.t(), &a.row(0), beta, &mut c.row_mut(0));
    } else {
        general_mat_mul(alpha, a, b, beta, c);
    }
}

/// Panics with a message naming both shapes unless `got` has `expected` columns.
#[track_caller]
#[inline]
pub(crate) fn assert_cols(context: &str, what: &str, got: &[usize], expected_cols: usize) {
    if got.len() != 2 || got[1] != expected_cols {
        panic!("{context}: {what} has shape {got:?}, expected [batch, {expected_cols}]");
    }
}

/// Panics with a message naming both shapes unless they are equal.
#[track_caller]
#[inline]
pub(crate) fn assert_same_shape(context: &str, what: &str, got: &[usize], expected: &[usize]) {
    if got != expected {
        panic!("{context}: {what} has shape {got:?}, expected {expected:?}");
    }
}

/// `Y = X Wᵀ + 1 bᵀ` for a dense weight `w` `(k, d)`.
pub(crate) fn affine_forward<F: Float>(
    x: &ArrayView2<F>,
    w: &ArrayView2<F>,
    bias: Option<&ArrayView1<F>>,
) -> Array2<F> {
    let mut y = Array2::zeros((x.nrows(), w.nrows()));
    let beta = match bias {
        Some(b) => {
            y.assign(b);
            F::one()
        }
        None => F::zero(),
    };
    gemm(F::one(), x, &w.t(), beta, &mut y.view_mut());
    y
}

/// Backward of [`affine_forward`]: adds `Gᵀ X` into `dw` and the column sums of `G` into `db`
/// (when given) and returns `dX = G W`.
pub(crate) fn affine_backward<F: Float>(
    x: &ArrayView2<F>,
    w: &ArrayView2<F>,
    g: &ArrayView2<F>,
    dw: Option<ArrayViewMut2<F>>,
    db: Option<ArrayViewMut1<F>>,
) -> Array2<F> {
    if let Some(mut dw) = dw {
        gemm(F::one(), &g.t(), x, F::one(), &mut dw);
    }
    if let Some(mut db) = db {
        db += &g.sum_axis(Axis(0));
    }
    let mut dx = Array2::zeros((g.nrows(), w.ncols()));
    gemm(F::one(), g, w, F::zero(), &mut dx.view_mut());
    dx
}
