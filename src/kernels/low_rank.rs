//! Low-rank PHM (LPHM, Compacter): blocks `S_i = U_i V_iᵀ`, the two kernels that compute
//! `Y = X Wᵀ` with them, and the rule that picks one.
//!
//! ```text
//!     W = Σ_i A_i ⊗ (U_i V_iᵀ)      A: (n, n, n)   U: (n, k/n, r)   V: (n, d/n, r)
//!     parameters: n³ + n·r·(k + d)/n  = n³ + r·(k + d)        (+ k bias)
//! ```
//!
//! With `p = k/n`, `q = d/n`, `B` rows and `x_{b,c}` the `c`-th segment (`q` wide) of row `b`:
//!
//! **Factored** (never forms `S_i` or `W`):
//!
//! ```text
//!     P_i[c, b, :] = x_{b,c} V_i                  n GEMMs (n·B × q)·(q × r)    2·B·n·d·r FLOPs
//!     Z_i[ρ, b, :] = Σ_c A_i[ρ, c] P_i[c, b, :]   n GEMMs (n × n)·(n × B·r)    2·B·n³·r
//!     y_{b,ρ}      = Σ_i Z_i[ρ, b, :] U_iᵀ        n GEMMs (n·B × r)·(r × p)    2·B·n·k·r
//! ```
//!
//! `2·B·n·r·(d + k + n²)` FLOPs forward, about twice that backward; memory `B·d` (the input
//! with its segments in front) plus `2·n²·B·r` (`P` and `Z`, kept for the backward pass) —
//! never `k·d`.
//!
//! **Materialized**: `S_i = U_i V_iᵀ` (`2·k·d·r/n` FLOPs), `W = Σ A_i ⊗ S_i` (one GEMM,
//! `2·n·k·d`), then `Y = X Wᵀ` (`2·B·k·d`); backward `dW = Gᵀ X`, `dX = G W` (`4·B·k·d`) and
//! `dW → (dA, dS) → (dU, dV)` (`≈ 4·k·d·(n + r/n)`). Memory `k·d` for `W` (and `dW`).
//!
//! **The rule** ([`LowRankShape::kernel`] for [`Strategy::Auto`]): both kernels spend about
//! three forward-sized passes per training step, so compare one forward each, counting the
//! factored FLOPs [`FACTORED_SLOWDOWN`] `= 1.5` times: its GEMMs are narrow (`r` columns,
//! `n × n` mixing products) and ran 1 to 2 times slower per FLOP than the materialized
//! kernel's large ones in f32 training steps of `768 → 48`, `256 → 256` and `512 → 512`
//! layers (n = 4, r = 1…32, batch 32…1024). Factored when
//! `1.5 · B·n·r·(d + k + n²) ≤ k·d·(B + n + r/n)`, materialized otherwise. For a square layer
//! and large `B` this is `r ≲ d/(3n)`, a third of the full rank `min(k, d)/n`: building `S_i`
//! and `W` pays when the rank is a sizeable part of the full rank, or the output is narrow
//! and the batch large (a `768 → 48` down-projection with `r = 8` at batch 256, where the two
//! kernels are within 20 % of each other). At Compacter's usual rank 1 the factored kernel is
//! the one used.
//!
//! ```
//! use phm_nn::kernels::low_rank::LowRankShape;
//! use phm_nn::{Kernel, Strategy};
//! // A 768 → 48 Compacter down-projection with n = 4, rank 1: 4³ + 1·(768 + 48) weights.
//! let shape = LowRankShape::new(768, 48, 4, 1)?;
//! assert_eq!(shape.num_weight_parameters(), 64 + 816);
//! assert_eq!(shape.kernel(Strategy::Auto, 32), Kernel::Factored);
//! // At full rank (min(k, d)/n = 12) a large batch builds W instead.
//! let full = LowRankShape::new(768, 48, 4, 12)?;
//! assert!(full.is_full_rank());
//! assert_eq!(full.kernel(Strategy::Auto, 256), Kernel::Materialized);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut3, Axis};

use crate::error::{PhmError, Result};
use crate::kernels::gemm::gemm;
use crate::kernels::phm::PhmShape;
use crate::kernels::strategy::{Kernel, Strategy};
use crate::Float;

/// How many times slower than the materialized kernel's GEMMs the factored kernel runs per
/// FLOP (narrow products with `r` columns); the weight of its FLOPs in the Auto rule.
pub const FACTORED_SLOWDOWN: f64 = 1.5;

/// Sizes of a low-rank PHM layer: the [`PhmShape`] `(in, out, n)` and the rank `r` of every
/// block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LowRankShape {
    phm: PhmShape,
    rank: usize,
}

impl LowRankShape {
    /// Sizes `(in_features, out_features, n)` and rank `r ≥ 1`; any rank is allowed (a rank
    /// `≥ min(k, d)/n` can express every block, see [`is_full_rank`](Self::is_full_rank)).
    ///
    /// # Errors
    /// As [`PhmShape::new`] and [`from_phm`](Self::from_phm).
    pub fn new(in_features: usize, out_features: usize, n: usize, rank: usize) -> Result<Self> {
        let phm = PhmShape::new(in_features, out_features, n)?;
        Self::from_phm(phm, rank)
    }

    /// A rank on top of existing PHM sizes.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] for `rank = 0`; [`PhmError::TooLarge`] if the parameter count
    /// `n³ + r·(k + d)` overflows.
    pub fn from_phm(phm: PhmShape, rank: usize) -> Result<Self> {
        if rank == 0 {
            return Err(PhmError::ZeroSize { what: "rank" });
        }
        let (d, k) = (phm.in_features(), phm.out_features());
        let fits = rank
            .checked_mul(k + d)
            .and_then(|f| f.checked_add(phm.n().pow(3)))
            .is_some_and(|f| f <= isize::MAX as usize);
        if !fits {
            return Err(PhmError::TooLarge {
                what: "low-rank blocks",
                reason: format!("rank {rank} · (out {k} + in {d}) overflows"),
            });
        }
        Ok(LowRankShape { phm, rank })
    }

    /// The PHM sizes.
    pub fn phm(&self) -> PhmShape {
        self.phm
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// `n`.
    pub fn n(&self) -> usize {
        self.phm.n()
    }

    /// `d`.
    pub fn in_features(&self) -> usize {
        self.phm.in_features()
    }

    /// `k`.
    pub fn out_features(&self) -> usize {
        self.phm.out_features()
    }

    /// Shape of `U`: `(n, k/n, r)`.
    pub fn u_dim(&self) -> (usize, usize, usize) {
        (self.n(), self.phm.block_rows(), self.rank)
    }

    /// Shape of `V`: `(n, d/n, r)`.
    pub fn v_dim(&self) -> (usize, usize, usize) {
        (self.n(), self.phm.block_cols(), self.rank)
    }

    /// Whether `r ≥ min(k, d)/n`: then `U_i V_iᵀ` can be any `(k/n) × (d/n)` block and the
    /// layer is as expressive as a [`PhmLinear`](crate::PhmLinear).
    pub fn is_full_rank(&self) -> bool {
        self.rank >= self.phm.block_rows().min(self.phm.block_cols())
    }

    /// `n³ + r·(k + d)` (`= n³ + n·r·(k + d)/n`): rules plus `U` and `V`, without bias.
    pub fn num_weight_parameters(&self) -> usize {
        self.n().pow(3) + self.rank * (self.in_features() + self.out_features())
    }

    /// FLOPs of one factored forward over `batch` rows: `2·B·n·r·(d + k + n²)`.
    pub fn factored_flops(&self, batch: usize) -> f64 {
        let (n, r) = (self.n() as f64, self.rank as f64);
        let (d, k) = (self.in_features() as f64, self.out_features() as f64);
        2.0 * batch as f64 * n * r * (d + k + n * n)
    }

    /// FLOPs of one materialized forward over `batch` rows (building `S` and `W`, then the
    /// product): `2·k·d·(B + n + r/n)`.
    pub fn materialized_flops(&self, batch: usize) -> f64 {
        let (n, r) = (self.n() as f64, self.rank as f64);
        let (d, k) = (self.in_features() as f64, self.out_features() as f64);
        2.0 * k * d * (batch as f64 + n + r / n)
    }

    /// The kernel `strategy` uses for `batch` rows: [`Strategy::Auto`] takes the factored one
    /// when [`FACTORED_SLOWDOWN`] times its FLOPs are at most the materialized FLOPs (ties go
    /// to factored, which uses less memory).
    pub fn kernel(&self, strategy: Strategy, batch: usize) -> Kernel {
        match strategy {
            Strategy::Factored => Kernel::Factored,
            Strategy::Materialized => Kernel::Materialized,
            Strategy::Auto => {
                let b = batch.max(1);
                if FACTORED_SLOWDOWN * self.factored_flops(b) <= self.materialized_flops(b) {
                    Kernel::Factored
                } else {
                    Kernel::Materialized
                }
            }
        }
    }
}

/// `S_i = U_i V_iᵀ` for every `i`: `(n, k/n, d/n)` from `U` `(n, k/n, r)` and `V`
/// `(n, d/n, r)`.
///
/// ```
/// use ndarray::Array3;
/// let u = Array3::<f64>::ones((2, 3, 1));
/// let v = Array3::<f64>::from_elem((2, 4, 1), 2.0);
/// let s = phm_nn::kernels::low_rank::build_blocks(u.view(), v.view());
/// assert_eq!(s.dim(), (2, 3, 4));
/// assert!(s.iter().all(|&x| x == 2.0));
/// ```
///
/// # Panics
/// If `U` and `V` disagree on `n` or `r`.
#[track_caller]
pub fn build_blocks<F: Float>(u: ArrayView3<'_, F>, v: ArrayView3<'_, F>) -> Array3<F> {
    let (n, p, r) = u.dim();
    let (nv, q, rv) = v.dim();
    assert!(
        n == nv && r == rv,
        "build_blocks: U has shape {:?} and V {:?}; they must agree on n and r",
        u.shape(),
        v.shape()
    );
    let mut s = Array3::zeros((n, p, q));
    for i in 0..n {
        let (ui, vi) = (u.index_axis(Axis(0), i), v.index_axis(Axis(0), i));
        gemm(
            F::one(),
            &ui,
            &vi.t(),
            F::zero(),
            &mut s.index_axis_mut(Axis(0), i),
        );
    }
    s
}

/// Chain rule through [`build_blocks`]: `dU_i += dS_i V_i`, `dV_i += dS_iᵀ U_i` for the
/// tensors given.
pub(crate) fn accumulate_factor_grads<F: Float>(
    u: ArrayView3<'_, F>,
    v: ArrayView3<'_, F>,
    ds: ArrayView3<'_, F>,
    du: Option<ArrayViewMut3<'_, F>>,
    dv: Option<ArrayViewMut3<'_, F>>,
) {
    let n = u.dim().0;
    if let Some(mut du) = du {
        for i in 0..n {
            let (dsi, vi) = (ds.index_axis(Axis(0), i), v.index_axis(Axis(0), i));
            gemm(
                F::one(),
                &dsi,
                &vi,
                F::one(),
                &mut du.index_axis_mut(Axis(0), i),
            );
        }
    }
    if let Some(mut dv) = dv {
        for i in 0..n {
            let (dsi, ui) = (ds.index_axis(Axis(0), i), u.index_axis(Axis(0), i));
            gemm(
                F::one(),
                &dsi.t(),
                &ui,
                F::one(),
                &mut dv.index_axis_mut(Axis(0), i),
            );
        }
    }
}

/// Arrays of finished steps, handed out again to later calls of the same shape (at most a few
/// of each rank are kept), so a training step of the factored kernel allocates only its
/// outputs once the pool is warm.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pool<F> {
    two: Vec<Array2<F>>,
    three: Vec<Array3<F>>,
}

const POOL_SIZE: usize = 8;

impl<F: Float> Pool<F> {
    /// A `dim` matrix from the pool (contents unspecified) or a new one.
    fn take2(&mut self, dim: (usize, usize)) -> Array2<F> {
        match self.two.iter().position(|a| a.dim() == dim) {
            Some(i) => self.two.swap_remove(i),
            None => Array2::zeros(dim),
        }
    }

    /// A `dim` tensor from the pool (contents unspecified) or a new one.
    fn take3(&mut self, dim: (usize, usize, usize)) -> Array3<F> {
        match self.three.iter().position(|a| a.dim() == dim) {
            Some(i) => self.three.swap_remove(i),
            None => Array3::zeros(dim),
        }
    }

    fn give2(&mut self, a: Array2<F>) {
        if self.two.len() < POOL_SIZE {
            self.two.push(a);
        }
    }

    fn give3(&mut self, a: Array3<F>) {
        if self.three.len() < POOL_SIZE {
            self.three.push(a);
        }
    }

    /// Returns a spent forward state to the pool.
    pub(crate) fn give_state(&mut self, state: FactoredState<F>) {
        self.give2(state.xp);
        self.give3(state.p);
        self.give3(state.z);
    }
}

/// What the factored forward keeps for its backward pass.
#[derive(Debug, Clone)]
pub(crate) struct FactoredState<F> {
    /// The input with segments in front: row `c·B + b` is `x_{b,c}` — `(n·B, q)`.
    pub xp: Array2<F>,
    /// `P` `(n_i, n_c·B, r)`.
    pub p: Array3<F>,
    /// `Z` `(n_i, n_ρ·B, r)`.
    pub z: Array3<F>,
}

/// Row `b` of `x` `(B, n·w)` split into `n` segments, stacked segment-major: `(n·B, w)`.
fn segments_first<F: Float>(x: ArrayView2<'_, F>, n: usize, pool: &mut Pool<F>) -> Array2<F> {
    let (b, width) = x.dim();
    let w = width / n;
    let mut out = pool.take2((n * b, w));
    for c in 0..n {
        out.slice_mut(s![c * b..(c + 1) * b, ..])
            .assign(&x.slice(s![.., c * w..(c + 1) * w]));
    }
    out
}

/// Inverse of [`segments_first`]: `(n·B, w)` back to `(B, n·w)`.
fn segments_last<F: Float>(xp: ArrayView2<'_, F>, n: usize) -> Array2<F> {
    let (nb, w) = xp.dim();
    let b = nb / n;
    let mut out = Array2::zeros((b, n * w));
    for c in 0..n {
        out.slice_mut(s![.., c * w..(c + 1) * w])
            .assign(&xp.slice(s![c * b..(c + 1) * b, ..]));
    }
    out
}

/// Factored forward: `Y = X Wᵀ` (no bias) for `x` `(B, d)`, with the state for
/// [`factored_backward`].
pub(crate) fn factored_forward<F: Float>(
    shape: LowRankShape,
    a: ArrayView3<'_, F>,
    u: ArrayView3<'_, F>,
    v: ArrayView3<'_, F>,
    x: ArrayView2<'_, F>,
    pool: &mut Pool<F>,
) -> (Array2<F>, FactoredState<F>) {
    let (n, r, p) = (shape.n(), shape.rank(), shape.phm().block_rows());
    let b = x.nrows();
    let xp = segments_first(x, n, pool);
    let mut pp = pool.take3((n, n * b, r));
    let mut z = pool.take3((n, n * b, r));
    let mut yp = pool.take2((n * b, p));
    yp.fill(F::zero());
    for i in 0..n {
        let mut pi = pp.index_axis_mut(Axis(0), i);
        gemm(
            F::one(),
            &xp.view(),
            &v.index_axis(Axis(0), i),
            F::zero(),
            &mut pi,
        );
        let pi = pp.index_axis(Axis(0), i);
        let pi = pi.into_shape_with_order((n, b * r)).expect("contiguous");
        let zi = z.index_axis_mut(Axis(0), i);
        let mut zi = zi.into_shape_with_order((n, b * r)).expect("contiguous");
        gemm(F::one(), &a.index_axis(Axis(0), i), &pi, F::zero(), &mut zi);
        let zi = z.index_axis(Axis(0), i);
        gemm(
            F::one(),
            &zi,
            &u.index_axis(Axis(0), i).t(),
            F::one(),
            &mut yp.view_mut(),
        );
    }
    let y = segments_last(yp.view(), n);
    pool.give2(yp);
    (y, FactoredState { xp, p: pp, z })
}

/// Gradient buffers `(dA, dU, dV)` for [`factored_backward`] (`None` for frozen tensors).
pub(crate) type FactorGrads<'a, F> = (
    Option<ArrayViewMut3<'a, F>>,
    Option<ArrayViewMut3<'a, F>>,
    Option<ArrayViewMut3<'a, F>>,
);

/// Factored backward for `g = dL/dY` `(B, k)` with the values `(A, U, V)` of the forward
/// pass: returns `dX` and adds `dA`, `dU`, `dV` into the buffers given.
pub(crate) fn factored_backward<F: Float>(
    shape: LowRankShape,
    (a, u, v): (ArrayView3<'_, F>, ArrayView3<'_, F>, ArrayView3<'_, F>),
    state: &FactoredState<F>,
    g: ArrayView2<'_, F>,
    grads: FactorGrads<'_, F>,
    pool: &mut Pool<F>,
) -> Array2<F> {
    let (mut da, mut du, mut dv) = grads;
    let (n, r) = (shape.n(), shape.rank());
    let b = g.nrows();
    let gp = segments_first(g, n, pool);
    let mut dz = pool.take2((n * b, r));
    let mut dp = pool.take2((n * b, r));
    let mut dxp = pool.take2(state.xp.dim());
    dxp.fill(F::zero());
    for i in 0..n {
        let (ui, vi, ai) = (
            u.index_axis(Axis(0), i),
            v.index_axis(Axis(0), i),
            a.index_axis(Axis(0), i),
        );
        let (zi, pi) = (
            state.z.index_axis(Axis(0), i),
            state.p.index_axis(Axis(0), i),
        );
        // y = Σ_i Z_i U_iᵀ:  dZ_i = G U_i,  dU_i += Gᵀ Z_i.
        gemm(F::one(), &gp.view(), &ui, F::zero(), &mut dz.view_mut());
        if let Some(du) = du.as_mut() {
            gemm(
                F::one(),
                &gp.t(),
                &zi,
                F::one(),
                &mut du.index_axis_mut(Axis(0), i),
            );
        }
        // Z_i = A_i P_i (as (n, B·r)):  dP_i = A_iᵀ dZ_i,  dA_i += dZ_i P_iᵀ.
        let dzi = dz
            .view()
            .into_shape_with_order((n, b * r))
            .expect("contiguous");
        let pim = pi.into_shape_with_order((n, b * r)).expect("contiguous");
        if let Some(da) = da.as_mut() {
            gemm(
                F::one(),
                &dzi,
                &pim.t(),
                F::one(),
                &mut da.index_axis_mut(Axis(0), i),
            );
        }
        {
            let mut dpi = dp
                .view_mut()
                .into_shape_with_order((n, b * r))
                .expect("contiguous");
            gemm(F::one(), &ai.t(), &dzi, F::zero(), &mut dpi);
        }
        // P_i = X_p V_i:  dV_i += X_pᵀ dP_i,  dX_p += dP_i V_iᵀ.
        if let Some(dv) = dv.as_mut() {
            gemm(
                F::one(),
                &state.xp.t(),
                &dp.view(),
                F::one(),
                &mut dv.index_axis_mut(Axis(0), i),
            );
        }
        gemm(F::one(), &dp.view(), &vi.t(), F::one(), &mut dxp.view_mut());
    }
    let dx = segments_last(dxp.view(), n);
    for spent in [gp, dz, dp, dxp] {
        pool.give2(spent);
    }
    dx
}
