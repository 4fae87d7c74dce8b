//! Classification metrics: a confusion matrix with per-class recall and overall accuracy.
//!
//! `counts[[t, p]]` is the number of samples of true class `t` predicted as class `p` (rows:
//! true class, columns: predicted class, as scikit-learn's `confusion_matrix`). From it:
//!
//! ```text
//!     accuracy      = Σ_c counts[c,c] / total
//!     recall(c)     = counts[c,c] / Σ_p counts[c,p]     (the accuracy on class c)
//!     precision(c)  = counts[c,c] / Σ_t counts[t,c]
//! ```
//!
//! Predictions from logits are the arg-max of each row, with the conventions of
//! [`loss::accuracy`](crate::loss::accuracy): ties go to the lowest index and NaN is never
//! the maximum. A row whose logits are all NaN has no prediction: it counts in the total (as
//! a wrong answer) and in [`unpredicted`](ConfusionMatrix::unpredicted), so that
//! [`ConfusionMatrix::from_logits`]`(z, y).accuracy()` always equals
//! [`loss::accuracy`](crate::loss::accuracy)`(z, y)`. For the accuracy alone, call that.
//!
//! ```
//! use ndarray::array;
//! use phm_nn::data::ConfusionMatrix;
//!
//! let logits = array![[2.0, 0.1, 0.3], [0.2, 0.1, 0.9], [0.1, 3.0, 0.0], [0.0, 0.5, 2.0]];
//! let cm = ConfusionMatrix::from_logits(logits.view(), &[0, 0, 1, 2])?;
//! assert_eq!(cm.counts(), array![[1, 0, 1], [0, 1, 0], [0, 0, 1]]);
//! assert_eq!(cm.accuracy(), 0.75);
//! assert_eq!(cm.recall(0), 0.5);
//! assert_eq!(cm.precision(2), 0.5);
//! assert_eq!(
//!     cm.to_string(),
//!     "\
//! confusion matrix (rows: true class, columns: predicted class)
//! true\\pred 0 1 2 | recall
//!         0 1 0 1 |  50.0%
//!         1 0 1 0 | 100.0%
//!         2 0 0 1 | 100.0%
//! accuracy 75.0% (3/4)
//! "
//! );
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::fmt;

use ndarray::{Array2, ArrayView2, Axis};

use crate::error::{PhmError, Result};
use crate::Float;

/// Counts of (true class, predicted class) pairs; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    counts: Array2<usize>,
    unpredicted: Vec<usize>,
}

impl ConfusionMatrix {
    /// An empty matrix for `classes` classes.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] (`what = "classes"`) if `classes` is 0.
    pub fn new(classes: usize) -> Result<Self> {
        if classes == 0 {
            return Err(PhmError::ZeroSize { what: "classes" });
        }
        Ok(ConfusionMatrix {
            counts: Array2::zeros((classes, classes)),
            unpredicted: vec![0; classes],
        })
    }

    /// The matrix of predicted classes `predicted[i]` against true classes `labels[i]`.
    ///
    /// # Errors
    /// - [`PhmError::ZeroSize`] if `classes` is 0.
    /// - As [`add_predictions`](Self::add_predictions).
    ///
    /// # Panics
    /// If `predicted` and `labels` have different lengths.
    #[track_caller]
    pub fn from_predictions(predicted: &[usize], labels: &[usize], classes: usize) -> Result<Self> {
        let mut cm = Self::new(classes)?;
        cm.add_predictions(predicted, labels)?;
        Ok(cm)
    }

    /// The matrix of the arg-max of each row of `logits` (`(batch, classes)`) against
    /// `labels`; the number of classes is the number of columns.
    ///
    /// # Errors
    /// - [`PhmError::ZeroSize`] if `logits` has no column.
    /// - As [`add_logits`](Self::add_logits).
    ///
    /// # Panics
    /// If `labels.len() != logits.nrows()`.
    #[track_caller]
    pub fn from_logits<F: Float>(logits: ArrayView2<'_, F>, labels: &[usize]) -> Result<Self> {
        let mut cm = Self::new(logits.ncols())?;
        cm.add_logits(logits, labels)?;
        Ok(cm)
    }

    /// Adds one batch of predictions (e.g. to accumulate over an evaluation loop).
    ///
    /// # Errors
    /// Nothing is added if any value is out of range:
    /// - [`PhmError::LabelOutOfRange`] for the first row whose label is not below
    ///   [`classes`](Self::classes);
    /// - [`PhmError::InvalidArgument`] (`what = "predictions"`), naming the row and value,
    ///   for the first row whose prediction is out of range.
    ///
    /// # Panics
    /// If `predicted` and `labels` have different lengths.
    #[track_caller]
    pub fn add_predictions(&mut self, predicted: &[usize], labels: &[usize]) -> Result<()> {
        if predicted.len() != labels.len() {
            panic!(
                "ConfusionMatrix: {} predictions but {} labels",
                predicted.len(),
                labels.len()
            );
        }
        self.check_labels(labels)?;
        let classes = self.classes();
        if let Some((row, &p)) = predicted.iter().enumerate().find(|(_, &p)| p >= classes) {
            return Err(PhmError::InvalidArgument {
                what: "predictions",
                reason: format!(
                    "prediction {p} in row {row} is out of range for {classes} classes"
                ),
            });
        }
        for (&p, &t) in predicted.iter().zip(labels) {
            self.counts[[t, p]] += 1;
        }
        Ok(())
    }

    /// Adds one batch of logits (`(batch, classes)`), predicting the arg-max of each row.
    ///
    /// # Errors
    /// [`PhmError::LabelOutOfRange`] for the first label not below
    /// [`classes`](Self::classes); nothing is added then.
    ///
    /// # Panics
    /// If `labels.len() != logits.nrows()` or `logits.ncols() != self.classes()`.
    #[track_caller]
    pub fn add_logits<F: Float>(
        &mut self,
        logits: ArrayView2<'_, F>,
        labels: &[usize],
    ) -> Result<()> {
        if labels.len() != logits.nrows() || logits.ncols() != self.classes() {
            panic!(
                "ConfusionMatrix: logits of shape {:?} with {} labels, expected ({}, {})",
                logits.shape(),
                labels.len(),
                labels.len(),
                self.classes()
            );
        }
        self.check_labels(labels)?;
        for (z, &t) in logits.axis_iter(Axis(0)).zip(labels) {
            match crate::loss::argmax(z) {
                Some(p) => self.counts[[t, p]] += 1,
                None => self.unpredicted[t] += 1,
            }
        }
        Ok(())
    }

    fn check_labels(&self, labels: &[usize]) -> Result<()> {
        let classes = self.classes();
        match labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            Some((row, &label)) => Err(PhmError::LabelOutOfRange {
                row,
                label,
                classes,
            }),
            None => Ok(()),
        }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.counts.nrows()
    }

    /// `counts[[t, p]]`: samples of true class `t` predicted as `p`.
    pub fn counts(&self) -> ArrayView2<'_, usize> {
        self.counts.view()
    }

    /// `unpredicted()[t]`: samples of true class `t` whose logits were all NaN (always 0 for
    /// matrices built from predictions).
    pub fn unpredicted(&self) -> &[usize] {
        &self.unpredicted
    }

    /// Number of samples counted.
    pub fn total(&self) -> usize {
        self.counts.sum() + self.unpredicted.iter().sum::<usize>()
    }

    /// Number of samples predicted correctly (the diagonal's sum).
    pub fn correct(&self) -> usize {
        self.counts.diag().sum()
    }

    /// Number of samples of true class `class` (its row sum, with its unpredicted samples).
    ///
    /// # Panics
    /// If `class >= classes()`.
    #[track_caller]
    pub fn support(&self, class: usize) -> usize {
        self.check_class(class);
        self.counts.row(class).sum() + self.unpredicted[class]
    }

    /// `correct / total`; NaN if nothing was counted (`0/0`, as
    /// [`loss::accuracy`](crate::loss::accuracy) for an empty batch).
    pub fn accuracy(&self) -> f64 {
        self.correct() as f64 / self.total() as f64
    }

    /// Recall of `class` (its per-class accuracy): the fraction of its samples predicted as
    /// `class`. NaN if it has no sample.
    ///
    /// # Panics
    /// If `class >= classes()`.
    #[track_caller]
    pub fn recall(&self, class: usize) -> f64 {
        self.counts[[class, class]] as f64 / self.support(class) as f64
    }

    /// The recall of every class, in class order.
    pub fn recalls(&self) -> Vec<f64> {
        (0..self.classes()).map(|c| self.recall(c)).collect()
    }

    /// Precision of `class`: the fraction of the samples predicted as `class` that are of
    /// `class`. NaN if nothing was predicted as `class`.
    ///
    /// # Panics
    /// If `class >= classes()`.
    #[track_caller]
    pub fn precision(&self, class: usize) -> f64 {
        self.check_class(class);
        self.counts[[class, class]] as f64 / self.counts.column(class).sum() as f64
    }

    #[track_caller]
    fn check_class(&self, class: usize) {
        if class >= self.classes() {
            panic!(
                "ConfusionMatrix: class {class} is out of range for {} classes",
                self.classes()
            );
        }
    }
}

/// A table: one row per true class with its counts and recall, then the accuracy. Classes
/// without samples show `-` for their recall; a `none` column appears when some rows had no
/// prediction (all-NaN logits).
impl fmt::Display for ConfusionMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let classes = self.classes();
        let show_none = self.unpredicted.iter().any(|&u| u > 0);
        let widest = self
            .counts
            .iter()
            .chain(&self.unpredicted)
            .chain(std::iter::once(&(classes - 1)))
            .max()
            .map_or(1, |m| m.to_string().len());
        let w = if show_none { widest.max(4) } else { widest };
        let label = "true\\pred";
        let lw = label.len();
        let percent = |num: usize, den: usize| {
            if den == 0 {
                "-".to_string()
            } else {
                format!("{:.1}%", 100.0 * num as f64 / den as f64)
            }
        };

        writeln!(
            f,
            "confusion matrix (rows: true class, columns: predicted class)"
        )?;
        write!(f, "{label}")?;
        for c in 0..classes {
            write!(f, " {c:>w$}")?;
        }
        if show_none {
            write!(f, " {:>w$}", "none")?;
        }
        writeln!(f, " | recall")?;
        for t in 0..classes {
            write!(f, "{t:>lw$}")?;
            for p in 0..classes {
                write!(f, " {:>w$}", self.counts[[t, p]])?;
            }
            if show_none {
                write!(f, " {:>w$}", self.unpredicted[t])?;
            }
            writeln!(f, " | {:>6}", percent(self.counts[[t, t]], self.support(t)))?;
        }
        writeln!(
            f,
            "accuracy {} ({}/{})",
            percent(self.correct(), self.total()),
            self.correct(),
            self.total()
        )
    }
}
