//! [`Recurrent`]: a stack of recurrent layers over `(B, T, D)` batches, optionally
//! bidirectional, with padding masks and initial and final states.

use ndarray::{s, Array2, Array3, ArrayD, ArrayView2, ArrayView3, ArrayViewD, Axis, Ix3};

use super::cell::RecurrentCell;
use super::config::RecurrentConfig;
use super::gates::{Gates, StepCache};
use super::state::{CellState, RnnState};
use crate::kernels::gemm::assert_same_shape;
use crate::module::{Module, SavedStates, StateStack};
use crate::nn::Projection;
use crate::Float;

/// What one sequence forward keeps for its backward pass.
#[derive(Debug, Clone)]
struct Saved<F> {
    batch: usize,
    steps: usize,
    mask: Option<Array2<bool>>,
    /// The step caches of every cell (layer-major, then direction), in time order of
    /// processing.
    caches: Vec<Vec<StepCache<F>>>,
}

/// A multi-layer, optionally bidirectional recurrent layer with the gates `K`
/// ([`Lstm`](super::Lstm), [`Gru`](super::Gru)); see the [module docs](super).
///
/// Parameters are visited per layer and direction as `l0.ih.*`, `l0.hh.*`,
/// `l0_reverse.ih.*`, `l1.ih.*`, … (PyTorch's `weight_ih_l0` is `l0.ih.weight`).
#[derive(Clone)]
pub struct Recurrent<F: Float, K: Gates> {
    config: RecurrentConfig<K>,
    cells: Vec<RecurrentCell<F, K>>,
    names: Vec<String>,
    saved: SavedStates<Saved<F>>,
}

/// How a direction runs: training (projections save their states) or inference.
enum Run<'a, F: Float, K: Gates> {
    Train(&'a mut RecurrentCell<F, K>),
    Infer(&'a RecurrentCell<F, K>),
}

impl<F: Float, K: Gates> Run<'_, F, K> {
    fn cell(&self) -> &RecurrentCell<F, K> {
        match self {
            Run::Train(c) => c,
            Run::Infer(c) => c,
        }
    }

    fn ih(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        match self {
            Run::Train(c) => c.ih.forward(x),
            Run::Infer(c) => c.ih.infer(x),
        }
    }

    fn hh(&mut self, h: ArrayViewD<'_, F>) -> ArrayD<F> {
        match self {
            Run::Train(c) => c.hh.forward(h),
            Run::Infer(c) => c.hh.infer(h),
        }
    }
}

/// The time steps of one direction, in processing order.
fn order(steps: usize, reverse: bool) -> Vec<usize> {
    if reverse {
        (0..steps).rev().collect()
    } else {
        (0..steps).collect()
    }
}

/// Runs one direction of one layer over `x` `(B, T, D_l)`: returns the outputs `(B, T, h)`,
/// the final state and (when training) the step caches.
fn run_direction<F: Float, K: Gates>(
    mut run: Run<'_, F, K>,
    x: ArrayViewD<'_, F>,
    mask: Option<&Array2<bool>>,
    mut state: CellState<F>,
    reverse: bool,
) -> (Array3<F>, CellState<F>, Vec<StepCache<F>>) {
    let (batch, steps) = (x.shape()[0], x.shape()[1]);
    let gi = run.ih(x);
    let gi = run.cell().gates_of(gi);
    let width = run.cell().gate_width();
    let gi = gi
        .into_shape_with_order((batch, steps, width))
        .expect("(B·T, G·h) rows are batch-major");
    let hidden = run.cell().hidden_width();
    let mut y = Array3::zeros((batch, steps, hidden));
    let training = matches!(run, Run::Train(_));
    let mut caches = Vec::new();
    for t in order(steps, reverse) {
        let gh = run.hh(state.h.view().into_dyn());
        let (mut next, cache) = run.cell().step(gi.slice(s![.., t, ..]), gh, &state);
        for b in 0..batch {
            if mask.is_some_and(|m| m[[b, t]]) {
                next.h.row_mut(b).assign(&state.h.row(b));
                if let (Some(c), Some(prev)) = (next.c.as_mut(), state.c.as_ref()) {
                    c.row_mut(b).assign(&prev.row(b));
                }
            } else {
                y.slice_mut(s![b, t, ..]).assign(&next.h.row(b));
            }
        }
        if training {
            caches.push(cache);
        }
        state = next;
    }
    (y, state, caches)
}

/// The cells of a stack, for training or inference.
enum Cells<'a, F: Float, K: Gates> {
    Train(&'a mut [RecurrentCell<F, K>]),
    Infer(&'a [RecurrentCell<F, K>]),
}

/// The forward pass of every layer and direction, shared by training and inference:
/// the top layer's outputs, the final state and (when training) every cell's step caches.
fn run_layers<F: Float, K: Gates>(
    mut cells: Cells<'_, F, K>,
    config: &RecurrentConfig<K>,
    x: ArrayViewD<'_, F>,
    mask: Option<&Array2<bool>>,
    mut state: RnnState<F>,
) -> (ArrayD<F>, RnnState<F>, Vec<Vec<StepCache<F>>>) {
    let dirs = config.directions();
    let mut input = x.to_owned();
    let mut caches = Vec::new();
    for layer in 0..config.layers {
        let mut outputs = Vec::new();
        for dir in 0..dirs {
            let index = layer * dirs + dir;
            let run = match &mut cells {
                Cells::Train(c) => Run::Train(&mut c[index]),
                Cells::Infer(c) => Run::Infer(&c[index]),
            };
            let (y, end, c) = run_direction(run, input.view(), mask, state.cell(index), dir == 1);
            state.set_cell(index, &end);
            outputs.push(y);
            caches.push(c);
        }
        let views: Vec<_> = outputs.iter().map(|y| y.view()).collect();
        input = ndarray::concatenate(Axis(2), &views)
            .expect("same (B, T)")
            .into_dyn();
    }
    (input, state, caches)
}

/// Backward of [`run_direction`] for the output gradient `dy` `(B, T, h)` and the final
/// state's gradient: adds the parameter gradients and returns `dL/dx` and the initial
/// state's gradient.
fn back_direction<F: Float, K: Gates>(
    cell: &mut RecurrentCell<F, K>,
    mut caches: Vec<StepCache<F>>,
    dy: ArrayView3<'_, F>,
    mask: Option<&Array2<bool>>,
    mut d: CellState<F>,
    reverse: bool,
) -> (ArrayD<F>, CellState<F>) {
    let (batch, steps, _) = dy.dim();
    let mut dgi = Array3::zeros((batch, steps, cell.gate_width()));
    for t in order(steps, reverse).into_iter().rev() {
        let cache = caches.pop().expect("one cache per step");
        let padded = |b: usize| mask.is_some_and(|m| m[[b, t]]);
        // dL/dh' at this step: from the output (valid rows) and from the next step.
        let mut cell_d = d.clone();
        for b in 0..batch {
            if padded(b) {
                cell_d.h.row_mut(b).fill(F::zero());
                if let Some(c) = cell_d.c.as_mut() {
                    c.row_mut(b).fill(F::zero());
                }
            } else {
                let mut row = cell_d.h.row_mut(b);
                row += &dy.slice(s![b, t, ..]);
            }
        }
        let (dg, mut prev) = cell.step_back(&cache, &cell_d);
        // Padded rows pass their state's gradient through unchanged.
        for b in (0..batch).filter(|&b| padded(b)) {
            prev.h.row_mut(b).assign(&d.h.row(b));
            if let (Some(pc), Some(dc)) = (prev.c.as_mut(), d.c.as_ref()) {
                pc.row_mut(b).assign(&dc.row(b));
            }
        }
        dgi.slice_mut(s![.., t, ..]).assign(&dg);
        d = prev;
    }
    let dx = cell.ih.backward(dgi.into_dyn().view());
    (dx, d)
}

impl<F: Float, K: Gates> Recurrent<F, K> {
    pub(super) fn from_cells(config: RecurrentConfig<K>, cells: Vec<RecurrentCell<F, K>>) -> Self {
        let dirs = config.directions();
        let names = (0..cells.len())
            .map(|i| {
                let suffix = if i % dirs == 1 { "_reverse" } else { "" };
                format!("l{}{suffix}", i / dirs)
            })
            .collect();
        Recurrent {
            config,
            cells,
            names,
            saved: SavedStates::new(),
        }
    }

    /// The configuration the layer was built from.
    pub fn config(&self) -> &RecurrentConfig<K> {
        &self.config
    }

    /// Input width `D`.
    pub fn input_width(&self) -> usize {
        self.config.input
    }

    /// Hidden width `h` of each direction.
    pub fn hidden_width(&self) -> usize {
        self.config.hidden
    }

    /// Output width: `h`, or `2h` when bidirectional.
    pub fn output_width(&self) -> usize {
        self.config.directions() * self.config.hidden
    }

    /// The projections' kind.
    pub fn projection(&self) -> Projection {
        self.config.projection
    }

    /// The cells, layer-major then direction (`l·directions + d`), with their parameter
    /// path prefixes (`"l0"`, `"l0_reverse"`, …).
    pub fn cells(&self) -> Vec<(&str, &RecurrentCell<F, K>)> {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.cells.iter())
            .collect()
    }

    /// The zero state for `batch` sequences.
    pub fn zero_state(&self, batch: usize) -> RnnState<F> {
        let shape = (self.cells.len(), batch, self.config.hidden);
        RnnState {
            h: Array3::zeros(shape),
            c: K::HAS_CELL.then(|| Array3::zeros(shape)),
        }
    }

    #[track_caller]
    fn check_state(&self, context: &str, what: &str, state: &RnnState<F>, batch: usize) {
        let shape = [self.cells.len(), batch, self.config.hidden];
        assert_same_shape(context, &format!("{what}.h"), state.h.shape(), &shape);
        match (&state.c, K::HAS_CELL) {
            (Some(c), true) => assert_same_shape(context, &format!("{what}.c"), c.shape(), &shape),
            (None, false) => {}
            (c, _) => panic!(
                "{context}: the {} {what} {} a cell state",
                K::NAME,
                if c.is_some() { "has no" } else { "needs" }
            ),
        }
    }

    /// Checks `x` is `(B, T, D)` and the mask `(B, T)`; returns `(B, T)`.
    #[track_caller]
    fn check_input(
        &self,
        context: &str,
        x: &ArrayViewD<'_, F>,
        mask: Option<&ArrayView2<'_, bool>>,
        state: Option<&RnnState<F>>,
    ) -> (usize, usize) {
        let shape = x.shape();
        if shape.len() != 3 || shape[2] != self.config.input {
            panic!(
                "{context}: input has shape {shape:?}, expected [B, T, {}]",
                self.config.input
            );
        }
        if let Some(m) = mask {
            assert_same_shape(context, "mask", m.shape(), &shape[..2]);
        }
        if let Some(s) = state {
            self.check_state(context, "initial state", s, shape[0]);
        }
        (shape[0], shape[1])
    }

    /// Training forward pass over `x` `(B, T, D)` with an optional padding mask `(B, T)`
    /// (`true` = padding; see [`padding_mask`](super::padding_mask) for lengths) and an
    /// optional initial state (zero when `None`): returns the outputs `(B, T, directions·h)`
    /// (zero at padded steps) and the final state (each sequence's state after its last
    /// valid step; for the reverse direction, after step 0).
    ///
    /// # Panics
    /// If `x` is not `(B, T, D)`, the mask not `(B, T)` or the state not
    /// `(layers·directions, B, h)` (with `c` exactly for the LSTM).
    #[track_caller]
    pub fn forward_seq(
        &mut self,
        x: ArrayViewD<'_, F>,
        mask: Option<ArrayView2<'_, bool>>,
        state: Option<&RnnState<F>>,
    ) -> (ArrayD<F>, RnnState<F>) {
        let (batch, steps) = self.check_input("Recurrent::forward_seq", &x, mask.as_ref(), state);
        let mask = mask.map(|m| m.to_owned());
        let start = state.cloned().unwrap_or_else(|| self.zero_state(batch));
        let (y, end, caches) = run_layers(
            Cells::Train(&mut self.cells),
            &self.config,
            x,
            mask.as_ref(),
            start,
        );
        self.saved.push(Saved {
            batch,
            steps,
            mask,
            caches,
        });
        (y, end)
    }

    /// Backward of the most recent [`forward_seq`](Self::forward_seq) not yet gone back
    /// through, for the output gradient `dy` `(B, T, directions·h)` and optionally the final
    /// state's gradient: adds every parameter gradient and returns `dL/dx` and the initial
    /// state's gradient.
    ///
    /// # Panics
    /// If no forward pass is left, or a gradient does not have its value's shape.
    #[track_caller]
    pub fn backward_seq(
        &mut self,
        dy: ArrayViewD<'_, F>,
        d_final: Option<&RnnState<F>>,
    ) -> (ArrayD<F>, RnnState<F>) {
        let saved = self.saved.pop(K::NAME);
        let context = "Recurrent::backward_seq";
        let (batch, steps, h) = (saved.batch, saved.steps, self.config.hidden);
        assert_same_shape(
            context,
            "dy",
            dy.shape(),
            &[batch, steps, self.output_width()],
        );
        if let Some(d) = d_final {
            self.check_state(context, "final state gradient", d, batch);
        }
        let mut d_state = d_final.cloned().unwrap_or_else(|| self.zero_state(batch));
        let dirs = self.config.directions();
        let mut dy = dy.into_dimensionality::<Ix3>().expect("checked").to_owned();
        let mut caches = saved.caches;
        for layer in (0..self.config.layers).rev() {
            let mut dx: Option<ArrayD<F>> = None;
            for dir in (0..dirs).rev() {
                let index = layer * dirs + dir;
                let c = std::mem::take(&mut caches[index]);
                let d = d_state.cell(index);
                let part = dy.slice(s![.., .., dir * h..(dir + 1) * h]);
                let (dxd, d0) = back_direction(
                    &mut self.cells[index],
                    c,
                    part,
                    saved.mask.as_ref(),
                    d,
                    dir == 1,
                );
                d_state.set_cell(index, &d0);
                match dx.as_mut() {
                    Some(acc) => *acc += &dxd,
                    None => dx = Some(dxd),
                }
            }
            dy = dx
                .expect("at least one direction")
                .into_dimensionality::<Ix3>()
                .expect("(B, T, D_l)");
        }
        (dy.into_dyn(), d_state)
    }

    /// Inference over `x` `(B, T, D)` through `&self`: the outputs and final state of
    /// [`forward_seq`](Self::forward_seq), nothing saved.
    ///
    /// # Panics
    /// As [`forward_seq`](Self::forward_seq).
    #[track_caller]
    pub fn infer_seq(
        &self,
        x: ArrayViewD<'_, F>,
        mask: Option<ArrayView2<'_, bool>>,
        state: Option<&RnnState<F>>,
    ) -> (ArrayD<F>, RnnState<F>) {
        let (batch, _) = self.check_input("Recurrent::infer_seq", &x, mask.as_ref(), state);
        let mask = mask.map(|m| m.to_owned());
        let start = state.cloned().unwrap_or_else(|| self.zero_state(batch));
        let (y, end, _) = run_layers(
            Cells::Infer(&self.cells),
            &self.config,
            x,
            mask.as_ref(),
            start,
        );
        (y, end)
    }

    /// One step of a unidirectional stack through `&self`: the top layer's output `(B, h)`
    /// for `x` `(B, D)`, updating `state` in place. Feeding a sequence step by step gives
    /// the outputs and final state of [`infer_seq`](Self::infer_seq) (generation, streaming).
    ///
    /// # Panics
    /// If the layer is bidirectional (its reverse direction needs the whole sequence), or
    /// the shapes do not fit.
    #[track_caller]
    pub fn infer_step(&self, x: ArrayView2<'_, F>, state: &mut RnnState<F>) -> Array2<F> {
        let context = "Recurrent::infer_step";
        assert!(
            !self.config.bidirectional,
            "{context}: a bidirectional layer needs the whole sequence (use infer_seq)"
        );
        self.check_state(context, "state", state, x.nrows());
        let mut input = x.to_owned();
        for (index, cell) in self.cells.iter().enumerate() {
            let next = cell.infer_step(input.view(), &state.cell(index));
            state.set_cell(index, &next);
            input = next.h;
        }
        input
    }
}

impl<F: Float, K: Gates> Module<F> for Recurrent<F, K> {
    /// [`forward_seq`](Recurrent::forward_seq) without a mask, from the zero state.
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.forward_seq(x, None, None).0
    }

    /// [`backward_seq`](Recurrent::backward_seq) with no gradient on the final state.
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.backward_seq(grad_output, None).0
    }

    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.infer_seq(x, None, None).0
    }

    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<F>)) {
        for (name, cell) in self.names.iter().zip(&self.cells) {
            f(name, cell);
        }
    }

    fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<F>)) {
        for (name, cell) in self.names.iter().zip(self.cells.iter_mut()) {
            f(name, cell);
        }
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.saved)
    }

    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "{}({} → {}, {} layer{}{}, {})",
            K::NAME,
            c.input,
            c.hidden,
            c.layers,
            if c.layers == 1 { "" } else { "s" },
            if c.bidirectional {
                ", bidirectional"
            } else {
                ""
            },
            c.projection.name()
        )
    }

    fn hyperparameters(&self) -> Vec<(String, String)> {
        let c = &self.config;
        vec![
            ("cell".into(), K::NAME.into()),
            ("input".into(), c.input.to_string()),
            ("hidden".into(), c.hidden.to_string()),
            ("layers".into(), c.layers.to_string()),
            ("bidirectional".into(), c.bidirectional.to_string()),
            ("projection".into(), c.projection.name()),
        ]
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        (input.len() == 3 && input[2] == self.config.input)
            .then(|| vec![input[0], input[1], self.output_width()])
    }
}

impl<F: Float, K: Gates> std::fmt::Debug for Recurrent<F, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
