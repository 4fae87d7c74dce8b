//! Initialization schemes for weights, blocks, rules and biases.
//!
//! Each scheme draws every entry independently; the formulas use the *fans* the layer passes:
//!
//! | scheme | distribution | variance of an entry |
//! |---|---|---|
//! | [`Init::TorchLinear`] | `U(−1/√fan_in, 1/√fan_in)` | `1 / (3·fan_in)` |
//! | [`Init::GlorotUniform`] | `U(−a, a)`, `a = gain·√(6/(fan_in+fan_out))` | `gain²·2/(fan_in+fan_out)` |
//! | [`Init::GlorotNormal`] | `N(0, gain²·2/(fan_in+fan_out))` | `gain²·2/(fan_in+fan_out)` |
//! | [`Init::Normal`] | `N(0, std²)` | `std²` |
//! | [`Init::Uniform`] | `U(−bound, bound)` | `bound²/3` |
//! | [`Init::Constant`] / [`Init::Zeros`] | the constant | `0` |
//! | [`Init::UnitFibers`] | every fiber along axis 0 uniform on the unit sphere | `1/len(axis 0)` |
//!
//! # PHM layers
//! For `W = Σ A_i ⊗ S_i` with independent zero-mean entries, `Var(W) = n·Var(A)·Var(S)`.
//! [`PhmLinear`](crate::PhmLinear) passes the **full layer's** fans `(d, k)` to the block init,
//! so a block init gives `S` the variance the same scheme gives a dense weight, and it chooses
//! rules with `Σ_i A_i[r,c]² = 1` for every `(r, c)`: the default learned-rule init
//! [`Init::UnitFibers`] makes every `(A_1[r,c], …, A_n[r,c])` a random unit vector, and the
//! fixed algebra rules have exactly one `±1` per `(r, c)`. Then every entry of `W` has exactly
//! the variance of `S`: the default PHM layer starts with the variance of PyTorch's
//! `nn.Linear` default, `1/(3·in_features)`, whatever `n` is. Rule inits that draw entries
//! independently get fans `(n, n)`, so Glorot rules have `Var(A) = 1/n` and the same
//! `Var(W)` in expectation.
//!
//! ```
//! use phm_nn::init::{Fans, Init};
//! let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
//! let w = Init::TorchLinear.sample::<f64, _>(&[64, 256], Fans::new(256, 64), &mut rng)?;
//! assert!(w.iter().all(|x| x.abs() <= 1.0 / 16.0));
//! assert_eq!(Init::TorchLinear.variance(&[64, 256], Fans::new(256, 64)), 1.0 / 768.0);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{ArrayD, Axis, IxDyn};
use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal};

use crate::error::{PhmError, Result};
use crate::Float;

/// The fan-in and fan-out a layer reports for a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fans {
    /// Inputs feeding each output (`in_features` for a dense layer).
    pub fan_in: usize,
    /// Outputs fed by each input (`out_features` for a dense layer).
    pub fan_out: usize,
}

impl Fans {
    /// Fans `(fan_in, fan_out)`.
    pub fn new(fan_in: usize, fan_out: usize) -> Self {
        Fans { fan_in, fan_out }
    }
}

/// An initialization scheme; see the [module docs](self) for the formulas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// PyTorch's `nn.Linear` default (`kaiming_uniform_(a=√5)`, and its bias rule):
    /// `U(−1/√fan_in, 1/√fan_in)`.
    TorchLinear,
    /// Glorot/Xavier uniform: `U(−a, a)` with `a = gain·√(6/(fan_in + fan_out))`.
    GlorotUniform {
        /// Scale factor (1 for linear/tanh layers, √2 for ReLU).
        gain: f64,
    },
    /// Glorot/Xavier normal: `N(0, σ²)` with `σ = gain·√(2/(fan_in + fan_out))`.
    GlorotNormal {
        /// Scale factor.
        gain: f64,
    },
    /// `N(0, std²)`.
    Normal {
        /// Standard deviation (≥ 0).
        std: f64,
    },
    /// `U(−bound, bound)`.
    Uniform {
        /// Half-width of the interval (≥ 0).
        bound: f64,
    },
    /// Every entry equal to the constant.
    Constant(f64),
    /// Every entry zero.
    Zeros,
    /// Every fiber along the first axis (for a rule tensor: `(A_1[r,c], …, A_n[r,c])`) is an
    /// independent uniform random unit vector. The default for learned rules.
    UnitFibers,
}

impl Init {
    /// Checks the scheme's numbers: finite, `std`/`bound` ≥ 0, `gain` > 0.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] naming the value.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &'static str, v: f64| PhmError::InvalidArgument {
            what,
            reason: format!("init {what} must be finite and non-negative, got {v}"),
        };
        match *self {
            Init::GlorotUniform { gain } | Init::GlorotNormal { gain }
                if !(gain.is_finite() && gain > 0.0) =>
            {
                Err(PhmError::InvalidArgument {
                    what: "gain",
                    reason: format!("init gain must be finite and positive, got {gain}"),
                })
            }
            Init::Normal { std } if !(std.is_finite() && std >= 0.0) => Err(bad("std", std)),
            Init::Uniform { bound } if !(bound.is_finite() && bound >= 0.0) => {
                Err(bad("bound", bound))
            }
            Init::Constant(c) if !c.is_finite() => Err(PhmError::InvalidArgument {
                what: "constant",
                reason: format!("init constant must be finite, got {c}"),
            }),
            _ => Ok(()),
        }
    }

    /// The variance of one entry of a tensor of `shape` drawn with `fans` (see the table).
    pub fn variance(&self, shape: &[usize], fans: Fans) -> f64 {
        let glorot = |gain: f64| gain * gain * 2.0 / (fans.fan_in + fans.fan_out).max(1) as f64;
        match *self {
            Init::TorchLinear => 1.0 / (3.0 * fans.fan_in.max(1) as f64),
            Init::GlorotUniform { gain } | Init::GlorotNormal { gain } => glorot(gain),
            Init::Normal { std } => std * std,
            Init::Uniform { bound } => bound * bound / 3.0,
            Init::Constant(_) | Init::Zeros => 0.0,
            Init::UnitFibers => 1.0 / shape.first().copied().unwrap_or(1).max(1) as f64,
        }
    }

    /// Draws a tensor of `shape`.
    ///
    /// # Errors
    /// - [`PhmError::InvalidArgument`] if the scheme's numbers are invalid (see
    ///   [`validate`](Init::validate)) or its values would overflow `F` (e.g.
    ///   `Init::Constant(1e39)` in `f32`, `Init::Uniform { bound: 1e308 }`);
    /// - [`PhmError::TooLarge`] if the tensor's size overflows or it cannot be allocated.
    pub fn sample<F: Float, R: Rng + ?Sized>(
        &self,
        shape: &[usize],
        fans: Fans,
        rng: &mut R,
    ) -> Result<ArrayD<F>> {
        self.validate()?;
        self.check_range::<F>(shape, fans)?;
        let len = shape
            .iter()
            .try_fold(1usize, |acc, &s| acc.checked_mul(s))
            .filter(|&len| {
                len.checked_mul(std::mem::size_of::<F>())
                    .is_some_and(|b| b <= isize::MAX as usize)
            })
            .ok_or_else(|| PhmError::TooLarge {
                what: "tensor",
                reason: format!("shape {shape:?} has more elements than memory can hold"),
            })?;
        // Reserve first, so that a tensor too large for this machine is an error, not an abort.
        let mut storage: Vec<F> = Vec::new();
        storage
            .try_reserve_exact(len)
            .map_err(|_| PhmError::TooLarge {
                what: "tensor",
                reason: format!(
                    "cannot allocate {len} values ({} bytes) for shape {shape:?}",
                    len.saturating_mul(std::mem::size_of::<F>())
                ),
            })?;
        drop(storage);
        let a = self.draw::<F, R>(shape, fans, rng);
        if !a.iter().all(|v| v.is_finite()) {
            return Err(PhmError::InvalidArgument {
                what: "init",
                reason: format!(
                    "{self:?} produced non-finite values in {}",
                    std::any::type_name::<F>()
                ),
            });
        }
        Ok(a)
    }

    /// Rejects schemes whose values cannot be represented in `F`.
    fn check_range<F: Float>(&self, shape: &[usize], fans: Fans) -> Result<()> {
        let max = F::max_value().as_f64();
        // The largest magnitude a draw can have: a uniform bound, 64 standard deviations, or
        // the constant.
        let reach = match *self {
            Init::TorchLinear | Init::UnitFibers | Init::Zeros => 0.0,
            Init::GlorotUniform { .. } => (3.0 * self.variance(shape, fans)).sqrt(),
            Init::GlorotNormal { .. } => 64.0 * self.variance(shape, fans).sqrt(),
            Init::Normal { std } => 64.0 * std,
            Init::Uniform { bound } => 2.0 * bound, // the width of the interval must be finite
            Init::Constant(c) => c.abs(),
        };
        if reach.is_finite() && reach <= max {
            Ok(())
        } else {
            Err(PhmError::InvalidArgument {
                what: "init",
                reason: format!(
                    "{self:?} draws values beyond the range of {} (largest {max:e})",
                    std::any::type_name::<F>()
                ),
            })
        }
    }

    fn draw<F: Float, R: Rng + ?Sized>(
        &self,
        shape: &[usize],
        fans: Fans,
        rng: &mut R,
    ) -> ArrayD<F> {
        let dim = IxDyn(shape);
        let uniform = |rng: &mut R, bound: f64| -> ArrayD<F> {
            ArrayD::from_shape_simple_fn(dim.clone(), || {
                if bound > 0.0 {
                    F::of(rng.random_range(-bound..bound))
                } else {
                    F::zero()
                }
            })
        };
        let normal = |rng: &mut R, std: f64| -> ArrayD<F> {
            ArrayD::from_shape_simple_fn(dim.clone(), || {
                let z: f64 = StandardNormal.sample(rng);
                F::of(std * z)
            })
        };
        match *self {
            Init::TorchLinear => uniform(rng, 1.0 / (fans.fan_in.max(1) as f64).sqrt()),
            Init::GlorotUniform { .. } => uniform(rng, (3.0 * self.variance(shape, fans)).sqrt()),
            Init::GlorotNormal { .. } => normal(rng, self.variance(shape, fans).sqrt()),
            Init::Normal { std } => normal(rng, std),
            Init::Uniform { bound } => uniform(rng, bound),
            Init::Constant(c) => ArrayD::from_elem(dim, F::of(c)),
            Init::Zeros => ArrayD::zeros(dim),
            Init::UnitFibers => {
                let mut a = normal(rng, 1.0);
                if !shape.is_empty() {
                    for mut fiber in a.lanes_mut(Axis(0)) {
                        let norm = fiber.iter().map(|x| *x * *x).sum::<F>().sqrt();
                        if norm > F::zero() {
                            fiber.mapv_inplace(|x| x / norm);
                        }
                    }
                }
                a
            }
        }
    }
}
