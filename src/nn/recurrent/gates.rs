//! What distinguishes one recurrent cell from another: its gates ([`Gates`], implemented by
//! [`LstmGates`](super::LstmGates) and [`GruGates`](super::GruGates)), and the layout of the
//! gate pre-activations that a PHM projection produces.
//!
//! # Layout of the gates
//! A cell projects its input and its hidden state to `G·h` values (`G` gates of width `h`)
//! with one projection each. The cell math reads them **gate-major**, gate `g` in columns
//! `g·h … (g+1)·h`, PyTorch's layout (`nn.LSTM`: i, f, g, o; `nn.GRU`: r, z, n). A PHM
//! projection of dimension `n` writes its output in `n` contiguous segments (the hypercomplex
//! components); the cell reads them **component-major**, column `r·G·m + g·m + j`
//! (`m = h/n`) holding component `r` of unit `j` of gate `g`. So each gate is a PHM map
//! `Σ_i A_i ⊗ S_i^g` with the shared rules `A_i`, and every gate, the hidden state and the
//! cell state are vectors of `h/n` hypercomplex numbers stored component by component
//! (`[real parts | i parts | j parts | k parts]` for quaternions): with the quaternion rules
//! this is a quaternion LSTM. For `n = 1` (dense) both layouts are the same.

use ndarray::{Array2, ArrayView2};

use crate::Float;

/// One cell's gate equations for a batch, on gate-major pre-activations; sealed, implemented
/// by [`LstmGates`](super::LstmGates) and [`GruGates`](super::GruGates).
pub trait Gates:
    private::Sealed + Copy + Clone + std::fmt::Debug + Default + Send + Sync + 'static
{
    /// Number of gates `G` (4 for the LSTM, 3 for the GRU).
    const GATES: usize;
    /// Whether the cell carries a cell state `c` besides `h` (the LSTM does).
    const HAS_CELL: bool;
    /// The cell's name in messages and summaries (`"LSTM"`, `"GRU"`).
    const NAME: &'static str;

    /// One step: from the input part `gi = W_i x + b_i` and the hidden part
    /// `gh = W_h h + b_h` (both `(B, G·h)`, gate-major) and the previous state `h`, `c`
    /// (`c` is ignored without a cell state), the new `h`, the new `c` (empty without a cell
    /// state) and what the backward step needs.
    #[doc(hidden)]
    fn step<F: Float>(
        gi: ArrayView2<'_, F>,
        gh: ArrayView2<'_, F>,
        h: ArrayView2<'_, F>,
        c: ArrayView2<'_, F>,
    ) -> (Array2<F>, Array2<F>, StepCache<F>);

    /// Backward of [`step`](Gates::step) for `dh'` and `dc'` (`dc'` ignored without a cell
    /// state): `dgi`, `dgh` (gate-major; `None` when equal to `dgi`), the part of `dh` that
    /// does not go through the hidden projection, and `dc`.
    #[doc(hidden)]
    fn back<F: Float>(
        cache: &StepCache<F>,
        dh: ArrayView2<'_, F>,
        dc: ArrayView2<'_, F>,
    ) -> StepGrads<F>;
}

/// What one step keeps for its backward step (the meaning of each field depends on the cell).
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct StepCache<F> {
    /// The activated gates, gate-major `(B, G·h)`.
    pub(crate) gates: Array2<F>,
    /// The previous hidden (GRU) or cell (LSTM) state `(B, h)`.
    pub(crate) prev: Array2<F>,
    /// `tanh(c')` (LSTM) or the hidden part of the candidate, `W_hn h + b_hn` (GRU), `(B, h)`.
    pub(crate) aux: Array2<F>,
}

/// The gradients of one step; see [`Gates::back`].
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct StepGrads<F> {
    /// `dL/dgi`, gate-major `(B, G·h)`.
    pub(crate) dgi: Array2<F>,
    /// `dL/dgh` when it differs from `dgi`.
    pub(crate) dgh: Option<Array2<F>>,
    /// The part of `dL/dh` that does not go through the hidden projection.
    pub(crate) dh: Array2<F>,
    /// `dL/dc` (empty without a cell state).
    pub(crate) dc: Array2<F>,
}

mod private {
    pub trait Sealed {}
    impl Sealed for super::super::LstmGates {}
    impl Sealed for super::super::GruGates {}
}

/// The columns of `z` `(B, a·b·m)` read as `(a, b, m)` and written as `(b, a, m)`.
fn swap_blocks<F: Float>(z: ArrayView2<'_, F>, a: usize, b: usize) -> Array2<F> {
    let (rows, cols) = z.dim();
    let m = cols / (a * b);
    let z = z
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((rows, a, b, m))
        .expect("the columns are a·b·m");
    z.permuted_axes([0, 2, 1, 3])
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((rows, cols))
        .expect("standard layout")
}

/// Component-major `(B, G·h)` (a projection's output) to gate-major (the cell's reading).
pub(crate) fn to_gate_major<F: Float>(z: Array2<F>, n: usize, gates: usize) -> Array2<F> {
    if n == 1 {
        z
    } else {
        swap_blocks(z.view(), n, gates)
    }
}

/// Gate-major `(B, G·h)` to component-major (a projection's gradient).
pub(crate) fn to_component_major<F: Float>(z: Array2<F>, n: usize, gates: usize) -> Array2<F> {
    if n == 1 {
        z
    } else {
        swap_blocks(z.view(), gates, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_layouts_are_inverse_permutations() {
        // n = 2, G = 3, m = 2: component-major column r·6 + g·2 + j.
        let z = Array2::from_shape_fn((2, 12), |(b, c)| (100 * b + c) as f64);
        let g = to_gate_major(z.clone(), 2, 3);
        // Gate 1, unit u = r·m + j = 1·2 + 0 (component 1, j = 0) sits at column 1·4 + 2.
        assert_eq!(g[[1, 6]], z[[1, 6 + 2]]);
        assert_eq!(to_component_major(g, 2, 3), z);
    }
}
