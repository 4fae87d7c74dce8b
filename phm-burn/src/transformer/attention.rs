//! Multi-head self-attention with causal and key-padding masks, phm-nn's
//! [`phm_nn::nn::transformer::MultiHeadAttention`] in burn.
//!
//! ```text
//!     Q = q(X),  K = k(X),  V = v(X)              X: (B, T, d), each projection d → d
//!     for each head h (columns h·d_h … (h+1)·d_h, d_h = d / H):
//!         S_h = Q_h K_hᵀ / √d_h  (+ −∞ where masked)          (T, T)
//!         P_h = softmax(S_h)  row by row                       (T, T)
//!         O_h = P_h V_h                                        (T, d_h)
//!     Y = o([O_1 … O_H])
//! ```
//!
//! Masks: with `causal`, query `i` sees keys `j ≤ i`; a key-padding mask `(B, T)` of `bool`
//! (`true` = padding, PyTorch's `key_padding_mask` convention) hides those keys from every
//! query. A query that sees no key at all gets `P = 0` (output `o(0)`, no gradient), where
//! PyTorch gives NaN — as phm-nn. Gradients come from burn's autodiff.
//!
//! The four projections are dense, PHM or low-rank PHM ([`ProjectionConfig`]); inside a
//! model with shared rules they take the model's rule matrices
//! ([`forward_with_rules`](MultiHeadAttention::forward_with_rules)).
//!
//! ```
//! use phm_burn::burn::tensor::{Bool, Device, Tensor};
//! use phm_burn::linear::ProjectionConfig;
//! use phm_burn::transformer::AttentionConfig;
//! let device = Device::default();
//! let attn = AttentionConfig::new(8, 2)
//!     .with_projection(ProjectionConfig::phm(4))
//!     .init::<f32>(&device)?;
//! let x = Tensor::<3>::ones([3, 5, 8], &device);
//! let pad = Tensor::<2, Bool>::from_bool([[false; 5]; 3], &device);
//! assert_eq!(attn.forward(x, Some(pad)).dims(), [3, 5, 8]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::collections::HashMap;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Tensor};
use phm_nn::nn::transformer as native;
use phm_nn::nn::PhmRules as NativeRules;
use phm_nn::prelude::{SeedableRng, StdRng};
use phm_nn::Float;

use super::{in_child, load_values, native_values, projection_config};
use crate::linear::{Projection, ProjectionConfig};
use crate::Bridge;

/// The score given to masked keys before the softmax: finite, so that a row with no visible
/// key gives no NaN (its weights are then set to zero), and far below any real score.
const MASKED: f64 = -1e30;

/// Configuration of a [`MultiHeadAttention`].
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Model width `d` (a multiple of `heads`).
    pub width: usize,
    /// Number of heads `H`.
    pub heads: usize,
    /// Whether query `i` sees only keys `j ≤ i` (default `true`).
    #[config(default = true)]
    pub causal: bool,
    /// The four projections' kind (default dense).
    #[config(default = "ProjectionConfig::Dense")]
    pub projection: ProjectionConfig,
    /// Seed of the generator drawing the projections (phm-nn's init).
    #[config(default = 0)]
    pub seed: u64,
}

impl AttentionConfig {
    /// The phm-nn config.
    fn native(&self) -> native::AttentionConfig {
        native::AttentionConfig::new(self.width, self.heads)
            .with_causal(self.causal)
            .with_projection(self.projection.to_native())
    }

    /// Builds the layer in `F`'s dtype on `device`: phm-nn's init with a generator seeded by
    /// `seed`.
    ///
    /// # Errors
    /// Those of [`phm_nn::nn::transformer::AttentionConfig::init`]: a zero width or head
    /// count, a width not a multiple of `heads` or of the projection's `n`.
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<MultiHeadAttention> {
        let native = self
            .native()
            .init::<F, _>(None, &mut StdRng::seed_from_u64(self.seed))?;
        MultiHeadAttention::from_native(&native, device)
    }
}

/// Multi-head self-attention; see the [module docs](self). Parameters `q.*`, `k.*`, `v.*`,
/// `o.*` as in phm-nn.
#[derive(Module, Debug)]
pub struct MultiHeadAttention {
    /// Query projection.
    pub q: Projection,
    /// Key projection.
    pub k: Projection,
    /// Value projection.
    pub v: Projection,
    /// Output projection.
    pub o: Projection,
    /// Model width `d`.
    pub width: usize,
    /// Number of heads `H`.
    pub heads: usize,
    /// Whether the attention is causal.
    pub causal: bool,
    /// The projections' kind.
    #[module(skip)]
    pub projection: ProjectionConfig,
}

impl MultiHeadAttention {
    /// Self-attention over `x` with an optional key-padding mask (`true` = padding).
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
    /// As [`forward`](Self::forward), and as [`Projection::forward_with_rules`] when the
    /// rules do not fit the projections.
    #[track_caller]
    pub fn forward_with_rules(
        &self,
        x: Tensor<3>,
        pad: Option<Tensor<2, Bool>>,
        rules: Option<&Tensor<3>>,
    ) -> Tensor<3> {
        let [b, t, d] = x.dims();
        assert_eq!(
            d,
            self.width,
            "MultiHeadAttention::forward: input has shape {:?}, expected [B, T, {}]",
            x.dims(),
            self.width
        );
        if let Some(pad) = &pad {
            assert_eq!(
                pad.dims(),
                [b, t],
                "MultiHeadAttention::forward: padding mask has shape {:?}, expected {:?}",
                pad.dims(),
                [b, t]
            );
        }
        let (h, dh) = (self.heads, self.width / self.heads);
        let split = |y: Tensor<3>| y.reshape([b, t, h, dh]).swap_dims(1, 2); // (B, H, T, d_h)
        let q = split(self.q.forward_with_rules(x.clone(), rules));
        let k = split(self.k.forward_with_rules(x.clone(), rules));
        let v = split(self.v.forward_with_rules(x, rules));
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (dh as f64).sqrt()); // (B, H, T, T)
        let device = scores.device();
        let mut hidden: Option<Tensor<4, Bool>> = None;
        if self.causal {
            // `true` above the diagonal: key j > query i.
            let upper = Tensor::<2, Bool>::tril_mask([t, t], 0, &device);
            hidden = Some(upper.unsqueeze::<4>().expand([b, 1, t, t]));
        }
        if let Some(pad) = pad {
            let pad = pad.reshape([b, 1, 1, t]).expand([b, 1, t, t]);
            hidden = Some(match hidden {
                Some(m) => m.bool_or(pad),
                None => pad,
            });
        }
        let p = match hidden {
            None => softmax(scores, 3),
            Some(m) => {
                let m = m.expand([b, h, t, t]);
                softmax(scores.mask_fill(m.clone(), MASKED), 3).mask_fill(m, 0.0)
            }
        };
        let merged = p.matmul(v).swap_dims(1, 2).reshape([b, t, d]);
        self.o.forward_with_rules(merged, rules)
    }

    /// The phm-nn twin; `shared` are the model's phm-nn rules when the projections use
    /// shared rules (the twin's projections then share them).
    ///
    /// # Errors
    /// As [`Bridge::to_native`], and [`phm_nn::PhmError::InvalidArgument`] if the
    /// projections use shared rules and `shared` is `None`.
    pub fn to_native_with_rules<F: Float>(
        &self,
        shared: Option<&NativeRules<F>>,
    ) -> phm_nn::Result<native::MultiHeadAttention<F>> {
        let out = native::AttentionConfig::new(self.width, self.heads)
            .with_causal(self.causal)
            .with_projection(self.projection.to_native())
            .init::<F, _>(shared, &mut StdRng::seed_from_u64(0))?;
        let mut values = HashMap::new();
        for (name, p) in [
            ("q", &self.q),
            ("k", &self.k),
            ("v", &self.v),
            ("o", &self.o),
        ] {
            let twin = p.to_native::<F>(shared).map_err(in_child(name))?;
            native_values(&*twin, name, &mut values);
        }
        load_values(&out, values)?;
        Ok(out)
    }

    /// The layer with the values of `native`; with `shared`, its PHM-family projections
    /// hold no rules (the model holds them; see [`crate::rules`]).
    ///
    /// # Errors
    /// As [`Bridge::from_native`].
    pub fn from_native_with_rules<F: Float>(
        native: &native::MultiHeadAttention<F>,
        shared: bool,
        device: &Device,
    ) -> phm_nn::Result<Self> {
        let [q, k, v, o] = native.projections();
        let proj =
            |m, name| Projection::from_native::<F>(m, shared, device).map_err(in_child(name));
        Ok(MultiHeadAttention {
            q: proj(q, "q")?,
            k: proj(k, "k")?,
            v: proj(v, "v")?,
            o: proj(o, "o")?,
            width: native.width(),
            heads: native.heads(),
            causal: native.is_causal(),
            projection: projection_config(native.projection()),
        })
    }
}

impl Bridge for MultiHeadAttention {
    type Native<F: Float> = native::MultiHeadAttention<F>;

    /// # Errors
    /// [`phm_nn::PhmError::CheckpointMismatch`] for a dtype that is not `F`'s;
    /// [`phm_nn::PhmError::InvalidArgument`] if the projections use a model's shared rules
    /// (convert the model instead).
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
