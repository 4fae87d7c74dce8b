//! Learning-rate schedules: step decay, cosine annealing, each optionally after a linear
//! warm-up, with PyTorch's conventions.
//!
//! A [`Schedule`] maps the optimizer step `t = 0, 1, 2, …` (the number of steps taken before
//! this one) to a learning rate. With base rate `η` and, if there is a warm-up, `W` warm-up
//! steps starting at the factor `s`:
//!
//! ```text
//!     warm-up, t < W:   lr(t) = η · (s + (1 − s) · t / W)             torch LinearLR(s, 1.0, W)
//!     then, with t' = t − W (t' = t without warm-up):
//!     Constant:         lr    = η
//!     Step:             lr    = η · γ^⌊t' / step_size⌋                  torch StepLR
//!     Cosine:           lr    = η_min + (η − η_min) · (1 + cos(π · min(t', T) / T)) / 2
//!                                                                      torch CosineAnnealingLR
//! ```
//!
//! Warm-up then decay is PyTorch's `SequentialLR([LinearLR, …], milestones=[W])`: the decay
//! starts from its own step 0 (rate `η`) at step `W`. Cosine annealing reaches `η_min` at
//! `t' = T` and then **stays there**; PyTorch's closed form would climb back along the cosine
//! (it has period `2T`), which restarts-free training recipes do not want.
//!
//! The schedule is plain data, its configuration and a step counter ([`Schedule::step`],
//! [`Schedule::set_step`]): `Clone + Debug + PartialEq`, ready to be saved with a checkpoint
//! and restored to continue where it stopped.
//!
//! ```
//! use phm_nn::optim::{Optimizer, Sgd, SgdConfig};
//! use phm_nn::optim::schedule::Schedule;
//!
//! // η = 0.1, 2 warm-up steps from 0.5·η, then cosine to η_min = 0.01 over T = 3 steps.
//! let mut schedule = Schedule::cosine(0.1, 3, 0.01)?.with_warmup(2, 0.5)?;
//! let mut opt = Sgd::<f64>::new(SgdConfig { lr: 0.1, ..SgdConfig::default() })?;
//! let mut lrs = Vec::new();
//! for _ in 0..7 {
//!     lrs.push(schedule.advance(&mut opt)?); // sets opt's lr, then counts the step
//!     // … forward, backward, opt.step(&mut model)? …
//!     assert_eq!(opt.learning_rate(), *lrs.last().unwrap());
//! }
//! // 0.1·0.5, 0.1·0.75, then 0.01 + 0.09·(1 + cos(πt'/3))/2 for t' = 0, 1, 2, 3, and η_min.
//! let expected = [0.05, 0.075, 0.1, 0.0775, 0.0325, 0.01, 0.01];
//! assert!(lrs.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-15));
//! assert_eq!(schedule.step(), 7);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use crate::error::{PhmError, Result};
use crate::optim::Optimizer;
use crate::Float;

/// How the rate decays after the (optional) warm-up; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decay {
    /// The base rate throughout.
    Constant,
    /// Multiply the rate by `gamma` every `step_size` steps (torch `StepLR`).
    Step {
        /// Steps between two decays, at least 1.
        step_size: usize,
        /// Decay factor, in `(0, 1]`.
        gamma: f64,
    },
    /// Half a cosine from the base rate down to `min_lr` over `t_max` steps, then `min_lr`
    /// (torch `CosineAnnealingLR`).
    Cosine {
        /// Steps from the base rate to `min_lr`, at least 1.
        t_max: usize,
        /// The final rate, finite and in `[0, base_lr]`.
        min_lr: f64,
    },
}

/// A linear warm-up from `start_factor · base_lr` to `base_lr` over `steps` steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warmup {
    /// Number of warm-up steps, at least 1.
    pub steps: usize,
    /// Fraction of the base rate at step 0, in `[0, 1]`.
    pub start_factor: f64,
}

/// A learning-rate schedule: base rate, optional warm-up, decay, and the step counter.
///
/// Built by [`Schedule::new`] or the shorthands [`constant`](Schedule::constant),
/// [`step_decay`](Schedule::step_decay), [`cosine`](Schedule::cosine) and
/// [`with_warmup`](Schedule::with_warmup), which all check their parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    base_lr: f64,
    warmup: Option<Warmup>,
    decay: Decay,
    step: usize,
}

impl Schedule {
    /// A schedule at step 0.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] naming the parameter and its value if `base_lr` is
    /// negative or not finite, or a parameter of `warmup` or `decay` is outside the range its
    /// field documents.
    pub fn new(base_lr: f64, warmup: Option<Warmup>, decay: Decay) -> Result<Self> {
        if !(base_lr.is_finite() && base_lr >= 0.0) {
            return Err(invalid(
                "base_lr",
                format!("base_lr must be finite and >= 0, got {base_lr}"),
            ));
        }
        if let Some(Warmup {
            steps,
            start_factor,
        }) = warmup
        {
            if steps == 0 {
                return Err(invalid(
                    "warmup_steps",
                    "warmup_steps must be at least 1, got 0".to_string(),
                ));
            }
            if !(0.0..=1.0).contains(&start_factor) {
                return Err(invalid(
                    "start_factor",
                    format!("start_factor must be in [0, 1], got {start_factor}"),
                ));
            }
        }
        match decay {
            Decay::Constant => {}
            Decay::Step { step_size, gamma } => {
                if step_size == 0 {
                    return Err(invalid(
                        "step_size",
                        "step_size must be at least 1, got 0".to_string(),
                    ));
                }
                if !(gamma > 0.0 && gamma <= 1.0) {
                    return Err(invalid(
                        "gamma",
                        format!("gamma must be in (0, 1], got {gamma}"),
                    ));
                }
            }
            Decay::Cosine { t_max, min_lr } => {
                if t_max == 0 {
                    return Err(invalid(
                        "t_max",
                        "t_max must be at least 1, got 0".to_string(),
                    ));
                }
                if !(0.0..=base_lr).contains(&min_lr) {
                    return Err(invalid(
                        "min_lr",
                        format!("min_lr must be in [0, base_lr = {base_lr}], got {min_lr}"),
                    ));
                }
            }
        }
        Ok(Schedule {
            base_lr,
            warmup,
            decay,
            step: 0,
        })
    }

    /// `base_lr` at every step.
    ///
    /// # Errors
    /// As [`Schedule::new`].
    pub fn constant(base_lr: f64) -> Result<Self> {
        Self::new(base_lr, None, Decay::Constant)
    }

    /// `base_lr · gamma^⌊t / step_size⌋` (torch `StepLR`).
    ///
    /// # Errors
    /// As [`Schedule::new`]: `step_size = 0`, `gamma` outside `(0, 1]`, a bad `base_lr`.
    pub fn step_decay(base_lr: f64, step_size: usize, gamma: f64) -> Result<Self> {
        Self::new(base_lr, None, Decay::Step { step_size, gamma })
    }

    /// Cosine annealing from `base_lr` to `min_lr` over `t_max` steps, then `min_lr`
    /// (torch `CosineAnnealingLR`, held at the end).
    ///
    /// # Errors
    /// As [`Schedule::new`]: `t_max = 0`, `min_lr` outside `[0, base_lr]`, a bad `base_lr`.
    pub fn cosine(base_lr: f64, t_max: usize, min_lr: f64) -> Result<Self> {
        Self::new(base_lr, None, Decay::Cosine { t_max, min_lr })
    }

    /// The same schedule after a linear warm-up of `steps` steps from
    /// `start_factor · base_lr` (replacing any earlier warm-up); the decay starts after it.
    ///
    /// # Errors
    /// As [`Schedule::new`]: `steps = 0`, `start_factor` outside `[0, 1]`.
    pub fn with_warmup(self, steps: usize, start_factor: f64) -> Result<Self> {
        let mut schedule = Self::new(
            self.base_lr,
            Some(Warmup {
                steps,
                start_factor,
            }),
            self.decay,
        )?;
        schedule.step = self.step;
        Ok(schedule)
    }

    /// The base learning rate `η`.
    pub fn base_lr(&self) -> f64 {
        self.base_lr
    }

    /// The warm-up, if any.
    pub fn warmup(&self) -> Option<Warmup> {
        self.warmup
    }

    /// The decay after the warm-up.
    pub fn decay(&self) -> Decay {
        self.decay
    }

    /// The step counter: how many times [`advance`](Schedule::advance) has been called (or
    /// what [`set_step`](Schedule::set_step) set).
    pub fn step(&self) -> usize {
        self.step
    }

    /// Sets the step counter, e.g. to resume from a checkpoint.
    pub fn set_step(&mut self, step: usize) {
        self.step = step;
    }

    /// The learning rate at step `t` (the formulas in the [module docs](self)).
    pub fn lr_at(&self, t: usize) -> f64 {
        let eta = self.base_lr;
        let mut t = t;
        if let Some(Warmup {
            steps,
            start_factor,
        }) = self.warmup
        {
            if t < steps {
                return eta * (start_factor + (1.0 - start_factor) * t as f64 / steps as f64);
            }
            t -= steps;
        }
        match self.decay {
            Decay::Constant => eta,
            Decay::Step { step_size, gamma } => {
                let decays = (t / step_size).min(i32::MAX as usize) as i32;
                eta * gamma.powi(decays)
            }
            Decay::Cosine { t_max, min_lr } => {
                let progress = t.min(t_max) as f64 / t_max as f64;
                min_lr + (eta - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
            }
        }
    }

    /// The learning rate at the current step, `lr_at(self.step())`.
    pub fn lr(&self) -> f64 {
        self.lr_at(self.step)
    }

    /// Sets `opt`'s learning rate to `lr_at(step)`; the step counter is not used or changed.
    ///
    /// # Errors
    /// What [`Optimizer::set_learning_rate`] returns (never, for the rates of a valid
    /// schedule, which are finite and non-negative).
    pub fn apply<F: Float>(&self, step: usize, opt: &mut dyn Optimizer<F>) -> Result<()> {
        opt.set_learning_rate(self.lr_at(step))
    }

    /// Sets `opt`'s learning rate to the current step's rate, [`lr`](Schedule::lr), then
    /// counts the step; returns the rate set. Call it once before each optimizer step.
    ///
    /// # Errors
    /// As [`apply`](Schedule::apply); the counter is not advanced then.
    pub fn advance<F: Float>(&mut self, opt: &mut dyn Optimizer<F>) -> Result<f64> {
        let lr = self.lr();
        opt.set_learning_rate(lr)?;
        self.step = self.step.saturating_add(1);
        Ok(lr)
    }
}

fn invalid(what: &'static str, reason: String) -> PhmError {
    PhmError::InvalidArgument { what, reason }
}
