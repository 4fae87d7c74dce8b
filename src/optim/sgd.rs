//! Stochastic gradient descent, as `torch.optim.SGD` (the update rule is in the
//! [`optim`](crate::optim) module docs).

use ndarray::ArrayD;

use crate::error::{PhmError, Result};
use crate::kernels::buffer_pool;
use crate::module::{Module, ParamId};
use crate::optim::{
    check_hyper, check_hyper_names, flag, Optimizer, OptimizerState, ParamState, States,
};
use crate::Float;

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

impl SgdConfig {
    fn validate(&self) -> Result<()> {
        check_hyper("lr", self.lr, 0.0)?;
        check_hyper("momentum", self.momentum, 0.0)?;
        check_hyper("dampening", self.dampening, 0.0)?;
        check_hyper("weight_decay", self.weight_decay, 0.0)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(PhmError::InvalidArgument {
                what: "nesterov",
                reason: format!(
                    "Nesterov momentum requires momentum > 0 and dampening = 0, got momentum = {} and dampening = {}",
                    self.momentum, self.dampening
                ),
            });
        }
        Ok(())
    }
}

/// SGD's state for one parameter: its momentum buffer, once momentum has run.
#[derive(Debug, Clone)]
pub(crate) struct Momentum<F>(Option<ArrayD<F>>);

impl<F: Float> ParamState<F> for Momentum<F> {
    fn export(&self, path: &str, out: &mut OptimizerState<F>) {
        if let Some(b) = &self.0 {
            out.tensors
                .insert(format!("{path}.momentum_buffer"), b.clone());
        }
    }

    fn recycle(self) {
        if let Some(b) = self.0 {
            buffer_pool::recycle(b);
        }
    }

    fn import(path: &str, shape: &[usize], state: &OptimizerState<F>) -> Result<Option<Self>> {
        let name = format!("{path}.momentum_buffer");
        if !state.tensors.contains_key(&name) {
            return Ok(None);
        }
        Ok(Some(Momentum(Some(state.tensor(&name, shape)?))))
    }
}

/// Stochastic gradient descent with optional momentum, Nesterov and weight decay; see the
/// [module docs](crate::optim) for the update rule.
#[derive(Debug, Clone)]
pub struct Sgd<F> {
    config: SgdConfig,
    states: States<Momentum<F>>,
}

impl<F: Float> Sgd<F> {
    /// An optimizer with these hyperparameters.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] for a negative or non-finite `lr`, `momentum`,
    /// `dampening` or `weight_decay`, or Nesterov without momentum or with dampening.
    pub fn new(config: SgdConfig) -> Result<Self> {
        config.validate()?;
        Ok(Sgd {
            config,
            states: States::default(),
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

impl<F: Float> Optimizer<F> for Sgd<F> {
    fn step(&mut self, model: &mut dyn Module<F>) -> Result<()> {
        let c = self.config;
        let (lr, mu, wd) = (F::of(c.lr), F::of(c.momentum), F::of(c.weight_decay));
        let one_minus_damp = F::of(1.0 - c.dampening);
        self.states.step(model, |value, grad, state| {
            let mut g = buffer_pool::copy_of(&grad);
            if c.weight_decay != 0.0 {
                g.scaled_add(wd, &value);
            }
            let mut buffer = None;
            if c.momentum != 0.0 {
                let b = match state.and_then(|s| s.0.as_ref()) {
                    Some(b) => b * mu + &g * one_minus_damp,
                    None => g.clone(),
                };
                if c.nesterov {
                    g.scaled_add(mu, &b);
                } else {
                    g.assign(&b);
                }
                buffer = Some(b);
            }
            let mut new = buffer_pool::copy_of(&value);
            new.scaled_add(-lr, &g);
            (new, Momentum(buffer))
        })
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        check_hyper("lr", lr, 0.0)?;
        self.config.lr = lr;
        Ok(())
    }

    fn state(&self, model: &dyn Module<F>) -> OptimizerState<F> {
        let mut out = OptimizerState::default();
        let c = self.config;
        for (k, v) in [
            ("lr", c.lr),
            ("momentum", c.momentum),
            ("dampening", c.dampening),
            ("weight_decay", c.weight_decay),
            ("nesterov", f64::from(u8::from(c.nesterov))),
        ] {
            out.scalars.insert(format!("hyper.{k}"), v);
        }
        self.states.export(model, &mut out);
        out
    }

    fn load_state(&mut self, model: &dyn Module<F>, state: &OptimizerState<F>) -> Result<()> {
        check_hyper_names(
            state,
            &["lr", "momentum", "dampening", "weight_decay", "nesterov"],
        )?;
        let config = SgdConfig {
            lr: state.scalar("hyper.lr")?,
            momentum: state.scalar("hyper.momentum")?,
            dampening: state.scalar("hyper.dampening")?,
            weight_decay: state.scalar("hyper.weight_decay")?,
            nesterov: flag(state, "hyper.nesterov")?,
        };
        config.validate()?;
        let mut states = self.states.clone();
        states.import(model, state)?;
        (self.config, self.states) = (config, states);
        Ok(())
    }

    fn state_param_ids(&self) -> Vec<ParamId> {
        self.states.ids()
    }
}
