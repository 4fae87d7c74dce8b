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
//! For small layers the per-sample mixing products become one GEMM for the whole batch: in the
//! blocks-first order `T` is computed group-major (`(n², B·k/n)`, one block product per input
//! segment, no copy of `T`); in the rules-first order the intermediate is copied group-major.
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

/// Largest per-sample mixing product (`n · n² · w` multiply-adds, `w` = `k/n` or `d/n`) for
/// which the mixing runs as one GEMM over the whole batch instead of one small product per
/// sample: below it, a per-sample call costs more than its arithmetic (small layers).
const BATCHED_MIX_MAX_WORK: usize = 1 << 15;
/// Largest intermediate (`B·n·min(k, d)` scalars) regrouped for the batched mixing: the
/// regrouped copies are allocated per call, and past ~128 KiB the allocator hands out fresh
/// pages whose faults cost more than the batching saves (measured with `perf` on 256², n = 8,
/// batch 32), so larger intermediates keep the per-sample products.
const BATCHED_MIX_MAX_LEN: usize = 1 << 15;

/// Whether the mixing of a batch of `batch` runs as one GEMM ([`regroup`]) rather than one
/// product per sample.
fn batched_mixing(shape: PhmShape, order: Order, batch: usize) -> bool {
    let (n, p, q) = shape.blocks_dim();
    let w = match order {
        Order::MixOutputs => p,
        Order::MixInputs => q,
    };
    batch > 1 && n * n * n * w <= BATCHED_MIX_MAX_WORK && batch * n * n * w <= BATCHED_MIX_MAX_LEN
}

/// `m` (standard layout, `B·g·w` scalars read as `(B, g, w)`: sample-major groups) copied to
/// `(g, B·w)` (group-major), so that one GEMM can mix the groups of every sample at once.
fn regroup<F: Float>(m: ArrayView2<'_, F>, groups: usize, batch: usize) -> Array2<F> {
    let w = m.len() / (groups * batch);
    let m3 = m
        .into_shape_with_order((batch, groups, w))
        .expect("regrouped arrays are contiguous");
    let mut out = Array2::zeros((groups, batch * w));
    out.view_mut()
        .into_shape_with_order((groups, batch, w))
        .expect("fresh arrays are contiguous")
        .assign(&m3.permuted_axes([1, 0, 2]));
    out
}

/// Inverse of [`regroup`]: `dst ← src + beta·dst` with `src` `(g, B·w)` and `dst` (standard
/// layout) read as `(B, g, w)`.
fn ungroup_into<F: Float>(
    src: ArrayView2<'_, F>,
    dst: ArrayViewMut2<'_, F>,
    batch: usize,
    beta: F,
) {
    let groups = src.nrows();
    let w = src.ncols() / batch;
    let src3 = src
        .into_shape_with_order((groups, batch, w))
        .expect("regrouped arrays are contiguous")
        .permuted_axes([1, 0, 2]);
    let mut dst3 = dst
        .into_shape_with_order((batch, groups, w))
        .expect("outputs are contiguous");
    if beta.is_zero() {
        dst3.assign(&src3);
    } else {
        dst3.zip_mut_with(&src3, |d, &v| *d = v + beta * *d);
    }
}

/// Largest layer (`k·d` weights) for which the blocks-first order keeps its intermediate
/// group-major ([`forward_mix_outputs_grouped`]): `n` block products and one mixing GEMM for
/// the whole batch instead of one mixing product per sample. On small layers the per-sample
/// calls dominate (256², n = 4, batch 32: 10 % fewer instructions per training step; batch
/// 256: 21 % fewer, `valgrind --tool=callgrind` on `profile_step`); on 1024² layers the
/// per-sample products are large enough and the split block products cost as much as they
/// save (1–4 % more instructions), so those keep the sample-major layout.
const GROUP_MAJOR_MAX_WEIGHTS: usize = 1 << 18;

/// Largest `n` for the group-major layout: at 256², n = 8, batch 32 its `n` block products are
/// `(k × d/n)·(d/n × B)` = 256 × 32 × 32 each, and despite 6 % fewer instructions the step
/// took 14 % more CPU time than the per-sample kernel (`perf stat`, 9 alternations, load ≈ 3);
/// at n = 4 it took 7 % less.
const GROUP_MAJOR_MAX_N: usize = 4;

/// Whether the blocks-first order runs group-major for a batch of `batch` through `shape`
/// (never at batch 1: inference keeps one block product with `n` rows).
fn group_major(shape: PhmShape, batch: usize) -> bool {
    batch >= 2
        && shape.n() <= GROUP_MAJOR_MAX_N
        && shape.out_features() * shape.in_features() <= GROUP_MAJOR_MAX_WEIGHTS
}

/// `dst ← srcᵀ + beta·dst` for a `(rows, cols)` matrix `src` and a `(cols, rows)` matrix
/// `dst`, in square tiles so that both sides are read and written a cache line at a time (a
/// strided element-by-element transpose is several times slower at these sizes).
fn transpose_into<F: Float>(src: ArrayView2<'_, F>, mut dst: ArrayViewMut2<'_, F>, beta: F) {
    const TILE: usize = 16;
    let (rows, cols) = src.dim();
    debug_assert_eq!(dst.dim(), (cols, rows));
    let (Some(src_s), Some(dst_s)) = (src.as_slice(), dst.as_slice_mut()) else {
        if beta.is_zero() {
            dst.assign(&src.t());
        } else {
            dst.zip_mut_with(&src.t(), |d, &v| *d = v + beta * *d);
        }
        return;
    };
    for i0 in (0..rows).step_by(TILE) {
        let i1 = (i0 + TILE).min(rows);
        for j0 in (0..cols).step_by(TILE) {
            let j1 = (j0 + TILE).min(cols);
            for j in j0..j1 {
                let out = &mut dst_s[j * rows + i0..j * rows + i1];
                let column = src_s[i0 * cols + j..].iter().step_by(cols);
                if beta.is_zero() {
                    out.iter_mut().zip(column).for_each(|(d, &v)| *d = v);
                } else {
                    out.iter_mut()
                        .zip(column)
                        .for_each(|(d, &v)| *d = v + beta * *d);
                }
            }
        }
    }
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
    let batch = x.nrows();
    if order == Order::MixOutputs && group_major(shape, batch) {
        return forward_mix_outputs_grouped(shape, mixing, s, x, t, y, beta);
    }
    let batched = batched_mixing(shape, order, batch);
    match order {
        Order::MixOutputs => forward_mix_outputs(shape, mixing, s, x, t, y, beta, batched),
        Order::MixInputs => forward_mix_inputs(shape, mixing, s, x, t, y, beta, batched),
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
    let batch = x.nrows();
    if order == Order::MixOutputs && group_major(shape, batch) {
        return backward_mix_outputs_grouped(shape, mixing, s, x, t, g, dt, dx, da, ds);
    }
    let batched = batched_mixing(shape, order, batch);
    match order {
        Order::MixOutputs => {
            backward_mix_outputs(shape, mixing, s, x, t, g, dt, dx, da, ds, batched)
        }
        Order::MixInputs => backward_mix_inputs(shape, mixing, s, x, t, g, dt, dx, da, ds, batched),
    }
}

/// `Z_b = Â X_b` into `z`, then `Y = Σ_i Z_i S_iᵀ + beta·Y`; the mixing as one GEMM for the
/// batch when `batched`, else one product per sample.
#[allow(clippy::too_many_arguments)]
fn forward_mix_inputs<F: Float>(
    shape: PhmShape,
    mixing: ArrayView2<'_, F>,
    s: ArrayView3<'_, F>,
    x: ArrayView2<'_, F>,
    mut z: ArrayViewMut2<'_, F>,
    y: ArrayViewMut2<'_, F>,
    beta: F,
    batched: bool,
) {
    let (n, p, q) = shape.blocks_dim();
    let batch = x.nrows();
    if batched {
        // Z' = Â X' with X' = (n, B·q): one GEMM for the whole batch.
        let xp = regroup(x, n, batch);
        let mut zp = Array2::zeros((n * n, batch * q));
        gemm(F::one(), &mixing, &xp.view(), F::zero(), &mut zp.view_mut());
        ungroup_into(zp.view(), z.view_mut(), batch, F::zero());
    } else {
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
    batched: bool,
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
    let batch = x.nrows();
    if batched {
        // dX' = Âᵀ dZ' and dÂ = dZ' X'ᵀ, with dZ' = (n², B·q) and X' = (n, B·q).
        let dzp = regroup(dz.view(), n * n, batch);
        let mut dxp = Array2::zeros((n, batch * q));
        gemm(
            F::one(),
            &mixing.t(),
            &dzp.view(),
            F::zero(),
            &mut dxp.view_mut(),
        );
        ungroup_into(dxp.view(), dx.view_mut(), batch, F::zero());
        if let Some(dm) = d_mixing.as_mut() {
            let xp = regroup(x, n, batch);
            gemm(
                F::one(),
                &dzp.view(),
                &xp.t(),
                F::zero(),
                &mut dm.view_mut(),
            );
        }
    }
    let per_sample = !batched;
    for (b, (x_b, dx_b)) in x
        .outer_iter()
        .zip(dx.outer_iter_mut())
        .enumerate()
        .filter(|_| per_sample)
    {
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

/// Blocks first: writes `T` into `t` `(B·n, k)` and `y ← Y + beta·y` into `y` `(B, k)`; the
/// mixing as one GEMM for the batch when `batched`, else one product per sample.
#[allow(clippy::too_many_arguments)]
fn forward_mix_outputs<F: Float>(
    shape: PhmShape,
    mixing: ArrayView2<'_, F>,
    s: ArrayView3<'_, F>,
    x: ArrayView2<'_, F>,
    mut t: ArrayViewMut2<'_, F>,
    mut y: ArrayViewMut2<'_, F>,
    beta: F,
    batched: bool,
) {
    let (n, p, _) = shape.blocks_dim();
    gemm(
        F::one(),
        &segments(shape, x),
        &blocks_rows(shape, s).t(),
        F::zero(),
        &mut t,
    );
    let batch = x.nrows();
    if batched {
        // Y' = Ã T' with T' = (n², B·p): one GEMM for the whole batch.
        let tp = regroup(t.view(), n * n, batch);
        let mut yp = Array2::zeros((n, batch * p));
        gemm(F::one(), &mixing, &tp.view(), F::zero(), &mut yp.view_mut());
        ungroup_into(yp.view(), y, batch, beta);
        return;
    }
    for (b, mut y_b) in y.outer_iter_mut().enumerate() {
        let t_b = sample_rows(t.view(), n, b);
        let mut y_b = y_b
            .view_mut()
            .into_shape_with_order((n, p))
            .expect("outputs are contiguous");
        gemm(F::one(), &mixing, &t_b, beta, &mut y_b);
    }
}

/// Blocks first, group-major: the intermediate is stored as `T'` `(n·k, B)`, row
/// `(c, i, u)`, column `b` (`T'[(c,i,u), b] = (S_i x_{b,c})_u`), in the buffer `t` of
/// [`Order::intermediate_dim`] (same number of scalars). Then `T'` read as `(n², p·B)` is
/// exactly what the mixing needs, so every product is one GEMM on contiguous slices, with no
/// copy of `T`:
///
/// ```text
///     T'_c = Ŝ₂ X_cᵀ            (k, B) for each input segment c: n GEMMs, inner d/n
///     Y'   = Ã T'               (n, p·B) = Yᵀ: one GEMM for the whole batch
///     y    ← Y'ᵀ + beta·y       (a transpose of B·k values)
/// ```
#[allow(clippy::too_many_arguments)]
fn forward_mix_outputs_grouped<F: Float>(
    shape: PhmShape,
    mixing: ArrayView2<'_, F>,
    s: ArrayView3<'_, F>,
    x: ArrayView2<'_, F>,
    t: ArrayViewMut2<'_, F>,
    y: ArrayViewMut2<'_, F>,
    beta: F,
) {
    let (n, p, q) = shape.blocks_dim();
    let (k, batch) = (shape.out_features(), x.nrows());
    let s2 = blocks_rows(shape, s);
    let mut t = t
        .into_shape_with_order((n * k, batch))
        .expect("intermediates are contiguous");
    for c in 0..n {
        let x_c = x.slice(s![.., c * q..(c + 1) * q]);
        let mut t_c = t.slice_mut(s![c * k..(c + 1) * k, ..]);
        gemm(F::one(), &s2, &x_c.t(), F::zero(), &mut t_c);
    }
    let tp = t
        .view()
        .into_shape_with_order((n * n, p * batch))
        .expect("intermediates are contiguous");
    let mut yt = Array2::zeros((n, p * batch));
    gemm(F::one(), &mixing, &tp, F::zero(), &mut yt.view_mut());
    let yt = yt
        .into_shape_with_order((k, batch))
        .expect("fresh arrays are contiguous");
    transpose_into(yt.view(), y, beta);
}

/// Backward of [`forward_mix_outputs_grouped`]; `t` and `dt` are group-major `(n·k, B)`:
///
/// ```text
///     G'  = Gᵀ                   (k, B) read as (n, p·B): a transpose of B·k values
///     dT' = Ãᵀ G'                (n², p·B): one GEMM
///     dÃ  = G' T'ᵀ               (n, n²): one GEMM
///     dX_c = dT'_cᵀ Ŝ₂,   dŜ₂ += dT'_c X_c     for each input segment c
/// ```
#[allow(clippy::too_many_arguments)]
fn backward_mix_outputs_grouped<F: Float>(
    shape: PhmShape,
    mixing: ArrayView2<'_, F>,
    s: ArrayView3<'_, F>,
    x: ArrayView2<'_, F>,
    t: ArrayView2<'_, F>,
    g: ArrayView2<'_, F>,
    dt: ArrayViewMut2<'_, F>,
    mut dx: ArrayViewMut2<'_, F>,
    da: Option<ArrayViewMut3<'_, F>>,
    ds: Option<ArrayViewMut3<'_, F>>,
) {
    let (n, p, q) = shape.blocks_dim();
    let (k, batch) = (shape.out_features(), x.nrows());
    let mut gt = Array2::zeros((k, batch));
    transpose_into(g, gt.view_mut(), F::zero());
    let gp = gt
        .view()
        .into_shape_with_order((n, p * batch))
        .expect("fresh arrays are contiguous");
    let mut dt = dt
        .into_shape_with_order((n * n, p * batch))
        .expect("intermediates are contiguous");
    gemm(F::one(), &mixing.t(), &gp, F::zero(), &mut dt);
    if let Some(mut da) = da {
        let tp = t
            .into_shape_with_order((n * n, p * batch))
            .expect("intermediates are contiguous");
        let mut dm = Array2::zeros((n, n * n));
        gemm(F::one(), &gp, &tp.t(), F::zero(), &mut dm.view_mut());
        // dA_i[r, c] += dÃ[r, c·n + i]
        da += &dm
            .into_shape_with_order((n, n, n))
            .expect("fresh arrays are contiguous")
            .permuted_axes([2, 0, 1]);
    }
    let dt = dt
        .into_shape_with_order((n * k, batch))
        .expect("intermediates are contiguous");
    let s2 = blocks_rows(shape, s);
    let mut ds = ds.map(|ds| {
        ds.into_shape_with_order((k, q))
            .expect("gradients are stored in standard layout")
    });
    for c in 0..n {
        let dt_c = dt.slice(s![c * k..(c + 1) * k, ..]);
        let mut dx_c = dx.slice_mut(s![.., c * q..(c + 1) * q]);
        gemm(F::one(), &dt_c.t(), &s2, F::zero(), &mut dx_c);
        if let Some(ds) = ds.as_mut() {
            let x_c = x.slice(s![.., c * q..(c + 1) * q]);
            gemm(F::one(), &dt_c, &x_c, F::one(), ds);
        }
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
    batched: bool,
) {
    let (n, p, q) = shape.blocks_dim();
    let mut d_mixing = da.as_ref().map(|_| Array2::zeros((n, n * n)));
    let batch = x.nrows();
    let per_sample = !batched;
    if !per_sample {
        // dT' = Ãᵀ G' and dÃ = G' T'ᵀ, with G' = (n, B·p) and T' = (n², B·p).
        let gp = regroup(g, n, batch);
        let mut dtp = Array2::zeros((n * n, batch * p));
        gemm(
            F::one(),
            &mixing.t(),
            &gp.view(),
            F::zero(),
            &mut dtp.view_mut(),
        );
        ungroup_into(dtp.view(), dt.view_mut(), batch, F::zero());
        if let Some(dm) = d_mixing.as_mut() {
            let tp = regroup(t, n * n, batch);
            gemm(F::one(), &gp.view(), &tp.t(), F::zero(), &mut dm.view_mut());
        }
    }
    for (b, g_b) in g.outer_iter().enumerate().filter(|_| per_sample) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, Array3, Dimension};

    fn filled<D: Dimension>(dim: D, seed: usize) -> Array<f64, D> {
        let mut i = 0;
        Array::from_shape_simple_fn(dim, || {
            i += 1;
            ((i * 7 + seed * 13) % 11) as f64 - 5.0
        })
    }

    type Grads = (Array2<f64>, Array2<f64>, Array3<f64>, Array3<f64>);

    /// Forward and backward of the order `Order::for_shape` picks, batched mixing or not.
    fn run(
        shape: PhmShape,
        a: &Array3<f64>,
        s3: &Array3<f64>,
        x: &Array2<f64>,
        g: &Array2<f64>,
        batched: bool,
    ) -> Grads {
        let (n, d, k, batch) = (
            shape.n(),
            shape.in_features(),
            shape.out_features(),
            x.nrows(),
        );
        let order = Order::for_shape(shape);
        let mixing = mixing_matrix(order, a.view());
        let dim = order.intermediate_dim(shape, batch);
        let (mut t, mut dt) = (Array2::zeros(dim), Array2::zeros(dim));
        let mut y = Array2::<f64>::ones((batch, k));
        let mut dx = Array2::zeros((batch, d));
        let mut da = Array3::zeros((n, n, n));
        let mut ds = Array3::zeros(shape.blocks_dim());
        let (mv, sv, xv, gv) = (mixing.view(), s3.view(), x.view(), g.view());
        let (da_v, ds_v) = (Some(da.view_mut()), Some(ds.view_mut()));
        match order {
            Order::MixOutputs => {
                forward_mix_outputs(shape, mv, sv, xv, t.view_mut(), y.view_mut(), 2.0, batched);
                backward_mix_outputs(
                    shape,
                    mv,
                    sv,
                    xv,
                    t.view(),
                    gv,
                    dt.view_mut(),
                    dx.view_mut(),
                    da_v,
                    ds_v,
                    batched,
                );
            }
            Order::MixInputs => {
                forward_mix_inputs(shape, mv, sv, xv, t.view_mut(), y.view_mut(), 2.0, batched);
                backward_mix_inputs(
                    shape,
                    mv,
                    sv,
                    xv,
                    t.view(),
                    gv,
                    dt.view_mut(),
                    dx.view_mut(),
                    da_v,
                    ds_v,
                    batched,
                );
            }
        }
        (y, dx, da, ds)
    }

    /// Forward and backward through the public entry points (group-major for the blocks-first
    /// order at batch ≥ 2).
    fn run_dispatched(
        shape: PhmShape,
        a: &Array3<f64>,
        s3: &Array3<f64>,
        x: &Array2<f64>,
        g: &Array2<f64>,
    ) -> Grads {
        let (n, d, k, batch) = (
            shape.n(),
            shape.in_features(),
            shape.out_features(),
            x.nrows(),
        );
        let order = Order::for_shape(shape);
        let mixing = mixing_matrix(order, a.view());
        let dim = order.intermediate_dim(shape, batch);
        let (mut t, mut dt) = (Array2::zeros(dim), Array2::zeros(dim));
        let mut y = Array2::<f64>::ones((batch, k));
        let mut dx = Array2::zeros((batch, d));
        let mut da = Array3::zeros((n, n, n));
        let mut ds = Array3::zeros(shape.blocks_dim());
        let (mv, sv, xv) = (mixing.view(), s3.view(), x.view());
        forward(shape, order, mv, sv, xv, t.view_mut(), y.view_mut(), 2.0);
        backward(
            shape,
            order,
            mv,
            sv,
            xv,
            t.view(),
            g.view(),
            dt.view_mut(),
            dx.view_mut(),
            Some(da.view_mut()),
            Some(ds.view_mut()),
        );
        (y, dx, da, ds)
    }

    /// The group-major blocks-first kernel gives the forward and gradients of the per-sample
    /// one (small integers: sums are exact).
    #[test]
    fn group_major_and_per_sample_agree() {
        for (n, d, k, batch) in [(2, 6, 4, 5), (4, 8, 8, 2), (3, 9, 9, 7), (4, 16, 8, 3)] {
            let shape = PhmShape::new(d, k, n).unwrap();
            assert_eq!(Order::for_shape(shape), Order::MixOutputs);
            assert!(group_major(shape, batch));
            let a: Array3<f64> = filled(ndarray::Dim([n, n, n]), 1);
            let s3: Array3<f64> = filled(ndarray::Dim(shape.blocks_dim()), 2);
            let x: Array2<f64> = filled(ndarray::Dim([batch, d]), 3);
            let g: Array2<f64> = filled(ndarray::Dim([batch, k]), 4);
            assert_eq!(
                run_dispatched(shape, &a, &s3, &x, &g),
                run(shape, &a, &s3, &x, &g, false),
                "n={n} d={d} k={k} batch={batch}"
            );
        }
    }

    /// The batched mixing (one GEMM for the whole batch) and the per-sample mixing give the
    /// same forward and gradients, in both orders (small integers: sums are exact).
    #[test]
    fn batched_and_per_sample_mixing_agree() {
        for (n, d, k) in [(2, 6, 4), (4, 8, 12), (3, 9, 9)] {
            let shape = PhmShape::new(d, k, n).unwrap();
            let batch = 5;
            let a: Array3<f64> = filled(ndarray::Dim([n, n, n]), 1);
            let s3: Array3<f64> = filled(ndarray::Dim(shape.blocks_dim()), 2);
            let x: Array2<f64> = filled(ndarray::Dim([batch, d]), 3);
            let g: Array2<f64> = filled(ndarray::Dim([batch, k]), 4);
            assert_eq!(
                run(shape, &a, &s3, &x, &g, true),
                run(shape, &a, &s3, &x, &g, false),
                "n={n} d={d} k={k}"
            );
        }
    }
}
