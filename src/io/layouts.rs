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
//! (`kron(A, B)ᵀ = kron(Aᵀ, Bᵀ)` gives the Compacter row.) Compacter's low-rank and
//! factorized-rule variants map onto [`LphmLinear`] ([`import_lphm`], [`export_lphm`]):
//!
//! | Compacter tensor | shape | formula | phm-nn |
//! |---|---|---|---|
//! | `W_left`, `W_right` | `(n, in/n, r)`, `(n, r, out/n)` | `W'_i = W_left_i W_right_i` | `S_i = W'_iᵀ = U_i V_iᵀ`: `U_i = W_right_iᵀ`, `V_i = W_left_i` |
//! | `phm_rule_left`, `phm_rule_right` | `(n, n, 1)`, `(n, 1, n)` | `A'_i = l_i r_iᵀ` | `A_i = A'_iᵀ = r_i l_iᵀ = a_i b_iᵀ`: `a_i = r_i`, `b_i = l_i` |
//! | `phm_rule` (not factorized) | `(n, n, n)` | | `A_i = A'_iᵀ` | A state dict here is a map from
//! tensor names to arrays, e.g. read from a safetensors file; a [`NameMap`] renames the
//! upstream names when a checkpoint uses others (a prefix such as `"adapter.down."`, or
//! different names altogether).
//!
//! ```
//! use phm_nn::io::layouts::{export_phm, import_phm, Layout, NameMap};
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

use ndarray::{Array1, Array3, ArrayD, Axis, Ix1, Ix3};

use crate::error::{PhmError, Result};
use crate::module::Param;
use crate::nn::{LphmLinear, PhmLinear, PhmRules};
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

/// Imports a Compacter / AdapterHub low-rank PHM layer (`W_left`, `W_right`, `b`, and either
/// `phm_rule` or `phm_rule_left` + `phm_rule_right`) as an [`LphmLinear`]; see the table in
/// the [module docs](self) for the transposes. Values are copied exactly.
///
/// # Errors
/// [`PhmError::InvalidArgument`] naming the tensor if one is missing or has the wrong rank or
/// shape; the layer's own shape errors if the tensors do not fit together.
pub fn import_lphm<F: Float>(dict: &StateDict<F>, names: &NameMap) -> Result<LphmLinear<F>> {
    let r3 = |name: &str| -> Result<Array3<F>> {
        let n = names.resolve(name);
        rank::<F, Ix3>(&n, get(dict, &n)?, "3-D")
    };
    let t = |a: Array3<F>| a.permuted_axes([0, 2, 1]).as_standard_layout().into_owned();
    let (w_left, w_right) = (r3("W_left")?, r3("W_right")?);
    let rules = if dict.contains_key(&names.resolve("phm_rule")) {
        PhmRules::full(Param::new(t(r3("phm_rule")?).into_dyn()))?
    } else {
        let (left, right) = (r3("phm_rule_left")?, r3("phm_rule_right")?);
        let n = left.len_of(Axis(0));
        let bad = |name: &str, got: &[usize], want: [usize; 3]| PhmError::InvalidArgument {
            what: "state dict",
            reason: format!(
                "tensor `{}` has shape {got:?}, expected {want:?}",
                names.resolve(name)
            ),
        };
        if left.shape() != [n, n, 1] {
            return Err(bad("phm_rule_left", left.shape(), [n, n, 1]));
        }
        if right.shape() != [n, 1, n] {
            return Err(bad("phm_rule_right", right.shape(), [n, 1, n]));
        }
        // a_i = r_i (rows of phm_rule_right), b_i = l_i (columns of phm_rule_left).
        let a = right.index_axis(Axis(1), 0).to_owned();
        let b = left.index_axis(Axis(2), 0).to_owned();
        PhmRules::factorized(Param::new(a.into_dyn()), Param::new(b.into_dyn()))?
    };
    let bias = match dict.get(&names.resolve("b")) {
        Some(b) => Some(Param::new(
            rank::<F, Ix1>(&names.resolve("b"), b, "(out)")?.into_dyn(),
        )),
        None => None,
    };
    LphmLinear::from_params(
        &rules,
        Param::new(t(w_right).into_dyn()),
        Param::new(w_left.into_dyn()),
        bias,
    )
}

/// Exports an [`LphmLinear`] in the Compacter / AdapterHub layout: the inverse of
/// [`import_lphm`], bit for bit (`phm_rule` for full rules, `phm_rule_left` +
/// `phm_rule_right` for factorized ones).
pub fn export_lphm<F: Float>(layer: &LphmLinear<F>, names: &NameMap) -> StateDict<F> {
    let t = |a: Array3<F>| a.permuted_axes([0, 2, 1]).as_standard_layout().into_owned();
    let dim3 = |p: &Param<F>| {
        p.value()
            .into_dimensionality::<Ix3>()
            .expect("U and V are 3-D")
    };
    let mut dict = StateDict::new();
    match layer.rules().factors() {
        Some((a, b)) => {
            dict.insert(
                names.resolve("phm_rule_left"),
                b.insert_axis(Axis(2)).into_dyn(),
            );
            dict.insert(
                names.resolve("phm_rule_right"),
                a.insert_axis(Axis(1)).into_dyn(),
            );
        }
        None => {
            dict.insert(
                names.resolve("phm_rule"),
                t(layer.rules().matrices()).into_dyn(),
            );
        }
    }
    dict.insert(names.resolve("W_left"), dim3(layer.v_param()).into_dyn());
    dict.insert(
        names.resolve("W_right"),
        t(dim3(layer.u_param())).into_dyn(),
    );
    if let Some(b) = layer.bias_param() {
        dict.insert(names.resolve("b"), b.value());
    }
    dict
}
