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
use phm_nn::nn::PhmRules as NativeRules;
use phm_nn::prelude::{SeedableRng, StdRng};
use phm_nn::Float;

use super::{
    child_values, in_child, load_values, native_child, native_values, Dropout, FeedForward,
    LayerNorm, MultiHeadAttention,
};
use crate::linear::ProjectionConfig;
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
    /// Every projection's kind (default dense).
    #[config(default = "ProjectionConfig::Dense")]
    pub projection: ProjectionConfig,
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
    (width, heads, ffn): (usize, usize, usize),
    causal: bool,
    projection: ProjectionConfig,
    p: f64,
    eps: f64,
) -> native::BlockConfig {
    native::BlockConfig::new(width, heads, ffn)
        .with_causal(causal)
        .with_projection(projection.to_native())
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
            (self.width, self.heads, self.ffn_width),
            self.causal,
            self.projection,
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
        self.forward_with_rules(x, pad, None)
    }

    /// [`forward`](Self::forward) with the model's shared rule matrices `rules` `(n, n, n)`
    /// for projections built without their own rules (`None` otherwise).
    ///
    /// # Shapes
    /// - `x`: `[B, T, d]`
    /// - `pad`: `[B, T]`
    /// - `rules`: `[n, n, n]`
    /// - output: `[B, T, d]`
    ///
    /// # Panics
    /// As [`forward`](Self::forward), and when the rules do not fit the projections.
    #[track_caller]
    pub fn forward_with_rules(
        &self,
        x: Tensor<3>,
        pad: Option<Tensor<2, Bool>>,
        rules: Option<&Tensor<3>>,
    ) -> Tensor<3> {
        let a = self
            .attn
            .forward_with_rules(self.ln1.forward(x.clone()), pad, rules);
        let h = x + self.drop1.forward(a);
        let b = self
            .ffn
            .forward_with_rules(self.ln2.forward(h.clone()), rules);
        h + self.drop2.forward(b)
    }

    /// The phm-nn twin; `shared` are the model's phm-nn rules when the projections use
    /// shared rules.
    ///
    /// # Errors
    /// As [`Bridge::to_native`], and [`phm_nn::PhmError::InvalidArgument`] if the
    /// projections use shared rules and `shared` is `None`.
    pub fn to_native_with_rules<F: Float>(
        &self,
        shared: Option<&NativeRules<F>>,
    ) -> phm_nn::Result<native::Block<F>> {
        let out = native_config(
            (self.attn.width, self.attn.heads, self.ffn.hidden),
            self.attn.causal,
            self.attn.projection,
            self.drop1.p,
            self.ln1.eps,
        )
        .init::<F, _>(shared, 0, &mut StdRng::seed_from_u64(0))?;
        let mut values = HashMap::new();
        child_values::<F, _>(&self.ln1, "ln1", &mut values)?;
        let attn = self
            .attn
            .to_native_with_rules(shared)
            .map_err(in_child("attn"))?;
        native_values(&attn, "attn", &mut values);
        child_values::<F, _>(&self.ln2, "ln2", &mut values)?;
        let ffn = self
            .ffn
            .to_native_with_rules(shared)
            .map_err(in_child("ffn"))?;
        native_values(&ffn, "ffn", &mut values);
        load_values(&out, values)?;
        Ok(out)
    }

    /// The block with the values of `native`; with `shared`, its PHM-family projections
    /// hold no rules (the model holds them).
    ///
    /// # Errors
    /// As [`Bridge::from_native`].
    pub fn from_native_with_rules<F: Float>(
        native: &native::Block<F>,
        shared: bool,
        device: &Device,
    ) -> phm_nn::Result<Self> {
        let [ln1, ln2] = native.norms();
        Ok(Block {
            ln1: LayerNorm::from_native(ln1, device).map_err(in_child("ln1"))?,
            attn: MultiHeadAttention::from_native_with_rules(native.attention(), shared, device)
                .map_err(in_child("attn"))?,
            drop1: Dropout::from_native(native_child(native, "drop1")?, device)?,
            ln2: LayerNorm::from_native(ln2, device).map_err(in_child("ln2"))?,
            ffn: FeedForward::from_native_with_rules(native.feed_forward(), shared, device)
                .map_err(in_child("ffn"))?,
            drop2: Dropout::from_native(native_child(native, "drop2")?, device)?,
        })
    }
}

impl Bridge for Block {
    type Native<F: Float> = native::Block<F>;

    /// # Errors
    /// [`phm_nn::PhmError::CheckpointMismatch`] for a dtype that is not `F`'s;
    /// [`phm_nn::PhmError::InvalidArgument`] if the projections use a model's shared rules.
    fn to_native<F: Float>(&self) -> phm_nn::Result<Self::Native<F>> {
        self.to_native_with_rules(None)
    }

    /// # Errors
    /// [`phm_nn::PhmError::InvalidArgument`] for a projection that is not a phm-nn
    /// `Linear`, `PhmLinear` or `LphmLinear`.
    fn from_native<F: Float>(native: &Self::Native<F>, device: &Device) -> phm_nn::Result<Self> {
        Self::from_native_with_rules(native, false, device)
    }
}
