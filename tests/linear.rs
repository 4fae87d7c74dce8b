//! Dense Linear: gradients, values, errors and panics.
mod common;

use common::{check_gradients, rng, uniform2};
use ndarray::{array, Array1, Array2};
use phm_nn::{Linear, LinearConfig, Module, PhmError};

#[test]
fn gradients() {
    for bias in [true, false] {
        let mut r = rng(1);
        let w = uniform2(&mut r, 3, 5);
        let b = bias.then(|| Array1::from_iter((0..3).map(|i| i as f64 * 0.1)));
        let mut layer = Linear::from_parts(w, b).unwrap();
        check_gradients(&mut layer, &uniform2(&mut r, 4, 5), 2, 1e-6);
    }
    // Batch of one goes through the matrix–vector path.
    let mut layer = LinearConfig::new(6, 4).init::<f64, _>(&mut rng(3)).unwrap();
    check_gradients(&mut layer, &uniform2(&mut rng(4), 1, 6), 5, 1e-6);
}

#[test]
fn forward_matches_formula() {
    let mut layer = Linear::from_parts(
        array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
        Some(array![1.0, -1.0]),
    )
    .unwrap();
    let x = array![[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]];
    assert_eq!(
        layer.forward(x.view().into_dyn()),
        array![[-1.0, -3.0], [5.0, 12.0]].into_dyn()
    );
    assert_eq!(
        layer.infer(x.row(1).into_dyn()),
        array![5.0, 12.0].into_dyn()
    );
}

#[test]
fn default_init_matches_pytorch_bounds() {
    let layer = LinearConfig::new(100, 50)
        .init::<f64, _>(&mut rng(0))
        .unwrap();
    let bound = 0.1;
    assert!(layer.weight().iter().all(|w| w.abs() <= bound));
    assert!(layer.bias().unwrap().iter().all(|b| b.abs() <= bound));
    // Uses the whole interval, not a narrower one.
    assert!(layer.weight().iter().any(|w| w.abs() > 0.95 * bound));
    assert_eq!(layer.num_parameters(), 100 * 50 + 50);
}

#[test]
fn errors() {
    let err = LinearConfig::new(0, 3)
        .init::<f32, _>(&mut rng(0))
        .unwrap_err();
    assert_eq!(
        err,
        PhmError::ZeroSize {
            what: "in_features"
        }
    );
    let err = Linear::<f32>::from_parts(Array2::zeros((2, 3)), Some(Array1::zeros(3))).unwrap_err();
    assert_eq!(err.to_string(), "bias has shape [3], expected [2]");
}

#[test]
#[should_panic(expected = "Linear::forward: input has shape [2, 4], expected [.., 3]")]
fn forward_shape_mismatch_panics() {
    let mut layer = Linear::<f64>::from_parts(Array2::zeros((2, 3)), None).unwrap();
    layer.forward(Array2::zeros((2, 4)).view().into_dyn());
}

#[test]
#[should_panic(expected = "Linear::backward: grad_output has shape [2, 3], expected [2, 2]")]
fn backward_shape_mismatch_panics() {
    let mut layer = Linear::<f64>::from_parts(Array2::zeros((2, 3)), None).unwrap();
    layer.forward(Array2::zeros((2, 3)).view().into_dyn());
    layer.backward(Array2::zeros((2, 3)).view().into_dyn());
}
