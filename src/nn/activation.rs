//! Element-wise activation functions: [`Relu`], [`Tanh`], [`Sigmoid`] and [`Gelu`].
//!
//! Each maps a batch `X ∈ R^{B×d}` to `Y ∈ R^{B×d}` element by element and has no parameters:
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
//! `f64` whatever the layer's float type, with `Φ(x) = ½·erfc(−x/√2)` (error about `1e-16`,
//! and full relative accuracy in the lower tail). [`Sigmoid`] never overflows: for `x < 0` it computes
//! `eˣ / (1 + eˣ)`, so `σ(−1000) = 0` and `σ(1000) = 1` exactly.
//!
//! The structs are not generic: one value implements [`Module<F>`](crate::Module) for every
//! [`Float`] `F`, and caches what its backward pass needs (the input for ReLU and GELU, the
//! output for tanh and sigmoid) between [`forward`](crate::Module::forward) and
//! [`backward`](crate::Module::backward). Each `backward` consumes that cache.
//!
//! ```
//! use ndarray::array;
//! use phm_nn::nn::activation::{Gelu, Relu, Sigmoid};
//! use phm_nn::Module;
//!
//! let mut relu = Relu::new();
//! let y = relu.forward(array![[-1.0, 0.0, 2.0]].view());
//! assert_eq!(y, array![[0.0, 0.0, 2.0]]);
//! // dL/dX = dL/dY ⊙ relu'(X), with relu'(0) = 0:
//! assert_eq!(relu.backward(array![[1.0, 1.0, 1.0]].view()), array![[0.0, 0.0, 1.0]]);
//!
//! let s = Sigmoid::new().infer(array![[0.0f32, 1000.0, -1000.0]].view());
//! assert_eq!(s, array![[0.5f32, 1.0, 0.0]]);
//!
//! // gelu(1) = Φ(1) = 0.8413447460685429…
//! let g = Gelu::new().infer(array![[1.0f64]].view());
//! assert!((g[[0, 0]] - 0.841_344_746_068_542_9).abs() < 1e-15);
//! ```

use std::any::Any;

use ndarray::{Array2, ArrayView2, Zip};

use crate::kernels::gemm::assert_same_shape;
use crate::{Float, Module};

/// What `forward` stored for `backward`: an `Array2<F>` for the `F` of the last forward.
///
/// Type-erased so that one activation value works for every float type.
#[derive(Debug, Default)]
struct Cache(Option<Box<dyn Any + Send + Sync>>);

impl Cache {
    fn store<F: Float>(&mut self, a: Array2<F>) {
        self.0 = Some(Box::new(a));
    }

    /// Takes the cached array out, checking that `grad_output` has its shape.
    #[track_caller]
    fn take<F: Float>(&mut self, layer: &str, grad_output: &ArrayView2<'_, F>) -> Array2<F> {
        let Some(boxed) = self.0.take() else {
            panic!("{layer}::backward called before forward (each backward needs its own forward)");
        };
        let Ok(cached) = boxed.downcast::<Array2<F>>() else {
            panic!(
                "{layer}::backward called with a different float type than the last forward ({})",
                std::any::type_name::<F>()
            );
        };
        assert_same_shape(
            &format!("{layer}::backward"),
            "grad_output",
            grad_output.shape(),
            cached.shape(),
        );
        *cached
    }
}

/// Rectified linear unit, `relu(x) = max(x, 0)`, with derivative `0` at `x = 0` (PyTorch).
///
/// Caches the input. A NaN input gives a NaN output and a zero gradient.
#[derive(Debug, Default)]
pub struct Relu {
    input: Cache,
}

impl Relu {
    /// A ReLU layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<F: Float> Module<F> for Relu {
    fn forward(&mut self, x: ArrayView2<'_, F>) -> Array2<F> {
        self.input.store(x.to_owned());
        relu(x)
    }

    /// `dL/dX = dL/dY ⊙ [X > 0]`.
    ///
    /// # Panics
    /// If no forward pass was run since the last backward (`"Relu::backward called before
    /// forward"`), or if `grad_output` does not have the shape of the last output.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayView2<'_, F>) -> Array2<F> {
        let mut x = self.input.take::<F>("Relu", &grad_output);
        Zip::from(&mut x)
            .and(grad_output)
            .for_each(|x, &g| *x = if *x > F::zero() { g } else { F::zero() });
        x
    }

    fn infer(&self, x: ArrayView2<'_, F>) -> Array2<F> {
        relu(x)
    }
}

fn relu<F: Float>(x: ArrayView2<'_, F>) -> Array2<F> {
    // Not `max(v, 0)`: NaN stays NaN, as in PyTorch.
    x.mapv(|v| {
        if v > F::zero() || v.is_nan() {
            v
        } else {
            F::zero()
        }
    })
}

/// Hyperbolic tangent, `tanh(x)`, with derivative `1 − tanh(x)²`. Caches the output.
#[derive(Debug, Default)]
pub struct Tanh {
    output: Cache,
}

impl Tanh {
    /// A tanh layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<F: Float> Module<F> for Tanh {
    fn forward(&mut self, x: ArrayView2<'_, F>) -> Array2<F> {
        let y = x.mapv(F::tanh);
        self.output.store(y.clone());
        y
    }

    /// `dL/dX = dL/dY ⊙ (1 − Y²)`.
    ///
    /// # Panics
    /// If no forward pass was run since the last backward (`"Tanh::backward called before
    /// forward"`), or if `grad_output` does not have the shape of the last output.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayView2<'_, F>) -> Array2<F> {
        let mut y = self.output.take::<F>("Tanh", &grad_output);
        Zip::from(&mut y)
            .and(grad_output)
            .for_each(|y, &g| *y = g * (F::one() - *y * *y));
        y
    }

    fn infer(&self, x: ArrayView2<'_, F>) -> Array2<F> {
        x.mapv(F::tanh)
    }
}

/// Logistic sigmoid, `σ(x) = 1 / (1 + e⁻ˣ)`, with derivative `σ(x)·(1 − σ(x))`.
///
/// Numerically stable: no overflow for any finite input (`σ(±1000)` is exactly `1` / `0`).
/// Caches the output.
#[derive(Debug, Default)]
pub struct Sigmoid {
    output: Cache,
}

impl Sigmoid {
    /// A sigmoid layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<F: Float> Module<F> for Sigmoid {
    fn forward(&mut self, x: ArrayView2<'_, F>) -> Array2<F> {
        let y = x.mapv(sigmoid);
        self.output.store(y.clone());
        y
    }

    /// `dL/dX = dL/dY ⊙ Y ⊙ (1 − Y)`.
    ///
    /// # Panics
    /// If no forward pass was run since the last backward (`"Sigmoid::backward called before
    /// forward"`), or if `grad_output` does not have the shape of the last output.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayView2<'_, F>) -> Array2<F> {
        let mut y = self.output.take::<F>("Sigmoid", &grad_output);
        Zip::from(&mut y)
            .and(grad_output)
            .for_each(|y, &g| *y = g * *y * (F::one() - *y));
        y
    }

    fn infer(&self, x: ArrayView2<'_, F>) -> Array2<F> {
        x.mapv(sigmoid)
    }
}

/// `1 / (1 + e⁻ˣ)` for `x ≥ 0`, `eˣ / (1 + eˣ)` for `x < 0`: the exponent is never positive.
fn sigmoid<F: Float>(x: F) -> F {
    if x >= F::zero() {
        F::one() / (F::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (F::one() + e)
    }
}

/// Gaussian error linear unit, exact form: `gelu(x) = x·Φ(x) = ½·x·(1 + erf(x/√2))`.
///
/// This is PyTorch's default `nn.GELU()` (`approximate='none'`), not the tanh approximation.
/// Derivative `Φ(x) + x·φ(x)` with `φ(x) = e^{−x²/2}/√(2π)`. Evaluated in `f64` and rounded
/// to the layer's float type. Caches the input.
#[derive(Debug, Default)]
pub struct Gelu {
    input: Cache,
}

impl Gelu {
    /// A GELU layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<F: Float> Module<F> for Gelu {
    fn forward(&mut self, x: ArrayView2<'_, F>) -> Array2<F> {
        self.input.store(x.to_owned());
        x.mapv(|v| F::of(gelu(v.as_f64())))
    }

    /// `dL/dX = dL/dY ⊙ (Φ(X) + X ⊙ φ(X))`.
    ///
    /// # Panics
    /// If no forward pass was run since the last backward (`"Gelu::backward called before
    /// forward"`), or if `grad_output` does not have the shape of the last output.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayView2<'_, F>) -> Array2<F> {
        let mut x = self.input.take::<F>("Gelu", &grad_output);
        Zip::from(&mut x)
            .and(grad_output)
            .for_each(|x, &g| *x = g * F::of(gelu_derivative(x.as_f64())));
        x
    }

    fn infer(&self, x: ArrayView2<'_, F>) -> Array2<F> {
        x.mapv(|v| F::of(gelu(v.as_f64())))
    }
}

/// `1/√2`.
const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`.
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
/// `1/√π`.
const FRAC_1_SQRT_PI: f64 = 0.564_189_583_547_756_3;

/// Standard normal CDF `Φ(x) = ½·(1 + erf(x/√2)) = ½·erfc(−x/√2)`.
///
/// The `erfc` form keeps the lower tail (`x ≪ 0`) to full relative accuracy, where
/// `1 + erf(x/√2)` would cancel.
fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * FRAC_1_SQRT_2)
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

/// The error function `erf(x) = (2/√π) ∫₀ˣ e^{−t²} dt`, accurate to about `1e-16`.
///
/// Odd: `erf(−x) = −erf(x)`. For `|x| < 2` the power series ([`erf_series`]); for
/// `2 ≤ |x| < 6`, `1 − erfc(|x|)` with `erfc` from its continued fraction ([`erfc_cf`]), so
/// there is no error left but the final rounding; beyond 6, `1 − |erf(x)| < 2.2e-17` and the
/// result is `±1`.
fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 2.0 {
        erf_series(a)
    } else if a < 6.0 {
        1.0 - erfc_cf(a)
    } else {
        1.0
    };
    r.copysign(x)
}

/// The complementary error function `erfc(x) = 1 − erf(x)`.
///
/// Relative error about `1e-16` for `x < 0.5` and `x ≥ 2` (continued fraction, accurate far
/// into the tail: `erfc(10) ≈ 2.09e-45`), and below `3e-14` in between, where it is `1 − erf`.
fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x < 2.0 {
        1.0 - erf(x)
    } else if x < 30.0 {
        erfc_cf(x)
    } else {
        0.0 // erfc(27.3) is already below the smallest subnormal
    }
}

/// `e^{−a²}`, with `a²` split exactly into `hi + lo` (an FMA) so that the relative error does not
/// grow with `a²`: `e^{−a²} = e^{−hi}·e^{−lo}` and `|lo| ≤ 2⁻⁵³·hi` is small enough for
/// `e^{−lo} = 1 − lo` to f64 accuracy. For `0 ≤ a < 30`.
fn exp_neg_square(a: f64) -> f64 {
    let hi = a * a;
    let lo = a.mul_add(a, -hi);
    (-hi).exp() * (1.0 - lo)
}

/// `erf(a)` for `0 ≤ a < 2` (it converges for every `a`, but more slowly and less accurately
/// as `a` grows), from the series of positive terms
///
/// ```text
///     erf(a) = (2/√π) · e^{−a²} · Σ_{k≥0} 2^k a^{2k+1} / (1·3·5···(2k+1))
/// ```
///
/// (term ratio `2a²/(2k+3)`), stopped once a term is below `1e-17` of the sum: at most 31
/// terms below 2.
fn erf_series(a: f64) -> f64 {
    let a2 = a * a;
    let mut term = a;
    let mut sum = a;
    let mut k = 0.0;
    while term > 1e-17 * sum {
        term *= 2.0 * a2 / (2.0 * k + 3.0);
        sum += term;
        k += 1.0;
    }
    std::f64::consts::FRAC_2_SQRT_PI * exp_neg_square(a) * sum
}

/// `erfc(x)` for `2 ≤ x < 30` from the continued fraction
///
/// ```text
///     erfc(x) = e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …)))))
/// ```
///
/// evaluated by the modified Lentz method until a step changes the value by less than
/// `1e-16`: 57 steps at `x = 2`, fewer beyond.
fn erfc_cf(x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for j in 1..1000 {
        let a = 0.5 * j as f64;
        d = x + a * d;
        if d == 0.0 {
            d = TINY;
        }
        c = x + a / c;
        if c == 0.0 {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    FRAC_1_SQRT_PI * exp_neg_square(x) / f
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
    fn erf_matches_reference_values() {
        let cases = [
            (0.0, 0.0),
            (0.1, 0.112_462_916_018_284_9),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (-1.0, -0.842_700_792_949_714_9),
            (1.5, 0.966_105_146_475_310_7),
            (2.0, 0.995_322_265_018_952_7),
            (-2.0, -0.995_322_265_018_952_7),
            (2.5, 0.999_593_047_982_555_1),
            (3.0, 0.999_977_909_503_001_4),
            (4.0, 0.999_999_984_582_742_1),
            (5.9, 0.999_999_999_999_999_9),
        ];
        for (x, want) in cases {
            assert_rel(&format!("erf({x})"), erf(x), want, 3e-16);
        }
    }

    #[test]
    fn erfc_matches_reference_values_in_the_tail() {
        let cases = [
            (-1.0, 1.842_700_792_949_715),
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (2.0, 4.677_734_981_047_266e-3),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537_459_794_428_035e-12),
            (10.0, 2.088_487_583_762_545e-45),
            (20.0, 5.395_865_611_607_901e-176),
        ];
        for (x, want) in cases {
            let tol = if (0.5..2.0).contains(&x) {
                3e-14
            } else {
                2e-15
            };
            assert_rel(&format!("erfc({x})"), erfc(x), want, tol);
        }
        assert_eq!(erfc(30.0), 0.0);
        assert_eq!(erfc(f64::INFINITY), 0.0);
        assert_eq!(erfc(f64::NEG_INFINITY), 2.0);
        assert!(erfc(f64::NAN).is_nan());
    }

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
    }

    #[test]
    fn erf_limits_and_symmetry() {
        assert_eq!(erf(6.0), 1.0);
        assert_eq!(erf(-40.0), -1.0);
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert!(erf(f64::NAN).is_nan());
        assert!(erf(-0.0) == 0.0 && erf(-0.0).is_sign_negative());
        for i in 0..=700 {
            let x = i as f64 * 0.01;
            assert_eq!(erf(-x), -erf(x));
            assert!(erf(x) <= 1.0);
        }
        // Monotone, also across the switch at 2 and the cut-off at 6.
        for start in [1.9, 5.9] {
            let mut prev = erf(start);
            for i in 1..=200 {
                let x = start + i as f64 * 0.001;
                assert!(erf(x) >= prev, "erf not monotone at {x}");
                prev = erf(x);
            }
        }
    }

    #[test]
    fn erf_small_argument_is_relatively_accurate() {
        // erf(x) ≈ (2/√π)·(x − x³/3) for tiny x.
        let x = 1e-10;
        let want = std::f64::consts::FRAC_2_SQRT_PI * (x - x * x * x / 3.0);
        assert_rel("erf(1e-10)", erf(x), want, 1e-15);
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
