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
