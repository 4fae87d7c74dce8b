//! [`RecurrentCell`]: one step of an LSTM or GRU, `(x, state) → state'`, with its two
//! projections; the building block of [`Recurrent`](super::Recurrent).

use std::marker::PhantomData;

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, Ix2};

use super::gates::{to_component_major, to_gate_major, Gates, StepCache};
use super::state::CellState;
use crate::kernels::gemm::assert_same_shape;
use crate::kernels::shapes::into_matrix;
use crate::module::{Module, SavedStates, StateStack};
use crate::nn::Projection;
use crate::Float;

/// One recurrent cell with the gates `K` ([`LstmCell`](super::LstmCell),
/// [`GruCell`](super::GruCell)): input projection `ih` (`D → G·h`) and hidden projection
/// `hh` (`h → G·h`), each dense, PHM or low-rank PHM with a bias.
///
/// The step API is [`forward_step`](Self::forward_step) / [`backward_step`](Self::backward_step)
/// (a stack: backward steps in the reverse order of the forward steps) and
/// [`infer_step`](Self::infer_step). As a [`Module`], the cell maps `x` `(B, D)` to `h'`
/// `(B, h)` from the zero state.
///
/// Parameters are visited as `ih.*` and `hh.*` (e.g. `ih.weight`, `ih.bias`, or
/// `ih.rules`, `ih.blocks`, `ih.bias` for PHM).
#[derive(Clone)]
pub struct RecurrentCell<F: Float, K: Gates> {
    pub(super) ih: Box<dyn Module<F>>,
    pub(super) hh: Box<dyn Module<F>>,
    input: usize,
    hidden: usize,
    projection: Projection,
    saved: SavedStates<StepCache<F>>,
    gates: PhantomData<K>,
}

impl<F: Float, K: Gates> RecurrentCell<F, K> {
    pub(super) fn from_projections(
        ih: Box<dyn Module<F>>,
        hh: Box<dyn Module<F>>,
        input: usize,
        hidden: usize,
        projection: Projection,
    ) -> Self {
        RecurrentCell {
            ih,
            hh,
            input,
            hidden,
            projection,
            saved: SavedStates::new(),
            gates: PhantomData,
        }
    }

    /// Input width `D`.
    pub fn input_width(&self) -> usize {
        self.input
    }

    /// Hidden width `h`.
    pub fn hidden_width(&self) -> usize {
        self.hidden
    }

    /// The projections' kind.
    pub fn projection(&self) -> Projection {
        self.projection
    }

    /// The input and hidden projections, in that order.
    pub fn projections(&self) -> [&dyn Module<F>; 2] {
        [&*self.ih, &*self.hh]
    }

    /// The zero state for `batch` sequences (`c` only for the LSTM).
    pub fn zero_state(&self, batch: usize) -> CellState<F> {
        CellState {
            h: Array2::zeros((batch, self.hidden)),
            c: K::HAS_CELL.then(|| Array2::zeros((batch, self.hidden))),
        }
    }

    /// `G·h`, the width of each projection's output.
    pub(super) fn gate_width(&self) -> usize {
        K::GATES * self.hidden
    }

    /// A projection's output `(…, G·h)`, component-major, as a gate-major matrix.
    pub(super) fn gates_of(&self, z: ArrayD<F>) -> Array2<F> {
        to_gate_major(
            into_matrix(z, self.gate_width()),
            self.projection.n(),
            K::GATES,
        )
    }

    /// The cell equations for gate-major `gi` and the hidden projection's output `gh`.
    pub(super) fn step(
        &self,
        gi: ArrayView2<'_, F>,
        gh: ArrayD<F>,
        state: &CellState<F>,
    ) -> (CellState<F>, StepCache<F>) {
        let gh = self.gates_of(gh);
        let none = Array2::zeros((0, 0));
        let c = state.c.as_ref().unwrap_or(&none);
        let (h, c, cache) = K::step(gi, gh.view(), state.h.view(), c.view());
        (
            CellState {
                h,
                c: K::HAS_CELL.then_some(c),
            },
            cache,
        )
    }

    /// Backward of [`step`](Self::step) through the cell equations and the hidden
    /// projection: returns `dgi` (component-major, for the input projection) and the
    /// gradient of the previous state.
    pub(super) fn step_back(
        &mut self,
        cache: &StepCache<F>,
        d: &CellState<F>,
    ) -> (Array2<F>, CellState<F>) {
        let none = Array2::zeros((0, 0));
        let dc = d.c.as_ref().unwrap_or(&none);
        let grads = K::back(cache, d.h.view(), dc.view());
        let n = self.projection.n();
        let dgi = to_component_major(grads.dgi, n, K::GATES);
        let dgh = match grads.dgh {
            Some(dgh) => to_component_major(dgh, n, K::GATES),
            None => dgi.clone(),
        };
        let mut dh = grads.dh;
        dh += &into_matrix(self.hh.backward(dgh.into_dyn().view()), self.hidden);
        (
            dgi,
            CellState {
                h: dh,
                c: K::HAS_CELL.then_some(grads.dc),
            },
        )
    }

    #[track_caller]
    fn check_step(&self, context: &str, x: &ArrayView2<'_, F>, state: &CellState<F>) {
        let batch = x.nrows();
        assert_same_shape(context, "x", x.shape(), &[batch, self.input]);
        assert_same_shape(context, "h", state.h.shape(), &[batch, self.hidden]);
        match (&state.c, K::HAS_CELL) {
            (Some(c), true) => assert_same_shape(context, "c", c.shape(), &[batch, self.hidden]),
            (None, false) => {}
            (c, _) => panic!(
                "{context}: the {} state {} a cell state",
                K::NAME,
                if c.is_some() { "has no" } else { "needs" }
            ),
        }
    }

    /// One training step: the new state for input `x` `(B, D)` and `state`; saves what
    /// [`backward_step`](Self::backward_step) needs.
    ///
    /// # Panics
    /// If `x` is not `(B, D)` or the state is not `(B, h)` (with `c` exactly for the LSTM).
    #[track_caller]
    pub fn forward_step(&mut self, x: ArrayView2<'_, F>, state: &CellState<F>) -> CellState<F> {
        self.check_step("RecurrentCell::forward_step", &x, state);
        let gi = self.ih.forward(x.into_dyn());
        let gi = self.gates_of(gi);
        let gh = self.hh.forward(state.h.view().into_dyn());
        let (next, cache) = self.step(gi.view(), gh, state);
        self.saved.push(cache);
        next
    }

    /// Backward of the most recent [`forward_step`](Self::forward_step) not yet gone back
    /// through, for the gradient `d` of its new state (`d.c` for the LSTM): adds the
    /// parameter gradients and returns `dL/dx` and the gradient of the previous state.
    ///
    /// # Panics
    /// If no forward step is left, or `d` does not have the state's shapes.
    #[track_caller]
    pub fn backward_step(&mut self, d: &CellState<F>) -> (Array2<F>, CellState<F>) {
        let cache = self.saved.pop("RecurrentCell");
        let batch = cache.gates.nrows();
        let zeros = Array2::zeros((batch, self.input));
        self.check_step("RecurrentCell::backward_step", &zeros.view(), d);
        let (dgi, prev) = self.step_back(&cache, d);
        let dx = into_matrix(self.ih.backward(dgi.into_dyn().view()), self.input);
        (dx, prev)
    }

    /// One inference step through `&self`: the new state for `x` `(B, D)` and `state`.
    ///
    /// # Panics
    /// As [`forward_step`](Self::forward_step).
    #[track_caller]
    pub fn infer_step(&self, x: ArrayView2<'_, F>, state: &CellState<F>) -> CellState<F> {
        self.check_step("RecurrentCell::infer_step", &x, state);
        let gi = self.gates_of(self.ih.infer(x.into_dyn()));
        let gh = self.hh.infer(state.h.view().into_dyn());
        self.step(gi.view(), gh, state).0
    }

    #[track_caller]
    fn matrix<'a>(context: &str, x: ArrayViewD<'a, F>) -> ArrayView2<'a, F> {
        let shape = x.shape().to_vec();
        x.into_dimensionality::<Ix2>()
            .unwrap_or_else(|_| panic!("{context}: input has shape {shape:?}, expected [B, D]"))
    }
}

impl<F: Float, K: Gates> Module<F> for RecurrentCell<F, K> {
    /// `h'` `(B, h)` for `x` `(B, D)` from the zero state.
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let x = Self::matrix("RecurrentCell::forward", x);
        let state = self.zero_state(x.nrows());
        self.forward_step(x, &state).h.into_dyn()
    }

    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let dh = Self::matrix("RecurrentCell::backward", grad_output).to_owned();
        let batch = dh.nrows();
        let d = CellState {
            h: dh,
            c: K::HAS_CELL.then(|| Array2::zeros((batch, self.hidden))),
        };
        self.backward_step(&d).0.into_dyn()
    }

    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let x = Self::matrix("RecurrentCell::infer", x);
        self.infer_step(x, &self.zero_state(x.nrows())).h.into_dyn()
    }

    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<F>)) {
        f("ih", &*self.ih);
        f("hh", &*self.hh);
    }

    fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<F>)) {
        f("ih", &mut *self.ih);
        f("hh", &mut *self.hh);
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.saved)
    }

    fn describe(&self) -> String {
        format!(
            "{}Cell({} → {}, {})",
            K::NAME,
            self.input,
            self.hidden,
            self.projection.name()
        )
    }

    fn hyperparameters(&self) -> Vec<(String, String)> {
        vec![
            ("cell".into(), K::NAME.into()),
            ("input".into(), self.input.to_string()),
            ("hidden".into(), self.hidden.to_string()),
            ("projection".into(), self.projection.name()),
        ]
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        (input.len() == 2 && input[1] == self.input).then(|| vec![input[0], self.hidden])
    }
}

impl<F: Float, K: Gates> std::fmt::Debug for RecurrentCell<F, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
