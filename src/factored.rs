//! The factored PHM kernels: `Y = X (Σ A_i ⊗ S_i)ᵀ` without ever forming the `k × d` weight.
//!
//! With `X` viewed as `(B·n, d/n)` (row `(b, c)` is input segment `c` of sample `b`) and `S`
//! viewed as `Ŝ₂ = (n·k/n, d/n)` (row `(i, u)` is row `u` of `S_i`):
//!
//! ```text
//!     T = X Ŝ₂ᵀ                    T[(b,c), (i,u)] = (S_i x_{b,c})_u      one GEMM, 2·B·k·d FLOPs
//!     Y_b = Ã T_b                  Ã[r, (c,i)] = A_i[r,c],  T_b = T[(b,·), (·,·)] as (n², k/n)
//! ```
//!
//! so `y_{b,r} = Σ_{c,i} A_i[r,c] S_i x_{b,c}`. The mixing step costs `2·B·n²·k` FLOPs (small
//! next to `2·B·k·d` when `n² ≪ d`). The backward pass is the same contractions transposed:
//!
//! ```text
//!     dT_b = Ãᵀ G_b        dÃ += Σ_b G_b T_bᵀ        dX = dT Ŝ₂        dŜ₂ += dTᵀ X
//! ```
//!
//! Extra memory is `T`, `B·n·k` values, and nothing of size `k·d`: at batch 1 the kernel reads
//! `n` times fewer weights than a dense matrix–vector product.

use ndarray::{s, Array2, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3};

use crate::linalg::gemm;
use crate::phm::PhmShape;
use crate::Float;

/// `Ã` `(n, n²)` with `Ã[r, c·n + i] = A_i[r, c]`.
pub(crate) fn mixing_matrix<F: Float>(a: ArrayView3<'_, F>) -> Array2<F> {
    let n = a.dim().0;
    let mut m = Array2::zeros((n, n * n));
    mixing_matrix_into(a, m.view_mut());
    m
}

/// Writes `Ã` into `m` `(n, n²)`, which must be contiguous.
pub(crate) fn mixing_matrix_into<F: Float>(a: ArrayView3<'_, F>, m: ArrayViewMut2<'_, F>) {
    let n = a.dim().0;
    m.into_shape_with_order((n, n, n))
        .expect("the mixing matrix is contiguous")
        .assign(&a.permuted_axes([1, 2, 0]));
}

/// `X` `(B, d)` viewed as `(B·n, d/n)`; `x` must be in standard layout.
fn segments<'a, F>(shape: PhmShape, x: ArrayView2<'a, F>) -> ArrayView2<'a, F> {
    let rows = x.nrows() * shape.n();
    x.into_shape_with_order((rows, shape.block_cols()))
        .expect("inputs are passed in standard layout")
}

/// `S` viewed as `Ŝ₂` `(k, d/n)`.
fn blocks_rows<'a, F>(shape: PhmShape, s: ArrayView3<'a, F>) -> ArrayView2<'a, F> {
    s.into_shape_with_order((shape.out_features(), shape.block_cols()))
        .expect("block tensors are stored in standard layout")
}

/// Forward: writes `T` into `t` `(B·n, k)` and `y ← Y + beta·y` into `y` `(B, k)`.
///
/// `x` must be in standard layout; `t` and `y` must be contiguous.
pub(crate) fn forward<F: Float>(
    shape: PhmShape,
    mixing: ArrayView2<'_, F>,
    s: ArrayView3<'_, F>,
    x: ArrayView2<'_, F>,
    mut t: ArrayViewMut2<'_, F>,
    mut y: ArrayViewMut2<'_, F>,
    beta: F,
) {
    let (n, p, _) = shape.blocks_dim();
    gemm(
        F::one(),
        &segments(shape, x),
        &blocks_rows(shape, s).t(),
        F::zero(),
        &mut t,
    );
    for (b, mut y_b) in y.outer_iter_mut().enumerate() {
        let t_b = t.slice(s![b * n..(b + 1) * n, ..]);
        let t_b = t_b
            .into_shape_with_order((n * n, p))
            .expect("T rows are contiguous");
        let mut y_b = y_b
            .view_mut()
            .into_shape_with_order((n, p))
            .expect("outputs are contiguous");
        gemm(F::one(), &mixing, &t_b, beta, &mut y_b);
    }
}

/// Backward of [`forward`]: adds `dA` into `da` and `dS` into `ds` (when given), writes `dX`
/// into `dx` `(B, d)`. `dt` `(B·n, k)` is scratch; `t` is the forward's `T`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<F: Float>(
    shape: PhmShape,
    mixing: ArrayView2<'_, F>,
    s: ArrayView3<'_, F>,
    x: ArrayView2<'_, F>,
    t: ArrayView2<'_, F>,
    g: ArrayView2<'_, F>,
    mut dt: ArrayViewMut2<'_, F>,
    dx: ArrayViewMut2<'_, F>,
    da: Option<ArrayViewMut3<'_, F>>,
    ds: Option<ArrayViewMut3<'_, F>>,
) {
    let (n, p, q) = shape.blocks_dim();
    let mut d_mixing = da.as_ref().map(|_| Array2::zeros((n, n * n)));
    for (b, g_b) in g.outer_iter().enumerate() {
        let g_b = g_b
            .into_shape_with_order((n, p))
            .expect("gradients are contiguous");
        let rows = s![b * n..(b + 1) * n, ..];
        let mut dt_b = dt.slice_mut(rows);
        let mut dt_b = dt_b
            .view_mut()
            .into_shape_with_order((n * n, p))
            .expect("dT rows are contiguous");
        // dT_b = Ãᵀ G_b
        gemm(F::one(), &mixing.t(), &g_b, F::zero(), &mut dt_b);
        if let Some(dm) = d_mixing.as_mut() {
            // dÃ += G_b T_bᵀ
            let t_b = t
                .slice(rows)
                .into_shape_with_order((n * n, p))
                .expect("T rows are contiguous");
            gemm(F::one(), &g_b, &t_b.t(), F::one(), &mut dm.view_mut());
        }
    }
    if let (Some(mut da), Some(dm)) = (da, d_mixing) {
        // dA_i[r, c] += dÃ[r, c·n + i]
        da += &dm
            .into_shape_with_order((n, n, n))
            .expect("fresh arrays are contiguous")
            .permuted_axes([2, 0, 1]);
    }
    let s2 = blocks_rows(shape, s);
    let mut dx = dx
        .into_shape_with_order((x.nrows() * n, q))
        .expect("dX is contiguous");
    // dX = dT Ŝ₂
    gemm(F::one(), &dt.view(), &s2, F::zero(), &mut dx);
    if let Some(ds) = ds {
        // dŜ₂ += dTᵀ X
        let mut ds = ds
            .into_shape_with_order((shape.out_features(), q))
            .expect("gradients are stored in standard layout");
        gemm(F::one(), &dt.t(), &segments(shape, x), F::one(), &mut ds);
    }
}
