//! The one GEMM entry point every layer and kernel goes through, and the one shape check
//! that `forward`/`backward` use for programmer errors.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Zip};

use crate::Float;

/// Rows of `a` up to which a product with column-contiguous `b` runs as dot products.
const SMALL_M: usize = 2;

/// `c ← alpha · a · b + beta · c`.
///
/// Products with very few rows avoid the packed GEMM, which is several times slower than a
/// matrix–vector product there: with `b`'s columns contiguous and at most [`SMALL_M`] rows,
/// each column of `b` is read once and dotted with every row of `a`; a single row against a
/// row-contiguous `b` adds one scaled row of `b` per entry of `a`. Both read `b` once, as a
/// memory-bound product should. An inner dimension of 1 (an outer product) is a scaled copy
/// per row.
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
    if a.nrows() <= SMALL_M && b.ncols() > 1 && b.strides()[0] == 1 {
        // c[i, j] = alpha · a[i, :] · b[:, j] + beta · c[i, j]; b's columns are contiguous.
        assert_eq!(a.ncols(), b.nrows(), "gemm: inner dimensions differ");
        Zip::from(c.columns_mut())
            .and(b.columns())
            .for_each(|mut c_j, b_j| {
                for (c_ij, a_i) in c_j.iter_mut().zip(a.outer_iter()) {
                    let dot = alpha * a_i.dot(&b_j);
                    *c_ij = if beta.is_zero() {
                        dot
                    } else {
                        dot + beta * *c_ij
                    };
                }
            });
    } else if a.nrows() == 1 && b.ncols() > 1 && b.strides()[1] == 1 {
        // c[0, :] = alpha · Σ_l a[0, l] b[l, :] + beta · c[0, :]; b's rows are contiguous.
        assert_eq!(a.ncols(), b.nrows(), "gemm: inner dimensions differ");
        let mut row = c.row_mut(0);
        if beta.is_zero() {
            row.fill(F::zero());
        } else if beta != F::one() {
            row.mapv_inplace(|v| v * beta);
        }
        for (&a_l, b_l) in a.row(0).iter().zip(b.outer_iter()) {
            row.scaled_add(alpha * a_l, &b_l);
        }
    } else if a.ncols() == 1 && b.strides()[1] == 1 && c.strides()[1] == 1 {
        // An outer product (e.g. the weight gradient of a single sample): one scaled copy of
        // b's row per row of c; the packed GEMM is ~20× slower for an inner dimension of 1.
        assert_eq!(b.nrows(), 1, "gemm: inner dimensions differ");
        let b_row = b.row(0);
        for (&a_i, mut c_i) in a.column(0).iter().zip(c.outer_iter_mut()) {
            if beta.is_zero() {
                c_i.fill(F::zero());
            } else if beta != F::one() {
                c_i.mapv_inplace(|v| v * beta);
            }
            c_i.scaled_add(alpha * a_i, &b_row);
        }
    } else {
        general_mat_mul(alpha, a, b, beta, c);
    }
}

/// `buf` resized to `dim` (reallocated only when the shape changes; contents unspecified).
pub(crate) fn reuse<F: Float>(buf: &mut Array2<F>, dim: (usize, usize)) -> &mut Array2<F> {
    if buf.dim() != dim {
        *buf = Array2::zeros(dim);
    }
    buf
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

/// Fills every row of `y` with `bias` and returns the `beta` a following GEMM must use to keep
/// it (`1`), or returns `0` when there is no bias.
pub(crate) fn init_output<F: Float>(y: &mut ArrayViewMut2<F>, bias: Option<&ArrayView1<F>>) -> F {
    match bias {
        Some(b) => {
            y.assign(b);
            F::one()
        }
        None => F::zero(),
    }
}

/// Adds the column sums of `g` (the bias gradient) into `db`, when given.
pub(crate) fn add_bias_grad<F: Float>(db: Option<ArrayViewMut1<F>>, g: &ArrayView2<F>) {
    if let Some(mut db) = db {
        db += &g.sum_axis(Axis(0));
    }
}

/// `Y = X Wᵀ + 1 bᵀ` for a dense weight `w` `(k, d)`, written into `y` `(B, k)`.
pub(crate) fn affine_forward_into<F: Float>(
    x: &ArrayView2<F>,
    w: &ArrayView2<F>,
    bias: Option<&ArrayView1<F>>,
    mut y: ArrayViewMut2<F>,
) {
    let beta = init_output(&mut y, bias);
    gemm(F::one(), x, &w.t(), beta, &mut y);
}

/// `Y = X Wᵀ + 1 bᵀ` for a dense weight `w` `(k, d)`.
pub(crate) fn affine_forward<F: Float>(
    x: &ArrayView2<F>,
    w: &ArrayView2<F>,
    bias: Option<&ArrayView1<F>>,
) -> Array2<F> {
    let mut y = Array2::zeros((x.nrows(), w.nrows()));
    affine_forward_into(x, w, bias, y.view_mut());
    y
}

/// Backward of [`affine_forward`] for the weight and input: `dw ← Gᵀ X + dw_beta · dw` (when
/// given) and returns `dX = G W`. The bias gradient is [`add_bias_grad`].
pub(crate) fn affine_backward<F: Float>(
    x: &ArrayView2<F>,
    w: &ArrayView2<F>,
    g: &ArrayView2<F>,
    dw: Option<ArrayViewMut2<F>>,
    dw_beta: F,
) -> Array2<F> {
    if let Some(mut dw) = dw {
        gemm(F::one(), &g.t(), x, dw_beta, &mut dw);
    }
    let mut dx = Array2::zeros((g.nrows(), w.ncols()));
    gemm(F::one(), g, w, F::zero(), &mut dx.view_mut());
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ShapeBuilder;

    fn filled(rows: usize, cols: usize, col_major: bool, seed: usize) -> Array2<f64> {
        let mut a = if col_major {
            Array2::zeros((rows, cols).f())
        } else {
            Array2::zeros((rows, cols))
        };
        for ((i, j), v) in a.indexed_iter_mut() {
            *v = ((i * 7 + j * 13 + seed * 31) % 17) as f64 - 8.0;
        }
        a
    }

    /// Every branch of `gemm` (dot products, row updates, outer products, packed GEMM)
    /// against a plain triple loop, with alpha and beta.
    #[test]
    fn gemm_branches_match_the_definition() {
        for (m, k, n) in [
            (1, 5, 7),
            (2, 5, 7),
            (3, 4, 6),
            (1, 1, 6),
            (4, 1, 3),
            (5, 3, 1),
        ] {
            for (a_cm, b_cm) in [(false, false), (false, true), (true, false), (true, true)] {
                for (alpha, beta) in [(1.0, 0.0), (2.0, 1.0), (-0.5, 3.0)] {
                    let a = filled(m, k, a_cm, 1);
                    let b = filled(k, n, b_cm, 2);
                    let mut c = filled(m, n, false, 3);
                    let mut want = c.clone();
                    for i in 0..m {
                        for j in 0..n {
                            let dot: f64 = (0..k).map(|l| a[[i, l]] * b[[l, j]]).sum();
                            want[[i, j]] = alpha * dot + beta * want[[i, j]];
                        }
                    }
                    gemm(alpha, &a.view(), &b.view(), beta, &mut c.view_mut());
                    assert_eq!(c, want, "m={m} k={k} n={n} a_cm={a_cm} b_cm={b_cm}");
                }
            }
        }
    }
}
