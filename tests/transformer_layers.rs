//! Transformer leaf layers: LayerNorm, Dropout, Embedding, positional encodings.

mod common;

use common::{assert_close, check_gradients_d, rng, uniform_d};
use ndarray::{ArrayD, IxDyn};
use phm_nn::nn::transformer::{LayerNorm, LayerNormConfig};
use phm_nn::{Module, PhmError};

// ---------------------------------------------------------------------------------------
// LayerNorm

/// A layer norm with weight and bias drawn from `seed` (not the trivial 1 / 0).
fn layer_norm_with_affine(width: usize, seed: u64) -> LayerNorm<f64> {
    let ln = LayerNormConfig::new(width).init::<f64>().unwrap();
    let mut r = rng(seed);
    let w = uniform_d(&mut r, &[width]).mapv(|v| 1.0 + v);
    let b = uniform_d(&mut r, &[width]);
    ln.weight_param().unwrap().write().value_mut().assign(&w);
    ln.bias_param().unwrap().write().value_mut().assign(&b);
    ln
}

/// The textbook formula, row by row, in f64.
fn layer_norm_reference(x: &ArrayD<f64>, w: &[f64], b: &[f64], eps: f64) -> ArrayD<f64> {
    let d = w.len();
    let mut y = x.clone();
    for mut row in y
        .view_mut()
        .into_shape_with_order((x.len() / d, d))
        .unwrap()
        .rows_mut()
    {
        let mean = row.sum() / d as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        for (j, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) / (var + eps).sqrt() * w[j] + b[j];
        }
    }
    y
}

#[test]
fn layer_norm_gradients_match_finite_differences() {
    let mut ln = layer_norm_with_affine(5, 3);
    let x = uniform_d(&mut rng(4), &[2, 3, 5]);
    check_gradients_d(&mut ln, &x, 5, 1e-6);
    // Rank 2 and without the affine part.
    let x = uniform_d(&mut rng(6), &[4, 6]);
    let mut plain = LayerNormConfig::new(6)
        .with_affine(false)
        .init::<f64>()
        .unwrap();
    check_gradients_d(&mut plain, &x, 7, 1e-6);
}

#[test]
fn layer_norm_matches_reference() {
    let ln = layer_norm_with_affine(7, 11).clone();
    let ln = LayerNorm::from_params(
        ln.weight_param().unwrap().share(),
        ln.bias_param().unwrap().share(),
        1e-3,
    )
    .unwrap();
    let x = uniform_d(&mut rng(12), &[3, 2, 7]).mapv(|v| 4.0 * v + 2.0);
    let w: Vec<f64> = ln.weight_param().unwrap().value().iter().copied().collect();
    let b: Vec<f64> = ln.bias_param().unwrap().value().iter().copied().collect();
    let expected = layer_norm_reference(&x, &w, &b, 1e-3);
    let got = ln.infer(x.view());
    assert_eq!(got.shape(), &[3, 2, 7]);
    for (g, e) in got.iter().zip(expected.iter()) {
        assert_close(*g, *e, 1e-12, "layer norm vs reference");
    }
    // Default init: w = 1, b = 0, eps = 1e-5, so the rows come out with mean 0, variance ≈ 1.
    let plain = LayerNormConfig::new(7).init::<f64>().unwrap();
    assert_eq!(plain.eps(), 1e-5);
    assert_eq!(plain.width(), 7);
    let expected = layer_norm_reference(&x, &[1.0; 7], &[0.0; 7], 1e-5);
    for (g, e) in plain.infer(x.view()).iter().zip(expected.iter()) {
        assert_close(*g, *e, 1e-12, "default layer norm vs reference");
    }
}

#[test]
fn layer_norm_is_stable_in_f32() {
    // Rows of 1e4 + noise: a one-pass E[x²] − E[x]² in f32 loses the noise entirely.
    let width = 64;
    let noise = uniform_d(&mut rng(21), &[8, width]);
    let x32 = noise.mapv(|v| (1e4 + v) as f32);
    let x64 = x32.mapv(f64::from); // the same numbers, exactly
    let ln = LayerNormConfig::new(width).init::<f32>().unwrap();
    let got = ln.infer(x32.view());
    let expected = layer_norm_reference(&x64, &vec![1.0; width], &vec![0.0; width], 1e-5);
    for (g, e) in got.iter().zip(expected.iter()) {
        assert!((f64::from(*g) - e).abs() < 1e-5, "f32 {g} vs f64 {e}");
    }
    // forward agrees with infer, and the f32 backward agrees with the f64 one.
    let mut ln32 = ln.clone();
    assert_eq!(ln32.forward(x32.view()), got);
    let g = uniform_d(&mut rng(22), &[8, width]);
    let dx32 = ln32.backward(g.mapv(|v| v as f32).view());
    let mut ln64 = LayerNormConfig::new(width).init::<f64>().unwrap();
    ln64.forward(x64.view());
    let dx64 = ln64.backward(g.mapv(|v| f64::from(v as f32)).view());
    let scale = dx64.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (a, b) in dx32.iter().zip(dx64.iter()) {
        assert!(
            (f64::from(*a) - b).abs() <= 1e-4 * scale,
            "dx f32 {a} vs f64 {b}"
        );
    }
}

#[test]
fn layer_norm_shapes_params_and_errors() {
    let ln = LayerNormConfig::new(4).init::<f32>().unwrap();
    assert_eq!(ln.output_shape(&[3, 4]), Some(vec![3, 4]));
    assert_eq!(ln.output_shape(&[2, 3, 4]), Some(vec![2, 3, 4]));
    assert_eq!(ln.output_shape(&[2, 3, 5]), None);
    assert_eq!(
        ln.infer(ArrayD::zeros(IxDyn(&[3, 4])).view()).shape(),
        &[3, 4]
    );
    let names: Vec<String> = phm_nn::module::params(&ln)
        .into_iter()
        .map(|(n, p)| format!("{n}{:?}", p.shape()))
        .collect();
    assert_eq!(names, ["weight[4]", "bias[4]"]);
    assert_eq!(ln.num_parameters(), 8);
    let plain = LayerNormConfig::new(4)
        .with_affine(false)
        .init::<f32>()
        .unwrap();
    assert_eq!(plain.num_parameters(), 0);
    assert!(plain.weight_param().is_none() && plain.bias_param().is_none());

    assert!(matches!(
        LayerNormConfig::new(0).init::<f32>(),
        Err(PhmError::ZeroSize { .. })
    ));
    for eps in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            LayerNormConfig::new(3).with_eps(eps).init::<f32>(),
            Err(PhmError::InvalidArgument { .. })
        ));
    }
    let w = phm_nn::Param::new(ArrayD::<f32>::ones(IxDyn(&[3])));
    let b = phm_nn::Param::new(ArrayD::<f32>::zeros(IxDyn(&[4])));
    assert!(matches!(
        LayerNorm::from_params(w, b, 1e-5),
        Err(PhmError::ShapeMismatch { .. })
    ));
}

#[test]
#[should_panic(expected = "[2, 5]")]
fn layer_norm_wrong_width_panics() {
    let ln = LayerNormConfig::new(4).init::<f64>().unwrap();
    ln.infer(ArrayD::zeros(IxDyn(&[2, 5])).view());
}
