//! The crate's one scalar trait, implemented for `f32` and `f64`.
//!
//! Every layer, kernel and optimizer is generic over [`Float`]; nothing else is needed to
//! switch a model between single and double precision.
//!
//! ```
//! use phm_nn::Float;
//! fn half<F: Float>(x: F) -> F { x * F::of(0.5) }
//! assert_eq!(half(3.0f32), 1.5);
//! assert_eq!(half(3.0f64), 1.5);
//! ```

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use ndarray::{LinalgScalar, ScalarOperand};

/// A real floating-point scalar the crate computes in: `f32` or `f64`.
///
/// Sealed in practice by its supertraits: ndarray's GEMM (`LinalgScalar`) and
/// `num_traits::Float` arithmetic.
pub trait Float:
    num_traits::Float
    + LinalgScalar
    + ScalarOperand
    + Debug
    + Display
    + Default
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Send
    + Sync
    + 'static
{
    /// Converts an `f64` constant to this type (rounding to nearest for `f32`).
    fn of(x: f64) -> Self;
    /// Converts this value to `f64` (exact for both `f32` and `f64`).
    fn as_f64(self) -> f64;
}

impl Float for f32 {
    #[inline]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Float for f64 {
    #[inline]
    fn of(x: f64) -> Self {
        x
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
}
