//! The low-rank PHM layer (LPHM, Compacter): a PHM layer whose blocks are low-rank products.
//!
//! ```text
//!     Y = X Wᵀ + 1 bᵀ,     W = Σ_{i=1..n} A_i ⊗ (U_i V_iᵀ)
//!     X: (…, d)   A: (n, n, n)   U: (n, k/n, r)   V: (n, d/n, r)   b: (k)   Y: (…, k)
//!     factorized rules:  A[i, r, c] = rules_left[i, r] · rules_right[i, c]
//! ```
//!
//! phm-nn's `LphmLinear` as a burn module: parameters `rules` (or `rules_left` and
//! `rules_right` when factorized), `u`, `v`, `bias`, with phm-nn's shapes and init. All rule
//! fields are `None` when the layer uses rules shared by its model
//! ([`LphmLinearConfig::init_shared`], [`LphmLinear::forward_with_rules`]). The blocks
//! `S = U Vᵀ` (`k·d/n` values, one batched matmul) are built on every call, then the
//! product goes the materialized or the factored way by [`PhmPath`]; the factored path never
//! builds `W`.
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::linear::LphmLinearConfig;
//! let device = Device::default();
//! let layer = LphmLinearConfig::new(16, 8, 4, 2).with_factorized_rules(true).init::<f32>(&device)?;
//! assert!(layer.rules.is_none() && layer.rules_left.is_some());
//! assert_eq!((layer.u.dims(), layer.v.dims()), ([4, 2, 2], [4, 4, 2]));
//! assert_eq!(layer.forward(Tensor::<3>::ones([2, 3, 16], &device)).dims(), [2, 3, 8]);
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
use crate::kernels::{build_weight, factorized_rules, low_rank_blocks, phm_product, PhmPath};
use crate::rules::{param, rule_of, PhmRules};

/// Configuration of an [`LphmLinear`] layer.
#[derive(Config, Debug, PartialEq)]
pub struct LphmLinearConfig {
    /// Input width `d` (a multiple of `n`).
    pub in_features: usize,
    /// Output width `k` (a multiple of `n`).
    pub out_features: usize,
    /// Hypercomplex dimension `n ≥ 1`.
    pub n: usize,
    /// Rank `r ≥ 1` of every block.
    pub rank: usize,
    /// Whether the layer adds a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Fixed rules: those of [`fixed_algebra(n)`](crate::rules::fixed_algebra), frozen.
    #[config(default = false)]
    pub fixed_rules: bool,
    /// Factorized rules `A_i = a_i b_iᵀ` (learned only).
    #[config(default = false)]
    pub factorized_rules: bool,
    /// Seed of the phm-nn init the parameters are drawn with.
    #[config(default = 0)]
    pub seed: u64,
    /// Which way the product is computed.
    #[config(default = "PhmPath::Auto")]
    pub path: PhmPath,
}

impl LphmLinearConfig {
    fn native(&self) -> phm_nn::LphmLinearConfig {
        phm_nn::LphmLinearConfig::new(self.in_features, self.out_features, self.n, self.rank)
            .with_bias(self.bias)
            .with_rule(rule_of(self.n, self.fixed_rules))
            .with_factorized_rules(self.factorized_rules)
    }

    /// The layer with its own rules, drawn as phm-nn's `LphmLinearConfig::init` draws it from
    /// a `StdRng` seeded with `seed`, in `F`'s dtype on `device`.
    ///
    /// # Errors
    /// phm-nn's: [`PhmError::ZeroN`], [`PhmError::ZeroSize`] (also `rank = 0`),
    /// [`PhmError::NotDivisible`]; [`PhmError::InvalidArgument`] for fixed rules of an `n`
    /// with no algebra, or fixed factorized rules.
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<LphmLinear> {
        let native = self
            .native()
            .init::<F, _>(&mut StdRng::seed_from_u64(self.seed))?;
        Ok(LphmLinear::from_native(&native, device)?.with_path(self.path))
    }

    /// A layer **without** rules, for use with `rules` (full or factorized) held by its
    /// model: `U`, `V` and bias drawn as phm-nn's `init_shared` draws them. Call it with
    /// [`forward_with_rules`](LphmLinear::forward_with_rules).
    ///
    /// # Errors
    /// As [`init`](Self::init); [`PhmError::InvalidArgument`] if `rules` has another `n`;
    /// [`PhmError::CheckpointMismatch`] if its dtype is not `F`'s.
    pub fn init_shared<F: Float>(
        &self,
        rules: &PhmRules,
        device: &Device,
    ) -> phm_nn::Result<LphmLinear> {
        let native = self.native().init_shared::<F, _>(
            &rules.to_native::<F>()?,
            &mut StdRng::seed_from_u64(self.seed),
        )?;
        Ok(LphmLinear::from_native_shared(&native, device).with_path(self.path))
    }
}

/// A low-rank PHM layer `Y = X (Σ A_i ⊗ U_i V_iᵀ)ᵀ + b`; see the [module docs](self).
#[derive(Module, Debug)]
pub struct LphmLinear {
    /// Full rules `(n, n, n)` (`None` when factorized or shared).
    pub rules: Option<Param<Tensor<3>>>,
    /// Left rule factors `(n, n)` (factorized own rules only).
    pub rules_left: Option<Param<Tensor<2>>>,
    /// Right rule factors `(n, n)` (factorized own rules only).
    pub rules_right: Option<Param<Tensor<2>>>,
    /// `U` `(n, k/n, r)`.
    pub u: Param<Tensor<3>>,
    /// `V` `(n, d/n, r)`.
    pub v: Param<Tensor<3>>,
    /// The bias `(k)`, if any.
    pub bias: Option<Param<Tensor<1>>>,
    /// Whether the own rules are fixed (frozen parameters).
    pub fixed_rules: bool,
    /// Which way the product is computed.
    #[module(skip)]
    pub path: PhmPath,
}

impl LphmLinear {
    /// Sets the way the product is computed.
    #[must_use]
    pub fn with_path(mut self, path: PhmPath) -> Self {
        self.path = path;
        self
    }

    /// The hypercomplex dimension `n`.
    pub fn n(&self) -> usize {
        self.u.dims()[0]
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.u.dims()[2]
    }

    /// `(in, out)` = `(d, k)`.
    pub fn features(&self) -> (usize, usize) {
        let ([n, p, _], [_, q, _]) = (self.u.dims(), self.v.dims());
        (n * q, n * p)
    }

    /// Whether the layer holds rules of its own (else it takes its model's).
    pub fn has_own_rules(&self) -> bool {
        self.rules.is_some() || self.rules_left.is_some()
    }

    fn own_rules(&self) -> Option<Tensor<3>> {
        match (&self.rules, &self.rules_left, &self.rules_right) {
            (Some(a), _, _) => Some(a.val()),
            (None, Some(l), Some(r)) => Some(factorized_rules(l.val(), r.val())),
            _ => None,
        }
    }

    /// The blocks `S_i = U_i V_iᵀ`, `(n, k/n, d/n)`.
    pub fn blocks(&self) -> Tensor<3> {
        low_rank_blocks(self.u.val(), self.v.val())
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
    /// [`init_shared`](LphmLinearConfig::init_shared), the model's rule matrices `(n, n, n)`
    /// ([`PhmRules::matrices`], also for factorized rules).
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
        check_dtype("LphmLinear::forward", &x, &self.u);
        let a = pick_rules("LphmLinear", self.own_rules(), rules, self.n());
        add_bias(
            phm_product(x, a, self.blocks(), self.path),
            self.bias.as_ref(),
        )
    }

    /// The built weight `W` `(k, d)` with the own rules or the given ones.
    ///
    /// # Panics
    /// As [`forward_with_rules`](Self::forward_with_rules).
    #[track_caller]
    pub fn weight(&self, rules: Option<&Tensor<3>>) -> Tensor<2> {
        let a = pick_rules("LphmLinear", self.own_rules(), rules, self.n());
        build_weight(a, self.blocks())
    }

    /// The layer from a phm-nn layer whose rules its model holds: `U`, `V` and bias only.
    pub fn from_native_shared<F: Float>(native: &phm_nn::LphmLinear<F>, device: &Device) -> Self {
        LphmLinear {
            rules: None,
            rules_left: None,
            rules_right: None,
            u: param::<F, 3>(&native.u_param().value(), false, device),
            v: param::<F, 3>(&native.v_param().value(), false, device),
            bias: native
                .bias()
                .map(|b| param::<F, 1>(&b.into_dyn(), false, device)),
            fixed_rules: false,
            path: PhmPath::Auto,
        }
    }

    /// The phm-nn layer with these factors and bias and the model's shared `rules` (the
    /// phm-nn layer shares the handles).
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`] if `rules` has another `n`;
    /// [`PhmError::CheckpointMismatch`] for a dtype that is not `F`'s.
    pub fn to_native_with_rules<F: Float>(
        &self,
        rules: &NativeRules<F>,
    ) -> phm_nn::Result<phm_nn::LphmLinear<F>> {
        let u = array_of::<F, Ix3, 3>(&self.u, "u")?;
        let v = array_of::<F, Ix3, 3>(&self.v, "v")?;
        let bias = match &self.bias {
            Some(b) => Some(phm_nn::Param::new(
                array_of::<F, Ix1, 1>(b, "bias")?.into_dyn(),
            )),
            None => None,
        };
        phm_nn::LphmLinear::from_params(
            rules,
            phm_nn::Param::new(u.into_dyn()),
            phm_nn::Param::new(v.into_dyn()),
            bias,
        )
    }
}

impl Bridge for LphmLinear {
    type Native<F: Float> = phm_nn::LphmLinear<F>;

    /// # Errors
    /// [`PhmError::CheckpointMismatch`] for a dtype that is not `F`'s;
    /// [`PhmError::InvalidArgument`] for a layer built with shared rules (use
    /// [`to_native_with_rules`](LphmLinear::to_native_with_rules)).
    fn to_native<F: Float>(&self) -> phm_nn::Result<phm_nn::LphmLinear<F>> {
        if !self.has_own_rules() {
            return Err(PhmError::InvalidArgument {
                what: "rules",
                reason: "the layer uses its model's shared rules: use to_native_with_rules".into(),
            });
        }
        let own = PhmRules {
            rules: self.rules.clone(),
            rules_left: self.rules_left.clone(),
            rules_right: self.rules_right.clone(),
            fixed: self.fixed_rules,
        };
        self.to_native_with_rules(&own.to_native::<F>()?)
    }

    /// # Errors
    /// None (every phm-nn `LphmLinear` has a burn twin; its rules become the layer's own).
    fn from_native<F: Float>(
        native: &phm_nn::LphmLinear<F>,
        device: &Device,
    ) -> phm_nn::Result<Self> {
        let rules = PhmRules::from_native(native.rules(), device)?;
        Ok(LphmLinear {
            rules: rules.rules,
            rules_left: rules.rules_left,
            rules_right: rules.rules_right,
            fixed_rules: rules.fixed,
            ..LphmLinear::from_native_shared(native, device)
        })
    }
}
