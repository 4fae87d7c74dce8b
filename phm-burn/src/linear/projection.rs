//! The linear maps of a model: dense, PHM or low-rank PHM, chosen once by a
//! [`ProjectionConfig`] (phm-nn's `nn::Projection`).
//!
//! ```text
//!     Dense:          W ∈ ℝ^{k×d}                               k·d + k parameters
//!     Phm { n }:      W = Σ_i A_i ⊗ S_i                         n³ + k·d/n + k
//!     LowRankPhm:     W = Σ_i A_i ⊗ (U_i V_iᵀ), rank r          n³ + r·(k + d) + k
//! ```
//!
//! A [`Projection`] is a burn module enum over [`Linear`], [`PhmLinear`] and [`LphmLinear`].
//! With shared rules the model holds one [`PhmRules`] (from
//! [`ProjectionConfig::new_rules`]), builds every projection with
//! [`ProjectionConfig::init_shared`], and calls
//! [`forward_with_rules(x, Some(&rules.matrices()))`](Projection::forward_with_rules); a
//! dense projection ignores the rules. [`Projection::to_native`] and
//! [`Projection::from_native`] convert to and from the boxed phm-nn layer
//! (`Box<dyn phm_nn::Module<F>>`) that phm-nn's `Projection::build` returns.
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::linear::ProjectionConfig;
//! let device = Device::default();
//! let kind = ProjectionConfig::phm(4);
//! let rules = kind.new_rules::<f32>(0, &device)?.expect("PHM has rules");
//! let q = kind.init_shared::<f32>(64, 64, Some(&rules), 1, &device)?;
//! let k = kind.init_shared::<f32>(64, 64, Some(&rules), 2, &device)?;
//! let a = rules.matrices();
//! let x = Tensor::<3>::ones([2, 5, 64], &device);
//! assert_eq!(q.forward_with_rules(x.clone(), Some(&a)).dims(), [2, 5, 64]);
//! // The phm-nn twin, sharing the model's phm-nn rules:
//! let native_rules = rules.to_native::<f32>()?;
//! let q_native = q.to_native::<f32>(Some(&native_rules))?;
//! assert_eq!(q_native.num_parameters(), 64 + 64 * 64 / 4 + 64);
//! # Ok::<(), phm_burn::phm_nn::PhmError>(())
//! ```

use std::any::Any;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use phm_nn::nn::PhmRules as NativeRules;
use phm_nn::{Float, PhmError};

use super::{Linear, LinearConfig, LphmLinear, LphmLinearConfig, PhmLinear, PhmLinearConfig};
use crate::bridge::Bridge;
use crate::kernels::PhmPath;
use crate::rules::{PhmRules, PhmRulesConfig};

/// Which linear map every projection of a model is; phm-nn's `nn::Projection`.
#[derive(Config, Debug, Copy, PartialEq)]
pub enum ProjectionConfig {
    /// A dense [`Linear`] layer.
    Dense,
    /// A [`PhmLinear`] layer of dimension `n`.
    Phm {
        /// Hypercomplex dimension `n ≥ 1`.
        n: usize,
        /// Fixed (algebra) rules instead of learned ones.
        fixed: bool,
    },
    /// A low-rank [`LphmLinear`] layer (Compacter): blocks `S_i = U_i V_iᵀ`.
    LowRankPhm {
        /// Hypercomplex dimension `n ≥ 1`.
        n: usize,
        /// Rank `r ≥ 1` of each block.
        rank: usize,
        /// Fixed (algebra) rules instead of learned ones.
        fixed: bool,
    },
}

impl ProjectionConfig {
    /// PHM projections of dimension `n` with learned rules.
    pub fn phm(n: usize) -> Self {
        ProjectionConfig::Phm { n, fixed: false }
    }

    /// Low-rank PHM projections of dimension `n` and rank `rank`, learned rules.
    pub fn low_rank(n: usize, rank: usize) -> Self {
        ProjectionConfig::LowRankPhm {
            n,
            rank,
            fixed: false,
        }
    }

    /// The hypercomplex dimension (`1` for dense).
    pub fn n(&self) -> usize {
        match *self {
            ProjectionConfig::Dense => 1,
            ProjectionConfig::Phm { n, .. } | ProjectionConfig::LowRankPhm { n, .. } => n,
        }
    }

    /// The phm-nn choice with the same meaning (learned rules with phm-nn's default init).
    pub fn to_native(&self) -> phm_nn::nn::Projection {
        match *self {
            ProjectionConfig::Dense => phm_nn::nn::Projection::Dense,
            ProjectionConfig::Phm { n, fixed } => phm_nn::nn::Projection::Phm {
                n,
                rule: crate::rules::rule_of(n, fixed),
            },
            ProjectionConfig::LowRankPhm { n, rank, fixed } => phm_nn::nn::Projection::LowRankPhm {
                n,
                rank,
                rule: crate::rules::rule_of(n, fixed),
            },
        }
    }

    /// New full rules for this kind, to share between projections (`None` for dense), drawn
    /// from a `StdRng` seeded with `seed` as phm-nn's `Projection::new_rules` draws them.
    ///
    /// # Errors
    /// As [`PhmRulesConfig::init`].
    pub fn new_rules<F: Float>(
        &self,
        seed: u64,
        device: &Device,
    ) -> phm_nn::Result<Option<PhmRules>> {
        match *self {
            ProjectionConfig::Dense => Ok(None),
            ProjectionConfig::Phm { n, fixed } | ProjectionConfig::LowRankPhm { n, fixed, .. } => {
                PhmRulesConfig::new(n)
                    .with_fixed(fixed)
                    .with_seed(seed)
                    .init::<F>(device)
                    .map(Some)
            }
        }
    }

    /// One `in_features → out_features` projection with a bias and its own rules, drawn from a
    /// `StdRng` seeded with `seed` as phm-nn's `Projection::build` draws it.
    ///
    /// # Errors
    /// The layer config's ([`PhmError::NotDivisible`] for a width that is not a multiple of
    /// `n`, …).
    pub fn init<F: Float>(
        &self,
        in_features: usize,
        out_features: usize,
        seed: u64,
        device: &Device,
    ) -> phm_nn::Result<Projection> {
        self.init_shared::<F>(in_features, out_features, None, seed, device)
    }

    /// As [`init`](Self::init); with `shared`, a PHM-family projection is built **without**
    /// rules (the model holds `shared` and passes its matrices to
    /// [`Projection::forward_with_rules`]). A dense projection ignores `shared`.
    ///
    /// # Errors
    /// As [`init`](Self::init); [`PhmError::InvalidArgument`] if `shared` has another `n`, or
    /// is factorized for a PHM projection.
    pub fn init_shared<F: Float>(
        &self,
        in_features: usize,
        out_features: usize,
        shared: Option<&PhmRules>,
        seed: u64,
        device: &Device,
    ) -> phm_nn::Result<Projection> {
        Ok(match (*self, shared) {
            (ProjectionConfig::Dense, _) => Projection::Dense(
                LinearConfig::new(in_features, out_features)
                    .with_seed(seed)
                    .init::<F>(device)?,
            ),
            (ProjectionConfig::Phm { n, fixed }, shared) => {
                let config = PhmLinearConfig::new(in_features, out_features, n)
                    .with_fixed_rules(fixed)
                    .with_seed(seed);
                Projection::Phm(match shared {
                    None => config.init::<F>(device)?,
                    Some(rules) => config.init_shared::<F>(rules, device)?,
                })
            }
            (ProjectionConfig::LowRankPhm { n, rank, fixed }, shared) => {
                let config = LphmLinearConfig::new(in_features, out_features, n, rank)
                    .with_fixed_rules(fixed)
                    .with_seed(seed);
                Projection::LowRankPhm(match shared {
                    None => config.init::<F>(device)?,
                    Some(rules) => {
                        if rules.n() != n {
                            return Err(PhmError::InvalidArgument {
                                what: "shared rules",
                                reason: format!(
                                    "the rules have n = {}, the projections n = {n}",
                                    rules.n()
                                ),
                            });
                        }
                        config.init_shared::<F>(rules, device)?
                    }
                })
            }
        })
    }
}

/// One projection: dense, PHM or low-rank PHM; see the [module docs](self).
// Held by value in models and built once: the size difference costs nothing per call.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Projection {
    /// A dense layer.
    Dense(Linear),
    /// A PHM layer.
    Phm(PhmLinear),
    /// A low-rank PHM layer.
    LowRankPhm(LphmLinear),
}

impl Projection {
    /// `(in, out)` = `(d, k)`.
    pub fn features(&self) -> (usize, usize) {
        match self {
            Projection::Dense(l) => {
                let [k, d] = l.weight.dims();
                (d, k)
            }
            Projection::Phm(l) => l.features(),
            Projection::LowRankPhm(l) => l.features(),
        }
    }

    /// Sets the way a PHM-family projection computes its product (no effect on dense).
    #[must_use]
    pub fn with_path(self, path: PhmPath) -> Self {
        match self {
            Projection::Phm(l) => Projection::Phm(l.with_path(path)),
            Projection::LowRankPhm(l) => Projection::LowRankPhm(l.with_path(path)),
            dense => dense,
        }
    }

    /// Whether the projection needs its model's rules in
    /// [`forward_with_rules`](Self::forward_with_rules) (a PHM-family layer built with shared
    /// rules).
    pub fn uses_shared_rules(&self) -> bool {
        match self {
            Projection::Dense(_) => false,
            Projection::Phm(l) => l.rules.is_none(),
            Projection::LowRankPhm(l) => !l.has_own_rules(),
        }
    }

    /// `Y = X Wᵀ + b` on the last axis, with the layer's own rules.
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

    /// `Y = X Wᵀ + b` on the last axis. `rules` are the model's shared rule matrices
    /// `(n, n, n)` ([`PhmRules::matrices`]) for a PHM-family projection built with shared
    /// rules, `None` for one with its own rules; a dense projection ignores them.
    ///
    /// # Shapes
    /// - `x`: `(…, d)`; `rules`: `(n, n, n)`; output `(…, k)`.
    ///
    /// # Panics
    /// If the last axis of `x` is not `d`; for a PHM-family layer, if it holds rules and
    /// `rules` is `Some`, or holds none and `rules` is `None`, or `rules` is not `(n, n, n)`.
    #[track_caller]
    pub fn forward_with_rules<const D: usize>(
        &self,
        x: Tensor<D>,
        rules: Option<&Tensor<3>>,
    ) -> Tensor<D> {
        match self {
            Projection::Dense(l) => l.forward(x),
            Projection::Phm(l) => l.forward_with_rules(x, rules),
            Projection::LowRankPhm(l) => l.forward_with_rules(x, rules),
        }
    }

    /// The phm-nn layer with the same values, boxed as phm-nn's `Projection::build` returns
    /// it. A projection built with shared rules needs the model's phm-nn rules `shared`
    /// (which the phm-nn layer then shares); `shared` is ignored otherwise.
    ///
    /// # Errors
    /// [`PhmError::CheckpointMismatch`] for a dtype that is not `F`'s;
    /// [`PhmError::InvalidArgument`] if the projection uses shared rules and `shared` is
    /// `None`, or `shared` does not fit (another `n`, factorized for PHM).
    pub fn to_native<F: Float>(
        &self,
        shared: Option<&NativeRules<F>>,
    ) -> phm_nn::Result<Box<dyn phm_nn::Module<F>>> {
        let missing = || PhmError::InvalidArgument {
            what: "shared rules",
            reason: "the projection uses its model's shared rules; pass them".into(),
        };
        Ok(match self {
            Projection::Dense(l) => Box::new(l.to_native::<F>()?),
            Projection::Phm(l) if l.rules.is_some() => Box::new(l.to_native::<F>()?),
            Projection::Phm(l) => Box::new(l.to_native_with_rules(shared.ok_or_else(missing)?)?),
            Projection::LowRankPhm(l) if l.has_own_rules() => Box::new(l.to_native::<F>()?),
            Projection::LowRankPhm(l) => {
                Box::new(l.to_native_with_rules(shared.ok_or_else(missing)?)?)
            }
        })
    }

    /// The projection with the values of a phm-nn `Linear`, `PhmLinear` or `LphmLinear`
    /// (what phm-nn's `Projection::build` returns). With `shared`, the rules of a PHM-family
    /// layer are left to the model (`None` in the projection); otherwise they are copied.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] naming the layer if `native` is none of the three.
    pub fn from_native<F: Float>(
        native: &dyn phm_nn::Module<F>,
        shared: bool,
        device: &Device,
    ) -> phm_nn::Result<Self> {
        let any = native as &dyn Any;
        if let Some(l) = any.downcast_ref::<phm_nn::Linear<F>>() {
            return Ok(Projection::Dense(Linear::from_native(l, device)?));
        }
        if let Some(l) = any.downcast_ref::<phm_nn::PhmLinear<F>>() {
            return Ok(Projection::Phm(if shared {
                PhmLinear::from_native_shared(l, device)
            } else {
                PhmLinear::from_native(l, device)?
            }));
        }
        if let Some(l) = any.downcast_ref::<phm_nn::LphmLinear<F>>() {
            return Ok(Projection::LowRankPhm(if shared {
                LphmLinear::from_native_shared(l, device)
            } else {
                LphmLinear::from_native(l, device)?
            }));
        }
        Err(PhmError::InvalidArgument {
            what: "projection",
            reason: format!(
                "{} is not a Linear, PhmLinear or LphmLinear",
                native.describe()
            ),
        })
    }
}
