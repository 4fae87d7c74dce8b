//! Element-wise activation functions: [`Relu`], [`Tanh`], [`Sigmoid`] and [`Gelu`].
//!
//! Each maps a tensor of any shape to one of the same shape, element by element, and has no
//! parameters:
//!
//! ```text
//!     relu(x)    = max(x, 0)                          relu'(x)    = 1 if x > 0, else 0
//!     tanh(x)    = (eˣ − e⁻ˣ) / (eˣ + e⁻ˣ)            tanh'(x)    = 1 − tanh(x)²
//!     sigmoid(x) = 1 / (1 + e⁻ˣ)                      sigmoid'(x) = σ(x)·(1 − σ(x))
//!     gelu(x)    = x·Φ(x) = ½·x·(1 + erf(x/√2))       gelu'(x)    = Φ(x) + x·φ(x)
//! ```
//!
//! with `Φ` and `φ` the standard normal CDF and density. As in PyTorch, `relu'(0) = 0` and
//! [`Gelu`] is the exact `erf` form (PyTorch's default, `approximate='none'`), evaluated in
//! the layer's float type (`f32` in `f32`, `f64` in `f64`), with `Φ(x) = ½·erfc(−x/√2)` from
//! `libm` (full relative accuracy in the lower tail). [`Sigmoid`] never overflows: for `x < 0` it computes
//! `eˣ / (1 + eˣ)`, so `σ(−1000) = 0` and `σ(1000) = 1` exactly.
//!
//! Each forward pushes what its backward pass needs (the input for ReLU, the derivative
//! `gelu'(x)` for GELU, the output for tanh and sigmoid) on the layer's stack of saved states; each backward pops one, so an
//! activation can be applied several times before the backward pass (see
//! [`crate::module`]).
//!
//! ```
//! use ndarray::array;
//! use phm_nn::nn::activation::{Gelu, Relu, Sigmoid};
//! use phm_nn::Module;
//!
//! let mut relu = Relu::new();
//! let y = relu.forward(array![[-1.0, 0.0, 2.0]].into_dyn().view());
//! assert_eq!(y, array![[0.0, 0.0, 2.0]].into_dyn());
//! // dL/dX = dL/dY ⊙ relu'(X), with relu'(0) = 0:
//! let dx = relu.backward(array![[1.0, 1.0, 1.0]].into_dyn().view());
//! assert_eq!(dx, array![[0.0, 0.0, 1.0]].into_dyn());
//!
//! let s = Sigmoid::new().infer(array![0.0f32, 1000.0, -1000.0].into_dyn().view());
//! assert_eq!(s, array![0.5f32, 1.0, 0.0].into_dyn());
//!
//! // gelu(1) = Φ(1) = 0.8413447460685429…
//! let g = Gelu::new().infer(array![[[1.0f64]]].into_dyn().view());
//! assert!((g[[0, 0, 0]] - 0.841_344_746_068_542_9).abs() < 1e-15);
//! ```

use ndarray::{ArrayD, ArrayViewD, ArrayViewMut1, Axis, Zip};

use crate::kernels::buffer_pool;
use crate::kernels::gemm::assert_same_shape;
use crate::kernels::parallel::{for_each_chunk, for_each_chunk2};
use crate::module::{SavedStates, StateStack};
use crate::{Float, Module};

/// Pops the most recent saved array, checking that `grad_output` has its shape.
#[track_caller]
fn pop_checked<F: Float>(
    saved: &mut SavedStates<ArrayD<F>>,
    layer: &str,
    grad_output: &ArrayViewD<'_, F>,
) -> ArrayD<F> {
    let saved = saved.pop(layer);
    assert_same_shape(
        &format!("{layer}::backward"),
        "grad_output",
        grad_output.shape(),
        saved.shape(),
    );
    saved
}

/// Defines an activation struct with its constructor and the parts of `Module` that do not
/// depend on the function.
macro_rules! activation {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name<F> {
            saved: SavedStates<ArrayD<F>>,
        }

        impl<F: Float> $name<F> {
            #[doc = concat!("A ", stringify!($name), " layer.")]
            #[must_use]
            pub fn new() -> Self {
                $name { saved: SavedStates::new() }
            }
        }

        impl<F: Float> Default for $name<F> {
            fn default() -> Self {
                Self::new()
            }
        }
    };
}

/// The `Module` methods every activation shares: saved-state bookkeeping and shapes.
macro_rules! stateless_shape {
    () => {
        fn saved_states(&self) -> Option<&dyn StateStack> {
            Some(&self.saved)
        }

        fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
            Some(input.to_vec())
        }
    };
}

activation!(
    /// Rectified linear unit, `relu(x) = max(x, 0)`, with derivative `0` at `x = 0` (PyTorch).
    ///
    /// Saves the input. A NaN input gives a NaN output and a zero gradient.
    Relu
);

impl<F: Float> Module<F> for Relu<F> {
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.saved.push(x.to_owned());
        relu(x)
    }

    /// `dL/dX = dL/dY ⊙ [X > 0]`.
    ///
    /// # Panics
    /// If no forward pass is left to go back through (`"Relu::backward called before
    /// forward"`), or if `grad_output` does not have the shape of that forward's output.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let mut x = pop_checked(&mut self.saved, "Relu", &grad_output);
        Zip::from(&mut x)
            .and(grad_output)
            .for_each(|x, &g| *x = if *x > F::zero() { g } else { F::zero() });
        x
    }

    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        relu(x)
    }

    stateless_shape!();
}

fn relu<F: Float>(x: ArrayViewD<'_, F>) -> ArrayD<F> {
    // Not `max(v, 0)`: NaN stays NaN, as in PyTorch.
    x.mapv(|v| {
        if v > F::zero() || v.is_nan() {
            v
        } else {
            F::zero()
        }
    })
}

activation!(
    /// Hyperbolic tangent, `tanh(x)`, with derivative `1 − tanh(x)²`. Saves the output.
    Tanh
);

impl<F: Float> Module<F> for Tanh<F> {
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let y = x.mapv(F::tanh);
        self.saved.push(y.clone());
        y
    }

    /// `dL/dX = dL/dY ⊙ (1 − Y²)`.
    ///
    /// # Panics
    /// If no forward pass is left to go back through (`"Tanh::backward called before
    /// forward"`), or if `grad_output` does not have the shape of that forward's output.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let mut y = pop_checked(&mut self.saved, "Tanh", &grad_output);
        Zip::from(&mut y)
            .and(grad_output)
            .for_each(|y, &g| *y = g * (F::one() - *y * *y));
        y
    }

    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        x.mapv(F::tanh)
    }

    stateless_shape!();
}

activation!(
    /// Logistic sigmoid, `σ(x) = 1 / (1 + e⁻ˣ)`, with derivative `σ(x)·(1 − σ(x))`.
    ///
    /// Numerically stable: no overflow for any finite input (`σ(±1000)` is exactly `1` / `0`).
    /// Saves the output.
    Sigmoid
);

impl<F: Float> Module<F> for Sigmoid<F> {
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let y = x.mapv(sigmoid);
        self.saved.push(y.clone());
        y
    }

    /// `dL/dX = dL/dY ⊙ Y ⊙ (1 − Y)`.
    ///
    /// # Panics
    /// If no forward pass is left to go back through (`"Sigmoid::backward called before
    /// forward"`), or if `grad_output` does not have the shape of that forward's output.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let mut y = pop_checked(&mut self.saved, "Sigmoid", &grad_output);
        Zip::from(&mut y)
            .and(grad_output)
            .for_each(|y, &g| *y = g * *y * (F::one() - *y));
        y
    }

    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        x.mapv(sigmoid)
    }

    stateless_shape!();
}

/// `1 / (1 + e⁻ˣ)` for `x ≥ 0`, `eˣ / (1 + eˣ)` for `x < 0`: the exponent is never positive.
pub(crate) fn sigmoid<F: Float>(x: F) -> F {
    if x >= F::zero() {
        F::one() / (F::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (F::one() + e)
    }
}

activation!(
    /// Gaussian error linear unit, exact form: `gelu(x) = x·Φ(x) = ½·x·(1 + erf(x/√2))`.
    ///
    /// This is PyTorch's default `nn.GELU()` (`approximate='none'`), not the tanh
    /// approximation. Derivative `Φ(x) + x·φ(x)` with `φ(x) = e^{−x²/2}/√(2π)`.
    ///
    /// `f64` is evaluated in `f64` (`libm::erfc`); `f32` in `f32` (`libm::erfcf`, no round
    /// trip through `f64`, as PyTorch computes its `float` GELU), within a few `f32` ulps of the
    /// `f64` value rounded. The forward pass computes the derivative along with the value, in
    /// the same pass, and saves it: the backward pass is one multiplication per entry.
    Gelu
);

impl<F: Float> Module<F> for Gelu<F> {
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        // Element-wise: split the flat buffer, whatever the shape (a (1, T, F) input splits
        // too; a 0-D one is one element).
        let mut y = buffer_pool::copy_of(&x);
        // Every entry of `d` is written below.
        let mut d = buffer_pool::for_overwrite(y.raw_dim());
        let (ys, ds) = (flat(&mut y), flat(&mut d));
        let work = ys.len() * GELU_COST;
        for_each_chunk2(ys, ds, Axis(0), work, |_, mut y, mut d| {
            Zip::from(&mut y).and(&mut d).for_each(|y, d| {
                (*y, *d) = gelu_with_derivative(*y);
            });
        });
        self.saved.push(d);
        y
    }

    /// `dL/dX = dL/dY ⊙ gelu'(X)`, with `gelu'(X) = Φ(X) + X ⊙ φ(X)` saved by the forward pass.
    ///
    /// # Panics
    /// If no forward pass is left to go back through (`"Gelu::backward called before
    /// forward"`), or if `grad_output` does not have the shape of that forward's output.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let mut d = pop_checked(&mut self.saved, "Gelu", &grad_output);
        let g = grad_output.as_standard_layout();
        let g = g.as_slice().expect("standard layout");
        let work = g.len();
        for_each_chunk(flat(&mut d), Axis(0), work, |start, mut d| {
            let g = &g[start..start + d.len()];
            Zip::from(&mut d).and(g).for_each(|d, &g| *d = g * *d);
        });
        d
    }

    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let mut y = x.as_standard_layout().into_owned();
        let ys = flat(&mut y);
        let work = ys.len() * GELU_COST;
        for_each_chunk(ys, Axis(0), work, |_, mut y| y.mapv_inplace(gelu_value));
        y
    }

    stateless_shape!();
}

/// Elementary operations counted per GELU entry when deciding to split a pass across threads.
const GELU_COST: usize = 40;

/// Whether `F` is `f32`.
fn is_f32<F: 'static>() -> bool {
    std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>()
}

/// A standard-layout array as one flat, mutable row (element-wise passes split it evenly
/// across threads whatever its shape).
fn flat<F>(a: &mut ArrayD<F>) -> ArrayViewMut1<'_, F> {
    ArrayViewMut1::from(a.as_slice_mut().expect("standard layout"))
}

/// `gelu(x)` in `F`'s own precision (see [`Gelu`]).
#[inline]
pub(crate) fn gelu_value<F: Float>(x: F) -> F {
    if is_f32::<F>() {
        // `as_f64` then `as f32` is exact for an `f32`, and so is the way back.
        F::of(f64::from(gelu_f32(x.as_f64() as f32)))
    } else {
        F::of(gelu(x.as_f64()))
    }
}

/// `(gelu(x), gelu'(x))` in `F`'s own precision (see [`Gelu`]).
#[inline]
pub(crate) fn gelu_with_derivative<F: Float>(x: F) -> (F, F) {
    if is_f32::<F>() {
        let (y, d) = gelu_f32_with_derivative(x.as_f64() as f32);
        (F::of(f64::from(y)), F::of(f64::from(d)))
    } else {
        let x = x.as_f64();
        if x.is_infinite() {
            return (F::of(gelu(x)), F::of(gelu_derivative(x)));
        }
        let cdf = normal_cdf(x);
        let d = cdf + x * FRAC_1_SQRT_2PI * (-0.5 * x * x).exp();
        (F::of(x * cdf), F::of(d))
    }
}

/// `Φ(x)` in `f32`: `½·erfc(−x/√2)` with `libm::erfcf`.
#[inline]
fn normal_cdf_f32(x: f32) -> f32 {
    0.5 * libm::erfcf(-x * std::f32::consts::FRAC_1_SQRT_2)
}

/// `gelu(x)` in `f32`.
#[inline]
fn gelu_f32(x: f32) -> f32 {
    if x == f32::NEG_INFINITY {
        return -0.0;
    }
    x * normal_cdf_f32(x)
}

/// `(gelu(x), gelu'(x))` in `f32`.
#[inline]
fn gelu_f32_with_derivative(x: f32) -> (f32, f32) {
    if x.is_infinite() {
        return if x > 0.0 { (x, 1.0) } else { (-0.0, 0.0) };
    }
    let cdf = normal_cdf_f32(x);
    let density = FRAC_1_SQRT_2PI as f32 * (-0.5 * x * x).exp();
    (x * cdf, cdf + x * density)
}

/// `1/√2`.
const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`.
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Standard normal CDF `Φ(x) = ½·(1 + erf(x/√2)) = ½·erfc(−x/√2)`.
///
/// The `erfc` form keeps the lower tail (`x ≪ 0`) to full relative accuracy, where
/// `1 + erf(x/√2)` would cancel.
fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * FRAC_1_SQRT_2)
}

fn gelu(x: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        // (−∞)·Φ(−∞) = (−∞)·0: the limit is 0.
        return -0.0;
    }
    x * normal_cdf(x)
}

fn gelu_derivative(x: f64) -> f64 {
    if x.is_infinite() {
        // Φ(±∞) + (±∞)·0: the limit is 1 at +∞ and 0 at −∞.
        return if x > 0.0 { 1.0 } else { 0.0 };
    }
    normal_cdf(x) + x * FRAC_1_SQRT_2PI * (-0.5 * x * x).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `|got − want| ≤ tol · max(|want|, tiny)`: relative error.
    #[track_caller]
    fn assert_rel(what: &str, got: f64, want: f64, tol: f64) {
        let err = (got - want).abs() / want.abs().max(f64::MIN_POSITIVE);
        assert!(
            err <= tol,
            "{what} = {got:e}, expected {want:e} (relative error {err:e})"
        );
    }

    // Reference values: mpmath at 30 digits, rounded to f64.

    #[test]
    fn normal_cdf_keeps_the_lower_tail() {
        assert_rel("Φ(-1)", normal_cdf(-1.0), 0.158_655_253_931_457_05, 3e-16);
        assert_rel("Φ(2)", normal_cdf(2.0), 0.977_249_868_051_820_8, 3e-16);
        assert_rel("Φ(-5)", normal_cdf(-5.0), 2.866_515_718_791_939e-7, 1e-14);
        assert_rel(
            "Φ(-10)",
            normal_cdf(-10.0),
            7.619_853_024_160_526e-24,
            1e-14,
        );
        // Deep in the lower tail, where 1 + erf would cancel to 0.
        assert_rel(
            "Φ(-20)",
            normal_cdf(-20.0),
            2.753_624_118_606_233_3e-89,
            1e-13,
        );
    }

    #[test]
    fn gelu_matches_reference_values() {
        // gelu(x) = x·Φ(x), mpmath.
        assert_rel("gelu(1)", gelu(1.0), 0.841_344_746_068_542_9, 3e-16);
        assert_rel("gelu(-1)", gelu(-1.0), -0.158_655_253_931_457_05, 3e-16);
        assert_rel("gelu(0.5)", gelu(0.5), 0.345_731_230_637_006_55, 3e-16);
        assert_eq!(gelu(0.0), 0.0);
        assert_eq!(gelu(f64::NEG_INFINITY), 0.0);
        assert_eq!(gelu(f64::INFINITY), f64::INFINITY);
    }

    #[test]
    fn gelu_derivative_matches_finite_differences() {
        for i in -80..=80 {
            let x = i as f64 * 0.1;
            let h = 1e-6;
            let numeric = (gelu(x + h) - gelu(x - h)) / (2.0 * h);
            assert!((gelu_derivative(x) - numeric).abs() < 1e-8, "x = {x}");
        }
        assert_eq!(gelu_derivative(f64::INFINITY), 1.0);
        assert_eq!(gelu_derivative(f64::NEG_INFINITY), 0.0);
    }

    /// Relative error of an `f32` value against the `f64` reference, floored at `floor`
    /// (below which an absolute error of `floor · tol` is allowed).
    fn rel32(got: f32, want: f64, floor: f64) -> f64 {
        (f64::from(got) - want).abs() / want.abs().max(floor)
    }

    /// The `f32` path (no `f64` round trip) against the `f64` definition at 200 001 points of
    /// `[-20, 20]` and at large `|x|`: value and derivative within a few `f32` ulps where the
    /// value is not tiny, and tiny where it is.
    #[test]
    fn gelu_f32_matches_f64_everywhere() {
        let eps = f64::from(f32::EPSILON);
        let mut points: Vec<f32> = (-100_000..=100_000).map(|i| i as f32 * 2e-4).collect();
        points.extend([
            -1e30, -1e6, -100.0, -40.0, -13.5, -9.0, 9.0, 13.5, 40.0, 100.0, 1e6, 1e30, 0.0, -0.0,
            1e-30, -1e-30,
        ]);
        let (mut worst_y, mut worst_d) = (0.0f64, 0.0f64);
        for &x in &points {
            let (y, d) = gelu_f32_with_derivative(x);
            let x64 = f64::from(x);
            let (y64, d64) = (gelu(x64), gelu_derivative(x64));
            // Φ(x) below ~1e-3 (x < −3): the argument −x/√2 rounded to f32 moves erfc by a
            // relative 2·z²·ε; allow that, and an absolute floor of 1e-7 · max(1, |x|).
            let z2 = 0.5 * x64 * x64;
            let tol = 4.0 * eps * (1.0 + 2.0 * z2.min(200.0));
            let ey = rel32(y, y64, 1e-7 * x64.abs().max(1.0));
            // gelu' = Φ + x·φ cancels near its zero (x ≈ −0.75): relative to the terms' size.
            let terms = normal_cdf(x64) + x64.abs() * FRAC_1_SQRT_2PI * (-z2).exp();
            let ed = rel32(d, d64, terms.max(1e-7 * x64.abs().max(1.0)));
            assert!(
                ey <= tol,
                "gelu({x}) = {y:e}, f64 {y64:e} (relative {ey:e})"
            );
            assert!(
                ed <= tol,
                "gelu'({x}) = {d:e}, f64 {d64:e} (relative {ed:e})"
            );
            assert_eq!(
                gelu_f32(x),
                y,
                "gelu_f32({x}) differs from the forward value"
            );
            if x64 > -1.0 && x64 < 3.0 {
                worst_y = worst_y.max(ey);
                worst_d = worst_d.max(ed);
            }
        }
        // In the bulk, −1 < x < 3 (Φ not small): a few ulps.
        assert!(worst_y <= 3.0 * eps, "worst gelu error {worst_y:e}");
        assert!(worst_d <= 3.0 * eps, "worst gelu' error {worst_d:e}");
        assert_eq!(
            gelu_f32_with_derivative(f32::INFINITY),
            (f32::INFINITY, 1.0)
        );
        let (y, d) = gelu_f32_with_derivative(f32::NEG_INFINITY);
        assert_eq!((y, d), (0.0, 0.0));
        assert!(gelu_f32_with_derivative(f32::NAN).0.is_nan());
    }

    /// The generic entry points pick the `f32` path for `f32` and the `f64` one for `f64`.
    #[test]
    fn generic_gelu_dispatches_on_the_float_type() {
        for x in [-7.5, -1.25, 0.3, 2.0, 11.0] {
            let x32 = x as f32;
            assert_eq!(gelu_with_derivative(x32), gelu_f32_with_derivative(x32));
            assert_eq!(gelu_value(x32), gelu_f32(x32));
            assert_eq!(gelu_with_derivative(x), (gelu(x), gelu_derivative(x)));
            assert_eq!(gelu_value(x), gelu(x));
        }
    }

    /// The layer on a column-major input, a (1, T, F) input large enough to be split across
    /// threads (at `PHM_NN_NUM_THREADS` ≥ 2, the default on a multi-core machine; the thread
    /// count is not set here, since other tests of this binary assert on it), and a 0-D
    /// input: forward, backward and infer equal the element-wise definition at the same
    /// logical index.
    #[test]
    fn gelu_layer_is_element_wise_for_any_shape_and_layout() {
        use ndarray::{Array3, IxDyn, ShapeBuilder};
        let col_major = Array3::<f64>::from_shape_fn((5, 7, 3).f(), |(i, j, k)| {
            (i as f64 - 2.0) * 0.7 + j as f64 * 0.3 - k as f64 * 1.1
        })
        .into_dyn();
        let wide = Array3::<f64>::from_shape_fn((1, 64, 1024), |(_, j, k)| {
            ((j * 1024 + k) % 97) as f64 * 0.1 - 4.8
        })
        .into_dyn();
        let scalar = ArrayD::from_elem(IxDyn(&[]), -0.3);
        for x in [&col_major, &wide, &scalar] {
            let g = x.mapv(|v| 0.5 - v * 0.25);
            let mut layer = Gelu::<f64>::default();
            let y = layer.forward(x.view());
            let dx = layer.backward(g.view());
            assert_eq!(y, x.mapv(gelu), "forward, {:?}", x.shape());
            assert_eq!(layer.infer(x.view()), y, "infer, {:?}", x.shape());
            let want = ndarray::Zip::from(x)
                .and(&g)
                .map_collect(|&v, &g| g * gelu_derivative(v));
            assert_eq!(dx, want, "backward, {:?}", x.shape());
        }
    }
}
