//! Recurrent layers (LSTM, GRU): finite-difference checks of backpropagation through time in
//! f64 (masks, initial and final states, both directions, several layers, every projection
//! kind), the cell step API, step-by-step inference, padding against separate sequences,
//! parameter counts, errors and panics. PyTorch parity is in `recurrent_fixtures.rs`.

mod common;

use common::{assert_close, check_gradients_d, rng, uniform_d};
use ndarray::{s, Array2, Array3, ArrayD, ArrayViewD, Axis, IxDyn};
use phm_nn::module::params;
use phm_nn::nn::recurrent::{
    padding_mask, CellState, Gates, GruCell, GruGates, LstmCell, LstmGates, Recurrent,
    RecurrentConfig, RnnState,
};
use phm_nn::nn::Projection;
use phm_nn::prelude::*;

const TOL: f64 = 1e-6;

fn kinds() -> Vec<Projection> {
    vec![
        Projection::Dense,
        Projection::phm(2),
        Projection::low_rank(2, 1),
        Projection::Phm {
            n: 4,
            rule: Rule::Fixed(Algebra::Quaternion),
        },
    ]
}

/// A recurrent layer with a fixed padding mask whose initial state is a parameter and whose
/// output is `[y, h_n, c_n]` flattened: `check_gradients_d` then checks the gradients of the
/// input, the initial state and every weight through outputs and final states together.
#[derive(Clone, Debug)]
struct WithState<K: Gates> {
    rnn: Recurrent<f64, K>,
    mask: Option<Array2<bool>>,
    h0: Param<f64>,
    c0: Option<Param<f64>>,
    /// `(B, T, out)` of the last input.
    dims: (usize, usize, usize),
}

impl<K: Gates> WithState<K> {
    fn new(rnn: Recurrent<f64, K>, batch: usize, mask: Option<Array2<bool>>, seed: u64) -> Self {
        let shape = rnn.zero_state(batch).h.shape().to_vec();
        let mut r = rng(seed);
        let h0 = Param::new(uniform_d(&mut r, &shape));
        let c0 = K::HAS_CELL.then(|| Param::new(uniform_d(&mut r, &shape)));
        WithState {
            rnn,
            mask,
            h0,
            c0,
            dims: (0, 0, 0),
        }
    }

    fn state(&self) -> RnnState<f64> {
        let to3 = |p: &Param<f64>| p.value().into_dimensionality().unwrap();
        RnnState {
            h: to3(&self.h0),
            c: self.c0.as_ref().map(to3),
        }
    }

    fn flatten(y: ArrayD<f64>, s: RnnState<f64>) -> ArrayD<f64> {
        let mut all: Vec<f64> = y.iter().copied().collect();
        all.extend(s.h.iter());
        if let Some(c) = s.c {
            all.extend(c.iter());
        }
        ArrayD::from_shape_vec(IxDyn(&[all.len()]), all).unwrap()
    }
}

impl<K: Gates> Module<f64> for WithState<K> {
    fn forward(&mut self, x: ArrayViewD<'_, f64>) -> ArrayD<f64> {
        let state = self.state();
        let mask = self.mask.clone();
        let (y, s) = self
            .rnn
            .forward_seq(x, mask.as_ref().map(|m| m.view()), Some(&state));
        self.dims = (y.shape()[0], y.shape()[1], y.shape()[2]);
        Self::flatten(y, s)
    }

    fn backward(&mut self, g: ArrayViewD<'_, f64>) -> ArrayD<f64> {
        let (b, t, o) = self.dims;
        let g: Vec<f64> = g.iter().copied().collect();
        let dy = ArrayD::from_shape_vec(IxDyn(&[b, t, o]), g[..b * t * o].to_vec()).unwrap();
        let shape = self.h0.shape();
        let len = self.h0.len();
        let part = |k: usize| {
            Array3::from_shape_vec(
                (shape[0], shape[1], shape[2]),
                g[b * t * o + k * len..b * t * o + (k + 1) * len].to_vec(),
            )
            .unwrap()
        };
        let d_final = RnnState {
            h: part(0),
            c: self.c0.as_ref().map(|_| part(1)),
        };
        let (dx, d0) = self.rnn.backward_seq(dy.view(), Some(&d_final));
        {
            let mut w = self.h0.write();
            let mut g = w.grad_mut();
            g += &d0.h.into_dyn();
        }
        if let (Some(c0), Some(dc)) = (&self.c0, d0.c) {
            let mut w = c0.write();
            let mut g = w.grad_mut();
            g += &dc.into_dyn();
        }
        dx
    }

    fn infer(&self, x: ArrayViewD<'_, f64>) -> ArrayD<f64> {
        let (y, s) =
            self.rnn
                .infer_seq(x, self.mask.as_ref().map(|m| m.view()), Some(&self.state()));
        Self::flatten(y, s)
    }

    fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<f64>)) {
        self.rnn
            .visit_params(&mut |path, p| f(&format!("rnn.{path}"), p));
        f("h0", &self.h0);
        if let Some(c0) = &self.c0 {
            f("c0", c0);
        }
    }

    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<f64>)) {
        f("rnn", &self.rnn);
    }

    fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<f64>)) {
        f("rnn", &mut self.rnn);
    }
}

fn config<K: Gates>(d: usize, h: usize, projection: Projection) -> RecurrentConfig<K> {
    RecurrentConfig::<K>::new(d, h).with_projection(projection)
}

/// Every projection kind, one layer, no mask, through the plain `Module` interface.
fn plain_gradients<K: Gates>() {
    for (i, kind) in kinds().into_iter().enumerate() {
        let mut rnn = config::<K>(4, 4, kind)
            .init::<f64, _>(None, &mut rng(10 + i as u64))
            .unwrap();
        let x = uniform_d(&mut rng(20 + i as u64), &[2, 3, 4]);
        check_gradients_d(&mut rnn, &x, 30 + i as u64, TOL);
    }
}

/// Two bidirectional layers, a padding mask (lengths 4, 2, 0 of 4), initial states and the
/// gradient of the final states.
fn masked_bidirectional_gradients<K: Gates>() {
    for (i, kind) in [Projection::Dense, Projection::phm(2)]
        .into_iter()
        .enumerate()
    {
        let rnn = config::<K>(4, 2, kind)
            .with_layers(2)
            .with_bidirectional(true)
            .init::<f64, _>(None, &mut rng(40 + i as u64))
            .unwrap();
        let mask = padding_mask(&[4, 2, 0], 4).unwrap();
        let mut m = WithState::new(rnn, 3, Some(mask), 50 + i as u64);
        let x = uniform_d(&mut rng(60 + i as u64), &[3, 4, 4]);
        check_gradients_d(&mut m, &x, 70 + i as u64, TOL);
    }
    // A mask with holes (state frozen at every padded step, not only at the end).
    let rnn = config::<K>(2, 2, Projection::Dense)
        .with_bidirectional(true)
        .init::<f64, _>(None, &mut rng(80))
        .unwrap();
    let mask = Array2::from_shape_fn((2, 5), |(b, t)| (b + t) % 3 == 1);
    let mut m = WithState::new(rnn, 2, Some(mask), 81);
    check_gradients_d(&mut m, &uniform_d(&mut rng(82), &[2, 5, 2]), 83, TOL);
}

#[test]
fn lstm_gradients_match_finite_differences() {
    plain_gradients::<LstmGates>();
    masked_bidirectional_gradients::<LstmGates>();
}

#[test]
fn gru_gradients_match_finite_differences() {
    plain_gradients::<GruGates>();
    masked_bidirectional_gradients::<GruGates>();
}

#[test]
fn shared_rules_take_the_gradient_of_every_projection() {
    let kind = Projection::phm(2);
    let mut r = rng(90);
    let rules = kind.new_rules::<f64, _>(&mut r).unwrap().unwrap();
    let mut lstm = config::<LstmGates>(4, 4, kind)
        .with_layers(2)
        .init::<f64, _>(Some(&rules), &mut r)
        .unwrap();
    // 2 layers × 2 projections, rules counted once: 8 + Σ (blocks + bias).
    let blocks = (16 * 4 / 2 + 16) * 4;
    assert_eq!(lstm.num_parameters(), 8 + blocks);
    let names: Vec<String> = params(&lstm).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.iter().filter(|n| n.ends_with("rules")).count(), 1);
    check_gradients_d(&mut lstm, &uniform_d(&mut rng(91), &[2, 3, 4]), 92, TOL);
}

/// Cells: the `Module` interface (zero state) and `forward_step`/`backward_step` over a
/// sequence give the sequence layer's outputs, final state and gradients.
fn cell_steps_match_the_sequence<K: Gates>() {
    let kind = Projection::phm(2);
    let cfg = config::<K>(4, 2, kind);
    let mut cell = cfg.init_cell::<f64, _>(None, &mut rng(99)).unwrap();
    check_gradients_d(&mut cell, &uniform_d(&mut rng(101), &[3, 4]), 102, TOL);
    let mut cell = cfg.init_cell::<f64, _>(None, &mut rng(100)).unwrap();

    let mut seq = cfg.init::<f64, _>(None, &mut rng(100)).unwrap();
    // Same draws: the same parameters.
    for ((a, p), (b, q)) in params(&cell).iter().zip(params(&seq).iter()) {
        assert_eq!(format!("l0.{a}"), *b);
        assert_eq!(p.value(), q.value());
    }
    let x = uniform_d(&mut rng(103), &[2, 3, 4]);
    let g = uniform_d(&mut rng(104), &[2, 3, 2]);
    seq.zero_grad();
    let (y, last) = seq.forward_seq(x.view(), None, None);
    let (dx, _) = seq.backward_seq(g.view(), None);

    cell.zero_grad();
    let mut state = cell.zero_state(2);
    for t in 0..3 {
        state = cell.forward_step(x.slice(s![.., t, ..]), &state);
        for (a, b) in state.h.iter().zip(y.slice(s![.., t, ..]).iter()) {
            assert_close(*a, *b, 1e-12, "cell step vs sequence output");
        }
    }
    assert_eq!(state.h, last.cell(0).h);
    let mut d = CellState {
        h: Array2::zeros((2, 2)),
        c: K::HAS_CELL.then(|| Array2::zeros((2, 2))),
    };
    for t in (0..3).rev() {
        d.h += &g.slice(s![.., t, ..]);
        let (dxt, prev) = cell.backward_step(&d);
        for (a, b) in dxt.iter().zip(dx.slice(s![.., t, ..]).iter()) {
            assert_close(*a, *b, 1e-12, "cell dx vs sequence dx");
        }
        d = prev;
    }
    assert_eq!(cell.pending(), 0);
    for ((_, p), (_, q)) in params(&cell).iter().zip(params(&seq).iter()) {
        for (a, b) in p.grad().iter().zip(q.grad().iter()) {
            assert_close(*a, *b, 1e-12, "cell vs sequence parameter gradient");
        }
    }
}

#[test]
fn cell_steps_match_the_sequence_layer() {
    cell_steps_match_the_sequence::<LstmGates>();
    cell_steps_match_the_sequence::<GruGates>();
}

/// A padded batch gives each sequence what it gives alone at its own length: outputs,
/// final states (both directions, two layers) and input gradients.
fn padding_equals_separate_sequences<K: Gates>() {
    let mut rnn = config::<K>(2, 4, Projection::phm(2))
        .with_layers(2)
        .with_bidirectional(true)
        .init::<f64, _>(None, &mut rng(110))
        .unwrap();
    let lengths = [5, 3, 1];
    let x = uniform_d(&mut rng(111), &[3, 5, 2]);
    let g = uniform_d(&mut rng(112), &[3, 5, 8]);
    let mask = padding_mask(&lengths, 5).unwrap();
    let (y, last) = rnn.forward_seq(x.view(), Some(mask.view()), None);
    let (dx, _) = rnn.backward_seq(g.view(), None);
    for (b, &len) in lengths.iter().enumerate() {
        let xb = x.slice(s![b..b + 1, ..len, ..]).to_owned().into_dyn();
        let (yb, lb) = rnn.forward_seq(xb.view(), None, None);
        let gb = g.slice(s![b..b + 1, ..len, ..]).to_owned().into_dyn();
        let (dxb, _) = rnn.backward_seq(gb.view(), None);
        let close = |a: ArrayViewD<'_, f64>, e: ArrayViewD<'_, f64>, what: &str| {
            assert_eq!(a.shape(), e.shape(), "{what}");
            for (u, v) in a.iter().zip(e.iter()) {
                assert_close(*u, *v, 1e-12, what);
            }
        };
        close(y.slice(s![b..b + 1, ..len, ..]).into_dyn(), yb.view(), "y");
        assert!(y.slice(s![b, len.., ..]).iter().all(|&v| v == 0.0));
        close(
            last.h.slice(s![.., b..b + 1, ..]).into_dyn(),
            lb.h.view().into_dyn(),
            "h_n",
        );
        if let (Some(c), Some(cb)) = (&last.c, &lb.c) {
            close(
                c.slice(s![.., b..b + 1, ..]).into_dyn(),
                cb.view().into_dyn(),
                "c_n",
            );
        }
        close(
            dx.slice(s![b..b + 1, ..len, ..]).into_dyn(),
            dxb.view(),
            "dx",
        );
        assert!(dx.slice(s![b, len.., ..]).iter().all(|&v| v == 0.0));
    }
}

#[test]
fn padding_equals_running_each_sequence_alone() {
    padding_equals_separate_sequences::<LstmGates>();
    padding_equals_separate_sequences::<GruGates>();
}

fn step_by_step_inference<K: Gates>() {
    let rnn = config::<K>(4, 4, Projection::phm(4))
        .with_layers(3)
        .init::<f64, _>(None, &mut rng(120))
        .unwrap();
    let x = uniform_d(&mut rng(121), &[2, 6, 4]);
    let (y, last) = rnn.infer_seq(x.view(), None, None);
    let mut state = rnn.zero_state(2);
    for t in 0..6 {
        let h = rnn.infer_step(x.slice(s![.., t, ..]), &mut state);
        for (a, b) in h.iter().zip(y.slice(s![.., t, ..]).iter()) {
            assert_close(*a, *b, 1e-12, "infer_step vs infer_seq");
        }
    }
    assert_eq!(state, last);
    // forward and infer agree, and forward from a given state continues a sequence.
    let mut rnn = rnn;
    let (first, mid) = rnn.forward_seq(x.slice(s![.., ..3, ..]).into_dyn(), None, None);
    let (second, end) = rnn.forward_seq(x.slice(s![.., 3.., ..]).into_dyn(), None, Some(&mid));
    rnn.clear_saved();
    let joined = ndarray::concatenate(Axis(1), &[first.view(), second.view()]).unwrap();
    for (a, b) in joined.iter().zip(y.iter()) {
        assert_close(*a, *b, 1e-12, "two halves vs the whole");
    }
    for (a, b) in end.h.iter().zip(last.h.iter()) {
        assert_close(*a, *b, 1e-12, "final state of two halves");
    }
}

#[test]
fn step_by_step_inference_equals_the_whole_sequence() {
    step_by_step_inference::<LstmGates>();
    step_by_step_inference::<GruGates>();
}

#[test]
fn parameter_counts_follow_the_formulas() {
    let (d, h) = (8, 12);
    let mut r = rng(130);
    // Dense: PyTorch's count, G·h·(d + h) + 2·G·h per layer and direction.
    for (g, dense) in [
        (
            4,
            LstmConfig::new(d, h)
                .init::<f32, _>(None, &mut r)
                .unwrap()
                .num_parameters(),
        ),
        (
            3,
            GruConfig::new(d, h)
                .init::<f32, _>(None, &mut r)
                .unwrap()
                .num_parameters(),
        ),
    ] {
        assert_eq!(dense, g * h * (d + h) + 2 * g * h);
    }
    // Two bidirectional layers: the second reads 2h.
    let lstm = LstmConfig::new(d, h)
        .with_layers(2)
        .with_bidirectional(true)
        .init::<f32, _>(None, &mut r)
        .unwrap();
    let per = |dl: usize| 4 * h * (dl + h) + 8 * h;
    assert_eq!(lstm.num_parameters(), 2 * per(d) + 2 * per(2 * h));
    assert_eq!(lstm.output_shape(&[2, 3, d]), Some(vec![2, 3, 2 * h]));
    // PHM: 2·n³ + G·h·(d + h)/n + 2·G·h.
    let n = 4;
    let phm = LstmConfig::new(d, h)
        .with_projection(Projection::phm(n))
        .init::<f32, _>(None, &mut r)
        .unwrap();
    assert_eq!(
        phm.num_parameters(),
        2 * n * n * n + 4 * h * (d + h) / n + 8 * h
    );
    // Quaternion (fixed rules): the rules are frozen.
    let q = LstmConfig::new(d, h)
        .with_projection(Projection::Phm {
            n: 4,
            rule: Rule::Fixed(Algebra::Quaternion),
        })
        .init::<f32, _>(None, &mut r)
        .unwrap();
    assert_eq!(q.num_parameters(), 4 * h * (d + h) / 4 + 8 * h);
    assert_eq!(q.num_frozen_parameters(), 2 * 64);
    // LPHM rank 2: 2·n³ + r·(2·G·h + d + h) + 2·G·h.
    let lphm = GruConfig::new(d, h)
        .with_projection(Projection::low_rank(2, 2))
        .init::<f32, _>(None, &mut r)
        .unwrap();
    assert_eq!(
        lphm.num_parameters(),
        2 * 8 + 2 * (2 * 3 * h + d + h) + 6 * h
    );
    let paths: Vec<String> = params(&lstm).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        &paths[..4],
        ["l0.ih.weight", "l0.ih.bias", "l0.hh.weight", "l0.hh.bias"]
    );
    assert_eq!(paths[4], "l0_reverse.ih.weight");
    assert_eq!(paths[8], "l1.ih.weight");
}

/// The quaternion LSTM's input projection is the Hamilton product on every gate: with
/// `x = (p, 0, …)` one quaternion and a hidden width of one quaternion, gate g's
/// pre-activation is `q_g ⊗ p + b`.
#[test]
fn the_quaternion_lstm_multiplies_quaternions_gate_by_gate() {
    let cell: LstmCell<f64> = LstmConfig::new(4, 4)
        .with_projection(Projection::Phm {
            n: 4,
            rule: Rule::Fixed(Algebra::Quaternion),
        })
        .init_cell(None, &mut rng(140))
        .unwrap();
    let ih = cell.projections()[0];
    let p = [0.3, -0.2, 0.5, 0.1];
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 4]), p.to_vec()).unwrap();
    let z = ih.infer(x.view()); // component-major (1, 16): column r·4 + g
    let ps = params(ih);
    let blocks = ps.iter().find(|(n, _)| n == "blocks").unwrap().1.value(); // (4, 4, 1)
    let bias = ps.iter().find(|(n, _)| n == "bias").unwrap().1.value();
    for g in 0..4 {
        let q: Vec<f64> = (0..4).map(|i| blocks[[i, g, 0]]).collect();
        // Hamilton product q ⊗ p.
        let prod = [
            q[0] * p[0] - q[1] * p[1] - q[2] * p[2] - q[3] * p[3],
            q[0] * p[1] + q[1] * p[0] + q[2] * p[3] - q[3] * p[2],
            q[0] * p[2] - q[1] * p[3] + q[2] * p[0] + q[3] * p[1],
            q[0] * p[3] + q[1] * p[2] - q[2] * p[1] + q[3] * p[0],
        ];
        for (r, want) in prod.iter().enumerate() {
            let col = r * 4 + g;
            assert_close(z[[0, col]] - bias[[col]], *want, 1e-12, "q ⊗ p");
        }
    }
    // The GRU cell type exists too, with its three gates.
    let gru: GruCell<f64> = GruConfig::new(4, 4).init_cell(None, &mut rng(141)).unwrap();
    assert_eq!(
        gru.projections()[1].output_shape(&[1, 4]),
        Some(vec![1, 12])
    );
}

#[test]
fn bad_configs_and_lengths_are_typed_errors() {
    let mut r = rng(150);
    assert!(matches!(
        LstmConfig::new(0, 4).init::<f32, _>(None, &mut r),
        Err(PhmError::ZeroSize { what: "input" })
    ));
    assert!(matches!(
        GruConfig::new(4, 4)
            .with_layers(0)
            .init::<f32, _>(None, &mut r),
        Err(PhmError::ZeroSize { what: "layers" })
    ));
    assert!(matches!(
        LstmConfig::new(8, 6)
            .with_projection(Projection::phm(4))
            .init::<f32, _>(None, &mut r),
        Err(PhmError::NotDivisible {
            what: "hidden",
            size: 6,
            n: 4
        })
    ));
    assert!(matches!(
        LstmConfig::new(6, 8)
            .with_projection(Projection::phm(4))
            .init_cell::<f32, _>(None, &mut r),
        Err(PhmError::NotDivisible { what: "input", .. })
    ));
    let err = padding_mask(&[3, 7], 5).unwrap_err();
    assert!(err.to_string().contains('7'), "{err}");
}

#[test]
#[should_panic(expected = "[2, 3, 5]")]
fn wrong_input_width_panics() {
    let lstm = LstmConfig::new(4, 4)
        .init::<f64, _>(None, &mut rng(160))
        .unwrap();
    lstm.infer(ArrayD::zeros(IxDyn(&[2, 3, 5])).view());
}

#[test]
#[should_panic(expected = "bidirectional")]
fn step_inference_of_a_bidirectional_layer_panics() {
    let lstm = LstmConfig::new(4, 4)
        .with_bidirectional(true)
        .init::<f64, _>(None, &mut rng(161))
        .unwrap();
    let mut state = lstm.zero_state(1);
    lstm.infer_step(Array2::zeros((1, 4)).view(), &mut state);
}

#[test]
#[should_panic(expected = "mask")]
fn a_mask_of_the_wrong_shape_panics() {
    let mut gru = GruConfig::new(4, 4)
        .init::<f64, _>(None, &mut rng(162))
        .unwrap();
    let mask = Array2::from_elem((2, 4), false);
    gru.forward_seq(
        ArrayD::zeros(IxDyn(&[2, 3, 4])).view(),
        Some(mask.view()),
        None,
    );
}

#[test]
#[should_panic(expected = "before forward")]
fn backward_before_forward_panics() {
    let mut gru = GruConfig::new(4, 4)
        .init::<f64, _>(None, &mut rng(163))
        .unwrap();
    gru.backward(ArrayD::zeros(IxDyn(&[2, 3, 4])).view());
}
