//! Transformer building blocks (WIP).

pub mod attention;
pub mod feed_forward;
pub mod projection;

pub use attention::{AttentionCache, AttentionConfig, MultiHeadAttention};
pub use feed_forward::{FeedForward, FeedForwardConfig};
pub use projection::Projection;
