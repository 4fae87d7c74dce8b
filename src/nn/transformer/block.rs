//! The pre-norm residual Transformer block.
//!
//! ```text
//!     H = X + Dropout(Attention(LN₁(X)))
//!     Y = H + Dropout(FFN(LN₂(H)))                 X, H, Y: (…, T, d)
//! ```
//!
//! (the GPT-2 arrangement: the residual stream is never normalized, so gradients reach early
//! blocks unchanged). Backward: `dH = G + LN₂ᵀ(FFNᵀ(Dropᵀ(G)))`,
//! `dX = dH + LN₁ᵀ(Attnᵀ(Dropᵀ(dH)))`, each `ᵀ` a layer's backward pass.
//!
//! ```
//! use phm_nn::prelude::*;
//! use phm_nn::nn::transformer::BlockConfig;
//! use phm_nn::nn::Projection;
//! let mut rng = StdRng::seed_from_u64(0);
//! let block = BlockConfig::new(64, 4, 256)
//!     .with_projection(Projection::phm(4))
//!     .init::<f32, _>(None, 0, &mut rng)?;
//! let x = ArrayD::<f32>::zeros(IxDyn(&[2, 10, 64]));
//! assert_eq!(block.infer(x.view()).shape(), &[2, 10, 64]);
//! // 6 PHM projections (4 of 64 → 64, 64 → 256 and 256 → 64) and two layer norms:
//! let dense = BlockConfig::new(64, 4, 256).init::<f32, _>(None, 0, &mut rng)?;
//! assert!(block.num_parameters() * 3 < dense.num_parameters());
//! # Ok::<(), PhmError>(())
//! ```

use ndarray::{ArrayD, ArrayViewD};
use rand::Rng;

use super::attention::{AttentionCache, AttentionConfig, MultiHeadAttention};
use super::feed_forward::{FeedForward, FeedForwardConfig};
use crate::error::Result;
use crate::kernels::buffer_pool::consume;
use crate::module::Module;
use crate::nn::dropout::Dropout;
use crate::nn::layer_norm::{LayerNorm, LayerNormConfig};
use crate::nn::projection::Projection;
use crate::nn::PhmRules;
use crate::Float;

/// Configuration of a pre-norm [`Block`].
#[derive(Debug, Clone, PartialEq)]
pub struct BlockConfig {
    /// Model width `d`.
    pub width: usize,
    /// Attention heads `H` (`d` a multiple of `H`).
    pub heads: usize,
    /// Feed-forward hidden width `f`.
    pub ffn_width: usize,
    /// The six projections' kind (default dense).
    pub projection: Projection,
    /// Causal attention (default `true`).
    pub causal: bool,
    /// Dropout probability on both residual branches (default 0).
    pub dropout: f64,
    /// Layer-norm epsilon (default `1e-5`, as PyTorch).
    pub eps: f64,
}

impl BlockConfig {
    /// A causal block of width `width`, `heads` heads and feed-forward width `ffn_width`,
    /// dense projections, no dropout.
    #[must_use]
    pub fn new(width: usize, heads: usize, ffn_width: usize) -> Self {
        BlockConfig {
            width,
            heads,
            ffn_width,
            projection: Projection::Dense,
            causal: true,
            dropout: 0.0,
            eps: 1e-5,
        }
    }

    /// Sets the projections' kind.
    #[must_use]
    pub fn with_projection(mut self, projection: Projection) -> Self {
        self.projection = projection;
        self
    }

    /// Sets whether attention is causal.
    #[must_use]
    pub fn with_causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }

    /// Sets the dropout probability of the residual branches.
    #[must_use]
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Sets the layer-norm epsilon.
    #[must_use]
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Builds the block. With `shared`, every PHM-family projection uses those rules; the
    /// two dropout layers draw from seeds `seed` and `seed + 1`.
    ///
    /// # Errors
    /// The errors of [`AttentionConfig::init`], [`FeedForwardConfig::init`],
    /// [`LayerNormConfig::init`] and [`Dropout::new`].
    pub fn init<F: Float, R: Rng + ?Sized>(
        &self,
        shared: Option<&PhmRules<F>>,
        seed: u64,
        rng: &mut R,
    ) -> Result<Block<F>> {
        let norm = LayerNormConfig::new(self.width).with_eps(self.eps);
        Ok(Block {
            ln1: norm.init()?,
            attn: AttentionConfig::new(self.width, self.heads)
                .with_causal(self.causal)
                .with_projection(self.projection)
                .init(shared, rng)?,
            drop1: Dropout::new(self.dropout, seed)?,
            ln2: norm.init()?,
            ffn: FeedForwardConfig::new(self.width, self.ffn_width)
                .with_projection(self.projection)
                .init(shared, rng)?,
            drop2: Dropout::new(self.dropout, seed.wrapping_add(1))?,
        })
    }
}

/// A pre-norm residual Transformer block; see the [module docs](self).
///
/// Children: `ln1`, `attn` (`attn.q`, `attn.k`, `attn.v`, `attn.o`), `drop1`, `ln2`, `ffn`
/// (`ffn.fc1`, `ffn.fc2`), `drop2`.
#[derive(Clone)]
pub struct Block<F: Float> {
    ln1: LayerNorm<F>,
    attn: MultiHeadAttention<F>,
    drop1: Dropout<F>,
    ln2: LayerNorm<F>,
    ffn: FeedForward<F>,
    drop2: Dropout<F>,
}

impl<F: Float> Block<F> {
    /// The attention layer.
    pub fn attention(&self) -> &MultiHeadAttention<F> {
        &self.attn
    }

    /// The feed-forward block.
    pub fn feed_forward(&self) -> &FeedForward<F> {
        &self.ffn
    }

    /// The two layer norms, before attention and before the feed-forward block.
    pub fn norms(&self) -> [&LayerNorm<F>; 2] {
        [&self.ln1, &self.ln2]
    }

    /// Model width `d`.
    pub fn width(&self) -> usize {
        self.attn.width()
    }

    /// Sets the dropout probability of both residual branches.
    ///
    /// # Errors
    /// As [`Dropout::set_p`].
    pub fn set_dropout(&mut self, p: f64) -> Result<()> {
        self.drop1.set_p(p)?;
        self.drop2.set_p(p)
    }

    /// Training forward pass with an optional key-padding mask `(…, T)` (`true` = padding).
    ///
    /// # Panics
    /// If `x` is not `(…, T, d)` or the mask is not `(…, T)`.
    pub fn forward_masked(
        &mut self,
        x: ArrayViewD<'_, F>,
        pad: Option<ArrayViewD<'_, bool>>,
    ) -> ArrayD<F> {
        // Each intermediate goes back to the buffer pool once the next layer has read it.
        let a = self.ln1.forward(x.view());
        let c = consume(a, |a| self.attn.forward_masked(a, pad));
        let mut h = self.drop1.forward_owned(c);
        h += &x;
        let b = self.ln2.forward(h.view());
        let f = self.ffn.forward_owned(b);
        let mut y = self.drop2.forward_owned(f);
        consume(h, |h| y += &h);
        y
    }

    /// Inference with an optional key-padding mask, through `&self` (dropout off).
    ///
    /// # Panics
    /// As [`forward_masked`](Self::forward_masked).
    pub fn infer_masked(
        &self,
        x: ArrayViewD<'_, F>,
        pad: Option<ArrayViewD<'_, bool>>,
    ) -> ArrayD<F> {
        let a = self.ln1.infer(x.view());
        let mut h = consume(a, |a| self.attn.infer_masked(a, pad));
        h += &x;
        self.finish(h)
    }

    /// Inference on the new tokens `x` `(batch, t, d)` with the attention's key/value
    /// `cache` (see [`MultiHeadAttention::infer_cached`]).
    ///
    /// # Panics
    /// As [`MultiHeadAttention::infer_cached`].
    pub fn infer_cached(&self, x: ArrayViewD<'_, F>, cache: &mut AttentionCache<F>) -> ArrayD<F> {
        let a = self.ln1.infer(x.view());
        let mut h = consume(a, |a| self.attn.infer_cached(a, cache));
        h += &x;
        self.finish(h)
    }

    /// `H + FFN(LN₂(H))`.
    fn finish(&self, h: ArrayD<F>) -> ArrayD<F> {
        let b = self.ln2.infer(h.view());
        let mut y = consume(b, |b| self.ffn.infer(b));
        consume(h, |h| y += &h);
        y
    }
}

impl<F: Float> Module<F> for Block<F> {
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.forward_masked(x, None)
    }

    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let g = self.drop2.backward(grad_output.view());
        let df = consume(g, |g| self.ffn.backward(g));
        let mut dh = consume(df, |df| self.ln2.backward(df));
        dh += &grad_output;
        let g = self.drop1.backward(dh.view());
        let da = consume(g, |g| self.attn.backward(g));
        let mut dx = consume(da, |da| self.ln1.backward(da));
        consume(dh, |dh| dx += &dh);
        dx
    }

    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.infer_masked(x, None)
    }

    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<F>)) {
        f("ln1", &self.ln1);
        f("attn", &self.attn);
        f("drop1", &self.drop1);
        f("ln2", &self.ln2);
        f("ffn", &self.ffn);
        f("drop2", &self.drop2);
    }

    fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<F>)) {
        f("ln1", &mut self.ln1);
        f("attn", &mut self.attn);
        f("drop1", &mut self.drop1);
        f("ln2", &mut self.ln2);
        f("ffn", &mut self.ffn);
        f("drop2", &mut self.drop2);
    }

    fn describe(&self) -> String {
        format!(
            "Block(d = {}, heads = {}, ffn = {}, {})",
            self.attn.width(),
            self.attn.heads(),
            self.ffn.hidden(),
            self.attn.projection().name()
        )
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        self.attn.output_shape(input)
    }
}

impl<F: Float> std::fmt::Debug for Block<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
