//! Adam and AdamW, as `torch.optim.Adam` and `torch.optim.AdamW`: one implementation, which
//! applies the weight decay as an L2 penalty (Adam) or decoupled from the gradient (AdamW).
//! The update rule is in the [`optim`](crate::optim) module docs.

use ndarray::{ArrayD, Zip};

use crate::error::{PhmError, Result};
use crate::kernels::buffer_pool;
use crate::module::{Module, ParamId};
use crate::optim::{
    check_hyper, check_hyper_names, flag, Optimizer, OptimizerState, ParamState, States,
};
use crate::Float;

/// Hyperparameters of [`Adam`]; the defaults are PyTorch's `torch.optim.Adam`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate `γ` (default `1e-3`).
    pub lr: f64,
    /// Moment coefficients `(β₁, β₂)`, each in `[0, 1)` (default `(0.9, 0.999)`).
    pub betas: (f64, f64),
    /// Term `ε ≥ 0` added to the denominator (default `1e-8`).
    pub eps: f64,
    /// Weight decay `λ` (default `0`): an L2 penalty added to the gradient, or with
    /// `decoupled_weight_decay`, `θ ← θ − γ λ θ` before the update (AdamW).
    pub weight_decay: f64,
    /// Use the running maximum of `v` (AMSGrad; default `false`).
    pub amsgrad: bool,
    /// Decoupled weight decay (AdamW; default `false`).
    pub decoupled_weight_decay: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            decoupled_weight_decay: false,
        }
    }
}

/// Hyperparameters of [`AdamW`]; the defaults are PyTorch's `torch.optim.AdamW` (as
/// [`AdamConfig`], except the weight decay, which is decoupled and `1e-2`).
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

impl From<AdamWConfig> for AdamConfig {
    fn from(c: AdamWConfig) -> Self {
        AdamConfig {
            lr: c.lr,
            betas: c.betas,
            eps: c.eps,
            weight_decay: c.weight_decay,
            amsgrad: c.amsgrad,
            decoupled_weight_decay: true,
        }
    }
}

impl AdamConfig {
    /// Checks `lr`, `eps`, `weight_decay` (finite, ≥ 0) and the betas (in `[0, 1)`).
    fn validate(&self) -> Result<()> {
        check_hyper("lr", self.lr, 0.0)?;
        check_beta("beta1", self.betas.0)?;
        check_beta("beta2", self.betas.1)?;
        check_hyper("eps", self.eps, 0.0)?;
        check_hyper("weight_decay", self.weight_decay, 0.0)
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

/// Adam's state for one parameter.
#[derive(Debug, Clone)]
pub(crate) struct Moments<F> {
    step: i32,
    exp_avg: ArrayD<F>,
    exp_avg_sq: ArrayD<F>,
    max_exp_avg_sq: Option<ArrayD<F>>,
}

impl<F: Float> ParamState<F> for Moments<F> {
    fn export(&self, path: &str, out: &mut OptimizerState<F>) {
        out.scalars
            .insert(format!("{path}.step"), f64::from(self.step));
        out.tensors
            .insert(format!("{path}.exp_avg"), self.exp_avg.clone());
        out.tensors
            .insert(format!("{path}.exp_avg_sq"), self.exp_avg_sq.clone());
        if let Some(m) = &self.max_exp_avg_sq {
            out.tensors
                .insert(format!("{path}.max_exp_avg_sq"), m.clone());
        }
    }

    fn recycle(self) {
        buffer_pool::recycle(self.exp_avg);
        buffer_pool::recycle(self.exp_avg_sq);
        if let Some(m) = self.max_exp_avg_sq {
            buffer_pool::recycle(m);
        }
    }

    fn import(path: &str, shape: &[usize], state: &OptimizerState<F>) -> Result<Option<Self>> {
        let step_name = format!("{path}.step");
        let max_name = format!("{path}.max_exp_avg_sq");
        let bad = |reason: String| PhmError::InvalidArgument {
            what: "optimizer state",
            reason,
        };
        let Some(&step) = state.scalars.get(&step_name) else {
            // No step: the parameter was never stepped, and must have no other entry.
            for entry in ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"] {
                if state.tensors.contains_key(&format!("{path}.{entry}")) {
                    return Err(bad(format!(
                        "entry `{path}.{entry}` is present but `{step_name}` is missing"
                    )));
                }
            }
            return Ok(None);
        };
        if !(step >= 1.0 && step <= f64::from(i32::MAX) && step.fract() == 0.0) {
            return Err(bad(format!(
                "entry `{step_name}` must be a positive whole number, got {step}"
            )));
        }
        // `hyper.amsgrad` (checked to be 0 or 1 by `load_state`) decides: AMSGrad state is
        // there exactly when AMSGrad runs.
        let amsgrad = flag(state, "hyper.amsgrad")?;
        let max_exp_avg_sq = match (amsgrad, state.tensors.contains_key(&max_name)) {
            (true, true) => Some(state.tensor(&max_name, shape)?),
            (false, false) => None,
            (true, false) => {
                return Err(bad(format!(
                    "entry `{max_name}` is missing although `hyper.amsgrad` is 1"
                )))
            }
            (false, true) => {
                return Err(bad(format!(
                    "entry `{max_name}` is present although `hyper.amsgrad` is 0"
                )))
            }
        };
        Ok(Some(Moments {
            step: step as i32,
            exp_avg: state.tensor(&format!("{path}.exp_avg"), shape)?,
            exp_avg_sq: state.tensor(&format!("{path}.exp_avg_sq"), shape)?,
            max_exp_avg_sq,
        }))
    }
}

/// Adam with optional L2 or decoupled (AdamW) weight decay and AMSGrad; see the
/// [module docs](crate::optim) for the update rule.
#[derive(Debug, Clone)]
pub struct Adam<F> {
    config: AdamConfig,
    states: States<Moments<F>>,
}

/// AdamW (Loshchilov & Hutter), as `torch.optim.AdamW`: [`Adam`] with decoupled weight decay,
/// built from an [`AdamWConfig`].
///
/// ```
/// use phm_nn::optim::{AdamW, AdamWConfig, Optimizer};
/// let opt = AdamW::<f32>::new(AdamWConfig::default())?;
/// assert!(opt.config().decoupled_weight_decay);
/// assert_eq!(opt.config().weight_decay, 1e-2);
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
pub type AdamW<F> = Adam<F>;

impl<F: Float> Adam<F> {
    /// An optimizer with these hyperparameters (an [`AdamConfig`], or an [`AdamWConfig`] for
    /// AdamW).
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] for a negative or non-finite `lr`, `eps` or
    /// `weight_decay`, or a beta outside `[0, 1)`, e.g. `invalid beta2: beta2 must be in
    /// [0, 1), got 1`.
    pub fn new(config: impl Into<AdamConfig>) -> Result<Self> {
        let config = config.into();
        config.validate()?;
        Ok(Adam {
            config,
            states: States::default(),
        })
    }

    /// The hyperparameters (with the current learning rate).
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }
}

impl<F: Float> Optimizer<F> for Adam<F> {
    fn step(&mut self, model: &mut dyn Module<F>) -> Result<()> {
        let h = self.config;
        let (b1, b2) = h.betas;
        let (f_b1, f_b2, eps, wd) = (F::of(b1), F::of(b2), F::of(h.eps), F::of(h.weight_decay));
        let (one_minus_b1, one_minus_b2) = (F::of(1.0 - b1), F::of(1.0 - b2));
        let (decoupled, l2) = (
            h.weight_decay != 0.0 && h.decoupled_weight_decay,
            h.weight_decay != 0.0 && !h.decoupled_weight_decay,
        );
        let keep = F::of(1.0 - h.lr * h.weight_decay);
        self.states.step(model, |value, grad, state| {
            // One pass over the parameter: decay, both moments, AMSGrad's maximum and the
            // update, element by element, on copies (the step commits only if every
            // parameter's update is finite).
            let fresh;
            let old = match state {
                Some(s) => s,
                None => {
                    fresh = Moments {
                        step: 0,
                        exp_avg: ArrayD::zeros(grad.raw_dim()),
                        exp_avg_sq: ArrayD::zeros(grad.raw_dim()),
                        max_exp_avg_sq: h.amsgrad.then(|| ArrayD::zeros(grad.raw_dim())),
                    };
                    &fresh
                }
            };
            let t = old.step + 1;
            let step_size = F::of(h.lr / (1.0 - b1.powi(t)));
            let bias_correction2_sqrt = F::of((1.0 - b2.powi(t)).sqrt());
            let mut theta = buffer_pool::copy_of(&value);
            let mut m = buffer_pool::copy_of(&old.exp_avg);
            let mut v = buffer_pool::copy_of(&old.exp_avg_sq);
            let mut max_v = old.max_exp_avg_sq.as_ref().map(buffer_pool::copy_of);
            let update = |theta: &mut F, m: &mut F, v: &mut F, g: F, max_v: Option<&mut F>| {
                let mut g = g;
                if decoupled {
                    *theta *= keep;
                } else if l2 {
                    g += wd * *theta;
                }
                *m = f_b1 * *m + one_minus_b1 * g;
                *v = f_b2 * *v + one_minus_b2 * g * g;
                let second = match max_v {
                    Some(x) => {
                        *x = x.max(*v);
                        *x
                    }
                    None => *v,
                };
                *theta -= step_size * *m / (second.sqrt() / bias_correction2_sqrt + eps);
            };
            let zip = Zip::from(&mut theta).and(&mut m).and(&mut v).and(&grad);
            match max_v.as_mut() {
                Some(x) => zip
                    .and(x)
                    .for_each(|t, m, v, &g, x| update(t, m, v, g, Some(x))),
                None => zip.for_each(|t, m, v, &g| update(t, m, v, g, None)),
            }
            (
                theta,
                Moments {
                    step: t,
                    exp_avg: m,
                    exp_avg_sq: v,
                    max_exp_avg_sq: max_v,
                },
            )
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
            ("beta1", c.betas.0),
            ("beta2", c.betas.1),
            ("eps", c.eps),
            ("weight_decay", c.weight_decay),
            ("amsgrad", f64::from(u8::from(c.amsgrad))),
            (
                "decoupled_weight_decay",
                f64::from(u8::from(c.decoupled_weight_decay)),
            ),
        ] {
            out.scalars.insert(format!("hyper.{k}"), v);
        }
        self.states.export(model, &mut out);
        out
    }

    fn load_state(&mut self, model: &dyn Module<F>, state: &OptimizerState<F>) -> Result<()> {
        check_hyper_names(state, &HYPER)?;
        let config = AdamConfig {
            lr: state.scalar("hyper.lr")?,
            betas: (state.scalar("hyper.beta1")?, state.scalar("hyper.beta2")?),
            eps: state.scalar("hyper.eps")?,
            weight_decay: state.scalar("hyper.weight_decay")?,
            amsgrad: flag(state, "hyper.amsgrad")?,
            decoupled_weight_decay: flag(state, "hyper.decoupled_weight_decay")?,
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

/// The hyperparameters Adam saves (`hyper.{name}`).
const HYPER: [&str; 7] = [
    "lr",
    "beta1",
    "beta2",
    "eps",
    "weight_decay",
    "amsgrad",
    "decoupled_weight_decay",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Linear;
    use ndarray::{Array1, Array2};

    /// The update rule written out per element in `f64` (PyTorch's `Adam`/`AdamW` docs):
    /// returns the parameter after `grads.len()` steps.
    fn by_the_formula(theta0: &[f64], grads: &[Vec<f64>], c: AdamConfig) -> Vec<f64> {
        let (b1, b2) = c.betas;
        let mut theta = theta0.to_vec();
        let n = theta.len();
        let (mut m, mut v, mut vmax) = (vec![0.0f64; n], vec![0.0f64; n], vec![0.0f64; n]);
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as i32;
            for i in 0..n {
                let mut gi = g[i];
                if c.decoupled_weight_decay {
                    theta[i] *= 1.0 - c.lr * c.weight_decay;
                } else {
                    gi += c.weight_decay * theta[i];
                }
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                vmax[i] = vmax[i].max(v[i]);
                let second = if c.amsgrad { vmax[i] } else { v[i] };
                let m_hat = m[i] / (1.0 - b1.powi(t));
                let v_hat = second / (1.0 - b2.powi(t));
                theta[i] -= c.lr * m_hat / (v_hat.sqrt() + c.eps);
            }
        }
        theta
    }

    /// The one-pass update against the formula, for Adam, Adam with L2 decay, AdamW and
    /// AMSGrad, over several steps, on a weight and a bias of odd sizes.
    #[test]
    fn one_pass_update_matches_the_formula() {
        let (k, d) = (5, 7);
        let w0 = Array2::from_shape_fn((k, d), |(i, j)| ((i * d + j) as f64 * 0.31).sin());
        let b0 = Array1::from_shape_fn(k, |i| (i as f64 * 0.7).cos());
        let grads: Vec<Vec<f64>> = (0..4)
            .map(|s| {
                (0..k * d + k)
                    .map(|i| ((i * 3 + s * 11) as f64 * 0.17).cos() * (1.0 + s as f64))
                    .collect()
            })
            .collect();
        let base = AdamConfig {
            lr: 0.05,
            weight_decay: 0.1,
            ..AdamConfig::default()
        };
        for config in [
            AdamConfig {
                weight_decay: 0.0,
                ..base
            },
            base,
            AdamConfig {
                decoupled_weight_decay: true,
                ..base
            },
            AdamConfig {
                decoupled_weight_decay: true,
                amsgrad: true,
                ..base
            },
        ] {
            let mut layer = Linear::from_parts(w0.clone(), Some(b0.clone())).unwrap();
            let mut opt = Adam::<f64>::new(config).unwrap();
            for g in &grads {
                layer.zero_grad();
                let (w, b) = (layer.weight_param(), layer.bias_param().unwrap());
                w.write()
                    .grad_mut()
                    .iter_mut()
                    .zip(&g[..k * d])
                    .for_each(|(a, &v)| *a = v);
                b.write()
                    .grad_mut()
                    .iter_mut()
                    .zip(&g[k * d..])
                    .for_each(|(a, &v)| *a = v);
                opt.step(&mut layer).unwrap();
            }
            let wg: Vec<Vec<f64>> = grads.iter().map(|g| g[..k * d].to_vec()).collect();
            let bg: Vec<Vec<f64>> = grads.iter().map(|g| g[k * d..].to_vec()).collect();
            let want_w = by_the_formula(w0.as_slice().unwrap(), &wg, config);
            let want_b = by_the_formula(b0.as_slice().unwrap(), &bg, config);
            let got_w = layer.weight_param().value();
            let got_b = layer.bias_param().unwrap().value();
            for (got, want) in got_w.iter().chain(&got_b).zip(want_w.iter().chain(&want_b)) {
                assert!(
                    (got - want).abs() <= 1e-14 * (1.0 + want.abs()),
                    "{config:?}: {got} vs {want}"
                );
            }
        }
    }
}
