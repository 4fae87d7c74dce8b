//! The layer contract: inputs of any rank, several forwards before one backward (weight
//! tying, shared rules), parameter identity and paths, typed access, summaries, cloning,
//! threads, and optimizer state by identity.
mod common;

use common::{assert_close, check_gradients, check_gradients_d, rng, uniform2, uniform_d};
use ndarray::{ArrayD, ArrayViewD, Ix2};
use phm_nn::module::{
    clone_model, find_all, for_each_mut, params, summary, SavedStates, StateStack,
};
use phm_nn::prelude::*;

/// `y = L(tanh(L(x)))`: one square layer applied twice (weight tying), written as a user
/// would write a model of their own.
#[derive(Debug, Clone)]
struct Twice<M> {
    layer: M,
    act: Tanh<f64>,
}

impl<M: Module<f64> + Clone> Module<f64> for Twice<M> {
    fn forward(&mut self, x: ArrayViewD<'_, f64>) -> ArrayD<f64> {
        let h = self.layer.forward(x);
        let h = self.act.forward(h.view().into_dyn());
        self.layer.forward(h.view().into_dyn())
    }

    fn backward(&mut self, g: ArrayViewD<'_, f64>) -> ArrayD<f64> {
        let g = self.layer.backward(g);
        let g = self.act.backward(g.view().into_dyn());
        self.layer.backward(g.view().into_dyn())
    }

    fn infer(&self, x: ArrayViewD<'_, f64>) -> ArrayD<f64> {
        let h = self.act.infer(self.layer.infer(x).view().into_dyn());
        self.layer.infer(h.view().into_dyn())
    }

    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<f64>)) {
        f("layer", &self.layer);
        f("act", &self.act);
    }

    fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<f64>)) {
        f("layer", &mut self.layer);
        f("act", &mut self.act);
    }
}

#[test]
fn a_linear_layer_applied_twice_passes_finite_differences() {
    let mut r = rng(1);
    let layer = Linear::from_parts(
        uniform2(&mut r, 5, 5),
        Some(uniform_d(&mut r, &[5]).into_dimensionality().unwrap()),
    )
    .unwrap();
    let mut model = Twice {
        layer,
        act: Tanh::new(),
    };
    let paths: Vec<String> = params(&model).into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths, ["layer.weight", "layer.bias"]);
    check_gradients(&mut model, &uniform2(&mut r, 3, 5), 2, 1e-6);
}

#[test]
fn a_phm_layer_applied_twice_passes_finite_differences_on_both_kernels() {
    for strategy in [Strategy::Materialized, Strategy::Factored] {
        let mut r = rng(3);
        let layer = PhmLinearConfig::new(8, 8, 4)
            .init::<f64, _>(&mut r)
            .unwrap()
            .with_strategy(strategy);
        let mut model = Twice {
            layer,
            act: Tanh::new(),
        };
        check_gradients(&mut model, &uniform2(&mut r, 3, 8), 4, 1e-6);
    }
}

/// Three PHM layers of different sizes sharing one rule tensor.
fn shared_three(strategy: Strategy) -> Sequential<f64> {
    let mut r = rng(5);
    let first = PhmLinearConfig::new(4, 8, 2)
        .init::<f64, _>(&mut r)
        .unwrap();
    let rules = first.rules_param().share();
    let second = PhmLinearConfig::new(8, 6, 2)
        .init_shared(&rules, &mut r)
        .unwrap();
    let third = PhmLinearConfig::new(6, 2, 2)
        .init_shared(&rules, &mut r)
        .unwrap();
    Sequential::new()
        .add(first.with_strategy(strategy))
        .add(Tanh::new())
        .add(second.with_strategy(strategy))
        .add(Sigmoid::new())
        .add(third.with_strategy(strategy))
}

#[test]
fn a_rule_tensor_shared_by_three_layers_passes_finite_differences() {
    for strategy in [Strategy::Materialized, Strategy::Factored] {
        let mut model = shared_three(strategy);
        check_gradients(&mut model, &uniform2(&mut rng(6), 4, 4), 7, 1e-6);
    }
}

#[test]
fn a_shared_tensor_is_visited_at_each_use_but_counted_updated_and_listed_once() {
    let mut model = shared_three(Strategy::Auto);
    let mut visits = Vec::new();
    model.visit_params(&mut |path, _| visits.push(path.to_string()));
    assert_eq!(
        visits,
        [
            "0.rules", "0.blocks", "0.bias", "2.rules", "2.blocks", "2.bias", "4.rules",
            "4.blocks", "4.bias"
        ]
    );
    let listed: Vec<String> = params(&model).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        listed,
        ["0.rules", "0.blocks", "0.bias", "2.blocks", "2.bias", "4.blocks", "4.bias"]
    );
    // n³ once, then each layer's blocks and bias.
    let want = 8 + (8 * 4 / 2 + 8) + (6 * 8 / 2 + 6) + (2 * 6 / 2 + 2);
    assert_eq!(model.num_parameters(), want);

    // One SGD step moves the rules once, by lr times the summed gradient of all three users.
    let x = uniform2(&mut rng(8), 5, 4).into_dyn();
    model.zero_grad();
    let y = model.forward(x.view().into_dyn());
    model.backward(ArrayD::ones(y.raw_dim()).view().into_dyn());
    let rules = params(&model).remove(0).1;
    let (before, grad) = (rules.value(), rules.grad());
    // (That the gradient is the sum over the three users is the next test.)
    let mut opt = Sgd::new(SgdConfig {
        lr: 0.1,
        ..SgdConfig::default()
    })
    .unwrap();
    opt.step(&mut model).unwrap();
    let after = rules.value();
    for ((b, g), a) in before.iter().zip(&grad).zip(&after) {
        assert_close(
            *a,
            b - 0.1 * g,
            1e-15,
            "one update with the summed gradient",
        );
    }
    let layer2 = model.get::<PhmLinear<f64>>(2).unwrap();
    assert_eq!(layer2.rules(), after.into_dimensionality().unwrap());
}

#[test]
fn the_shared_gradient_is_the_sum_of_each_users_gradient() {
    // The same model with three private copies of the rules: their gradients must add up to
    // the shared one.
    let shared = shared_three(Strategy::Factored);
    let mut unshared = Sequential::<f64>::new();
    for (i, layer) in shared.layers().iter().enumerate() {
        match shared.get::<PhmLinear<f64>>(i) {
            Some(l) => unshared.push(
                PhmLinear::from_parts(l.rules(), l.blocks(), l.bias())
                    .unwrap()
                    .with_strategy(Strategy::Factored),
            ),
            None => unshared.push_boxed(layer.clone()),
        }
    }
    let mut shared = shared;
    let x = uniform2(&mut rng(9), 3, 4).into_dyn();
    for m in [&mut shared, &mut unshared] {
        m.zero_grad();
        let y = m.forward(x.view().into_dyn());
        m.backward(ArrayD::ones(y.raw_dim()).view().into_dyn());
    }
    let total = find_all::<f64, PhmLinear<f64>>(&unshared)
        .iter()
        .map(|(_, l)| l.rules_param().grad())
        .fold(ArrayD::zeros(ndarray::IxDyn(&[2, 2, 2])), |acc, g| acc + g);
    let got = shared
        .get::<PhmLinear<f64>>(0)
        .unwrap()
        .rules_param()
        .grad();
    for (a, b) in got.iter().zip(&total) {
        assert_close(*a, *b, 1e-12, "shared gradient = Σ users");
    }
}

#[test]
fn layers_take_inputs_of_any_rank() {
    let mut r = rng(10);
    let x = uniform_d(&mut r, &[2, 3, 8]); // (B, T, D)
    for strategy in [Strategy::Materialized, Strategy::Factored] {
        let mut layer = PhmLinearConfig::new(8, 4, 2)
            .init::<f64, _>(&mut r)
            .unwrap()
            .with_strategy(strategy);
        assert_eq!(layer.infer(x.view().into_dyn()).shape(), &[2, 3, 4]);
        check_gradients_d(&mut layer, &x, 11, 1e-6);
        // Rank 3 is the same as the rows flattened into a matrix.
        let flat = x.clone().into_shape_with_order((6, 8)).unwrap();
        let y3 = layer
            .infer(x.view().into_dyn())
            .into_shape_with_order((6, 4))
            .unwrap();
        let y2 = layer
            .infer(flat.into_dyn().view().into_dyn())
            .into_dimensionality::<Ix2>()
            .unwrap();
        assert_eq!(y3, y2);
    }
    let mut model = Sequential::new()
        .add(LinearConfig::new(8, 6).init::<f64, _>(&mut r).unwrap())
        .add(Gelu::new())
        .add(
            PhmLinearConfig::new(6, 4, 2)
                .init::<f64, _>(&mut r)
                .unwrap(),
        );
    check_gradients_d(&mut model, &x, 12, 1e-6);
    // A 1-D input is one sample.
    assert_eq!(
        model
            .infer(uniform_d(&mut r, &[8]).view().into_dyn())
            .shape(),
        &[4]
    );
    assert_eq!(model.output_shape(&[2, 3, 8]), Some(vec![2, 3, 4]));
}

#[test]
#[should_panic(expected = "PhmLinear::forward: input has shape [2, 3, 5], expected [.., 8]")]
fn a_wrong_last_axis_names_both_shapes() {
    let mut layer = PhmLinearConfig::new(8, 4, 2)
        .init::<f64, _>(&mut rng(0))
        .unwrap();
    layer.forward(ArrayD::zeros(ndarray::IxDyn(&[2, 3, 5])).view().into_dyn());
}

#[test]
#[should_panic(expected = "PhmLinear::backward: grad_output has shape [3, 4], expected [2, 3, 4]")]
fn a_gradient_for_another_forward_names_both_shapes() {
    let mut layer = PhmLinearConfig::new(8, 4, 2)
        .init::<f64, _>(&mut rng(0))
        .unwrap();
    layer.forward(ArrayD::zeros(ndarray::IxDyn(&[2, 3, 8])).view().into_dyn());
    layer.backward(ArrayD::zeros(ndarray::IxDyn(&[3, 4])).view().into_dyn());
}

#[test]
fn zero_grad_drops_forward_states_nobody_went_back_through() {
    let mut model = shared_three(Strategy::Auto);
    let x = uniform2(&mut rng(13), 2, 4).into_dyn();
    for _ in 0..5 {
        model.forward(x.view().into_dyn()); // e.g. an evaluation through forward
    }
    assert_eq!(model.pending(), 5 * 5);
    model.zero_grad();
    assert_eq!(model.pending(), 0);
}

#[test]
fn models_are_clone_send_sync_and_serve_threads() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<Sequential<f32>>();
    assert_traits::<PhmLinear<f64>>();
    assert_traits::<Linear<f32>>();
    assert_traits::<Relu<f32>>();
    assert_traits::<Param<f64>>();
    assert_traits::<Box<dyn Module<f32>>>();

    let model = shared_three(Strategy::Auto);
    let x = uniform2(&mut rng(14), 16, 4).into_dyn();
    let want = model.infer(x.view().into_dyn());
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| model.infer(x.view().into_dyn())))
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), want);
        }
    });
}

#[test]
fn a_clone_is_a_snapshot_that_keeps_its_own_sharing() {
    let mut model = shared_three(Strategy::Auto);
    let snapshot = model.clone();
    // The clone shares nothing with the original...
    let ids = |m: &Sequential<f64>| params(m).iter().map(|(_, p)| p.id()).collect::<Vec<_>>();
    assert!(ids(&model).iter().all(|id| !ids(&snapshot).contains(id)));
    // ...but its three layers still share one rule tensor.
    let layers = find_all::<f64, PhmLinear<f64>>(&snapshot);
    assert!(layers[0]
        .1
        .rules_param()
        .is_shared_with(layers[2].1.rules_param()));
    assert_eq!(snapshot.num_parameters(), model.num_parameters());

    // Training the original leaves the snapshot as it was.
    let x = uniform2(&mut rng(15), 4, 4).into_dyn();
    let before = snapshot.infer(x.view().into_dyn());
    let mut opt = Adam::new(AdamConfig::default()).unwrap();
    model.zero_grad();
    let y = model.forward(x.view().into_dyn());
    model.backward(ArrayD::ones(y.raw_dim()).view().into_dyn());
    opt.step(&mut model).unwrap();
    assert_eq!(snapshot.infer(x.view().into_dyn()), before);
    assert_ne!(model.infer(x.view().into_dyn()), before);

    // A struct of one's own keeps its sharing through clone_model; a plain clone gives each
    // field its own copy.
    let mut r = rng(16);
    let first = PhmLinearConfig::new(4, 4, 2)
        .init::<f64, _>(&mut r)
        .unwrap();
    let second = PhmLinearConfig::new(4, 2, 2)
        .init_shared(first.rules_param(), &mut r)
        .unwrap();
    let pair = (first, second);
    let plain = pair.clone();
    assert!(!plain.0.rules_param().is_shared_with(plain.1.rules_param()));
    let copy = clone_model(&pair);
    assert!(copy.0.rules_param().is_shared_with(copy.1.rules_param()));
    assert!(!copy.0.rules_param().is_shared_with(pair.0.rules_param()));
}

#[test]
fn typed_access_reaches_layers_inside_a_model() {
    let mut model = shared_three(Strategy::Auto);
    assert!(model.get::<PhmLinear<f64>>(1).is_none());
    assert!(model.get::<Tanh<f64>>(1).is_some());
    model
        .get_mut::<PhmLinear<f64>>(0)
        .unwrap()
        .set_strategy(Strategy::Factored);
    let mut visited = Vec::new();
    for_each_mut::<f64, PhmLinear<f64>>(&mut model, &mut |path, l| {
        l.cache_weight().unwrap();
        visited.push(path.to_string());
    });
    assert_eq!(visited, ["0", "2", "4"]);
    assert!(find_all::<f64, PhmLinear<f64>>(&model)
        .iter()
        .all(|(_, l)| l.weight_is_current()));
    assert_eq!(
        model.get::<PhmLinear<f64>>(0).unwrap().strategy(),
        Strategy::Factored
    );
}

#[test]
fn the_summary_lists_layers_shapes_counts_and_totals() {
    let model = shared_three(Strategy::Auto);
    let s = summary(&model, &[32, 4]);
    let shapes: Vec<Option<Vec<usize>>> = s.rows.iter().map(|r| r.output_shape.clone()).collect();
    assert_eq!(
        shapes,
        [
            Some(vec![32, 2]),
            Some(vec![32, 8]),
            Some(vec![32, 8]),
            Some(vec![32, 6]),
            Some(vec![32, 6]),
            Some(vec![32, 2]),
        ]
    );
    let counts: Vec<(usize, usize)> = s.rows.iter().map(|r| (r.trainable, r.shared)).collect();
    assert_eq!(
        counts,
        [
            (0, 0),
            (8 + 16 + 8, 0),
            (0, 0),
            (24 + 6, 8),
            (0, 0),
            (6 + 2, 8)
        ]
    );
    assert_eq!(s.trainable, model.num_parameters());
    let text = s.to_string();
    assert!(
        text.contains("0: PhmLinear(4 → 8, n = 2, learned rules)"),
        "{text}"
    );
    assert!(text.contains("(+8 shared)"), "{text}");
    assert!(
        text.contains(&format!("trainable parameters: {}", model.num_parameters())),
        "{text}"
    );
    // Fixed rules are frozen parameters.
    let quat = PhmLinearConfig::new(8, 4, 4)
        .with_rule(Rule::Fixed(Algebra::Quaternion))
        .init::<f32, _>(&mut rng(0))
        .unwrap();
    let s = summary(&quat, &[1, 8]);
    assert_eq!((s.trainable, s.frozen), (8 * 4 / 4 + 4, 64));
    assert!(format!("{model:?}").starts_with("layer"));
    assert!(format!("{model:?}").contains("Sequential(5 layers)"));
}

#[test]
#[should_panic(
    expected = "MyLayer::backward called before forward (each backward needs its own forward)"
)]
fn saved_states_name_the_layer_when_backward_comes_first() {
    let mut saved = SavedStates::<u8>::new();
    saved.push(1);
    assert_eq!(saved.pop("MyLayer"), 1);
    saved.pop("MyLayer");
}

#[test]
fn saved_states_are_a_stack_that_clones_and_is_cleared_through_the_contract() {
    let mut saved = SavedStates::new();
    for i in 0..3 {
        saved.push(i);
    }
    let mut copy = saved.clone();
    let erased: &dyn StateStack = &saved;
    assert_eq!(erased.pending(), 3);
    erased.discard();
    assert!(saved.is_empty());
    // The clone kept its own states, last in first out.
    assert_eq!((copy.pop("L"), copy.pop("L"), copy.len()), (2, 1, 1));
    copy.push(7);
    assert_eq!(copy.take_all(), [0, 7]);
    assert!(copy.is_empty());
}

#[test]
fn every_layer_counts_and_clears_its_saved_states() {
    // Leaf layers of every family hand their stack to the contract: one pending state per
    // forward, none after zero_grad.
    let mut r = rng(40);
    let mut layers: Vec<(Box<dyn Module<f64>>, Vec<usize>)> = vec![
        (
            Box::new(LinearConfig::new(4, 3).init(&mut r).unwrap()),
            vec![2, 4],
        ),
        (
            Box::new(PhmLinearConfig::new(4, 2, 2).init(&mut r).unwrap()),
            vec![2, 4],
        ),
        (
            Box::new(LphmLinearConfig::new(4, 2, 2, 1).init(&mut r).unwrap()),
            vec![2, 4],
        ),
        (Box::new(Relu::new()), vec![2, 4]),
        (Box::new(Gelu::new()), vec![2, 4]),
        (
            Box::new(LayerNormConfig::new(4).init().unwrap()),
            vec![2, 4],
        ),
        (Box::new(Dropout::new(0.5, 1).unwrap()), vec![2, 4]),
        (
            Box::new(Conv2dConfig::new(2, 2, 1).init(&mut r).unwrap()),
            vec![1, 2, 3, 3],
        ),
        (
            Box::new(PhmConv2dConfig::new(2, 2, 1, 2).init(&mut r).unwrap()),
            vec![1, 2, 3, 3],
        ),
        (Box::new(MaxPool2d::new(1, 1, 0).unwrap()), vec![1, 2, 3, 3]),
        (Box::new(Flatten::new()), vec![1, 2, 3, 3]),
    ];
    for (layer, shape) in &mut layers {
        let x = uniform_d(&mut r, shape);
        layer.forward(x.view());
        layer.forward(x.view());
        assert_eq!(layer.pending(), 2, "{}", layer.describe());
        layer.zero_grad();
        assert_eq!(layer.pending(), 0, "{}", layer.describe());
    }
}

/// `forward_owned` is `forward`: the same output, the same saved state (the same gradients
/// and input gradient after `backward`), for the layers that keep or overwrite the array it
/// gives them and for composites that hand their intermediates on, on a standard-layout and
/// a transposed input.
#[test]
fn forward_owned_equals_forward_for_every_family() {
    use phm_nn::nn::transformer::FeedForwardConfig;
    let mut r = rng(41);
    let mut seq = Sequential::new();
    seq.push(LinearConfig::new(4, 6).init(&mut r).unwrap());
    seq.push(Gelu::new());
    seq.push(LayerNormConfig::new(6).init().unwrap());
    seq.push(LinearConfig::new(6, 2).init(&mut r).unwrap());
    // (layer, input width)
    let layers: Vec<(Box<dyn Module<f64>>, usize)> = vec![
        (Box::new(LinearConfig::new(5, 3).init(&mut r).unwrap()), 5),
        (
            Box::new(PhmLinearConfig::new(4, 6, 2).init(&mut r).unwrap()),
            4,
        ),
        (Box::new(Gelu::new()), 5),
        (Box::new(LayerNormConfig::new(5).init().unwrap()), 5),
        (Box::new(Dropout::new(0.4, 2).unwrap()), 5),
        (Box::new(Dropout::new(0.0, 2).unwrap()), 5),
        (
            Box::new(FeedForwardConfig::new(4, 8).init(None, &mut r).unwrap()),
            4,
        ),
        (Box::new(seq), 4),
    ];
    for (layer, width) in layers {
        let x = uniform_d(&mut r, &[3, 2, width]);
        // A (T, B, d) view of a (B, T, d) array: not in standard layout.
        let x_t = x.view().permuted_axes(vec![1, 0, 2]).to_owned();
        for input in [x.clone(), x_t] {
            let (mut a, mut b) = (layer.clone(), layer.clone());
            let ya = a.forward(input.view());
            let yb = b.forward_owned(input.clone());
            assert_eq!(ya, yb, "{}", a.describe());
            let g = ya.mapv(|v| 0.3 * v - 0.1);
            assert_eq!(
                a.backward(g.view()),
                b.backward(g.view()),
                "{}",
                a.describe()
            );
            let grads = |m: &dyn Module<f64>| {
                params(m)
                    .into_iter()
                    .map(|(_, p)| p.grad())
                    .collect::<Vec<_>>()
            };
            assert_eq!(grads(&*a), grads(&*b), "{}", a.describe());
        }
    }
}
