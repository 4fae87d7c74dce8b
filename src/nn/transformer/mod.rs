//! The leaf layers of a Transformer: [`LayerNorm`], [`Dropout`], token [`Embedding`]s and
//! [`PositionalEncoding`]s (sinusoidal or learned).
//!
//! Each follows the layer contract of [`crate::module`]: `forward` pushes a saved state,
//! `backward` pops it, `infer` goes through `&self` and saves nothing. Inputs have any rank:
//! [`LayerNorm`] acts on the last axis, [`Dropout`] element-wise, [`Embedding`] maps ids
//! `(…)` to rows `(…, width)`, and [`PositionalEncoding`] adds a row per position to
//! `(…, T, width)`.
//!
//! ```
//! use phm_nn::nn::transformer::{Dropout, EmbeddingConfig, PositionalEncoding};
//! use phm_nn::prelude::*;
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! let emb = EmbeddingConfig::new(100, 8).init::<f32, _>(&mut rng)?;
//! let pos = PositionalEncoding::sinusoidal(8)?;
//! let model = Sequential::<f32>::new()
//!     .add(emb)                         // ids (B, T) as floats → (B, T, 8)
//!     .add(pos)
//!     .add(Dropout::new(0.1, 7)?)
//!     .add(LayerNormConfig::new(8).init()?);
//! let ids = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, 5.0, 9.0, 0.0, 2.0, 99.0]).unwrap();
//! assert_eq!(model.infer(ids.view()).shape(), &[2, 3, 8]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

pub mod dropout;
pub mod embedding;
pub mod layer_norm;
pub mod positional;

pub use dropout::Dropout;
pub use embedding::{Embedding, EmbeddingConfig};
pub use layer_norm::{LayerNorm, LayerNormConfig};
pub use positional::{PositionalEncoding, DEFAULT_LEARNED_INIT};
