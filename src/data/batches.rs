//! Mini-batches of a [`Dataset`], in a seeded random order or in order.
//!
//! One [`Batches`] iterator is one epoch: it visits every sample exactly once, in batches of
//! `batch_size` rows, the last batch holding the remainder (or dropped with
//! [`drop_last`](Batches::drop_last)). The order is drawn once, when the iterator is made, by
//! shuffling `0..len` with the caller's generator: the same generator state gives the same
//! order, and making a new iterator from the same (advanced) generator each epoch gives a new
//! order each epoch. Each batch is gathered into owned arrays (shuffled rows are not
//! contiguous, so they cannot be a view).
//!
//! ```
//! use ndarray::Array2;
//! use phm_nn::data::Dataset;
//! use rand::{rngs::StdRng, SeedableRng};
//!
//! // Ten samples whose single feature is their row number.
//! let data = Dataset::new(Array2::from_shape_fn((10, 1), |(i, _)| i as f32), vec![0; 10])?;
//! let mut rng = StdRng::seed_from_u64(0);
//! for epoch in 0..2 {
//!     let batches = data.batches(4, &mut rng)?;
//!     assert_eq!(batches.len(), 3); // 4 + 4 + 2
//!     let mut seen = Vec::new();
//!     for batch in batches {
//!         assert_eq!(batch.x.column(0).to_vec(), batch.indices.iter().map(|&i| i as f32).collect::<Vec<_>>());
//!         seen.extend(batch.indices);
//!     }
//!     seen.sort();
//!     assert_eq!(seen, (0..10).collect::<Vec<_>>()); // every sample once per epoch
//! }
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{Array2, Axis};
use rand::seq::SliceRandom;
use rand::Rng;

use super::Dataset;
use crate::error::{PhmError, Result};

/// One mini-batch: rows `indices` of the dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<F> {
    /// The samples, `(rows, n_features)`.
    pub x: Array2<F>,
    /// Their labels.
    pub y: Vec<usize>,
    /// Their row numbers in the dataset.
    pub indices: Vec<usize>,
}

/// An iterator over one epoch of mini-batches of a [`Dataset`]; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct Batches<'a, F> {
    data: &'a Dataset<F>,
    order: Vec<usize>,
    batch_size: usize,
    drop_last: bool,
    next_start: usize,
}

impl<'a, F: Clone> Batches<'a, F> {
    /// Batches of `batch_size` rows in a random order drawn from `rng`.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] (`what = "batch_size"`) if `batch_size` is 0.
    pub fn shuffled<R: Rng + ?Sized>(
        data: &'a Dataset<F>,
        batch_size: usize,
        rng: &mut R,
    ) -> Result<Self> {
        let mut batches = Self::in_order(data, batch_size)?;
        batches.order.shuffle(rng);
        Ok(batches)
    }

    /// Batches of `batch_size` rows in the dataset's order (for evaluation).
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] (`what = "batch_size"`) if `batch_size` is 0.
    pub fn in_order(data: &'a Dataset<F>, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(PhmError::ZeroSize { what: "batch_size" });
        }
        Ok(Batches {
            data,
            order: (0..data.len()).collect(),
            batch_size,
            drop_last: false,
            next_start: 0,
        })
    }

    /// With `true`, the last batch is skipped when it has fewer than `batch_size` rows (those
    /// samples are then not visited this epoch). Default `false`.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The order of the whole epoch: the row numbers, batch after batch.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// End of the rows this epoch visits: all of them, or the full batches only.
    fn end(&self) -> usize {
        if self.drop_last {
            self.order.len() - self.order.len() % self.batch_size
        } else {
            self.order.len()
        }
    }
}

impl<F: Clone> Iterator for Batches<'_, F> {
    type Item = Batch<F>;

    fn next(&mut self) -> Option<Batch<F>> {
        let end = self.end();
        if self.next_start >= end {
            return None;
        }
        let stop = (self.next_start + self.batch_size).min(end);
        let indices = self.order[self.next_start..stop].to_vec();
        self.next_start = stop;
        Some(Batch {
            x: self.data.x().select(Axis(0), &indices),
            y: indices.iter().map(|&i| self.data.y()[i]).collect(),
            indices,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self
            .end()
            .saturating_sub(self.next_start)
            .div_ceil(self.batch_size);
        (left, Some(left))
    }
}

impl<F: Clone> ExactSizeIterator for Batches<'_, F> {}

impl<F: Clone> Dataset<F> {
    /// One epoch of shuffled mini-batches: [`Batches::shuffled`].
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] if `batch_size` is 0.
    pub fn batches<R: Rng + ?Sized>(
        &self,
        batch_size: usize,
        rng: &mut R,
    ) -> Result<Batches<'_, F>> {
        Batches::shuffled(self, batch_size, rng)
    }
}
