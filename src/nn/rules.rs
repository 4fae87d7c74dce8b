//! The rules `A_i` of the PHM family and where they come from: learned or fixed to an
//! algebra ([`Rule`], sampled by [`Rule::sample`]), held as full rules `A` `(n, n, n)` or
//! factorized rank-one rules `A_i = a_i b_iᵀ` (Compacter's `factorized_phm_rule`) in a
//! [`PhmRules`].
//!
//! ```text
//!     full:        A: (n, n, n)                                  n³ parameters
//!     factorized:  A_i = a_i b_iᵀ,  a, b: (n, n) (row i = a_i)   2·n² parameters
//!                  A_i[r, c] = a[i, r] · b[i, c]
//!     gradients:   da_i = dA_i b_i,   db_i = dA_iᵀ a_i
//! ```
//!
//! A [`PhmRules`] is a set of handles: [`share`](PhmRules::share) it to let any number of
//! layers with the same `n` (of any sizes) use one rule set — the Compacter setting, where one
//! rule tensor serves every adapter layer. Every layer adds its `dA` into the same tensors
//! (through the chain rule above for factorized rules), and optimizers, `num_parameters` and
//! checkpoints see each tensor once, because they key parameters by [`ParamId`](crate::module::ParamId).
//!
//! Used by [`LphmLinear`](crate::nn::LphmLinear) and [`Projection`](crate::nn::Projection)
//! (attention, feed-forward, adapters). [`PhmLinear`](crate::PhmLinear) shares full rules through its own
//! [`PhmLinearConfig::init_shared`](crate::PhmLinearConfig::init_shared) (a `(n, n, n)` handle,
//! which is [`PhmRules::full_param`]).
//!
//! ```
//! use phm_nn::prelude::*;
//! use phm_nn::nn::PhmRules;
//! let mut rng = StdRng::seed_from_u64(0);
//! // Full learned rules: n³ parameters; factorized: 2·n².
//! let full = PhmRules::<f64>::new(4, Rule::Learned(Init::UnitFibers), &mut rng)?;
//! let factorized = PhmRules::<f64>::new_factorized(4, None, &mut rng)?;
//! assert_eq!((full.num_parameters(), factorized.num_parameters()), (64, 32));
//! // Fixed quaternion rules are frozen: nothing to train.
//! let quat = PhmRules::<f64>::new(4, Rule::Fixed(Algebra::Quaternion), &mut rng)?;
//! assert_eq!((quat.num_parameters(), quat.is_trainable()), (64, false));
//! // A factorized rule is rank one: A_i[r, c] = a[i, r]·b[i, c].
//! let a = factorized.matrices();
//! let (l, r) = factorized.factors().unwrap();
//! assert!((a[[1, 2, 3]] - l[[1, 2]] * r[[1, 3]]).abs() < 1e-15);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{Array2, Array3, ArrayView3, Ix2, Ix3};
use rand::Rng;

use crate::algebra::Algebra;
use crate::error::{check_shape, PhmError, Result};
use crate::init::{Fans, Init};
use crate::module::Param;
use crate::Float;

/// Where a PHM layer's rules `A_i` come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// Learned rules, drawn with this init (fans `(n, n)`); the default is
    /// [`Init::UnitFibers`].
    Learned(Init),
    /// Fixed rules of an algebra (frozen: no gradient, never changed by an optimizer).
    Fixed(Algebra),
}

impl Rule {
    /// A new `(n, n, n)` rule tensor: learned (drawn with the rule's init, fans `(n, n)`) or
    /// the frozen rules of an algebra. [`PhmRules::new`] wraps it; layers that hold a bare
    /// tensor ([`PhmLinear`](crate::PhmLinear)) take it as it is.
    ///
    /// # Errors
    /// [`PhmError::ZeroN`] for `n = 0`; [`PhmError::InvalidArgument`] for an algebra whose
    /// dimension is not `n` or an invalid init.
    pub fn sample<F: Float, R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Result<Param<F>> {
        if n == 0 {
            return Err(PhmError::ZeroN);
        }
        Ok(match *self {
            Rule::Learned(init) => Param::new(init.sample(&[n, n, n], Fans::new(n, n), rng)?),
            Rule::Fixed(algebra) => {
                if algebra.dim() != n {
                    return Err(PhmError::InvalidArgument {
                        what: "rule",
                        reason: format!(
                            "algebra {algebra} has dimension {}, but the layer has n = {n}",
                            algebra.dim()
                        ),
                    });
                }
                Param::frozen(algebra.rules::<F>()?.into_dyn())
            }
        })
    }
}

/// The tensors behind a [`PhmRules`].
#[derive(Debug, Clone)]
enum Source<F: Float> {
    Full(Param<F>),
    Factorized { left: Param<F>, right: Param<F> },
}

/// The rules `A_i` of a PHM-family layer: full `(n, n, n)` or factorized `A_i = a_i b_iᵀ`;
/// see the [module docs](self).
///
/// `Clone` deep-copies the tensors (new ids), as [`Param`]'s `Clone` does; use
/// [`share`](PhmRules::share) for another handle to the same tensors.
#[derive(Debug, Clone)]
pub struct PhmRules<F: Float> {
    n: usize,
    source: Source<F>,
}

impl<F: Float> PhmRules<F> {
    /// New full rules `(n, n, n)`: learned (drawn with the rule's init, fans `(n, n)`) or the
    /// frozen rules of an algebra.
    ///
    /// # Errors
    /// [`PhmError::ZeroN`] for `n = 0`; [`PhmError::InvalidArgument`] for an algebra whose
    /// dimension is not `n` or an invalid init.
    pub fn new<R: Rng + ?Sized>(n: usize, rule: Rule, rng: &mut R) -> Result<Self> {
        Self::full(rule.sample(n, rng)?)
    }

    /// New factorized rules: `a`, `b` `(n, n)` each drawn with `init` (fans `(n, n)`), by
    /// default `N(0, n^{-1/2})` so that `E Σ_i A_i[r,c]² = 1`, as for the default full rules
    /// ([`Init::UnitFibers`]) and the algebras — which keeps the layer's weight variance.
    ///
    /// # Errors
    /// [`PhmError::ZeroN`] for `n = 0`; [`PhmError::InvalidArgument`] for an invalid init.
    pub fn new_factorized<R: Rng + ?Sized>(
        n: usize,
        init: Option<Init>,
        rng: &mut R,
    ) -> Result<Self> {
        if n == 0 {
            return Err(PhmError::ZeroN);
        }
        let init = init.unwrap_or(Init::Normal {
            std: (n as f64).powf(-0.25),
        });
        let left = Param::new(init.sample(&[n, n], Fans::new(n, n), rng)?);
        let right = Param::new(init.sample(&[n, n], Fans::new(n, n), rng)?);
        Self::factorized(left, right)
    }

    /// Full rules from a `(n, n, n)` handle (e.g. [`PhmLinear::rules_param`](crate::PhmLinear::rules_param)):
    /// the result shares the tensor.
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`] if `rules` is not `(n, n, n)`; [`PhmError::ZeroN`] if empty.
    pub fn full(rules: Param<F>) -> Result<Self> {
        let shape = rules.shape();
        let n = shape.first().copied().unwrap_or(0);
        if n == 0 {
            return Err(PhmError::ZeroN);
        }
        check_shape("rules", &[n, n, n], &shape)?;
        Ok(PhmRules {
            n,
            source: Source::Full(rules.share()),
        })
    }

    /// Factorized rules from two `(n, n)` handles (row `i` of `left` is `a_i`, of `right`
    /// `b_i`); the result shares the tensors.
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`] if they are not both `(n, n)`; [`PhmError::ZeroN`] if empty;
    /// [`PhmError::InvalidArgument`] if they are the same tensor.
    pub fn factorized(left: Param<F>, right: Param<F>) -> Result<Self> {
        let shape = left.shape();
        let n = shape.first().copied().unwrap_or(0);
        if n == 0 {
            return Err(PhmError::ZeroN);
        }
        check_shape("rules_left", &[n, n], &shape)?;
        check_shape("rules_right", &[n, n], &right.shape())?;
        if left.is_shared_with(&right) {
            return Err(PhmError::InvalidArgument {
                what: "rules_right",
                reason: format!(
                    "the left and right rule factors must be distinct tensors, got {} twice",
                    left.id()
                ),
            });
        }
        Ok(PhmRules {
            n,
            source: Source::Factorized {
                left: left.share(),
                right: right.share(),
            },
        })
    }

    /// Another handle to the same tensors (same ids): pass it to every layer that should share
    /// these rules.
    #[must_use]
    pub fn share(&self) -> Self {
        PhmRules {
            n: self.n,
            source: match &self.source {
                Source::Full(p) => Source::Full(p.share()),
                Source::Factorized { left, right } => Source::Factorized {
                    left: left.share(),
                    right: right.share(),
                },
            },
        }
    }

    /// Whether `self` and `other` are handles to the same tensors.
    pub fn is_shared_with(&self, other: &PhmRules<F>) -> bool {
        match (&self.source, &other.source) {
            (Source::Full(a), Source::Full(b)) => a.is_shared_with(b),
            (
                Source::Factorized { left: a, right: b },
                Source::Factorized { left: c, right: d },
            ) => a.is_shared_with(c) && b.is_shared_with(d),
            _ => false,
        }
    }

    /// The hypercomplex dimension `n`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Whether the rules are factorized (`A_i = a_i b_iᵀ`).
    pub fn is_factorized(&self) -> bool {
        matches!(self.source, Source::Factorized { .. })
    }

    /// Scalars held: `n³` (full) or `2·n²` (factorized), trainable or not.
    pub fn num_parameters(&self) -> usize {
        match self.source {
            Source::Full(_) => self.n.pow(3),
            Source::Factorized { .. } => 2 * self.n * self.n,
        }
    }

    /// The full `(n, n, n)` handle, or `None` for factorized rules.
    pub fn full_param(&self) -> Option<&Param<F>> {
        match &self.source {
            Source::Full(p) => Some(p),
            Source::Factorized { .. } => None,
        }
    }

    /// Copies of the factors `(a, b)`, each `(n, n)`, or `None` for full rules.
    pub fn factors(&self) -> Option<(Array2<F>, Array2<F>)> {
        match &self.source {
            Source::Full(_) => None,
            Source::Factorized { left, right } => Some((dim2(left.value()), dim2(right.value()))),
        }
    }

    /// Whether the rules take gradients (for factorized rules: either factor does).
    pub fn is_trainable(&self) -> bool {
        match &self.source {
            Source::Full(p) => p.is_trainable(),
            Source::Factorized { left, right } => left.is_trainable() || right.is_trainable(),
        }
    }

    /// Makes the rules learned or frozen — for every layer sharing them.
    pub fn set_trainable(&self, trainable: bool) {
        match &self.source {
            Source::Full(p) => p.set_trainable(trainable),
            Source::Factorized { left, right } => {
                left.set_trainable(trainable);
                right.set_trainable(trainable);
            }
        }
    }

    /// Version stamps of the tensors (they change whenever a value is written).
    pub fn versions(&self) -> (u64, u64) {
        match &self.source {
            Source::Full(p) => (p.version(), 0),
            Source::Factorized { left, right } => (left.version(), right.version()),
        }
    }

    /// The rule matrices `A` `(n, n, n)` (`A[i]` = `A_i`), built from the factors when
    /// factorized.
    pub fn matrices(&self) -> Array3<F> {
        match &self.source {
            Source::Full(p) => p
                .read()
                .value()
                .into_dimensionality::<Ix3>()
                .expect("full rules are 3-D")
                .to_owned(),
            Source::Factorized { left, right } => {
                let (a, b) = (left.read(), right.read());
                let a = a.value().into_dimensionality::<Ix2>().expect("2-D factor");
                let b = b.value().into_dimensionality::<Ix2>().expect("2-D factor");
                let n = self.n;
                Array3::from_shape_fn((n, n, n), |(i, r, c)| a[[i, r]] * b[[i, c]])
            }
        }
    }

    /// Adds the gradient of the loss with respect to the rule matrices, `dA` `(n, n, n)`, into
    /// the trainable tensors (for factorized rules `da_i += dA_i b_i`, `db_i += dA_iᵀ a_i`).
    ///
    /// # Panics
    /// If `da` is not `(n, n, n)`.
    #[track_caller]
    pub fn accumulate_grad(&self, da: ArrayView3<'_, F>) {
        let n = self.n;
        assert_eq!(
            da.shape(),
            &[n, n, n],
            "PhmRules::accumulate_grad: dA has shape {:?}, expected {:?}",
            da.shape(),
            [n, n, n]
        );
        match &self.source {
            Source::Full(p) => {
                let mut p = p.write();
                if p.is_trainable() {
                    let mut g = p.grad_mut();
                    g += &da.into_dyn();
                }
            }
            Source::Factorized { left, right } => {
                // Both values first (read locks), then each gradient under its own write lock.
                let (a, b) = (dim2(left.value()), dim2(right.value()));
                for (factor, other, transpose) in [(left, &b, false), (right, &a, true)] {
                    let mut w = factor.write();
                    if !w.is_trainable() {
                        continue;
                    }
                    let mut g = w
                        .grad_mut()
                        .into_dimensionality::<Ix2>()
                        .expect("2-D factor");
                    for i in 0..n {
                        let dai = da.index_axis(ndarray::Axis(0), i);
                        let dai = if transpose { dai.t() } else { dai };
                        // d(a_i) = dA_i b_i; d(b_i) = dA_iᵀ a_i.
                        let mut gi = g.row_mut(i);
                        gi += &dai.dot(&other.row(i));
                    }
                }
            }
        }
    }

    /// Calls `f(name, param)` for each tensor: `"rules"`, or `"rules_left"` and
    /// `"rules_right"` (Compacter's `phm_rule_left`/`phm_rule_right`).
    pub fn visit(&self, f: &mut dyn FnMut(&str, &Param<F>)) {
        match &self.source {
            Source::Full(p) => f("rules", p),
            Source::Factorized { left, right } => {
                f("rules_left", left);
                f("rules_right", right);
            }
        }
    }
}

fn dim2<F: Float>(v: ndarray::ArrayD<F>) -> Array2<F> {
    v.into_dimensionality::<Ix2>().expect("2-D factor")
}
