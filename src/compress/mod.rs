//! Dense → PHM compression: the best sum of Kronecker products approximating a dense weight
//! (Van Loan & Pitsianis, 1993).
//!
//! For a `k × d` weight `W` and dimension `n`, Van Loan's rearrangement `R(W)` (see
//! [`rearrange`]) turns every sum of Kronecker products into a low-rank matrix:
//!
//! ```text
//!     W = Σ_{i=1..t} A_i ⊗ S_i      ⇔      R(W) = Σ_{i=1..t} vec(A_i) vec(S_i)ᵀ
//!     ‖W − Σ A_i ⊗ S_i‖_F = ‖R(W) − Σ vec(A_i) vec(S_i)ᵀ‖_F
//! ```
//!
//! so the best `t`-term approximation in Frobenius norm is the truncated SVD of `R(W)`
//! (Eckart–Young): with `R(W) = Σ_j σ_j u_j v_jᵀ`, take `A_i = √σ_i·u_i` and `S_i = √σ_i·v_i`
//! (the scale balanced between the two), and the relative error is
//! `√(Σ_{j>t} σ_j²) / ‖W‖_F`. With `t = n` the result is a [`PhmLinear`] layer
//! ([`from_dense`]); more terms (`t ≤ n²`, [`kronecker_approx`]) trade parameters for accuracy.
//!
//! `R(W)` has only `n²` rows, so the factors come from the `n² × n²` matrix `R Rᵀ`: its
//! eigenvectors are the `u_j` ([`symmetric_eigen`], Jacobi), and one product gives
//! `Rᵀ u_j = σ_j v_j`, with `σ_j` taken as the norm of that product (not the square root of an
//! eigenvalue, which would lose the small `σ_j` to rounding). `W` is scaled by its largest
//! entry first, so tiny and huge weights work alike. The reported error is measured on the
//! rebuilt weight, not inferred from the eigenvalues.
//!
//! ```
//! use phm_nn::compress::from_dense;
//! use phm_nn::prelude::*;
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! // A weight that IS a PHM weight (n = 4) is recovered exactly.
//! let phm = PhmLinearConfig::new(16, 8, 4).init::<f64, _>(&mut rng)?;
//! let dense = Linear::from_parts(phm.weight(), phm.bias())?;
//! let (compressed, error) = from_dense(&dense, 4)?;
//! assert!(error < 1e-12);
//! assert!((compressed.weight() - phm.weight()).iter().all(|e| e.abs() < 1e-12));
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{Array1, Array2, Array3, ArrayView2, Axis};

use std::collections::BTreeSet;

use crate::error::{PhmError, Result};
use crate::io::layouts::StateDict;
use crate::kernels::phm::{rearrange, PhmShape};
use crate::linalg::symmetric_eigen;
use crate::nn::{Linear, PhmLinear};
use crate::Float;

mod file;
pub use file::compress_file;

/// A sum of `t` Kronecker products `Σ_{i=1..t} A_i ⊗ S_i` fitted to a dense weight by
/// [`kronecker_approx`].
#[derive(Debug, Clone, PartialEq)]
pub struct KroneckerSum<F> {
    /// The factors `A_i`, shape `(t, n, n)`.
    pub rules: Array3<F>,
    /// The factors `S_i`, shape `(t, k/n, d/n)`.
    pub blocks: Array3<F>,
    /// The singular values of `R(W)`, all `min(n², k·d/n²)` of them, descending.
    pub singular_values: Vec<f64>,
    /// `‖W − Σ A_i ⊗ S_i‖_F / ‖W‖_F` (0 for a zero `W`).
    pub relative_error: f64,
}

impl<F: Float> KroneckerSum<F> {
    /// The weight `Σ_i A_i ⊗ S_i`, shape `(k, d)`.
    pub fn weight(&self) -> Array2<F> {
        let (t, n, _) = self.rules.dim();
        let (_, p, q) = self.blocks.dim();
        let mut w = Array2::zeros((n * p, n * q));
        for i in 0..t {
            let a = self.rules.index_axis(Axis(0), i);
            let s = self.blocks.index_axis(Axis(0), i);
            w += &ndarray::linalg::kron(&a, &s);
        }
        w
    }

    /// Number of weights `t·(n² + k·d/n²)`.
    pub fn num_parameters(&self) -> usize {
        self.rules.len() + self.blocks.len()
    }
}

/// The best approximation in Frobenius norm of `w` `(k, d)` by `terms` Kronecker products
/// `A_i ⊗ S_i` with `A_i` `n × n` (see the [module docs](self)).
///
/// # Errors
/// - [`PhmError::ZeroN`], [`PhmError::ZeroSize`], [`PhmError::NotDivisible`] if `n` does not
///   divide both sizes;
/// - [`PhmError::InvalidArgument`] if `terms` is 0 or more than `n²`, or `w` holds NaN or
///   infinity. (Terms beyond the rank of `R(W)`, at most `min(n², k·d/n²)`, come out zero.)
pub fn kronecker_approx<F: Float>(
    w: ArrayView2<'_, F>,
    n: usize,
    terms: usize,
) -> Result<KroneckerSum<F>> {
    let (k, d) = w.dim();
    let shape = PhmShape::new(d, k, n)?;
    let (_, p, q) = shape.blocks_dim();
    let max_terms = (n * n).min(p * q);
    if terms == 0 || terms > n * n {
        return Err(PhmError::InvalidArgument {
            what: "terms",
            reason: format!("terms must be between 1 and n² = {}, got {terms}", n * n),
        });
    }
    if !w.iter().all(|v| v.is_finite()) {
        return Err(PhmError::InvalidArgument {
            what: "weight",
            reason: "the weight holds NaN or infinity".to_string(),
        });
    }
    // Work in f64 on W scaled to max |W| = 1.
    let scale = w.iter().fold(0.0f64, |m, v| m.max(v.as_f64().abs()));
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    let w64 = w.mapv(|v| v.as_f64() * inv);
    let r = rearrange(w64.view(), n)?; // (n², p·q)
    let (_, u) = symmetric_eigen(&r.dot(&r.t()));
    // σ_j v_j = Rᵀ u_j for every eigenvector, σ_j its norm; sort by σ (descending).
    let mut pairs: Vec<(f64, Array1<f64>, Array1<f64>)> = (0..n * n)
        .map(|j| {
            let uj = u.column(j).to_owned();
            let sv = r.t().dot(&uj);
            (sv.dot(&sv).sqrt(), uj, sv)
        })
        .collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut rules = Array3::zeros((terms, n, n));
    let mut blocks = Array3::zeros((terms, p, q));
    let mut approx = Array2::<f64>::zeros((n * n, p * q));
    for (i, (sigma, uj, sv)) in pairs.iter().take(terms).enumerate() {
        if *sigma == 0.0 {
            continue; // a zero term: A_i = S_i = 0
        }
        // A_i = √σ u, S_i = √σ v = (σ v)/√σ, then undo the scaling of W on both equally.
        let root = sigma.sqrt();
        let a = uj * (root * scale.sqrt());
        let s = sv * (scale.sqrt() / root);
        approx += &(uj
            .view()
            .insert_axis(Axis(1))
            .dot(&sv.view().insert_axis(Axis(0))));
        rules.index_axis_mut(Axis(0), i).assign(
            &a.mapv(F::of)
                .into_shape_with_order((n, n))
                .expect("n² entries"),
        );
        blocks.index_axis_mut(Axis(0), i).assign(
            &s.mapv(F::of)
                .into_shape_with_order((p, q))
                .expect("p·q entries"),
        );
    }
    let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
    let residual = (&r - &approx).iter().map(|v| v * v).sum::<f64>().sqrt();
    let relative_error = if norm > 0.0 { residual / norm } else { 0.0 };
    let singular_values = pairs
        .iter()
        .take(max_terms)
        .map(|(s, _, _)| s * scale)
        .collect();
    Ok(KroneckerSum {
        rules,
        blocks,
        singular_values,
        relative_error,
    })
}

/// Compresses a dense layer into the PHM layer of dimension `n` whose weight is closest in
/// Frobenius norm ([`kronecker_approx`] with `n` terms); the bias is carried over unchanged.
/// Returns the layer and the relative weight error `‖W − Ŵ‖_F / ‖W‖_F`.
///
/// # Errors
/// As [`kronecker_approx`].
pub fn from_dense<F: Float>(layer: &Linear<F>, n: usize) -> Result<(PhmLinear<F>, f64)> {
    let fit = kronecker_approx(layer.weight().view(), n, n)?;
    let phm = PhmLinear::from_parts(fit.rules, fit.blocks, layer.bias())?;
    Ok((phm, fit.relative_error))
}

/// What [`compress_state_dict`] did to one linear layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// The layer's name (the prefix of its `.weight`).
    pub name: String,
    /// `(out, in)`.
    pub shape: (usize, usize),
    /// Weights of the dense layer, `out·in` (bias excluded).
    pub dense_parameters: usize,
    /// Weights of the PHM layer, `n³ + out·in/n`, if it was compressed.
    pub phm_parameters: Option<usize>,
    /// The relative weight error, if it was compressed.
    pub relative_error: Option<f64>,
    /// Why it was kept dense, if it was.
    pub kept: Option<String>,
}

/// Compresses the linear layers of a PyTorch-style state dict: every 2-D `<name>.weight`
/// `(out, in)` with its `<name>.bias` `(out)` whose sizes `n` divides and whose PHM form is
/// smaller becomes `<name>.rules` and `<name>.blocks` (the names [`PhmLinear`] uses; the bias
/// stays), by [`from_dense`]. Other tensors are copied. The result loads with
/// [`crate::io::load_model`] into a model whose layers at those paths are PHM layers.
///
/// A state dict does not say which layer a tensor belongs to, and an embedding table
/// `(vocab, width)` is a 2-D `<name>.weight` too. So without `only`, a 2-D weight with no
/// bias of length `out` is **kept** (its report says why): it may be an embedding, and
/// compressing a lookup table as a product would silently change the model. `only` names the
/// layers to consider, and a named layer is compressed with or without a bias.
///
/// # Errors
/// - [`PhmError::ZeroN`] for `n = 0`;
/// - [`PhmError::InvalidArgument`] if a name in `only` has no 2-D weight, or if the dict
///   already holds a `<name>.rules` or `<name>.blocks` that compressing `<name>` would
///   overwrite (the message names it);
/// - errors of [`from_dense`] (e.g. a non-finite weight).
pub fn compress_state_dict<F: Float>(
    dict: &StateDict<F>,
    n: usize,
    only: Option<&BTreeSet<String>>,
) -> Result<(StateDict<F>, Vec<LayerReport>)> {
    if n == 0 {
        return Err(PhmError::ZeroN);
    }
    let layers: BTreeSet<String> = dict
        .iter()
        .filter(|(_, v)| v.ndim() == 2)
        .filter_map(|(k, _)| k.strip_suffix(".weight").map(str::to_string))
        .collect();
    if let Some(missing) = only.and_then(|o| o.iter().find(|k| !layers.contains(*k))) {
        return Err(PhmError::InvalidArgument {
            what: "layers",
            reason: format!("`{missing}` has no 2-D `{missing}.weight` in the state dict"),
        });
    }
    let mut out = dict.clone();
    let mut reports = Vec::new();
    for name in layers
        .iter()
        .filter(|k| only.is_none_or(|o| o.contains(*k)))
    {
        let w: Array2<F> = dict[&format!("{name}.weight")]
            .clone()
            .into_dimensionality()
            .expect("filtered to 2-D");
        let (k, d) = w.dim();
        let mut report = LayerReport {
            name: name.clone(),
            shape: (k, d),
            dense_parameters: k * d,
            phm_parameters: None,
            relative_error: None,
            kept: None,
        };
        let bias = match dict.get(&format!("{name}.bias")) {
            Some(b) if b.shape() == [k] => Some(b.clone().into_dimensionality().expect("1-D")),
            _ => None,
        };
        if bias.is_none() && only.is_none() {
            report.kept = Some(format!(
                "no `{name}.bias` of length {k}: may be an embedding table (name it in the \
                 layers to compress it)"
            ));
        } else if k % n != 0 || d % n != 0 {
            report.kept = Some(format!("n = {n} does not divide {k}×{d}"));
        } else if let Some(p) = n
            .checked_pow(3)
            .and_then(|c| c.checked_add(k * d / n))
            .filter(|&p| p >= k * d)
        {
            report.kept = Some(format!("PHM ({p}) is not smaller"));
        } else if n.checked_pow(3).is_none() {
            report.kept = Some(format!("PHM (n³ for n = {n}) is not smaller"));
        } else {
            if let Some(taken) = ["rules", "blocks"]
                .iter()
                .map(|t| format!("{name}.{t}"))
                .find(|t| dict.contains_key(t))
            {
                return Err(PhmError::InvalidArgument {
                    what: "state dict",
                    reason: format!(
                        "compressing `{name}` would overwrite the existing tensor `{taken}`"
                    ),
                });
            }
            let (phm, err) = from_dense(&Linear::from_parts(w, bias)?, n)?;
            out.remove(&format!("{name}.weight"));
            out.insert(format!("{name}.rules"), phm.rules().into_dyn());
            out.insert(format!("{name}.blocks"), phm.blocks().into_dyn());
            report.phm_parameters = Some(phm.shape().num_weight_parameters());
            report.relative_error = Some(err);
        }
        reports.push(report);
    }
    Ok((out, reports))
}
