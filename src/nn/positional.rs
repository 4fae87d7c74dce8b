//! Positional encodings added to a sequence `(…, T, width)`: the fixed sinusoidal one of
//! Vaswani et al. (2017) or a learned table (GPT-2, BERT).
//!
//! The second-to-last axis is the position (rank ≥ 2); a row `P[p]` is added to every
//! token at position `p`, starting at `start` (0 for [`Module::forward`] / [`Module::infer`]):
//!
//! ```text
//!     Y[…, t, :] = X[…, t, :] + P[start + t, :]
//!     sinusoidal:  P[p, 2i] = sin(p / 10000^(2i/width)),   P[p, 2i+1] = cos(p / 10000^(2i/width))
//!     learned:     P = W, a parameter (max_len, width)
//!     backward:    dX = G,   dW[start + t, :] += Σ_{leading axes} G[…, t, :]   (learned only)
//! ```
//!
//! The sinusoidal table is computed in `f64` and rounded to the layer's float type; it has
//! no parameters and works for any width ≥ 1 (an odd width ends with a sine column) and any
//! position. [`PositionalEncoding::forward_at`] / [`PositionalEncoding::infer_at`] take the
//! first position explicitly, for generation with a key/value cache where the new tokens
//! start at position `start`.
//!
//! ```
//! use phm_nn::nn::PositionalEncoding;
//! use phm_nn::prelude::*;
//!
//! let pe = PositionalEncoding::<f64>::sinusoidal(4)?;
//! let y = pe.infer_at(ArrayD::zeros(IxDyn(&[1, 2, 4])).view(), 3); // positions 3 and 4
//! assert_eq!(y[[0, 0, 0]], 3f64.sin());
//! assert_eq!(y[[0, 1, 1]], 4f64.cos());
//! assert!((y[[0, 1, 2]] - (4.0 / 100.0f64).sin()).abs() < 1e-15); // 10000^(2/4) = 100
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{s, Array2, ArrayD, ArrayViewD, Axis, Ix2, Ix3};
use rand::Rng;

use crate::error::{PhmError, Result};
use crate::init::{Fans, Init};
use crate::kernels::buffer_pool;
use crate::kernels::gemm::assert_same_shape;
use crate::module::{Module, Param, SavedStates, StateStack};
use crate::Float;

/// The init this crate suggests for a learned table: `N(0, 0.02²)`, as GPT-2 and BERT.
pub const DEFAULT_LEARNED_INIT: Init = Init::Normal { std: 0.02 };

#[derive(Clone)]
enum Kind<F: Float> {
    Sinusoidal,
    /// The table `(max_len, width)`.
    Learned(Param<F>),
}

/// A sinusoidal or learned positional encoding; see the [module docs](self).
#[derive(Clone)]
pub struct PositionalEncoding<F: Float> {
    width: usize,
    kind: Kind<F>,
    /// Per forward call: the first position and the input's shape.
    saved: SavedStates<(usize, Vec<usize>)>,
}

impl<F: Float> PositionalEncoding<F> {
    /// The fixed sinusoidal encoding of Vaswani et al. for rows of `width`.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] for `width = 0`.
    pub fn sinusoidal(width: usize) -> Result<Self> {
        if width == 0 {
            return Err(PhmError::ZeroSize { what: "width" });
        }
        Ok(PositionalEncoding {
            width,
            kind: Kind::Sinusoidal,
            saved: SavedStates::new(),
        })
    }

    /// A learned table of `max_len` positions of `width`, drawn with `init` (fans
    /// `(width, max_len)`); [`DEFAULT_LEARNED_INIT`] (`N(0, 0.02²)`) is the usual choice.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] for `max_len = 0` or `width = 0`; the errors of
    /// [`Init::sample`] for an invalid init.
    pub fn learned<R: Rng + ?Sized>(
        max_len: usize,
        width: usize,
        init: Init,
        rng: &mut R,
    ) -> Result<Self> {
        for (what, size) in [("max_len", max_len), ("width", width)] {
            if size == 0 {
                return Err(PhmError::ZeroSize { what });
            }
        }
        let w = init.sample(&[max_len, width], Fans::new(width, max_len), rng)?;
        Ok(PositionalEncoding {
            width,
            kind: Kind::Learned(Param::new(w)),
            saved: SavedStates::new(),
        })
    }

    /// Width of each row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The number of positions of a learned table, `None` (unbounded) for sinusoidal.
    pub fn max_len(&self) -> Option<usize> {
        match &self.kind {
            Kind::Sinusoidal => None,
            Kind::Learned(w) => Some(w.shape()[0]),
        }
    }

    /// Whether the table is a learned parameter.
    pub fn is_learned(&self) -> bool {
        matches!(self.kind, Kind::Learned(_))
    }

    /// The learned table's handle `(max_len, width)`, `None` for sinusoidal.
    pub fn weight_param(&self) -> Option<&Param<F>> {
        match &self.kind {
            Kind::Sinusoidal => None,
            Kind::Learned(w) => Some(w),
        }
    }

    /// The rows `P[0..len]`, shape `(len, width)`.
    ///
    /// # Panics
    /// If the table is learned and `len > max_len`.
    #[track_caller]
    pub fn table(&self, len: usize) -> Array2<F> {
        self.rows("PositionalEncoding::table", 0, len)
    }

    /// `P[start..start + len]`.
    #[track_caller]
    fn rows(&self, context: &str, start: usize, len: usize) -> Array2<F> {
        match &self.kind {
            Kind::Sinusoidal => {
                let w = self.width;
                Array2::from_shape_fn((len, w), |(t, j)| {
                    let pos = (start + t) as f64;
                    let angle = pos / 10000f64.powf((2 * (j / 2)) as f64 / w as f64);
                    F::of(if j % 2 == 0 { angle.sin() } else { angle.cos() })
                })
            }
            Kind::Learned(p) => {
                let max_len = p.shape()[0];
                self.check_range(context, start, len, max_len);
                let v = p.read();
                v.value()
                    .into_dimensionality::<Ix2>()
                    .expect("table is 2-D")
                    .slice(s![start..start + len, ..])
                    .to_owned()
            }
        }
    }

    #[track_caller]
    fn check_range(&self, context: &str, start: usize, len: usize, max_len: usize) {
        if start.checked_add(len).is_none_or(|end| end > max_len) {
            panic!(
                "{context}: positions {start}..{} exceed the learned table's max_len {max_len}",
                start as u128 + len as u128
            );
        }
    }

    /// `T` for an input `(…, T, width)`.
    #[track_caller]
    fn positions(&self, context: &str, shape: &[usize]) -> usize {
        if shape.len() < 2 || shape[shape.len() - 1] != self.width {
            panic!(
                "{context}: input has shape {shape:?}, expected [.., T, {}] (rank ≥ 2)",
                self.width
            );
        }
        shape[shape.len() - 2]
    }

    /// Training forward pass with the first token at position `start`: adds
    /// `P[start..start + T]` and saves `start` for [`Module::backward`].
    ///
    /// # Panics
    /// If `x` is not `(…, T, width)` with rank ≥ 2, or the table is learned and
    /// `start + T > max_len`.
    #[track_caller]
    pub fn forward_at(&mut self, x: ArrayViewD<'_, F>, start: usize) -> ArrayD<F> {
        let y = self.add_rows("PositionalEncoding::forward", x.view(), start);
        self.saved.push((start, x.shape().to_vec()));
        y
    }

    /// Inference with the first token at position `start`: adds `P[start..start + T]`,
    /// saving nothing.
    ///
    /// # Panics
    /// As [`forward_at`](PositionalEncoding::forward_at).
    #[track_caller]
    pub fn infer_at(&self, x: ArrayViewD<'_, F>, start: usize) -> ArrayD<F> {
        self.add_rows("PositionalEncoding::infer", x, start)
    }

    #[track_caller]
    fn add_rows(&self, context: &str, x: ArrayViewD<'_, F>, start: usize) -> ArrayD<F> {
        let t = self.positions(context, x.shape());
        let p = self.rows(context, start, t);
        let mut y = buffer_pool::copy_of(&x);
        y += &p;
        y
    }
}

impl<F: Float> Module<F> for PositionalEncoding<F> {
    /// [`forward_at`](PositionalEncoding::forward_at) from position 0.
    ///
    /// # Panics
    /// As [`forward_at`](PositionalEncoding::forward_at).
    #[track_caller]
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.forward_at(x, 0)
    }

    /// `dX = G`; for a learned table also `dW[start + t] += Σ_{leading axes} G[…, t, :]`.
    ///
    /// # Panics
    /// If no forward pass is left to go back through, or `grad_output` does not have the
    /// shape of that forward's input.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (start, shape) = self.saved.pop("PositionalEncoding");
        assert_same_shape(
            "PositionalEncoding::backward",
            "grad_output",
            grad_output.shape(),
            &shape,
        );
        if let Kind::Learned(p) = &self.kind {
            let mut p = p.write();
            if p.is_trainable() {
                let t = shape[shape.len() - 2];
                let g = grad_output
                    .to_shape((grad_output.len() / (t * self.width).max(1), t, self.width))
                    .expect("grad is (…, T, width)");
                let g = g.view().into_dimensionality::<Ix3>().expect("3-D");
                let mut dw = p
                    .grad_mut()
                    .into_dimensionality::<Ix2>()
                    .expect("table is 2-D");
                let mut rows = dw.slice_mut(s![start..start + t, ..]);
                for m in g.axis_iter(Axis(0)) {
                    rows += &m;
                }
            }
        }
        buffer_pool::copy_of(&grad_output)
    }

    /// [`infer_at`](PositionalEncoding::infer_at) from position 0.
    ///
    /// # Panics
    /// As [`forward_at`](PositionalEncoding::forward_at).
    #[track_caller]
    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.infer_at(x, 0)
    }

    fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<F>)) {
        if let Kind::Learned(w) = &self.kind {
            f("weight", w);
        }
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.saved)
    }

    fn describe(&self) -> String {
        match self.max_len() {
            None => format!("PositionalEncoding(sinusoidal, width = {})", self.width),
            Some(m) => format!(
                "PositionalEncoding(learned, max_len = {m}, width = {})",
                self.width
            ),
        }
    }

    fn hyperparameters(&self) -> Vec<(String, String)> {
        let mut h = vec![
            (
                "kind".into(),
                if self.is_learned() {
                    "learned"
                } else {
                    "sinusoidal"
                }
                .into(),
            ),
            ("width".into(), self.width.to_string()),
        ];
        if let Some(m) = self.max_len() {
            h.push(("max_len".into(), m.to_string()));
        }
        h
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        let r = input.len();
        let fits = r >= 2
            && input[r - 1] == self.width
            && self.max_len().is_none_or(|m| input[r - 2] <= m);
        fits.then(|| input.to_vec())
    }
}

impl<F: Float> std::fmt::Debug for PositionalEncoding<F> {
    /// The one-line description (`PositionalEncoding(…)`), not the table.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
