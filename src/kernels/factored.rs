//! The factored PHM kernels: `Y = X (Σ A_i ⊗ S_i)ᵀ` without ever forming the `k × d` weight.
//!
//! `y_{b,r} = Σ_{c,i} A_i[r,c] S_i x_{b,c}` for input segments `x_{b,c}` (length `d/n`) and
//! output segments `y_{b,r}` (length `k/n`). Two contraction orders, each one large GEMM
//! (`2·B·k·d` FLOPs) plus a *mixing* with the rules done per sample:
//!
//! **Mix the outputs** ([`Order::MixOutputs`], blocks first). With `X` viewed as `(B·n, d/n)`
//! and `S` as `Ŝ₂ = (k, d/n)` (row `(i, u)` is row `u` of `S_i`):
//!
//! ```text
//!     T = X Ŝ₂ᵀ          T[(b,c), (i,u)] = (S_i x_{b,c})_u
//!     Y_b = Ã T_b        Ã[r, (c,i)] = A_i[r,c],  T_b = T's rows of sample b as (n², k/n)
//!     backward:  dT_b = Ãᵀ G_b,   dÃ += Σ_b G_b T_bᵀ,   dX = dT Ŝ₂,   dŜ₂ += dTᵀ X
//! ```
//!
//! **Mix the inputs** ([`Order::MixInputs`], rules first):
//!
//! ```text
//!     Z_b = Â X_b        Â[(r,i), c] = A_i[r,c],  X_b = sample b as (n, d/n),  Z: (B·n, d)
//!     Y = Σ_i Z_i S_iᵀ    Z_i = columns (i, ·) of Z, Y viewed as (B·n, k/n)
//!     backward:  dZ_i = G S_i,   dS_i += Gᵀ Z_i,   dX_b = Âᵀ dZ_b,   dÂ += Σ_b dZ_b X_bᵀ
//! ```
//!
//! Mixing costs `2·B·n²·k` FLOPs in the first order and `2·B·n²·d` in the second:
//! [`Order::for_shape`] takes the cheaper, mixing the narrower side. Extra memory is `T`
//! (`B·n·k` values) or `Z` (`B·n·d`), never `k·d`; at batch 1 the kernel reads `n` times fewer
//! weights than a dense matrix–vector product.

use ndarray::{s, Array2, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3};

use crate::kernels::gemm::gemm;
use crate::kernels::phm::PhmShape;
use crate::Float;

/// Which side of the product the rules mix; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// `T = X Ŝ₂ᵀ`, then `Y_b = Ã T_b`: mixing costs `2·B·n²·k`.
    MixOutputs,
    /// `Z_b = Â X_b`, then `Y = Σ_i Z_i S_iᵀ`: mixing costs `2·B·n²·d`.
    MixInputs,
}

impl Order {
    /// The cheaper order for `shape`: mix the narrower side.
    pub(crate) fn for_shape(shape: PhmShape) -> Order {
        if shape.out_features() <= shape.in_features() {
            Order::MixOutputs
        } else {
            Order::MixInputs
        }
    }

    /// Shape of the intermediate (`T` or `Z`) for a batch.
    pub(crate) fn intermediate_dim(self, shape: PhmShape, batch: usize) -> (usize, usize) {
        let width = match self {
            Order::MixOutputs => shape.out_features(),
            Order::MixInputs => shape.in_features(),
        };
        (batch * shape.n(), width)
    }

    /// Shape of the mixing matrix: `Ã` `(n, n²)` or `Â` `(n², n)`.
    pub(crate) fn mixing_dim(self, n: usize) -> (usize, usize) {
        match self {
            Order::MixOutputs => (n, n * n),
            Order::MixInputs => (n * n, n),
        }
    }
}

/// The mixing matrix of `order`: `Ã[r, c·n + i]` or `Â[r·n + i, c]`, both `= A_i[r, c]`.
pub(crate) fn mixing_matrix<F: Float>(order: Order, a: ArrayView3<'_, F>) -> Array2<F> {
    let mut m = Array2::zeros(order.mixing_dim(a.dim().0));
    mixing_matrix_into(order, a, m.view_mut());
    m
}

/// Writes the mixing matrix of `order` into `m`, which must be contiguous.
pub(crate) fn mixing_matrix_into<F: Float>(
    order: Order,
    a: ArrayView3<'_, F>,
    m: ArrayViewMut2<'_, F>,
) {
    let n = a.dim().0;
    // A is (i, r, c); Ã is (r, c, i) and Â is (r, i, c), flattened.
    let axes = match order {
        Order::MixOutputs => [1, 2, 0],
        Order::MixInputs => [1, 0, 2],
    };
    m.into_shape_with_order((n, n, n))
        .expect("the mixing matrix is contiguous")
        .assign(&a.permuted_axes(axes));
}

/// Rows of sample `b` of a `(B·n, w)` matrix, viewed as `(n², w/n)`.
fn sample_rows<'a, F>(m: ArrayView2<'a, F>, n: usize, b: usize) -> ArrayView2<'a, F> {
    let w = m.ncols();
    m.slice_move(s![b * n..(b + 1) * n, ..])
        .into_shape_with_order((n * n, w / n))
        .expect("intermediate rows are contiguous")
}

/// Mutable form of [`sample_rows`].
fn sample_rows_mut<'a, F>(m: ArrayViewMut2<'a, F>, n: usize, b: usize) -> ArrayViewMut2<'a, F> {
    let w = m.ncols();
    m.slice_move(s![b * n..(b + 1) * n, ..])
        .into_shape_with_order((n * n, w / n))
        .expect("intermediate rows are contiguous")
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

/// Forward in `order`: writes the intermediate (`T` or `Z`, shape
/// [`Order::intermediate_dim`]) into `t` and `y ← Y + beta·y` into `y` `(B, k)`.
///
/// `x` must be in standard layout; `t` and `y` must be contiguous.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<F: Float>(
    shape: PhmShape,
    order: Order,
    mixing: ArrayView2<'_, F>,
    s: ArrayView3<'_, F>,
    x: ArrayView2<'_, F>,
    t: ArrayViewMut2<'_, F>,
    y: ArrayViewMut2<'_, F>,
    beta: F,
) {
    match order {
        Order::MixOutputs => forward_mix_outputs(shape, mixing, s, x, t, y, beta),
        Order::MixInputs => forward_mix_inputs(shape, mixing, s, x, t, y, beta),
    }
}

/// Backward of [`forward`] in the same `order`: adds `dA` into `da` and `dS` into `ds` (when
/// given), writes `dX` into `dx` `(B, d)`. `dt` (the intermediate's shape) is scratch; `t` is
/// the forward's intermediate.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<F: Float>(
    shape: PhmShape,
    order: Order,
    mixing: ArrayView2<'_, F>,
    s: ArrayView3<'_, F>,
    x: ArrayView2<'_, F>,
    t: ArrayView2<'_, F>,
    g: ArrayView2<'_, F>,
    dt: ArrayViewMut2<'_, F>,
    dx: ArrayViewMut2<'_, F>,
    da: Option<ArrayViewMut3<'_, F>>,
    ds: Option<ArrayViewMut3<'_, F>>,
) {
    match order {
        Order::MixOutputs => backward_mix_outputs(shape, mixing, s, x, t, g, dt, dx, da, ds),
        Order::MixInputs => backward_mix_inputs(shape, mixing, s, x, t, g, dt, dx, da, ds),
    }
}

/// `Z_b = Â X_b` into `z`, then `Y = Σ_i Z_i S_iᵀ + beta·Y`.
fn forward_mix_inputs<F: Float>(
    shape: PhmShape,
    mixing: ArrayView2<'_, F>,
    s: ArrayView3<'_, F>,
    x: ArrayView2<'_, F>,
    mut z: ArrayViewMut2<'_, F>,
    y: ArrayViewMut2<'_, F>,
    beta: F,
) {
    let (n, p, q) = shape.blocks_dim();
    for (b, x_b) in x.outer_iter().enumerate() {
        let x_b = x_b
            .into_shape_with_order((n, q))
            .expect("inputs are contiguous");
        gemm(
            F::one(),
            &mixing,
            &x_b,
            F::zero(),
            &mut sample_rows_mut(z.view_mut(), n, b),
        );
    }
    let mut y = y
        .into_shape_with_order((x.nrows() * n, p))
        .expect("outputs are contiguous");
    for (i, s_i) in s.outer_iter().enumerate() {
        let z_i = z.slice(s![.., i * q..(i + 1) * q]);
        let beta_i = if i == 0 { beta } else { F::one() };
        gemm(F::one(), &z_i, &s_i.t(), beta_i, &mut y);
    }
}

/// Backward of [`forward_mix_inputs`].
#[allow(clippy::too_many_arguments)]
fn backward_mix_inputs<F: Float>(
    shape: PhmShape,
    mixing: ArrayView2<'_, F>,
    s: ArrayView3<'_, F>,
    x: ArrayView2<'_, F>,
    z: ArrayView2<'_, F>,
    g: ArrayView2<'_, F>,
    mut dz: ArrayViewMut2<'_, F>,
    mut dx: ArrayViewMut2<'_, F>,
    da: Option<ArrayViewMut3<'_, F>>,
    ds: Option<ArrayViewMut3<'_, F>>,
) {
    let (n, p, q) = shape.blocks_dim();
    let gr = g
        .into_shape_with_order((x.nrows() * n, p))
        .expect("gradients are contiguous");
    for (i, s_i) in s.outer_iter().enumerate() {
        // dZ_i = G S_i
        let mut dz_i = dz.slice_mut(s![.., i * q..(i + 1) * q]);
        gemm(F::one(), &gr, &s_i, F::zero(), &mut dz_i);
    }
    if let Some(mut ds) = ds {
        for (i, mut ds_i) in ds.outer_iter_mut().enumerate() {
            // dS_i += Gᵀ Z_i
            gemm(
                F::one(),
                &gr.t(),
                &z.slice(s![.., i * q..(i + 1) * q]),
                F::one(),
                &mut ds_i,
            );
        }
    }
    let mut d_mixing = da.as_ref().map(|_| Array2::zeros((n * n, n)));
    for (b, (x_b, dx_b)) in x.outer_iter().zip(dx.outer_iter_mut()).enumerate() {
        let x_b = x_b
            .into_shape_with_order((n, q))
            .expect("inputs are contiguous");
        let mut dx_b = dx_b
            .into_shape_with_order((n, q))
            .expect("dX is contiguous");
        let dz_b = sample_rows(dz.view(), n, b);
        // dX_b = Âᵀ dZ_b
        gemm(F::one(), &mixing.t(), &dz_b, F::zero(), &mut dx_b);
        if let Some(dm) = d_mixing.as_mut() {
            // dÂ += dZ_b X_bᵀ
            gemm(F::one(), &dz_b, &x_b.t(), F::one(), &mut dm.view_mut());
        }
    }
    if let (Some(mut da), Some(dm)) = (da, d_mixing) {
        // dA_i[r, c] += dÂ[r·n + i, c]
        da += &dm
            .into_shape_with_order((n, n, n))
            .expect("fresh arrays are contiguous")
            .permuted_axes([1, 0, 2]);
    }
}

/// Blocks first: writes `T` into `t` `(B·n, k)` and `y ← Y + beta·y` into `y` `(B, k)`.
fn forward_mix_outputs<F: Float>(
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
        let t_b = sample_rows(t.view(), n, b);
        let mut y_b = y_b
            .view_mut()
            .into_shape_with_order((n, p))
            .expect("outputs are contiguous");
        gemm(F::one(), &mixing, &t_b, beta, &mut y_b);
    }
}

/// Backward of [`forward_mix_outputs`].
#[allow(clippy::too_many_arguments)]
fn backward_mix_outputs<F: Float>(
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
        // dT_b = Ãᵀ G_b
        let mut dt_b = sample_rows_mut(dt.view_mut(), n, b);
        gemm(F::one(), &mixing.t(), &g_b, F::zero(), &mut dt_b);
        if let Some(dm) = d_mixing.as_mut() {
            // dÃ += G_b T_bᵀ
            let t_b = sample_rows(t, n, b);
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
