//! A pre-norm residual Transformer block, phm-nn's [`phm_nn::nn::transformer::Block`] in
//! burn.
//!
//! ```text
//!     H = X + Drop(Attn(LN₁(X)))
//!     Y = H + Drop(FFN(LN₂(H)))          X, H, Y: (B, T, d)
//! ```
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::transformer::BlockConfig;
//! let device = Device::default();
//! let block = BlockConfig::new(8, 2, 16).init::<f32>(&device)?;
//! assert_eq!(block.forward(Tensor::<3>::ones([1, 4, 8], &device), None).dims(), [1, 4, 8]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::collections::HashMap;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Bool, Device, Tensor};
use phm_nn::nn::transformer as native;
use phm_nn::prelude::{SeedableRng, StdRng};
use phm_nn::Float;

use super::{
    child_values, load_values, native_child, Dropout, FeedForward, LayerNorm, MultiHeadAttention,
};
use crate::Bridge;

/// Configuration of a [`Block`].
#[derive(Config, Debug)]
pub struct BlockConfig {
    /// Model width `d`.
    pub width: usize,
    /// Attention heads `H`.
    pub heads: usize,
    /// Feed-forward hidden width `f`.
    pub ffn_width: usize,
    /// Whether the attention is causal (default `true`).
    #[config(default = true)]
    pub causal: bool,
    /// Dropout probability on both residual branches (default 0).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// `ε` of both layer norms (default `1e-5`).
    #[config(default = 1e-5)]
    pub eps: f64,
    /// Seed of the generator drawing the projections (phm-nn's init).
    #[config(default = 0)]
    pub seed: u64,
}

/// The phm-nn config of a block.
fn native_config(
    width: usize,
    heads: usize,
    ffn: usize,
    causal: bool,
    p: f64,
    eps: f64,
) -> native::BlockConfig {
    native::BlockConfig::new(width, heads, ffn)
        .with_causal(causal)
        .with_dropout(p)
        .with_eps(eps)
}

impl BlockConfig {
    /// Builds the block in `F`'s dtype on `device`: phm-nn's init with a generator seeded by
    /// `seed`.
    ///
    /// # Errors
    /// Those of [`phm_nn::nn::transformer::BlockConfig::init`].
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<Block> {
        let native = native_config(
            self.width,
            self.heads,
            self.ffn_width,
            self.causal,
            self.dropout,
            self.eps,
        )
        .init::<F, _>(None, 0, &mut StdRng::seed_from_u64(self.seed))?;
        Block::from_native(&native, device)
    }
}

/// A pre-norm residual block; see the [module docs](self). Children `ln1`, `attn`, `drop1`,
/// `ln2`, `ffn`, `drop2` as in phm-nn.
#[derive(Module, Debug)]
pub struct Block {
    /// Norm before the attention.
    pub ln1: LayerNorm,
    /// Self-attention.
    pub attn: MultiHeadAttention,
    /// Dropout on the attention branch.
    pub drop1: Dropout,
    /// Norm before the feed-forward block.
    pub ln2: LayerNorm,
    /// Feed-forward block.
    pub ffn: FeedForward,
    /// Dropout on the feed-forward branch.
    pub drop2: Dropout,
}

impl Block {
    /// The block on `x`, with an optional key-padding mask (`true` = padding).
    ///
    /// # Shapes
    /// - `x`: `[B, T, d]`
    /// - `pad`: `[B, T]`
    /// - output: `[B, T, d]`
    ///
    /// # Panics
    /// If `x` is not `[B, T, d]` or `pad` is not `[B, T]`.
    #[track_caller]
    pub fn forward(&self, x: Tensor<3>, pad: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let a = self.attn.forward(self.ln1.forward(x.clone()), pad);
        let h = x + self.drop1.forward(a);
        let b = self.ffn.forward(self.ln2.forward(h.clone()));
        h + self.drop2.forward(b)
    }
}

impl Bridge for Block {
    type Native<F: Float> = native::Block<F>;

    fn to_native<F: Float>(&self) -> phm_nn::Result<Self::Native<F>> {
        let out = native_config(
            self.attn.width,
            self.attn.heads,
            self.ffn.hidden,
            self.attn.causal,
            self.drop1.p,
            self.ln1.eps,
        )
        .init::<F, _>(None, 0, &mut StdRng::seed_from_u64(0))?;
        let mut values = HashMap::new();
        child_values::<F, _>(&self.ln1, "ln1", &mut values)?;
        child_values::<F, _>(&self.attn, "attn", &mut values)?;
        child_values::<F, _>(&self.ln2, "ln2", &mut values)?;
        child_values::<F, _>(&self.ffn, "ffn", &mut values)?;
        load_values(&out, values)?;
        Ok(out)
    }

    fn from_native<F: Float>(native: &Self::Native<F>, device: &Device) -> phm_nn::Result<Self> {
        let [ln1, ln2] = native.norms();
        Ok(Block {
            ln1: LayerNorm::from_native(ln1, device)?,
            attn: MultiHeadAttention::from_native(native.attention(), device)?,
            drop1: Dropout::from_native(native_child(native, "drop1")?, device)?,
            ln2: LayerNorm::from_native(ln2, device)?,
            ffn: FeedForward::from_native(native.feed_forward(), device)?,
            drop2: Dropout::from_native(native_child(native, "drop2")?, device)?,
        })
    }
}
