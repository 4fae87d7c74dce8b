//! Optimizers: they read each trainable parameter's accumulated gradient and update its value.
//!
//! A training step is `model.zero_grad()`, `forward`, loss, `backward`, `opt.step(&mut model)`.
//! Frozen parameters (e.g. fixed algebra rules) are skipped.
//!
//! # Parameters, identity and state
//! A step updates every distinct trainable tensor of the model once ([`params`]): a rule
//! tensor shared by several layers gets the sum of their gradients and one update. The
//! optimizer keeps its state (momentum buffers, Adam moments, step counts) by
//! [`ParamId`], so one optimizer can serve two models without ever
//! mixing their state; [`Optimizer::state`] exports it by parameter path and
//! [`Optimizer::load_state`] imports it into a model of the same architecture (for
//! checkpoints).
//!
//! # Non-finite gradients and updates
//! Before changing anything, [`Optimizer::step`] checks every trainable gradient and
//! computes every new value (without storing it). If a gradient holds NaN or ±inf the step
//! returns [`PhmError::NonFiniteGradient`]; if a new value would be NaN or ±inf (e.g. a huge
//! learning rate, or Adam with `eps = 0` and a zero gradient entry) it returns
//! [`PhmError::NonFiniteUpdate`]. Either way it names the parameter (the first in parameter
//! order, gradients before updates) and **no parameter and no optimizer state is changed**,
//! so NaN/inf never enter the weights through a step unnoticed. Skip the batch, lower the
//! learning rate, or stop. Only when every value is finite does a second pass update the
//! parameters and their state in place, computing the same values again (no copy of a
//! parameter or its state is made).
//!
//! Both passes split the parameters of a step across the crate's thread pool
//! ([`num_threads`](crate::kernels::num_threads)), each handled whole on one thread: the
//! result does not depend on the thread count.
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
//! layer.forward(array![[2.0]].into_dyn().view());
//! layer.backward(array![[1.0]].into_dyn().view()); // dL/dW = 2
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
//! [`AdamW`] is the same optimizer as [`Adam`] with decoupled weight decay
//! ([`AdamWConfig`] converts into an [`AdamConfig`]).
//!
//! ```
//! use ndarray::array;
//! use phm_nn::optim::{Adam, AdamConfig, Optimizer};
//! use phm_nn::{Linear, Module};
//!
//! let mut layer = Linear::from_parts(array![[1.0f64]], None)?;
//! let mut opt = Adam::new(AdamConfig { lr: 0.1, ..AdamConfig::default() })?;
//! layer.forward(array![[2.0]].into_dyn().view());
//! layer.backward(array![[1.0]].into_dyn().view()); // dL/dW = 2
//! opt.step(&mut layer)?;
//! // m̂ = 2, v̂ = 4: θ ← 1 − 0.1 · 2 / (2 + 1e-8)
//! assert!((layer.weight()[[0, 0]] - 0.9).abs() < 1e-8);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::collections::{BTreeMap, HashMap};

use ndarray::{Array1, ArrayD, ArrayViewD, ArrayViewMutD, Axis};

use crate::error::{PhmError, Result};
use crate::kernels::parallel::for_each_chunk;
use crate::module::{check_paths, params, Module, Param, ParamId};
use crate::Float;

mod adam;
mod clip;
pub mod schedule;
mod sgd;

pub use adam::{Adam, AdamConfig, AdamW, AdamWConfig};
pub use clip::clip_grad_norm;
pub use sgd::{Sgd, SgdConfig};

/// Updates a model's trainable parameters from their accumulated gradients.
pub trait Optimizer<F: Float> {
    /// One update of every distinct trainable tensor of `model`.
    ///
    /// # Errors
    /// [`PhmError::NonFiniteGradient`] if a trainable gradient holds NaN or inf, and
    /// [`PhmError::NonFiniteUpdate`] if a new value would; nothing is changed then.
    fn step(&mut self, model: &mut dyn Module<F>) -> Result<()>;

    /// The current learning rate.
    fn learning_rate(&self) -> f64;

    /// Sets the learning rate (for schedules).
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] if `lr` is negative or not finite.
    fn set_learning_rate(&mut self, lr: f64) -> Result<()>;

    /// The optimizer's state for the parameters of `model`, by path (`"0.rules.exp_avg"`,
    /// `"0.rules.step"`), with the hyperparameters under `"hyper.*"`.
    ///
    /// # Panics
    /// The optimizers of this crate panic if two modules or tensors of `model` share a path
    /// ([`check_paths`]): their entries would collide.
    /// [`save_training`](crate::io::save_training) checks first and returns an error.
    fn state(&self, model: &dyn Module<F>) -> OptimizerState<F>;

    /// Loads a state exported by [`state`](Optimizer::state) for a model of the same
    /// architecture (the paths and shapes must match; the ids may differ). The learning rate
    /// and other hyperparameters are taken from the state.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] naming the entry if a tensor does not have its
    /// parameter's shape, an entry has no parameter of that path, an entry is missing or a
    /// hyperparameter is invalid; the optimizer is unchanged then.
    fn load_state(&mut self, model: &dyn Module<F>, state: &OptimizerState<F>) -> Result<()>;

    /// The identities of the parameter tensors this optimizer holds state for (those it has
    /// stepped or loaded state for). [`save_training`](crate::io::save_training) uses it to
    /// refuse a model none of whose tensors the optimizer knows (a clone of the model it
    /// steps). The default, for optimizers of your own, lists none (no check).
    fn state_param_ids(&self) -> Vec<ParamId> {
        Vec::new()
    }
}

/// An optimizer's state by parameter path: tensors (moments, buffers) and scalars (step
/// counts, hyperparameters). See [`Optimizer::state`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OptimizerState<F> {
    /// Tensors by name, e.g. `"0.rules.exp_avg"`.
    pub tensors: BTreeMap<String, ArrayD<F>>,
    /// Scalars by name, e.g. `"0.rules.step"` or `"hyper.lr"`.
    pub scalars: BTreeMap<String, f64>,
}

impl<F: Float> OptimizerState<F> {
    /// The scalar `name`.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] if it is missing.
    pub fn scalar(&self, name: &str) -> Result<f64> {
        self.scalars.get(name).copied().ok_or_else(|| missing(name))
    }

    /// The tensor `name`, checked against `shape`.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] naming the entry if it is missing or its shape is not
    /// `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<ArrayD<F>> {
        let t = self.tensors.get(name).ok_or_else(|| missing(name))?;
        if t.shape() != shape {
            return Err(PhmError::InvalidArgument {
                what: "optimizer state",
                reason: format!(
                    "entry `{name}` has shape {:?}, expected {shape:?}",
                    t.shape()
                ),
            });
        }
        Ok(t.clone())
    }
}

fn missing(name: &str) -> PhmError {
    PhmError::InvalidArgument {
        what: "optimizer state",
        reason: format!("entry `{name}` is missing"),
    }
}

/// One optimizer's per-parameter state, exportable by path.
pub(crate) trait ParamState<F: Float>: Sized + Clone {
    /// Writes the state under `"{path}.*"`.
    fn export(&self, path: &str, out: &mut OptimizerState<F>);
    /// Reads the state for a parameter of `shape` at `path`; `None` if the state has no entry
    /// for it (the parameter was never stepped).
    fn import(path: &str, shape: &[usize], state: &OptimizerState<F>) -> Result<Option<Self>>;
}

/// What the check pass of a step found for one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// The gradient and every new value are finite.
    Finite,
    /// The gradient holds NaN or ±inf.
    NonFiniteGradient,
    /// The gradient is finite, a new value is not.
    NonFiniteUpdate,
}

impl Check {
    /// From the check pass's two findings over a parameter: the gradient's comes first.
    pub(crate) fn of(grad_finite: bool, update_finite: bool) -> Self {
        match (grad_finite, update_finite) {
            (false, _) => Check::NonFiniteGradient,
            (true, false) => Check::NonFiniteUpdate,
            (true, true) => Check::Finite,
        }
    }
}

/// Elementary operations counted per parameter entry when deciding to split an optimizer
/// pass across threads (an Adam update is about ten).
const STEP_COST: usize = 8;

/// The state of every parameter an optimizer has stepped, by identity.
#[derive(Debug, Clone)]
pub(crate) struct States<S>(HashMap<ParamId, S>);

impl<S> Default for States<S> {
    fn default() -> Self {
        States(HashMap::new())
    }
}

impl<S> States<S> {
    /// One step over every distinct trainable tensor of `model`, in two passes, each split
    /// across the pool by parameter (every parameter handled whole on one thread, so the
    /// result does not depend on the thread count):
    ///
    /// 1. `check(value, grad, state)`, read-only: whether the gradient and every new value
    ///    would be finite (the new values computed, not stored; `state` is `None` for a
    ///    parameter never stepped);
    /// 2. only if every parameter passed, `apply(value, grad, state)`: the same update in
    ///    place, returning the parameter's state (updated in place, or new on its first step).
    ///
    /// `apply` must compute exactly the values `check` checked. Nothing changes on error:
    /// [`PhmError::NonFiniteGradient`] names the first parameter whose gradient is not
    /// finite, else [`PhmError::NonFiniteUpdate`] the first whose new value would not be.
    pub(crate) fn step<F: Float>(
        &mut self,
        model: &dyn Module<F>,
        check: impl Fn(ArrayViewD<'_, F>, ArrayViewD<'_, F>, Option<&S>) -> Check + Sync,
        apply: impl Fn(ArrayViewMutD<'_, F>, ArrayViewD<'_, F>, Option<S>) -> S + Sync,
    ) -> Result<()>
    where
        S: Send + Sync,
    {
        let trainable: Vec<(String, Param<F>)> = params(model)
            .into_iter()
            .filter(|(_, p)| p.is_trainable())
            .collect();
        let work = trainable.iter().map(|(_, p)| p.len()).sum::<usize>() * STEP_COST;
        // The check pass, on the tensors under their read locks.
        let mut checks = Array1::from_elem(trainable.len(), Check::Finite);
        let states = &self.0;
        for_each_chunk(checks.view_mut(), Axis(0), work, |start, mut out| {
            for (i, slot) in out.iter_mut().enumerate() {
                let p = &trainable[start + i].1;
                let r = p.read();
                *slot = check(r.value(), r.grad(), states.get(&p.id()));
            }
        });
        // Errors in parameter order, every gradient before any update.
        for error in [Check::NonFiniteGradient, Check::NonFiniteUpdate] {
            if let Some(i) = checks.iter().position(|&c| c == error) {
                let param = trainable[i].0.clone();
                return Err(match error {
                    Check::NonFiniteGradient => PhmError::NonFiniteGradient { param },
                    _ => PhmError::NonFiniteUpdate { param },
                });
            }
        }
        // The update pass, in place under the write locks: each state taken out of the map,
        // updated (or made) by `apply`, and put back.
        let mut slots: Array1<Option<S>> = trainable
            .iter()
            .map(|(_, p)| self.0.remove(&p.id()))
            .collect();
        for_each_chunk(slots.view_mut(), Axis(0), work, |start, mut out| {
            for (i, slot) in out.iter_mut().enumerate() {
                let mut w = trainable[start + i].1.write();
                let (value, grad) = w.value_mut_and_grad();
                *slot = Some(apply(value, grad, slot.take()));
            }
        });
        for ((_, p), slot) in trainable.iter().zip(slots) {
            self.0.insert(p.id(), slot.expect("set by the update pass"));
        }
        Ok(())
    }

    /// The identities of the parameters with a state.
    pub(crate) fn ids(&self) -> Vec<ParamId> {
        self.0.keys().copied().collect()
    }

    /// The state of every parameter of `model` that has one, by path.
    ///
    /// # Panics
    /// If two things of `model` share a path ([`check_paths`]): the entries would collide.
    #[track_caller]
    pub(crate) fn export<F: Float>(&self, model: &dyn Module<F>, out: &mut OptimizerState<F>)
    where
        S: ParamState<F>,
    {
        if let Err(e) = check_paths(model) {
            panic!("optimizer state: {e}");
        }
        for (path, p) in params(model) {
            if let Some(s) = self.0.get(&p.id()) {
                s.export(&path, out);
            }
        }
    }

    /// Replaces the state by the one in `state` for the parameters of `model`.
    pub(crate) fn import<F: Float>(
        &mut self,
        model: &dyn Module<F>,
        state: &OptimizerState<F>,
    ) -> Result<()>
    where
        S: ParamState<F>,
    {
        check_paths(model)?;
        let params = params(model);
        // Every entry must belong to a parameter of the model.
        for name in state.tensors.keys().chain(state.scalars.keys()) {
            let known = name.starts_with("hyper.")
                || params.iter().any(|(path, _)| {
                    name.strip_prefix(path.as_str())
                        .is_some_and(|r| r.starts_with('.') && !r[1..].contains('.'))
                });
            if !known {
                return Err(PhmError::InvalidArgument {
                    what: "optimizer state",
                    reason: format!("entry `{name}` matches no parameter of the model"),
                });
            }
        }
        let mut loaded = HashMap::new();
        for (path, p) in &params {
            if let Some(s) = S::import(path, &p.shape(), state)? {
                loaded.insert(p.id(), s);
            }
        }
        self.0 = loaded;
        Ok(())
    }
}

/// `a` in standard layout (moved if it is; a loaded state could be in any layout), so an
/// update runs over contiguous slices.
pub(crate) fn standard<F: Float>(a: ArrayD<F>) -> ArrayD<F> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// The flag `name` of `state` (`hyper.amsgrad`, `hyper.nesterov`, …): exactly `0` or `1`.
///
/// # Errors
/// [`PhmError::InvalidArgument`] naming the entry if it is missing or anything else (NaN,
/// `0.5`, `2`).
pub(crate) fn flag<F: Float>(state: &OptimizerState<F>, name: &str) -> Result<bool> {
    let v = state.scalar(name)?;
    if v == 0.0 {
        Ok(false)
    } else if v == 1.0 {
        Ok(true)
    } else {
        Err(PhmError::InvalidArgument {
            what: "optimizer state",
            reason: format!("entry `{name}` must be 0 or 1, got {v}"),
        })
    }
}

/// Checks that every `hyper.*` scalar of `state` is one of `known` (no misspelt or foreign
/// hyperparameter is silently ignored).
///
/// # Errors
/// [`PhmError::InvalidArgument`] naming the first unknown entry.
pub(crate) fn check_hyper_names<F: Float>(state: &OptimizerState<F>, known: &[&str]) -> Result<()> {
    let unknown = state
        .scalars
        .keys()
        .chain(state.tensors.keys())
        .filter_map(|k| k.strip_prefix("hyper."))
        .find(|k| !known.contains(k));
    match unknown {
        Some(k) => Err(PhmError::InvalidArgument {
            what: "optimizer state",
            reason: format!("entry `hyper.{k}` is not a hyperparameter of this optimizer"),
        }),
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
