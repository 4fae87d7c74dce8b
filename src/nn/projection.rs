//! The linear family as one choice: a projection that is dense, PHM or low-rank PHM.
//!
//! Every layer that projects — attention (query, key, value, output), the feed-forward
//! block, [adapters](crate::nn::adapter) — builds its linear maps through
//! [`Projection::build`], so switching a whole model from dense to PHM is one field of its
//! config:
//!
//! ```text
//!     Dense:          W ∈ ℝ^{k×d}                               k·d + k parameters
//!     Phm { n }:      W = Σ_i A_i ⊗ S_i                         n³ + k·d/n + k
//!     LowRankPhm:     W = Σ_i A_i ⊗ (U_i V_iᵀ), rank r          n³ + r·(k + d) + k
//! ```
//!
//! With shared rules (one [`PhmRules`] for every projection of a model, as in Compacter), the
//! `n³` rule entries are counted once for the whole model.
//!
//! ```
//! use phm_nn::prelude::*;
//! use phm_nn::nn::Projection;
//! let mut rng = StdRng::seed_from_u64(0);
//! let phm = Projection::phm(4);
//! let rules = phm.new_rules::<f32, _>(&mut rng)?.expect("PHM has rules");
//! let q = phm.build::<f32, _>(64, 64, Some(&rules), &mut rng)?;
//! let k = phm.build::<f32, _>(64, 64, Some(&rules), &mut rng)?;
//! assert_eq!(q.num_parameters(), 4 * 4 * 4 + 64 * 64 / 4 + 64);
//! let mut model = Sequential::new();
//! model.push_boxed(q);
//! model.push_boxed(k);
//! assert_eq!(model.num_parameters(), 64 + 2 * (1024 + 64)); // rules once
//!
//! // A branch that starts near zero (an adapter's up-projection): W's entries ~ N(0, 1e-4²).
//! let up = phm.build_scaled::<f32, _>(16, 64, 1e-4, Some(&rules), &mut rng)?;
//! let y = up.infer(ArrayD::ones(IxDyn(&[2, 16])).view());
//! assert!(y.iter().all(|v| v.abs() < 1e-2));
//! # Ok::<(), PhmError>(())
//! ```

use rand::Rng;

use crate::error::{PhmError, Result};
use crate::init::Init;
use crate::module::Module;
use crate::nn::rules::{PhmRules, Rule};
use crate::nn::{LinearConfig, LphmLinearConfig, PhmLinearConfig};
use crate::Float;

/// Which linear map a projection is (dense, PHM or low-rank PHM); see the
/// [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Projection {
    /// A dense [`crate::nn::Linear`] layer.
    Dense,
    /// A [`crate::nn::PhmLinear`] layer of dimension `n` (every width a multiple of `n`).
    Phm {
        /// Hypercomplex dimension `n ≥ 1`.
        n: usize,
        /// Learned or fixed rules.
        rule: Rule,
    },
    /// A low-rank [`crate::nn::LphmLinear`] layer (Compacter): blocks `S_i = U_i V_iᵀ`.
    LowRankPhm {
        /// Hypercomplex dimension `n ≥ 1`.
        n: usize,
        /// Rank `r ≥ 1` of each block.
        rank: usize,
        /// Learned or fixed rules.
        rule: Rule,
    },
}

impl Projection {
    /// PHM projections of dimension `n` with learned rules.
    pub const fn phm(n: usize) -> Self {
        Projection::Phm {
            n,
            rule: Rule::Learned(Init::UnitFibers),
        }
    }

    /// Low-rank PHM projections of dimension `n` and rank `rank`, learned rules.
    pub const fn low_rank(n: usize, rank: usize) -> Self {
        Projection::LowRankPhm {
            n,
            rank,
            rule: Rule::Learned(Init::UnitFibers),
        }
    }

    /// The hypercomplex dimension (`1` for dense).
    pub fn n(&self) -> usize {
        match *self {
            Projection::Dense => 1,
            Projection::Phm { n, .. } | Projection::LowRankPhm { n, .. } => n,
        }
    }

    /// A short name for tables and checkpoints, e.g. `"dense"`, `"phm n=4"`, `"lphm n=4 r=2"`.
    pub fn name(&self) -> String {
        match *self {
            Projection::Dense => "dense".to_string(),
            Projection::Phm { n, .. } => format!("phm n={n}"),
            Projection::LowRankPhm { n, rank, .. } => format!("lphm n={n} r={rank}"),
        }
    }

    /// New rules for this kind, to share between projections (`None` for dense).
    ///
    /// # Errors
    /// [`PhmError::ZeroN`] for `n = 0`; [`PhmError::InvalidArgument`] for an algebra whose
    /// dimension is not `n`, or an invalid init.
    pub fn new_rules<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Option<PhmRules<F>>> {
        match *self {
            Projection::Dense => Ok(None),
            Projection::Phm { n, rule } | Projection::LowRankPhm { n, rule, .. } => {
                PhmRules::new(n, rule, rng).map(Some)
            }
        }
    }

    /// Builds one `in_features → out_features` projection with a bias, with each layer's
    /// default init. With `shared`, a PHM-family projection uses those rules instead of
    /// drawing its own (ignored for dense).
    ///
    /// # Errors
    /// The errors of the layer's config ([`PhmError::NotDivisible`] for a width that is not a
    /// multiple of `n`, …), and [`PhmError::InvalidArgument`] if `shared` has another `n`, or
    /// is factorized for a PHM projection (only low-rank PHM takes factorized rules).
    pub fn build<F: Float, R: Rng + ?Sized>(
        &self,
        in_features: usize,
        out_features: usize,
        shared: Option<&PhmRules<F>>,
        rng: &mut R,
    ) -> Result<Box<dyn Module<F>>> {
        self.build_with(in_features, out_features, None, shared, rng)
    }

    /// As [`build`](Self::build), but the built weight `W` starts with entries of standard
    /// deviation `weight_std` and the bias at zero: a branch that starts near zero, such as
    /// an adapter's up-projection (`weight_std = 0` gives exactly zero).
    ///
    /// Dense: `W ~ N(0, weight_std²)`. PHM: the blocks `S_i ~ N(0, weight_std²)`, which gives
    /// `W` that standard deviation for algebra rules and the default learned rules
    /// (`Σ_i A_i[r,c]² = 1`). Low-rank PHM: `V` keeps its default `σ_V` and
    /// `U ~ N(0, σ_U²)` with `σ_U = weight_std / (σ_V·√r)`, so `U` still receives gradients
    /// of ordinary size.
    ///
    /// # Errors
    /// As [`build`](Self::build), and [`PhmError::InvalidArgument`] if `weight_std` is
    /// negative or not finite.
    pub fn build_scaled<F: Float, R: Rng + ?Sized>(
        &self,
        in_features: usize,
        out_features: usize,
        weight_std: f64,
        shared: Option<&PhmRules<F>>,
        rng: &mut R,
    ) -> Result<Box<dyn Module<F>>> {
        self.build_with(in_features, out_features, Some(weight_std), shared, rng)
    }

    fn build_with<F: Float, R: Rng + ?Sized>(
        &self,
        in_features: usize,
        out_features: usize,
        weight_std: Option<f64>,
        shared: Option<&PhmRules<F>>,
        rng: &mut R,
    ) -> Result<Box<dyn Module<F>>> {
        let small = weight_std.map(|std| Init::Normal { std });
        if let Some(init) = small {
            init.validate()?;
        }
        Ok(match *self {
            Projection::Dense => {
                let mut config = LinearConfig::new(in_features, out_features);
                if let Some(init) = small {
                    config = config.with_weight_init(init).with_bias_init(Init::Zeros);
                }
                Box::new(config.init(rng)?)
            }
            Projection::Phm { n, rule } => {
                let mut config = PhmLinearConfig::new(in_features, out_features, n).with_rule(rule);
                if let Some(init) = small {
                    config = config.with_block_init(init).with_bias_init(Init::Zeros);
                }
                match shared {
                    None => Box::new(config.init(rng)?),
                    Some(rules) => {
                        check_n(rules, n)?;
                        let full = rules.full_param().ok_or(PhmError::InvalidArgument {
                            what: "shared rules",
                            reason: "PHM projections take full (n, n, n) rules; only \
                                     Projection::LowRankPhm takes factorized ones"
                                .into(),
                        })?;
                        Box::new(config.init_shared(full, rng)?)
                    }
                }
            }
            Projection::LowRankPhm { n, rank, rule } => {
                let mut config =
                    LphmLinearConfig::new(in_features, out_features, n, rank).with_rule(rule);
                if let Some(std) = weight_std {
                    // Var(W) = r·σ_U²·σ_V² (Σ_i A_i[r,c]² = 1): keep V's default σ_V and
                    // choose σ_U for W's standard deviation.
                    let sigma_v = config.default_factor_std();
                    let sigma_u = std / (sigma_v * (rank as f64).sqrt());
                    config = config
                        .with_factor_inits(Some(Init::Normal { std: sigma_u }), None)
                        .with_bias_init(Init::Zeros);
                }
                match shared {
                    None => Box::new(config.init(rng)?),
                    Some(rules) => Box::new(config.init_shared(rules, rng)?),
                }
            }
        })
    }
}

fn check_n<F: Float>(rules: &PhmRules<F>, n: usize) -> Result<()> {
    if rules.n() == n {
        Ok(())
    } else {
        Err(PhmError::InvalidArgument {
            what: "shared rules",
            reason: format!("the rules have n = {}, the projections n = {n}", rules.n()),
        })
    }
}
