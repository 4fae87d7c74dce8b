//! The PHM Transformer: attention, feed-forward and pre-norm blocks whose projections are
//! dense, PHM or low-rank PHM, and a decoder-only language model on top.
//!
//! Zhang et al. (ICLR 2021) replace every linear map of a Transformer — the query, key,
//! value and output projections and both feed-forward layers — by a PHM layer, for about
//! `1/n` of the parameters at close to the dense model's quality. Here one field,
//! [`Projection`](crate::nn::Projection), makes that choice for a block or a whole model:
//!
//! | layer | what it computes |
//! |---|---|
//! | [`Embedding`](crate::nn::Embedding) | token ids `(…)` → rows of a table `(…, d)` |
//! | [`PositionalEncoding`](crate::nn::PositionalEncoding) | `X + P[start..start+T]`, sinusoidal or learned |
//! | [`LayerNorm`](crate::nn::LayerNorm) | `(x − mean)/√(var + ε) · w + b` over the last axis |
//! | [`Dropout`](crate::nn::Dropout) | seeded inverted dropout, off in `infer` |
//! | [`MultiHeadAttention`] | `o(softmax(QKᵀ/√d_h + mask) V)` per head, causal and padding masks |
//! | [`FeedForward`] | `fc2(gelu(fc1(X)))` |
//! | [`Block`] | `H = X + Attn(LN₁ X)`, `Y = H + FFN(LN₂ H)` |
//! | [`TransformerLm`] | embeddings, `L` blocks, final norm, vocabulary head; cached generation |
//!
//! Every layer follows the contract of [`crate::module`] on inputs `(…, T, d)`: `forward`
//! pushes a saved state, `backward` pops it and accumulates gradients, `infer` goes through
//! `&self`. Generation uses a key/value cache ([`KvCache`]) so each new token costs one
//! position, not the whole prefix.
//!
//! ```
//! use phm_nn::prelude::*;
//! use phm_nn::nn::transformer::BlockConfig;
//! use phm_nn::nn::Projection;
//! let mut rng = StdRng::seed_from_u64(0);
//! let dense = BlockConfig::new(128, 4, 512).init::<f32, _>(None, 0, &mut rng)?;
//! let phm = BlockConfig::new(128, 4, 512)
//!     .with_projection(Projection::phm(4))
//!     .init::<f32, _>(None, 0, &mut rng)?;
//! // About a quarter of the parameters (the norms and biases are not divided by n):
//! let ratio = phm.num_parameters() as f64 / dense.num_parameters() as f64;
//! assert!(ratio > 0.25 && ratio < 0.27, "{ratio}");
//! let y = phm.infer(ArrayD::zeros(IxDyn(&[2, 16, 128])).view());
//! assert_eq!(y.shape(), &[2, 16, 128]);
//! # Ok::<(), PhmError>(())
//! ```

pub mod attention;
pub mod block;
pub mod feed_forward;
pub mod lm;

pub use attention::{AttentionCache, AttentionConfig, MultiHeadAttention};
pub use block::{Block, BlockConfig};
pub use feed_forward::{FeedForward, FeedForwardConfig};
pub use lm::{KvCache, Positional, Sampling, TransformerLm, TransformerLmConfig};
