//! Activations: finite-difference gradients, values against textbook formulas, stability,
//! and the panics for misuse.
mod common;

use common::{assert_close, check_gradients, rng, uniform2};
use ndarray::{array, Array2};
use phm_nn::nn::activation::{Gelu, Relu, Sigmoid, Tanh};
use phm_nn::Module;

/// A `(rows, cols)` input with entries in `[-3, -0.1] ∪ [0.1, 3]`: away from ReLU's kink.
fn away_from_zero(seed: u64, rows: usize, cols: usize) -> Array2<f64> {
    uniform2(&mut rng(seed), rows, cols).mapv(|u| u.signum() * (0.1 + 2.9 * u.abs()))
}

/// Standard normal CDF values Φ(x) to full f64 precision (reference tables).
const PHI: [(f64, f64); 5] = [
    (-1.0, 0.158_655_253_931_457_05),
    (0.0, 0.5),
    (0.5, 0.691_462_461_274_013_1),
    (1.0, 0.841_344_746_068_542_9),
    (2.0, 0.977_249_868_051_820_8),
];

fn phi_density(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

#[test]
fn relu_gradients() {
    check_gradients(&mut Relu::new(), &away_from_zero(1, 4, 5), 11, 1e-7);
}

#[test]
fn tanh_gradients() {
    check_gradients(&mut Tanh::new(), &away_from_zero(2, 4, 5), 12, 1e-7);
}

#[test]
fn sigmoid_gradients() {
    check_gradients(&mut Sigmoid::new(), &away_from_zero(3, 4, 5), 13, 1e-7);
}

#[test]
fn gelu_gradients() {
    check_gradients(&mut Gelu::new(), &away_from_zero(4, 4, 5), 14, 1e-7);
    // Also through zero, where GELU is smooth.
    check_gradients(&mut Gelu::new(), &array![[0.0, -1e-3, 1e-3, 0.5]], 15, 1e-7);
}

#[test]
fn relu_values_and_zero_derivative_at_zero() {
    let mut relu = Relu::new();
    let y = relu.forward(
        array![[-2.0, 0.0, 3.5], [1e-300, -0.0, -1e-300]]
            .view()
            .into_dyn(),
    );
    assert_eq!(y, array![[0.0, 0.0, 3.5], [1e-300, 0.0, 0.0]].into_dyn());
    let dx = relu.backward(array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]].view().into_dyn());
    // relu'(0) = 0, as in PyTorch.
    assert_eq!(dx, array![[0.0, 0.0, 3.0], [4.0, 0.0, 0.0]].into_dyn());
    assert!(relu.infer(array![[f64::NAN]].view().into_dyn())[[0, 0]].is_nan());
}

#[test]
fn tanh_values() {
    let x = array![[-2.0f64, -0.5, 0.0, 0.5, 2.0, 30.0, -1000.0]];
    let mut tanh = Tanh::<f64>::new();
    let y = tanh.forward(x.view().into_dyn());
    for (&xi, &yi) in x.iter().zip(&y) {
        let e = (2.0 * xi.min(350.0)).exp();
        let want = if xi > 20.0 {
            1.0
        } else {
            (e - 1.0) / (e + 1.0)
        };
        assert_close(yi, want, 1e-15, &format!("tanh({xi})"));
    }
    assert_eq!(y[[0, 6]], -1.0);
    let dx = tanh.backward(Array2::<f64>::ones(x.dim()).view().into_dyn());
    for (&yi, &di) in y.iter().zip(&dx) {
        assert_close(di, 1.0 - yi * yi, 1e-15, "tanh'");
    }
    assert_eq!(dx[[0, 5]], 0.0);
}

#[test]
fn sigmoid_values() {
    let x = array![[-3.0, -0.5, 0.0, 0.5, 3.0]];
    let mut sigmoid = Sigmoid::new();
    let y = sigmoid.forward(x.view().into_dyn());
    for (&xi, &yi) in x.iter().zip(&y) {
        assert_close(
            yi,
            1.0 / (1.0 + (-xi).exp()),
            1e-15,
            &format!("sigmoid({xi})"),
        );
    }
    assert_eq!(y[[0, 2]], 0.5);
    // σ(−x) = 1 − σ(x)
    assert_close(y[[0, 0]], 1.0 - y[[0, 4]], 1e-15, "symmetry");
    let dx = sigmoid.backward(array![[2.0, 2.0, 2.0, 2.0, 2.0]].view().into_dyn());
    assert_eq!(dx[[0, 2]], 0.5); // 2 · ¼
    for (&yi, &di) in y.iter().zip(&dx) {
        assert_close(di, 2.0 * yi * (1.0 - yi), 1e-15, "sigmoid'");
    }
}

#[test]
fn sigmoid_is_stable_at_extremes() {
    let x = array![[-1000.0f64, 1000.0, -700.0, 40.0]];
    let mut sigmoid = Sigmoid::new();
    let y = sigmoid.forward(x.view().into_dyn());
    assert_eq!(y[[0, 0]], 0.0);
    assert_eq!(y[[0, 1]], 1.0);
    assert!(
        y[[0, 2]] > 0.0 && y[[0, 2]] < 1e-300,
        "σ(−700) is a tiny positive number"
    );
    assert!(y.iter().all(|v| v.is_finite()));
    let dx = sigmoid.backward(Array2::<f64>::ones(x.dim()).view().into_dyn());
    assert!(dx.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert_eq!(dx[[0, 0]], 0.0);
    assert_eq!(dx[[0, 1]], 0.0);

    // f32 overflows e^x at x ≈ 89: still finite.
    let y32 = Sigmoid::new().infer(
        array![[-1000.0f32, -200.0, 200.0, 1000.0]]
            .view()
            .into_dyn(),
    );
    assert_eq!(y32, array![[0.0f32, 0.0, 1.0, 1.0]].into_dyn());
    assert!(y32.iter().all(|v| v.is_finite()));
}

#[test]
fn gelu_values_match_x_times_normal_cdf() {
    let mut gelu = Gelu::<f64>::new();
    let x = Array2::from_shape_vec((1, PHI.len()), PHI.iter().map(|p| p.0).collect()).unwrap();
    let y = gelu.forward(x.view().into_dyn());
    for (&(xi, phi), &yi) in PHI.iter().zip(&y) {
        assert_close(yi, xi * phi, 2e-16, &format!("gelu({xi})"));
    }
    // gelu(1) = Φ(1), gelu(−1) = −Φ(−1)
    assert_close(y[[0, 3]], 0.841_344_746_068_542_9, 2e-16, "gelu(1)");
    assert_close(y[[0, 0]], -0.158_655_253_931_457_05, 2e-16, "gelu(-1)");

    // gelu'(x) = Φ(x) + x·φ(x)
    let dx = gelu.backward(Array2::<f64>::ones(x.dim()).view().into_dyn());
    for (&(xi, phi), &di) in PHI.iter().zip(&dx) {
        assert_close(
            di,
            phi + xi * phi_density(xi),
            2e-16,
            &format!("gelu'({xi})"),
        );
    }
    assert_eq!(dx[[0, 1]], 0.5);
    assert_close(dx[[0, 3]], 1.083_315_470_587_686_3, 2e-16, "gelu'(1)");
}

#[test]
fn gelu_limits() {
    let y = Gelu::new().infer(
        array![[-40.0, 40.0, f64::INFINITY, f64::NEG_INFINITY]]
            .view()
            .into_dyn(),
    );
    assert_eq!(y, array![[0.0, 40.0, f64::INFINITY, 0.0]].into_dyn());
    let mut gelu = Gelu::new();
    gelu.forward(array![[-40.0, 40.0]].view().into_dyn());
    assert_eq!(
        gelu.backward(array![[1.0, 1.0]].view().into_dyn()),
        array![[0.0, 1.0]].into_dyn()
    );
}

#[test]
fn f32_matches_f64() {
    let x64 = away_from_zero(5, 3, 4);
    let x32 = x64.mapv(|v| v as f32);
    let g64 = uniform2(&mut rng(6), 3, 4);
    let g32 = g64.mapv(|v| v as f32);
    fn run<F: phm_nn::Float, M: Module<F>>(m: &mut M, x: &Array2<F>, g: &Array2<F>) -> Vec<f64> {
        let y = m.forward(x.view().into_dyn());
        let dx = m.backward(g.view().into_dyn());
        y.iter().chain(&dx).map(|v| v.as_f64()).collect()
    }
    for (name, a, b) in [
        (
            "relu",
            run(&mut Relu::new(), &x64, &g64),
            run(&mut Relu::new(), &x32, &g32),
        ),
        (
            "tanh",
            run(&mut Tanh::new(), &x64, &g64),
            run(&mut Tanh::new(), &x32, &g32),
        ),
        (
            "sigmoid",
            run(&mut Sigmoid::new(), &x64, &g64),
            run(&mut Sigmoid::new(), &x32, &g32),
        ),
        (
            "gelu",
            run(&mut Gelu::new(), &x64, &g64),
            run(&mut Gelu::new(), &x32, &g32),
        ),
    ] {
        for (u, v) in a.iter().zip(&b) {
            assert_close(*u, *v, 1e-6, name);
        }
    }
}

#[test]
fn activations_have_no_parameters_and_keep_any_shape() {
    let tanh = Tanh::<f32>::new();
    assert_eq!(tanh.num_parameters(), 0);
    let mut count = 0;
    Relu::<f64>::new().visit_params(&mut |_, _| count += 1);
    assert_eq!(count, 0);
    // Element-wise on any rank, (B, C, H, W) included.
    let x = ndarray::ArrayD::<f64>::from_shape_fn(vec![2, 3, 2, 2], |i| i[1] as f64 - 1.0);
    let y = Relu::new().infer(x.view().into_dyn());
    assert_eq!(y.shape(), x.shape());
    assert_eq!(y, x.mapv(|v| v.max(0.0)));
    assert_eq!(tanh.output_shape(&[4, 5, 6]), Some(vec![4, 5, 6]));
}

#[test]
fn empty_batch() {
    let x = Array2::<f64>::zeros((0, 3));
    let mut gelu = Gelu::new();
    assert_eq!(gelu.forward(x.view().into_dyn()).shape(), &[0, 3]);
    assert_eq!(gelu.backward(x.view().into_dyn()).shape(), &[0, 3]);
}

#[test]
#[should_panic(expected = "Relu::backward called before forward")]
fn relu_backward_before_forward_panics() {
    Module::<f64>::backward(&mut Relu::new(), array![[1.0]].view().into_dyn());
}

#[test]
#[should_panic(expected = "Gelu::backward called before forward")]
fn gelu_backward_twice_panics() {
    let mut gelu = Gelu::new();
    gelu.forward(array![[1.0]].view().into_dyn());
    gelu.backward(array![[1.0]].view().into_dyn());
    gelu.backward(array![[1.0]].view().into_dyn());
}

#[test]
#[should_panic(expected = "Sigmoid::backward called before forward")]
fn infer_does_not_cache() {
    let mut sigmoid = Sigmoid::new();
    sigmoid.infer(array![[1.0]].view().into_dyn());
    sigmoid.backward(array![[1.0]].view().into_dyn());
}

#[test]
#[should_panic(expected = "Tanh::backward: grad_output has shape [2, 3], expected [2, 2]")]
fn tanh_backward_shape_mismatch_panics() {
    let mut tanh = Tanh::new();
    tanh.forward(Array2::<f64>::zeros((2, 2)).view().into_dyn());
    tanh.backward(Array2::<f64>::zeros((2, 3)).view().into_dyn());
}

#[test]
#[should_panic(expected = "Relu::backward: grad_output has shape [1, 2], expected [3, 2]")]
fn relu_backward_shape_mismatch_panics() {
    let mut relu = Relu::new();
    relu.forward(Array2::<f32>::zeros((3, 2)).view().into_dyn());
    relu.backward(Array2::<f32>::zeros((1, 2)).view().into_dyn());
}

#[test]
fn applied_twice_before_backward_gives_both_gradients() {
    // y = tanh(tanh(x)) through one Tanh value: the saved states are popped in reverse order.
    let x = array![[0.3, -1.2, 2.0]].into_dyn();
    let mut tanh = Tanh::<f64>::new();
    let h = tanh.forward(x.view().into_dyn());
    let y = tanh.forward(h.view().into_dyn());
    assert_eq!(tanh.pending(), 2);
    let dh = tanh.backward(ndarray::ArrayD::ones(y.raw_dim()).view().into_dyn());
    let dx = tanh.backward(dh.view().into_dyn());
    assert_eq!(tanh.pending(), 0);
    for ((&xi, &hi), &di) in x.iter().zip(&h).zip(&dx) {
        let want = (1.0 - hi.tanh().powi(2)) * (1.0 - xi.tanh().powi(2));
        assert_close(di, want, 1e-15, "d tanh(tanh(x))");
    }
}
