//! Data for training and evaluating classifiers: a labelled [`Dataset`] and the bundled UCI
//! handwritten [`digits`].
//!
//! Nothing here depends on layers or parameters; a model enters only through its logits.
//!
//! ```
//! use phm_nn::data::digits;
//!
//! let data = digits::bundled::<f32>()?; // 1,797 images of 8×8 pixels in [0, 1], labels 0..=9
//! assert_eq!(data.x().dim(), (1797, 64));
//! assert!(data.x().iter().all(|&p| (0.0..=1.0).contains(&p)));
//! assert_eq!(data.num_classes(), digits::CLASSES);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

mod dataset;
pub mod digits;

pub use dataset::Dataset;
