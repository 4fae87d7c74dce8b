//! Optimizers: they read each trainable parameter's accumulated gradient and update its value.
//!
//! A training step is `model.zero_grad()`, `forward`, loss, `backward`, `opt.step(&mut model)`.
//! Frozen parameters (e.g. fixed algebra rules) are skipped.
//!
//! # Non-finite gradients
//! Before changing anything, [`Optimizer::step`] checks every trainable gradient. If one holds
//! NaN or ±inf, the step returns [`PhmError::NonFiniteGradient`] naming the parameter and
//! **no parameter and no optimizer state is changed**, so NaN/inf never enter the weights
//! through a step unnoticed. Skip the batch, lower the learning rate, or stop.
//!
//! # SGD
//! [`Sgd`] follows `torch.optim.SGD` exactly. For gradient `g_t` of parameter `θ`:
//!
//! ```text
//!     g ← g_t + λ θ                                   (weight_decay λ)
//!     if μ ≠ 0:  b ← g  (first step),  b ← μ b + (1 − τ) g  (later steps)
//!                g ← g + μ b  (nesterov)   or   g ← b
//!     θ ← θ − γ g                                      (lr γ)
//! ```
//!
//! ```
//! use ndarray::array;
//! use phm_nn::optim::{Optimizer, Sgd, SgdConfig};
//! use phm_nn::{Linear, Module};
//!
//! let mut layer = Linear::from_parts(array![[1.0f64]], None)?;
//! let mut opt = Sgd::new(SgdConfig { lr: 0.1, ..SgdConfig::default() })?;
//! layer.forward(array![[2.0]].view());
//! layer.backward(array![[1.0]].view()); // dL/dW = 2
//! opt.step(&mut layer)?;
//! assert!((layer.weight()[[0, 0]] - 0.8).abs() < 1e-12);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```
//!
//! # Adam and AdamW
//! [`Adam`] follows `torch.optim.Adam` and [`AdamW`] `torch.optim.AdamW` (both with
//! `amsgrad` optional); they differ only in the weight decay. With state `m, v` (zeros before
//! the first step) and the parameter's own step count `t = 1, 2, …`:
//!
//! ```text
//!     g ← g_t + λ θ                                   (Adam: L2 penalty λ in the gradient)
//!     θ ← θ − γ λ θ                                   (AdamW: decoupled weight decay λ)
//!     m ← β₁ m + (1 − β₁) g
//!     v ← β₂ v + (1 − β₂) g²
//!     v_max ← max(v_max, v)                           (amsgrad; then v_max replaces v below)
//!     θ ← θ − (γ / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//!
//! i.e. `θ ← θ − γ m̂ / (√v̂ + ε)` with the bias-corrected `m̂ = m/(1 − β₁ᵗ)`,
//! `v̂ = v/(1 − β₂ᵗ)`. The first step therefore moves every parameter by `γ·g/(|g| + ε)`,
//! `γ` against the sign of its gradient. Defaults (PyTorch's): `γ = 1e-3`,
//! `(β₁, β₂) = (0.9, 0.999)`, `ε = 1e-8`, `λ = 0` for Adam and `λ = 1e-2` for AdamW.
//! State is kept per parameter name.
//!
//! ```
//! use ndarray::array;
//! use phm_nn::optim::{Adam, AdamConfig, Optimizer};
//! use phm_nn::{Linear, Module};
//!
//! let mut layer = Linear::from_parts(array![[1.0f64]], None)?;
//! let mut opt = Adam::new(AdamConfig { lr: 0.1, ..AdamConfig::default() })?;
//! layer.forward(array![[2.0]].view());
//! layer.backward(array![[1.0]].view()); // dL/dW = 2
//! opt.step(&mut layer)?;
//! // m̂ = 2, v̂ = 4: θ ← 1 − 0.1 · 2 / (2 + 1e-8)
//! assert!((layer.weight()[[0, 0]] - 0.9).abs() < 1e-8);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::collections::HashMap;

use ndarray::{ArrayD, Zip};

use crate::error::{PhmError, Result};
use crate::module::Module;
use crate::Float;

/// Updates a model's trainable parameters from their accumulated gradients.
pub trait Optimizer<F: Float> {
    /// One update of every trainable parameter of `model`.
    ///
    /// # Errors
    /// [`PhmError::NonFiniteGradient`] if a trainable gradient holds NaN or inf; nothing is
    /// changed then.
    fn step(&mut self, model: &mut dyn Module<F>) -> Result<()>;

    /// The current learning rate.
    fn learning_rate(&self) -> f64;

    /// Sets the learning rate (for schedules).
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] if `lr` is negative or not finite.
    fn set_learning_rate(&mut self, lr: f64) -> Result<()>;
}

/// Returns an error naming the first trainable parameter whose gradient is not finite.
pub(crate) fn check_finite_grads<F: Float>(model: &dyn Module<F>) -> Result<()> {
    let mut bad = None;
    model.visit_params(&mut |name, p| {
        if bad.is_none() && p.is_trainable() && !p.grad().iter().all(|g| g.is_finite()) {
            bad = Some(name.to_string());
        }
    });
    match bad {
        Some(param) => Err(PhmError::NonFiniteGradient { param }),
        None => Ok(()),
    }
}

/// Checks that a hyperparameter is finite and at least `min`.
pub(crate) fn check_hyper(what: &'static str, value: f64, min: f64) -> Result<()> {
    if value.is_finite() && value >= min {
        Ok(())
    } else {
        Err(PhmError::InvalidArgument {
            what,
            reason: format!("{what} must be finite and >= {min}, got {value}"),
        })
    }
}

/// Hyperparameters of [`Sgd`]; the defaults are PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    /// Learning rate `γ` (default `1e-3`).
    pub lr: f64,
    /// Momentum factor `μ` (default `0`).
    pub momentum: f64,
    /// Dampening `τ` for momentum (default `0`).
    pub dampening: f64,
    /// L2 penalty `λ` added to the gradient (default `0`).
    pub weight_decay: f64,
    /// Nesterov momentum (default `false`; needs `momentum > 0` and `dampening = 0`).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

/// Stochastic gradient descent with optional momentum, Nesterov and weight decay; see the
/// [module docs](self) for the update rule.
#[derive(Debug, Clone)]
pub struct Sgd<F> {
    config: SgdConfig,
    momentum_buffers: HashMap<String, ArrayD<F>>,
}

impl<F: Float> Sgd<F> {
    /// An optimizer with these hyperparameters.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] for a negative or non-finite `lr`, `momentum`,
    /// `dampening` or `weight_decay`, or Nesterov without momentum or with dampening.
    pub fn new(config: SgdConfig) -> Result<Self> {
        check_hyper("lr", config.lr, 0.0)?;
        check_hyper("momentum", config.momentum, 0.0)?;
        check_hyper("dampening", config.dampening, 0.0)?;
        check_hyper("weight_decay", config.weight_decay, 0.0)?;
        if config.nesterov && (config.momentum <= 0.0 || config.dampening != 0.0) {
            return Err(PhmError::InvalidArgument {
                what: "nesterov",
                reason: format!(
                    "Nesterov momentum requires momentum > 0 and dampening = 0, got momentum = {} and dampening = {}",
                    config.momentum, config.dampening
                ),
            });
        }
        Ok(Sgd {
            config,
            momentum_buffers: HashMap::new(),
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

impl<F: Float> Optimizer<F> for Sgd<F> {
    fn step(&mut self, model: &mut dyn Module<F>) -> Result<()> {
        check_finite_grads(model)?;
        let c = self.config;
        let (lr, mu, wd) = (F::of(c.lr), F::of(c.momentum), F::of(c.weight_decay));
        let one_minus_damp = F::of(1.0 - c.dampening);
        let buffers = &mut self.momentum_buffers;
        model.visit_params_mut(&mut |name, p| {
            if !p.is_trainable() {
                return;
            }
            let (mut value, grad) = p.value_mut_and_grad();
            let mut g = grad.to_owned();
            if c.weight_decay != 0.0 {
                g.scaled_add(wd, &value);
            }
            if c.momentum != 0.0 {
                match buffers.get_mut(name) {
                    Some(b) => Zip::from(&mut *b)
                        .and(&g)
                        .for_each(|b, &g| *b = mu * *b + one_minus_damp * g),
                    None => {
                        buffers.insert(name.to_string(), g.clone());
                    }
                }
                let b = &buffers[name];
                if c.nesterov {
                    g.scaled_add(mu, b);
                } else {
                    g.assign(b);
                }
            }
            value.scaled_add(-lr, &g);
        });
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        check_hyper("lr", lr, 0.0)?;
        self.config.lr = lr;
        Ok(())
    }
}

/// Checks that a moment coefficient is in `[0, 1)`.
fn check_beta(what: &'static str, value: f64) -> Result<()> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(PhmError::InvalidArgument {
            what,
            reason: format!("{what} must be in [0, 1), got {value}"),
        })
    }
}

/// Hyperparameters of [`Adam`]; the defaults are PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate `γ` (default `1e-3`).
    pub lr: f64,
    /// Moment coefficients `(β₁, β₂)`, each in `[0, 1)` (default `(0.9, 0.999)`).
    pub betas: (f64, f64),
    /// Term `ε ≥ 0` added to the denominator (default `1e-8`).
    pub eps: f64,
    /// L2 penalty `λ` added to the gradient (default `0`).
    pub weight_decay: f64,
    /// Use the running maximum of `v` (AMSGrad; default `false`).
    pub amsgrad: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
        }
    }
}

/// Hyperparameters of [`AdamW`]; the defaults are PyTorch's (as [`AdamConfig`], except the
/// weight decay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate `γ` (default `1e-3`).
    pub lr: f64,
    /// Moment coefficients `(β₁, β₂)`, each in `[0, 1)` (default `(0.9, 0.999)`).
    pub betas: (f64, f64),
    /// Term `ε ≥ 0` added to the denominator (default `1e-8`).
    pub eps: f64,
    /// Decoupled weight decay `λ`: `θ ← θ − γ λ θ` before the Adam update (default `1e-2`).
    pub weight_decay: f64,
    /// Use the running maximum of `v` (AMSGrad; default `false`).
    pub amsgrad: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            amsgrad: false,
        }
    }
}

/// How Adam applies its weight decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decay {
    /// Added to the gradient (`Adam`).
    L2,
    /// Applied to the parameter before the update (`AdamW`).
    Decoupled,
}

/// The hyperparameters the shared Adam update reads.
#[derive(Debug, Clone, Copy, PartialEq)]
struct AdamHyper {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    amsgrad: bool,
    decay: Decay,
}

impl AdamHyper {
    /// Checks `lr`, `eps`, `weight_decay` (finite, ≥ 0) and the betas (in `[0, 1)`).
    fn validate(&self) -> Result<()> {
        check_hyper("lr", self.lr, 0.0)?;
        check_beta("beta1", self.betas.0)?;
        check_beta("beta2", self.betas.1)?;
        check_hyper("eps", self.eps, 0.0)?;
        check_hyper("weight_decay", self.weight_decay, 0.0)
    }
}

impl AdamConfig {
    fn hyper(&self) -> AdamHyper {
        AdamHyper {
            lr: self.lr,
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
            amsgrad: self.amsgrad,
            decay: Decay::L2,
        }
    }
}

impl AdamWConfig {
    fn hyper(&self) -> AdamHyper {
        AdamHyper {
            lr: self.lr,
            betas: self.betas,
            eps: self.eps,
            weight_decay: self.weight_decay,
            amsgrad: self.amsgrad,
            decay: Decay::Decoupled,
        }
    }
}

/// Adam's state for one parameter.
#[derive(Debug, Clone)]
struct Moments<F> {
    step: i32,
    exp_avg: ArrayD<F>,
    exp_avg_sq: ArrayD<F>,
    max_exp_avg_sq: Option<ArrayD<F>>,
}

/// The update shared by [`Adam`] and [`AdamW`] (see the [module docs](self)), with the state
/// keyed by parameter name.
fn adam_step<F: Float>(
    h: AdamHyper,
    state: &mut HashMap<String, Moments<F>>,
    model: &mut dyn Module<F>,
) -> Result<()> {
    check_finite_grads(model)?;
    let (b1, b2) = h.betas;
    let (f_b1, f_b2, eps, wd) = (F::of(b1), F::of(b2), F::of(h.eps), F::of(h.weight_decay));
    let (one_minus_b1, one_minus_b2) = (F::of(1.0 - b1), F::of(1.0 - b2));
    model.visit_params_mut(&mut |name, p| {
        if !p.is_trainable() {
            return;
        }
        let (mut value, grad) = p.value_mut_and_grad();
        let s = state.entry(name.to_string()).or_insert_with(|| Moments {
            step: 0,
            exp_avg: ArrayD::zeros(grad.raw_dim()),
            exp_avg_sq: ArrayD::zeros(grad.raw_dim()),
            max_exp_avg_sq: h.amsgrad.then(|| ArrayD::zeros(grad.raw_dim())),
        });
        s.step += 1;
        let mut g = grad.to_owned();
        if h.weight_decay != 0.0 {
            match h.decay {
                Decay::L2 => g.scaled_add(wd, &value),
                Decay::Decoupled => {
                    let keep = F::of(1.0 - h.lr * h.weight_decay);
                    value.mapv_inplace(|v| v * keep);
                }
            }
        }
        Zip::from(&mut s.exp_avg)
            .and(&mut s.exp_avg_sq)
            .and(&g)
            .for_each(|m, v, &g| {
                *m = f_b1 * *m + one_minus_b1 * g;
                *v = f_b2 * *v + one_minus_b2 * g * g;
            });
        let second = match &mut s.max_exp_avg_sq {
            Some(max) => {
                Zip::from(&mut *max)
                    .and(&s.exp_avg_sq)
                    .for_each(|mx, &v| *mx = mx.max(v));
                &*max
            }
            None => &s.exp_avg_sq,
        };
        let t = s.step;
        let step_size = F::of(h.lr / (1.0 - b1.powi(t)));
        let bias_correction2_sqrt = F::of((1.0 - b2.powi(t)).sqrt());
        Zip::from(&mut value)
            .and(&s.exp_avg)
            .and(second)
            .for_each(|theta, &m, &v| {
                *theta -= step_size * m / (v.sqrt() / bias_correction2_sqrt + eps);
            });
    });
    Ok(())
}

/// Adam with optional L2 weight decay and AMSGrad, as `torch.optim.Adam`; see the
/// [module docs](self) for the update rule.
#[derive(Debug, Clone)]
pub struct Adam<F> {
    config: AdamConfig,
    state: HashMap<String, Moments<F>>,
}

impl<F: Float> Adam<F> {
    /// An optimizer with these hyperparameters.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] for a negative or non-finite `lr`, `eps` or
    /// `weight_decay`, or a beta outside `[0, 1)`, e.g. `invalid beta2: beta2 must be in
    /// [0, 1), got 1`.
    pub fn new(config: AdamConfig) -> Result<Self> {
        config.hyper().validate()?;
        Ok(Adam {
            config,
            state: HashMap::new(),
        })
    }

    /// The hyperparameters (with the current learning rate).
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }
}

impl<F: Float> Optimizer<F> for Adam<F> {
    fn step(&mut self, model: &mut dyn Module<F>) -> Result<()> {
        adam_step(self.config.hyper(), &mut self.state, model)
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        check_hyper("lr", lr, 0.0)?;
        self.config.lr = lr;
        Ok(())
    }
}

/// Adam with decoupled weight decay (Loshchilov & Hutter), as `torch.optim.AdamW`; see the
/// [module docs](self) for the update rule.
#[derive(Debug, Clone)]
pub struct AdamW<F> {
    config: AdamWConfig,
    state: HashMap<String, Moments<F>>,
}

impl<F: Float> AdamW<F> {
    /// An optimizer with these hyperparameters.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] for a negative or non-finite `lr`, `eps` or
    /// `weight_decay`, or a beta outside `[0, 1)`, e.g. `invalid beta1: beta1 must be in
    /// [0, 1), got -0.5`.
    pub fn new(config: AdamWConfig) -> Result<Self> {
        config.hyper().validate()?;
        Ok(AdamW {
            config,
            state: HashMap::new(),
        })
    }

    /// The hyperparameters (with the current learning rate).
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }
}

impl<F: Float> Optimizer<F> for AdamW<F> {
    fn step(&mut self, model: &mut dyn Module<F>) -> Result<()> {
        adam_step(self.config.hyper(), &mut self.state, model)
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        check_hyper("lr", lr, 0.0)?;
        self.config.lr = lr;
        Ok(())
    }
}
