//! Shared test helpers: seeded random arrays and finite-difference gradient checks (f64).
#![allow(dead_code)]

use ndarray::{Array2, ArrayD, IxDyn};
use phm_nn::Module;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A seeded generator.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// An array of `shape` filled by a seeded xorshift generator with values in `[-1, 1]`,
/// independent of the code under test and of `rand`'s versions (for property tests, whose
/// strategies hand out plain `u64` seeds).
pub fn xorshift<D: ndarray::Dimension, Sh: ndarray::ShapeBuilder<Dim = D>>(
    seed: u64,
    shape: Sh,
) -> ndarray::Array<f64, D> {
    let mut state = seed | 1;
    ndarray::Array::from_shape_simple_fn(shape, || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 2001) as f64 / 1000.0 - 1.0
    })
}

/// A `(rows, cols)` matrix of uniform values in `[-1, 1)`.
pub fn uniform2(rng: &mut StdRng, rows: usize, cols: usize) -> Array2<f64> {
    Array2::from_shape_simple_fn((rows, cols), || rng.random_range(-1.0..1.0))
}

/// An array of the given shape with uniform values in `[-1, 1)`.
pub fn uniform_d(rng: &mut StdRng, shape: &[usize]) -> ArrayD<f64> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.random_range(-1.0..1.0))
}

const EPS: f64 = 1e-6;

/// Asserts `|a - b| <= tol · max(1, |a|, |b|)`.
#[track_caller]
pub fn assert_close(a: f64, b: f64, tol: f64, what: &str) {
    let scale = 1f64.max(a.abs()).max(b.abs());
    assert!(
        (a - b).abs() <= tol * scale,
        "{what}: analytic {a} vs numeric {b} (diff {})",
        (a - b).abs()
    );
}

/// The scalar `L = Σ Y ⊙ C` whose gradient with respect to `Y` is `C`.
fn probe_loss<M: Module<f64> + ?Sized>(m: &mut M, x: &Array2<f64>, c: &Array2<f64>) -> f64 {
    let y = m.forward(x.view());
    (&y * c).sum()
}

/// Checks `backward`'s input gradient and every trainable parameter gradient of `m` at `x`
/// against central finite differences, and checks frozen parameters get no gradient.
///
/// Also checks that `infer` gives the same output as `forward` and that gradients accumulate.
pub fn check_gradients<M: Module<f64> + ?Sized>(m: &mut M, x: &Array2<f64>, seed: u64, tol: f64) {
    let mut r = rng(seed);
    let y = m.forward(x.view());
    let c = uniform2(&mut r, y.nrows(), y.ncols());
    let inferred = m.infer(x.view());
    for (a, b) in y.iter().zip(inferred.iter()) {
        assert_close(*a, *b, 1e-12, "infer vs forward");
    }

    // Analytic gradients.
    m.zero_grad();
    m.forward(x.view());
    let dx = m.backward(c.view());
    assert_eq!(dx.dim(), x.dim(), "dX has the input's shape");

    // Input gradient.
    for i in 0..x.nrows() {
        for j in 0..x.ncols() {
            let mut xp = x.clone();
            xp[[i, j]] += EPS;
            let lp = probe_loss(m, &xp, &c);
            xp[[i, j]] -= 2.0 * EPS;
            let lm = probe_loss(m, &xp, &c);
            assert_close(
                dx[[i, j]],
                (lp - lm) / (2.0 * EPS),
                tol,
                &format!("dX[{i},{j}]"),
            );
        }
    }

    // Parameter gradients.
    let mut params: Vec<(String, ArrayD<f64>, bool)> = Vec::new();
    m.visit_params(&mut |name, p| {
        params.push((name.to_string(), p.grad().to_owned(), p.is_trainable()))
    });
    for (name, grad, trainable) in &params {
        if !trainable {
            assert!(
                grad.iter().all(|g| *g == 0.0),
                "frozen {name} got a gradient"
            );
            continue;
        }
        for flat in 0..grad.len() {
            let mut numeric = 0.0;
            for (sign, step) in [(1.0, EPS), (-1.0, -2.0 * EPS)] {
                perturb(m, name, flat, step);
                numeric += sign * probe_loss(m, x, &c);
            }
            perturb(m, name, flat, EPS);
            numeric /= 2.0 * EPS;
            let analytic = grad.iter().nth(flat).copied().unwrap();
            assert_close(analytic, numeric, tol, &format!("d{name}[{flat}]"));
        }
    }

    // Gradients accumulate until zero_grad.
    m.forward(x.view());
    m.backward(c.view());
    let mut doubled = Vec::new();
    m.visit_params(&mut |_, p| doubled.push(p.grad().to_owned()));
    for ((name, once, _), twice) in params.iter().zip(&doubled) {
        for (a, b) in once.iter().zip(twice.iter()) {
            assert_close(2.0 * a, *b, 1e-12, &format!("{name} accumulates"));
        }
    }
    m.zero_grad();
}

fn perturb<M: Module<f64> + ?Sized>(m: &mut M, name: &str, flat: usize, step: f64) {
    let mut found = false;
    m.visit_params_mut(&mut |n, p| {
        if n == name {
            let mut v = p.value_mut();
            *v.iter_mut().nth(flat).unwrap() += step;
            found = true;
        }
    });
    assert!(found, "parameter {name} not found");
}
