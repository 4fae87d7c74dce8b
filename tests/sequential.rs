//! Sequential: chained gradients, index-prefixed parameter names, the empty identity.
mod common;

use common::{check_gradients, rng, uniform2, uniform_d};
use ndarray::{array, Array1, Array2, ArrayD, ArrayViewD, Ix1, Ix2};
use phm_nn::module::sequential::Sequential;
use phm_nn::module::{SavedStates, StateStack};
use phm_nn::nn::activation::{Gelu, Relu, Sigmoid, Tanh};
use phm_nn::nn::linear::Linear;
use phm_nn::{Module, Param};

/// A test layer with one parameter: `y = x ⊙ w` (per-column scale), named `"w"` — a leaf
/// layer written against the public contract, as a user would.
#[derive(Debug, Clone)]
struct Scale {
    w: Param<f64>,
    inputs: SavedStates<ArrayD<f64>>,
}

impl Scale {
    fn new(w: Array1<f64>) -> Self {
        Scale {
            w: Param::new(w.into_dyn()),
            inputs: SavedStates::new(),
        }
    }

    fn w(&self) -> Array1<f64> {
        self.w.value().into_dimensionality::<Ix1>().unwrap()
    }
}

impl Module<f64> for Scale {
    fn forward(&mut self, x: ArrayViewD<'_, f64>) -> ArrayD<f64> {
        self.inputs.push(x.to_owned());
        self.infer(x)
    }

    fn backward(&mut self, g: ArrayViewD<'_, f64>) -> ArrayD<f64> {
        let x = self.inputs.pop("Scale");
        let x = x.into_dimensionality::<Ix2>().unwrap();
        let g2 = g.view().into_dimensionality::<Ix2>().unwrap();
        let dw = (&g2 * &x).sum_axis(ndarray::Axis(0));
        let dx = (&g2 * &self.w()).into_dyn();
        let mut w = self.w.write();
        let mut grad = w.grad_mut().into_dimensionality::<Ix1>().unwrap();
        grad += &dw;
        dx
    }

    fn infer(&self, x: ArrayViewD<'_, f64>) -> ArrayD<f64> {
        let x = x.into_dimensionality::<Ix2>().unwrap();
        (&x * &self.w()).into_dyn()
    }

    fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<f64>)) {
        f("w", &self.w);
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.inputs)
    }
}

fn names(m: &impl Module<f64>) -> Vec<String> {
    let mut out = Vec::new();
    m.visit_params(&mut |name, _| out.push(name.to_string()));
    out
}

#[test]
fn chain_of_activations_passes_gradient_check() {
    // ReLU first, on inputs bounded away from its kink at 0.
    let x = uniform2(&mut rng(31), 4, 6).mapv(|u| u.signum() * (0.2 + 1.8 * u.abs()));
    let mut model = Sequential::new()
        .add(Relu::new())
        .add(Tanh::new())
        .add(Gelu::new())
        .add(Sigmoid::new());
    assert_eq!(model.len(), 4);
    assert_eq!(model.num_parameters(), 0);
    check_gradients(&mut model, &x, 32, 1e-7);
}

#[test]
fn forward_is_the_composition() {
    let x = uniform2(&mut rng(33), 3, 2);
    let mut model = Sequential::new();
    model.push(Tanh::new());
    model.push(Sigmoid::new());
    let want = x.mapv(|v| 1.0 / (1.0 + (-v.tanh()).exp()));
    let y = model.forward(x.view().into_dyn());
    for (a, b) in y.iter().zip(&want) {
        assert!((a - b).abs() < 1e-15);
    }
    assert_eq!(model.infer(x.view().into_dyn()), y);
    assert_eq!(model.layers().len(), 2);
}

#[test]
fn parameter_layers_get_index_prefixes() {
    let mut r = rng(34);
    let scale = |r: &mut _| Scale::new(uniform_d(r, &[3]).into_dimensionality().unwrap());
    let inner = Sequential::new()
        .add(scale(&mut r))
        .add(Tanh::new())
        .add(scale(&mut r));
    let mut model = Sequential::new()
        .add(scale(&mut r))
        .add(Sigmoid::new())
        .add(inner)
        .add(scale(&mut r));
    let want = ["0.w", "2.0.w", "2.2.w", "3.w"];
    assert_eq!(names(&model), want);
    assert_eq!(model.num_parameters(), 12);
    check_gradients(&mut model, &uniform2(&mut r, 5, 3), 35, 1e-7);

    // zero_grad reaches every nested parameter.
    model.forward(uniform2(&mut r, 2, 3).view().into_dyn());
    model.backward(Array2::ones((2, 3)).view().into_dyn());
    model.zero_grad();
    model.visit_params(&mut |name, p| assert!(p.grad().iter().all(|g| *g == 0.0), "{name}"));
}

#[test]
fn linear_tanh_linear_passes_gradient_check() {
    let mut r = rng(36);
    let l1 = Linear::<f64>::from_parts(
        uniform2(&mut r, 4, 3),
        Some(uniform_d(&mut r, &[4]).into_dimensionality().unwrap()),
    )
    .unwrap();
    let l2 = Linear::<f64>::from_parts(
        uniform2(&mut r, 2, 4),
        Some(uniform_d(&mut r, &[2]).into_dimensionality().unwrap()),
    )
    .unwrap();
    let mut model = Sequential::new().add(l1).add(Tanh::new()).add(l2);
    let want = ["0.weight", "0.bias", "2.weight", "2.bias"];
    assert_eq!(names(&model), want);
    assert_eq!(model.num_parameters(), 4 * 3 + 4 + 2 * 4 + 2);
    check_gradients(&mut model, &uniform2(&mut r, 5, 3), 37, 1e-6);
    assert_eq!(
        model
            .forward(uniform2(&mut r, 7, 3).view().into_dyn())
            .shape(),
        &[7, 2]
    );
}

#[test]
fn empty_sequential_is_the_identity() {
    let x = array![[1.0, -2.0], [3.0, 0.5]];
    let mut model = Sequential::<f64>::default();
    assert!(model.is_empty());
    assert_eq!(model.len(), 0);
    let xd = x.clone().into_dyn();
    assert_eq!(model.forward(x.view().into_dyn()), xd);
    assert_eq!(model.infer(x.view().into_dyn()), xd);
    assert_eq!(model.backward(x.view().into_dyn()), xd);
    assert!(names(&model).is_empty());
    assert!(format!("{model:?}").contains("Sequential(0 layers)"));
    check_gradients(&mut model, &x, 38, 1e-9);
}

#[test]
fn works_in_f32() {
    let mut model = Sequential::<f32>::new().add(Tanh::new()).add(Relu::new());
    let y = model.forward(array![[0.5f32, -0.5]].view().into_dyn());
    assert_eq!(y, array![[0.5f32.tanh(), 0.0]].into_dyn());
    let dx = model.backward(array![[1.0f32, 1.0]].view().into_dyn());
    assert_eq!(dx, array![[1.0 - 0.5f32.tanh().powi(2), 0.0]].into_dyn());
}

#[test]
#[should_panic(expected = "Sigmoid::backward called before forward")]
fn backward_before_forward_panics_in_the_last_layer() {
    let mut model = Sequential::<f64>::new()
        .add(Tanh::new())
        .add(Sigmoid::new());
    model.backward(array![[1.0]].view().into_dyn());
}

#[test]
#[should_panic(expected = "Linear::forward: input has shape [1, 2], expected [.., 3]")]
fn shape_mismatch_inside_the_chain_panics() {
    let linear = Linear::<f64>::from_parts(Array2::zeros((4, 3)), None).unwrap();
    let mut model = Sequential::new().add(Tanh::new()).add(linear);
    model.forward(array![[1.0, 2.0]].view().into_dyn());
}
