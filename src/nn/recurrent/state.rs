//! The states a recurrent layer carries: [`CellState`] for one cell, [`RnnState`] for a
//! stack of layers and directions, and [`padding_mask`] for variable-length batches.

use ndarray::{Array2, Array3};

use crate::error::{PhmError, Result};
use crate::Float;

/// The state of one cell for a batch: `h` `(B, h)` and, for the LSTM, the cell state `c`
/// `(B, h)` (`None` for the GRU).
#[derive(Debug, Clone, PartialEq)]
pub struct CellState<F> {
    /// Hidden state `(B, h)`.
    pub h: Array2<F>,
    /// Cell state `(B, h)` (LSTM only).
    pub c: Option<Array2<F>>,
}

/// The state of every layer and direction of a recurrent layer, PyTorch's `(h_n, c_n)`:
/// `h` `(layers·directions, B, h)`, entry `l·directions + d` for layer `l`, direction `d`
/// (0 forward, 1 reverse); `c` the same for the LSTM, `None` for the GRU.
#[derive(Debug, Clone, PartialEq)]
pub struct RnnState<F> {
    /// Hidden states `(layers·directions, B, h)`.
    pub h: Array3<F>,
    /// Cell states `(layers·directions, B, h)` (LSTM only).
    pub c: Option<Array3<F>>,
}

impl<F: Float> RnnState<F> {
    /// The state of cell `index` (`l·directions + d`).
    ///
    /// # Panics
    /// If `index` is not below `layers·directions`.
    pub fn cell(&self, index: usize) -> CellState<F> {
        CellState {
            h: self.h.index_axis(ndarray::Axis(0), index).to_owned(),
            c: self
                .c
                .as_ref()
                .map(|c| c.index_axis(ndarray::Axis(0), index).to_owned()),
        }
    }

    /// Writes the state of cell `index`.
    ///
    /// # Panics
    /// If `index` is out of range or the shapes differ.
    pub fn set_cell(&mut self, index: usize, state: &CellState<F>) {
        self.h
            .index_axis_mut(ndarray::Axis(0), index)
            .assign(&state.h);
        if let (Some(c), Some(sc)) = (self.c.as_mut(), state.c.as_ref()) {
            c.index_axis_mut(ndarray::Axis(0), index).assign(sc);
        }
    }
}

/// The padding mask `(B, T)` of sequences of the given lengths (`true` = padding, at
/// positions `t ≥ lengths[b]`), as PyTorch's `pack_padded_sequence` treats them.
///
/// ```
/// use phm_nn::nn::recurrent::padding_mask;
/// let mask = padding_mask(&[3, 1], 3)?;
/// assert_eq!(mask, phm_nn::ndarray::array![[false, false, false], [false, true, true]]);
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
///
/// # Errors
/// [`PhmError::InvalidArgument`] naming the first length above `steps`.
pub fn padding_mask(lengths: &[usize], steps: usize) -> Result<Array2<bool>> {
    if let Some((b, &len)) = lengths.iter().enumerate().find(|(_, &l)| l > steps) {
        return Err(PhmError::InvalidArgument {
            what: "lengths",
            reason: format!("sequence {b} has length {len}, more than the {steps} steps"),
        });
    }
    Ok(Array2::from_shape_fn((lengths.len(), steps), |(b, t)| {
        t >= lengths[b]
    }))
}
