//! The leaf layers of a Transformer: [`LayerNorm`], [`Dropout`] and token [`Embedding`]s (positional encodings to follow).
//!
//! Each follows the layer contract of [`crate::module`]: `forward` pushes a saved state,
//! `backward` pops it, `infer` goes through `&self` and saves nothing. Inputs have any rank:
//! [`LayerNorm`] acts on the last axis, [`Dropout`] element-wise, and [`Embedding`] maps ids
//! `(…)` to rows `(…, width)`.
//!
//! ```
//! use phm_nn::prelude::*;
//! let mut ln = LayerNormConfig::new(8).init::<f32>()?;
//! let y = ln.forward(ArrayD::ones(IxDyn(&[2, 5, 8])).view()); // (B, T, D)
//! assert_eq!(y.shape(), &[2, 5, 8]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

pub mod dropout;
pub mod embedding;
pub mod layer_norm;

pub use dropout::Dropout;
pub use embedding::{Embedding, EmbeddingConfig};
pub use layer_norm::{LayerNorm, LayerNormConfig};
