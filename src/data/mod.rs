//! Data for training and evaluating classifiers: a labelled [`Dataset`], the bundled UCI
//! handwritten [`digits`], seeded stratified splits, seeded shuffled mini-[`batches`], a
//! confusion matrix ([`metrics`]) and character-level [`text`] (bundled Shakespeare plays)
//! for next-character prediction.
//!
//! Everything random takes a generator (`&mut R` with `R: rand::Rng`): seed it
//! (`StdRng::seed_from_u64`) and the same calls give the same splits and batch orders.
//! Nothing here depends on layers or parameters; a model enters only through its logits.
//!
//! ```
//! use phm_nn::data::{digits, ConfusionMatrix, SplitFractions};
//! use rand::{rngs::StdRng, SeedableRng};
//!
//! let data = digits::bundled::<f32>()?; // 1,797 images of 8×8 pixels in [0, 1], labels 0..=9
//! assert_eq!(data.x().dim(), (1797, 64));
//! assert!(data.x().iter().all(|&p| (0.0..=1.0).contains(&p)));
//! assert_eq!(data.num_classes(), digits::CLASSES);
//!
//! let mut rng = StdRng::seed_from_u64(7);
//! let split = data.stratified_split(SplitFractions::new(0.6, 0.2, 0.2)?, &mut rng)?;
//! assert_eq!(split.train.len() + split.validation.len() + split.test.len(), 1797);
//! assert_eq!(split.test.class_counts()[0], 36); // 178 zeros: 107 + 35 + 36
//!
//! let mut seen = 0;
//! for batch in split.train.batches(64, &mut rng)? {
//!     // logits = model.forward(batch.x.view()); loss, backward, optimizer step …
//!     assert_eq!(batch.x.nrows(), batch.y.len());
//!     seen += batch.y.len();
//! }
//! assert_eq!(seen, split.train.len()); // every training sample once per epoch
//!
//! // Evaluation: a "model" that always answers 0 is right on the zeros only.
//! let predictions = vec![0; split.test.len()];
//! let cm = ConfusionMatrix::from_predictions(&predictions, split.test.y(), digits::CLASSES)?;
//! assert_eq!(cm.correct(), 36);
//! assert_eq!(cm.recalls()[..2], [1.0, 0.0]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

pub mod batches;
mod dataset;
pub mod digits;
pub mod metrics;
mod split;
pub mod text;

pub use batches::{Batch, Batches};
pub use dataset::Dataset;
pub use metrics::ConfusionMatrix;
pub use split::{stratified_indices, Split, SplitFractions, SplitIndices};
