//! Shared test helpers: seeded random arrays and finite-difference gradient checks (f64).
#![allow(dead_code)]

use ndarray::{Array2, ArrayD, IxDyn};
use phm_nn::module::params;
use phm_nn::{Module, Param};
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
fn probe_loss<M: Module<f64> + ?Sized>(m: &mut M, x: &ArrayD<f64>, c: &ArrayD<f64>) -> f64 {
    let y = m.forward(x.view());
    m.clear_saved();
    (&y * c).sum()
}

/// [`check_gradients_d`] for a matrix input.
pub fn check_gradients<M: Module<f64> + ?Sized>(m: &mut M, x: &Array2<f64>, seed: u64, tol: f64) {
    check_gradients_d(m, &x.clone().into_dyn(), seed, tol);
}

/// Checks `backward`'s input gradient and every trainable parameter gradient of `m` at `x`
/// (any rank) against central finite differences, and checks frozen parameters get no
/// gradient.
///
/// Also checks that `infer` gives the same output as `forward`, that gradients accumulate,
/// and that backward consumes the saved state.
pub fn check_gradients_d<M: Module<f64> + ?Sized>(m: &mut M, x: &ArrayD<f64>, seed: u64, tol: f64) {
    let mut r = rng(seed);
    let y = m.forward(x.view());
    m.clear_saved();
    let c = uniform_d(&mut r, y.shape());
    let inferred = m.infer(x.view());
    assert_eq!(inferred.shape(), y.shape(), "infer vs forward shape");
    for (a, b) in y.iter().zip(inferred.iter()) {
        assert_close(*a, *b, 1e-12, "infer vs forward");
    }

    // Analytic gradients.
    m.zero_grad();
    m.forward(x.view());
    let dx = m.backward(c.view());
    assert_eq!(m.pending(), 0, "backward consumes the saved state");
    assert_eq!(dx.shape(), x.shape(), "dX has the input's shape");

    // Input gradient.
    for flat in 0..x.len() {
        let mut xp = x.clone();
        *xp.iter_mut().nth(flat).unwrap() += EPS;
        let lp = probe_loss(m, &xp, &c);
        *xp.iter_mut().nth(flat).unwrap() -= 2.0 * EPS;
        let lm = probe_loss(m, &xp, &c);
        let analytic = *dx.iter().nth(flat).unwrap();
        assert_close(
            analytic,
            (lp - lm) / (2.0 * EPS),
            tol,
            &format!("dX[{flat}]"),
        );
    }

    // Parameter gradients, each distinct tensor once.
    let ps = params(m);
    for (name, p) in &ps {
        let grad = p.grad();
        if !p.is_trainable() {
            assert!(
                grad.iter().all(|g| *g == 0.0),
                "frozen {name} got a gradient"
            );
            continue;
        }
        for flat in 0..grad.len() {
            let mut numeric = 0.0;
            for (sign, step) in [(1.0, EPS), (-1.0, -2.0 * EPS)] {
                perturb(p, flat, step);
                numeric += sign * probe_loss(m, x, &c);
            }
            perturb(p, flat, EPS);
            numeric /= 2.0 * EPS;
            let analytic = grad.iter().nth(flat).copied().unwrap();
            assert_close(analytic, numeric, tol, &format!("d{name}[{flat}]"));
        }
    }

    // Gradients accumulate until zero_grad.
    let once: Vec<ArrayD<f64>> = ps.iter().map(|(_, p)| p.grad()).collect();
    m.forward(x.view());
    m.backward(c.view());
    for ((name, p), once) in ps.iter().zip(&once) {
        for (a, b) in once.iter().zip(p.grad().iter()) {
            assert_close(2.0 * a, *b, 1e-12, &format!("{name} accumulates"));
        }
    }
    m.zero_grad();
}

fn perturb(p: &Param<f64>, flat: usize, step: f64) {
    let mut w = p.write();
    let mut v = w.value_mut();
    *v.iter_mut().nth(flat).unwrap() += step;
}
