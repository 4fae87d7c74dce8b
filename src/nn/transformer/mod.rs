//! The leaf layers of a Transformer: [`LayerNorm`] (positional encodings to follow).
//!
//! Each follows the layer contract of [`crate::module`]: `forward` pushes a saved state,
//! `backward` pops it, `infer` goes through `&self` and saves nothing. Inputs have any rank:
//! [`LayerNorm`] acts on the last axis.
//!
//! ```
//! use phm_nn::prelude::*;
//! let mut ln = LayerNormConfig::new(8).init::<f32>()?;
//! let y = ln.forward(ArrayD::ones(IxDyn(&[2, 5, 8])).view()); // (B, T, D)
//! assert_eq!(y.shape(), &[2, 5, 8]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

pub mod layer_norm;

pub use layer_norm::{LayerNorm, LayerNormConfig};
