//! The PHM product as burn tensor operations: the weight `W = Σ_i A_i ⊗ S_i` built in one
//! contraction, the factored product that never builds `W`, and the rule that picks one.
//!
//! ```text
//!     A: (n, n, n)   S: (n, p, q) = (n, k/n, d/n)   W: (k, d)   X: (…, d)   Y = X Wᵀ: (…, k)
//!     W[r·p + o, c·q + j] = Σ_i A[i, r, c] · S[i, o, j]
//!
//!     materialized:  R = Âᵀ Ŝ   (Â = A as (n, n²), Ŝ = S as (n, p·q): one matmul, n·k·d MACs)
//!                    W = R as (r, c, o, j) → (r, o, c, j) → (k, d);   Y = X Wᵀ
//!     factored, mix first (d ≤ k):   Z[(i,r), (b,j)] = Σ_c A[i,r,c] X[b,c,j]   (B·n²·d MACs)
//!                    Y[(r,b), o]   = Σ_(i,j) Z[(r,b),(i,j)] S[i,o,j]          (B·k·d MACs)
//!     factored, blocks first (k < d): T[(b,c), (i,o)] = Σ_j X[b,c,j] S[i,o,j]  (B·k·d MACs)
//!                    Y[r, (b,o)]   = Σ_(i,c) A[i,r,c] T[(i,c),(b,o)]          (B·n²·k MACs)
//! ```
//!
//! Every function here is a composition of burn's `matmul`, `reshape` and `permute`, so burn's
//! autodiff differentiates it (gradients for `X`, `A` and `S`) on any backend.
//!
//! **The rule ([`PhmPath::Auto`]).** Both paths do the `B·k·d` product; they differ in the
//! extra work: building `W` costs `n·k·d` multiply-adds, the factored mixing
//! `B·n²·min(k, d)`. Auto takes the factored path when
//! `B·n²·min(k, d) ≤ FACTORED_WORK_RATIO · n·k·d`, i.e. when the batch of rows `B` is small
//! relative to `max(k, d)/n` — at batch 1 (decoding) it also reads `n` times fewer weights.
//! [`FACTORED_WORK_RATIO`] is `1` (equal work) until the benchmarks measure a better value.
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::kernels::{build_weight, phm_product, PhmPath};
//!
//! let device = Device::default();
//! // n = 2, k = 4, d = 2: A = [I, J], S_1 = [[1], [2]], S_2 = [[3], [4]].
//! let a = Tensor::<3>::from_floats([[[1.0, 0.0], [0.0, 1.0]], [[0.0, -1.0], [1.0, 0.0]]], &device);
//! let s = Tensor::<3>::from_floats([[[1.0], [2.0]], [[3.0], [4.0]]], &device);
//! let w = build_weight(a.clone(), s.clone());
//! let expected = Tensor::<2>::from_floats(
//!     [[1.0, -3.0], [2.0, -4.0], [3.0, 1.0], [4.0, 2.0]], &device);
//! assert!(w.clone().equal(expected).all().into_scalar::<bool>());
//! // Both paths give X Wᵀ:
//! let x = Tensor::<2>::from_floats([[1.0, 2.0]], &device);
//! let y1 = phm_product(x.clone(), a.clone(), s.clone(), PhmPath::Materialized);
//! let y2 = phm_product(x, a, s, PhmPath::Factored);
//! assert!(y1.equal(y2).all().into_scalar::<bool>());
//! ```

use burn::serde::{Deserialize, Serialize};
use burn::tensor::Tensor;

/// Auto uses the factored path while its extra work `B·n²·min(k, d)` is at most this times
/// the cost `n·k·d` of building `W` (see the [module docs](self)).
pub const FACTORED_WORK_RATIO: f64 = 1.0;

/// Which way a PHM layer computes `X Wᵀ`; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
pub enum PhmPath {
    /// Picks [`Factored`](PhmPath::Factored) or [`Materialized`](PhmPath::Materialized) by
    /// the rule in the module docs.
    #[default]
    Auto,
    /// Builds `W` (one matmul) and multiplies by it.
    Materialized,
    /// Never builds `W`: two matmuls through an `(B·n, ·)` intermediate.
    Factored,
}

impl PhmPath {
    /// The path a product with `rows` rows, dimension `n`, input `d` and output `k` takes:
    /// `Materialized` or `Factored` (never `Auto`).
    pub fn resolve(self, rows: usize, n: usize, d: usize, k: usize) -> PhmPath {
        match self {
            PhmPath::Auto => {
                let mixing = rows as f64 * (n * n) as f64 * d.min(k) as f64;
                let build = n as f64 * k as f64 * d as f64;
                if mixing <= FACTORED_WORK_RATIO * build {
                    PhmPath::Factored
                } else {
                    PhmPath::Materialized
                }
            }
            path => path,
        }
    }
}

/// The sizes `(n, p, q)` of rules `(n, n, n)` and blocks `(n, p, q)`.
///
/// # Panics
/// If the rules are not `(n, n, n)` or the blocks' first axis is not `n`.
#[track_caller]
fn sizes(rules: &Tensor<3>, blocks: &Tensor<3>) -> (usize, usize, usize) {
    let [n, n1, n2] = rules.dims();
    let [nb, p, q] = blocks.dims();
    assert!(
        n == n1 && n == n2 && nb == n,
        "PHM: rules of shape {:?} and blocks of shape {:?} do not fit (expected (n, n, n) and (n, k/n, d/n))",
        rules.dims(),
        blocks.dims()
    );
    (n, p, q)
}

/// `W = Σ_i A_i ⊗ S_i`, shape `(n·p, n·q)` = `(k, d)`, in one matmul (Van Loan's
/// rearrangement, see the [module docs](self)).
///
/// # Shapes
/// - `rules`: `(n, n, n)`; `blocks`: `(n, p, q)`; output `(n·p, n·q)`.
///
/// # Panics
/// If the shapes do not fit together.
#[track_caller]
pub fn build_weight(rules: Tensor<3>, blocks: Tensor<3>) -> Tensor<2> {
    let (n, p, q) = sizes(&rules, &blocks);
    let a: Tensor<2> = rules.reshape([n, n * n]);
    let s: Tensor<2> = blocks.reshape([n, p * q]);
    let r: Tensor<4> = a.transpose().matmul(s).reshape([n, n, p, q]);
    r.permute([0, 2, 1, 3]).reshape([n * p, n * q])
}

/// `Y = X Wᵀ` for a matrix `x` `(B, d)` without building `W`; the order of the two matmuls
/// follows the [module docs](self) (the cheaper one for `min(k, d)`).
///
/// # Shapes
/// - `x`: `(B, n·q)`; `rules`: `(n, n, n)`; `blocks`: `(n, p, q)`; output `(B, n·p)`.
///
/// # Panics
/// If the shapes do not fit together.
#[track_caller]
pub fn factored_matmul(x: Tensor<2>, rules: Tensor<3>, blocks: Tensor<3>) -> Tensor<2> {
    let (n, p, q) = sizes(&rules, &blocks);
    let [b, d] = x.dims();
    assert_eq!(
        d,
        n * q,
        "PHM: input of shape {:?} does not fit blocks of shape {:?} (last axis must be n·d/n = {})",
        x.dims(),
        blocks.dims(),
        n * q
    );
    if q <= p {
        // Mix first: Z[(i,r), (b,j)] = Σ_c A[i,r,c] X[b,c,j].
        let xc: Tensor<2> = x.reshape([b, n, q]).permute([1, 0, 2]).reshape([n, b * q]);
        let z: Tensor<4> = rules.reshape([n * n, n]).matmul(xc).reshape([n, n, b, q]);
        // Y[(r,b), o] = Σ_(i,j) Z[(r,b), (i,j)] S[i,o,j].
        let z: Tensor<2> = z.permute([1, 2, 0, 3]).reshape([n * b, n * q]);
        let s: Tensor<2> = blocks.permute([0, 2, 1]).reshape([n * q, p]);
        let y: Tensor<3> = z.matmul(s).reshape([n, b, p]);
        y.permute([1, 0, 2]).reshape([b, n * p])
    } else {
        // Blocks first: T[(b,c), (i,o)] = Σ_j X[b,c,j] S[i,o,j].
        let s: Tensor<2> = blocks.reshape([n * p, q]).transpose();
        let t: Tensor<4> = x.reshape([b * n, q]).matmul(s).reshape([b, n, n, p]);
        // Y[r, (b,o)] = Σ_(i,c) A[i,r,c] T[(i,c), (b,o)].
        let t: Tensor<2> = t.permute([2, 1, 0, 3]).reshape([n * n, b * p]);
        let a: Tensor<2> = rules.permute([1, 0, 2]).reshape([n, n * n]);
        let y: Tensor<3> = a.matmul(t).reshape([n, b, p]);
        y.permute([1, 0, 2]).reshape([b, n * p])
    }
}

/// `Y = X Wᵀ` on the last axis of an input of any rank `D ≥ 1`, by `path` (resolved with
/// the number of rows, the product of the leading axes).
///
/// # Shapes
/// - `x`: `(…, n·q)`; `rules`: `(n, n, n)`; `blocks`: `(n, p, q)`; output `(…, n·p)`.
///
/// # Panics
/// If the shapes do not fit together.
#[track_caller]
pub fn phm_product<const D: usize>(
    x: Tensor<D>,
    rules: Tensor<3>,
    blocks: Tensor<3>,
    path: PhmPath,
) -> Tensor<D> {
    let (n, p, q) = sizes(&rules, &blocks);
    let dims = x.dims();
    let d = dims[D - 1];
    assert_eq!(
        d,
        n * q,
        "PHM: input of shape {dims:?} does not fit blocks of shape {:?} (last axis must be {})",
        blocks.dims(),
        n * q
    );
    let rows: usize = dims[..D - 1].iter().product();
    let x2: Tensor<2> = x.reshape([rows, d]);
    let y = match path.resolve(rows, n, d, n * p) {
        PhmPath::Factored => factored_matmul(x2, rules, blocks),
        _ => x2.matmul(build_weight(rules, blocks).transpose()),
    };
    let mut out = dims;
    out[D - 1] = n * p;
    y.reshape(out)
}

/// Factorized rules `A[i, r, c] = a[i, r] · b[i, c]` (Compacter's rank-one rules).
///
/// # Shapes
/// - `left`, `right`: `(n, n)`; output `(n, n, n)`.
///
/// # Panics
/// If the factors are not both `(n, n)`.
#[track_caller]
pub fn factorized_rules(left: Tensor<2>, right: Tensor<2>) -> Tensor<3> {
    let [n, m] = left.dims();
    assert!(
        n == m && right.dims() == [n, n],
        "factorized rules: factors of shapes {:?} and {:?} are not both (n, n)",
        left.dims(),
        right.dims()
    );
    left.unsqueeze_dim::<3>(2) * right.unsqueeze_dim::<3>(1)
}

/// Low-rank blocks `S_i = U_i V_iᵀ`.
///
/// # Shapes
/// - `u`: `(n, p, r)`; `v`: `(n, q, r)`; output `(n, p, q)`.
///
/// # Panics
/// If the factors' first or last axes differ.
#[track_caller]
pub fn low_rank_blocks(u: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
    let ([n, _, r], [nv, _, rv]) = (u.dims(), v.dims());
    assert!(
        n == nv && r == rv,
        "low-rank blocks: U of shape {:?} and V of shape {:?} do not fit ((n, k/n, r), (n, d/n, r))",
        u.dims(),
        v.dims()
    );
    u.matmul(v.swap_dims(1, 2))
}
