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
//! `f64` whatever the layer's float type, with `Φ(x) = ½·erfc(−x/√2)` from `libm` (full
//! relative accuracy in the lower tail). [`Sigmoid`] never overflows: for `x < 0` it computes
//! `eˣ / (1 + eˣ)`, so `σ(−1000) = 0` and `σ(1000) = 1` exactly.
//!
//! Each forward pushes what its backward pass needs (the input for ReLU and GELU, the output
//! for tanh and sigmoid) on the layer's stack of saved states; each backward pops one, so an
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

use ndarray::{ArrayD, ArrayViewD, Zip};

use crate::kernels::gemm::assert_same_shape;
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
    /// approximation. Derivative `Φ(x) + x·φ(x)` with `φ(x) = e^{−x²/2}/√(2π)`. Evaluated in
    /// `f64` and rounded to the layer's float type. Saves the input.
    Gelu
);

impl<F: Float> Module<F> for Gelu<F> {
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.saved.push(x.to_owned());
        x.mapv(|v| F::of(gelu(v.as_f64())))
    }

    /// `dL/dX = dL/dY ⊙ (Φ(X) + X ⊙ φ(X))`.
    ///
    /// # Panics
    /// If no forward pass is left to go back through (`"Gelu::backward called before
    /// forward"`), or if `grad_output` does not have the shape of that forward's output.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let mut x = pop_checked(&mut self.saved, "Gelu", &grad_output);
        Zip::from(&mut x)
            .and(grad_output)
            .for_each(|x, &g| *x = g * F::of(gelu_derivative(x.as_f64())));
        x
    }

    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        x.mapv(|v| F::of(gelu(v.as_f64())))
    }

    stateless_shape!();
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
}
