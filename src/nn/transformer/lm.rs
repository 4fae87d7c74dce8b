//! A decoder-only Transformer language model, with key/value-cached generation.
//!
//! ```text
//!     X₀ = Dropout(Embed(ids) + P[0..T])                 ids: (B, T)   X: (B, T, d)
//!     X_l = Block_l(X_{l−1})          l = 1 … L          (pre-norm, causal)
//!     logits = LN_f(X_L) W_headᵀ + b_head                (B, T, vocab)
//! ```
//!
//! Every projection of every block is dense, PHM or low-rank PHM ([`Projection`]); with
//! `shared_rules`, one rule tensor serves the whole model (counted once). The head is dense
//! (a vocabulary is rarely a multiple of `n`), optionally tied to the embedding
//! (`W_head = E`, no head bias).
//!
//! Training: [`TransformerLm::forward_ids`], then [`crate::loss::cross_entropy`] on the
//! logits against the next tokens, then [`TransformerLm::backward_logits`]. Inference through
//! `&self`: [`TransformerLm::infer_ids`] for whole sequences, [`TransformerLm::infer_step`]
//! with a [`KvCache`] for new tokens only, and [`TransformerLm::generate`] for sampling.
//!
//! The model is also a [`Module`] whose input is the token ids as floats `(B, T)` (each a
//! whole number below the vocabulary size, and below `2²⁴` in `f32`, the integers `f32` holds
//! exactly), so optimizers, checkpoints and summaries work on it as on any model.
//!
//! ```
//! use phm_nn::prelude::*;
//! use phm_nn::nn::transformer::{Sampling, TransformerLmConfig};
//! use phm_nn::nn::Projection;
//! let mut rng = StdRng::seed_from_u64(0);
//! let mut lm = TransformerLmConfig::new(16, 32, 4, 2, 24)
//!     .with_projection(Projection::phm(4))
//!     .with_shared_rules(true)
//!     .init::<f32, _>(&mut rng)?;
//! let mut opt = Adam::new(AdamConfig::default())?;
//!
//! // One training step on next-token prediction.
//! let ids = Array2::from_shape_fn((2, 8), |(b, t)| (b + 3 * t) % 16);
//! let targets: Vec<usize> = ids.iter().map(|&i| (i + 3) % 16).collect();
//! lm.zero_grad();
//! let logits = lm.forward_ids(ids.view(), None);
//! let loss = cross_entropy(logits.view(), &targets)?;
//! lm.backward_logits(loss.grad.view());
//! opt.step(&mut lm)?;
//!
//! // Sampling with the key/value cache gives the same tokens as without it.
//! let a = lm.generate(&[1, 2, 3], 10, Sampling::greedy(), &mut rng)?;
//! let b = lm.generate_uncached(&[1, 2, 3], 10, Sampling::greedy(), &mut rng)?;
//! assert_eq!(a, b);
//! assert_eq!(a.len(), 13);
//! # Ok::<(), PhmError>(())
//! ```

use ndarray::{Array2, Array3, ArrayD, ArrayView2, ArrayView3, ArrayViewD, Axis, Ix3};
use rand::{Rng, RngExt};

use super::attention::AttentionCache;
use super::block::{Block, BlockConfig};
use crate::error::{PhmError, Result};
use crate::kernels::buffer_pool::consume;
use crate::module::Module;
use crate::nn::dropout::Dropout;
use crate::nn::embedding::{Embedding, EmbeddingConfig};
use crate::nn::layer_norm::{LayerNorm, LayerNormConfig};
use crate::nn::positional::PositionalEncoding;
use crate::nn::projection::Projection;
use crate::nn::{Linear, LinearConfig};
use crate::Float;

/// How positions are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positional {
    /// Fixed sinusoids (Vaswani et al.), no parameters.
    Sinusoidal,
    /// A learned table `(max_len, d)`.
    Learned,
}

/// Configuration of a [`TransformerLm`].
#[derive(Debug, Clone, PartialEq)]
pub struct TransformerLmConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Model width `d`.
    pub width: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Number of blocks `L`.
    pub layers: usize,
    /// Longest sequence (context window) the model takes.
    pub max_len: usize,
    /// Feed-forward hidden width (default `4d`).
    pub ffn_width: usize,
    /// Every block projection's kind (default dense).
    pub projection: Projection,
    /// One rule tensor for every PHM-family projection of the model (default `false`).
    pub shared_rules: bool,
    /// Dropout probability after the embedding and on every residual branch (default 0).
    pub dropout: f64,
    /// Seed of the dropout masks.
    pub dropout_seed: u64,
    /// Position encoding (default learned).
    pub positional: Positional,
    /// Tie the output head to the embedding (default `false`).
    pub tied_embeddings: bool,
}

impl TransformerLmConfig {
    /// A model of `layers` blocks of width `width` with `heads` heads over a vocabulary of
    /// `vocab` tokens and sequences of up to `max_len` tokens; dense projections,
    /// feed-forward width `4·width`, learned positions, no dropout.
    #[must_use]
    pub fn new(vocab: usize, width: usize, heads: usize, layers: usize, max_len: usize) -> Self {
        TransformerLmConfig {
            vocab,
            width,
            heads,
            layers,
            max_len,
            ffn_width: 4 * width,
            projection: Projection::Dense,
            shared_rules: false,
            dropout: 0.0,
            dropout_seed: 0,
            positional: Positional::Learned,
            tied_embeddings: false,
        }
    }

    /// Sets the feed-forward hidden width.
    #[must_use]
    pub fn with_ffn_width(mut self, ffn_width: usize) -> Self {
        self.ffn_width = ffn_width;
        self
    }

    /// Sets the projections' kind.
    #[must_use]
    pub fn with_projection(mut self, projection: Projection) -> Self {
        self.projection = projection;
        self
    }

    /// Sets whether one rule tensor serves every projection.
    #[must_use]
    pub fn with_shared_rules(mut self, shared: bool) -> Self {
        self.shared_rules = shared;
        self
    }

    /// Sets the dropout probability and the seed of its masks.
    #[must_use]
    pub fn with_dropout(mut self, p: f64, seed: u64) -> Self {
        self.dropout = p;
        self.dropout_seed = seed;
        self
    }

    /// Sets the position encoding.
    #[must_use]
    pub fn with_positional(mut self, positional: Positional) -> Self {
        self.positional = positional;
        self
    }

    /// Sets whether the head is tied to the embedding.
    #[must_use]
    pub fn with_tied_embeddings(mut self, tied: bool) -> Self {
        self.tied_embeddings = tied;
        self
    }

    /// Builds the model, drawing its parameters from `rng`. Embeddings and learned
    /// positions are drawn from `N(0, 0.02²)` (GPT-2's init); projections use their layers'
    /// defaults.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] for a zero vocabulary, width, head count, layer count or
    /// `max_len`, and the errors of the blocks ([`BlockConfig::init`]).
    pub fn init<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<TransformerLm<F>> {
        for (what, size) in [
            ("vocab", self.vocab),
            ("width", self.width),
            ("heads", self.heads),
            ("layers", self.layers),
            ("max_len", self.max_len),
        ] {
            if size == 0 {
                return Err(PhmError::ZeroSize { what });
            }
        }
        let small = crate::nn::DEFAULT_LEARNED_INIT;
        let embed = EmbeddingConfig::new(self.vocab, self.width)
            .with_init(small)
            .init(rng)?;
        let pos = match self.positional {
            Positional::Sinusoidal => PositionalEncoding::sinusoidal(self.width)?,
            Positional::Learned => {
                PositionalEncoding::learned(self.max_len, self.width, small, rng)?
            }
        };
        let rules = if self.shared_rules {
            self.projection.new_rules(rng)?
        } else {
            None
        };
        let block = BlockConfig::new(self.width, self.heads, self.ffn_width)
            .with_projection(self.projection)
            .with_dropout(self.dropout);
        let blocks = (0..self.layers)
            .map(|l| {
                let seed = self.dropout_seed.wrapping_add(2 + 2 * l as u64);
                block.init(rules.as_ref(), seed, rng)
            })
            .collect::<Result<Vec<_>>>()?;
        let head = if self.tied_embeddings {
            Linear::from_params(embed.weight_param().share(), None)?
        } else {
            LinearConfig::new(self.width, self.vocab).init(rng)?
        };
        Ok(TransformerLm {
            embed,
            pos,
            drop: Dropout::new(self.dropout, self.dropout_seed)?,
            blocks,
            ln_f: LayerNormConfig::new(self.width).init()?,
            head,
            config: self.clone(),
        })
    }
}

/// The key/value caches of every block of a [`TransformerLm`], for generation.
///
/// A cache knows the architecture of the model that made it ([`TransformerLm::new_cache`]):
/// another model's [`infer_step`](TransformerLm::infer_step) refuses it with an error that
/// names the difference (layers, width, heads, `max_len`, vocabulary, position encoding)
/// instead of computing logits from keys it never produced. Memory grows with the positions
/// cached, not with `max_len` (see [`AttentionCache`]).
#[derive(Debug, Clone)]
pub struct KvCache<F> {
    layers: Vec<AttentionCache<F>>,
    /// `(name, value)` of every hyper-parameter of the model that the cache depends on.
    model: Vec<(&'static str, String)>,
}

impl<F: Float> KvCache<F> {
    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |c| c.len())
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most positions the cache holds (the model's `max_len`).
    pub fn capacity(&self) -> usize {
        self.layers.first().map_or(0, |c| c.capacity())
    }

    /// Bytes allocated now for keys and values (grows with [`len`](Self::len)).
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|c| 2 * c.batch() * c.allocated() * c.width() * std::mem::size_of::<F>())
            .sum()
    }

    /// Forgets every position (keeps the allocation).
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(AttentionCache::clear);
    }
}

/// The hyper-parameters of `config` that a key/value cache depends on.
fn cache_key(config: &TransformerLmConfig) -> Vec<(&'static str, String)> {
    vec![
        ("layers", config.layers.to_string()),
        ("width", config.width.to_string()),
        ("heads", config.heads.to_string()),
        ("max_len", config.max_len.to_string()),
        ("vocab", config.vocab.to_string()),
        ("ffn_width", config.ffn_width.to_string()),
        ("projection", config.projection.name()),
        ("positional", format!("{:?}", config.positional)),
    ]
}

/// How [`TransformerLm::generate`] picks each next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; `0` picks the most likely token (greedy).
    pub temperature: f64,
    /// Sample only among the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
}

impl Sampling {
    /// Always the most likely token (ties to the lowest id).
    pub fn greedy() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: None,
        }
    }

    /// Sampling from `softmax(logits / temperature)`, optionally among the `top_k` best.
    pub fn new(temperature: f64, top_k: Option<usize>) -> Self {
        Sampling { temperature, top_k }
    }

    /// Checks the temperature (finite, ≥ 0) and `top_k` (not 0).
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] naming `temperature` or `top_k`.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(PhmError::InvalidArgument {
                what: "temperature",
                reason: format!("{} is not a finite number ≥ 0", self.temperature),
            });
        }
        if self.top_k == Some(0) {
            return Err(PhmError::InvalidArgument {
                what: "top_k",
                reason: "0 leaves no token to sample".into(),
            });
        }
        Ok(())
    }

    /// Picks a token from one row of finite logits: the most likely (ties to the lowest id)
    /// at temperature 0, else a draw from `softmax(logits / temperature)` over the `top_k`
    /// best. Call [`validate`](Self::validate) first.
    pub fn pick<F: Float, R: Rng + ?Sized>(&self, logits: &[F], rng: &mut R) -> usize {
        let best = |a: &(usize, f64), b: &(usize, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let mut ranked: Vec<(usize, f64)> = logits.iter().map(|l| l.as_f64()).enumerate().collect();
        ranked.sort_by(best);
        if self.temperature == 0.0 {
            return ranked[0].0;
        }
        ranked.truncate(self.top_k.unwrap_or(ranked.len()));
        let max = ranked[0].1;
        let weights: Vec<f64> = ranked
            .iter()
            .map(|(_, l)| ((l - max) / self.temperature).exp())
            .collect();
        let mut u = rng.random_range(0.0..weights.iter().sum::<f64>());
        for ((id, _), w) in ranked.iter().zip(&weights) {
            if u < *w {
                return *id;
            }
            u -= w;
        }
        ranked[ranked.len() - 1].0
    }
}

/// A decoder-only Transformer language model; see the [module docs](self).
///
/// Children: `embed`, `pos`, `drop`, `blocks.0` … `blocks.{L−1}`, `ln_f`, `head`.
#[derive(Clone)]
pub struct TransformerLm<F: Float> {
    embed: Embedding<F>,
    pos: PositionalEncoding<F>,
    drop: Dropout<F>,
    blocks: Vec<Block<F>>,
    ln_f: LayerNorm<F>,
    head: Linear<F>,
    config: TransformerLmConfig,
}

impl<F: Float> TransformerLm<F> {
    /// The configuration the model was built from.
    pub fn config(&self) -> &TransformerLmConfig {
        &self.config
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.config.vocab
    }

    /// Longest sequence the model takes.
    pub fn max_len(&self) -> usize {
        self.config.max_len
    }

    /// The blocks, in order.
    pub fn blocks(&self) -> &[Block<F>] {
        &self.blocks
    }

    /// The token embedding.
    pub fn embedding(&self) -> &Embedding<F> {
        &self.embed
    }

    /// Sets the dropout probability everywhere (e.g. `0` to evaluate with `forward`).
    ///
    /// # Errors
    /// As [`Dropout::set_p`].
    pub fn set_dropout(&mut self, p: f64) -> Result<()> {
        self.drop.set_p(p)?;
        self.blocks.iter_mut().try_for_each(|b| b.set_dropout(p))
    }

    /// Panics unless `shape` is `(B, T)` with `T ≤ max_len`.
    #[track_caller]
    fn check_ids(&self, context: &str, shape: &[usize]) {
        if shape.len() != 2 {
            panic!("{context}: ids have shape {shape:?}, expected [B, T]");
        }
        self.check_len(context, shape[1]);
    }

    #[track_caller]
    fn check_len(&self, context: &str, t: usize) {
        assert!(
            t <= self.config.max_len,
            "{context}: {t} positions exceed max_len {}",
            self.config.max_len
        );
    }

    /// Training forward pass: logits `(B, T, vocab)` for token ids `(B, T)`, with an optional
    /// key-padding mask `(B, T)` (`true` = padding).
    ///
    /// # Panics
    /// If an id is not below the vocabulary size, `T > max_len`, or the mask's shape is not
    /// the ids' shape.
    pub fn forward_ids(
        &mut self,
        ids: ArrayView2<'_, usize>,
        pad: Option<ArrayView2<'_, bool>>,
    ) -> Array3<F> {
        self.check_len("TransformerLm::forward_ids", ids.ncols());
        let x = self.embed.lookup(ids.into_dyn());
        self.forward_rest(x, pad)
    }

    /// Each intermediate goes back to the buffer pool once the next layer has read it.
    fn forward_rest(&mut self, x: ArrayD<F>, pad: Option<ArrayView2<'_, bool>>) -> Array3<F> {
        let x = consume(x, |x| self.pos.forward(x));
        let mut x = self.drop.forward_owned(x);
        for block in &mut self.blocks {
            x = consume(x, |x| block.forward_masked(x, pad.map(|m| m.into_dyn())));
        }
        let x = self.ln_f.forward_owned(x);
        into3(self.head.forward_owned(x))
    }

    /// Backward pass for the most recent [`forward_ids`](Self::forward_ids): `grad` is
    /// `dL/dlogits` `(B, T, vocab)` (e.g. the `grad` of [`crate::loss::cross_entropy`]);
    /// gradients accumulate into every parameter.
    ///
    /// # Panics
    /// If no forward is pending or `grad` has not the logits' shape.
    pub fn backward_logits(&mut self, grad: ArrayView3<'_, F>) {
        let g = self.backward_rest(grad.into_dyn());
        consume(g, |g| self.embed.backward_ids(g));
    }

    fn backward_rest(&mut self, grad: ArrayViewD<'_, F>) -> ArrayD<F> {
        let g = self.head.backward(grad);
        let mut g = consume(g, |g| self.ln_f.backward(g));
        for block in self.blocks.iter_mut().rev() {
            g = consume(g, |g| block.backward(g));
        }
        let g = self.drop.backward_owned(g);
        consume(g, |g| self.pos.backward(g))
    }

    /// Inference: logits `(B, T, vocab)` for token ids `(B, T)`, with an optional
    /// key-padding mask, through `&self` (dropout off).
    ///
    /// # Panics
    /// As [`forward_ids`](Self::forward_ids).
    pub fn infer_ids(
        &self,
        ids: ArrayView2<'_, usize>,
        pad: Option<ArrayView2<'_, bool>>,
    ) -> Array3<F> {
        self.check_len("TransformerLm::infer_ids", ids.ncols());
        let x = self.embed.lookup_infer(ids.into_dyn());
        self.infer_rest(x, pad)
    }

    fn infer_rest(&self, x: ArrayD<F>, pad: Option<ArrayView2<'_, bool>>) -> Array3<F> {
        let mut x = consume(x, |x| self.pos.infer(x));
        for block in &self.blocks {
            x = consume(x, |x| block.infer_masked(x, pad.map(|m| m.into_dyn())));
        }
        let x = consume(x, |x| self.ln_f.infer(x));
        into3(consume(x, |x| self.head.infer(x)))
    }

    /// An empty key/value cache for `batch` sequences of up to `max_len` tokens, tied to this
    /// model's architecture. It allocates as positions are cached, not `max_len` up front.
    pub fn new_cache(&self, batch: usize) -> KvCache<F> {
        KvCache {
            layers: self
                .blocks
                .iter()
                .map(|_| AttentionCache::new(batch, self.config.width, self.config.max_len))
                .collect(),
            model: cache_key(&self.config),
        }
    }

    /// Logits `(B, t, vocab)` for `t` new tokens `ids` `(B, t)` that follow the tokens in
    /// `cache`, whose keys and values it appends: generation without recomputing the prefix.
    /// Equal to the last `t` positions of [`infer_ids`](Self::infer_ids) on the whole
    /// sequence.
    ///
    /// # Errors
    /// Nothing is appended on error:
    /// - [`PhmError::InvalidArgument`] with `what: "cache"` if `cache` was made by a model of
    ///   another architecture (the message names the first hyper-parameter that differs, e.g.
    ///   `layers`, `max_len`), or holds another batch size;
    /// - [`PhmError::InvalidArgument`] with `what: "ids"` if the sequence would exceed
    ///   `max_len` or an id is not below the vocabulary size;
    /// - [`PhmError::TooLarge`] if growing the cache would exceed the memory budget of the
    ///   cost model ([`CostModel::max_materialized_bytes`](crate::kernels::strategy::CostModel::max_materialized_bytes),
    ///   1 GiB by default; [`set_cost_model`](crate::kernels::strategy::set_cost_model)
    ///   raises it).
    pub fn infer_step(
        &self,
        ids: ArrayView2<'_, usize>,
        cache: &mut KvCache<F>,
    ) -> Result<Array3<F>> {
        let mine = cache_key(&self.config);
        if let Some(((what, theirs), (_, ours))) =
            cache.model.iter().zip(&mine).find(|(a, b)| a != b)
        {
            return Err(PhmError::InvalidArgument {
                what: "cache",
                reason: format!(
                    "the cache was made by a model with {what} = {theirs}, this model has \
                     {what} = {ours}; make one with this model's new_cache"
                ),
            });
        }
        let start = cache.len();
        let (batch, t) = ids.dim();
        if let Some(c) = cache.layers.first() {
            if c.batch() != batch {
                return Err(PhmError::InvalidArgument {
                    what: "cache",
                    reason: format!("batch {batch}, but the cache holds {}", c.batch()),
                });
            }
        }
        let end = start.checked_add(t).filter(|&e| e <= cache.capacity());
        let Some(end) = end else {
            return Err(PhmError::InvalidArgument {
                what: "ids",
                reason: format!(
                    "{start} cached + {t} new positions exceed max_len {}",
                    cache.capacity()
                ),
            });
        };
        if let Some(c) = cache.layers.first() {
            // Doubling when it fits the budget, else exactly what is needed, else an error.
            let budget = crate::kernels::strategy::cost_model().max_materialized_bytes;
            let fits = |positions: usize| {
                [2, cache.layers.len(), batch, positions, self.config.width]
                    .iter()
                    .try_fold(std::mem::size_of::<F>() as u128, |acc, &v| {
                        acc.checked_mul(v as u128)
                    })
                    .is_some_and(|b| b <= u128::from(budget))
            };
            let positions = [c.allocation_for(end), end]
                .into_iter()
                .find(|&p| fits(p))
                .ok_or_else(|| PhmError::TooLarge {
                    what: "key/value cache",
                    reason: format!(
                        "{} layers × batch {batch} × {end} positions × width {} keys and \
                         values exceed the memory budget of {budget} bytes \
                         (CostModel::max_materialized_bytes)",
                        cache.layers.len(),
                        self.config.width
                    ),
                })?;
            cache.layers.iter_mut().for_each(|c| c.reserve(positions));
        }
        let x = self.embed.try_lookup_infer(ids.into_dyn())?;
        let mut x = self.pos.infer_at(x.view(), start);
        for (block, c) in self.blocks.iter().zip(&mut cache.layers) {
            x = block.infer_cached(x.view(), c);
        }
        let x = self.ln_f.infer(x.view());
        Ok(into3(self.head.infer(x.view())))
    }

    /// Continues `prompt` by `steps` tokens, each picked by `sampling` from the model's
    /// next-token logits, with a key/value cache (each step runs the model on one token).
    /// Returns the prompt followed by the new tokens.
    ///
    /// When the sequence would outgrow `max_len`, the context restarts from its last
    /// `max_len / 2` tokens (re-encoded once), so any length can be generated;
    /// [`generate_uncached`](Self::generate_uncached) follows the same rule.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] for an empty prompt, an id not below the vocabulary
    /// size, an invalid [`Sampling`], or a non-finite logit.
    pub fn generate<R: Rng + ?Sized>(
        &self,
        prompt: &[usize],
        steps: usize,
        sampling: Sampling,
        rng: &mut R,
    ) -> Result<Vec<usize>> {
        self.generate_with(prompt, steps, sampling, rng, true)
    }

    /// [`generate`](Self::generate) without the cache: every step runs the model on the
    /// whole context. The same tokens, for the same `rng` state; for checks and timing.
    ///
    /// # Errors
    /// As [`generate`](Self::generate).
    pub fn generate_uncached<R: Rng + ?Sized>(
        &self,
        prompt: &[usize],
        steps: usize,
        sampling: Sampling,
        rng: &mut R,
    ) -> Result<Vec<usize>> {
        self.generate_with(prompt, steps, sampling, rng, false)
    }

    fn generate_with<R: Rng + ?Sized>(
        &self,
        prompt: &[usize],
        steps: usize,
        sampling: Sampling,
        rng: &mut R,
        cached: bool,
    ) -> Result<Vec<usize>> {
        sampling.validate()?;
        if prompt.is_empty() {
            return Err(PhmError::InvalidArgument {
                what: "prompt",
                reason: "is empty: generation needs at least one token".into(),
            });
        }
        if let Some(&bad) = prompt.iter().find(|&&id| id >= self.config.vocab) {
            return Err(PhmError::InvalidArgument {
                what: "prompt",
                reason: format!(
                    "token id {bad} is not below the vocabulary size {}",
                    self.config.vocab
                ),
            });
        }
        let max_len = self.config.max_len;
        let keep = (max_len / 2).max(1);
        let mut tokens = prompt.to_vec();
        let mut start = 0; // first token of the context
        let mut cache = self.new_cache(1);
        for _ in 0..steps {
            let restart = tokens.len() - start > max_len;
            if restart {
                start = tokens.len() - keep;
                cache.clear();
            }
            let logits = if cached {
                // Feed what the cache has not seen yet: the whole context after a restart
                // or at the start, else the last token.
                let from = start + cache.len();
                let new = Array2::from_shape_vec((1, tokens.len() - from), tokens[from..].to_vec())
                    .expect("one row");
                self.infer_step(new.view(), &mut cache)?
            } else {
                let context =
                    Array2::from_shape_vec((1, tokens.len() - start), tokens[start..].to_vec())
                        .expect("one row");
                self.infer_ids(context.view(), None)
            };
            let last = logits.index_axis(Axis(1), logits.dim().1 - 1);
            let row: Vec<F> = last.iter().copied().collect();
            if row.iter().any(|l| !l.is_finite()) {
                return Err(PhmError::InvalidArgument {
                    what: "logits",
                    reason: "the model produced a NaN or infinite logit (diverged parameters?)"
                        .into(),
                });
            }
            tokens.push(sampling.pick(&row, rng));
        }
        Ok(tokens)
    }
}

fn into3<F: Float>(y: ArrayD<F>) -> Array3<F> {
    y.into_dimensionality::<Ix3>().expect("(B, T, vocab)")
}

impl<F: Float> Module<F> for TransformerLm<F> {
    /// Logits `(B, T, vocab)` for token ids given as floats `(B, T)`.
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.check_ids("TransformerLm::forward", x.shape());
        let e = self.embed.forward(x);
        self.forward_rest(e, None).into_dyn()
    }

    /// Backward for [`forward`](Module::forward); returns zeros of the ids' shape (ids have
    /// no gradient).
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let g = self.backward_rest(grad_output);
        self.embed.backward(g.view())
    }

    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.check_ids("TransformerLm::infer", x.shape());
        let e = self.embed.infer(x);
        self.infer_rest(e, None).into_dyn()
    }

    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<F>)) {
        f("embed", &self.embed);
        f("pos", &self.pos);
        f("drop", &self.drop);
        for (i, block) in self.blocks.iter().enumerate() {
            f(&format!("blocks.{i}"), block);
        }
        f("ln_f", &self.ln_f);
        f("head", &self.head);
    }

    fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<F>)) {
        f("embed", &mut self.embed);
        f("pos", &mut self.pos);
        f("drop", &mut self.drop);
        for (i, block) in self.blocks.iter_mut().enumerate() {
            f(&format!("blocks.{i}"), block);
        }
        f("ln_f", &mut self.ln_f);
        f("head", &mut self.head);
    }

    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "TransformerLm(vocab = {}, d = {}, heads = {}, layers = {}, max_len = {}, {}{})",
            c.vocab,
            c.width,
            c.heads,
            c.layers,
            c.max_len,
            c.projection.name(),
            if c.shared_rules { ", shared rules" } else { "" }
        )
    }

    fn hyperparameters(&self) -> Vec<(String, String)> {
        let c = &self.config;
        vec![
            ("vocab".into(), c.vocab.to_string()),
            ("width".into(), c.width.to_string()),
            ("heads".into(), c.heads.to_string()),
            ("layers".into(), c.layers.to_string()),
            ("max_len".into(), c.max_len.to_string()),
            ("ffn_width".into(), c.ffn_width.to_string()),
            ("projection".into(), c.projection.name()),
            ("shared_rules".into(), c.shared_rules.to_string()),
            ("positional".into(), format!("{:?}", c.positional)),
            ("tied_embeddings".into(), c.tied_embeddings.to_string()),
        ]
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        (input.len() == 2 && input[1] <= self.config.max_len)
            .then(|| vec![input[0], input[1], self.config.vocab])
    }
}

impl<F: Float> std::fmt::Debug for TransformerLm<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
