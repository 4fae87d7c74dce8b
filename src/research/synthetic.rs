//! Artificial data for learning multiplication rules (the PHM paper's synthetic experiment),
//! and the metrics that compare learned rules with the true ones.
//!
//! A [`RuleTask`] draws a teacher PHM weight and data from it:
//!
//! ```text
//!     W* = Σ_{i=1..n} A*_i ⊗ S*_i,        y = W* x + ε,        x ~ N(0, I_d),  ε ~ N(0, σ² I_k)
//! ```
//!
//! with `A*` a fixed algebra's rules ([`TrueRule::Algebra`]: complex `n = 2`, quaternion
//! `n = 4`, octonion `n = 8`, … from [`crate::algebra`]) or a random rule tensor for any `n`
//! ([`TrueRule::Random`], e.g. `n = 3` or `5`, where no such algebra exists). A PHM layer
//! trained on `(x, y)` should then recover the rule. Two settings:
//!
//! - **(a) blocks known**: the layer's blocks are fixed to `S*` and only `A` is learned. The
//!   map `A ↦ Σ A_i ⊗ S*_i` is linear and one-to-one when the `S*_i` are linearly independent
//!   (which needs `(k/n)·(d/n) ≥ n`), so the learned rules must match `A*` **entry by entry**:
//!   compare them with [`rule_error`].
//! - **(b) both learned** from a random init: only `W` is determined by the data, and `W`
//!   does not determine `(A, S)` — see the symmetry below. Compare `W` with
//!   [`relative_weight_error`] and the rules up to the symmetry with [`subspace_distance`],
//!   [`principal_angles`] and [`align_rules`].
//!
//! # The mixing symmetry
//! Write `vec(A_i) ∈ R^{n²}` for `A_i` flattened row-major, and view the rules as the
//! `n² × n` matrix `Ā = [vec(A_1) … vec(A_n)]` (column `i` is `A_i`). For any `n × n` matrix
//! `M` define the **mixed rules** `A M` and **mixed blocks** `N S` by
//!
//! ```text
//!     (A M)_i = Σ_j M[j, i] · A_j          (column i of Ā M)           see mix_rules
//!     (N S)_i = Σ_j N[i, j] · S_j                                      see mix_blocks
//! ```
//!
//! Van Loan's rearrangement (see [`crate::kernels::phm`]) writes `W` as `R(W) = Ā Ŝ`, with `Ŝ` the
//! `n × (k·d/n²)` matrix whose row `i` is `S_i` flattened. So for every invertible `M`
//!
//! ```text
//!     Σ_i A_i ⊗ S_i  =  Σ_i (A M)_i ⊗ (M⁻¹ S)_i          since  Ā Ŝ = (Ā M)(M⁻¹ Ŝ)
//! ```
//!
//! and the data cannot tell `A` from `A M`. A layer that learns both `A` and `S` therefore
//! ends, at best, at *some* `(A* M, M⁻¹ S*)`: its rules are mixtures of the true ones (any
//! rotation, scaling or shear of them), and comparing them entry by entry with `A*` measures
//! the arbitrary `M`, not the learning. What the data do determine (when `Ŝ*` has full row
//! rank `n`) is the column space of `R(W*)`, i.e. the **span** of `{A*_i}` in `R^{n²}`; so:
//!
//! - [`subspace_distance`] is `‖P_learned − P_true‖₂`, the spectral-norm distance between the
//!   orthogonal projectors onto the two spans: the sine of the largest
//!   [principal angle](principal_angles) (0 for the same span, 1 for spans of different
//!   dimension or with an orthogonal direction);
//! - [`align_rules`] finds the least-squares mixing `M = argmin ‖Ā* − Ā_learned M‖_F` and
//!   reports the aligned residual `‖Ā* − Ā_learned M‖_F / ‖Ā*‖_F` (0 when the learned rules
//!   are exactly a mixture of the true ones).
//!
//! All metrics compute in `f64` whatever the layer's float type; a NaN or infinite entry in
//! the inputs gives a NaN metric (never a small one).
//!
//! # Example
//! ```
//! use ndarray::array;
//! use phm_nn::algebra::Algebra;
//! use phm_nn::kernels::phm::build_weight;
//! use phm_nn::research::synthetic::{self, RuleTask, TrueRule};
//!
//! let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
//! let task = RuleTask::new(8, 8, 4, TrueRule::Algebra(Algebra::Quaternion)).with_samples(16);
//! let data = task.generate::<f64, _>(&mut rng)?;
//! assert_eq!((data.x.dim(), data.y.dim()), ((16, 8), (16, 8)));
//! assert_eq!(data.true_rules, phm_nn::algebra::quaternion::<f64>());
//!
//! // Mix the four terms with an invertible M: W is unchanged ...
//! let m = array![[1.0, 1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, -1.0, 0.0]];
//! let m_inv = array![[1.0, -0.5, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0], [0.0, 0.0, 1.0, 0.0]];
//! let a = synthetic::mix_rules(data.true_rules.view(), m.view())?;
//! let s = synthetic::mix_blocks(data.true_blocks.view(), m_inv.view())?;
//! let w = build_weight(a.view(), s.view())?;
//! assert!(synthetic::relative_weight_error(w.view(), data.true_weight.view())? < 1e-15);
//! // ... the rules differ entry by entry, but span the same subspace and align exactly.
//! assert_eq!(synthetic::rule_error(a.view(), data.true_rules.view())?, 1.0); // (A M)_2 = A_1 + 2 A_2
//! assert!(synthetic::subspace_distance(a.view(), data.true_rules.view())? < 1e-12);
//! let fit = synthetic::align_rules(a.view(), data.true_rules.view())?;
//! assert!(fit.residual < 1e-12);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::algebra::Algebra;
use crate::error::{check_shape, PhmError, Result};
use crate::kernels::phm::{build_weight, PhmShape};
use crate::linalg::{orthonormal_basis, solve, symmetric_eigen};
use crate::Float;

/// Where the true rules `A*` of a [`RuleTask`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrueRule {
    /// The fixed rules of an algebra (its dimension must be the task's `n`).
    Algebra(Algebra),
    /// A random rule tensor, every entry independent `N(0, 1/n)` (so that, like an algebra's
    /// rules with one `±1` per `(r, c)`, `Σ_i A_i[r, c]²` is 1 on average). Any `n ≥ 1`.
    Random,
}

/// A synthetic rule-learning task: sizes, the true rule, noise and sample count.
///
/// [`generate`](RuleTask::generate) draws, in this order from the generator:
///
/// 1. for [`TrueRule::Random`], the rules `A*` (`n³` entries `N(0, 1/n)`);
/// 2. the blocks `S*`, shape `(n, k/n, d/n)`, entries `N(0, 1/d)` — with algebra rules every
///    entry of `W*` then has variance `1/d` and every target `1` (before noise);
/// 3. the inputs `x`, shape `(samples, d)`, entries `N(0, 1)`;
/// 4. the noise, shape `(samples, k)`, entries `N(0, noise_std²)` (skipped when
///    `noise_std = 0`).
///
/// Recovering the rules needs linearly independent blocks, i.e. `(k/n)·(d/n) ≥ n`, and (for
/// learning) enough samples, `samples ≥ d` at least; the task does not enforce either, so
/// that non-identifiable cases can be studied too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleTask {
    /// Hypercomplex dimension `n ≥ 1`.
    pub n: usize,
    /// Input width `d` (a multiple of `n`).
    pub in_features: usize,
    /// Output width `k` (a multiple of `n`).
    pub out_features: usize,
    /// The true rule.
    pub rule: TrueRule,
    /// Standard deviation `σ ≥ 0` of the Gaussian noise added to the targets (default `0`).
    pub noise_std: f64,
    /// Number of samples, at least 1 (default `1024`).
    pub samples: usize,
}

/// One draw of a [`RuleTask`]: the data and the teacher that made them.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset<F> {
    /// Inputs, shape `(samples, d)`.
    pub x: Array2<F>,
    /// Targets `x W*ᵀ + ε`, shape `(samples, k)`.
    pub y: Array2<F>,
    /// The true rules `A*`, shape `(n, n, n)`.
    pub true_rules: Array3<F>,
    /// The true blocks `S*`, shape `(n, k/n, d/n)`.
    pub true_blocks: Array3<F>,
    /// The true weight `W* = Σ A*_i ⊗ S*_i`, shape `(k, d)`.
    pub true_weight: Array2<F>,
}

impl RuleTask {
    /// A `d → k` task of dimension `n` with rule `rule`, no noise and 1024 samples (sizes in
    /// the crate's one order: `in_features, out_features, n`).
    #[must_use]
    pub fn new(in_features: usize, out_features: usize, n: usize, rule: TrueRule) -> Self {
        RuleTask {
            n,
            in_features,
            out_features,
            rule,
            noise_std: 0.0,
            samples: 1024,
        }
    }

    /// Sets the standard deviation of the target noise.
    #[must_use]
    pub fn with_noise_std(mut self, noise_std: f64) -> Self {
        self.noise_std = noise_std;
        self
    }

    /// Sets the number of samples.
    #[must_use]
    pub fn with_samples(mut self, samples: usize) -> Self {
        self.samples = samples;
        self
    }

    /// Checks the task and returns its layer shape.
    ///
    /// # Errors
    /// - [`PhmError::ZeroN`], [`PhmError::ZeroSize`], [`PhmError::NotDivisible`] for sizes that
    ///   do not fit `n` (e.g. `in_features 10 is not divisible by n = 4`);
    /// - [`PhmError::ZeroSize`] for `samples = 0`;
    /// - [`PhmError::InvalidArgument`] for a negative or non-finite `noise_std`, or an algebra
    ///   whose dimension is not `n` (or a Cayley–Dickson `n` that is not a power of two).
    pub fn validate(&self) -> Result<PhmShape> {
        let shape = PhmShape::new(self.in_features, self.out_features, self.n)?;
        if self.samples == 0 {
            return Err(PhmError::ZeroSize { what: "samples" });
        }
        if !(self.noise_std.is_finite() && self.noise_std >= 0.0) {
            return Err(PhmError::InvalidArgument {
                what: "noise_std",
                reason: format!("noise_std must be finite and >= 0, got {}", self.noise_std),
            });
        }
        if let TrueRule::Algebra(algebra) = self.rule {
            if algebra.dim() != self.n {
                return Err(PhmError::InvalidArgument {
                    what: "rule",
                    reason: format!(
                        "algebra {algebra} has dimension {}, but the task has n = {}",
                        algebra.dim(),
                        self.n
                    ),
                });
            }
            algebra.rules::<f64>()?;
        }
        Ok(shape)
    }

    /// Draws the true rules and blocks, the inputs and the targets (see the type's docs for the
    /// distributions and the order of the draws: the same seed gives the same data).
    ///
    /// # Errors
    /// As [`validate`](RuleTask::validate).
    pub fn generate<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Dataset<F>> {
        let shape = self.validate()?;
        let (n, d) = (self.n, self.in_features);
        let mut normal = |std: f64| -> F {
            let z: f64 = StandardNormal.sample(rng);
            F::of(std * z)
        };
        let true_rules = match self.rule {
            TrueRule::Algebra(algebra) => algebra.rules::<F>()?,
            TrueRule::Random => {
                let std = (1.0 / n as f64).sqrt();
                Array3::from_shape_simple_fn((n, n, n), || normal(std))
            }
        };
        let block_std = (1.0 / d as f64).sqrt();
        let true_blocks = Array3::from_shape_simple_fn(shape.blocks_dim(), || normal(block_std));
        let x = Array2::from_shape_simple_fn((self.samples, d), || normal(1.0));
        let true_weight = build_weight(true_rules.view(), true_blocks.view())?;
        let mut y = x.dot(&true_weight.t());
        if self.noise_std > 0.0 {
            y.mapv_inplace(|v| v + normal(self.noise_std));
        }
        Ok(Dataset {
            x,
            y,
            true_rules,
            true_blocks,
            true_weight,
        })
    }
}

/// The largest entrywise difference `max_{i,r,c} |A_i[r,c] − A*_i[r,c]|` (setting (a)).
///
/// NaN if an entry of either tensor is NaN.
///
/// ```
/// use phm_nn::{algebra, research::synthetic::rule_error};
/// let q = algebra::quaternion::<f32>();
/// let mut learned = q.clone();
/// learned[[1, 0, 1]] += 0.25;
/// assert_eq!(rule_error(learned.view(), q.view())?, 0.25);
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
///
/// # Errors
/// [`PhmError::ShapeMismatch`] if the shapes differ.
pub fn rule_error<F: Float>(learned: ArrayView3<'_, F>, truth: ArrayView3<'_, F>) -> Result<f64> {
    check_shape("learned rules", truth.shape(), learned.shape())?;
    Ok(learned
        .iter()
        .zip(truth.iter())
        .map(|(a, b)| (a.as_f64() - b.as_f64()).abs())
        .fold(0.0, nan_max))
}

/// The relative Frobenius error `‖W − W*‖_F / ‖W*‖_F`.
///
/// NaN if an entry is NaN.
///
/// ```
/// use ndarray::array;
/// let e = phm_nn::research::synthetic::relative_weight_error(
///     array![[3.0, 0.0]].view(), array![[0.0, 4.0]].view())?;
/// assert_eq!(e, 5.0 / 4.0);
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
///
/// # Errors
/// [`PhmError::ShapeMismatch`] if the shapes differ; [`PhmError::InvalidArgument`] if `W*` is
/// zero (the relative error is undefined).
pub fn relative_weight_error<F: Float>(
    weight: ArrayView2<'_, F>,
    true_weight: ArrayView2<'_, F>,
) -> Result<f64> {
    check_shape("weight", true_weight.shape(), weight.shape())?;
    let diff: f64 = weight
        .iter()
        .zip(true_weight.iter())
        .map(|(a, b)| (a.as_f64() - b.as_f64()).powi(2))
        .sum();
    let norm: f64 = true_weight.iter().map(|b| b.as_f64().powi(2)).sum();
    if norm == 0.0 {
        return Err(PhmError::InvalidArgument {
            what: "true_weight",
            reason: format!(
                "the true weight {:?} is zero, so the relative error is undefined",
                true_weight.shape()
            ),
        });
    }
    Ok((diff / norm).sqrt())
}

/// The mixed rules `A M`: `(A M)_i = Σ_j M[j, i] · A_j` (see the [module docs](self)).
///
/// With [`mix_blocks`]`(S, M⁻¹)` it leaves `W = Σ A_i ⊗ S_i` unchanged.
///
/// # Errors
/// [`PhmError::ShapeMismatch`] if `rules` is not `(n, n, n)` or `mixing` not `(n, n)`.
pub fn mix_rules<F: Float>(
    rules: ArrayView3<'_, F>,
    mixing: ArrayView2<'_, F>,
) -> Result<Array3<F>> {
    let n = rules_n(&rules)?;
    check_shape("mixing", &[n, n], mixing.shape())?;
    // As (n, n²) with row i = vec(A_i): rows of Mᵀ Â.
    let flat = rules
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((n, n * n))
        .expect("a standard-layout (n, n, n) array reshapes to (n, n²)");
    let mixed = mixing.t().dot(&flat);
    Ok(mixed
        .into_shape_with_order((n, n, n))
        .expect("a fresh (n, n²) array reshapes to (n, n, n)"))
}

/// The mixed blocks `N S`: `(N S)_i = Σ_j N[i, j] · S_j` (see the [module docs](self)).
///
/// `Σ (A M)_i ⊗ (N S)_i = Σ A_i ⊗ S_i` for `N = M⁻¹`.
///
/// # Errors
/// [`PhmError::ShapeMismatch`] if `mixing` is not `(n, n)` for blocks `(n, p, q)`.
pub fn mix_blocks<F: Float>(
    blocks: ArrayView3<'_, F>,
    mixing: ArrayView2<'_, F>,
) -> Result<Array3<F>> {
    let (n, p, q) = blocks.dim();
    check_shape("mixing", &[n, n], mixing.shape())?;
    let flat = blocks
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((n, p * q))
        .expect("a standard-layout (n, p, q) array reshapes to (n, p·q)");
    Ok(mixing
        .dot(&flat)
        .into_shape_with_order((n, p, q))
        .expect("a fresh (n, p·q) array reshapes to (n, p, q)"))
}

/// The principal angles (radians, ascending, in `[0, π/2]`) between `span{A_i}` and
/// `span{A*_i}` as subspaces of `R^{n²}`.
///
/// With orthonormal bases `Q`, `Q*` (modified Gram–Schmidt, twice, in `f64`; a vector whose
/// remainder is below `1e-10` times the largest rule's norm counts as dependent), the sines
/// and cosines of the angles are the singular values of the parts of the smaller basis outside
/// and inside the larger span (`Q* − Q (Qᵀ Q*)` and `Qᵀ Q*` for equal dimensions), computed as
/// square roots of the eigenvalues of their Gram matrices (cyclic Jacobi); each angle is
/// `atan2(sin, cos)`, accurate near 0 and near `π/2`. If the spans have
/// different dimensions, there are `min` of the two dimensions angles (those of the smaller
/// span to the larger one). All NaN if an entry is not finite.
///
/// ```
/// use phm_nn::{algebra, research::synthetic::principal_angles};
/// let c = algebra::complex::<f64>();
/// // A_1 = I and A_2 = [[0,−1],[1,0]] against A_1 = I and A_2 = [[1,0],[0,−1]]:
/// // one shared direction, and two orthogonal ones.
/// let other = ndarray::array![[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]]];
/// let angles = principal_angles(other.view(), c.view())?;
/// assert!(angles[0].abs() < 1e-12 && (angles[1] - std::f64::consts::FRAC_PI_2).abs() < 1e-12);
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
///
/// # Errors
/// [`PhmError::ShapeMismatch`] if a tensor is not `(n, n, n)` or the two `n` differ.
pub fn principal_angles<F: Float>(
    learned: ArrayView3<'_, F>,
    truth: ArrayView3<'_, F>,
) -> Result<Vec<f64>> {
    let (l, t) = rule_columns(&learned, &truth)?;
    if !all_finite(&l) || !all_finite(&t) {
        return Ok(vec![f64::NAN; l.ncols().min(t.ncols())]);
    }
    let (ql, qt) = (orthonormal_basis(&l), orthonormal_basis(&t));
    let (small, big) = if ql.ncols() <= qt.ncols() {
        (&ql, &qt)
    } else {
        (&qt, &ql)
    };
    // Sines (ascending) from the part outside the big span, cosines (descending) from the
    // part inside it: each accurate where the other is not, and atan2 takes the better one.
    let sines = outside_sines(small, big);
    let inside = big.t().dot(small);
    let mut cosines: Vec<f64> = symmetric_eigen(&inside.t().dot(&inside))
        .0
        .into_iter()
        .map(|e| e.max(0.0).sqrt().min(1.0))
        .collect();
    cosines.sort_by(|a, b| b.total_cmp(a));
    Ok(sines
        .into_iter()
        .zip(cosines)
        .map(|(s, c)| s.atan2(c))
        .collect())
}

/// The projection distance `‖P_learned − P_true‖₂` between the orthogonal projectors onto
/// `span{A_i}` and `span{A*_i}` in `R^{n²}`: the sine of the largest
/// [principal angle](principal_angles) when the spans have the same dimension, and `1` when
/// they do not. It lies in `[0, 1]`, is 0 exactly when the spans agree and does not change
/// when either rule tensor is mixed by an invertible `M` (see the [module docs](self)). NaN
/// if an entry is not finite.
///
/// # Errors
/// [`PhmError::ShapeMismatch`] if a tensor is not `(n, n, n)` or the two `n` differ.
pub fn subspace_distance<F: Float>(
    learned: ArrayView3<'_, F>,
    truth: ArrayView3<'_, F>,
) -> Result<f64> {
    let (l, t) = rule_columns(&learned, &truth)?;
    if !all_finite(&l) || !all_finite(&t) {
        return Ok(f64::NAN);
    }
    let (ql, qt) = (orthonormal_basis(&l), orthonormal_basis(&t));
    if ql.ncols() != qt.ncols() {
        return Ok(1.0);
    }
    Ok(outside_sines(&qt, &ql).into_iter().fold(0.0, nan_max))
}

/// The least-squares alignment of learned rules to the true ones (see [`align_rules`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleAlignment {
    /// The mixing `M` `(n, n)` minimizing `‖Ā* − Ā_learned M‖_F`.
    pub mixing: Array2<f64>,
    /// The aligned rules `A_learned M`, shape `(n, n, n)`, comparable entry by entry with `A*`.
    pub aligned: Array3<f64>,
    /// `‖Ā* − Ā_learned M‖_F / ‖Ā*‖_F`.
    pub residual: f64,
}

/// Finds the mixing `M` that best maps the learned rules onto the true ones,
/// `M = argmin ‖Ā* − Ā_learned M‖_F` (notation of the [module docs](self)), and the relative
/// residual that remains.
///
/// `M` solves the `n × n` normal equations `(Ā_learnedᵀ Ā_learned) M = Ā_learnedᵀ Ā*` by
/// Gaussian elimination with partial pivoting, in `f64`. A residual near 0 means the learned
/// rules are the true ones up to the symmetry `A ↦ A M`. NaN residual (and entries) if an
/// input entry is not finite.
///
/// # Errors
/// - [`PhmError::ShapeMismatch`] if a tensor is not `(n, n, n)` or the two `n` differ;
/// - [`PhmError::InvalidArgument`] if the learned rules are linearly dependent (a pivot of the
///   normal equations below `1e-12` times the largest diagonal entry): no unique `M` exists.
///   [`subspace_distance`] still compares them.
pub fn align_rules<F: Float>(
    learned: ArrayView3<'_, F>,
    truth: ArrayView3<'_, F>,
) -> Result<RuleAlignment> {
    let (l, t) = rule_columns(&learned, &truth)?;
    let n = l.ncols();
    if !all_finite(&l) || !all_finite(&t) {
        return Ok(RuleAlignment {
            mixing: Array2::from_elem((n, n), f64::NAN),
            aligned: Array3::from_elem((n, n, n), f64::NAN),
            residual: f64::NAN,
        });
    }
    let gram = l.t().dot(&l);
    let rhs = l.t().dot(&t);
    let mixing = solve(gram, rhs).map_err(|e| PhmError::InvalidArgument {
        what: "learned rules",
        reason: format!(
            "the learned rules are linearly dependent, so no unique mixing aligns them ({e})"
        ),
    })?;
    let fitted = l.dot(&mixing);
    let diff: f64 = fitted
        .iter()
        .zip(t.iter())
        .map(|(a, b)| (a - b).powi(2))
        .sum();
    let norm: f64 = t.iter().map(|b| b * b).sum();
    let residual = if norm > 0.0 {
        (diff / norm).sqrt()
    } else {
        diff.sqrt()
    };
    let aligned = fitted
        .t()
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order((n, n, n))
        .expect("a standard-layout (n, n²) array reshapes to (n, n, n)");
    Ok(RuleAlignment {
        mixing,
        aligned,
        residual,
    })
}

/// `max` that keeps a NaN once one is seen.
fn nan_max(m: f64, d: f64) -> f64 {
    if d > m || d.is_nan() {
        d
    } else {
        m
    }
}

fn all_finite(a: &Array2<f64>) -> bool {
    a.iter().all(|v| v.is_finite())
}

/// Validates a rule tensor's shape `(n, n, n)` and returns `n`.
fn rules_n<F>(rules: &ArrayView3<'_, F>) -> Result<usize> {
    let n = rules.len_of(Axis(0));
    check_shape("rules", &[n, n, n], rules.shape())?;
    Ok(n)
}

/// Both rule tensors as `n² × n` matrices `Ā` (column `i` = `vec(A_i)`), in `f64`.
fn rule_columns<F: Float>(
    learned: &ArrayView3<'_, F>,
    truth: &ArrayView3<'_, F>,
) -> Result<(Array2<f64>, Array2<f64>)> {
    let n = rules_n(truth)?;
    check_shape("learned rules", truth.shape(), learned.shape())?;
    let columns = |a: &ArrayView3<'_, F>| {
        Array2::from_shape_fn((n * n, n), |(rc, i)| a[[i, rc / n, rc % n]].as_f64())
    };
    Ok((columns(learned), columns(truth)))
}

/// Sines of the principal angles of `span(small)` to `span(big)` (both orthonormal columns,
/// `small` with no more columns than `big`), ascending: singular values of
/// `small − big (bigᵀ small)`.
fn outside_sines(small: &Array2<f64>, big: &Array2<f64>) -> Vec<f64> {
    let outside = small - &big.dot(&big.t().dot(small));
    let gram = outside.t().dot(&outside);
    let mut sines: Vec<f64> = symmetric_eigen(&gram)
        .0
        .into_iter()
        .map(|e| e.max(0.0).sqrt().min(1.0))
        .collect();
    sines.sort_by(f64::total_cmp);
    sines
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn random_rules(n: usize, seed: u64) -> Array3<f64> {
        RuleTask::new(n, n, n, TrueRule::Random)
            .with_samples(1)
            .generate::<f64, _>(&mut StdRng::seed_from_u64(seed))
            .unwrap()
            .true_rules
    }

    /// A random, well-conditioned mixing: identity plus a small random matrix.
    fn random_mixing(n: usize, seed: u64) -> Array2<f64> {
        let r = random_rules(n, seed);
        Array2::eye(n) * 2.0 + r.index_axis(Axis(0), 0)
    }

    #[test]
    fn mixing_keeps_the_span_and_aligns_exactly() {
        for (n, seed) in [(2, 1), (3, 2), (4, 3), (8, 4)] {
            let truth = random_rules(n, seed);
            let m = random_mixing(n, seed + 100);
            let mixed = mix_rules(truth.view(), m.view()).unwrap();
            assert!(rule_error(mixed.view(), truth.view()).unwrap() > 0.1);
            let dist = subspace_distance(mixed.view(), truth.view()).unwrap();
            assert!(dist < 1e-7, "n = {n}: distance {dist}");
            let angles = principal_angles(mixed.view(), truth.view()).unwrap();
            assert_eq!(angles.len(), n);
            assert!(angles.iter().all(|a| *a < 1e-7), "{angles:?}");
            let fit = align_rules(mixed.view(), truth.view()).unwrap();
            assert!(fit.residual < 1e-10, "n = {n}: residual {}", fit.residual);
            assert!(rule_error(fit.aligned.view(), truth.view()).unwrap() < 1e-10);
            // The fitted mixing undoes M: M · fit = I.
            let product = m.dot(&fit.mixing);
            let eye = Array2::<f64>::eye(n);
            assert!(product
                .iter()
                .zip(eye.iter())
                .all(|(a, b)| (a - b).abs() < 1e-9));
        }
    }

    #[test]
    fn unrelated_rules_are_far() {
        for (n, seed) in [(2, 5), (3, 6), (4, 7), (8, 8)] {
            let a = random_rules(n, seed);
            let b = random_rules(n, seed + 50);
            let dist = subspace_distance(a.view(), b.view()).unwrap();
            assert!(dist > 0.5, "n = {n}: distance {dist}");
            let fit = align_rules(a.view(), b.view()).unwrap();
            assert!(fit.residual > 0.3, "n = {n}: residual {}", fit.residual);
        }
    }

    #[test]
    fn known_angle() {
        // In R^4 (n = 2): span{e1, e2} against span{e1, cos θ e2 + sin θ e3}: angles 0 and θ.
        let theta: f64 = 0.3;
        let a = array![[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]];
        let b = array![
            [[1.0, 0.0], [0.0, 0.0]],
            [[0.0, theta.cos()], [theta.sin(), 0.0]]
        ];
        let angles = principal_angles(a.view(), b.view()).unwrap();
        assert!(angles[0].abs() < 1e-15 && (angles[1] - theta).abs() < 1e-14);
        let dist = subspace_distance(a.view(), b.view()).unwrap();
        assert!((dist - theta.sin()).abs() < 1e-14);
        // Tiny angles stay accurate.
        let tiny = 1e-9;
        let c = array![[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [tiny, 0.0]]];
        let dist = subspace_distance(a.view(), c.view()).unwrap();
        assert!((dist - tiny).abs() < 1e-16, "{dist}");
    }

    #[test]
    fn projection_distance_matches_projectors() {
        // ‖P_a − P_b‖_F² = 2 Σ sin² θ_i for spans of equal dimension.
        let (a, b) = (random_rules(3, 11), random_rules(3, 12));
        let projector = |r: &Array3<f64>| {
            let q = orthonormal_basis(&rule_columns(&r.view(), &r.view()).unwrap().0);
            q.dot(&q.t())
        };
        let frob2: f64 = (projector(&a) - projector(&b)).iter().map(|v| v * v).sum();
        let angles = principal_angles(a.view(), b.view()).unwrap();
        let sum: f64 = angles.iter().map(|t| 2.0 * t.sin().powi(2)).sum();
        assert!((frob2 - sum).abs() < 1e-12, "{frob2} vs {sum}");
        let dist = subspace_distance(a.view(), b.view()).unwrap();
        assert!((dist - angles[2].sin()).abs() < 1e-12);
    }

    #[test]
    fn degenerate_and_non_finite() {
        let q = crate::algebra::quaternion::<f64>();
        let mut dependent = q.clone();
        let a0 = dependent.index_axis(Axis(0), 0).to_owned();
        dependent.index_axis_mut(Axis(0), 1).assign(&(&a0 * 3.0));
        assert_eq!(subspace_distance(dependent.view(), q.view()).unwrap(), 1.0);
        assert_eq!(
            principal_angles(dependent.view(), q.view()).unwrap().len(),
            3
        );
        let err = align_rules(dependent.view(), q.view()).unwrap_err();
        assert!(err.to_string().contains("linearly dependent"), "{err}");
        let mut nan = q.clone();
        nan[[2, 1, 1]] = f64::NAN;
        assert!(rule_error(nan.view(), q.view()).unwrap().is_nan());
        assert!(subspace_distance(nan.view(), q.view()).unwrap().is_nan());
        assert!(align_rules(nan.view(), q.view()).unwrap().residual.is_nan());
        let w = array![[1.0, f64::NAN]];
        assert!(relative_weight_error(w.view(), array![[1.0, 1.0]].view())
            .unwrap()
            .is_nan());
    }

    #[test]
    fn shape_errors() {
        let q = crate::algebra::quaternion::<f64>();
        let c = crate::algebra::complex::<f64>();
        let err = rule_error(c.view(), q.view()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "learned rules has shape [2, 2, 2], expected [4, 4, 4]"
        );
        assert!(subspace_distance(c.view(), q.view()).is_err());
        assert!(mix_rules(q.view(), Array2::eye(3).view()).is_err());
        let err = relative_weight_error(
            Array2::<f64>::zeros((2, 2)).view(),
            Array2::zeros((2, 2)).view(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("is zero"), "{err}");
    }

    #[test]
    fn task_validation() {
        let quat = TrueRule::Algebra(Algebra::Quaternion);
        let err = RuleTask::new(10, 8, 4, quat).validate().unwrap_err();
        assert_eq!(err.to_string(), "in_features 10 is not divisible by n = 4");
        let err = RuleTask::new(6, 6, 3, quat).validate().unwrap_err();
        assert!(
            err.to_string()
                .contains("algebra quaternion has dimension 4, but the task has n = 3"),
            "{err}"
        );
        let err = RuleTask::new(8, 8, 4, quat)
            .with_noise_std(-0.1)
            .validate()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("noise_std must be finite and >= 0, got -0.1"),
            "{err}"
        );
        let err = RuleTask::new(8, 8, 4, quat)
            .with_samples(0)
            .validate()
            .unwrap_err();
        assert_eq!(err, PhmError::ZeroSize { what: "samples" });
        let err = RuleTask::new(6, 6, 6, TrueRule::Algebra(Algebra::CayleyDickson(6)))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("power of two"), "{err}");
        assert!(RuleTask::new(4, 4, 0, TrueRule::Random).validate().is_err());
    }

    #[test]
    fn generated_data_follow_the_teacher() {
        let task = RuleTask::new(6, 9, 3, TrueRule::Random)
            .with_samples(5)
            .with_noise_std(0.5);
        let data = task
            .generate::<f64, _>(&mut StdRng::seed_from_u64(9))
            .unwrap();
        let again = task
            .generate::<f64, _>(&mut StdRng::seed_from_u64(9))
            .unwrap();
        assert_eq!(data, again);
        assert_eq!(data.true_blocks.dim(), (3, 3, 2));
        let w = build_weight(data.true_rules.view(), data.true_blocks.view()).unwrap();
        assert_eq!(w, data.true_weight);
        let clean = data.x.dot(&w.t());
        let noise = &data.y - &clean;
        assert!(noise.iter().any(|e| e.abs() > 0.05));
        let quiet = task
            .with_noise_std(0.0)
            .generate::<f32, _>(&mut StdRng::seed_from_u64(9))
            .unwrap();
        let clean = quiet.x.dot(&quiet.true_weight.t());
        assert!(quiet
            .y
            .iter()
            .zip(clean.iter())
            .all(|(a, b)| (a - b).abs() < 1e-6));
    }
}
