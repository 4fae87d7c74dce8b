//! Layer normalization over the last axis (Ba, Kiros & Hinton, 2016), as PyTorch's
//! `nn.LayerNorm(width)`.
//!
//! For each row `x ∈ R^D` (every index of the leading axes of an input `(…, D)`):
//!
//! ```text
//!     μ = (1/D) Σ_j x_j        σ² = (1/D) Σ_j (x_j − μ)²   (biased, as PyTorch)
//!     x̂ = (x − μ) / √(σ² + ε)      y = x̂ ⊙ w + b          w, b: (D)
//! ```
//!
//! Backward, for `G = dL/dY` and `s = 1/√(σ² + ε)`, row by row:
//!
//! ```text
//!     dw += Σ_rows G ⊙ x̂        db += Σ_rows G
//!     dX  = s · (G⊙w − mean(G⊙w) − x̂ · mean(G⊙w ⊙ x̂))
//! ```
//!
//! **Numerics.** The mean and variance of each row are computed in two passes accumulated in
//! `f64`, whatever the layer's float type, so an `f32` input such as `10⁴ + small noise`
//! normalizes as accurately as in `f64` (a one-pass `E[x²] − E[x]²` in `f32` would lose
//! every digit of the noise). The backward row reductions are accumulated in `f64` too.
//!
//! **Passes.** The forward pass saves the input and `(μ, 1/√(σ² + ε))` of every row, not
//! `x̂`; forward and backward each make one pass per row (statistics then output; the two
//! means then `dX`, with `x̂` recomputed), rows split across the crate's pool. `dw` and `db` are
//! summed column by column over the rows in order, so every result is the same whatever the
//! thread count.
//!
//! The default init is PyTorch's: `w = 1`, `b = 0`, `ε = 10⁻⁵`.
//!
//! ```
//! use ndarray::array;
//! use phm_nn::nn::LayerNormConfig;
//! use phm_nn::Module;
//!
//! let ln = LayerNormConfig::new(2).init::<f64>()?;
//! // Row [1, 3]: μ = 2, σ² = 1, so y = ±1/√(1 + 1e-5).
//! let y = ln.infer(array![[1.0, 3.0]].into_dyn().view());
//! let s = 1.0 / (1.0f64 + 1e-5).sqrt();
//! assert!((y[[0, 0]] + s).abs() < 1e-15 && (y[[0, 1]] - s).abs() < 1e-15);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{s, Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewD, ArrayViewMut2, Axis, Ix1};

use crate::error::{check_shape, PhmError, Result};
use crate::kernels::buffer_pool;
use crate::kernels::gemm::assert_same_shape;
use crate::kernels::parallel::{for_each_chunk, for_each_chunk2};
use crate::kernels::shapes::{as_matrix, owned_matrix, unflatten, with_last};
use crate::module::{Module, Param, SavedStates, StateStack};
use crate::Float;

/// Configuration of a [`LayerNorm`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormConfig {
    /// Width `D` of the normalized (last) axis.
    pub width: usize,
    /// `ε` added to the variance (default `1e-5`, as PyTorch).
    pub eps: f64,
    /// Whether the layer has the learned scale `w` and shift `b` (default `true`).
    pub affine: bool,
}

impl LayerNormConfig {
    /// A layer norm over a last axis of `width`, `ε = 1e-5`, with `w` and `b`.
    #[must_use]
    pub fn new(width: usize) -> Self {
        LayerNormConfig {
            width,
            eps: 1e-5,
            affine: true,
        }
    }

    /// Sets `ε`.
    #[must_use]
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets whether the layer has `w` and `b`.
    #[must_use]
    pub fn with_affine(mut self, affine: bool) -> Self {
        self.affine = affine;
        self
    }

    /// Builds the layer, with `w = 1` and `b = 0` (PyTorch's init).
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] for `width = 0`; [`PhmError::InvalidArgument`] unless `ε` is
    /// finite and `≥ 0`.
    pub fn init<F: Float>(&self) -> Result<LayerNorm<F>> {
        if self.width == 0 {
            return Err(PhmError::ZeroSize { what: "width" });
        }
        check_eps(self.eps)?;
        let affine = self.affine.then(|| {
            (
                Param::new(ArrayD::ones(vec![self.width])),
                Param::new(ArrayD::zeros(vec![self.width])),
            )
        });
        Ok(LayerNorm {
            width: self.width,
            eps: self.eps,
            affine,
            saved: SavedStates::new(),
        })
    }
}

fn check_eps(eps: f64) -> Result<()> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(PhmError::InvalidArgument {
            what: "eps",
            reason: format!("eps must be finite and non-negative, got {eps}"),
        })
    }
}

/// What one forward pass saves: the input as a matrix `(M, D)`, `(μ, 1/√(σ² + ε))` per row
/// `(M, 2)`, the leading axes. The backward pass recomputes `x̂` from them in its row pass.
#[derive(Clone)]
struct Saved<F> {
    x: Array2<F>,
    stats: Array2<f64>,
    lead: Vec<usize>,
}

/// Elementary operations counted per entry of a row pass when deciding to split it across
/// threads.
const ROW_COST: usize = 8;

/// `(μ, 1/√(σ² + ε))` of one row, both sums in `f64` (two passes over the row: the variance
/// of the deviations, not `E[x²] − E[x]²`).
#[inline(always)]
fn row_stats<F: Float>(x: &[F], eps: f64) -> (f64, f64) {
    let inv_d = 1.0 / x.len() as f64;
    let mean = row_sum(x.len(), |j| x[j].as_f64()) * inv_d;
    let var = row_sum(x.len(), |j| {
        let c = x[j].as_f64() - mean;
        c * c
    }) * inv_d;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Partial sums [`row_sum`] keeps: one `f64` vector register with AVX-512.
const LANES: usize = 8;

/// `Σ_{j < n} f(j)` in `f64`, as [`LANES`] interleaved partial sums added in a fixed order: the
/// compiler vectorises it (a single running sum is one long dependency chain), and the
/// result depends only on the row, not on the thread that computes it.
#[inline(always)]
fn row_sum(n: usize, f: impl Fn(usize) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let whole = n - n % LANES;
    for j in (0..whole).step_by(LANES) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(j + l);
        }
    }
    let tail: f64 = (whole..n).map(&f).sum();
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0] + tail
}

/// Affine weights `(w, b)` as `f64`.
type Affine = (Vec<f64>, Vec<f64>);

/// The forward row pass over a chunk of rows: `y = (x − μ)·(1/σ) ⊙ w + b` and each row's
/// `(μ, 1/σ)` into `st`. Run through `pulp`'s dispatch, so its loops are compiled for
/// the CPU's best vector instructions (the arithmetic, and so every bit, is the same on all).
struct NormalizeRows<'a, F> {
    x: ArrayView2<'a, F>,
    y: ArrayViewMut2<'a, F>,
    st: ArrayViewMut2<'a, f64>,
    wb: Option<&'a Affine>,
    eps: f64,
}

impl<F: Float> pulp::WithSimd for NormalizeRows<'_, F> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let NormalizeRows {
            x,
            mut y,
            mut st,
            wb,
            eps,
        } = self;
        for (i, (xr, mut yr)) in x.rows().into_iter().zip(y.rows_mut()).enumerate() {
            let xr = xr.as_slice().expect("standard layout");
            let yr = yr.as_slice_mut().expect("standard layout");
            let (mean, s) = row_stats(xr, eps);
            match wb {
                Some((w, b)) => {
                    for (((y, &x), &w), &b) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                        *y = F::of((x.as_f64() - mean) * s * w + b);
                    }
                }
                None => {
                    for (y, &x) in yr.iter_mut().zip(xr) {
                        *y = F::of((x.as_f64() - mean) * s);
                    }
                }
            }
            (st[[i, 0]], st[[i, 1]]) = (mean, s);
        }
    }
}

/// Layer normalization over the last axis; see the [module docs](self).
#[derive(Clone)]
pub struct LayerNorm<F: Float> {
    width: usize,
    eps: f64,
    /// `(w, b)`, or `None` without the affine part.
    affine: Option<(Param<F>, Param<F>)>,
    saved: SavedStates<Saved<F>>,
}

impl<F: Float> LayerNorm<F> {
    /// A layer norm from parameter handles `weight` `(D)` and `bias` `(D)` (e.g. loaded or
    /// shared ones), with the given `ε`.
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`] unless `weight` is 1-D and `bias` has its shape;
    /// [`PhmError::ZeroSize`] for an empty weight; [`PhmError::InvalidArgument`] unless `ε` is
    /// finite and `≥ 0`.
    pub fn from_params(weight: Param<F>, bias: Param<F>, eps: f64) -> Result<Self> {
        let shape = weight.shape();
        if shape.len() != 1 {
            return Err(PhmError::ShapeMismatch {
                what: "weight",
                expected: vec![0],
                got: shape,
            });
        }
        if shape[0] == 0 {
            return Err(PhmError::ZeroSize { what: "width" });
        }
        check_shape("bias", &shape, &bias.shape())?;
        check_eps(eps)?;
        Ok(LayerNorm {
            width: shape[0],
            eps,
            affine: Some((weight, bias)),
            saved: SavedStates::new(),
        })
    }

    /// Width `D` of the normalized axis.
    pub fn width(&self) -> usize {
        self.width
    }

    /// `ε`.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// The scale `w`'s handle, `None` without the affine part.
    pub fn weight_param(&self) -> Option<&Param<F>> {
        self.affine.as_ref().map(|(w, _)| w)
    }

    /// The shift `b`'s handle, `None` without the affine part.
    pub fn bias_param(&self) -> Option<&Param<F>> {
        self.affine.as_ref().map(|(_, b)| b)
    }

    /// `(w, b)` as `f64` vectors, `None` without the affine part.
    fn affine_f64(&self) -> Option<(Vec<f64>, Vec<f64>)> {
        self.affine.as_ref().map(|(w, b)| {
            let f = |p: &Param<F>| vec1(p.read().value()).iter().map(|v| v.as_f64()).collect();
            (f(w), f(b))
        })
    }

    /// Normalizes the rows of `x` `(M, D)` in one pass per row (statistics, then
    /// `y = x̂ ⊙ w + b`), rows split across the pool: returns `y` and the statistics
    /// `(μ, 1/√(σ² + ε))` of every row `(M, 2)` (16 bytes a row; inference drops them).
    fn normalize(&self, x: &ArrayView2<'_, F>) -> (Array2<F>, Array2<f64>) {
        let (m, d) = x.dim();
        // Every row of `y` and of the statistics is written below.
        let mut y = buffer_pool::for_overwrite((m, d));
        let mut stats = Array2::<f64>::zeros((m, 2));
        let wb = self.affine_f64();
        let (eps, wb) = (self.eps, wb.as_ref());
        let x = x.as_standard_layout();
        let x = x.view();
        for_each_chunk2(
            y.view_mut(),
            stats.view_mut(),
            Axis(0),
            m * d * ROW_COST,
            |start, y, st| {
                let rows = x.slice(s![start..start + y.nrows(), ..]);
                pulp::Arch::new().dispatch(NormalizeRows {
                    x: rows,
                    y,
                    st,
                    wb,
                    eps,
                })
            },
        );
        (y, stats)
    }
}

/// The backward row pass over a chunk of rows: `dX = (1/σ)·(G⊙w − mean(G⊙w) − x̂·mean(G⊙w⊙x̂))`
/// with `x̂` recomputed from the saved `(μ, 1/σ)`; dispatched as [`NormalizeRows`].
struct InputGradRows<'a, F> {
    x: ArrayView2<'a, F>,
    g: ArrayView2<'a, F>,
    stats: ArrayView2<'a, f64>,
    dx: ArrayViewMut2<'a, F>,
    w: Option<&'a [f64]>,
}

impl<F: Float> pulp::WithSimd for InputGradRows<'_, F> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let InputGradRows {
            x,
            g,
            stats,
            mut dx,
            w,
        } = self;
        let d = x.ncols();
        let inv_d = 1.0 / d as f64;
        let mut gw = vec![0.0f64; d];
        for (r, mut dr) in dx.rows_mut().into_iter().enumerate() {
            let (mean, s) = (stats[[r, 0]], stats[[r, 1]]);
            let gr = g.row(r);
            let gr = gr.as_slice().expect("standard layout");
            let xr = x.row(r);
            let xr = xr.as_slice().expect("standard layout");
            match w {
                Some(w) => {
                    for ((gw, &g), &w) in gw.iter_mut().zip(gr).zip(w) {
                        *gw = g.as_f64() * w;
                    }
                }
                None => {
                    for (gw, &g) in gw.iter_mut().zip(gr) {
                        *gw = g.as_f64();
                    }
                }
            }
            let (gw, xr) = (&gw[..d], &xr[..d]);
            let m1 = row_sum(d, |j| gw[j]) * inv_d;
            let m2 = row_sum(d, |j| gw[j] * (xr[j].as_f64() - mean) * s) * inv_d;
            let dr = dr.as_slice_mut().expect("standard layout");
            for ((dr, &gw), &x) in dr.iter_mut().zip(gw).zip(xr) {
                let h = (x.as_f64() - mean) * s;
                *dr = F::of(s * (gw - m1 - h * m2));
            }
        }
    }
}

/// The affine gradients over a block of columns: `acc[0] += Σ_rows G ⊙ x̂`,
/// `acc[1] += Σ_rows G`, each column summed over the rows in order; dispatched as
/// [`NormalizeRows`].
struct AffineGradColumns<'a, F> {
    x: ArrayView2<'a, F>,
    g: ArrayView2<'a, F>,
    stats: ArrayView2<'a, f64>,
    acc: ArrayViewMut2<'a, f64>,
}

impl<F: Float> pulp::WithSimd for AffineGradColumns<'_, F> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let AffineGradColumns { x, g, stats, acc } = self;
        let (mut dw, mut db) = acc.split_at(Axis(0), 1);
        let dw = dw
            .as_slice_mut()
            .expect("a row of a column block is contiguous");
        let db = db
            .as_slice_mut()
            .expect("a row of a column block is contiguous");
        for ((xr, gr), st) in x.rows().into_iter().zip(g.rows()).zip(stats.rows()) {
            let (mean, s) = (st[0], st[1]);
            let (xr, gr) = (
                xr.to_slice()
                    .expect("a row of a column block is contiguous"),
                gr.to_slice()
                    .expect("a row of a column block is contiguous"),
            );
            for (((dw, db), &g), &x) in dw.iter_mut().zip(db.iter_mut()).zip(gr).zip(xr) {
                let g = g.as_f64();
                *dw += g * (x.as_f64() - mean) * s;
                *db += g;
            }
        }
    }
}

fn vec1<F: Float>(v: ArrayViewD<'_, F>) -> ArrayView1<'_, F> {
    v.into_dimensionality::<Ix1>()
        .expect("layer norm parameters are 1-D")
}

impl<F: Float> Module<F> for LayerNorm<F> {
    /// # Panics
    /// If the last axis of `x` is not `width`.
    #[track_caller]
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        // The saved input is a copy: the owned pass on it.
        self.forward_owned(buffer_pool::copy_of(&x))
    }

    /// Keeps `x` as the saved input (no copy).
    ///
    /// # Panics
    /// If the last axis of `x` is not `width`.
    #[track_caller]
    fn forward_owned(&mut self, x: ArrayD<F>) -> ArrayD<F> {
        let (x, lead) = owned_matrix("LayerNorm::forward", "input", x, self.width);
        let (y, stats) = self.normalize(&x.view());
        self.saved.push(Saved {
            x,
            stats,
            lead: lead.clone(),
        });
        unflatten(y, &lead)
    }

    /// # Panics
    /// If no forward pass is left to go back through, or `grad_output` does not have the
    /// shape of that forward's output.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let saved = self.saved.pop("LayerNorm");
        let d = self.width;
        assert_same_shape(
            "LayerNorm::backward",
            "grad_output",
            grad_output.shape(),
            &with_last(&saved.lead, d),
        );
        let (g, _) = as_matrix("LayerNorm::backward", "grad_output", grad_output, d);
        let g = g.as_standard_layout();
        let w: Option<Vec<f64>> = self.affine_f64().map(|(w, _)| w);
        let (x, stats) = (&saved.x, &saved.stats);
        let m = g.nrows();
        // dX, one pass per row (x̂ recomputed from the saved μ and 1/σ), rows split across
        // the pool.
        let mut dx = buffer_pool::for_overwrite((m, d));
        let (x, g, stats) = (x.view(), g.view(), stats.view());
        let w = w.as_deref();
        for_each_chunk(dx.view_mut(), Axis(0), m * d * ROW_COST, |start, dx| {
            let rows = s![start..start + dx.nrows(), ..];
            pulp::Arch::new().dispatch(InputGradRows {
                x: x.slice(rows),
                g: g.slice(rows),
                stats: stats.slice(rows),
                dx,
                w,
            })
        });
        if let Some((wp, bp)) = &self.affine {
            // dw = Σ_rows G ⊙ x̂, db = Σ_rows G: columns split across the pool, each column
            // summed over the rows in order (the same sums whatever the thread count).
            let mut acc = Array2::<f64>::zeros((2, d));
            for_each_chunk(acc.view_mut(), Axis(1), m * d * 4, |c0, acc| {
                let cols = s![.., c0..c0 + acc.ncols()];
                pulp::Arch::new().dispatch(AffineGradColumns {
                    x: x.slice(cols),
                    g: g.slice(cols),
                    stats,
                    acc,
                })
            });
            for (p, row) in [(wp, 0), (bp, 1)] {
                let mut p = p.write();
                if p.is_trainable() {
                    for (g, a) in p.grad_mut().iter_mut().zip(acc.row(row)) {
                        *g += F::of(*a);
                    }
                }
            }
        }
        buffer_pool::recycle(saved.x);
        unflatten(dx, &saved.lead)
    }

    /// # Panics
    /// If the last axis of `x` is not `width`.
    #[track_caller]
    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (x, lead) = as_matrix("LayerNorm::infer", "input", x, self.width);
        unflatten(self.normalize(&x.view()).0, &lead)
    }

    fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<F>)) {
        if let Some((w, b)) = &self.affine {
            f("weight", w);
            f("bias", b);
        }
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.saved)
    }

    fn describe(&self) -> String {
        let affine = if self.affine.is_some() {
            ""
        } else {
            ", no affine"
        };
        format!("LayerNorm({}, eps = {:e}{affine})", self.width, self.eps)
    }

    fn hyperparameters(&self) -> Vec<(String, String)> {
        vec![
            ("width".into(), self.width.to_string()),
            ("eps".into(), self.eps.to_string()),
            ("affine".into(), self.affine.is_some().to_string()),
        ]
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        (input.last() == Some(&self.width)).then(|| input.to_vec())
    }
}

impl<F: Float> std::fmt::Debug for LayerNorm<F> {
    /// The one-line description (`LayerNorm(…)`), not the arrays.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::set_num_threads;

    /// `row_sum` is the sum, at every length around its lane count (whole blocks, a tail, no
    /// block): small integers, so every order gives the exact value.
    #[test]
    fn row_sum_adds_every_entry_once() {
        for n in 0..=3 * LANES + 3 {
            let v: Vec<f64> = (0..n).map(|j| ((j * 7) % 11) as f64 - 5.0).collect();
            let want: f64 = v.iter().sum();
            assert_eq!(row_sum(n, |j| v[j]), want, "n = {n}");
            assert_eq!(
                row_sum(n, |j| v[j] * v[j]),
                v.iter().map(|x| x * x).sum::<f64>()
            );
        }
    }

    /// The plain definition, row by row in `f64`: `(y, dX, dw, db)` for input `x`, weight
    /// `w`, bias `b`, upstream gradient `g`.
    #[allow(clippy::type_complexity)]
    fn reference(
        x: &Array2<f64>,
        w: &[f64],
        b: &[f64],
        g: &Array2<f64>,
        eps: f64,
    ) -> (Array2<f64>, Array2<f64>, Vec<f64>, Vec<f64>) {
        let (m, d) = x.dim();
        let (mut y, mut dx) = (Array2::zeros((m, d)), Array2::zeros((m, d)));
        let (mut dw, mut db) = (vec![0.0; d], vec![0.0; d]);
        for r in 0..m {
            let mean = (0..d).map(|j| x[[r, j]]).sum::<f64>() / d as f64;
            let var = (0..d).map(|j| (x[[r, j]] - mean).powi(2)).sum::<f64>() / d as f64;
            let s = 1.0 / (var + eps).sqrt();
            let h: Vec<f64> = (0..d).map(|j| (x[[r, j]] - mean) * s).collect();
            let gw: Vec<f64> = (0..d).map(|j| g[[r, j]] * w[j]).collect();
            let m1 = gw.iter().sum::<f64>() / d as f64;
            let m2 = gw.iter().zip(&h).map(|(a, b)| a * b).sum::<f64>() / d as f64;
            for j in 0..d {
                y[[r, j]] = h[j] * w[j] + b[j];
                dx[[r, j]] = s * (gw[j] - m1 - h[j] * m2);
                dw[j] += g[[r, j]] * h[j];
                db[j] += g[[r, j]];
            }
        }
        (y, dx, dw, db)
    }

    /// `(y, dX, dw, db, infer(x))` of one layer.
    type Outputs<F> = (ArrayD<F>, ArrayD<F>, ArrayD<F>, ArrayD<F>, ArrayD<F>);

    fn run<F: Float>(x: &Array2<f64>, w: &[f64], b: &[f64], g: &Array2<f64>) -> Outputs<F> {
        let d = x.ncols();
        let mut ln = LayerNorm::from_params(
            Param::new(ArrayD::from_shape_fn(vec![d], |i| F::of(w[i[0]]))),
            Param::new(ArrayD::from_shape_fn(vec![d], |i| F::of(b[i[0]]))),
            1e-5,
        )
        .unwrap();
        let xf = x.mapv(F::of).into_dyn();
        let y = ln.forward(xf.view());
        let dx = ln.backward(g.mapv(F::of).into_dyn().view());
        let infer = ln.infer(xf.view());
        let (wp, bp) = (ln.weight_param().unwrap(), ln.bias_param().unwrap());
        (y, dx, wp.grad(), bp.grad(), infer)
    }

    /// Forward, backward and the parameter gradients against the plain definition, at odd
    /// shapes (some large enough to be split across threads), in `f64` and `f32`, at 1 and 2
    /// threads; the results at 1 and 2 threads are bit-identical.
    #[test]
    fn one_pass_rows_match_the_definition_at_one_and_two_threads() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        for (m, d) in [(1, 1), (3, 5), (7, 33), (67, 129), (130, 64)] {
            // A large common offset in some rows: the two-pass variance must not cancel.
            let x = Array2::from_shape_fn((m, d), |(r, _)| {
                if r % 3 == 1 {
                    1e4 + next()
                } else {
                    3.0 * next()
                }
            });
            let g = Array2::from_shape_fn((m, d), |_| next());
            let w: Vec<f64> = (0..d).map(|_| 1.0 + 0.5 * next()).collect();
            let b: Vec<f64> = (0..d).map(|_| next()).collect();
            let (y, dx, dw, db) = reference(&x, &w, &b, &g, 1e-5);
            // The f32 layer against the definition on the f32-rounded data.
            let r32 = |v: f64| f64::from(v as f32);
            let (w32, b32): (Vec<f64>, Vec<f64>) = (
                w.iter().map(|&v| r32(v)).collect(),
                b.iter().map(|&v| r32(v)).collect(),
            );
            let (y32, dx32, dw32, db32) = reference(&x.mapv(r32), &w32, &b32, &g.mapv(r32), 1e-5);
            let close = |got: &ArrayD<f64>, want: &[f64], tol: f64, what: &str| {
                for (a, e) in got.iter().zip(want) {
                    assert!(
                        (a - e).abs() <= tol * (1.0 + e.abs()),
                        "{what} ({m}×{d}): {a} vs {e}"
                    );
                }
            };
            let mut outs = Vec::new();
            // Split even small passes, so that the split paths are the ones checked.
            crate::kernels::set_elementwise_min_work(0);
            for threads in [1, 2] {
                set_num_threads(threads);
                let o64 = run::<f64>(&x, &w, &b, &g);
                close(&o64.0, y.as_slice().unwrap(), 1e-10, "y");
                close(&o64.4, y.as_slice().unwrap(), 1e-10, "infer");
                close(&o64.1, dx.as_slice().unwrap(), 1e-9, "dx");
                close(&o64.2, &dw, 1e-10, "dw");
                close(&o64.3, &db, 1e-12, "db");
                let o32 = run::<f32>(&x, &w, &b, &g);
                let up = |a: &ArrayD<f32>| a.mapv(f64::from);
                close(&up(&o32.0), y32.as_slice().unwrap(), 1e-6, "y f32");
                close(&up(&o32.1), dx32.as_slice().unwrap(), 1e-5, "dx f32");
                close(&up(&o32.2), &dw32, 1e-6, "dw f32");
                close(&up(&o32.3), &db32, 1e-6, "db f32");
                outs.push((o64, o32));
            }
            assert!(outs[0] == outs[1], "1 and 2 threads differ at {m}×{d}");
        }
        set_num_threads(1);
    }

    /// A constant row has `σ² = 0`: `x̂ = 0`, so `y = b`, and `dX = (G⊙w − mean(G⊙w)) / √ε`.
    #[test]
    fn a_constant_row_normalizes_to_the_bias() {
        let w = [2.0, -1.0, 0.5];
        let b = [0.25, 1.0, -3.0];
        let x = Array2::from_elem((2, 3), 7.5);
        let g = ndarray::array![[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]];
        let (y, dx, dw, db, _) = run::<f64>(&x, &w, &b, &g);
        for r in 0..2 {
            for j in 0..3 {
                assert_eq!(y[[r, j]], b[j]);
            }
            let gw: Vec<f64> = (0..3).map(|j| g[[r, j]] * w[j]).collect();
            let mean = gw.iter().sum::<f64>() / 3.0;
            for j in 0..3 {
                let want = (gw[j] - mean) / 1e-5f64.sqrt();
                assert!((dx[[r, j]] - want).abs() <= 1e-12 * want.abs().max(1.0));
            }
        }
        assert!(dw.iter().all(|&v| v == 0.0));
        assert_eq!(db.as_slice().unwrap(), &[1.0, 1.0, 7.0]);
    }
}
