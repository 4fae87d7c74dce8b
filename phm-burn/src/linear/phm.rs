//! The PHM layer: a dense layer whose weight is a sum of Kronecker products.
//!
//! ```text
//!     Y = X Wᵀ + 1 bᵀ,     W = Σ_{i=1..n} A_i ⊗ S_i
//!     X: (…, d)   A: (n, n, n)   S: (n, k/n, d/n)   W: (k, d)   b: (k)   Y: (…, k)
//! ```
//!
//! phm-nn's `PhmLinear` as a burn module: parameters `rules`, `blocks`, `bias` with phm-nn's
//! shapes and init. `rules` is `None` when the layer uses rules shared by its model
//! ([`PhmLinearConfig::init_shared`], [`PhmLinear::forward_with_rules`], and
//! [`crate::rules`]). Fixed rules are frozen parameters (`fixed_rules`). The product goes the
//! materialized or the factored way by [`PhmPath`] (see [`crate::kernels`]); both are plain
//! burn ops, so autodiff gives `dX`, `dA`, `dS`, `db`.
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::kernels::PhmPath;
//! use phm_burn::linear::PhmLinearConfig;
//! use phm_burn::rules::PhmRulesConfig;
//!
//! let device = Device::default();
//! // Quaternion rules (frozen): 8 → 4.
//! let quat = PhmLinearConfig::new(8, 4, 4).with_fixed_rules(true).init::<f32>(&device)?;
//! assert!(quat.fixed_rules);
//! let y = quat.forward(Tensor::<2>::ones([3, 8], &device));
//! assert_eq!(y.dims(), [3, 4]);
//! // Two layers sharing one rule set, held by the caller:
//! let rules = PhmRulesConfig::new(2).init::<f32>(&device)?;
//! let l1 = PhmLinearConfig::new(8, 6, 2).with_seed(1).init_shared::<f32>(&rules, &device)?;
//! let l2 = PhmLinearConfig::new(6, 4, 2).with_seed(2).init_shared::<f32>(&rules, &device)?;
//! assert!(l1.rules.is_none());
//! let a = rules.matrices();
//! let x = Tensor::<3>::ones([2, 5, 8], &device);
//! let y = l2.forward_with_rules(l1.forward_with_rules(x, Some(&a)), Some(&a));
//! assert_eq!(y.dims(), [2, 5, 4]);
//! // Forcing the factored path:
//! let l3 = PhmLinearConfig::new(8, 4, 2).with_path(PhmPath::Factored).init::<f32>(&device)?;
//! assert_eq!(l3.path, PhmPath::Factored);
//! # Ok::<(), phm_burn::phm_nn::PhmError>(())
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use phm_nn::ndarray::{Ix1, Ix3};
use phm_nn::nn::PhmRules as NativeRules;
use phm_nn::rand::{rngs::StdRng, SeedableRng};
use phm_nn::{Float, PhmError};

use super::{add_bias, array_of, check_dtype, pick_rules};
use crate::bridge::Bridge;
use crate::kernels::{phm_product, PhmPath};
use crate::rules::{param, rule_of, PhmRules};

/// Configuration of a [`PhmLinear`] layer.
#[derive(Config, Debug, PartialEq)]
pub struct PhmLinearConfig {
    /// Input width `d` (a multiple of `n`).
    pub in_features: usize,
    /// Output width `k` (a multiple of `n`).
    pub out_features: usize,
    /// Hypercomplex dimension `n ≥ 1`.
    pub n: usize,
    /// Whether the layer adds a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Fixed rules: those of [`fixed_algebra(n)`](crate::rules::fixed_algebra), frozen.
    #[config(default = false)]
    pub fixed_rules: bool,
    /// Seed of the phm-nn init the parameters are drawn with.
    #[config(default = 0)]
    pub seed: u64,
    /// Which way the product is computed.
    #[config(default = "PhmPath::Auto")]
    pub path: PhmPath,
}

impl PhmLinearConfig {
    fn native(&self) -> phm_nn::PhmLinearConfig {
        phm_nn::PhmLinearConfig::new(self.in_features, self.out_features, self.n)
            .with_bias(self.bias)
            .with_rule(rule_of(self.n, self.fixed_rules))
    }

    /// The layer with its own rules, drawn as phm-nn's `PhmLinearConfig::init` draws it from a
    /// `StdRng` seeded with `seed`, in `F`'s dtype on `device`.
    ///
    /// # Errors
    /// phm-nn's: [`PhmError::ZeroN`], [`PhmError::ZeroSize`], [`PhmError::NotDivisible`]
    /// for sizes that do not fit `n`; [`PhmError::InvalidArgument`] for fixed rules of an
    /// `n` with no algebra.
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<PhmLinear> {
        let native = self
            .native()
            .init::<F, _>(&mut StdRng::seed_from_u64(self.seed))?;
        Ok(PhmLinear::from_native(&native, device)?.with_path(self.path))
    }

    /// A layer **without** rules, for use with `rules` held by its model: blocks and bias
    /// drawn as phm-nn's `init_shared` draws them. Call it with
    /// [`forward_with_rules`](PhmLinear::forward_with_rules). `fixed_rules` is ignored.
    ///
    /// # Errors
    /// As [`init`](Self::init); [`PhmError::InvalidArgument`] if `rules` has another `n` or
    /// is factorized; [`PhmError::CheckpointMismatch`] if its dtype is not `F`'s.
    pub fn init_shared<F: Float>(
        &self,
        rules: &PhmRules,
        device: &Device,
    ) -> phm_nn::Result<PhmLinear> {
        let native_rules = rules.to_native::<F>()?;
        let full = full_rules(&native_rules, self.n)?;
        let native = self
            .native()
            .init_shared::<F, _>(full, &mut StdRng::seed_from_u64(self.seed))?;
        Ok(PhmLinear::from_native_shared(&native, device).with_path(self.path))
    }
}

/// The full `(n, n, n)` handle of `rules`, checked against the layer's `n`.
fn full_rules<F: Float>(rules: &NativeRules<F>, n: usize) -> phm_nn::Result<&phm_nn::Param<F>> {
    if rules.n() != n {
        return Err(PhmError::InvalidArgument {
            what: "shared rules",
            reason: format!("the rules have n = {}, the layer n = {n}", rules.n()),
        });
    }
    rules.full_param().ok_or(PhmError::InvalidArgument {
        what: "shared rules",
        reason: "PhmLinear needs full rules, not factorized ones".into(),
    })
}

/// A PHM layer `Y = X (Σ A_i ⊗ S_i)ᵀ + b`; see the [module docs](self).
#[derive(Module, Debug)]
pub struct PhmLinear {
    /// The rules `(n, n, n)`; `None` when the model holds shared rules.
    pub rules: Option<Param<Tensor<3>>>,
    /// The blocks `(n, k/n, d/n)`.
    pub blocks: Param<Tensor<3>>,
    /// The bias `(k)`, if any.
    pub bias: Option<Param<Tensor<1>>>,
    /// Whether the own rules are fixed (a frozen parameter).
    pub fixed_rules: bool,
    /// Which way the product is computed.
    #[module(skip)]
    pub path: PhmPath,
}

impl PhmLinear {
    /// Sets the way the product is computed.
    #[must_use]
    pub fn with_path(mut self, path: PhmPath) -> Self {
        self.path = path;
        self
    }

    /// The hypercomplex dimension `n`.
    pub fn n(&self) -> usize {
        self.blocks.dims()[0]
    }

    /// `(in, out)` = `(d, k)`.
    pub fn features(&self) -> (usize, usize) {
        let [n, p, q] = self.blocks.dims();
        (n * q, n * p)
    }

    /// `Y = X Wᵀ + b` with the layer's own rules.
    ///
    /// # Shapes
    /// - `x`: `(…, d)`; output `(…, k)`.
    ///
    /// # Panics
    /// If the last axis of `x` is not `d`, or the layer was built with shared rules.
    #[track_caller]
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.forward_with_rules(x, None)
    }

    /// `Y = X Wᵀ + b` with the layer's own rules (`rules = None`) or, for a layer built with
    /// [`init_shared`](PhmLinearConfig::init_shared), the model's `rules` `(n, n, n)` (e.g.
    /// [`PhmRules::matrices`]).
    ///
    /// # Shapes
    /// - `x`: `(…, d)`; `rules`: `(n, n, n)`; output `(…, k)`.
    ///
    /// # Panics
    /// If the last axis of `x` is not `d` or its dtype is not the layer's; if the layer holds rules and `rules` is `Some`, or
    /// holds none and `rules` is `None`; if `rules` is not `(n, n, n)`.
    #[track_caller]
    pub fn forward_with_rules<const D: usize>(
        &self,
        x: Tensor<D>,
        rules: Option<&Tensor<3>>,
    ) -> Tensor<D> {
        check_dtype("PhmLinear::forward", &x, &self.blocks);
        let a = pick_rules(
            "PhmLinear",
            self.rules.as_ref().map(Param::val),
            rules,
            self.n(),
        );
        add_bias(
            phm_product(x, a, self.blocks.val(), self.path),
            self.bias.as_ref(),
        )
    }

    /// The built weight `W = Σ A_i ⊗ S_i` `(k, d)` with the own rules or the given ones.
    ///
    /// # Panics
    /// As [`forward_with_rules`](Self::forward_with_rules).
    #[track_caller]
    pub fn weight(&self, rules: Option<&Tensor<3>>) -> Tensor<2> {
        let a = pick_rules(
            "PhmLinear",
            self.rules.as_ref().map(Param::val),
            rules,
            self.n(),
        );
        crate::kernels::build_weight(a, self.blocks.val())
    }

    /// The layer from a phm-nn layer whose rules its model holds (shared rules): blocks and
    /// bias only, `rules = None`.
    pub fn from_native_shared<F: Float>(native: &phm_nn::PhmLinear<F>, device: &Device) -> Self {
        PhmLinear {
            rules: None,
            blocks: param::<F, 3>(&native.blocks().into_dyn(), false, device),
            bias: native
                .bias()
                .map(|b| param::<F, 1>(&b.into_dyn(), false, device)),
            fixed_rules: false,
            path: PhmPath::Auto,
        }
    }

    /// The phm-nn layer with these blocks and bias and the model's shared `rules` (the phm-nn
    /// layer shares the handle).
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] if `rules` has another `n` or is factorized;
    /// [`PhmError::CheckpointMismatch`] for a dtype that is not `F`'s.
    pub fn to_native_with_rules<F: Float>(
        &self,
        rules: &NativeRules<F>,
    ) -> phm_nn::Result<phm_nn::PhmLinear<F>> {
        let full = full_rules(rules, self.n())?;
        let (blocks, bias) = self.blocks_and_bias::<F>()?;
        phm_nn::PhmLinear::from_params(full.share(), blocks, bias)
    }

    fn blocks_and_bias<F: Float>(
        &self,
    ) -> phm_nn::Result<(phm_nn::Param<F>, Option<phm_nn::Param<F>>)> {
        let blocks = array_of::<F, Ix3, 3>(&self.blocks, "blocks")?;
        let bias = match &self.bias {
            Some(b) => Some(phm_nn::Param::new(
                array_of::<F, Ix1, 1>(b, "bias")?.into_dyn(),
            )),
            None => None,
        };
        Ok((phm_nn::Param::new(blocks.into_dyn()), bias))
    }
}

impl Bridge for PhmLinear {
    type Native<F: Float> = phm_nn::PhmLinear<F>;

    /// # Errors
    /// [`PhmError::CheckpointMismatch`] for a dtype that is not `F`'s;
    /// [`PhmError::InvalidArgument`] for a layer built with shared rules (use
    /// [`to_native_with_rules`](PhmLinear::to_native_with_rules)).
    fn to_native<F: Float>(&self) -> phm_nn::Result<phm_nn::PhmLinear<F>> {
        let rules = self.rules.as_ref().ok_or(PhmError::InvalidArgument {
            what: "rules",
            reason: "the layer uses its model's shared rules: use to_native_with_rules".into(),
        })?;
        let rules = array_of::<F, Ix3, 3>(rules, "rules")?;
        let rules = if self.fixed_rules {
            phm_nn::Param::frozen(rules.into_dyn())
        } else {
            phm_nn::Param::new(rules.into_dyn())
        };
        let (blocks, bias) = self.blocks_and_bias::<F>()?;
        phm_nn::PhmLinear::from_params(rules, blocks, bias)
    }

    /// # Errors
    /// None (every phm-nn `PhmLinear` has a burn twin; its rules become the layer's own).
    fn from_native<F: Float>(
        native: &phm_nn::PhmLinear<F>,
        device: &Device,
    ) -> phm_nn::Result<Self> {
        let fixed = !native.rules_trainable();
        Ok(PhmLinear {
            rules: Some(param::<F, 3>(&native.rules().into_dyn(), fixed, device)),
            fixed_rules: fixed,
            ..PhmLinear::from_native_shared(native, device)
        })
    }
}
