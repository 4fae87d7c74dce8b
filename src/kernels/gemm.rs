//! The one GEMM entry point every layer and kernel goes through, and the one shape check
//! that `forward`/`backward` use for programmer errors.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Zip};

use crate::Float;

/// Rows of `a` up to which a product avoids the packed GEMM.
const SMALL_M: usize = 2;
/// Inner dimension up to which a product with at least [`MANY_ROWS`] rows avoids the packed
/// GEMM (outer-product-like weight gradients of a batch of 1 to 4 samples or segments).
const SMALL_K: usize = 4;
/// See [`SMALL_K`]; below this many rows (e.g. the per-sample mixing products) the packed GEMM
/// is as fast.
const MANY_ROWS: usize = 64;

/// `c ← alpha · a · b + beta · c`.
///
/// matrixmultiply's packed GEMM is several times slower than a plain loop when a product has
/// very few rows (batch 1, or the 2 segments of an n = 2 layer) or a tiny inner dimension (the
/// outer product of a single sample's weight gradient is ~20× slower). Those products run as
/// ndarray dot products or row updates (`scaled_add`), each reading `b` once:
///
/// - at most [`SMALL_M`] rows, `b`'s columns contiguous: one dot product per entry of `c`;
/// - at most [`SMALL_M`] rows, or an inner dimension of at most [`SMALL_K`] with at least
///   [`MANY_ROWS`] rows, `b`'s rows contiguous: `c[i, :] += alpha · a[i, l] · b[l, :]` for
///   every `(i, l)`;
/// - anything else: ndarray's `general_mat_mul`.
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
    let (m, k) = a.dim();
    assert_eq!(k, b.nrows(), "gemm: inner dimensions differ");
    let wide = b.ncols() > 1;
    if m <= SMALL_M && wide && b.strides()[0] == 1 {
        // c[i, j] = alpha · a[i, :] · b[:, j] + beta · c[i, j]; b's columns are contiguous.
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
    } else if (m <= SMALL_M || (k <= SMALL_K && m >= MANY_ROWS)) && wide && b.strides()[1] == 1 {
        // c[i, :] = alpha · Σ_l a[i, l] b[l, :] + beta · c[i, :]; b's rows are contiguous.
        if beta.is_zero() {
            c.fill(F::zero());
        } else if beta != F::one() {
            c.mapv_inplace(|v| v * beta);
        }
        if m <= SMALL_M {
            // Few rows of c: stream b once, updating every row of c from each row of b.
            for (l, b_l) in b.outer_iter().enumerate() {
                for (i, mut c_i) in c.outer_iter_mut().enumerate() {
                    c_i.scaled_add(alpha * a[[i, l]], &b_l);
                }
            }
        } else {
            // Few rows of b: finish each row of c while it is in cache.
            for (a_i, mut c_i) in a.outer_iter().zip(c.outer_iter_mut()) {
                for (&a_il, b_l) in a_i.iter().zip(b.outer_iter()) {
                    c_i.scaled_add(alpha * a_il, &b_l);
                }
            }
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
