//! Weight layouts of other PHM libraries: import their tensors into phm-nn layers and export
//! back, by name, with every transpose spelled out.
//!
//! phm-nn stores `W = Σ_i A_i ⊗ S_i` as `(out, in)` and computes `y = x Wᵀ + b` (PyTorch's
//! `nn.Linear` convention), with rules `A` `(n, n, n)` and blocks `S` `(n, out/n, in/n)`.
//!
//! | layout | upstream tensors | upstream formula | to phm-nn |
//! |---|---|---|---|
//! | [`Layout::Compacter`] (Compacter, AdapterHub `PHMLayer`) | `phm_rule` `(n, n, n)`, `W` `(n, in/n, out/n)`, `b` `(out)` | `H = Σ kron(A'_i, W'_i)` `(in, out)`, `y = x H + b` | `W = Hᵀ = Σ A'_iᵀ ⊗ W'_iᵀ`: `A_i = A'_iᵀ`, `S_i = W'_iᵀ` |
//! | [`Layout::HyperNets`] (HyperNets / PHNN `PHMLinear`) | `A` `(n, n, n)`, `F` `(n, out/n, in/n)`, `bias` `(out)` | `W = Σ kron(A_i, F_i)`, `y = F.linear(x, W, bias)` | the same tensors: `A_i = A_i`, `S_i = F_i` |
//!
//! (`kron(A, B)ᵀ = kron(Aᵀ, Bᵀ)` gives the Compacter row.) A state dict here is a map from
//! tensor names to arrays, e.g. read from a safetensors file; a [`NameMap`] renames the
//! upstream names when a checkpoint uses others (a prefix such as `"adapter.down."`, or
//! different names altogether).
//!
//! ```
//! use phm_nn::interop::{export_phm, import_phm, Layout, NameMap};
//! use phm_nn::prelude::*;
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! let layer = PhmLinearConfig::new(8, 4, 2).init::<f32, _>(&mut rng)?;
//! let dict = export_phm(&layer, Layout::Compacter, &NameMap::prefix("down."));
//! assert_eq!(dict["down.W"].shape(), &[2, 4, 2]); // (n, in/n, out/n)
//! let back = import_phm(&dict, Layout::Compacter, &NameMap::prefix("down."))?;
//! assert_eq!(back.weight(), layer.weight());
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::collections::{BTreeMap, HashMap};

use ndarray::{Array1, Array3, ArrayD, Ix1, Ix3};

use crate::error::{PhmError, Result};
use crate::nn::PhmLinear;
use crate::Float;

/// Tensors by name, as a PyTorch `state_dict()` holds them.
pub type StateDict<F> = BTreeMap<String, ArrayD<F>>;

/// A PHM weight layout of another library; see the [module docs](self) for the formulas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Compacter / AdapterHub `PHMLayer`: `phm_rule`, `W` `(n, in/n, out/n)`, `b`;
    /// `y = x Σ kron(A'_i, W'_i) + b`.
    Compacter,
    /// HyperNets / PHNN `PHMLinear`: `A`, `F` `(n, out/n, in/n)`, `bias`;
    /// `y = F.linear(x, Σ kron(A_i, F_i), bias)`.
    HyperNets,
}

impl Layout {
    /// The upstream names of (rules, blocks, bias).
    pub fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Layout::Compacter => ("phm_rule", "W", "b"),
            Layout::HyperNets => ("A", "F", "bias"),
        }
    }
}

/// How upstream tensor names map to the names in a state dict: an optional prefix, then
/// explicit renames (`"phm_rule" → "shared_rule"`), applied to the prefixed name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameMap {
    prefix: String,
    renames: HashMap<String, String>,
}

impl NameMap {
    /// No prefix, no renames: the upstream names as they are.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every name gets `prefix` in front (e.g. `"layers.0.adapter."`).
    pub fn prefix(prefix: &str) -> Self {
        NameMap {
            prefix: prefix.to_string(),
            renames: HashMap::new(),
        }
    }

    /// Maps the upstream `name` (without the prefix) to `to` (used as is, no prefix).
    #[must_use]
    pub fn rename(mut self, name: &str, to: &str) -> Self {
        self.renames.insert(name.to_string(), to.to_string());
        self
    }

    /// The state-dict name of the upstream tensor `name`.
    pub fn resolve(&self, name: &str) -> String {
        match self.renames.get(name) {
            Some(to) => to.clone(),
            None => format!("{}{name}", self.prefix),
        }
    }
}

/// The tensor `name` of `dict`, checked to be 3-D (or 1-D for a bias).
fn get<'a, F>(dict: &'a StateDict<F>, name: &str) -> Result<&'a ArrayD<F>> {
    dict.get(name).ok_or_else(|| PhmError::InvalidArgument {
        what: "state dict",
        reason: format!(
            "tensor `{name}` is missing (found: {})",
            dict.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    })
}

fn rank<F: Float, D: ndarray::Dimension>(
    name: &str,
    t: &ArrayD<F>,
    want: &str,
) -> Result<ndarray::Array<F, D>> {
    t.clone()
        .into_dimensionality::<D>()
        .map_err(|_| PhmError::InvalidArgument {
            what: "state dict",
            reason: format!("tensor `{name}` has shape {:?}, expected {want}", t.shape()),
        })
}

/// Converts (rules, blocks) between phm-nn's layout and `layout`, either way: for
/// Compacter every `A_i` and `S_i` is transposed (`A_i = A'_iᵀ`, `S_i = W'_iᵀ`, its own
/// inverse); HyperNets stores ours.
fn swap_layout<F: Float>(
    layout: Layout,
    rules: Array3<F>,
    blocks: Array3<F>,
) -> (Array3<F>, Array3<F>) {
    let t = |a: Array3<F>| a.permuted_axes([0, 2, 1]).as_standard_layout().into_owned();
    match layout {
        Layout::Compacter => (t(rules), t(blocks)),
        Layout::HyperNets => (rules, blocks),
    }
}

/// Imports a PHM layer from `dict` in the given layout (names resolved through `names`).
/// The values are copied exactly (transposes only move them).
///
/// # Errors
/// [`PhmError::InvalidArgument`] naming the tensor if one is missing or has the wrong rank;
/// [`PhmError::ShapeMismatch`] (from [`PhmLinear::from_parts`]) if the tensors do not fit
/// together. A missing bias means a layer without bias.
pub fn import_phm<F: Float>(
    dict: &StateDict<F>,
    layout: Layout,
    names: &NameMap,
) -> Result<PhmLinear<F>> {
    let (rule_name, block_name, bias_name) = layout.names();
    let (rn, bn, cn) = (
        names.resolve(rule_name),
        names.resolve(block_name),
        names.resolve(bias_name),
    );
    let rules: Array3<F> = rank::<F, Ix3>(&rn, get(dict, &rn)?, "(n, n, n)")?;
    let blocks: Array3<F> = rank::<F, Ix3>(&bn, get(dict, &bn)?, "3-D blocks")?;
    let bias: Option<Array1<F>> = match dict.get(&cn) {
        Some(b) => Some(rank::<F, Ix1>(&cn, b, "(out)")?),
        None => None,
    };
    let (rules, blocks) = swap_layout(layout, rules, blocks);
    PhmLinear::from_parts(rules, blocks, bias)
}

/// Exports a PHM layer to a state dict in the given layout (names resolved through `names`):
/// the inverse of [`import_phm`], bit for bit.
pub fn export_phm<F: Float>(layer: &PhmLinear<F>, layout: Layout, names: &NameMap) -> StateDict<F> {
    let (rule_name, block_name, bias_name) = layout.names();
    let (rules, blocks) = swap_layout(layout, layer.rules(), layer.blocks());
    let mut dict = StateDict::new();
    dict.insert(names.resolve(rule_name), rules.into_dyn());
    dict.insert(names.resolve(block_name), blocks.into_dyn());
    if let Some(b) = layer.bias() {
        dict.insert(names.resolve(bias_name), b.into_dyn());
    }
    dict
}
