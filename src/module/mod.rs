//! The layer contract: the [`Module`] trait, parameters with identity ([`Param`]), paths,
//! and containers ([`Sequential`]).
//!
//! # The contract
//! A module maps a tensor of any rank to another (`(…, in) → (…, out)` for the linear family,
//! element-wise for activations):
//!
//! - [`Module::forward`] computes `Y` and **pushes** what the backward pass needs on the
//!   module's own stack of saved states;
//! - [`Module::backward`] takes `dL/dY`, **pops** the most recent saved state, **adds**
//!   `dL/dθ` into each parameter's gradient (gradients accumulate until
//!   [`Module::zero_grad`]) and returns `dL/dX`;
//! - [`Module::infer`] computes `Y` through `&self`, saving nothing: inference, also from
//!   several threads at once.
//!
//! So a module can be applied several times before the backward pass — a layer tied to
//! itself, a recurrence, one block used by two branches — as long as the backward calls come
//! in the reverse order of the forward calls, which is the order reverse-mode
//! differentiation runs in anyway. Why a stack and not a tape or a returned context: the
//! manual `forward`/`backward` pair users know from PyTorch tutorials stays as it is, a
//! layer's saved state stays next to the code that reads it (typed, no `Box<dyn Any>`), and
//! the cost is one `Vec` push per call. [`Module::zero_grad`] starts a new step: it zeros the
//! gradients and drops saved states that no backward consumed (e.g. a `forward` used for
//! evaluation), so they cannot pile up; [`Module::pending`] tells how many are held.
//!
//! # Parameters: identity and paths
//! Every [`Param`] has a [`ParamId`] and is reached by a path such as
//! `"encoder.0.blocks"`: containers prefix the paths of their children with the child's
//! name ([`Module::visit_children`]). A tensor shared by several layers ([`Param::share`])
//! is visited at each place it is used, but [`params`] (and with it `num_parameters`,
//! optimizers and checkpoints) lists it once, under its first path.
//!
//! ```
//! use phm_nn::prelude::*;
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! let first = PhmLinearConfig::new(8, 8, 2).init::<f64, _>(&mut rng)?;
//! // A second layer that shares the first one's rules (Compacter-style):
//! let second = PhmLinearConfig::new(8, 4, 2).init_shared::<f64, _>(first.rules_param(), &mut rng)?;
//! let model = Sequential::new().add(first).add(Tanh::new()).add(second);
//! let paths: Vec<String> = params(&model).into_iter().map(|(path, _)| path).collect();
//! assert_eq!(paths, ["0.rules", "0.blocks", "0.bias", "2.blocks", "2.bias"]);
//! assert_eq!(model.num_parameters(), 8 + 32 + 8 + 16 + 4); // the rules counted once
//! # Ok::<(), phm_nn::PhmError>(())
//! ```
//!
//! # Models of your own
//! A model is a plain struct of modules: implement `forward`, `backward` and `infer` by
//! calling the children, and list them in `visit_children` (and `visit_children_mut`);
//! parameters, paths, counting, `zero_grad`, summaries and typed access follow. See
//! `examples/residual.rs` for a residual block and a two-branch model.
//!
//! # Writing a layer
//! A new layer goes where its family lives: `nn/` for a general layer (one file, named after
//! it), `nn/conv/`, `nn/recurrent/`, `nn/transformer/` for a layer of that family; export it
//! from `nn/mod.rs` (and the prelude if a training loop needs it). A layer that projects
//! takes a [`Projection`](crate::nn::Projection) (dense, PHM or low-rank PHM) and builds its
//! linear maps with it, as children. What it implements:
//!
//! - a config struct with `new` (required sizes) and `with_…` setters, and
//!   `init(&self, rng) -> Result<Layer>` returning a [`PhmError`](crate::PhmError) that
//!   names the bad value;
//! - [`Module::forward`]: computes `Y`, **pushes** what backward needs on its
//!   [`SavedStates`]; [`Module::backward`]: **pops** it ([`SavedStates::pop`] panics with
//!   the crate's one "backward called before forward" message), **adds** into each trainable
//!   [`Param`]'s gradient and returns `dL/dX`; [`Module::infer`]: the same `Y` through
//!   `&self`, saving nothing. Shape errors in these are panics with `#[track_caller]` and a
//!   message naming both shapes;
//! - [`Module::visit_params`] (its own tensors) or [`Module::visit_children`] and
//!   [`Module::visit_children_mut`] (its sublayers), and [`Module::saved_states`] returning
//!   its stack: `zero_grad`, [`Module::clear_saved`] and [`Module::pending`] then clear and
//!   count it with no more code;
//! - optionally [`Module::describe`], [`Module::hyperparameters`] (saved in checkpoints) and
//!   [`Module::output_shape`]; and [`Module::forward_owned`] where the layer can keep or
//!   overwrite its input instead of copying it (a composite hands its intermediates on with
//!   it). Arrays the layer is done with go back to the
//!   [buffer pool](crate::kernels::buffer_pool).
//!
//! Its tests: a finite-difference check of `backward` in `f64` (the helpers in
//! `tests/common`), a PyTorch fixture where PyTorch has the layer, `infer == forward`, and
//! the errors of its config (and `forward_owned == forward` where it overrides it).
//!
//! A layer `y = a·x` with one learned scalar `a`:
//!
//! ```
//! use phm_nn::prelude::*;
//! use phm_nn::module::{SavedStates, StateStack};
//!
//! #[derive(Debug, Clone)]
//! struct Scale {
//!     a: Param<f64>,
//!     saved: SavedStates<ArrayD<f64>>, // each forward's input, for da = Σ g·x
//! }
//!
//! impl Module<f64> for Scale {
//!     fn forward(&mut self, x: ArrayViewD<'_, f64>) -> ArrayD<f64> {
//!         self.saved.push(x.to_owned());
//!         self.infer(x)
//!     }
//!
//!     fn backward(&mut self, g: ArrayViewD<'_, f64>) -> ArrayD<f64> {
//!         let x = self.saved.pop("Scale");
//!         assert_eq!(g.shape(), x.shape(), "Scale::backward: grad_output shape");
//!         let a = self.a.value()[0];
//!         let mut p = self.a.write();
//!         if p.is_trainable() {
//!             p.grad_mut()[0] += (&g * &x).sum();
//!         }
//!         g.mapv(|v| v * a)
//!     }
//!
//!     fn infer(&self, x: ArrayViewD<'_, f64>) -> ArrayD<f64> {
//!         let a = self.a.value()[0];
//!         x.mapv(|v| v * a)
//!     }
//!
//!     fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<f64>)) {
//!         f("a", &self.a);
//!     }
//!
//!     fn saved_states(&self) -> Option<&dyn StateStack> {
//!         Some(&self.saved)
//!     }
//! }
//!
//! let mut layer = Scale { a: Param::new(ArrayD::from_elem(IxDyn(&[1]), 2.0)), saved: SavedStates::new() };
//! let x = ArrayD::from_elem(IxDyn(&[2, 3]), 1.5);
//! layer.forward(x.view());
//! layer.forward(x.view()); // applied twice before one backward pass
//! assert_eq!(layer.pending(), 2);
//! let dx = layer.backward(ArrayD::ones(IxDyn(&[2, 3])).view());
//! assert_eq!(dx, ArrayD::from_elem(IxDyn(&[2, 3]), 2.0)); // dL/dx = a·g
//! assert_eq!(layer.a.grad()[0], 6.0 * 1.5); // dL/da = Σ g·x
//! layer.zero_grad(); // drops the forward nobody went back through
//! assert_eq!(layer.pending(), 0);
//! ```
//!
//! ## A worked example: the LSTM cell
//! [`LstmCell`](crate::nn::recurrent::LstmCell) (`nn/recurrent/`) is a layer with children
//! and a state of its own, applied at every time step. Its parts, each in its own file:
//!
//! - `gates.rs` / `lstm.rs`: the equations of one step on the gate pre-activations, forward
//!   and backward, written once (`LstmGates`, and `GruGates` beside it);
//! - `config.rs`: `LstmConfig::new(input, hidden)`, `with_projection(…)`, `init_cell(shared,
//!   rng)`, which builds the two children with [`Projection::build`](crate::nn::Projection::build)
//!   (`ih`: input → 4h, `hh`: h → 4h) and returns typed errors for sizes that `n` does not
//!   divide;
//! - `cell.rs`: `forward_step` calls `ih.forward` and `hh.forward` (the children push their
//!   own states) and pushes the step's gate activations on the cell's [`SavedStates`];
//!   `backward_step` pops them, goes back through the gate equations, then through
//!   `hh.backward` and `ih.backward`; `visit_children` lists `ih` and `hh` (so parameters are
//!   `ih.weight`, `hh.rules`, …) and `saved_states` hands over the stack.
//!
//! Backpropagation through time is then nothing new: `T` forward steps push `T` states on the
//! cell and on each child, and `T` backward steps in reverse order pop them, each child's
//! gradients accumulating over the steps. The sequence layer
//! ([`Lstm`](crate::nn::recurrent::Lstm), `sequence.rs`) runs the same pieces with the input
//! projection applied to all steps at once.
//!
//! ```
//! use phm_nn::prelude::*;
//! use phm_nn::nn::recurrent::{CellState, LstmConfig};
//! let mut rng = StdRng::seed_from_u64(0);
//! let mut cell = LstmConfig::new(4, 4)
//!     .with_projection(Projection::phm(2))
//!     .init_cell::<f64, _>(None, &mut rng)?;
//! let xs: Vec<Array2<f64>> = (0..5).map(|t| Array2::from_elem((2, 4), 0.1 * t as f64)).collect();
//! let mut state = cell.zero_state(2); // h and c, (B, h) each
//! for x in &xs {
//!     state = cell.forward_step(x.view(), &state);
//! }
//! assert_eq!(cell.pending(), 3 * 5); // per step: the cell's gates, ih's input, hh's input
//! // dL/dh_T = 1: back through the five steps, last first.
//! let mut d = CellState { h: Array2::ones((2, 4)), c: Some(Array2::zeros((2, 4))) };
//! for _ in 0..5 {
//!     let (_dx, d_prev) = cell.backward_step(&d);
//!     d = d_prev;
//! }
//! assert_eq!(cell.pending(), 0);
//! # Ok::<(), PhmError>(())
//! ```

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;

use ndarray::{ArrayD, ArrayViewD};

use crate::Float;

mod param;
mod saved;
pub mod sequential;
mod summary;

pub use param::{clone_model, Param, ParamId, ParamMut, ParamRef};
pub use saved::{SavedStates, StateStack};
pub use sequential::Sequential;
pub use summary::{summary, Summary, SummaryRow};

/// A differentiable layer or model with a manual forward/backward pass; see the
/// [module docs](self) for the contract.
///
/// Every module is `Clone + Send + Sync + Debug + 'static`, so a model can be snapshotted,
/// printed, sent to another thread and served from several threads through `&model`.
pub trait Module<F: Float>: CloneModule<F> + Any + Send + Sync + Debug {
    /// Training forward pass: returns the output and pushes what
    /// [`backward`](Module::backward) needs on the module's stack of saved states.
    ///
    /// # Panics
    /// If `x` does not fit the module (e.g. its last axis is not the input width); the
    /// message names both shapes.
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F>;

    /// [`forward`](Module::forward) on an input the caller gives up: the same output and the
    /// same saved state, but a layer that saves its input (or computes in place) may keep
    /// this array instead of copying it. The default runs `forward` on a view and gives the
    /// array to the crate's [buffer pool](crate::kernels::buffer_pool). The crate's
    /// composite layers pass their intermediates this way.
    ///
    /// ```
    /// use phm_nn::{LinearConfig, Module};
    /// let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    /// let mut a = LinearConfig::new(4, 3).init::<f64, _>(&mut rng)?;
    /// let mut b = a.clone();
    /// let x = ndarray::ArrayD::from_elem(vec![2, 4], 0.5);
    /// assert_eq!(a.forward(x.view()), b.forward_owned(x));
    /// # Ok::<(), phm_nn::PhmError>(())
    /// ```
    ///
    /// # Panics
    /// As [`forward`](Module::forward).
    fn forward_owned(&mut self, x: ArrayD<F>) -> ArrayD<F> {
        crate::kernels::buffer_pool::consume(x, |x| self.forward(x))
    }

    /// Backward pass for the most recent [`forward`](Module::forward) not yet gone back
    /// through: adds the parameter gradients into each trainable [`Param`] and returns
    /// `dL/dX`.
    ///
    /// # Panics
    /// If no saved forward state is left, or `grad_output` does not have the shape of that
    /// forward's output; the message names both shapes.
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F>;

    /// Inference forward pass through `&self`: the same output as `forward`, nothing saved.
    ///
    /// # Panics
    /// As [`forward`](Module::forward).
    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F>;

    /// Calls `f(path, param)` for every parameter of this module and its children, trainable
    /// or frozen, in a stable order; a shared tensor is visited at every place it is used
    /// ([`params`] lists each once). Leaf layers list their own tensors; the default walks
    /// [`visit_children`](Module::visit_children) and prefixes each child's paths with its
    /// name.
    fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<F>)) {
        self.visit_children(&mut |name, child| {
            child.visit_params(&mut |path, p| f(&format!("{name}.{path}"), p));
        });
    }

    /// Calls `f(name, child)` for every direct child module, in order (containers and models
    /// of your own; leaf layers have none).
    fn visit_children<'a>(&'a self, _f: &mut dyn FnMut(&str, &'a dyn Module<F>)) {}

    /// [`visit_children`](Module::visit_children) with mutable access, same order and names.
    fn visit_children_mut<'a>(&'a mut self, _f: &mut dyn FnMut(&str, &'a mut dyn Module<F>)) {}

    /// This module's own stack of saved forward states (not its children's), if it keeps
    /// one: a layer that saves state holds a [`SavedStates`] and returns it here, and the
    /// defaults of [`clear_saved`](Module::clear_saved) and [`pending`](Module::pending)
    /// count and clear it with the children's. The default (`None`) is for modules that save
    /// nothing of their own (containers, models made of layers).
    fn saved_states(&self) -> Option<&dyn StateStack> {
        None
    }

    /// Drops every saved forward state (of this module and its children).
    fn clear_saved(&mut self) {
        if let Some(saved) = self.saved_states() {
            saved.discard();
        }
        self.visit_children_mut(&mut |_, child| child.clear_saved());
    }

    /// Number of saved forward states not yet consumed by a backward pass, over this module
    /// and its children.
    fn pending(&self) -> usize {
        let mut count = self.saved_states().map_or(0, |saved| saved.pending());
        self.visit_children(&mut |_, child| count += child.pending());
        count
    }

    /// A one-line description for summaries, e.g. `PhmLinear(64 → 32, n = 4, learned rules)`.
    fn describe(&self) -> String {
        let full = std::any::type_name::<Self>();
        let base = full.split('<').next().unwrap_or(full);
        base.rsplit("::").next().unwrap_or(base).to_string()
    }

    /// The layer's hyperparameters as `(name, value)` text, e.g. `("n", "4")`, saved in the
    /// metadata of checkpoints ([`crate::io`]). Leaf layers with a configuration list it
    /// (sizes, `n`, rule kind, strategy); the default lists nothing.
    fn hyperparameters(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The output shape for an input of `input` shape, when the module can tell without
    /// computing (`None` if it cannot, or the input does not fit).
    fn output_shape(&self, _input: &[usize]) -> Option<Vec<usize>> {
        None
    }

    /// Whether the children run one after another on the output of the previous one (as in
    /// [`Sequential`]); summaries then chain their shapes.
    fn is_chain(&self) -> bool {
        false
    }

    /// Starts a new step: sets every gradient to zero (once per shared tensor) and drops
    /// saved forward states that no backward consumed.
    fn zero_grad(&mut self) {
        for (_, p) in params(self) {
            p.zero_grad();
        }
        self.clear_saved();
    }

    /// Number of trainable scalars, each shared tensor counted once (frozen parameters are
    /// not counted).
    fn num_parameters(&self) -> usize {
        params(self)
            .iter()
            .filter(|(_, p)| p.is_trainable())
            .map(|(_, p)| p.len())
            .sum()
    }

    /// Number of frozen scalars (e.g. fixed algebra rules), each shared tensor counted once.
    fn num_frozen_parameters(&self) -> usize {
        params(self)
            .iter()
            .filter(|(_, p)| !p.is_trainable())
            .map(|(_, p)| p.len())
            .sum()
    }
}

/// Object-safe cloning of modules (`Box<dyn Module<F>>: Clone`); implemented for every
/// `Module + Clone`, nothing to write by hand.
pub trait CloneModule<F: Float> {
    /// A deep copy of the module, boxed.
    fn clone_box(&self) -> Box<dyn Module<F>>;
}

impl<F: Float, M: Module<F> + Clone> CloneModule<F> for M {
    fn clone_box(&self) -> Box<dyn Module<F>> {
        Box::new(self.clone())
    }
}

impl<F: Float> Clone for Box<dyn Module<F>> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// Every distinct parameter tensor of `model` with its first path, in visiting order: the
/// list optimizers, `num_parameters` and checkpoints use. The handles share the model's
/// tensors ([`Param::share`]).
pub fn params<F: Float, M: Module<F> + ?Sized>(model: &M) -> Vec<(String, Param<F>)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    model.visit_params(&mut |path, p| {
        if seen.insert(p.id()) {
            out.push((path.to_string(), p.share()));
        }
    });
    out
}

/// Every module of type `T` inside `model` (the model itself included), with its path
/// (`""` for the model itself), in visiting order.
///
/// ```
/// use phm_nn::prelude::*;
/// use phm_nn::module::find_all;
/// let mut rng = StdRng::seed_from_u64(0);
/// let model = Sequential::<f32>::new()
///     .add(PhmLinearConfig::new(8, 8, 4).init(&mut rng)?)
///     .add(Relu::new())
///     .add(PhmLinearConfig::new(8, 2, 2).init(&mut rng)?);
/// let n: Vec<(String, usize)> = find_all::<f32, PhmLinear<f32>>(&model)
///     .into_iter().map(|(path, l)| (path, l.shape().n())).collect();
/// assert_eq!(n, [("0".to_string(), 4), ("2".to_string(), 2)]);
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
pub fn find_all<F: Float, T: Module<F>>(model: &dyn Module<F>) -> Vec<(String, &T)> {
    let mut out = Vec::new();
    collect(model, String::new(), &mut out);
    out
}

fn collect<'a, F: Float, T: Module<F>>(
    m: &'a dyn Module<F>,
    path: String,
    out: &mut Vec<(String, &'a T)>,
) {
    if let Some(t) = (m as &dyn Any).downcast_ref::<T>() {
        out.push((path.clone(), t));
    }
    m.visit_children(&mut |name, child| collect(child, join(&path, name), out));
}

/// Calls `f(path, layer)` for every module of type `T` inside `model` (the model itself
/// included), with mutable access: e.g. `cache_weight()` on every PHM layer of a trained
/// model before serving it.
///
/// ```
/// use phm_nn::prelude::*;
/// use phm_nn::module::for_each_mut;
/// let mut rng = StdRng::seed_from_u64(0);
/// let mut model = Sequential::<f32>::new()
///     .add(PhmLinearConfig::new(8, 8, 4).init(&mut rng)?)
///     .add(Relu::new());
/// for_each_mut::<f32, PhmLinear<f32>>(&mut model, &mut |_, layer| layer.cache_weight().unwrap());
/// assert!(model.get::<PhmLinear<f32>>(0).unwrap().weight_is_current());
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
pub fn for_each_mut<F: Float, T: Module<F>>(
    model: &mut dyn Module<F>,
    f: &mut dyn FnMut(&str, &mut T),
) {
    visit_mut(model, String::new(), f);
}

fn visit_mut<F: Float, T: Module<F>>(
    m: &mut dyn Module<F>,
    path: String,
    f: &mut dyn FnMut(&str, &mut T),
) {
    if let Some(t) = (m as &mut dyn Any).downcast_mut::<T>() {
        f(&path, t);
        return;
    }
    m.visit_children_mut(&mut |name, child| visit_mut(child, join(&path, name), f));
}

/// Checks that every path in `model` names one thing: no two modules share a path (a
/// [`Module::visit_children`] that gives two children the same name, or a name with a `.`
/// that collides with a nested path), and no two different parameter tensors share a path.
/// Checkpoints ([`crate::io`]), optimizer state ([`crate::optim::Optimizer::load_state`]) and
/// [`summary`] key everything by path, so they refuse such a model instead of silently
/// keeping one of the two.
///
/// ```
/// use phm_nn::prelude::*;
/// use phm_nn::module::check_paths;
/// let model = Sequential::<f32>::new().add(Relu::new()).add(Tanh::new());
/// check_paths(&model)?; // "0" and "1"
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
///
/// # Errors
/// [`PhmError::InvalidArgument`](crate::PhmError::InvalidArgument) naming the first path that
/// is used twice.
pub fn check_paths<F: Float>(model: &dyn Module<F>) -> crate::error::Result<()> {
    let mut modules = HashSet::new();
    modules.insert(String::new());
    check_module_paths(model, String::new(), &mut modules)?;
    let mut tensors: HashMap<String, ParamId> = HashMap::new();
    let mut clash = None;
    model.visit_params(&mut |path, p| match tensors.get(path) {
        Some(id) if *id != p.id() && clash.is_none() => clash = Some(path.to_string()),
        Some(_) => {}
        None => {
            tensors.insert(path.to_string(), p.id());
        }
    });
    match clash {
        Some(path) => Err(duplicate(&path, "parameter tensors")),
        None => Ok(()),
    }
}

fn check_module_paths<F: Float>(
    m: &dyn Module<F>,
    path: String,
    seen: &mut HashSet<String>,
) -> crate::error::Result<()> {
    let mut result = Ok(());
    m.visit_children(&mut |name, child| {
        if result.is_err() {
            return;
        }
        let child_path = join(&path, name);
        result = if seen.insert(child_path.clone()) {
            check_module_paths(child, child_path, seen)
        } else {
            Err(duplicate(&child_path, "modules"))
        };
    });
    result
}

fn duplicate(path: &str, what: &str) -> crate::PhmError {
    crate::PhmError::InvalidArgument {
        what: "model",
        reason: format!(
            "two different {what} have the path `{path}` (does `visit_children` give two \
             children the same name?); checkpoints, optimizer state and summaries need every \
             path to name one thing"
        ),
    }
}

/// `prefix.name`, or `name` at the root.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
