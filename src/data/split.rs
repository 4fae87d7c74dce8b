//! Seeded, stratified train / validation / test splits.

use rand::seq::SliceRandom;
use rand::Rng;

use super::Dataset;
use crate::error::{PhmError, Result};

/// The fractions of each class that go to the training, validation and test sets.
///
/// Each must be finite and in `[0, 1]`, and they must sum to 1 (within `1e-9`). A zero
/// fraction gives an empty part (e.g. `(0.8, 0.0, 0.2)` for a train/test split).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitFractions {
    /// Fraction for training.
    pub train: f64,
    /// Fraction for validation.
    pub validation: f64,
    /// Fraction for testing.
    pub test: f64,
}

impl SplitFractions {
    /// Checked fractions.
    ///
    /// ```
    /// use phm_nn::data::SplitFractions;
    /// assert!(SplitFractions::new(0.6, 0.2, 0.2).is_ok());
    /// let err = SplitFractions::new(0.6, 0.2, 0.3).unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid split fractions: train + validation + test must be 1, got 0.6 + 0.2 + 0.3 = 1.1"
    /// );
    /// ```
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] (`what = "split fractions"`), naming the value, if a
    /// fraction is not finite or outside `[0, 1]`, or if they do not sum to 1.
    pub fn new(train: f64, validation: f64, test: f64) -> Result<Self> {
        let f = SplitFractions {
            train,
            validation,
            test,
        };
        f.validate()?;
        Ok(f)
    }

    /// Checks the fractions as [`SplitFractions::new`] does (the fields are public).
    ///
    /// # Errors
    /// As [`SplitFractions::new`].
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| PhmError::InvalidArgument {
            what: "split fractions",
            reason,
        };
        for (name, value) in [
            ("train", self.train),
            ("validation", self.validation),
            ("test", self.test),
        ] {
            if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
                return Err(invalid(format!(
                    "the {name} fraction must be in [0, 1], got {value}"
                )));
            }
        }
        let sum = self.train + self.validation + self.test;
        if (sum - 1.0).abs() > 1e-9 {
            return Err(invalid(format!(
                "train + validation + test must be 1, got {} + {} + {} = {sum}",
                self.train, self.validation, self.test
            )));
        }
        Ok(())
    }
}

/// Row indices of the three parts of a split, each sorted ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitIndices {
    /// Rows for training.
    pub train: Vec<usize>,
    /// Rows for validation.
    pub validation: Vec<usize>,
    /// Rows for testing.
    pub test: Vec<usize>,
}

/// The three parts of a dataset split by [`Dataset::stratified_split`].
#[derive(Debug, Clone, PartialEq)]
pub struct Split<F> {
    /// The training set.
    pub train: Dataset<F>,
    /// The validation set.
    pub validation: Dataset<F>,
    /// The test set.
    pub test: Dataset<F>,
}

/// Splits the rows `0..labels.len()` class by class into train, validation and test rows.
///
/// For each class `c` with `n_c` rows, its rows are shuffled with `rng` (classes in
/// ascending order) and cut into
///
/// ```text
///     n_train = round(f_train · n_c)
///     n_val   = round((f_train + f_val) · n_c) − n_train
///     n_test  = n_c − n_train − n_val
/// ```
///
/// (`round` halves away from zero), so every class is split in the same proportions up to
/// one row, and the three parts are disjoint and together hold every row exactly once. Each
/// part is returned sorted ascending. The same `rng` state gives the same split.
///
/// ```
/// use phm_nn::data::{stratified_indices, SplitFractions};
/// use rand::{rngs::StdRng, SeedableRng};
///
/// let labels = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]; // five of each class
/// let fractions = SplitFractions::new(0.6, 0.2, 0.2)?;
/// let parts = stratified_indices(&labels, fractions, &mut StdRng::seed_from_u64(1))?;
/// // Per class: round(3.0) = 3 train, round(4.0) − 3 = 1 validation, 1 test.
/// assert_eq!((parts.train.len(), parts.validation.len(), parts.test.len()), (6, 2, 2));
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
///
/// # Errors
/// As [`SplitFractions::validate`].
pub fn stratified_indices<R: Rng + ?Sized>(
    labels: &[usize],
    fractions: SplitFractions,
    rng: &mut R,
) -> Result<SplitIndices> {
    fractions.validate()?;
    let classes = labels.iter().max().map_or(0, |&m| m + 1);
    let mut by_class = vec![Vec::new(); classes];
    for (row, &label) in labels.iter().enumerate() {
        by_class[label].push(row);
    }
    let mut parts = SplitIndices {
        train: Vec::new(),
        validation: Vec::new(),
        test: Vec::new(),
    };
    for rows in &mut by_class {
        rows.shuffle(rng);
        let n = rows.len() as f64;
        let end_train = ((fractions.train * n).round() as usize).min(rows.len());
        let end_val = (((fractions.train + fractions.validation) * n).round() as usize)
            .clamp(end_train, rows.len());
        parts.train.extend_from_slice(&rows[..end_train]);
        parts
            .validation
            .extend_from_slice(&rows[end_train..end_val]);
        parts.test.extend_from_slice(&rows[end_val..]);
    }
    parts.train.sort_unstable();
    parts.validation.sort_unstable();
    parts.test.sort_unstable();
    Ok(parts)
}

impl<F: Clone> Dataset<F> {
    /// Splits the samples class by class into training, validation and test sets, as
    /// [`stratified_indices`] describes (rows keep their original order within each part).
    ///
    /// # Errors
    /// As [`SplitFractions::validate`].
    pub fn stratified_split<R: Rng + ?Sized>(
        &self,
        fractions: SplitFractions,
        rng: &mut R,
    ) -> Result<Split<F>> {
        let parts = stratified_indices(self.y(), fractions, rng)?;
        Ok(Split {
            train: self.select(&parts.train),
            validation: self.select(&parts.validation),
            test: self.select(&parts.test),
        })
    }
}
