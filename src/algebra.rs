//! Fixed PHM rule tensors of hypercomplex algebras: real, complex, quaternion, octonion,
//! sedenion and any Cayley–Dickson algebra of dimension `n = 2^m`.
//!
//! A rule tensor is an array of shape `(n, n, n)` with `A[i]` = `A_i` and
//!
//! ```text
//!     A_i[r, c] = coefficient of e_r in the product e_i · e_c        (0-based, e_0 = 1)
//! ```
//!
//! so `Σ_i q_i A_i` is the real `n × n` matrix of left multiplication by `q`, and a PHM layer
//! built on these rules (see [`crate::kernels::phm`]) computes exactly that algebra's product.
//!
//! # Cayley–Dickson
//! Split a coefficient vector of length `n` into halves, `x = (a, b)`, `y = (c, d)`. Then
//!
//! ```text
//!     x · y = (a c − conj(d) b,  d a + b conj(c))        conj(a, b) = (conj(a), −b)
//! ```
//!
//! recursively down to `n = 1`, where real numbers multiply normally. With this convention
//! `n = 2` gives the complex numbers (`A_2 = [[0,-1],[1,0]]`) and `n = 4` gives exactly the
//! Hamilton quaternion table of [`quaternion`] with basis `(1, i, j, k)`.
//!
//! # Example
//! ```
//! use ndarray::array;
//! use phm_nn::algebra::{self, Algebra};
//!
//! let q = algebra::quaternion::<f64>();
//! let i = array![0.0, 1.0, 0.0, 0.0];
//! let j = array![0.0, 0.0, 1.0, 0.0];
//! // i · j = k
//! assert_eq!(algebra::multiply(q.view(), i.view(), j.view()), array![0.0, 0.0, 0.0, 1.0]);
//! // The Cayley–Dickson construction reproduces the Hamilton table.
//! assert_eq!(algebra::cayley_dickson::<f64>(4)?, q);
//! assert_eq!(Algebra::Octonion.dim(), 8);
//! assert_eq!(Algebra::CayleyDickson(32).to_string(), "cayley-dickson(32)");
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::fmt;

use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView3, Axis};

use crate::error::{PhmError, Result};
use crate::Float;

/// The real numbers as a 1-dimensional algebra: `A = [[[1]]]`.
///
/// A PHM layer with these rules is an ordinary dense layer.
pub fn real<F: Float>() -> Array3<F> {
    Array3::from_elem((1, 1, 1), F::one())
}

/// The complex numbers (basis `1, i`): `A_1 = I_2`, `A_2 = [[0, -1], [1, 0]]`.
pub fn complex<F: Float>() -> Array3<F> {
    table(&[
        [[1, 0], [0, 1]],  // 1
        [[0, -1], [1, 0]], // i
    ])
}

/// The Hamilton quaternions (basis `1, i, j, k`), as written in the PHM paper:
///
/// ```text
///     A_1 = I_4
///     A_2 = [[0,-1,0,0],[1,0,0,0],[0,0,0,-1],[0,0,1,0]]
///     A_3 = [[0,0,-1,0],[0,0,0,1],[1,0,0,0],[0,-1,0,0]]
///     A_4 = [[0,0,0,-1],[0,0,-1,0],[0,1,0,0],[1,0,0,0]]
/// ```
///
/// so that `Σ_i q_i A_i` is the matrix of left multiplication by `q` (`W p = q ⊗ p`).
pub fn quaternion<F: Float>() -> Array3<F> {
    table(&[
        // 1
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
        // i
        [[0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 0, -1], [0, 0, 1, 0]],
        // j
        [[0, 0, -1, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, -1, 0, 0]],
        // k
        [[0, 0, 0, -1], [0, 0, -1, 0], [0, 1, 0, 0], [1, 0, 0, 0]],
    ])
}

/// The octonions (`n = 8`) from the Cayley–Dickson construction (see the module docs).
///
/// Non-commutative and non-associative, but alternative, and `|x y| = |x| |y|`.
pub fn octonion<F: Float>() -> Array3<F> {
    cayley_dickson(8).expect("8 is a power of two")
}

/// The sedenions (`n = 16`) from the Cayley–Dickson construction (see the module docs).
///
/// Not alternative, and with zero divisors: the norm is not multiplicative.
pub fn sedenion<F: Float>() -> Array3<F> {
    cayley_dickson(16).expect("16 is a power of two")
}

/// The Cayley–Dickson algebra of dimension `n = 2^m` (`m ≥ 0`): real (1), complex (2),
/// quaternion (4), octonion (8), sedenion (16), then 32, 64, …
///
/// The multiplication table is built by multiplying basis vectors with the recursive doubling
/// formula of the module docs; `n = 1`, `2`, `4` equal [`real`], [`complex`], [`quaternion`].
///
/// ```
/// let a = phm_nn::algebra::cayley_dickson::<f32>(2)?;
/// assert_eq!(a, phm_nn::algebra::complex::<f32>());
/// assert!(phm_nn::algebra::cayley_dickson::<f32>(6).is_err());
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
///
/// # Errors
/// [`PhmError::InvalidArgument`] if `n` is not a power of two (`n = 0` included), e.g.
/// `invalid n: Cayley–Dickson algebras exist only for n a power of two, got n = 12`.
pub fn cayley_dickson<F: Float>(n: usize) -> Result<Array3<F>> {
    if !n.is_power_of_two() {
        return Err(PhmError::InvalidArgument {
            what: "n",
            reason: format!("Cayley–Dickson algebras exist only for n a power of two, got n = {n}"),
        });
    }
    let basis = |k: usize| {
        let mut e = vec![0.0; n];
        e[k] = 1.0;
        e
    };
    let mut a = Array3::zeros((n, n, n));
    for i in 0..n {
        let ei = basis(i);
        for c in 0..n {
            let product = cd_mul(&ei, &basis(c));
            for (r, v) in product.into_iter().enumerate() {
                a[[i, r, c]] = F::of(v);
            }
        }
    }
    Ok(a)
}

/// The Cayley–Dickson product of two coefficient vectors of the same power-of-two length.
fn cd_mul(x: &[f64], y: &[f64]) -> Vec<f64> {
    let n = x.len();
    debug_assert_eq!(n, y.len());
    if n == 1 {
        return vec![x[0] * y[0]];
    }
    // Products with zero are zero; this keeps basis-vector products cheap.
    if x.iter().all(|v| *v == 0.0) || y.iter().all(|v| *v == 0.0) {
        return vec![0.0; n];
    }
    let h = n / 2;
    let (a, b) = x.split_at(h);
    let (c, d) = y.split_at(h);
    // (a, b)(c, d) = (a c − conj(d) b, d a + b conj(c))
    let ac = cd_mul(a, c);
    let db = cd_mul(&cd_conj(d), b);
    let da = cd_mul(d, a);
    let bc = cd_mul(b, &cd_conj(c));
    let mut out = Vec::with_capacity(n);
    out.extend(ac.iter().zip(&db).map(|(p, q)| p - q));
    out.extend(da.iter().zip(&bc).map(|(p, q)| p + q));
    out
}

/// The Cayley–Dickson conjugate: `conj(a, b) = (conj(a), −b)`, the identity on reals.
///
/// Unrolled, it keeps the real part and negates every other coefficient.
fn cd_conj(x: &[f64]) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(k, v)| if k == 0 { *v } else { -*v })
        .collect()
}

/// Builds a rule tensor from a literal table of `±1`/`0` entries (`t[i][r][c]` = `A_i[r, c]`).
fn table<F: Float, const N: usize>(t: &[[[i8; N]; N]; N]) -> Array3<F> {
    Array3::from_shape_fn((N, N, N), |(i, r, c)| F::of(f64::from(t[i][r][c])))
}

/// The product `x · y` in the algebra with rule tensor `rules` (shape `(n, n, n)`):
///
/// ```text
///     (x · y)_r = Σ_i Σ_c x_i A_i[r, c] y_c
/// ```
///
/// ```
/// use ndarray::array;
/// let c = phm_nn::algebra::complex::<f64>();
/// // (1 + 2i)(3 + 4i) = −5 + 10i
/// let z = phm_nn::algebra::multiply(c.view(), array![1.0, 2.0].view(), array![3.0, 4.0].view());
/// assert_eq!(z, array![-5.0, 10.0]);
/// ```
///
/// # Panics
/// If `rules` is not of shape `(n, n, n)` or `x` or `y` does not have length `n`.
#[track_caller]
pub fn multiply<F: Float>(
    rules: ArrayView3<'_, F>,
    x: ArrayView1<'_, F>,
    y: ArrayView1<'_, F>,
) -> Array1<F> {
    let n = rules.len_of(Axis(0));
    assert_eq!(
        rules.shape(),
        &[n, n, n],
        "rules must have shape (n, n, n), got {:?}",
        rules.shape()
    );
    assert_eq!(x.len(), n, "x has length {}, expected n = {n}", x.len());
    assert_eq!(y.len(), n, "y has length {}, expected n = {n}", y.len());
    // Left multiplication matrix L = Σ_i x_i A_i, then L y.
    let mut left = Array2::zeros((n, n));
    for (xi, ai) in x.iter().zip(rules.outer_iter()) {
        left.scaled_add(*xi, &ai);
    }
    left.dot(&y)
}

/// A hypercomplex algebra with fixed rules, to pick a PHM layer's multiplication by name.
///
/// ```
/// use phm_nn::algebra::Algebra;
/// let a = Algebra::Quaternion;
/// assert_eq!(a.dim(), 4);
/// assert_eq!(a.name(), "quaternion");
/// assert_eq!(a.rules::<f64>()?, phm_nn::algebra::quaternion::<f64>());
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algebra {
    /// The reals, `n = 1` (a dense layer).
    Real,
    /// The complex numbers, `n = 2`.
    Complex,
    /// The Hamilton quaternions, `n = 4`.
    Quaternion,
    /// The octonions, `n = 8`.
    Octonion,
    /// The sedenions, `n = 16`.
    Sedenion,
    /// The Cayley–Dickson algebra of dimension `n` (must be a power of two).
    CayleyDickson(usize),
}

impl Algebra {
    /// The dimension `n` of the algebra (the number of basis elements).
    pub fn dim(&self) -> usize {
        match self {
            Algebra::Real => 1,
            Algebra::Complex => 2,
            Algebra::Quaternion => 4,
            Algebra::Octonion => 8,
            Algebra::Sedenion => 16,
            Algebra::CayleyDickson(n) => *n,
        }
    }

    /// The rule tensor, shape `(n, n, n)`.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] only for [`Algebra::CayleyDickson`] with `n` not a power
    /// of two.
    pub fn rules<F: Float>(&self) -> Result<Array3<F>> {
        match self {
            Algebra::Real => Ok(real()),
            Algebra::Complex => Ok(complex()),
            Algebra::Quaternion => Ok(quaternion()),
            Algebra::Octonion => Ok(octonion()),
            Algebra::Sedenion => Ok(sedenion()),
            Algebra::CayleyDickson(n) => cayley_dickson(*n),
        }
    }

    /// A lower-case name: `"real"`, `"complex"`, `"quaternion"`, `"octonion"`, `"sedenion"`
    /// or `"cayley-dickson(n)"`.
    pub fn name(&self) -> String {
        match self {
            Algebra::Real => "real".to_string(),
            Algebra::Complex => "complex".to_string(),
            Algebra::Quaternion => "quaternion".to_string(),
            Algebra::Octonion => "octonion".to_string(),
            Algebra::Sedenion => "sedenion".to_string(),
            Algebra::CayleyDickson(n) => format!("cayley-dickson({n})"),
        }
    }
}

impl fmt::Display for Algebra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
