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
//! [`Gelu`] is the exact `erf` form (PyTorch's default, `approximate='none'`), with
//! `Φ(x) = ½·erfc(−x/√2)` (full relative accuracy in the lower tail): `f64` layers use
//! `libm::erfc`; `f32` layers a vectorised kernel that evaluates each entry in `f64` with a
//! Chebyshev `erfc` and rounds once (within 1.3 `f32` epsilons, relative; see [`Gelu`]).
//! [`Sigmoid`] never overflows: for `x < 0` it computes `eˣ / (1 + eˣ)`, so `σ(−1000) = 0`
//! and `σ(1000) = 1` exactly.
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
    /// `f64` is evaluated with `libm::erfc`, to within a few `f64` ulps. `f32` runs a
    /// branch-free kernel over the whole buffer that the compiler vectorises, dispatched at
    /// run time to the CPU's best instruction set (AVX-512, AVX2/FMA or the baseline, through
    /// `pulp`): each entry is widened to `f64`, `erfc` comes from the Chebyshev form of
    /// Numerical Recipes (`t·e^{P(t) − z²}`, relative error below 1.1e-7) with a vectorised
    /// `exp`, and value and derivative are rounded to `f32` once. Against the `f64` layer's
    /// values the result is within 1.3 `f32` epsilons, relative (measured at 200 001 points
    /// of `[−20, 20]`: the value relative to `max(|gelu(x)|, 1e-7·max(1, |x|))`, the
    /// derivative to `|Φ(x)| + |x·φ(x)|`; 1.13 and 1.10 where `−1 < x < 3`). So `gelu'(0)` is
    /// `0.49999997`, one ulp below ½. The same bits on every instruction set, in `forward`,
    /// `infer` and for a single entry; `±∞`, NaN and huge finite inputs as in `f64`.
    ///
    /// The forward pass computes the derivative along with the value, in the same pass, and
    /// saves it: the backward pass is one multiplication per entry.
    Gelu
);

impl<F: Float> Module<F> for Gelu<F> {
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.forward_owned(buffer_pool::copy_of(&x))
    }

    /// In place: the output is written over `x`.
    fn forward_owned(&mut self, x: ArrayD<F>) -> ArrayD<F> {
        // Element-wise: split the flat buffer, whatever the shape (a (1, T, F) input splits
        // too; a 0-D one is one element).
        let mut y = buffer_pool::owned(x.into());
        // Every entry of `d` is written below.
        let mut d = buffer_pool::for_overwrite(y.raw_dim());
        let work = y.len() * gelu_cost::<F>();
        // f32: the vectorised kernel on each thread's chunk; f64: libm, entry by entry.
        if let (Some(y), Some(d)) = (as_f32(&mut y), as_f32(&mut d)) {
            for_each_chunk2(flat(y), flat(d), Axis(0), work, |_, mut y, mut d| {
                gelu_f32_with_derivative_in_place(contiguous(&mut y), contiguous(&mut d));
            });
        } else {
            for_each_chunk2(
                flat(&mut y),
                flat(&mut d),
                Axis(0),
                work,
                |_, mut y, mut d| {
                    Zip::from(&mut y).and(&mut d).for_each(|y, d| {
                        (*y, *d) = gelu_with_derivative(*y);
                    });
                },
            );
        }
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
        let mut y = buffer_pool::copy_of(&x);
        let work = y.len() * gelu_cost::<F>();
        // As in `forward`: the vectorised kernel for f32, libm for f64.
        if let Some(y) = as_f32(&mut y) {
            for_each_chunk(flat(y), Axis(0), work, |_, mut y| {
                gelu_f32_in_place(contiguous(&mut y));
            });
        } else {
            for_each_chunk(flat(&mut y), Axis(0), work, |_, mut y| {
                y.mapv_inplace(gelu_value);
            });
        }
        y
    }

    stateless_shape!();
}

/// Elementary operations counted per GELU entry when deciding to split a pass across threads:
/// `libm::erfc` and `exp` per `f64` entry; the vectorised `f32` kernel costs far less.
fn gelu_cost<F: 'static>() -> usize {
    if is_f32::<F>() {
        GELU_F32_COST
    } else {
        40
    }
}

/// [`gelu_cost`] of an `f32` entry: the vectorised forward pass takes ~3–4 ns an entry on
/// one AVX-512 core (its copy and allocations included), about 4 of the ~1 ns operations
/// that [`ELEMENTWISE_MIN_WORK`](crate::kernels::parallel::ELEMENTWISE_MIN_WORK) counts.
const GELU_F32_COST: usize = 4;

/// Whether `F` is `f32`.
fn is_f32<F: 'static>() -> bool {
    std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>()
}

/// `a` as an `f32` array when `F` is `f32` (the vectorised kernels' entry), else `None`.
fn as_f32<F: 'static>(a: &mut ArrayD<F>) -> Option<&mut ArrayD<f32>> {
    (a as &mut dyn std::any::Any).downcast_mut()
}

/// The slice of a contiguous 1-D chunk of a [`flat`] view.
fn contiguous<'a, F>(v: &'a mut ArrayViewMut1<'_, F>) -> &'a mut [F] {
    v.as_slice_mut()
        .expect("a chunk of a flat buffer is contiguous")
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

// The f32 path. Each entry is widened to f64 (exact), evaluated there without a branch, and
// rounded to f32 once; the slice kernels run the same `#[inline(always)]` lane function in
// a loop that LLVM vectorises (8 f64 lanes with AVX-512, 4 with AVX2) inside
// `pulp::Arch::dispatch`, and the scalar entry points run it on one element. The lane
// function uses only IEEE-rounded `+ − × ÷`, conversions, bit operations and, for the
// polynomials, `mul_add`: a fused multiply-add rounded once on every machine (one
// instruction with AVX2/FMA or AVX-512, the C library's much slower `fma` on an x86-64 CPU
// without FMA). So every instruction set gives the same bits: forward, infer and the scalar
// functions agree exactly.

/// `gelu(x)` in `f32` (the slice kernels' lane function on one element).
#[inline]
fn gelu_f32(x: f32) -> f32 {
    gelu_f32_value_lane(x)
}

/// `(gelu(x), gelu'(x))` in `f32` (the slice kernels' lane function on one element).
#[inline]
fn gelu_f32_with_derivative(x: f32) -> (f32, f32) {
    gelu_f32_lane(x)
}

/// `gelu` of every entry of `v`, in place (`v` holds `x` on entry, `gelu(x)` on return),
/// with runtime CPU dispatch. Bit for bit [`gelu_f32`] of each entry.
fn gelu_f32_in_place(v: &mut [f32]) {
    pulp::Arch::new().dispatch(GeluValues(v));
}

/// `gelu` of every entry of `v` in place (`v` holds `x` on entry, `gelu(x)` on return) and
/// `gelu'` into `d` (same length), with runtime CPU dispatch. Bit for bit
/// [`gelu_f32_with_derivative`] of each entry.
///
/// In place because the layer evaluates its own standard-layout copy of the input.
///
/// # Panics
/// If `v` and `d` differ in length.
fn gelu_f32_with_derivative_in_place(v: &mut [f32], d: &mut [f32]) {
    assert_eq!(
        v.len(),
        d.len(),
        "gelu: value and derivative lengths differ"
    );
    pulp::Arch::new().dispatch(GeluValuesAndDerivatives(v, d));
}

/// [`gelu_f32_in_place`]'s loop, for `pulp` to compile under each instruction set.
struct GeluValues<'a>(&'a mut [f32]);

impl pulp::WithSimd for GeluValues<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for v in self.0.iter_mut() {
            *v = gelu_f32_value_lane(*v);
        }
    }
}

/// [`gelu_f32_with_derivative_in_place`]'s loop, for `pulp` to compile under each
/// instruction set.
struct GeluValuesAndDerivatives<'a>(&'a mut [f32], &'a mut [f32]);

impl pulp::WithSimd for GeluValuesAndDerivatives<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for (v, d) in self.0.iter_mut().zip(self.1.iter_mut()) {
            (*v, *d) = gelu_f32_lane(*v);
        }
    }
}

/// `(x, Φ(x), z²)` for one `f32`, in `f64`, branch-free: the part of [`gelu_f32_lane`] and
/// [`gelu_f32_value_lane`] that both share (so their values agree bit for bit).
///
/// With `z = |x|/√2` and `t = 1/(1 + z/2)`, `erfc(z) = t·e^{P(t) − z²}` (the Chebyshev form
/// of Numerical Recipes, relative error below 1.1e-7 for every `z ≥ 0`), so
/// `Φ(−|x|) = ½·erfc(z)` and `Φ(|x|) = 1 − ½·erfc(z)` (a select on the sign). `z² = x²/2`
/// is exact for an `f32` `x`. `erfc` underflows to 0 past `|x| ≈ 37.6` (and at `±∞`);
/// NaN stays NaN.
#[inline(always)]
fn normal_cdf_lane(x: f32) -> (f64, f64, f64) {
    let x = f64::from(x);
    let z = x.abs() * FRAC_1_SQRT_2;
    let z2 = 0.5 * (x * x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let erfc = t * exp_lane(horner(t, &ERFC_P) - z2);
    let half = 0.5 * erfc;
    let cdf = if x < 0.0 { half } else { 1.0 - half };
    (x, cdf, z2)
}

/// `x·Φ(x)` from [`normal_cdf_lane`], with the limit `−0` at `x = −∞` (where it is `−∞·0`).
#[inline(always)]
fn gelu_from_cdf(x: f64, cdf: f64) -> f32 {
    let y = if x == f64::NEG_INFINITY {
        -0.0
    } else {
        x * cdf
    };
    y as f32
}

/// `gelu(x)` for one `f32`, computed in `f64` and rounded once, branch-free (one `exp`).
#[inline(always)]
fn gelu_f32_value_lane(x: f32) -> f32 {
    let (x, cdf, _) = normal_cdf_lane(x);
    gelu_from_cdf(x, cdf)
}

/// `(gelu(x), gelu'(x))` for one `f32`, computed in `f64` and rounded once, branch-free.
///
/// The value as [`gelu_f32_value_lane`]; `gelu' = Φ(x) + x·φ(x)` with the density
/// `φ(x) = e^{−z²}/√(2π)` (a second `exp`). Where `e^{−z²}` underflows to 0 (`|x|` past
/// ~37.6, and `±∞`, where `x·φ` would be `±∞·0`) the term is 0: `gelu'` is 1 for large
/// positive `x` and `+∞`, 0 for large negative `x` and `−∞`.
#[inline(always)]
fn gelu_f32_lane(x: f32) -> (f32, f32) {
    let (x, cdf, z2) = normal_cdf_lane(x);
    let e = exp_lane(-z2);
    let x_density = if e == 0.0 {
        0.0
    } else {
        x * (FRAC_1_SQRT_2PI * e)
    };
    (gelu_from_cdf(x, cdf), (cdf + x_density) as f32)
}

/// `P(t)` of the Chebyshev `erfc` (Numerical Recipes, `erfcc`): coefficients of `t⁰ … t⁹`.
const ERFC_P: [f64; 10] = [
    -1.265_512_23,
    1.000_023_68,
    0.374_091_96,
    0.096_784_18,
    -0.186_288_06,
    0.278_868_07,
    -1.135_203_98,
    1.488_515_87,
    -0.822_152_23,
    0.170_872_77,
];

/// `c₀ + x·(c₁ + x·(c₂ + …))`, unrolled for a constant `c`, one fused multiply-add a step.
#[inline(always)]
fn horner<const N: usize>(x: f64, c: &[f64; N]) -> f64 {
    let (last, rest) = c.split_last().expect("at least one coefficient");
    rest.iter().rev().fold(*last, |acc, &c| acc.mul_add(x, c))
}

/// Below this, [`exp_lane`] returns 0 (`e^{−708} ≈ 3.3e-308` is still a normal `f64`).
const EXP_MIN_ARG: f64 = -708.0;

/// `eᵃ` for `a ≤ 1` (the arguments here are `−z² ≤ 0` and `P(t) − z² < 3.1e-8`),
/// branch-free and vectorisable: `0` below [`EXP_MIN_ARG`], NaN for NaN, else within a
/// relative 2.2·`f64::EPSILON` of `f64::exp` (measured by its test, which allows 4·ε).
///
/// `a = k·ln 2 + r` with `k = round(a/ln 2)` (by adding and subtracting `1.5·2⁵²`, which
/// leaves `k` in the low bits) and `|r| ≤ ln 2 / 2` (`ln 2` split in two, `k·ln2_hi` exact);
/// `eʳ` by its Taylor polynomial to `r¹²` (truncation below `1.7e-16`); `2ᵏ` from its bits
/// (`k + 1023 ≥ 2` for `a ≥ −708`).
#[inline(always)]
fn exp_lane(a: f64) -> f64 {
    /// `1.5·2⁵²`: `(v + ROUND) − ROUND` rounds `|v| < 2⁵¹` to an integer (ties to even).
    const ROUND: f64 = 6_755_399_441_055_744.0;
    /// `ln 2` to 32 bits (`k·LN2_HI` is exact for `|k| < 2²¹`) and the rest (fdlibm's split).
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // 6.93147180369123816490e-1
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // 1.90821492927058770002e-10
    /// `1/n!` for `n = 0 … 12`.
    const TAYLOR: [f64; 13] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5_040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
    ];
    let under = a < EXP_MIN_ARG;
    let a = if under { EXP_MIN_ARG } else { a };
    let shifted = a * std::f64::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    let r = (a - k * LN2_HI) - k * LN2_LO;
    // The low bits of `shifted` are `k` (two's complement) over those of ROUND: rebias to
    // `k + 1023` and move it into the exponent field.
    let bias = 1023u64.wrapping_sub(ROUND.to_bits());
    let two_k = f64::from_bits(shifted.to_bits().wrapping_add(bias) << 52);
    let e = horner(r, &TAYLOR) * two_k;
    if under {
        0.0
    } else {
        e
    }
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

    /// The `f32` path (computed in `f64` lanes with the Chebyshev `erfc`, rounded once)
    /// against the `f64` definition at 200 001 points of `[-20, 20]` and at large `|x|`: value
    /// and derivative within a few `f32` ulps where the value is not tiny, and tiny where it
    /// is; within 1.3 `f32` epsilons everywhere (as the docs of [`Gelu`] state).
    #[test]
    fn gelu_f32_matches_f64_everywhere() {
        let eps = f64::from(f32::EPSILON);
        let mut points: Vec<f32> = (-100_000..=100_000).map(|i| i as f32 * 2e-4).collect();
        points.extend([
            -1e30, -1e6, -100.0, -40.0, -13.5, -9.0, 9.0, 13.5, 40.0, 100.0, 1e6, 1e30, 0.0, -0.0,
            1e-30, -1e-30,
        ]);
        let (mut worst_y, mut worst_d) = (0.0f64, 0.0f64);
        let mut worst_all = 0.0f64;
        for &x in &points {
            let (y, d) = gelu_f32_with_derivative(x);
            let x64 = f64::from(x);
            let (y64, d64) = (gelu(x64), gelu_derivative(x64));
            // Φ(x) below ~1e-3 (x < −3): an argument −x/√2 rounded to f32 would move erfc by a
            // relative 2·z²·ε (the earlier all-f32 path); allow that, and an absolute floor of
            // 1e-7 · max(1, |x|). (The f64 lanes do not round the argument: see `worst_all`.)
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
            worst_all = worst_all.max(ey).max(ed);
            if x64 > -1.0 && x64 < 3.0 {
                worst_y = worst_y.max(ey);
                worst_d = worst_d.max(ed);
            }
        }
        // In the bulk, −1 < x < 3 (Φ not small): a few ulps.
        assert!(worst_y <= 3.0 * eps, "worst gelu error {worst_y:e}");
        assert!(worst_d <= 3.0 * eps, "worst gelu' error {worst_d:e}");
        // Measured at these points: 1.13·ε (value) and 1.10·ε (derivative) in the bulk,
        // 1.26·ε anywhere (the value at x ≈ −2.19, where the Chebyshev erfc's own ~0.8·ε
        // meets the rounding to f32).
        assert!(worst_y <= 1.15 * eps, "worst gelu error {worst_y:e}");
        assert!(worst_d <= 1.1 * eps, "worst gelu' error {worst_d:e}");
        assert!(worst_all <= 1.3 * eps, "worst error anywhere {worst_all:e}");
        // ½ + 3e-8 for erfc(0) (the sum of the Chebyshev coefficients): one ulp below ½.
        assert_eq!(gelu_f32_with_derivative(0.0), (0.0, 0.499_999_97));
        assert_eq!(gelu_f32_with_derivative(1e30), (1e30, 1.0));
        assert_eq!(gelu_f32_with_derivative(-1e30), (0.0, 0.0));
        assert_eq!(gelu_f32_with_derivative(f32::MAX), (f32::MAX, 1.0));
        let (y, d) = gelu_f32_with_derivative(f32::NAN);
        assert!(y.is_nan() && d.is_nan());
        assert_eq!(
            gelu_f32_with_derivative(f32::INFINITY),
            (f32::INFINITY, 1.0)
        );
        let (y, d) = gelu_f32_with_derivative(f32::NEG_INFINITY);
        assert_eq!((y, d), (0.0, 0.0));
        assert!(gelu_f32_with_derivative(f32::NAN).0.is_nan());
    }

    /// The `f32` slice kernels (vectorised, run under the CPU's best instruction set and under
    /// each other one it has) equal the scalar functions bit for bit, NaN for NaN: at
    /// ~4 000 points of `[−40, 40]`, the
    /// specials and the `f32` extremes, over lengths that leave every remainder of a 16-wide
    /// vector loop, and through the layer (forward, infer, backward) on a buffer split
    /// across threads.
    #[test]
    fn gelu_f32_kernels_equal_the_scalar_functions_bit_for_bit() {
        let mut points: Vec<f32> = (-2_000..=2_000).map(|i| i as f32 * 0.02).collect();
        points.extend([
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            0.0,
            -0.0,
            1e30,
            -1e30,
            37.5,
            -37.5,
            37.7,
            -37.7,
            -0.751_791_5,
        ]);
        // Interleave the specials with ordinary values so they land in every lane.
        let n = points.len();
        for i in 0..n {
            points.swap(i, (i * 7919) % n);
        }
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        for len in (0..=40).chain([n - 1, n]) {
            for start in [0, 3] {
                let x = &points[start..(start + len).min(n)];
                let mut v = x.to_vec();
                let mut d = vec![0.0f32; x.len()];
                gelu_f32_with_derivative_in_place(&mut v, &mut d);
                let mut w = x.to_vec();
                gelu_f32_in_place(&mut w);
                for (i, &xi) in x.iter().enumerate() {
                    let (y, dy) = gelu_f32_with_derivative(xi);
                    assert!(same(v[i], y), "gelu({xi}): slice {:e}, scalar {y:e}", v[i]);
                    assert!(
                        same(d[i], dy),
                        "gelu'({xi}): slice {:e}, scalar {dy:e}",
                        d[i]
                    );
                    assert!(same(w[i], y), "gelu({xi}): value-only slice {:e}", w[i]);
                    assert!(same(gelu_f32(xi), y), "gelu_f32({xi})");
                }
                // Each instruction set this CPU has, not only the one dispatch picks.
                for (level, (v2, d2, w2)) in each_level(x) {
                    let all = v
                        .iter()
                        .zip(&v2)
                        .chain(d.iter().zip(&d2))
                        .chain(w.iter().zip(&w2));
                    for (&a, &b) in all {
                        assert!(same(a, b), "{level}: {b:e} against {a:e}, length {len}");
                    }
                }
            }
        }
        // The layer: a (1, T, F) input large enough to be split across threads (even small
        // passes are split, so that the split path is the one checked).
        crate::kernels::set_elementwise_min_work(0);
        let x = ArrayD::from_shape_fn(vec![1, 16, 4096], |i| points[(i[1] * 4096 + i[2]) % n]);
        let g = x.mapv(|v| if v.is_finite() { 0.5 - 0.25 * v } else { 1.0 });
        let mut layer = Gelu::<f32>::new();
        let y = layer.forward(x.view());
        let dx = layer.backward(g.view());
        let z = layer.infer(x.view());
        for (((&xi, &gi), (&yi, &zi)), &dxi) in x.iter().zip(&g).zip(y.iter().zip(&z)).zip(&dx) {
            let (want_y, want_d) = gelu_with_derivative(xi);
            assert!(same(yi, want_y), "forward({xi})");
            assert!(same(zi, want_y), "infer({xi})");
            assert!(same(dxi, gi * want_d), "backward({xi})");
        }
    }

    /// Values, derivatives, and values of the value-only kernel.
    type KernelOutputs = (Vec<f32>, Vec<f32>, Vec<f32>);

    /// Both kernels on `x` under each instruction set `pulp` offers on this CPU (the
    /// baseline always), named.
    fn each_level(x: &[f32]) -> Vec<(&'static str, KernelOutputs)> {
        fn run<S: pulp::Simd>(simd: S, x: &[f32]) -> KernelOutputs {
            let (mut v, mut d, mut w) = (x.to_vec(), vec![0.0; x.len()], x.to_vec());
            pulp::Simd::vectorize(simd, GeluValuesAndDerivatives(&mut v, &mut d));
            pulp::Simd::vectorize(simd, GeluValues(&mut w));
            (v, d, w)
        }
        let mut out = vec![("baseline", run(pulp::Scalar::new(), x))];
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(simd) = pulp::x86::V3::try_new() {
                out.push(("AVX2 (x86-v3)", run(simd, x)));
            }
            if let Some(simd) = pulp::x86::V4::try_new() {
                out.push(("AVX-512 (x86-v4)", run(simd, x)));
            }
        }
        out
    }

    /// The vectorisable `exp` against `f64::exp` at 400 001 points of `[−708, 1]` (its
    /// clamped range and the arguments the kernel gives it), and its ends: 0 below −708,
    /// NaN for NaN.
    #[test]
    fn exp_lane_matches_std_exp() {
        let mut worst = 0.0f64;
        for i in 0..=400_000 {
            let a = -708.0 + f64::from(i) * (709.0 / 400_000.0);
            for a in [a, a + 1e-9, a - 0.5e-6] {
                if a < EXP_MIN_ARG {
                    continue;
                }
                let want = a.exp();
                worst = worst.max((exp_lane(a) - want).abs() / want);
            }
        }
        for a in [
            0.0,
            -0.0,
            1e-300,
            -1e-300,
            1.0,
            EXP_MIN_ARG,
            -std::f64::consts::LN_2 / 2.0,
        ] {
            let want = a.exp();
            worst = worst.max((exp_lane(a) - want).abs() / want);
        }
        assert!(
            worst <= 4.0 * f64::EPSILON,
            "worst relative error {worst:e}"
        );
        assert_eq!(exp_lane(0.0), 1.0);
        for a in [-708.000_001, -745.2, -1e30, f64::NEG_INFINITY] {
            assert_eq!(exp_lane(a), 0.0, "exp({a})");
        }
        assert!(exp_lane(f64::NAN).is_nan());
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
        // Split even small passes, so that the split paths are the ones checked.
        crate::kernels::set_elementwise_min_work(0);
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
