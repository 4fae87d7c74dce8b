//! A labelled dataset: one sample per row of `x`, its class in `y`.

use ndarray::{Array2, ArrayView2, Axis};

use crate::error::{PhmError, Result};

/// Samples `x` (`(samples, features)`, batch-first like every input in the crate) with their
/// class labels `y` (`y[i]` is the class of row `i`).
///
/// The two always have the same number of rows: [`Dataset::new`] checks it, and the fields are
/// reached through [`x`](Dataset::x), [`y`](Dataset::y) and [`into_parts`](Dataset::into_parts).
///
/// ```
/// use ndarray::array;
/// use phm_nn::data::Dataset;
///
/// let data = Dataset::new(array![[0.0f32, 1.0], [2.0, 3.0], [4.0, 5.0]], vec![1, 0, 1])?;
/// assert_eq!((data.len(), data.n_features(), data.num_classes()), (3, 2, 2));
/// assert_eq!(data.class_counts(), [1, 2]);
///
/// let picked = data.select(&[2, 0]);
/// assert_eq!(picked.x(), array![[4.0, 5.0], [0.0, 1.0]]);
/// assert_eq!(picked.y(), [1, 1]);
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset<F> {
    x: Array2<F>,
    y: Vec<usize>,
}

impl<F: Clone> Dataset<F> {
    /// A dataset of the rows of `x` labelled by `y`.
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`] (`what = "labels"`) if `y.len() != x.nrows()`.
    pub fn new(x: Array2<F>, y: Vec<usize>) -> Result<Self> {
        if y.len() != x.nrows() {
            return Err(PhmError::ShapeMismatch {
                what: "labels",
                expected: vec![x.nrows()],
                got: vec![y.len()],
            });
        }
        Ok(Dataset { x, y })
    }

    /// Number of samples (rows).
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// True if there are no samples.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Number of features (columns of `x`).
    pub fn n_features(&self) -> usize {
        self.x.ncols()
    }

    /// The samples, `(len, n_features)`.
    pub fn x(&self) -> ArrayView2<'_, F> {
        self.x.view()
    }

    /// The labels, one per sample.
    pub fn y(&self) -> &[usize] {
        &self.y
    }

    /// The samples and labels, moved out.
    pub fn into_parts(self) -> (Array2<F>, Vec<usize>) {
        (self.x, self.y)
    }

    /// `1 +` the largest label (0 for an empty dataset): the number of classes the labels
    /// imply. A class with no sample below the largest label still counts.
    pub fn num_classes(&self) -> usize {
        self.y.iter().max().map_or(0, |&m| m + 1)
    }

    /// `counts[c]` = number of samples of class `c`, for `c < num_classes()`.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &label in &self.y {
            counts[label] += 1;
        }
        counts
    }

    /// A new dataset of the given rows, in the given order (repeats allowed).
    ///
    /// # Panics
    /// If an index is not below [`len`](Dataset::len); the message names it.
    #[track_caller]
    pub fn select(&self, indices: &[usize]) -> Dataset<F> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            panic!(
                "Dataset::select: index {bad} is out of range for {} samples",
                self.len()
            );
        }
        Dataset {
            x: self.x.select(Axis(0), indices),
            y: indices.iter().map(|&i| self.y[i]).collect(),
        }
    }
}
