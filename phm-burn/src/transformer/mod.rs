//! The PHM Transformer as burn modules: the layers of phm-nn's `nn::transformer` (and the
//! general layers it uses), with the same parameter names, shapes and values.
//!
//! | layer | what it computes |
//! |---|---|
//! | [`LayerNorm`] | `(x − mean)/√(var + ε) · w + b` over the last axis |
//! | [`Embedding`] | token ids `(B, T)` → rows of a table `(B, T, d)` |
//! | [`PositionalEncoding`] | `X + P[0..T]`, sinusoidal or learned |
//! | [`Dropout`] | inverted dropout, only while training on an autodiff device |
//! | [`MultiHeadAttention`] | `o(softmax(QKᵀ/√d_h + mask) V)` per head, causal and padding masks |
//! | [`FeedForward`] | `fc2(gelu(fc1(X)))`, exact (erf) GELU |
//! | [`Block`] | `H = X + Drop(Attn(LN₁ X))`, `Y = H + Drop(FFN(LN₂ H))` |
//! | [`TransformerLm`] | embedding + positions, `L` blocks, final norm, vocabulary head; cached generation ([`KvCache`]) |
//!
//! Every module is built in one way: its config's `init` builds the phm-nn twin from the
//! same config with a seeded generator and converts it ([`Bridge::from_native`]), so a
//! burn model and a phm-nn model built from the same config and seed are equal, and
//! [`Bridge::to_native`] gives the phm-nn model back (same parameter paths, e.g.
//! `blocks.0.attn.q.weight`).
//!
//! ```
//! use phm_burn::burn::tensor::{DType, Device, Int, Tensor};
//! use phm_burn::transformer::TransformerLmConfig;
//! use phm_burn::Bridge;
//!
//! let device = Device::default();
//! let lm = TransformerLmConfig::new(16, 8, 2, 1, 12).init::<f64>(&device)?;
//! let ids = Tensor::<2, Int>::from_ints([[1, 2, 3], [4, 5, 6]], &device);
//! let logits = lm.forward(ids, None);
//! assert_eq!(logits.dims(), [2, 3, 16]);
//! assert_eq!(logits.dtype(), DType::F64);
//!
//! // The phm-nn twin has the same parameters and computes the same logits.
//! let native = lm.to_native::<f64>()?;
//! let ids = phm_nn::ndarray::array![[1usize, 2, 3], [4, 5, 6]];
//! let expected = native.infer_ids(ids.view(), None);
//! let got = phm_burn::bridge::array_from_tensor::<f64, 3>(&logits, "logits")?;
//! for (a, b) in got.iter().zip(expected.iter()) {
//!     assert!((a - b).abs() < 1e-12);
//! }
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

pub mod attention;
pub mod block;
pub mod dropout;
pub mod embedding;
pub mod feed_forward;
pub mod layer_norm;
pub mod lm;
pub mod positional;

pub use attention::{AttentionCache, AttentionConfig, MultiHeadAttention};
pub use block::{Block, BlockConfig};
pub use dropout::{Dropout, DropoutConfig};
pub use embedding::{Embedding, EmbeddingConfig};
pub use feed_forward::{FeedForward, FeedForwardConfig};
pub use layer_norm::{LayerNorm, LayerNormConfig};
pub use lm::{KvCache, Positional, Sampling, TransformerLm, TransformerLmConfig};
pub use positional::{PositionalEncoding, PositionalEncodingConfig};

use std::any::Any;
use std::collections::HashMap;

use phm_nn::ndarray::ArrayD;
use phm_nn::{Float, Module as NativeModule, PhmError, Result};

use crate::linear::ProjectionConfig;
use crate::Bridge;

/// The direct child `name` of a phm-nn module.
pub(crate) fn native_child_dyn<'a, F: Float>(
    parent: &'a dyn NativeModule<F>,
    name: &str,
) -> Result<&'a dyn NativeModule<F>> {
    let mut found: Option<&'a dyn NativeModule<F>> = None;
    parent.visit_children(&mut |n, child| {
        if n == name {
            found = Some(child);
        }
    });
    found.ok_or_else(|| mismatch(name, "a child module", "none"))
}

/// The direct child `name` of a phm-nn module, as its concrete type `T`.
pub(crate) fn native_child<'a, F: Float, T: NativeModule<F>>(
    parent: &'a dyn NativeModule<F>,
    name: &str,
) -> Result<&'a T> {
    let child = native_child_dyn(parent, name)?;
    let any: &dyn Any = child;
    any.downcast_ref::<T>()
        .ok_or_else(|| mismatch(name, std::any::type_name::<T>(), &child.describe()))
}

/// A [`PhmError::CheckpointMismatch`] about the tensor or child `what`.
pub(crate) fn mismatch(what: &str, expected: &str, found: &str) -> PhmError {
    PhmError::CheckpointMismatch {
        source: "burn module".into(),
        tensor: what.into(),
        expected: expected.into(),
        found: found.into(),
    }
}

/// A parameter's value and whether it is trainable, by path.
pub(crate) type Values<F> = HashMap<String, (ArrayD<F>, bool)>;

/// Every parameter path of `module` (a shared tensor at each of its places) with its value
/// and trainable flag.
pub(crate) fn native_values<F: Float>(
    module: &dyn NativeModule<F>,
    prefix: &str,
    out: &mut Values<F>,
) {
    module.visit_params(&mut |path, p| {
        out.insert(join(prefix, path), (p.value(), p.is_trainable()));
    });
}

/// The values of a burn child's phm-nn twin, under `prefix`.
pub(crate) fn child_values<F: Float, M: Bridge>(
    child: &M,
    prefix: &str,
    out: &mut Values<F>,
) -> Result<()> {
    let native = child.to_native::<F>().map_err(in_child(prefix))?;
    native_values(&native, prefix, out);
    Ok(())
}

/// Writes `values` (value and trainable flag) into every parameter of `native` by path: each
/// of its paths must have a value of the parameter's shape and every value must be used.
pub(crate) fn load_values<F: Float>(
    native: &dyn NativeModule<F>,
    mut values: Values<F>,
) -> Result<()> {
    let mut result = Ok(());
    let mut used = Vec::new();
    native.visit_params(&mut |path, p| {
        if result.is_err() {
            return;
        }
        result = match values.get(path) {
            None => Err(mismatch(path, "a value", "none")),
            Some((v, trainable)) => p.set_value(v.view()).map(|()| p.set_trainable(*trainable)),
        };
        used.push(path.to_string());
    });
    result?;
    for path in used {
        values.remove(&path);
    }
    match values.keys().next() {
        Some(extra) => Err(mismatch(
            extra,
            "no tensor",
            "a tensor the phm-nn model lacks",
        )),
        None => Ok(()),
    }
}

/// The projection kind of phm-nn's `p` (fixed rules: those of the algebra of dimension `n`).
pub(crate) fn projection_config(p: phm_nn::nn::Projection) -> ProjectionConfig {
    use phm_nn::nn::Projection as P;
    let fixed = |rule: phm_nn::Rule| matches!(rule, phm_nn::Rule::Fixed(_));
    match p {
        P::Dense => ProjectionConfig::Dense,
        P::Phm { n, rule } => ProjectionConfig::Phm {
            n,
            fixed: fixed(rule),
        },
        P::LowRankPhm { n, rank, rule } => ProjectionConfig::LowRankPhm {
            n,
            rank,
            fixed: fixed(rule),
        },
    }
}

/// Prefixes the tensor name of a [`PhmError::CheckpointMismatch`] with `prefix`.
pub(crate) fn in_child(prefix: &str) -> impl Fn(PhmError) -> PhmError + '_ {
    move |e| match e {
        PhmError::CheckpointMismatch {
            source,
            tensor,
            expected,
            found,
        } => PhmError::CheckpointMismatch {
            source,
            tensor: join(prefix, &tensor),
            expected,
            found,
        },
        other => other,
    }
}

fn join(prefix: &str, path: &str) -> String {
    if prefix.is_empty() {
        path.to_string()
    } else {
        format!("{prefix}.{path}")
    }
}
