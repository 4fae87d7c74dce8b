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
//! Costs are in units of one multiply-add at full GEMM speed, with the constants of a
//! [`CostModel`] (fields in brackets; the default is fitted to the bench report on a 2-core
//! x86-64 machine, `BENCHMARKS.md`, and [`set_cost_model`] replaces it):
//!
//! ```text
//!     GEMM with m rows:   B·k·d · (1 + [gemm_half_rows]/m)      (short products run below peak)
//!                         + [pack] · (weights it multiplies by)  (packed on every call)
//!     batch 1 (memory):   materialized k·d · [load],
//!                         factored (k·d/n) · ([factored_load] + [factored_load_per_n]·n)
//!     factored extra:     B · ([call] + [mix] · n²·min(k, d))   (the per-sample mixing)
//!     materialized extra: [build] · k·d per pass when W must be built (permutations, dW)
//!     memory:             Auto never picks materialized when its buffers exceed
//!                         [max_materialized_bytes] (default 1 GiB): 3·k·d scalars in
//!                         training (W, dW, scratch), 2·k·d in inference without a
//!                         current W (W and scratch, for the call), none with one
//! ```
//!
//! The materialized product runs with `m = B` rows, the factored one with `m = B·n` (it
//! multiplies all `n` input segments at once, which is why it can beat even a dense layer at
//! batch 32). Inference counts one pass, training three (forward, `dX`, `dW` or `dS`); in
//! training `W` is always stale (every step changes the parameters). Inference (`&self`)
//! uses a current cached `W` (see `PhmLinear::cache_weight`) at no build cost; without one,
//! the materialized kernel builds `W` in a temporary for the call (taken from and given back
//! to the [buffer pool](super::buffer_pool), never cached), which pays at large batch: a
//! `tiny_lm` block's 128 × 128 projections at 1024 rows ran 2.3× slower factored. Auto picks
//! the cheaper kernel; [`Strategy::Materialized`] and [`Strategy::Factored`] force one, and
//! only [`Strategy::Factored`] guarantees that no `k × d` array is ever held.
//!
//! ```
//! use phm_nn::kernels::strategy::{Kernel, Mode, Strategy};
//! use phm_nn::PhmShape;
//! let shape = PhmShape::new(4096, 4096, 4)?;
//! // Batch-1 inference does not build the 4096 × 4096 weight:
//! assert_eq!(Strategy::Auto.resolve(shape, 1, false, Mode::Inference), Kernel::Factored);
//! // a small layer at a large batch does, for the call:
//! let small = PhmShape::new(128, 128, 4)?;
//! assert_eq!(Strategy::Auto.resolve(small, 1024, false, Mode::Inference), Kernel::Materialized);
//! // A forced strategy is obeyed:
//! assert_eq!(Strategy::Materialized.resolve(shape, 1, false, Mode::Training), Kernel::Materialized);
//! assert_eq!(Strategy::Materialized.resolve(shape, 1, false, Mode::Inference), Kernel::Materialized);
//! assert_eq!(Strategy::Factored.resolve(small, 1024, false, Mode::Inference), Kernel::Factored);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::sync::RwLock;

use crate::kernels::phm::PhmShape;

/// Which kernel a PHM layer uses; [`Strategy::Auto`] (the default) decides per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Pick the cheaper kernel per call with the cost model in the [module docs](self).
    #[default]
    Auto,
    /// Always multiply by `W`: training builds and caches it (whatever its size); the `&self`
    /// inference paths (`infer`, `infer_into`) use the cached `W` when it is current and
    /// otherwise build one for the call (a temporary from the buffer pool, not cached), unless
    /// that `W` and its scratch (`2·k·d` scalars) exceed
    /// [`CostModel::max_materialized_bytes`], where they run factored.
    Materialized,
    /// Never build `W`: no `k × d` array is ever held.
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

/// The constants of [`Strategy::Auto`]'s cost model, public so that a user can calibrate them
/// for a machine (see the [module docs](self) for the formulas, and `BENCHMARKS.md` for how to
/// fit them with the bench report). Costs are in units of one multiply-add at full GEMM speed.
///
/// [`CostModel::default`] holds constants fitted on a 2-core x86-64 machine with AVX-512;
/// [`set_cost_model`] replaces the model Auto uses for the whole process.
///
/// ```
/// use phm_nn::kernels::strategy::{set_cost_model, CostModel, Kernel, Mode, Strategy};
/// use phm_nn::PhmShape;
/// // Never let Auto build a weight whose training buffers exceed 64 MiB:
/// let model = CostModel { max_materialized_bytes: 64 << 20, ..CostModel::default() };
/// let shape = PhmShape::new(4096, 4096, 4)?; // 3 · 4096² · 4 bytes = 192 MiB of W, dW, scratch
/// assert_eq!(
///     Strategy::Auto.resolve_with(&model, shape, 256, false, Mode::Training, 4),
///     Kernel::Factored
/// );
/// set_cost_model(model); // from now on for every layer's Auto
/// # set_cost_model(CostModel::default());
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// Rows at which a GEMM runs at half its peak rate (`cost ∝ 1 + gemm_half_rows / m`).
    pub gemm_half_rows: f64,
    /// Cost per weight entry of packing the weight a GEMM multiplies by, once per call and
    /// pass: the backend copies it into its tile layout whatever the batch, so a short GEMM
    /// with a large weight pays it on few rows (materialized packs `k·d` entries, factored
    /// `k·d/n`).
    pub pack: f64,
    /// Batch-1 materialized cost per weight entry (a memory-bound matrix–vector product).
    pub load: f64,
    /// Batch-1 factored cost per block entry is `factored_load + factored_load_per_n · n`.
    pub factored_load: f64,
    /// See [`factored_load`](Self::factored_load).
    pub factored_load_per_n: f64,
    /// Fixed cost of one sample's mixing products (call overhead).
    pub call: f64,
    /// Cost of one mixing multiply-add relative to a GEMM multiply-add: the mixing products
    /// are short (`(n × n²)·(n² × k/n)` per sample) and run far below the GEMM peak.
    pub mix: f64,
    /// Cost per weight entry of building `W` (forward) or mapping `dW` back (backward), per
    /// pass.
    pub build: f64,
    /// Memory budget of the materialized kernel, in bytes: Auto never picks it when its
    /// buffers would exceed this (default 1 GiB): in training `W`, `dW` and the rearrangement
    /// scratch (`3·k·d` scalars), in inference without a current `W` the temporary `W` and
    /// scratch (`2·k·d`). A forced [`Strategy::Materialized`] ignores it in training, not in
    /// inference. The same budget bounds the
    /// other large allocations a user asks for: `PhmLinear::cache_weight` (`k·d` scalars) and
    /// the growth of a language model's key/value cache (`TransformerLm::infer_step`), which
    /// return an error beyond it instead of aborting.
    pub max_materialized_bytes: u64,
}

impl Default for CostModel {
    /// The constants fitted with the bench report (`BENCHMARKS.md`), and a 1 GiB budget.
    fn default() -> Self {
        CostModel {
            gemm_half_rows: 16.0,
            pack: 60.0,
            load: 12.0,
            factored_load: 16.0,
            factored_load_per_n: 2.0,
            call: 40_000.0,
            mix: 8.0,
            build: 40.0,
            max_materialized_bytes: 1 << 30,
        }
    }
}

/// The model [`Strategy::Auto`] uses (`None`: the default).
static COST_MODEL: RwLock<Option<CostModel>> = RwLock::new(None);

/// The cost model [`Strategy::Auto`] uses now ([`CostModel::default`] unless
/// [`set_cost_model`] replaced it).
pub fn cost_model() -> CostModel {
    COST_MODEL
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_default()
}

/// Replaces the cost model [`Strategy::Auto`] uses, for every layer of the process.
pub fn set_cost_model(model: CostModel) {
    *COST_MODEL.write().unwrap_or_else(|e| e.into_inner()) = Some(model);
}

impl Strategy {
    /// The kernel this strategy uses for a batch of `batch` rows through a layer of `shape`,
    /// given whether the cached `W` is current, with the current [`cost_model`] and 4-byte
    /// scalars (`f32`) for the memory budget; [`resolve_with`](Self::resolve_with) takes both.
    pub fn resolve(
        self,
        shape: PhmShape,
        batch: usize,
        weight_current: bool,
        mode: Mode,
    ) -> Kernel {
        self.resolve_with(&cost_model(), shape, batch, weight_current, mode, 4)
    }

    /// [`resolve`](Self::resolve) with an explicit cost model and scalar size in bytes
    /// (`size_of::<F>()`).
    pub fn resolve_with(
        self,
        model: &CostModel,
        shape: PhmShape,
        batch: usize,
        weight_current: bool,
        mode: Mode,
        scalar_bytes: usize,
    ) -> Kernel {
        // Training holds W, dW and the rearrangement scratch (3·k·d scalars); inference
        // without a current W builds W and the scratch for the call (2·k·d).
        let (passes, stale, buffers) = match mode {
            Mode::Training => (3.0, true, 3),
            Mode::Inference if !weight_current => (1.0, true, 2),
            Mode::Inference => (1.0, false, 0),
        };
        let over_budget = (shape.out_features() as u128)
            * (shape.in_features() as u128)
            * buffers
            * scalar_bytes as u128
            > u128::from(model.max_materialized_bytes);
        match self {
            // A W built for one inference call stays within the budget even when forced: the
            // `&self` paths fall back to factored rather than fail to allocate.
            Strategy::Materialized if mode == Mode::Inference && over_budget => Kernel::Factored,
            Strategy::Materialized => Kernel::Materialized,
            Strategy::Factored => Kernel::Factored,
            Strategy::Auto if over_budget => Kernel::Factored,
            Strategy::Auto => {
                let (n, k, d) = (
                    shape.n() as f64,
                    shape.out_features() as f64,
                    shape.in_features() as f64,
                );
                let b = batch.max(1) as f64;
                let gemm = |rows: f64| b * k * d * (1.0 + model.gemm_half_rows / rows);
                let (mat_main, fact_main) = if batch <= 1 {
                    (
                        k * d * model.load,
                        k * d / n * (model.factored_load + model.factored_load_per_n * n),
                    )
                } else {
                    (
                        gemm(b) + model.pack * k * d,
                        gemm(b * n) + model.pack * k * d / n,
                    )
                };
                let build = if stale { k * d * model.build } else { 0.0 };
                let materialized = passes * (mat_main + build);
                let factored =
                    passes * (fact_main + b * (model.call + model.mix * n * n * k.min(d)));
                if factored <= materialized {
                    Kernel::Factored
                } else {
                    Kernel::Materialized
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 65536 × 65536 layer with n = 256 (16.8 M block entries, 67 MB in f32) must never
    /// train materialized: W alone would be 17 GB. Resolved only, nothing allocated.
    #[test]
    fn auto_respects_the_memory_budget() {
        let shape = PhmShape::new(65_536, 65_536, 256).unwrap();
        for batch in [1, 32, 256, 4096] {
            for bytes in [4, 8] {
                let model = CostModel::default();
                let kernel =
                    Strategy::Auto.resolve_with(&model, shape, batch, false, Mode::Training, bytes);
                assert_eq!(
                    kernel,
                    Kernel::Factored,
                    "batch {batch}, {bytes}-byte scalars"
                );
            }
            assert_eq!(
                Strategy::Auto.resolve(shape, batch, false, Mode::Training),
                Kernel::Factored
            );
        }
        // A budget large enough lets the cost alone decide (large batch: materialized).
        let roomy = CostModel {
            max_materialized_bytes: u64::MAX,
            ..CostModel::default()
        };
        let small = PhmShape::new(1024, 1024, 4).unwrap();
        assert_eq!(
            Strategy::Auto.resolve_with(&roomy, small, 4096, false, Mode::Training, 4),
            Kernel::Materialized
        );
        let tight = CostModel {
            max_materialized_bytes: 1 << 20,
            ..CostModel::default()
        };
        assert_eq!(
            Strategy::Auto.resolve_with(&tight, small, 4096, false, Mode::Training, 4),
            Kernel::Factored
        );
        // Forcing materialized ignores the budget in training, not for a W built for one
        // inference call (2·k·d scalars: 8 MiB here, over the 1 MiB budget); a cached W
        // costs inference nothing more.
        assert_eq!(
            Strategy::Materialized.resolve_with(&tight, small, 4096, false, Mode::Training, 4),
            Kernel::Materialized
        );
        for strategy in [Strategy::Auto, Strategy::Materialized] {
            assert_eq!(
                strategy.resolve_with(&tight, small, 4096, false, Mode::Inference, 4),
                Kernel::Factored,
                "{strategy:?}"
            );
            assert_eq!(
                strategy.resolve_with(&roomy, small, 4096, false, Mode::Inference, 4),
                Kernel::Materialized,
                "{strategy:?}"
            );
            assert_eq!(
                strategy.resolve_with(&tight, small, 4096, true, Mode::Inference, 4),
                Kernel::Materialized,
                "{strategy:?}"
            );
        }
        // The 65536² layer's W is never built for inference either.
        assert_eq!(
            Strategy::Materialized.resolve(shape, 4096, false, Mode::Inference),
            Kernel::Factored
        );
    }
}
