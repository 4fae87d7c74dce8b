//! Stochastic gradient descent, as `torch.optim.SGD` (the update rule is in the
//! [`optim`](crate::optim) module docs).

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Zip};

use crate::error::{PhmError, Result};
use crate::module::{Module, ParamId};
use crate::optim::{
    check_hyper, check_hyper_names, flag, standard, Check, Optimizer, OptimizerState, ParamState,
    States,
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

    fn import(path: &str, shape: &[usize], state: &OptimizerState<F>) -> Result<Option<Self>> {
        let name = format!("{path}.momentum_buffer");
        if !state.tensors.contains_key(&name) {
            return Ok(None);
        }
        Ok(Some(Momentum(Some(standard(state.tensor(&name, shape)?)))))
    }
}

/// The constants of an SGD step, rounded to `F`.
#[derive(Debug, Clone, Copy)]
struct Coefs<F> {
    weight_decay: bool,
    momentum: bool,
    nesterov: bool,
    neg_lr: F,
    mu: F,
    wd: F,
    one_minus_damp: F,
}

impl<F: Float> Coefs<F> {
    fn new(c: &SgdConfig) -> Self {
        Coefs {
            weight_decay: c.weight_decay != 0.0,
            momentum: c.momentum != 0.0,
            nesterov: c.nesterov,
            neg_lr: -F::of(c.lr),
            mu: F::of(c.momentum),
            wd: F::of(c.weight_decay),
            one_minus_damp: F::of(1.0 - c.dampening),
        }
    }

    /// One entry's step: the new `(θ, b)` from `θ`, the gradient `g` and the old momentum
    /// buffer `b` (ignored on the `first` step with momentum, and without momentum). The
    /// one expression of the update, for the check pass and the update pass alike.
    #[inline(always)]
    fn entry(&self, first: bool, theta: F, g: F, b: F) -> (F, F) {
        let mut g = g;
        if self.weight_decay {
            g += self.wd * theta;
        }
        let mut b = b;
        if self.momentum {
            b = if first {
                g
            } else {
                b * self.mu + g * self.one_minus_damp
            };
            g = if self.nesterov { g + self.mu * b } else { b };
        }
        (theta + self.neg_lr * g, b)
    }

    /// The check pass over one parameter: whether its gradient and its new values are finite
    /// (computed, not stored). `buffer` is the old momentum buffer, if any (the first step
    /// with momentum starts it).
    fn check(
        &self,
        theta: ArrayViewD<'_, F>,
        grad: ArrayViewD<'_, F>,
        buffer: Option<ArrayViewD<'_, F>>,
    ) -> Check {
        let first = buffer.is_none();
        let b = buffer.unwrap_or_else(|| grad.view());
        let finite = |(grad_ok, new_ok): (bool, bool), theta, g: F, b| {
            let (theta, _) = self.entry(first, theta, g, b);
            (grad_ok & g.is_finite(), new_ok & theta.is_finite())
        };
        let (grad_ok, new_ok) = match (theta.as_slice(), grad.as_slice(), b.as_slice()) {
            (Some(theta), Some(g), Some(b)) => {
                let n = theta.len();
                let (g, b) = (&g[..n], &b[..n]);
                (0..n).fold((true, true), |acc, i| finite(acc, theta[i], g[i], b[i]))
            }
            _ => Zip::from(&theta)
                .and(&grad)
                .and(&b)
                .fold((true, true), |acc, &theta, &g, &b| finite(acc, theta, g, b)),
        };
        Check::of(grad_ok, new_ok)
    }

    /// The update pass over one parameter: `θ` and the momentum buffer (`first`: just made)
    /// in place, entry by entry as [`check`](Self::check) computed them.
    fn apply(
        &self,
        theta: ArrayViewMutD<'_, F>,
        grad: ArrayViewD<'_, F>,
        buffer: Option<&mut ArrayD<F>>,
        first: bool,
    ) {
        let mut theta = theta;
        match buffer {
            Some(b) => match (theta.as_slice_mut(), grad.as_slice(), b.as_slice_mut()) {
                (Some(theta), Some(g), Some(b)) => {
                    let n = theta.len();
                    let (g, b) = (&g[..n], &mut b[..n]);
                    for i in 0..n {
                        (theta[i], b[i]) = self.entry(first, theta[i], g[i], b[i]);
                    }
                }
                _ => Zip::from(&mut theta)
                    .and(&grad)
                    .and(b)
                    .for_each(|theta, &g, b| (*theta, *b) = self.entry(first, *theta, g, *b)),
            },
            None => match (theta.as_slice_mut(), grad.as_slice()) {
                (Some(theta), Some(g)) => {
                    let g = &g[..theta.len()];
                    for (theta, &g) in theta.iter_mut().zip(g) {
                        (*theta, _) = self.entry(false, *theta, g, g);
                    }
                }
                _ => Zip::from(&mut theta)
                    .and(&grad)
                    .for_each(|theta, &g| (*theta, _) = self.entry(false, *theta, g, g)),
            },
        }
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
        let k = Coefs::<F>::new(&self.config);
        self.states.step(
            model,
            |theta, grad, state| {
                // The momentum buffer the step reads: none without momentum or on the first
                // step.
                let buffer = state.and_then(|s| s.0.as_ref()).filter(|_| k.momentum);
                k.check(theta, grad, buffer.map(|b| b.view()))
            },
            |theta, grad, state| {
                if !k.momentum {
                    k.apply(theta, grad, None, false);
                    return Momentum(None);
                }
                // The first step with momentum starts the buffer (at `g`).
                let (mut b, first) = match state.and_then(|s| s.0) {
                    Some(b) => (b, false),
                    None => (ArrayD::zeros(grad.raw_dim()), true),
                };
                k.apply(theta, grad, Some(&mut b), first);
                Momentum(Some(b))
            },
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, ShapeBuilder};

    /// Non-standard layouts take the `Zip` path of both passes, and give the same finding
    /// and the same bits as the slice path: with and without momentum, first and later
    /// steps, Nesterov, weight decay.
    #[test]
    fn the_zip_path_equals_the_slice_path() {
        let value = |i: usize| ((i * 7 % 11) as f64 - 5.0) * 0.3;
        let grad = |i: usize| ((i * 5 % 13) as f64 - 6.0) * 0.2;
        let buffer = |i: usize| grad(i) * 0.7 - 0.1;
        let layouts = |f: &dyn Fn(usize) -> f64| {
            let a = Array2::from_shape_fn((5, 7), |(i, j)| f(i * 7 + j)).into_dyn();
            let t = Array2::from_shape_fn((5, 7).f(), |(i, j)| f(i * 7 + j)).into_dyn();
            assert!(!t.is_standard_layout() && t == a);
            [a, t]
        };
        for (momentum, nesterov, first) in [
            (0.0, false, true),
            (0.9, false, true),
            (0.9, false, false),
            (0.9, true, false),
        ] {
            let k = Coefs::<f64>::new(&SgdConfig {
                lr: 0.1,
                momentum,
                dampening: if nesterov { 0.0 } else { 0.2 },
                weight_decay: 0.3,
                nesterov,
            });
            let mut results = Vec::new();
            for ((mut theta, g), mut b) in layouts(&value)
                .into_iter()
                .zip(layouts(&grad))
                .zip(layouts(&buffer))
            {
                let old = (!first).then(|| b.view());
                assert_eq!(k.check(theta.view(), g.view(), old), Check::Finite);
                let mut bad = g.clone();
                bad[[4, 6]] = f64::NAN;
                let old = (!first).then(|| b.view());
                let found = k.check(theta.view(), bad.view(), old);
                assert_eq!(found, Check::NonFiniteGradient);
                let b = k.momentum.then_some(&mut b);
                k.apply(theta.view_mut(), g.view(), b, first);
                results.push(theta.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
            }
            assert_eq!(results[0], results[1], "momentum {momentum}, first {first}");
        }
    }
}
