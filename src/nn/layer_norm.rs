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

use ndarray::{Array1, Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewD, Ix1};

use crate::error::{check_shape, PhmError, Result};
use crate::kernels::gemm::assert_same_shape;
use crate::kernels::shapes::{as_matrix, unflatten, with_last};
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

/// What one forward pass saves: `x̂` as a matrix, `1/√(σ² + ε)` per row, the leading axes.
#[derive(Clone)]
struct Saved<F> {
    xhat: Array2<F>,
    inv_std: Vec<f64>,
    lead: Vec<usize>,
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

    /// Normalizes the rows of `x` `(M, D)`: returns `y`, `x̂` and `1/√(σ² + ε)` per row.
    fn normalize(&self, x: &ArrayView2<'_, F>, keep: bool) -> (Array2<F>, Saved<F>) {
        let (m, d) = x.dim();
        let mut y = Array2::<F>::zeros((m, d));
        let mut xhat = if keep {
            Array2::<F>::zeros((m, d))
        } else {
            Array2::<F>::zeros((0, d))
        };
        let mut inv_std = Vec::with_capacity(if keep { m } else { 0 });
        let w = self.affine.as_ref().map(|(w, b)| (w.read(), b.read()));
        let wb = w.as_ref().map(|(w, b)| (vec1(w.value()), vec1(b.value())));
        let inv_d = 1.0 / d as f64;
        for (r, row) in x.rows().into_iter().enumerate() {
            let mean = row.iter().map(|v| v.as_f64()).sum::<f64>() * inv_d;
            let var = row
                .iter()
                .map(|v| {
                    let c = v.as_f64() - mean;
                    c * c
                })
                .sum::<f64>()
                * inv_d;
            let s = 1.0 / (var + self.eps).sqrt();
            let mut yr = y.row_mut(r);
            for (j, v) in row.iter().enumerate() {
                let h = (v.as_f64() - mean) * s;
                if keep {
                    xhat[[r, j]] = F::of(h);
                }
                yr[j] = match &wb {
                    Some((w, b)) => F::of(h * w[j].as_f64() + b[j].as_f64()),
                    None => F::of(h),
                };
            }
            if keep {
                inv_std.push(s);
            }
        }
        (
            y,
            Saved {
                xhat,
                inv_std,
                lead: Vec::new(),
            },
        )
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
        let (x, lead) = as_matrix("LayerNorm::forward", "input", x, self.width);
        let (y, mut saved) = self.normalize(&x.view(), true);
        saved.lead = lead.clone();
        self.saved.push(saved);
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
        let w: Option<Array1<f64>> = self
            .affine
            .as_ref()
            .map(|(w, _)| vec1(w.read().value()).mapv(|v| v.as_f64()));
        let mut dw = vec![0.0f64; d];
        let mut db = vec![0.0f64; d];
        let mut dx = Array2::<F>::zeros((g.nrows(), d));
        let mut gw = vec![0.0f64; d];
        let inv_d = 1.0 / d as f64;
        for (r, (grow, hrow)) in g.rows().into_iter().zip(saved.xhat.rows()).enumerate() {
            let (mut m1, mut m2) = (0.0, 0.0);
            for j in 0..d {
                let gj = grow[j].as_f64();
                let hj = hrow[j].as_f64();
                dw[j] += gj * hj;
                db[j] += gj;
                gw[j] = match &w {
                    Some(w) => gj * w[j],
                    None => gj,
                };
                m1 += gw[j];
                m2 += gw[j] * hj;
            }
            m1 *= inv_d;
            m2 *= inv_d;
            let s = saved.inv_std[r];
            let mut dr = dx.row_mut(r);
            for j in 0..d {
                dr[j] = F::of(s * (gw[j] - m1 - hrow[j].as_f64() * m2));
            }
        }
        if let Some((wp, bp)) = &self.affine {
            for (p, acc) in [(wp, &dw), (bp, &db)] {
                let mut p = p.write();
                if p.is_trainable() {
                    for (g, a) in p.grad_mut().iter_mut().zip(acc) {
                        *g += F::of(*a);
                    }
                }
            }
        }
        unflatten(dx, &saved.lead)
    }

    /// # Panics
    /// If the last axis of `x` is not `width`.
    #[track_caller]
    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (x, lead) = as_matrix("LayerNorm::infer", "input", x, self.width);
        unflatten(self.normalize(&x.view(), false).0, &lead)
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
