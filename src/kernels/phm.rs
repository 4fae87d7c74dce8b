//! The PHM core: rule tensor `A` and block tensor `S` → weight `W = Σ_i A_i ⊗ S_i`, and back.
//!
//! With `n | k` (out) and `n | d` (in), `A` has shape `(n, n, n)` (`A[i]` = `A_i`), `S` has
//! shape `(n, k/n, d/n)` and
//!
//! ```text
//!     W = Σ_{i=1..n} A_i ⊗ S_i  ∈ R^{k×d}        block (r,c) of W = Σ_i A_i[r,c] · S_i
//! ```
//!
//! which costs `n³ + k·d/n` parameters instead of `k·d`.
//!
//! # How it is computed
//! Van Loan's rearrangement `R` maps `W` to an `n² × (k·d/n²)` matrix whose row `(r,c)` is block
//! `(r,c)` flattened. Then `R(W) = Âᵀ Ŝ`, where `Â` is `A` viewed as `n × n²` and `Ŝ` is `S`
//! viewed as `n × (k·d/n²)`: building `W` is one GEMM plus a permutation. The reverse map from a
//! weight gradient is two GEMMs: `dA = Ŝ R(dW)ᵀ` and `dS = Â R(dW)`.
//!
//! # Example
//! The quaternion rules turn `W` into left multiplication by a quaternion:
//!
//! ```
//! use ndarray::{array, Array3};
//! use phm_nn::{algebra, kernels::phm};
//!
//! let a = algebra::quaternion::<f64>();
//! // 1×1 blocks: S_i = [q_i] for q = 1 + 2i + 3j + 4k.
//! let s = Array3::from_shape_vec((4, 1, 1), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
//! let w = phm::build_weight(a.view(), s.view())?;
//! // W · p = q ⊗ p; with p = 1 the product is q itself:
//! assert_eq!(w.column(0), array![1.0, 2.0, 3.0, 4.0]);
//! // and Σ kron(A_i, S_i) gives the same matrix:
//! let naive = (0..4).fold(ndarray::Array2::<f64>::zeros((4, 4)), |acc, i| {
//!     acc + phm::kron(a.index_axis(ndarray::Axis(0), i), s.index_axis(ndarray::Axis(0), i))
//! });
//! assert_eq!(w, naive);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3};

use crate::error::{check_shape, PhmError, Result};
use crate::kernels::gemm::{gemm, reuse};
use crate::Float;

/// The validated sizes of a PHM layer: `n`, `in_features = d`, `out_features = k`.
///
/// ```
/// use phm_nn::PhmShape;
/// let shape = PhmShape::new(1024, 512, 4)?; // in, out, n
/// assert_eq!(shape.blocks_dim(), (4, 128, 256));
/// assert_eq!(shape.num_weight_parameters(), 4 * 4 * 4 + 1024 * 512 / 4);
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PhmShape {
    n: usize,
    in_features: usize,
    out_features: usize,
}

impl PhmShape {
    /// Validates `n ≥ 1`, positive sizes, `n | in_features`, `n | out_features`, and that the
    /// layer's tensors can exist (their sizes are computed without overflow).
    ///
    /// The argument order is the crate's one order for sizes: `(in_features, out_features, n)`,
    /// as in [`PhmLinearConfig::new`](crate::PhmLinearConfig::new).
    ///
    /// # Errors
    /// [`PhmError::ZeroN`], [`PhmError::ZeroSize`] or [`PhmError::NotDivisible`], e.g.
    /// `in_features 10 is not divisible by n = 4`; [`PhmError::TooLarge`] if `n³` or
    /// `k·d/n` does not fit in memory.
    pub fn new(in_features: usize, out_features: usize, n: usize) -> Result<Self> {
        if n == 0 {
            return Err(PhmError::ZeroN);
        }
        for (what, size) in [("in_features", in_features), ("out_features", out_features)] {
            if size == 0 {
                return Err(PhmError::ZeroSize { what });
            }
            if size % n != 0 {
                return Err(PhmError::NotDivisible { what, size, n });
            }
        }
        // Sizes in u128: n³ and k·d/n must be addressable (as f64 elements, the larger type).
        let limit = isize::MAX as u128 / 8;
        let rules = (n as u128).pow(3);
        let blocks = out_features as u128 * in_features as u128 / n as u128;
        if rules > limit || blocks > limit || rules + blocks + out_features as u128 > limit {
            return Err(PhmError::TooLarge {
                what: "PHM layer",
                reason: format!(
                    "{in_features} → {out_features} with n = {n} needs {rules} rule and {blocks} block entries"
                ),
            });
        }
        Ok(PhmShape {
            n,
            in_features,
            out_features,
        })
    }

    /// Infers and validates the shape from a rule tensor and a block tensor.
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`] if `rules` is not `(n, n, n)` or `blocks` is not
    /// `(n, p, q)` with the same `n`; [`PhmError::ZeroN`]/[`PhmError::ZeroSize`] for empty
    /// tensors.
    pub fn from_parts(rules: &[usize], blocks: &[usize]) -> Result<Self> {
        let n = rules.first().copied().unwrap_or(0);
        check_shape("rules", &[n, n, n], rules)?;
        let (p, q) = match blocks {
            [m, p, q] if *m == n => (*p, *q),
            _ => {
                let p = blocks.get(1).copied().unwrap_or(0);
                let q = blocks.get(2).copied().unwrap_or(0);
                return Err(PhmError::ShapeMismatch {
                    what: "blocks",
                    expected: vec![n, p, q],
                    got: blocks.to_vec(),
                });
            }
        };
        let size = |what, s: usize| {
            s.checked_mul(n).ok_or_else(|| PhmError::TooLarge {
                what,
                reason: format!("{s}·{n} overflows"),
            })
        };
        PhmShape::new(size("in_features", q)?, size("out_features", p)?, n)
    }

    /// The hypercomplex dimension `n`.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Input width `d`.
    pub fn in_features(&self) -> usize {
        self.in_features
    }
    /// Output width `k`.
    pub fn out_features(&self) -> usize {
        self.out_features
    }
    /// Rows of each block, `k / n`.
    pub fn block_rows(&self) -> usize {
        self.out_features / self.n
    }
    /// Columns of each block, `d / n`.
    pub fn block_cols(&self) -> usize {
        self.in_features / self.n
    }
    /// Shape of the rule tensor, `(n, n, n)`.
    pub fn rules_dim(&self) -> (usize, usize, usize) {
        (self.n, self.n, self.n)
    }
    /// Shape of the block tensor, `(n, k/n, d/n)`.
    pub fn blocks_dim(&self) -> (usize, usize, usize) {
        (self.n, self.block_rows(), self.block_cols())
    }
    /// Shape of the built weight, `(k, d)` (out × in).
    pub fn weight_dim(&self) -> (usize, usize) {
        (self.out_features, self.in_features)
    }
    /// `n³ + k·d/n`: rules plus blocks, without bias (never overflows: [`new`](Self::new)
    /// checked it).
    pub fn num_weight_parameters(&self) -> usize {
        let blocks = self.out_features as u128 * self.in_features as u128 / self.n as u128;
        self.n.pow(3) + blocks as usize
    }
}

/// Builds `W = Σ_i A_i ⊗ S_i` (shape `(k, d)`) from rules `(n, n, n)` and blocks `(n, k/n, d/n)`.
///
/// # Errors
/// [`PhmError::ShapeMismatch`] (or a zero-size error) if the tensors do not fit together.
pub fn build_weight<F: Float>(
    rules: ArrayView3<'_, F>,
    blocks: ArrayView3<'_, F>,
) -> Result<Array2<F>> {
    let shape = PhmShape::from_parts(rules.shape(), blocks.shape())?;
    let mut w = Array2::zeros(shape.weight_dim());
    build_weight_into(
        shape,
        rules.as_standard_layout().view(),
        blocks.as_standard_layout().view(),
        w.view_mut(),
        &mut Array2::zeros((0, 0)),
    );
    Ok(w)
}

/// Maps a weight gradient `dW` `(k, d)` to `(dA, dS)` for `W = Σ A_i ⊗ S_i` (the chain rule
/// through [`build_weight`]).
///
/// # Errors
/// [`PhmError::ShapeMismatch`] if the tensors do not fit together.
pub fn weight_grad_to_parts<F: Float>(
    rules: ArrayView3<'_, F>,
    blocks: ArrayView3<'_, F>,
    weight_grad: ArrayView2<'_, F>,
) -> Result<(Array3<F>, Array3<F>)> {
    let shape = PhmShape::from_parts(rules.shape(), blocks.shape())?;
    let (k, d) = shape.weight_dim();
    check_shape("weight_grad", &[k, d], weight_grad.shape())?;
    let mut da = Array3::zeros(shape.rules_dim());
    let mut ds = Array3::zeros(shape.blocks_dim());
    accumulate_parts_grad(
        shape,
        rules.as_standard_layout().view(),
        blocks.as_standard_layout().view(),
        weight_grad,
        Some(da.view_mut()),
        Some(ds.view_mut()),
        &mut Array2::zeros((0, 0)),
    );
    Ok((da, ds))
}

/// Van Loan's rearrangement `R(W)` of a `(k, d)` matrix for dimension `n`: the
/// `(n², k·d/n²)` matrix whose row `r·n + c` is block `(r, c)` of `W` (shape `(k/n, d/n)`)
/// flattened. For `W = Σ A_i ⊗ S_i`, `R(W) = Σ_i vec(A_i) vec(S_i)ᵀ`.
///
/// ```
/// use ndarray::array;
/// let w = array![[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]];
/// let r = phm_nn::kernels::phm::rearrange(w.view(), 2)?;
/// assert_eq!(r, array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]);
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
///
/// # Errors
/// [`PhmError::ZeroN`], [`PhmError::ZeroSize`] or [`PhmError::NotDivisible`] if `n` does not
/// divide both sizes.
pub fn rearrange<F: Float>(w: ArrayView2<'_, F>, n: usize) -> Result<Array2<F>> {
    let (k, d) = w.dim();
    let shape = PhmShape::new(d, k, n)?;
    let mut out = Array2::zeros((0, 0));
    rearrange_into(shape, w, &mut out);
    Ok(out)
}

/// Kronecker product `a ⊗ b`: block `(r, c)` of the result is `a[r, c] · b`.
///
/// ```
/// use ndarray::array;
/// let k = phm_nn::kernels::phm::kron(array![[1.0, 2.0]].view(), array![[1.0], [10.0]].view());
/// assert_eq!(k, array![[1.0, 2.0], [10.0, 20.0]]);
/// ```
pub fn kron<F: Float>(a: ArrayView2<'_, F>, b: ArrayView2<'_, F>) -> Array2<F> {
    ndarray::linalg::kron(&a, &b)
}

/// `A` viewed as `Â` `(n, n²)`: row `i` is `A_i` flattened, column `r·n + c`.
fn rules_matrix<'a, F>(a: ArrayView3<'a, F>, n: usize) -> ArrayView2<'a, F> {
    a.into_shape_with_order((n, n * n))
        .expect("rule tensors are stored in standard layout")
}

/// `S` viewed as `Ŝ` `(n, p·q)`: row `i` is `S_i` flattened.
fn blocks_matrix<'a, F>(s: ArrayView3<'a, F>, n: usize, pq: usize) -> ArrayView2<'a, F> {
    s.into_shape_with_order((n, pq))
        .expect("block tensors are stored in standard layout")
}

/// Writes `W = Σ A_i ⊗ S_i` into `w` (standard layout, shape `(k, d)`); `scratch` holds
/// `R(W)` (`k·d` values, reused across calls).
pub(crate) fn build_weight_into<F: Float>(
    shape: PhmShape,
    a: ArrayView3<'_, F>,
    s: ArrayView3<'_, F>,
    w: ArrayViewMut2<'_, F>,
    scratch: &mut Array2<F>,
) {
    let (n, p, q) = shape.blocks_dim();
    // R(W) = Âᵀ Ŝ, rows (r, c), columns (u, v).
    let r = reuse(scratch, (n * n, p * q));
    gemm(
        F::one(),
        &rules_matrix(a, n).t(),
        &blocks_matrix(s, n, p * q),
        F::zero(),
        &mut r.view_mut(),
    );
    let r4 = r
        .view()
        .into_shape_with_order((n, n, p, q))
        .expect("scratch arrays are contiguous");
    // W[(r, u), (c, v)] = R[(r, c), (u, v)].
    let mut w4 = w
        .into_shape_with_order((n, p, n, q))
        .expect("weights are stored in standard layout");
    w4.assign(&r4.permuted_axes([0, 2, 1, 3]));
}

/// Van Loan's rearrangement of a `(k, d)` matrix into `out` `(n², p·q)`: row `(r, c)` is
/// block `(r, c)`.
fn rearrange_into<F: Float>(shape: PhmShape, w: ArrayView2<'_, F>, out: &mut Array2<F>) {
    let (n, p, q) = shape.blocks_dim();
    let w4 = w
        .to_shape(((n, p, n, q), ndarray::Order::RowMajor))
        .expect("a (k, d) matrix splits into (n, k/n, n, d/n)");
    reuse(out, (n * n, p * q))
        .view_mut()
        .into_shape_with_order((n, n, p, q))
        .expect("scratch arrays are contiguous")
        .assign(&w4.view().permuted_axes([0, 2, 1, 3]));
}

/// Adds the rule and block gradients implied by `dW` into `da` and `ds` (when given);
/// `scratch` holds `R(dW)` (`k·d` values, reused across calls).
pub(crate) fn accumulate_parts_grad<F: Float>(
    shape: PhmShape,
    a: ArrayView3<'_, F>,
    s: ArrayView3<'_, F>,
    dw: ArrayView2<'_, F>,
    da: Option<ArrayViewMut3<'_, F>>,
    ds: Option<ArrayViewMut3<'_, F>>,
    scratch: &mut Array2<F>,
) {
    if da.is_none() && ds.is_none() {
        return;
    }
    let (n, p, q) = shape.blocks_dim();
    rearrange_into(shape, dw, scratch);
    let rdw = &*scratch;
    if let Some(da) = da {
        // dÂ += Ŝ R(dW)ᵀ
        let mut da = da
            .into_shape_with_order((n, n * n))
            .expect("gradients are stored in standard layout");
        gemm(
            F::one(),
            &blocks_matrix(s, n, p * q),
            &rdw.t(),
            F::one(),
            &mut da,
        );
    }
    if let Some(ds) = ds {
        // dŜ += Â R(dW)
        let mut ds = ds
            .into_shape_with_order((n, p * q))
            .expect("gradients are stored in standard layout");
        gemm(
            F::one(),
            &rules_matrix(a, n),
            &rdw.view(),
            F::one(),
            &mut ds,
        );
    }
}
