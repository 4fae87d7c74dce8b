//! How a PHM layer computes its product: by building `W` (materialized) or never building it
//! (factored), chosen per call by a cost model.
//!
//! Both kernels compute the same `Y = X Wᵀ + b` and the same gradients to rounding; they differ
//! in what they cost beyond the `2·B·k·d` FLOPs every kernel (and a dense layer) spends:
//!
//! | kernel | extra work per training step (forward + backward) | extra memory |
//! |---|---|---|
//! | [`Kernel::Materialized`] | build `W` when a parameter changed (`2·n·k·d` FLOPs + a `k·d` permutation), map `dW` back (`4·n·k·d` FLOPs + a `k·d` permutation) | `W`, `dW` and a rearrangement scratch: `3·k·d` (kept between steps; `clear_cache` frees them) |
//! | [`Kernel::Factored`] | mixing with the rules on the narrower side, `3 × 2·B·n²·min(k, d)` FLOPs in `3·B` small products | an intermediate and its gradient: `2·B·n·min(k, d)` |
//!
//! With a current cached `W` (inference after training, or repeated forwards), the
//! materialized kernel costs nothing extra but still reads all `k·d` weights per call, while
//! the factored one reads only `k·d/n`; at small batch, where a product is memory-bound,
//! factored wins.
//!
//! # The cost model of [`Strategy::Auto`]
//! Costs are in units of one multiply-add at full GEMM speed, with constants fitted to the
//! bench report on a 2-core x86-64 machine (`BENCHMARKS.md`):
//!
//! ```text
//!     GEMM with m rows:   B·k·d · (1 + 16/m)          (short products run below peak)
//!     batch 1 (memory):   materialized k·d · 12,   factored (k·d/n) · (16 + 2n)
//!     factored extra:     B · (40 000 + 3.5 · n²·min(k, d))   (the per-sample mixing)
//!     materialized extra: 40 · k·d per pass when W must be built (permutations, dW)
//! ```
//!
//! The materialized product runs with `m = B` rows, the factored one with `m = B·n` (it
//! multiplies all `n` input segments at once, which is why it can beat even a dense layer at
//! batch 32). Inference counts one pass, training three (forward, `dX`, `dW` or `dS`); in
//! training `W` is always stale (every step changes the parameters). Inference (`&self`)
//! never builds `W`, so there Auto weighs the two kernels only when a current `W` is cached
//! (see `PhmLinear::cache_weight`) and is factored otherwise. Auto picks the cheaper kernel;
//! [`Strategy::Materialized`] and [`Strategy::Factored`] force one.
//!
//! ```
//! use phm_nn::kernels::strategy::{Kernel, Mode, Strategy};
//! use phm_nn::PhmShape;
//! let shape = PhmShape::new(4096, 4096, 4)?;
//! // Batch-1 inference never builds the 4096 × 4096 weight:
//! assert_eq!(Strategy::Auto.resolve(shape, 1, false, Mode::Inference), Kernel::Factored);
//! // A forced strategy is obeyed (but inference never builds W):
//! assert_eq!(Strategy::Materialized.resolve(shape, 1, false, Mode::Training), Kernel::Materialized);
//! assert_eq!(Strategy::Materialized.resolve(shape, 1, true, Mode::Inference), Kernel::Materialized);
//! assert_eq!(Strategy::Materialized.resolve(shape, 1, false, Mode::Inference), Kernel::Factored);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use crate::kernels::phm::PhmShape;

/// Which kernel a PHM layer uses; [`Strategy::Auto`] (the default) decides per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Pick the cheaper kernel per call with the cost model in the [module docs](self).
    #[default]
    Auto,
    /// Always build (and cache) `W`, then multiply by it. The `&self` inference paths
    /// (`infer`, `infer_into`) never build `W`: there this means "use the cached `W` when it
    /// is current", and the factored kernel otherwise.
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

/// Rows at which a GEMM runs at half its peak rate (`cost ∝ 1 + GEMM_HALF_ROWS / m`).
const GEMM_HALF_ROWS: f64 = 16.0;
/// Batch-1 materialized cost per weight read (a memory-bound matrix–vector product).
const LOAD: f64 = 12.0;
/// Batch-1 factored cost per block entry is `FACTORED_LOAD + FACTORED_LOAD_PER_N · n`.
const FACTORED_LOAD: f64 = 16.0;
const FACTORED_LOAD_PER_N: f64 = 2.0;
/// Fixed cost of one sample's mixing products.
const CALL: f64 = 40_000.0;
/// Cost of one mixing multiply-add relative to a GEMM multiply-add.
const MIX: f64 = 3.5;
/// Cost per weight entry of building `W` (forward) or mapping `dW` back (backward), per pass.
const BUILD: f64 = 40.0;

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
            // Inference never builds W: without a current one, only factored remains.
            Strategy::Materialized if mode == Mode::Inference && !weight_current => {
                Kernel::Factored
            }
            Strategy::Materialized => Kernel::Materialized,
            Strategy::Factored => Kernel::Factored,
            Strategy::Auto => {
                let (n, k, d) = (
                    shape.n() as f64,
                    shape.out_features() as f64,
                    shape.in_features() as f64,
                );
                let b = batch.max(1) as f64;
                let (passes, stale) = match mode {
                    Mode::Training => (3.0, true),
                    Mode::Inference if !weight_current => return Kernel::Factored,
                    Mode::Inference => (1.0, false),
                };
                let gemm = |rows: f64| b * k * d * (1.0 + GEMM_HALF_ROWS / rows);
                let (mat_main, fact_main) = if batch <= 1 {
                    (
                        k * d * LOAD,
                        k * d / n * (FACTORED_LOAD + FACTORED_LOAD_PER_N * n),
                    )
                } else {
                    (gemm(b), gemm(b * n))
                };
                let build = if stale { k * d * BUILD } else { 0.0 };
                let materialized = passes * (mat_main + build);
                let factored = passes * (fact_main + b * (CALL + MIX * n * n * k.min(d)));
                if factored <= materialized {
                    Kernel::Factored
                } else {
                    Kernel::Materialized
                }
            }
        }
    }
}
