//! How a PHM layer computes its product: by building `W` (materialized) or never building it
//! (factored), chosen per call by a cost model.
//!
//! Both kernels compute the same `Y = X Wᵀ + b` and the same gradients to rounding; they differ
//! in what they cost beyond the `2·B·k·d` FLOPs every kernel (and a dense layer) spends:
//!
//! | kernel | extra work per training step (forward + backward) | extra memory |
//! |---|---|---|
//! | [`Kernel::Materialized`] | build `W` when a parameter changed (`2·n·k·d` FLOPs + a `k·d` permutation), map `dW` back (`4·n·k·d` FLOPs + a `k·d` permutation) | `W`, `dW`: `2·k·d` |
//! | [`Kernel::Factored`] | mixing with the rules, `3 × 2·B·n²·k` FLOPs in `3·B` small products | `T`, `dT`: `2·B·n·k` |
//!
//! With a current cached `W` (inference after training, or repeated forwards), the
//! materialized kernel costs nothing extra but still reads all `k·d` weights per call, while
//! the factored one reads only `k·d/n`; at small batch, where a product is memory-bound,
//! factored wins.
//!
//! # The cost model of [`Strategy::Auto`]
//! Measured on the machines we bench on (see `BENCHMARKS.md`), in units of one dense
//! multiply-add:
//!
//! ```text
//!     factored extra     ≈ passes · B · (n²·k·MIX + CALL)
//!     materialized extra ≈ stale · (n + PERM) · k·d · BUILD  +  small-batch penalty
//! ```
//!
//! where `passes` is 1 for inference and 3 for training, `stale` is 0 when the cached `W` is
//! current and 1 otherwise (always 1 in training, where every step changes the parameters),
//! and the small-batch penalty charges the materialized kernel for reading `k·d` instead of
//! `k·d/n` weights when `B` is below a few rows. Auto picks the cheaper kernel;
//! [`Strategy::Materialized`] and [`Strategy::Factored`] force one.
//!
//! ```
//! use phm_nn::strategy::{Kernel, Mode, Strategy};
//! use phm_nn::PhmShape;
//! let shape = PhmShape::new(4, 4096, 4096)?;
//! // Batch-1 inference never builds the 4096 × 4096 weight:
//! assert_eq!(Strategy::Auto.resolve(shape, 1, false, Mode::Inference), Kernel::Factored);
//! // A forced strategy is obeyed:
//! assert_eq!(Strategy::Materialized.resolve(shape, 1, false, Mode::Inference), Kernel::Materialized);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use crate::phm::PhmShape;

/// Which kernel a PHM layer uses; [`Strategy::Auto`] (the default) decides per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Pick the cheaper kernel per call with the cost model in the [module docs](self).
    #[default]
    Auto,
    /// Always build (and cache) `W`, then multiply by it.
    Materialized,
    /// Never build `W`.
    Factored,
}

/// A concrete kernel, as resolved from a [`Strategy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Build `W = Σ A_i ⊗ S_i` (cached until a parameter changes), then `Y = X Wᵀ`.
    Materialized,
    /// `Y` from `X`, `S` and `A` directly, never forming `W`.
    Factored,
}

/// What the product is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A forward pass that a backward pass and a parameter update will follow.
    Training,
    /// A forward pass alone.
    Inference,
}

/// Relative cost of one mixing multiply-add (small, strided products) vs a GEMM multiply-add.
const MIX: f64 = 4.0;
/// Fixed cost of the per-sample small products, in multiply-adds.
const CALL: f64 = 2_000.0;
/// Cost of building `W` (or mapping `dW` back) per `k·d` entry, per unit of `n + PERM`.
const BUILD: f64 = 2.0;
/// The permutations' share of the build, in units of `n`.
const PERM: f64 = 4.0;
/// Batch below which a product is memory-bound on the weights.
const MEMORY_BOUND_BATCH: usize = 8;
/// Cost of streaming one weight from memory, in multiply-adds.
const LOAD: f64 = 4.0;

impl Strategy {
    /// The kernel this strategy uses for a batch of `batch` rows through a layer of `shape`,
    /// given whether the cached `W` is current.
    pub fn resolve(
        self,
        shape: PhmShape,
        batch: usize,
        weight_current: bool,
        mode: Mode,
    ) -> Kernel {
        match self {
            Strategy::Materialized => Kernel::Materialized,
            Strategy::Factored => Kernel::Factored,
            Strategy::Auto => {
                let (n, k, d) = (
                    shape.n() as f64,
                    shape.out_features() as f64,
                    shape.in_features() as f64,
                );
                let b = batch as f64;
                let (passes, stale) = match mode {
                    Mode::Training => (3.0, 1.0),
                    Mode::Inference => (1.0, if weight_current { 0.0 } else { 1.0 }),
                };
                let factored = passes * b * (n * n * k * MIX + CALL);
                let mut materialized = stale * passes * (n + PERM) * k * d * BUILD;
                if batch < MEMORY_BOUND_BATCH {
                    materialized += LOAD * k * d * (1.0 - 1.0 / n);
                }
                if factored <= materialized {
                    Kernel::Factored
                } else {
                    Kernel::Materialized
                }
            }
        }
    }
}
