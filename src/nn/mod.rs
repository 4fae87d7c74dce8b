//! Layers: the linear family (dense [`Linear`], [`PhmLinear`], low-rank [`LphmLinear`], and
//! [`Projection`], the one choice among them that every projecting layer takes),
//! convolutions ([`conv`]: dense and PHM, 1-D and 2-D), [`pool`]ing, element-wise
//! [`activation`]s, [`LayerNorm`], [`Dropout`], [`Embedding`], [`PositionalEncoding`],
//! adapters, [`recurrent`] layers (LSTM and GRU, dense or PHM), and the [`transformer`]
//! family (attention, feed-forward and pre-norm blocks, a decoder-only language model).
//!
//! Layers of the linear family act on the last axis of an input of any rank,
//! `(…, in) → (…, out)`, as PyTorch's `nn.Linear` does; activations act element-wise on any
//! rank.
//!
//! ```
//! use phm_nn::prelude::*;
//! let mut rng = StdRng::seed_from_u64(0);
//! let layer = PhmLinearConfig::new(8, 4, 2).init::<f64, _>(&mut rng)?;
//! let y = layer.infer(ArrayD::zeros(IxDyn(&[3, 5, 8])).view()); // (B, T, in)
//! assert_eq!(y.shape(), &[3, 5, 4]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

pub mod activation;
pub mod adapter;
pub mod conv;
pub mod dropout;
pub mod embedding;
pub mod layer_norm;
pub mod linear;
pub mod lphm_linear;
pub mod phm_linear;
pub mod pool;
pub mod positional;
pub mod projection;
pub mod recurrent;
pub mod rules;
pub mod transformer;

pub use activation::{Gelu, Relu, Sigmoid, Tanh};
pub use adapter::{
    freeze, insert_adapters, set_trainable, Adapter, AdapterActivation, AdapterConfig,
    ParameterCount,
};
pub use conv::{
    Conv1d, Conv1dConfig, Conv2d, Conv2dConfig, PhmConv1d, PhmConv1dConfig, PhmConv2d,
    PhmConv2dConfig, Size2,
};
pub use dropout::Dropout;
pub use embedding::{Embedding, EmbeddingConfig};
pub use layer_norm::{LayerNorm, LayerNormConfig};
pub use linear::{Linear, LinearConfig};
pub use lphm_linear::{LphmLinear, LphmLinearConfig};
pub use phm_linear::{PhmLinear, PhmLinearConfig, Workspace};
pub use pool::{AvgPool2d, Flatten, GlobalAvgPool, MaxPool2d};
pub use positional::{PositionalEncoding, DEFAULT_LEARNED_INIT};
pub use projection::Projection;
pub use recurrent::{padding_mask, Gru, GruCell, GruConfig, Lstm, LstmCell, LstmConfig, RnnState};
pub use rules::{PhmRules, Rule};
pub use transformer::{
    AttentionConfig, Block, BlockConfig, FeedForward, FeedForwardConfig, MultiHeadAttention,
    Sampling, TransformerLm, TransformerLmConfig,
};
