//! [`RecurrentConfig`]: sizes, layers, direction and projections of a recurrent layer.

use std::marker::PhantomData;

use rand::Rng;

use super::gates::Gates;
use super::{Recurrent, RecurrentCell};
use crate::error::{PhmError, Result};
use crate::nn::{PhmRules, Projection};
use crate::Float;

/// Configuration of a recurrent layer ([`Recurrent`]) or cell ([`RecurrentCell`]) with the
/// gates `K`; used as [`LstmConfig`](super::LstmConfig) and [`GruConfig`](super::GruConfig).
///
/// Each layer and direction has two projections with a bias each, `ih`: `D_l → G·h` and
/// `hh`: `h → G·h` (`G` = 4 gates for the LSTM, 3 for the GRU; `D_0 = D`, `D_l` = `h` or
/// `2h` when bidirectional). Parameters per layer and direction:
///
/// ```text
///     Dense:            G·h·(D_l + h) + 2·G·h                  (PyTorch's count)
///     Phm { n }:        2·n³ + G·h·(D_l + h)/n + 2·G·h         (n³ once per model when shared)
///     LowRankPhm n, r:  2·n³ + r·(2·G·h + D_l + h) + 2·G·h
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecurrentConfig<K> {
    /// Input width `D`.
    pub input: usize,
    /// Hidden width `h` (a multiple of the projection's `n`).
    pub hidden: usize,
    /// Number of stacked layers (default 1); layer `l > 0` reads layer `l − 1`'s outputs.
    pub layers: usize,
    /// Whether each layer also runs from the last step to the first (default `false`); its
    /// outputs are then `[forward | reverse]`, `2h` wide.
    pub bidirectional: bool,
    /// The kind of every projection (default dense).
    pub projection: Projection,
    gates: PhantomData<K>,
}

impl<K: Gates> RecurrentConfig<K> {
    /// One unidirectional layer from `input` to `hidden` with dense projections.
    #[must_use]
    pub fn new(input: usize, hidden: usize) -> Self {
        RecurrentConfig {
            input,
            hidden,
            layers: 1,
            bidirectional: false,
            projection: Projection::Dense,
            gates: PhantomData,
        }
    }

    /// Sets the number of stacked layers.
    #[must_use]
    pub fn with_layers(mut self, layers: usize) -> Self {
        self.layers = layers;
        self
    }

    /// Sets whether the layers are bidirectional.
    #[must_use]
    pub fn with_bidirectional(mut self, bidirectional: bool) -> Self {
        self.bidirectional = bidirectional;
        self
    }

    /// Sets the kind of every projection (dense, PHM, low-rank PHM; learned or fixed rules).
    #[must_use]
    pub fn with_projection(mut self, projection: Projection) -> Self {
        self.projection = projection;
        self
    }

    /// Number of directions (1, or 2 when bidirectional).
    pub fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// Builds the layer; with `shared`, every PHM-family projection uses those rules (one set
    /// for the whole model), otherwise each projection draws its own.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] for a zero width or no layers, [`PhmError::NotDivisible`] if the
    /// input or hidden width is not a multiple of the projection's `n`, and the projections'
    /// errors ([`Projection::build`]).
    pub fn init<F: Float, R: Rng + ?Sized>(
        &self,
        shared: Option<&PhmRules<F>>,
        rng: &mut R,
    ) -> Result<Recurrent<F, K>> {
        self.check()?;
        let mut cells = Vec::new();
        for layer in 0..self.layers {
            let input = if layer == 0 {
                self.input
            } else {
                self.directions() * self.hidden
            };
            for _ in 0..self.directions() {
                cells.push(self.cell(input, shared, rng)?);
            }
        }
        Ok(Recurrent::from_cells(*self, cells))
    }

    /// Builds one cell `input → hidden` (the layer count and direction are not used).
    ///
    /// # Errors
    /// As [`init`](Self::init).
    pub fn init_cell<F: Float, R: Rng + ?Sized>(
        &self,
        shared: Option<&PhmRules<F>>,
        rng: &mut R,
    ) -> Result<RecurrentCell<F, K>> {
        self.check()?;
        self.cell(self.input, shared, rng)
    }

    fn cell<F: Float, R: Rng + ?Sized>(
        &self,
        input: usize,
        shared: Option<&PhmRules<F>>,
        rng: &mut R,
    ) -> Result<RecurrentCell<F, K>> {
        let out = K::GATES * self.hidden;
        let ih = self.projection.build(input, out, shared, rng)?;
        let hh = self.projection.build(self.hidden, out, shared, rng)?;
        Ok(RecurrentCell::from_projections(
            ih,
            hh,
            input,
            self.hidden,
            self.projection,
        ))
    }

    fn check(&self) -> Result<()> {
        for (what, size) in [
            ("input", self.input),
            ("hidden", self.hidden),
            ("layers", self.layers),
        ] {
            if size == 0 {
                return Err(PhmError::ZeroSize { what });
            }
        }
        let n = self.projection.n();
        if n == 0 {
            return Err(PhmError::ZeroN);
        }
        for (what, size) in [("input", self.input), ("hidden", self.hidden)] {
            if size % n != 0 {
                return Err(PhmError::NotDivisible { what, size, n });
            }
        }
        Ok(())
    }
}
