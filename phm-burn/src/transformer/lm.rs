//! A decoder-only Transformer language model, phm-nn's
//! [`phm_nn::nn::transformer::TransformerLm`] in burn.
//!
//! ```text
//!     X₀ = Dropout(Embed(ids) + P[0..T])                 ids: (B, T)   X: (B, T, d)
//!     X_l = Block_l(X_{l−1})          l = 1 … L          (pre-norm, causal)
//!     logits = LN_f(X_L) W_headᵀ + b_head                (B, T, vocab)
//! ```
//!
//! Every projection of every block is dense, PHM or low-rank PHM ([`ProjectionConfig`]);
//! with `shared_rules`, the model holds one rule set ([`PhmRules`], path `rules.rules`; in
//! phm-nn the tensor every projection shares, first met at `blocks.0.attn.q.rules`) and
//! hands its matrices to every projection. The head is dense, optionally tied to the
//! embedding (`W_head = E`, no head bias: the model holds `E` once). Train with [`TransformerLm::forward`] and burn's autodiff (e.g.
//! cross-entropy of the logits against the next tokens); sample with
//! [`TransformerLm::generate`] (phm-nn's [`Sampling`]: greedy, temperature, top-k) through a key/value cache
//! ([`KvCache`], [`TransformerLm::forward_step`]): each step runs the model on the new token
//! only.
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Int, Tensor};
//! use phm_burn::linear::ProjectionConfig;
//! use phm_burn::transformer::{Positional, Sampling, TransformerLmConfig};
//! let device = Device::default();
//! let lm = TransformerLmConfig::new(16, 8, 2, 2, 12)
//!     .with_projection(ProjectionConfig::phm(4))
//!     .with_shared_rules(true)
//!     .with_positional(Positional::Sinusoidal)
//!     .with_tied_embeddings(true)
//!     .init::<f32>(&device)?;
//! let logits = lm.forward(Tensor::<2, Int>::from_ints([[1, 2, 3]], &device), None);
//! assert_eq!(logits.dims(), [1, 3, 16]);
//! let tokens = lm.generate(&[1, 2], 5, Sampling::greedy(), &mut phm_nn::prelude::StdRng::seed_from_u64(0))?;
//! assert_eq!(tokens.len(), 7);
//! # use phm_nn::prelude::SeedableRng;
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use phm_nn::module::find_all;
use phm_nn::nn::transformer as native;
use phm_nn::nn::PhmRules as NativeRules;
use phm_nn::prelude::{SeedableRng, StdRng};
use phm_nn::rand::Rng;
use phm_nn::{Float, PhmError, Result};

use super::{
    child_values, in_child, load_values, native_child, native_values, projection_config,
    AttentionCache, Block, Dropout, Embedding, LayerNorm, PositionalEncoding,
};
use crate::bridge::{array_from_tensor, is_trainable};
use crate::kernels::PhmPath;
use crate::linear::{Linear, ProjectionConfig};
use crate::rules::PhmRules;
use crate::Bridge;

pub use phm_nn::nn::transformer::{Positional, Sampling};

/// Configuration of a [`TransformerLm`]: the fields and defaults of phm-nn's
/// [`phm_nn::nn::transformer::TransformerLmConfig`], plus the seed of the init.
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
    /// Longest sequence the model takes.
    pub max_len: usize,
    /// Feed-forward hidden width (default `4d`).
    pub ffn_width: usize,
    /// Every block projection's kind (default dense).
    pub projection: ProjectionConfig,
    /// One rule set for every PHM-family projection of the model (default `false`).
    pub shared_rules: bool,
    /// Dropout probability after the embedding and on every residual branch (default 0).
    pub dropout: f64,
    /// Position encoding (default learned).
    pub positional: Positional,
    /// Tie the output head to the embedding (default `false`).
    pub tied_embeddings: bool,
    /// Seed of the generator drawing the parameters (phm-nn's init; default 0).
    pub seed: u64,
}

impl TransformerLmConfig {
    /// `layers` blocks of width `width` with `heads` heads over `vocab` tokens and sequences
    /// of up to `max_len`; dense projections, feed-forward width `4·width`, learned
    /// positions, no dropout, seed 0.
    #[must_use]
    pub fn new(vocab: usize, width: usize, heads: usize, layers: usize, max_len: usize) -> Self {
        TransformerLmConfig::from_native(
            &native::TransformerLmConfig::new(vocab, width, heads, layers, max_len),
            0,
        )
    }

    /// Sets the feed-forward hidden width.
    #[must_use]
    pub fn with_ffn_width(mut self, ffn_width: usize) -> Self {
        self.ffn_width = ffn_width;
        self
    }

    /// Sets the projections' kind.
    #[must_use]
    pub fn with_projection(mut self, projection: ProjectionConfig) -> Self {
        self.projection = projection;
        self
    }

    /// Sets whether one rule set serves every projection.
    #[must_use]
    pub fn with_shared_rules(mut self, shared: bool) -> Self {
        self.shared_rules = shared;
        self
    }

    /// Sets the dropout probability.
    #[must_use]
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = p;
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

    /// Sets the seed of the init.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The phm-nn config with the same fields.
    pub fn to_native(&self) -> native::TransformerLmConfig {
        native::TransformerLmConfig::new(
            self.vocab,
            self.width,
            self.heads,
            self.layers,
            self.max_len,
        )
        .with_ffn_width(self.ffn_width)
        .with_projection(self.projection.to_native())
        .with_shared_rules(self.shared_rules)
        .with_dropout(self.dropout, 0)
        .with_positional(self.positional)
        .with_tied_embeddings(self.tied_embeddings)
    }

    /// The config with the fields of phm-nn's `c` and the given `seed`.
    pub fn from_native(c: &native::TransformerLmConfig, seed: u64) -> Self {
        TransformerLmConfig {
            vocab: c.vocab,
            width: c.width,
            heads: c.heads,
            layers: c.layers,
            max_len: c.max_len,
            ffn_width: c.ffn_width,
            projection: projection_config(c.projection),
            shared_rules: c.shared_rules,
            dropout: c.dropout,
            positional: c.positional,
            tied_embeddings: c.tied_embeddings,
            seed,
        }
    }

    /// Builds the model in `F`'s dtype on `device`: phm-nn's init (embeddings and learned
    /// positions `N(0, 0.02²)`, projections their layers' defaults) with a generator seeded
    /// by `seed`, converted.
    ///
    /// # Errors
    /// Those of [`phm_nn::nn::transformer::TransformerLmConfig::init`]: a zero size, a width
    /// not a multiple of `heads` or of the projection's `n`, a dropout probability outside
    /// `[0, 1)`.
    pub fn init<F: Float>(&self, device: &Device) -> Result<TransformerLm> {
        let native = self
            .to_native()
            .init::<F, _>(&mut StdRng::seed_from_u64(self.seed))?;
        TransformerLm::from_native(&native, device)
    }
}

/// The key/value caches of every block of a [`TransformerLm`], for generation.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<AttentionCache>,
}

impl KvCache {
    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, AttentionCache::len)
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(AttentionCache::clear);
    }
}

/// A decoder-only Transformer language model; see the [module docs](self). Children
/// `embed`, `pos`, `drop`, `blocks.{l}`, `ln_f`, `head` as in phm-nn, and `rules` when the
/// rules are shared.
#[derive(Module, Debug)]
pub struct TransformerLm {
    /// Token embedding `(vocab, d)`.
    pub embed: Embedding,
    /// Positional encoding.
    pub pos: PositionalEncoding,
    /// Dropout after the embedding.
    pub drop: Dropout,
    /// The rules every PHM-family projection shares (`None` unless `shared_rules`).
    pub rules: Option<PhmRules>,
    /// The blocks, in order.
    pub blocks: Vec<Block>,
    /// Final norm.
    pub ln_f: LayerNorm,
    /// Vocabulary head `d → vocab`; `None` when tied to the embedding.
    pub head: Option<Linear>,
    /// The configuration (with the seed the model was built from).
    #[module(skip)]
    pub config: TransformerLmConfig,
}

impl TransformerLm {
    /// Logits for token ids, with an optional key-padding mask (`true` = padding).
    ///
    /// # Shapes
    /// - `ids`: `[B, T]`, each below `vocab`, `T ≤ max_len`
    /// - `pad`: `[B, T]`
    /// - output: `[B, T, vocab]`
    ///
    /// # Panics
    /// If `T > max_len`, `pad` is not `[B, T]`, or an id is negative or not below `vocab`
    /// ([`Embedding::forward`](super::Embedding::forward), naming the id).
    #[track_caller]
    pub fn forward(&self, ids: Tensor<2, Int>, pad: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let [_, t] = ids.dims();
        assert!(
            t <= self.config.max_len,
            "TransformerLm::forward: {t} positions exceed max_len {}",
            self.config.max_len
        );
        let x = self.pos.forward(self.embed.forward(ids));
        let mut x = self.drop.forward(x);
        let rules = self.rules.as_ref().map(PhmRules::matrices);
        for block in &self.blocks {
            x = block.forward_with_rules(x, pad.clone(), rules.as_ref());
        }
        self.logits(self.ln_f.forward(x))
    }

    /// An empty key/value cache for [`forward_step`](Self::forward_step).
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![AttentionCache::new(); self.blocks.len()],
        }
    }

    /// Logits for `t` new tokens `ids` that follow the tokens in `cache`, whose keys and
    /// values it appends: equal to the last `t` positions of [`forward`](Self::forward) on
    /// the whole sequence, without recomputing the prefix.
    ///
    /// # Shapes
    /// - `ids`: `[B, t]` (the cache's `B`)
    /// - output: `[B, t, vocab]`
    ///
    /// # Panics
    /// If the cached and new positions exceed `max_len`, the batch is not the cache's, the
    /// cache is not this model's ([`new_cache`](Self::new_cache)), or an id is out of range
    /// (as [`forward`](Self::forward)).
    #[track_caller]
    pub fn forward_step(&self, ids: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        let [_, t] = ids.dims();
        let start = cache.len();
        assert!(
            start + t <= self.config.max_len,
            "TransformerLm::forward_step: {start} cached + {t} new positions exceed max_len {}",
            self.config.max_len
        );
        assert_eq!(
            cache.layers.len(),
            self.blocks.len(),
            "TransformerLm::forward_step: a cache of {} layers for a model of {}",
            cache.layers.len(),
            self.blocks.len()
        );
        let x = self.pos.forward_at(self.embed.forward(ids), start);
        let mut x = self.drop.forward(x);
        let rules = self.rules.as_ref().map(PhmRules::matrices);
        for (block, c) in self.blocks.iter().zip(&mut cache.layers) {
            x = block.forward_cached(x, c, rules.as_ref());
        }
        self.logits(self.ln_f.forward(x))
    }

    /// The head on the final hidden states.
    fn logits(&self, x: Tensor<3>) -> Tensor<3> {
        match &self.head {
            Some(head) => head.forward(x),
            None => x.matmul(self.embed.weight.val().transpose().unsqueeze::<3>()),
        }
    }

    /// Sets the way every PHM-family projection computes its product (no effect on dense).
    #[must_use]
    pub fn with_path(self, path: PhmPath) -> Self {
        TransformerLm {
            blocks: self.blocks.into_iter().map(|b| b.with_path(path)).collect(),
            ..self
        }
    }

    /// Continues `prompt` by `steps` tokens, each picked by phm-nn's [`Sampling`] (greedy, or
    /// from `softmax(logits / temperature)` over the `top_k` best, with `rng`). When
    /// the sequence would outgrow `max_len`, the context restarts from its last `max_len / 2`
    /// tokens (phm-nn's rule). Each step runs the model on the new token only, through a
    /// [`KvCache`] (the whole context after a restart).
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
    /// whole context. The same tokens for the same `rng` state; for checks.
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
        let vocab = self.config.vocab;
        sampling.validate()?;
        if prompt.is_empty() {
            return Err(invalid("prompt", "is empty".into()));
        }
        if let Some(bad) = prompt.iter().find(|&&id| id >= vocab) {
            return Err(invalid(
                "prompt",
                format!("token id {bad} is not below the vocabulary size {vocab}"),
            ));
        }
        let device = self.embed.weight.device();
        let max_len = self.config.max_len;
        let keep = (max_len / 2).max(1);
        let mut tokens = prompt.to_vec();
        let mut start = 0;
        let mut cache = self.new_cache();
        for _ in 0..steps {
            if tokens.len() - start > max_len {
                start = tokens.len() - keep;
                cache.clear();
            }
            // With the cache, feed what it has not seen: the whole context after a restart
            // or at the start, else the last token.
            let from = if cached { start + cache.len() } else { start };
            let context: Vec<i64> = tokens[from..].iter().map(|&t| t as i64).collect();
            let n = context.len();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(context, [1, n]), &device);
            let logits = match cached {
                true => self.forward_step(ids, &mut cache),
                false => self.forward(ids, None),
            };
            let logits = logits.slice([0..1, n - 1..n, 0..vocab]);
            let row: Vec<f64> = logits
                .reshape([vocab])
                .to_data()
                .convert::<f64>()
                .try_to_vec::<f64>()
                .expect("f64 data");
            if row.iter().any(|l| !l.is_finite()) {
                return Err(invalid("logits", "a NaN or infinite logit".into()));
            }
            tokens.push(sampling.pick(&row, rng));
        }
        Ok(tokens)
    }
}

fn invalid(what: &'static str, reason: String) -> PhmError {
    PhmError::InvalidArgument { what, reason }
}

/// The rule set the PHM-family projections of `native` share (those of its first one).
fn shared_native_rules<F: Float>(native: &native::TransformerLm<F>) -> Option<NativeRules<F>> {
    if let Some((_, l)) = find_all::<F, phm_nn::PhmLinear<F>>(native).first() {
        return NativeRules::full(l.rules_param().share()).ok();
    }
    find_all::<F, phm_nn::LphmLinear<F>>(native)
        .first()
        .map(|(_, l)| l.rules().share())
}

impl Bridge for TransformerLm {
    type Native<F: Float> = native::TransformerLm<F>;

    fn to_native<F: Float>(&self) -> phm_nn::Result<Self::Native<F>> {
        let out = self
            .config
            .to_native()
            .with_dropout(self.drop.p, 0)
            .init::<F, _>(&mut StdRng::seed_from_u64(0))?;
        let shared = match &self.rules {
            Some(r) => Some(r.to_native::<F>().map_err(in_child("rules"))?),
            None => None,
        };
        let mut values = HashMap::new();
        child_values::<F, _>(&self.embed, "embed", &mut values)?;
        child_values::<F, _>(&self.pos, "pos", &mut values)?;
        for (l, block) in self.blocks.iter().enumerate() {
            let name = format!("blocks.{l}");
            let twin = block
                .to_native_with_rules(shared.as_ref())
                .map_err(in_child(&name))?;
            native_values(&twin, &name, &mut values);
        }
        child_values::<F, _>(&self.ln_f, "ln_f", &mut values)?;
        match &self.head {
            Some(head) => child_values::<F, _>(head, "head", &mut values)?,
            None => {
                let e = array_from_tensor::<F, 2>(&self.embed.weight.val(), "embed.weight")?;
                values.insert("head.weight".into(), (e, is_trainable(&self.embed.weight)));
            }
        }
        load_values(&out, values)?;
        Ok(out)
    }

    /// # Errors
    /// [`PhmError::CheckpointMismatch`] or [`PhmError::InvalidArgument`] for a layer this
    /// module cannot hold.
    fn from_native<F: Float>(native: &Self::Native<F>, device: &Device) -> phm_nn::Result<Self> {
        let config = TransformerLmConfig::from_native(native.config(), 0);
        let rules = match config.shared_rules {
            true => shared_native_rules(native)
                .map(|r| PhmRules::from_native(&r, device))
                .transpose()?,
            false => None,
        };
        let shared = rules.is_some();
        let head = if config.tied_embeddings {
            None
        } else {
            Some(Linear::from_native(native_child(native, "head")?, device)?)
        };
        Ok(TransformerLm {
            embed: Embedding::from_native(native.embedding(), device)?,
            pos: PositionalEncoding::from_native(native_child(native, "pos")?, device)?,
            drop: Dropout::from_native(native_child(native, "drop")?, device)?,
            rules,
            blocks: native
                .blocks()
                .iter()
                .enumerate()
                .map(|(l, b)| {
                    Block::from_native_with_rules(b, shared, device)
                        .map_err(in_child(&format!("blocks.{l}")))
                })
                .collect::<phm_nn::Result<_>>()?,
            ln_f: LayerNorm::from_native(native_child(native, "ln_f")?, device)?,
            head,
            config,
        })
    }
}
