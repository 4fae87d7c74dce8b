//! Rule sets `A` held once by a model and shared by its PHM-family layers.
//!
//! ```text
//!     full:        rules: (n, n, n)                                   n³ parameters
//!     factorized:  A[i, r, c] = rules_left[i, r] · rules_right[i, c]    2·n² parameters
//! ```
//!
//! **Sharing rules in burn.** A `Param` must live in one place of a module tree: an optimizer
//! visits the tree and would update a tensor once per place it appears. So the model that
//! shares rules (phm-nn's `TransformerLm::with_shared_rules`, Compacter's adapters) holds one
//! [`PhmRules`] field, and its projections are built **without** rules
//! ([`PhmLinearConfig::init_shared`](crate::linear::PhmLinearConfig::init_shared),
//! [`Projection::init_shared`](crate::linear::ProjectionConfig::init_shared)): they hold
//! `None` where their rules would be. In its forward pass the model computes
//! `let a = self.rules.matrices();` once and calls `forward_with_rules(x, Some(&a))` on each
//! projection; burn's autodiff sums the gradients of every use into the one parameter.
//! Fixed (algebra) rules are parameters with gradients disabled: never trained, but saved.
//!
//! ```
//! use phm_burn::burn::module::Module;
//! use phm_burn::burn::tensor::{DType, Device};
//! use phm_burn::rules::PhmRulesConfig;
//!
//! let device = Device::default();
//! let rules = PhmRulesConfig::new(4).with_seed(7).init::<f64>(&device)?;
//! assert_eq!((rules.n(), rules.num_params()), (4, 64));
//! let a = rules.matrices();
//! assert_eq!((a.dims(), a.dtype()), ([4, 4, 4], DType::F64));
//! // Quaternion rules, frozen; factorized rules, 2·n² parameters:
//! let quat = PhmRulesConfig::new(4).with_fixed(true).init::<f32>(&device)?;
//! assert!(quat.is_fixed());
//! let fact = PhmRulesConfig::new(4).with_factorized(true).init::<f32>(&device)?;
//! assert_eq!(fact.num_params(), 32);
//! # Ok::<(), phm_burn::phm_nn::PhmError>(())
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use phm_nn::algebra::Algebra;
use phm_nn::nn::PhmRules as NativeRules;
use phm_nn::rand::{rngs::StdRng, SeedableRng};
use phm_nn::{Float, Init, PhmError, Rule};

use crate::bridge::{array_from_tensor, tensor_from_array};
use crate::kernels::factorized_rules;

/// Configuration of a [`PhmRules`] set.
#[derive(Config, Debug, PartialEq)]
pub struct PhmRulesConfig {
    /// Hypercomplex dimension `n ≥ 1`.
    pub n: usize,
    /// Fixed rules: those of the algebra of dimension `n` ([`fixed_algebra`]), frozen.
    #[config(default = false)]
    pub fixed: bool,
    /// Factorized rules `A_i = a_i b_iᵀ` (learned only).
    #[config(default = false)]
    pub factorized: bool,
    /// Seed of the phm-nn init the rules are drawn with.
    #[config(default = 0)]
    pub seed: u64,
}

impl PhmRulesConfig {
    /// The rules, drawn as phm-nn draws them (`PhmRules::new` with `Init::UnitFibers`, or
    /// `PhmRules::new_factorized`) from a `StdRng` seeded with `seed`, in `F`'s dtype.
    ///
    /// # Errors
    /// [`PhmError::ZeroN`] for `n = 0`; [`PhmError::InvalidArgument`] for fixed rules of an
    /// `n` that is not a power of two, or fixed factorized rules.
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<PhmRules> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let native = if self.factorized {
            if self.fixed {
                return Err(PhmError::InvalidArgument {
                    what: "rule",
                    reason: "fixed rules cannot be factorized (they are not rank one)".into(),
                });
            }
            NativeRules::<F>::new_factorized(self.n, None, &mut rng)?
        } else {
            NativeRules::<F>::new(self.n, rule_of(self.n, self.fixed), &mut rng)?
        };
        PhmRules::from_native(&native, device)
    }
}

/// The algebra whose rules a fixed layer of dimension `n` uses: real (1), complex (2),
/// quaternion (4), octonion (8), sedenion (16), else Cayley–Dickson of dimension `n`.
pub fn fixed_algebra(n: usize) -> Algebra {
    match n {
        1 => Algebra::Real,
        2 => Algebra::Complex,
        4 => Algebra::Quaternion,
        8 => Algebra::Octonion,
        16 => Algebra::Sedenion,
        n => Algebra::CayleyDickson(n),
    }
}

/// phm-nn's rule source for a layer of dimension `n`: learned ([`Init::UnitFibers`], phm-nn's
/// default) or fixed to [`fixed_algebra`].
pub fn rule_of(n: usize, fixed: bool) -> Rule {
    if fixed {
        Rule::Fixed(fixed_algebra(n))
    } else {
        Rule::Learned(Init::UnitFibers)
    }
}

/// A rule set `A`, full or factorized, learned or fixed; see the [module docs](self).
///
/// The fields carry phm-nn's parameter names: `rules`, or `rules_left` and `rules_right`.
#[derive(Module, Debug)]
pub struct PhmRules {
    /// Full rules `(n, n, n)` (`None` when factorized).
    pub rules: Option<Param<Tensor<3>>>,
    /// Left factors `(n, n)`, row `i` = `a_i` (factorized rules only).
    pub rules_left: Option<Param<Tensor<2>>>,
    /// Right factors `(n, n)`, row `i` = `b_i` (factorized rules only).
    pub rules_right: Option<Param<Tensor<2>>>,
    /// Whether the rules are fixed (frozen parameters).
    pub fixed: bool,
}

impl PhmRules {
    /// The hypercomplex dimension `n`.
    pub fn n(&self) -> usize {
        match (&self.rules, &self.rules_left) {
            (Some(a), _) => a.dims()[0],
            (None, Some(l)) => l.dims()[0],
            (None, None) => unreachable!("PhmRules holds full or factorized rules"),
        }
    }

    /// Whether the rules are factorized.
    pub fn is_factorized(&self) -> bool {
        self.rules.is_none()
    }

    /// Whether the rules are fixed (frozen).
    pub fn is_fixed(&self) -> bool {
        self.fixed
    }

    /// The rule matrices `A` `(n, n, n)`: the full tensor, or built from the factors
    /// (differentiably). Compute it once per forward pass and hand it to every projection's
    /// `forward_with_rules`.
    pub fn matrices(&self) -> Tensor<3> {
        match (&self.rules, &self.rules_left, &self.rules_right) {
            (Some(a), _, _) => a.val(),
            (None, Some(l), Some(r)) => factorized_rules(l.val(), r.val()),
            _ => unreachable!("PhmRules holds full or factorized rules"),
        }
    }

    /// The phm-nn rule set with the same values (fixed rules frozen).
    ///
    /// # Errors
    /// [`PhmError::CheckpointMismatch`] if a tensor's dtype is not `F`'s.
    pub fn to_native<F: Float>(&self) -> phm_nn::Result<NativeRules<F>> {
        let rules = match (&self.rules, &self.rules_left, &self.rules_right) {
            (Some(a), _, _) => NativeRules::full(phm_nn::Param::new(array_from_tensor::<F, 3>(
                &a.val(),
                "rules",
            )?))?,
            (None, Some(l), Some(r)) => NativeRules::factorized(
                phm_nn::Param::new(array_from_tensor::<F, 2>(&l.val(), "rules_left")?),
                phm_nn::Param::new(array_from_tensor::<F, 2>(&r.val(), "rules_right")?),
            )?,
            _ => unreachable!("PhmRules holds full or factorized rules"),
        };
        if self.fixed {
            rules.set_trainable(false);
        }
        Ok(rules)
    }

    /// The burn rule set with the values of `native`, on `device` in `F`'s dtype; frozen
    /// phm-nn rules become parameters without gradients.
    ///
    /// # Errors
    /// None today (kept fallible like [`Bridge::from_native`](crate::Bridge::from_native)).
    pub fn from_native<F: Float>(native: &NativeRules<F>, device: &Device) -> phm_nn::Result<Self> {
        let fixed = !native.is_trainable();
        Ok(match native.factors() {
            None => PhmRules {
                rules: Some(param(&native.matrices().into_dyn(), fixed, device)),
                rules_left: None,
                rules_right: None,
                fixed,
            },
            Some((l, r)) => PhmRules {
                rules: None,
                rules_left: Some(param(&l.into_dyn(), fixed, device)),
                rules_right: Some(param(&r.into_dyn(), fixed, device)),
                fixed,
            },
        })
    }
}

/// A parameter with the values of `a`, frozen when `frozen`.
pub(crate) fn param<F: Float, const D: usize>(
    a: &phm_nn::ndarray::ArrayD<F>,
    frozen: bool,
    device: &Device,
) -> Param<Tensor<D>> {
    let p = Param::from_tensor(tensor_from_array::<F, D>(a.view(), device));
    if frozen {
        p.set_require_grad(false)
    } else {
        p
    }
}
