//! Adam and AdamW, as `torch.optim.Adam` and `torch.optim.AdamW`: one implementation, which
//! applies the weight decay as an L2 penalty (Adam) or decoupled from the gradient (AdamW).
//! The update rule is in the [`optim`](crate::optim) module docs.

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn, Zip};

use crate::error::{PhmError, Result};
use crate::module::{Module, ParamId};
use crate::optim::{
    check_hyper, check_hyper_names, flag, standard, Check, Optimizer, OptimizerState, ParamState,
    States,
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
            (true, true) => Some(standard(state.tensor(&max_name, shape)?)),
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
            exp_avg: standard(state.tensor(&format!("{path}.exp_avg"), shape)?),
            exp_avg_sq: standard(state.tensor(&format!("{path}.exp_avg_sq"), shape)?),
            max_exp_avg_sq,
        }))
    }
}

impl<F: Float> Moments<F> {
    /// The state before a parameter's first step: zeros.
    fn zeros(shape: IxDyn, amsgrad: bool) -> Self {
        Moments {
            step: 0,
            exp_avg: ArrayD::zeros(shape.clone()),
            exp_avg_sq: ArrayD::zeros(shape.clone()),
            max_exp_avg_sq: amsgrad.then(|| ArrayD::zeros(shape)),
        }
    }
}

/// How a step applies the weight decay `λ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decay {
    /// `λ = 0`.
    None,
    /// `g ← g + λ θ` (Adam).
    L2,
    /// `θ ← (1 − γ λ) θ` (AdamW).
    Decoupled,
}

/// The constants of one step of one parameter (its step count `t`), rounded to `F`.
#[derive(Debug, Clone, Copy)]
struct Coefs<F> {
    decay: Decay,
    wd: F,
    keep: F,
    b1: F,
    one_minus_b1: F,
    b2: F,
    one_minus_b2: F,
    step_size: F,
    bias_correction2_sqrt: F,
    eps: F,
}

impl<F: Float> Coefs<F> {
    fn new(h: &AdamConfig, t: i32) -> Self {
        let (b1, b2) = h.betas;
        let decay = match (h.weight_decay != 0.0, h.decoupled_weight_decay) {
            (false, _) => Decay::None,
            (true, false) => Decay::L2,
            (true, true) => Decay::Decoupled,
        };
        Coefs {
            decay,
            wd: F::of(h.weight_decay),
            keep: F::of(1.0 - h.lr * h.weight_decay),
            b1: F::of(b1),
            one_minus_b1: F::of(1.0 - b1),
            b2: F::of(b2),
            one_minus_b2: F::of(1.0 - b2),
            step_size: F::of(h.lr / (1.0 - b1.powi(t))),
            bias_correction2_sqrt: F::of((1.0 - b2.powi(t)).sqrt()),
            eps: F::of(h.eps),
        }
    }

    /// One entry's step: `(θ, m, v, v_max)` new from `θ`, the gradient `g` and the old `m`,
    /// `v`, `v_max` (with `amsgrad`; otherwise `v_max` is ignored and the new `v` returned in
    /// its place). The one expression of the update, for the check pass and the update pass
    /// alike (so both compute the same bits); no branch on the data (the weight decay's is
    /// the same for every entry), so a loop of it vectorises.
    #[inline(always)]
    fn entry(&self, amsgrad: bool, theta: F, g: F, m: F, v: F, v_max: F) -> (F, F, F, F) {
        let (mut theta, mut g) = (theta, g);
        match self.decay {
            Decay::None => {}
            Decay::L2 => g += self.wd * theta,
            Decay::Decoupled => theta *= self.keep,
        }
        let m = self.b1 * m + self.one_minus_b1 * g;
        let v = self.b2 * v + self.one_minus_b2 * g * g;
        let second = if amsgrad { v_max.max(v) } else { v };
        theta -= self.step_size * m / (second.sqrt() / self.bias_correction2_sqrt + self.eps);
        (theta, m, v, second)
    }

    /// The check pass over one parameter: whether its gradient and its new values are finite
    /// (computed, not stored). `v_max` is `v` without AMSGrad (read, ignored).
    fn check(
        &self,
        amsgrad: bool,
        theta: ArrayViewD<'_, F>,
        grad: ArrayViewD<'_, F>,
        m: ArrayViewD<'_, F>,
        v: ArrayViewD<'_, F>,
        v_max: ArrayViewD<'_, F>,
    ) -> Check {
        let finite = |(grad_ok, new_ok): (bool, bool), theta, g: F, m, v, x| {
            let (theta, ..) = self.entry(amsgrad, theta, g, m, v, x);
            (grad_ok & g.is_finite(), new_ok & theta.is_finite())
        };
        let (grad_ok, new_ok) = match (
            theta.as_slice(),
            grad.as_slice(),
            m.as_slice(),
            v.as_slice(),
            v_max.as_slice(),
        ) {
            (Some(theta), Some(g), Some(m), Some(v), Some(x)) => {
                let n = theta.len();
                let (g, m, v, x) = (&g[..n], &m[..n], &v[..n], &x[..n]);
                (0..n).fold((true, true), |acc, i| {
                    finite(acc, theta[i], g[i], m[i], v[i], x[i])
                })
            }
            _ => Zip::from(&theta)
                .and(&grad)
                .and(&m)
                .and(&v)
                .and(&v_max)
                .fold((true, true), |acc, &theta, &g, &m, &v, &x| {
                    finite(acc, theta, g, m, v, x)
                }),
        };
        Check::of(grad_ok, new_ok)
    }

    /// The update pass over one parameter: `θ` and its state in place, entry by entry as
    /// [`check`](Self::check) computed them.
    fn apply(&self, theta: ArrayViewMutD<'_, F>, grad: ArrayViewD<'_, F>, s: &mut Moments<F>) {
        let (mut theta, m, v) = (theta, &mut s.exp_avg, &mut s.exp_avg_sq);
        match s.max_exp_avg_sq.as_mut() {
            Some(x) => match (
                theta.as_slice_mut(),
                grad.as_slice(),
                m.as_slice_mut(),
                v.as_slice_mut(),
                x.as_slice_mut(),
            ) {
                (Some(theta), Some(g), Some(m), Some(v), Some(x)) => {
                    let n = theta.len();
                    let (g, m, v, x) = (&g[..n], &mut m[..n], &mut v[..n], &mut x[..n]);
                    for i in 0..n {
                        (theta[i], m[i], v[i], x[i]) =
                            self.entry(true, theta[i], g[i], m[i], v[i], x[i]);
                    }
                }
                _ => Zip::from(&mut theta)
                    .and(&grad)
                    .and(m)
                    .and(v)
                    .and(x)
                    .for_each(|theta, &g, m, v, x| {
                        (*theta, *m, *v, *x) = self.entry(true, *theta, g, *m, *v, *x);
                    }),
            },
            None => {
                match (
                    theta.as_slice_mut(),
                    grad.as_slice(),
                    m.as_slice_mut(),
                    v.as_slice_mut(),
                ) {
                    (Some(theta), Some(g), Some(m), Some(v)) => {
                        let n = theta.len();
                        let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
                        for i in 0..n {
                            (theta[i], m[i], v[i], _) =
                                self.entry(false, theta[i], g[i], m[i], v[i], v[i]);
                        }
                    }
                    _ => Zip::from(&mut theta).and(&grad).and(m).and(v).for_each(
                        |theta, &g, m, v| {
                            (*theta, *m, *v, _) = self.entry(false, *theta, g, *m, *v, *v);
                        },
                    ),
                }
            }
        }
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
        // The constants of a parameter's next step.
        let coefs = |s: &Moments<F>| Coefs::<F>::new(&h, s.step + 1);
        self.states.step(
            model,
            |theta, grad, state| {
                // A parameter never stepped is checked against the zeros it will start from.
                let fresh;
                let s = match state {
                    Some(s) => s,
                    None => {
                        fresh = Moments::zeros(grad.raw_dim(), h.amsgrad);
                        &fresh
                    }
                };
                let (m, v) = (s.exp_avg.view(), s.exp_avg_sq.view());
                let (amsgrad, v_max) = match &s.max_exp_avg_sq {
                    Some(x) => (true, x.view()),
                    None => (false, s.exp_avg_sq.view()),
                };
                coefs(s).check(amsgrad, theta, grad, m, v, v_max)
            },
            |theta, grad, state| {
                let mut s = state.unwrap_or_else(|| Moments::zeros(grad.raw_dim(), h.amsgrad));
                coefs(&s).apply(theta, grad, &mut s);
                s.step += 1;
                s
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

    /// The update against the formula, for Adam, Adam with L2 decay, AdamW and
    /// AMSGrad, over several steps, on a weight and a bias of odd sizes.
    #[test]
    fn update_matches_the_formula() {
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

    /// `(5, 7)` arrays with the values of `f(i)` in row-major order: in standard layout, and
    /// the same values in column-major layout.
    fn both_layouts(f: impl Fn(usize) -> f32) -> (ArrayD<f32>, ArrayD<f32>) {
        use ndarray::ShapeBuilder;
        let a = Array2::from_shape_fn((5, 7), |(i, j)| f(i * 7 + j));
        let t = Array2::from_shape_fn((5, 7).f(), |(i, j)| f(i * 7 + j));
        assert!(!t.is_standard_layout() && t == a);
        (a.into_dyn(), t.into_dyn())
    }

    /// Non-standard layouts take the `Zip` path of both passes, and give the same finding
    /// and the same bits as the slice path; with AMSGrad, L2 and decoupled weight decay.
    #[test]
    fn the_zip_path_equals_the_slice_path() {
        let value = |i: usize| ((i * 7 % 11) as f32 - 5.0) * 0.3;
        let grad = |i: usize| ((i * 5 % 13) as f32 - 6.0) * 0.2;
        let (m, v) = (|i: usize| grad(i) * 0.1, |i: usize| (grad(i) * 0.3).powi(2));
        let x = |i: usize| v(i) * if i.is_multiple_of(3) { 2.0 } else { 0.5 };
        for (decoupled, amsgrad) in [(false, false), (false, true), (true, false), (true, true)] {
            let h = AdamConfig {
                lr: 0.1,
                weight_decay: 0.2,
                decoupled_weight_decay: decoupled,
                amsgrad,
                ..AdamConfig::default()
            };
            let c = Coefs::<f32>::new(&h, 3);
            let mut results = Vec::new();
            for standard in [true, false] {
                let pick = |f: &dyn Fn(usize) -> f32| {
                    let (a, t) = both_layouts(f);
                    if standard {
                        a
                    } else {
                        t
                    }
                };
                let (mut theta, g) = (pick(&value), pick(&grad));
                let mut s = Moments {
                    step: 2,
                    exp_avg: pick(&m),
                    exp_avg_sq: pick(&v),
                    max_exp_avg_sq: amsgrad.then(|| pick(&x)),
                };
                let second = s.max_exp_avg_sq.as_ref().unwrap_or(&s.exp_avg_sq).view();
                let check = c.check(
                    amsgrad,
                    theta.view(),
                    g.view(),
                    s.exp_avg.view(),
                    s.exp_avg_sq.view(),
                    second,
                );
                assert_eq!(check, Check::Finite);
                let mut bad = g.clone();
                bad[[4, 6]] = f32::INFINITY;
                let v2 = s.max_exp_avg_sq.as_ref().unwrap_or(&s.exp_avg_sq).view();
                let (m2, s2) = (s.exp_avg.view(), s.exp_avg_sq.view());
                let found = c.check(amsgrad, theta.view(), bad.view(), m2, s2, v2);
                assert_eq!(found, Check::NonFiniteGradient);
                c.apply(theta.view_mut(), g.view(), &mut s);
                // Bits in logical (row-major) order.
                let std = |a: &ArrayD<f32>| a.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                results.push((
                    std(&theta),
                    std(&s.exp_avg),
                    std(&s.exp_avg_sq),
                    s.max_exp_avg_sq.as_ref().map(std),
                ));
            }
            assert_eq!(
                results[0], results[1],
                "decoupled {decoupled}, amsgrad {amsgrad}"
            );
        }
    }
}
