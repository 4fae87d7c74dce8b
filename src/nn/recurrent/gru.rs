//! The GRU's gates, PyTorch's `nn.GRU` equations (gate order r, z, n; the reset gate applied
//! after the hidden projection).
//!
//! ```text
//!     gi = W_i x + b_i      gh = W_h h + b_h                       (B, 3h) each, gate-major
//!     r = σ(gi_r + gh_r)    z = σ(gi_z + gh_z)    n = tanh(gi_n + r ⊙ gh_n)
//!     h' = (1 − z) ⊙ n + z ⊙ h
//! ```
//!
//! Backward, for `dh'`:
//!
//! ```text
//!     da_n = dh' ⊙ (1 − z) ⊙ (1 − n²)      da_z = dh' ⊙ (h − n) ⊙ z(1 − z)
//!     da_r = da_n ⊙ gh_n ⊙ r(1 − r)
//!     dgi = [da_r, da_z, da_n]     dgh = [da_r, da_z, da_n ⊙ r]     dh = dh' ⊙ z + W_hᵀ dgh
//! ```

use ndarray::{Array2, ArrayView2};

use super::gates::{Gates, StepCache, StepGrads};
use super::{Recurrent, RecurrentCell, RecurrentConfig};
use crate::nn::activation::sigmoid;
use crate::Float;

/// The GRU's gates (see the [module docs](self)); the type parameter of [`Gru`],
/// [`GruCell`] and [`GruConfig`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GruGates;

/// A multi-layer, optionally bidirectional GRU over `(B, T, D)` batches; see [`Recurrent`]
/// and the [`recurrent`](super) module docs.
pub type Gru<F> = Recurrent<F, GruGates>;

/// One GRU cell: a single step, `(x, h) → h'`; see [`RecurrentCell`].
pub type GruCell<F> = RecurrentCell<F, GruGates>;

/// Configuration of a [`Gru`] or a [`GruCell`]; see [`RecurrentConfig`].
pub type GruConfig = RecurrentConfig<GruGates>;

impl Gates for GruGates {
    const GATES: usize = 3;
    const HAS_CELL: bool = false;
    const NAME: &'static str = "GRU";

    fn step<F: Float>(
        gi: ArrayView2<'_, F>,
        gh: ArrayView2<'_, F>,
        h: ArrayView2<'_, F>,
        _c: ArrayView2<'_, F>,
    ) -> (Array2<F>, Array2<F>, StepCache<F>) {
        let (batch, hidden) = h.dim();
        let mut gates = Array2::zeros((batch, 3 * hidden));
        let mut ghn = Array2::zeros((batch, hidden));
        let mut h_new = Array2::zeros((batch, hidden));
        for b in 0..batch {
            let mut row = gates.row_mut(b);
            for j in 0..hidden {
                let r = sigmoid(gi[[b, j]] + gh[[b, j]]);
                let z = sigmoid(gi[[b, hidden + j]] + gh[[b, hidden + j]]);
                let hn = gh[[b, 2 * hidden + j]];
                let n = (gi[[b, 2 * hidden + j]] + r * hn).tanh();
                row[j] = r;
                row[hidden + j] = z;
                row[2 * hidden + j] = n;
                ghn[[b, j]] = hn;
                h_new[[b, j]] = (F::one() - z) * n + z * h[[b, j]];
            }
        }
        let cache = StepCache {
            gates,
            prev: h.to_owned(),
            aux: ghn,
        };
        (h_new, Array2::zeros((0, 0)), cache)
    }

    fn back<F: Float>(
        cache: &StepCache<F>,
        dh: ArrayView2<'_, F>,
        _dc: ArrayView2<'_, F>,
    ) -> StepGrads<F> {
        let (batch, hidden) = dh.dim();
        let one = F::one();
        let mut dgi = Array2::zeros((batch, 3 * hidden));
        let mut dgh = Array2::zeros((batch, 3 * hidden));
        let mut dh_prev = Array2::zeros((batch, hidden));
        for b in 0..batch {
            let gates = cache.gates.row(b);
            for j in 0..hidden {
                let (r, z, n) = (gates[j], gates[hidden + j], gates[2 * hidden + j]);
                let d = dh[[b, j]];
                let dan = d * (one - z) * (one - n * n);
                let daz = d * (cache.prev[[b, j]] - n) * z * (one - z);
                let dar = dan * cache.aux[[b, j]] * r * (one - r);
                dgi[[b, j]] = dar;
                dgi[[b, hidden + j]] = daz;
                dgi[[b, 2 * hidden + j]] = dan;
                dgh[[b, j]] = dar;
                dgh[[b, hidden + j]] = daz;
                dgh[[b, 2 * hidden + j]] = dan * r;
                dh_prev[[b, j]] = d * z;
            }
        }
        StepGrads {
            dgi,
            dgh: Some(dgh),
            dh: dh_prev,
            dc: Array2::zeros((0, 0)),
        }
    }
}
