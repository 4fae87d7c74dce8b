//! The LSTM's gates, PyTorch's `nn.LSTM` equations (gate order i, f, g, o).
//!
//! ```text
//!     a = W_i x + b_i + W_h h + b_h                      (B, 4h), gate-major
//!     i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)
//!     c' = f ⊙ c + i ⊙ g          h' = o ⊙ tanh(c')
//! ```
//!
//! Backward, for `dh'` and `dc'`:
//!
//! ```text
//!     dc̃ = dc' + dh' ⊙ o ⊙ (1 − tanh²(c'))        dc = dc̃ ⊙ f
//!     da_i = dc̃ ⊙ g ⊙ i(1 − i)    da_f = dc̃ ⊙ c ⊙ f(1 − f)
//!     da_g = dc̃ ⊙ i ⊙ (1 − g²)    da_o = dh' ⊙ tanh(c') ⊙ o(1 − o)
//! ```
//!
//! and `dW_i`, `dW_h`, `dx`, `dh` from `da` through the two projections.

use ndarray::{Array2, ArrayView2};

use super::gates::{Gates, StepCache, StepGrads};
use super::{Recurrent, RecurrentCell, RecurrentConfig};
use crate::nn::activation::sigmoid;
use crate::Float;

/// The LSTM's gates (see the [module docs](self)); the type parameter of [`Lstm`],
/// [`LstmCell`] and [`LstmConfig`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LstmGates;

/// A multi-layer, optionally bidirectional LSTM over `(B, T, D)` batches; see
/// [`Recurrent`] and the [`recurrent`](super) module docs.
pub type Lstm<F> = Recurrent<F, LstmGates>;

/// One LSTM cell: a single step, `(x, h, c) → (h', c')`; see [`RecurrentCell`].
pub type LstmCell<F> = RecurrentCell<F, LstmGates>;

/// Configuration of an [`Lstm`] or an [`LstmCell`]; see [`RecurrentConfig`].
pub type LstmConfig = RecurrentConfig<LstmGates>;

impl Gates for LstmGates {
    const GATES: usize = 4;
    const HAS_CELL: bool = true;
    const NAME: &'static str = "LSTM";

    fn step<F: Float>(
        gi: ArrayView2<'_, F>,
        gh: ArrayView2<'_, F>,
        _h: ArrayView2<'_, F>,
        c: ArrayView2<'_, F>,
    ) -> (Array2<F>, Array2<F>, StepCache<F>) {
        let (batch, hidden) = c.dim();
        let mut gates = &gi + &gh;
        let mut c_new = Array2::zeros((batch, hidden));
        let mut tanh_c = Array2::zeros((batch, hidden));
        let mut h_new = Array2::zeros((batch, hidden));
        for b in 0..batch {
            let mut row = gates.row_mut(b);
            for j in 0..hidden {
                let i = sigmoid(row[j]);
                let f = sigmoid(row[hidden + j]);
                let g = row[2 * hidden + j].tanh();
                let o = sigmoid(row[3 * hidden + j]);
                row[j] = i;
                row[hidden + j] = f;
                row[2 * hidden + j] = g;
                row[3 * hidden + j] = o;
                let cn = f * c[[b, j]] + i * g;
                let t = cn.tanh();
                c_new[[b, j]] = cn;
                tanh_c[[b, j]] = t;
                h_new[[b, j]] = o * t;
            }
        }
        let cache = StepCache {
            gates,
            prev: c.to_owned(),
            aux: tanh_c,
        };
        (h_new, c_new, cache)
    }

    fn back<F: Float>(
        cache: &StepCache<F>,
        dh: ArrayView2<'_, F>,
        dc: ArrayView2<'_, F>,
    ) -> StepGrads<F> {
        let (batch, hidden) = dh.dim();
        let one = F::one();
        let mut da = Array2::zeros((batch, 4 * hidden));
        let mut dc_prev = Array2::zeros((batch, hidden));
        for b in 0..batch {
            let gates = cache.gates.row(b);
            let mut row = da.row_mut(b);
            for j in 0..hidden {
                let (i, f) = (gates[j], gates[hidden + j]);
                let (g, o) = (gates[2 * hidden + j], gates[3 * hidden + j]);
                let t = cache.aux[[b, j]];
                let dct = dc[[b, j]] + dh[[b, j]] * o * (one - t * t);
                row[j] = dct * g * i * (one - i);
                row[hidden + j] = dct * cache.prev[[b, j]] * f * (one - f);
                row[2 * hidden + j] = dct * i * (one - g * g);
                row[3 * hidden + j] = dh[[b, j]] * t * o * (one - o);
                dc_prev[[b, j]] = dct * f;
            }
        }
        StepGrads {
            dgi: da,
            dgh: None,
            dh: Array2::zeros((batch, hidden)),
            dc: dc_prev,
        }
    }
}
