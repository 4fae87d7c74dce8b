//! Transformer leaf layers: LayerNorm, Dropout, Embedding, positional encodings.

use crate::common::{assert_close, check_gradients_d, rng, uniform_d};
use ndarray::{ArrayD, IxDyn};
use phm_nn::nn::{
    Dropout, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, PositionalEncoding,
    DEFAULT_LEARNED_INIT,
};
use phm_nn::{Init, Module, PhmError};

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

// ---------------------------------------------------------------------------------------
// Dropout

#[test]
fn dropout_keeps_about_one_minus_p_and_preserves_the_mean() {
    let (p, n) = (0.3, 200_000usize);
    let mut drop = Dropout::<f64>::new(p, 17).unwrap();
    let x = ArrayD::<f64>::ones(IxDyn(&[50, 40, 100]));
    let y = drop.forward(x.view());
    let scale = 1.0 / (1.0 - p);
    assert!(
        y.iter().all(|&v| v == 0.0 || v == scale),
        "entries are 0 or 1/(1 − p)"
    );
    let kept = y.iter().filter(|&&v| v != 0.0).count() as f64;
    // Binomial(n, 1 − p): 5 standard deviations.
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (kept - (1.0 - p) * n as f64).abs() < 5.0 * sd,
        "kept {kept} of {n}, expected {} ± {sd}",
        (1.0 - p) * n as f64
    );
    // The mean of y estimates the mean of x (1): sd of the mean = √(p/(1 − p)/n).
    let mean = y.sum() / n as f64;
    let sd_mean = (p / (1.0 - p) / n as f64).sqrt();
    assert!((mean - 1.0).abs() < 5.0 * sd_mean, "mean {mean}");
    // f32 too.
    let mut drop32 = Dropout::<f32>::new(p, 18).unwrap();
    let y32 = drop32.forward(x.mapv(|v| v as f32).view());
    let kept32 = y32.iter().filter(|&&v| v != 0.0).count() as f64;
    assert!((kept32 - (1.0 - p) * n as f64).abs() < 5.0 * sd);
}

#[test]
fn dropout_masks_are_seeded_and_backward_reuses_them() {
    let x = uniform_d(&mut rng(30), &[6, 7, 8]);
    let mut a = Dropout::<f64>::new(0.5, 5).unwrap();
    let mut b = Dropout::<f64>::new(0.5, 5).unwrap();
    let ya = a.forward(x.view());
    assert_eq!(ya, b.forward(x.view()), "same seed, same mask");
    let ya2 = a.forward(x.view());
    assert_ne!(ya, ya2, "the generator moves on between calls");
    let mut c = Dropout::<f64>::new(0.5, 6).unwrap();
    assert_ne!(ya, c.forward(x.view()), "another seed, another mask");
    a.reseed(5);
    assert_eq!(a.forward(x.view()), ya, "reseed replays the masks");

    // Backward goes through the saved masks in reverse order: dX = G ⊙ m/(1 − p), and
    // y = x ⊙ m/(1 − p), so dX = G ⊙ y / x entry by entry (x has no zeros here).
    let g = uniform_d(&mut rng(31), &[6, 7, 8]);
    let dx = a.backward(g.view());
    for ((d, gi), (yi, xi)) in dx.iter().zip(g.iter()).zip(ya.iter().zip(x.iter())) {
        assert_close(*d, gi * yi / xi, 1e-12, "dropout backward, last forward");
    }
    let dx2 = a.backward(g.view());
    for ((d, gi), (yi, xi)) in dx2.iter().zip(g.iter()).zip(ya2.iter().zip(x.iter())) {
        assert_close(*d, gi * yi / xi, 1e-12, "dropout backward, second forward");
    }
    let dx1 = a.backward(g.view());
    for ((d, gi), (yi, xi)) in dx1.iter().zip(g.iter()).zip(ya.iter().zip(x.iter())) {
        assert_close(*d, gi * yi / xi, 1e-12, "dropout backward, first forward");
    }
    assert_eq!(a.pending(), 0);
}

#[test]
fn dropout_gradient_matches_finite_differences_with_a_fixed_mask() {
    let x = uniform_d(&mut rng(40), &[3, 4, 5]);
    let c = uniform_d(&mut rng(41), &[3, 4, 5]);
    let mut drop = Dropout::<f64>::new(0.4, 0).unwrap();
    let loss = |drop: &mut Dropout<f64>, x: &ArrayD<f64>| {
        drop.reseed(99);
        let y = drop.forward(x.view());
        drop.clear_saved();
        (&y * &c).sum()
    };
    drop.reseed(99);
    drop.forward(x.view());
    let dx = drop.backward(c.view());
    let eps = 1e-6;
    for flat in 0..x.len() {
        let mut xp = x.clone();
        *xp.iter_mut().nth(flat).unwrap() += eps;
        let lp = loss(&mut drop, &xp);
        *xp.iter_mut().nth(flat).unwrap() -= 2.0 * eps;
        let lm = loss(&mut drop, &xp);
        let numeric = (lp - lm) / (2.0 * eps);
        assert_close(*dx.iter().nth(flat).unwrap(), numeric, 1e-8, "dropout dX");
    }
    assert!(dx.iter().any(|&v| v == 0.0) && dx.iter().any(|&v| v != 0.0));
}

#[test]
fn dropout_is_the_identity_at_inference_and_for_p_zero() {
    let x = uniform_d(&mut rng(50), &[4, 9]);
    let mut drop = Dropout::<f64>::new(0.5, 1).unwrap();
    assert_eq!(drop.infer(x.view()), x);
    assert_eq!(drop.pending(), 0, "infer saves nothing");
    assert_eq!(drop.num_parameters(), 0);
    assert_eq!(drop.output_shape(&[2, 3, 4]), Some(vec![2, 3, 4]));

    // p = 0: forward and backward are the identity, and the generator does not move.
    drop.set_p(0.0).unwrap();
    assert_eq!(drop.p(), 0.0);
    assert_eq!(drop.forward(x.view()), x);
    let g = uniform_d(&mut rng(51), &[4, 9]);
    assert_eq!(drop.backward(g.view()), g);
    drop.set_p(0.5).unwrap();
    let mut fresh = Dropout::<f64>::new(0.5, 1).unwrap();
    assert_eq!(
        drop.forward(x.view()),
        fresh.forward(x.view()),
        "p = 0 drew nothing"
    );
}

#[test]
fn dropout_rejects_invalid_probabilities() {
    for p in [1.0, 1.5, -0.1, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(
                Dropout::<f32>::new(p, 0),
                Err(PhmError::InvalidArgument { .. })
            ),
            "p = {p}"
        );
    }
    let mut drop = Dropout::<f32>::new(0.2, 0).unwrap();
    assert!(drop.set_p(1.0).is_err());
    assert!(drop.set_p(f64::NAN).is_err());
    assert_eq!(drop.p(), 0.2, "a rejected p leaves the old one");
}

#[test]
#[should_panic(expected = "Dropout::backward called before forward")]
fn dropout_backward_without_forward_panics() {
    let mut drop = Dropout::<f64>::new(0.5, 0).unwrap();
    drop.backward(ArrayD::zeros(IxDyn(&[2, 2])).view());
}

// ---------------------------------------------------------------------------------------
// Embedding

fn ids_2x4() -> ndarray::ArrayD<usize> {
    // Repeated ids (1 three times, 4 twice), one id never used (2, 5).
    ndarray::array![[1usize, 4, 1, 0], [3, 1, 4, 0]].into_dyn()
}

#[test]
fn embedding_weight_gradient_matches_finite_differences() {
    let mut emb = EmbeddingConfig::new(6, 3)
        .init::<f64, _>(&mut rng(60))
        .unwrap();
    let ids = ids_2x4();
    let c = uniform_d(&mut rng(61), &[2, 4, 3]);
    emb.lookup(ids.view());
    emb.backward_ids(c.view());
    assert_eq!(emb.pending(), 0);
    let grad = emb.weight_param().grad();
    let eps = 1e-6;
    let p = emb.weight_param().share();
    for v in 0..6 {
        for j in 0..3 {
            p.write().value_mut()[[v, j]] += eps;
            let lp = (&emb.lookup_infer(ids.view()) * &c).sum();
            p.write().value_mut()[[v, j]] -= 2.0 * eps;
            let lm = (&emb.lookup_infer(ids.view()) * &c).sum();
            p.write().value_mut()[[v, j]] += eps;
            assert_close(grad[[v, j]], (lp - lm) / (2.0 * eps), 1e-8, "dW");
        }
    }
    // Repeated ids accumulate: row v of dW is the sum of the rows of c at the positions of v.
    for v in 0..6 {
        for j in 0..3 {
            let mut expected = 0.0;
            for (pos, &id) in ids.indexed_iter() {
                if id == v {
                    expected += c[[pos[0], pos[1], j]];
                }
            }
            assert_close(grad[[v, j]], expected, 1e-12, "scatter-add");
        }
    }
    assert!(grad.slice(ndarray::s![2, ..]).iter().all(|&g| g == 0.0));
    assert!(grad.slice(ndarray::s![1, ..]).iter().all(|&g| g != 0.0));

    // The Module API (ids as floats) gives the same gradient and zeros for the input.
    let mut emb2 = Embedding::from_param(phm_nn::Param::new(emb.weight_param().value())).unwrap();
    let x = ids.mapv(|i| i as f64);
    let y = emb2.forward(x.view());
    assert_eq!(y, emb.lookup_infer(ids.view()));
    assert_eq!(emb2.infer(x.view()), y);
    let dx = emb2.backward(c.view());
    assert_eq!(dx, ArrayD::<f64>::zeros(IxDyn(&[2, 4])));
    assert_eq!(emb2.weight_param().grad(), grad);
}

#[test]
fn embedding_lookup_returns_the_rows_with_the_right_shapes() {
    let emb = EmbeddingConfig::new(5, 4)
        .init::<f32, _>(&mut rng(70))
        .unwrap();
    assert_eq!((emb.vocab(), emb.width()), (5, 4));
    let w = emb.weight_param().value();
    let ids1 = ndarray::array![3usize, 0, 3].into_dyn();
    let y1 = emb.lookup_infer(ids1.view());
    assert_eq!(y1.shape(), &[3, 4]);
    let ids2 = ids_2x4().mapv(|i| i % 5);
    let y2 = emb.lookup_infer(ids2.view());
    assert_eq!(y2.shape(), &[2, 4, 4]);
    for (pos, &id) in ids2.indexed_iter() {
        for j in 0..4 {
            assert_eq!(y2[[pos[0], pos[1], j]], w[[id, j]]);
        }
    }
    assert_eq!(emb.output_shape(&[2, 7]), Some(vec![2, 7, 4]));
    let names: Vec<String> = phm_nn::module::params(&emb)
        .into_iter()
        .map(|(n, p)| format!("{n}{:?}", p.shape()))
        .collect();
    assert_eq!(names, ["weight[5, 4]"]);

    // Composes with Sequential: ids as floats → embedding → layer norm.
    let model = phm_nn::Sequential::<f32>::new()
        .add(emb.clone())
        .add(LayerNormConfig::new(4).init::<f32>().unwrap());
    assert_eq!(
        model.infer(ids2.mapv(|i| i as f32).view()).shape(),
        &[2, 4, 4]
    );

    // Default init N(0, 1): sample variance of 10⁴ draws within 10 % of 1.
    let big = EmbeddingConfig::new(100, 100)
        .init::<f64, _>(&mut rng(71))
        .unwrap();
    let v = big.weight_param().value();
    let var = v.mapv(|x| x * x).mean().unwrap();
    assert!((var - 1.0).abs() < 0.1, "variance {var}");

    assert!(matches!(
        EmbeddingConfig::new(0, 4).init::<f32, _>(&mut rng(0)),
        Err(PhmError::ZeroSize { .. })
    ));
    assert!(matches!(
        Embedding::from_param(phm_nn::Param::new(ArrayD::<f32>::zeros(IxDyn(&[3])))),
        Err(PhmError::ShapeMismatch { .. })
    ));
}

#[test]
fn embedding_bad_id_is_an_error_in_try_lookup() {
    let emb = EmbeddingConfig::new(5, 2)
        .init::<f64, _>(&mut rng(80))
        .unwrap();
    let err = emb
        .try_lookup_infer(ndarray::array![0usize, 5].into_dyn().view())
        .unwrap_err();
    assert!(matches!(err, PhmError::InvalidArgument { .. }));
    let msg = err.to_string();
    assert!(msg.contains("id 5") && msg.contains("vocab 5"), "{msg}");
    assert!(emb
        .try_lookup_infer(ndarray::array![4usize].into_dyn().view())
        .is_ok());
}

#[test]
#[should_panic(expected = "id 7 is out of range for vocab 5")]
fn embedding_bad_id_panics_in_lookup() {
    let mut emb = EmbeddingConfig::new(5, 2)
        .init::<f64, _>(&mut rng(81))
        .unwrap();
    emb.lookup(ndarray::array![1usize, 7].into_dyn().view());
}

#[test]
#[should_panic(expected = "out of range for vocab 5")]
fn embedding_bad_id_panics_in_lookup_infer() {
    let emb = EmbeddingConfig::new(5, 2)
        .init::<f64, _>(&mut rng(82))
        .unwrap();
    emb.lookup_infer(ndarray::array![5usize].into_dyn().view());
}

#[test]
#[should_panic(expected = "id 2.5 is not an integer in 0..5")]
fn embedding_module_rejects_fractional_ids() {
    let mut emb = EmbeddingConfig::new(5, 2)
        .init::<f64, _>(&mut rng(83))
        .unwrap();
    emb.forward(ndarray::array![1.0, 2.5].into_dyn().view());
}

#[test]
#[should_panic(expected = "id -1 is not an integer in 0..5")]
fn embedding_module_rejects_negative_ids() {
    let emb = EmbeddingConfig::new(5, 2)
        .init::<f64, _>(&mut rng(84))
        .unwrap();
    emb.infer(ndarray::array![-1.0].into_dyn().view());
}

// ---------------------------------------------------------------------------------------
// Positional encodings

/// The closed form, written independently: angle = p · exp(−ln(10000) · 2i / width).
fn sinusoid(p: usize, j: usize, width: usize) -> f64 {
    let i2 = (j - j % 2) as f64;
    let angle = p as f64 * (-(10000f64.ln()) * i2 / width as f64).exp();
    if j.is_multiple_of(2) {
        angle.sin()
    } else {
        angle.cos()
    }
}

#[test]
fn sinusoidal_values_match_the_closed_form() {
    for width in [6usize, 5, 1] {
        let pe = PositionalEncoding::<f64>::sinusoidal(width).unwrap();
        assert!(!pe.is_learned() && pe.max_len().is_none() && pe.width() == width);
        let table = pe.table(10);
        assert_eq!(table.shape(), &[10, width]);
        for p in [0usize, 1, 7, 9] {
            for j in 0..width {
                assert_close(table[[p, j]], sinusoid(p, j, width), 1e-12, "table");
            }
        }
        // Far positions through infer_at: x = 0, so y = P[start..start + T].
        let start = 1000;
        let y = pe.infer_at(ArrayD::zeros(IxDyn(&[2, 3, width])).view(), start);
        for b in 0..2 {
            for t in 0..3 {
                for j in 0..width {
                    assert_close(y[[b, t, j]], sinusoid(start + t, j, width), 1e-12, "far");
                }
            }
        }
    }
    // Position 0: sin 0 = 0 in even columns, cos 0 = 1 in odd ones.
    let t = PositionalEncoding::<f32>::sinusoidal(4).unwrap().table(1);
    assert_eq!(t.row(0).to_vec(), vec![0.0f32, 1.0, 0.0, 1.0]);
}

#[test]
fn sinusoidal_gradient_is_the_identity() {
    let mut pe = PositionalEncoding::<f64>::sinusoidal(4).unwrap();
    let x = uniform_d(&mut rng(90), &[2, 3, 4]);
    check_gradients_d(&mut pe, &x, 91, 1e-6);
    let g = uniform_d(&mut rng(92), &[2, 3, 4]);
    pe.forward_at(x.view(), 5);
    assert_eq!(pe.backward(g.view()), g);
    assert_eq!(pe.num_parameters(), 0);
}

#[test]
fn learned_gradients_match_finite_differences() {
    let mut pe =
        PositionalEncoding::<f64>::learned(6, 4, DEFAULT_LEARNED_INIT, &mut rng(100)).unwrap();
    assert!(pe.is_learned() && pe.max_len() == Some(6));
    let x = uniform_d(&mut rng(101), &[2, 3, 4]);
    check_gradients_d(&mut pe, &x, 102, 1e-6);
    let x2 = uniform_d(&mut rng(103), &[5, 4]); // rank 2: (T, width)
    check_gradients_d(&mut pe, &x2, 104, 1e-6);
}

#[test]
fn learned_gradient_with_a_start_offset() {
    let pe0 =
        PositionalEncoding::<f64>::learned(7, 3, Init::Normal { std: 1.0 }, &mut rng(110)).unwrap();
    let mut pe = pe0.clone();
    let (start, x) = (3, uniform_d(&mut rng(111), &[2, 2, 3]));
    let c = uniform_d(&mut rng(112), &[2, 2, 3]);
    // Value: P rows start..start + T.
    let y = pe.forward_at(x.view(), start);
    let w = pe.weight_param().unwrap().value();
    for ((b, t, j), v) in y
        .view()
        .into_dimensionality::<ndarray::Ix3>()
        .unwrap()
        .indexed_iter()
    {
        assert_close(*v, x[[b, t, j]] + w[[start + t, j]], 1e-15, "y");
    }
    assert_eq!(pe.infer_at(x.view(), start), y);
    let dx = pe.backward(c.view());
    assert_eq!(dx, c);
    let grad = pe.weight_param().unwrap().grad();
    let p = pe.weight_param().unwrap().share();
    let eps = 1e-6;
    for r in 0..7 {
        for j in 0..3 {
            p.write().value_mut()[[r, j]] += eps;
            let lp = (&pe.infer_at(x.view(), start) * &c).sum();
            p.write().value_mut()[[r, j]] -= 2.0 * eps;
            let lm = (&pe.infer_at(x.view(), start) * &c).sum();
            p.write().value_mut()[[r, j]] += eps;
            assert_close(grad[[r, j]], (lp - lm) / (2.0 * eps), 1e-8, "dW at start 3");
        }
    }
    // Only rows start..start + T get a gradient.
    for r in (0..3).chain(5..7) {
        assert!(
            grad.slice(ndarray::s![r, ..]).iter().all(|&g| g == 0.0),
            "row {r}"
        );
    }
}

#[test]
fn positional_step_by_step_equals_the_whole_sequence() {
    // What a key/value cache does in generation: token t alone at position t.
    let sin = PositionalEncoding::<f32>::sinusoidal(8).unwrap();
    let learned =
        PositionalEncoding::<f32>::learned(5, 8, DEFAULT_LEARNED_INIT, &mut rng(120)).unwrap();
    let x = uniform_d(&mut rng(121), &[2, 5, 8]).mapv(|v| v as f32);
    for pe in [&sin, &learned] {
        let whole = pe.infer(x.view());
        assert_eq!(whole.shape(), &[2, 5, 8]);
        for t in 0..5 {
            let step = pe.infer_at(x.slice(ndarray::s![.., t..t + 1, ..]).into_dyn(), t);
            assert_eq!(step, whole.slice(ndarray::s![.., t..t + 1, ..]).into_dyn());
        }
        assert_eq!(pe.output_shape(&[2, 5, 8]), Some(vec![2, 5, 8]));
        assert_eq!(pe.output_shape(&[5, 8]), Some(vec![5, 8]));
        assert_eq!(pe.output_shape(&[8]), None);
        assert_eq!(
            pe.infer(ArrayD::zeros(IxDyn(&[3, 8])).view()).shape(),
            &[3, 8]
        );
    }
    assert_eq!(learned.output_shape(&[1, 6, 8]), None, "beyond max_len");
    let names: Vec<String> = phm_nn::module::params(&learned)
        .into_iter()
        .map(|(n, p)| format!("{n}{:?}", p.shape()))
        .collect();
    assert_eq!(names, ["weight[5, 8]"]);
    assert!(matches!(
        PositionalEncoding::<f32>::sinusoidal(0),
        Err(PhmError::ZeroSize { .. })
    ));
    assert!(matches!(
        PositionalEncoding::<f32>::learned(0, 4, DEFAULT_LEARNED_INIT, &mut rng(0)),
        Err(PhmError::ZeroSize { .. })
    ));
}

#[test]
#[should_panic(expected = "positions 4..7 exceed the learned table's max_len 6")]
fn learned_beyond_max_len_panics() {
    let mut pe =
        PositionalEncoding::<f64>::learned(6, 2, DEFAULT_LEARNED_INIT, &mut rng(130)).unwrap();
    pe.forward_at(ArrayD::zeros(IxDyn(&[1, 3, 2])).view(), 4);
}

#[test]
#[should_panic(expected = "rank ≥ 2")]
fn positional_rank_one_panics() {
    let pe = PositionalEncoding::<f64>::sinusoidal(2).unwrap();
    pe.infer(ArrayD::zeros(IxDyn(&[2])).view());
}
