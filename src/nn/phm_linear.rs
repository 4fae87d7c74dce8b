//! The PHM layer: a dense layer whose weight is a sum of Kronecker products.
//!
//! ```text
//!     Y = X Wᵀ + 1 bᵀ,     W = Σ_{i=1..n} A_i ⊗ S_i
//!     X: (…, d)   A: (n, n, n)   S: (n, k/n, d/n)   W: (k, d)   b: (k)   Y: (…, k)
//! ```
//!
//! The layer acts on the last axis; leading axes (batch, time, …) become the rows `B` of the
//! products. The rules can be shared with other PHM layers of the same `n`
//! ([`PhmLinearConfig::init_shared`]): gradients from every layer accumulate into the one
//! tensor, which is counted, optimized and saved once.
//!
//! Trainable parameters: `n³ + k·d/n + k` (rules + blocks + bias) instead of `k·d + k`; with
//! fixed rules (an [`Algebra`]) the `n³` rule entries are frozen and not counted. `n = 1` is a
//! dense layer (`W = a·S_1`).
//!
//! Two kernels compute it ([`Strategy`]): the *materialized* one builds `W` (cached until a
//! parameter changes: an optimizer step, anything through `visit_params_mut`) and multiplies by
//! it; the *factored* one never forms `W` (see [`crate::kernels::strategy`] for the costs and the model
//! `Strategy::Auto` uses). Both give `dX`, `dA`, `dS`, `db` for `G = dL/dY`; gradients
//! accumulate until `zero_grad`.
//!
//! Inference: [`Module::infer`] takes `&self` and never caches `W` (where the cost model
//! prefers the materialized kernel it builds `W` for the call in pooled buffers;
//! [`Strategy::Factored`] never holds a `k × d` array); [`PhmLinear::infer_into`] writes into
//! a caller's buffer with a reusable [`Workspace`] and does not allocate once the workspace
//! has grown to the batch size and the buffer pool is warm.
//!
//! ```
//! use phm_nn::{algebra::Algebra, Module, PhmLinearConfig, Rule};
//! let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
//!
//! // A learned-rule PHM layer 1024 → 1024 with n = 4: 4³ + 1024·1024/4 + 1024 parameters.
//! let layer = PhmLinearConfig::new(1024, 1024, 4).init::<f32, _>(&mut rng)?;
//! assert_eq!(layer.num_parameters(), 64 + 262_144 + 1024);
//!
//! // A quaternion layer: the rules are fixed, so they are not counted.
//! let mut quat = PhmLinearConfig::new(8, 4, 4)
//!     .with_rule(Rule::Fixed(Algebra::Quaternion))
//!     .init::<f64, _>(&mut rng)?;
//! assert_eq!(quat.num_parameters(), 8 * 4 / 4 + 4);
//! let y = quat.forward(ndarray::ArrayD::ones(vec![2, 8]).view());
//! assert_eq!(y.shape(), &[2, 4]);
//! // Any leading axes: (B, T, in) → (B, T, out).
//! assert_eq!(quat.infer(ndarray::ArrayD::ones(vec![2, 3, 8]).view()).shape(), &[2, 3, 4]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{
    Array1, Array2, Array3, ArrayD, ArrayView2, ArrayView3, ArrayViewD, ArrayViewMut2,
    ArrayViewMut3, ArrayViewMutD, Ix1, Ix3,
};
use rand::Rng;

#[cfg(doc)]
use crate::algebra::Algebra;
use crate::error::{check_shape, PhmError, Result};
use crate::init::{Fans, Init};
use crate::kernels::buffer_pool;
use crate::kernels::factored;
use crate::kernels::gemm::{
    add_bias_grad, affine_backward, affine_forward_into, assert_cols, assert_same_shape,
    init_output, reuse,
};
use crate::kernels::phm::{accumulate_parts_grad, build_weight, build_weight_into, PhmShape};
use crate::kernels::shapes::{as_matrix, linear_output_shape, owned_matrix, unflatten, with_last};
use crate::kernels::strategy::{cost_model, Kernel, Mode, Strategy};
use crate::module::{Module, Param, SavedStates, StateStack};
use crate::nn::linear::bias_view;
use crate::nn::rules::Rule;
use crate::Float;

/// Configuration of a [`PhmLinear`] layer.
#[derive(Debug, Clone, PartialEq)]
pub struct PhmLinearConfig {
    /// Input width `d` (a multiple of `n`).
    pub in_features: usize,
    /// Output width `k` (a multiple of `n`).
    pub out_features: usize,
    /// Hypercomplex dimension `n ≥ 1`.
    pub n: usize,
    /// Whether the layer adds a bias (default `true`).
    pub bias: bool,
    /// Learned or fixed rules (default learned, [`Init::UnitFibers`]).
    pub rule: Rule,
    /// Block init, with the full layer's fans `(d, k)` (default [`Init::TorchLinear`]).
    pub block_init: Init,
    /// Bias init, with fans `(d, k)` (default [`Init::TorchLinear`]).
    pub bias_init: Init,
}

impl PhmLinearConfig {
    /// A `d → k` PHM layer with dimension `n`, learned rules, bias, and an init whose built `W`
    /// has the variance of PyTorch's `nn.Linear` default, `1/(3d)` (see [`crate::init`]).
    #[must_use]
    pub fn new(in_features: usize, out_features: usize, n: usize) -> Self {
        PhmLinearConfig {
            in_features,
            out_features,
            n,
            bias: true,
            rule: Rule::Learned(Init::UnitFibers),
            block_init: Init::TorchLinear,
            bias_init: Init::TorchLinear,
        }
    }

    /// Sets whether the layer has a bias.
    #[must_use]
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets the rule source (learned with an init, or fixed to an algebra).
    #[must_use]
    pub fn with_rule(mut self, rule: Rule) -> Self {
        self.rule = rule;
        self
    }

    /// Sets the block init.
    #[must_use]
    pub fn with_block_init(mut self, init: Init) -> Self {
        self.block_init = init;
        self
    }

    /// Sets the bias init.
    #[must_use]
    pub fn with_bias_init(mut self, init: Init) -> Self {
        self.bias_init = init;
        self
    }

    /// Builds the layer, drawing its parameters from `rng`.
    ///
    /// # Errors
    /// - [`PhmError::ZeroN`], [`PhmError::ZeroSize`], [`PhmError::NotDivisible`] for sizes that
    ///   do not fit `n` (e.g. `in_features 10 is not divisible by n = 4`);
    /// - [`PhmError::InvalidArgument`] for a fixed algebra whose dimension is not `n`, or an
    ///   invalid init.
    pub fn init<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<PhmLinear<F>> {
        let shape = PhmShape::new(self.in_features, self.out_features, self.n)?;
        let rules = self.new_rules(rng)?;
        self.init_rest(shape, rules, rng)
    }

    /// Builds a layer that **shares** `rules` (a handle from another layer's
    /// [`PhmLinear::rules_param`], or a tensor of your own, learned or frozen): gradients from
    /// every layer that shares it accumulate into it, and optimizers, counts and checkpoints
    /// see it once. [`rule`](Self::rule) is ignored; blocks and bias are drawn from `rng`.
    ///
    /// # Errors
    /// As [`init`](Self::init), and [`PhmError::ShapeMismatch`] if `rules` is not
    /// `(n, n, n)`.
    pub fn init_shared<F: Float, R: Rng + ?Sized>(
        &self,
        rules: &Param<F>,
        rng: &mut R,
    ) -> Result<PhmLinear<F>> {
        let shape = PhmShape::new(self.in_features, self.out_features, self.n)?;
        let (n, _, _) = shape.rules_dim();
        check_shape("rules", &[n, n, n], &rules.shape())?;
        self.init_rest(shape, rules.share(), rng)
    }

    /// A new rule tensor `(n, n, n)` for this config: learned (drawn with the rule init) or
    /// the fixed rules of an algebra (frozen); pass it to [`init_shared`](Self::init_shared)
    /// of every layer that should share it.
    ///
    /// # Errors
    /// As [`init`](Self::init).
    pub fn new_rules<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Param<F>> {
        let n = PhmShape::new(self.in_features, self.out_features, self.n)?.n();
        self.rule.sample(n, rng)
    }

    fn init_rest<F: Float, R: Rng + ?Sized>(
        &self,
        shape: PhmShape,
        rules: Param<F>,
        rng: &mut R,
    ) -> Result<PhmLinear<F>> {
        let (n, p, q) = shape.blocks_dim();
        let fans = Fans::new(self.in_features, self.out_features);
        let blocks = Param::new(self.block_init.sample(&[n, p, q], fans, rng)?);
        let bias = if self.bias {
            Some(Param::new(self.bias_init.sample(
                &[self.out_features],
                fans,
                rng,
            )?))
        } else {
            None
        };
        Ok(PhmLinear::assemble(shape, rules, blocks, bias))
    }
}

/// The built weight and the parameter versions it was built from.
#[derive(Debug, Clone)]
struct WeightCache<F> {
    versions: (u64, u64),
    weight: Array2<F>,
}

/// What one training forward saved for its backward pass.
#[derive(Debug, Clone)]
struct Saved<F> {
    /// The input as a matrix `(B, d)` (standard layout) and its leading axes.
    x: Array2<F>,
    lead: Vec<usize>,
    kernel: SavedKernel<F>,
}

/// The kernel a training forward used, with what only that kernel needs.
#[derive(Debug, Clone)]
enum SavedKernel<F> {
    Materialized,
    Factored {
        order: factored::Order,
        mixing: Array2<F>,
        /// The intermediate, `T` `(B·n, k)` or `Z` `(B·n, d)`.
        t: Array2<F>,
    },
}

/// Scratch arrays reused from one backward pass to the next; spent inputs and intermediates
/// go back to the crate's [buffer pool](crate::kernels::buffer_pool).
#[derive(Debug, Clone)]
struct Buffers<F> {
    /// Factored: the gradient of the intermediate.
    dt: Array2<F>,
    /// Materialized: `dW` `(k, d)` and the rearrangement scratch `(n², k·d/n²)`.
    dw: Array2<F>,
    rearranged: Array2<F>,
}

impl<F: Float> Default for Buffers<F> {
    fn default() -> Self {
        let empty = || Array2::zeros((0, 0));
        Buffers {
            dt: empty(),
            dw: empty(),
            rearranged: empty(),
        }
    }
}

/// Reusable scratch memory for [`PhmLinear::infer_into`]: grows to the largest batch seen and
/// is then reused without allocating. One workspace can serve any number of layers.
#[derive(Debug, Clone, Default)]
pub struct Workspace<F> {
    t: Vec<F>,
    mixing: Vec<F>,
}

impl<F: Float> Workspace<F> {
    /// An empty workspace.
    #[must_use]
    pub fn new() -> Self {
        Workspace {
            t: Vec::new(),
            mixing: Vec::new(),
        }
    }

    /// Scalars currently held (for checking that memory stays `O(B·n·k)`).
    pub fn capacity(&self) -> usize {
        self.t.capacity() + self.mixing.capacity()
    }
}

/// Grows `buf` to at least `len` zeros and returns its first `len` entries.
fn scratch<F: Float>(buf: &mut Vec<F>, len: usize) -> &mut [F] {
    if buf.len() < len {
        buf.resize(len, F::zero());
    }
    &mut buf[..len]
}

/// A PHM layer `Y = X (Σ A_i ⊗ S_i)ᵀ + b`; see the [module docs](self).
#[derive(Clone)]
pub struct PhmLinear<F: Float> {
    shape: PhmShape,
    rules: Param<F>,
    blocks: Param<F>,
    bias: Option<Param<F>>,
    strategy: Strategy,
    cache: Option<WeightCache<F>>,
    saved: SavedStates<Saved<F>>,
    buffers: Buffers<F>,
}

impl<F: Float> PhmLinear<F> {
    fn assemble(
        shape: PhmShape,
        rules: Param<F>,
        blocks: Param<F>,
        bias: Option<Param<F>>,
    ) -> Self {
        PhmLinear {
            shape,
            rules,
            blocks,
            bias,
            strategy: Strategy::Auto,
            cache: None,
            saved: SavedStates::new(),
            buffers: Buffers::default(),
        }
    }

    /// A layer with the given rules `(n, n, n)`, blocks `(n, k/n, d/n)` and optional bias `(k)`.
    /// The rules are trainable; call [`set_rules_trainable(false)`](Self::set_rules_trainable)
    /// to fix them.
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`] (naming the shapes) if the tensors do not fit together;
    /// [`PhmError::ZeroN`]/[`PhmError::ZeroSize`] for empty tensors.
    pub fn from_parts(
        rules: Array3<F>,
        blocks: Array3<F>,
        bias: Option<Array1<F>>,
    ) -> Result<Self> {
        Self::from_params(
            Param::new(rules.into_dyn()),
            Param::new(blocks.into_dyn()),
            bias.map(|b| Param::new(b.into_dyn())),
        )
    }

    /// A layer from parameter handles (e.g. rules [`share`](Param::share)d with other layers):
    /// rules `(n, n, n)`, blocks `(n, k/n, d/n)`, optional bias `(k)`.
    ///
    /// # Errors
    /// As [`from_parts`](Self::from_parts).
    pub fn from_params(rules: Param<F>, blocks: Param<F>, bias: Option<Param<F>>) -> Result<Self> {
        let shape = PhmShape::from_parts(&rules.shape(), &blocks.shape())?;
        if let Some(b) = &bias {
            check_shape("bias", &[shape.out_features()], &b.shape())?;
        }
        Ok(PhmLinear::assemble(shape, rules, blocks, bias))
    }

    /// The layer's sizes (`n`, `in_features`, `out_features`).
    pub fn shape(&self) -> PhmShape {
        self.shape
    }

    /// A copy of the rules `A`, shape `(n, n, n)`.
    pub fn rules(&self) -> Array3<F> {
        dim3(self.rules.read().value()).to_owned()
    }

    /// A copy of the blocks `S`, shape `(n, k/n, d/n)`.
    pub fn blocks(&self) -> Array3<F> {
        dim3(self.blocks.read().value()).to_owned()
    }

    /// A copy of the bias, if any.
    pub fn bias(&self) -> Option<Array1<F>> {
        self.bias
            .as_ref()
            .map(|b| bias_view(b.read().value()).to_owned())
    }

    /// The rules' handle: [`share`](Param::share) it, or pass it to
    /// [`PhmLinearConfig::init_shared`], to let other layers use the same rules.
    pub fn rules_param(&self) -> &Param<F> {
        &self.rules
    }

    /// The blocks' handle.
    pub fn blocks_param(&self) -> &Param<F> {
        &self.blocks
    }

    /// The bias's handle, if any.
    pub fn bias_param(&self) -> Option<&Param<F>> {
        self.bias.as_ref()
    }

    /// Whether the rules are learned (`true`) or fixed.
    pub fn rules_trainable(&self) -> bool {
        self.rules.is_trainable()
    }

    /// Makes the rules learned (`true`) or fixed (`false`) — for every layer sharing them.
    pub fn set_rules_trainable(&self, trainable: bool) {
        self.rules.set_trainable(trainable);
    }

    /// Makes the blocks learned (`true`) or fixed (`false`).
    pub fn set_blocks_trainable(&self, trainable: bool) {
        self.blocks.set_trainable(trainable);
    }

    /// The kernel strategy (default [`Strategy::Auto`]).
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Forces a kernel, or lets the cost model choose ([`Strategy::Auto`]).
    pub fn set_strategy(&mut self, strategy: Strategy) {
        self.strategy = strategy;
    }

    /// Builder form of [`set_strategy`](Self::set_strategy).
    #[must_use]
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The kernel a call with `batch` rows would use now (training or inference).
    pub fn kernel_for(&self, batch: usize, mode: Mode) -> Kernel {
        self.strategy.resolve_with(
            &cost_model(),
            self.shape,
            batch,
            self.weight_is_current(),
            mode,
            std::mem::size_of::<F>(),
        )
    }

    /// Whether a built `W` is cached and matches the current parameters.
    pub fn weight_is_current(&self) -> bool {
        self.cached_weight().is_some()
    }

    /// The cached `W`, if it matches the current parameters.
    pub(crate) fn cached_weight(&self) -> Option<&Array2<F>> {
        self.cache
            .as_ref()
            .filter(|c| c.versions == self.versions())
            .map(|c| &c.weight)
    }

    /// Builds and caches `W` now (`k·d` values), so that the `&self` inference paths can use
    /// it: `infer` never caches `W` itself (it builds a temporary one per call where the
    /// materialized kernel is cheaper), and after a training forward that Auto ran factored
    /// there is no cached `W`. Worth it before large-batch inference, where one plain GEMM
    /// with `W` is the fastest kernel (see `BENCHMARKS.md`); at small batch Auto keeps using
    /// the factored kernel anyway. On a whole model:
    /// `module::for_each_mut::<F, PhmLinear<F>>(&mut model, &mut |_, l| { l.cache_weight().unwrap(); })`.
    ///
    /// # Errors
    /// [`PhmError::TooLarge`] if `W` (`k·d` scalars) exceeds the memory budget of the cost
    /// model ([`CostModel::max_materialized_bytes`](crate::kernels::strategy::CostModel::max_materialized_bytes),
    /// 1 GiB by default; [`set_cost_model`](crate::kernels::strategy::set_cost_model) raises
    /// it): a `2¹⁷ × 2¹⁷` layer would need 64 GiB. Nothing is cached then, and inference stays
    /// on the factored kernel.
    pub fn cache_weight(&mut self) -> Result<()> {
        let budget = cost_model().max_materialized_bytes;
        let bytes = (self.shape.out_features() as u128)
            * (self.shape.in_features() as u128)
            * std::mem::size_of::<F>() as u128;
        if bytes > u128::from(budget) {
            return Err(PhmError::TooLarge {
                what: "cached weight",
                reason: format!(
                    "W of {} × {} needs {bytes} bytes, more than the memory budget of {budget} \
                     bytes (CostModel::max_materialized_bytes)",
                    self.shape.out_features(),
                    self.shape.in_features()
                ),
            });
        }
        self.current_weight();
        Ok(())
    }

    /// Drops the cached `W`, the saved forward states and the reusable training buffers,
    /// releasing their memory (`W` and `dW` hold `k·d` values each).
    pub fn clear_cache(&mut self) {
        self.cache = None;
        self.saved.clear();
        self.buffers = Buffers::default();
    }

    /// The built weight `W = Σ A_i ⊗ S_i`, shape `(out, in)` (a copy of the cache when it is
    /// current).
    pub fn weight(&self) -> Array2<F> {
        match self.cached_weight() {
            Some(w) => w.clone(),
            None => {
                let (a, s) = (self.rules.read(), self.blocks.read());
                build_weight(dim3(a.value()), dim3(s.value()))
                    .expect("a layer's rules and blocks fit together")
            }
        }
    }

    fn versions(&self) -> (u64, u64) {
        (self.rules.version(), self.blocks.version())
    }

    /// Rebuilds the cached weight if a parameter changed since it was built; returns it.
    pub(crate) fn current_weight(&mut self) -> &Array2<F> {
        let versions = self.versions();
        let shape = self.shape;
        let cache = self.cache.get_or_insert_with(|| WeightCache {
            versions: (0, 0),
            weight: Array2::zeros(shape.weight_dim()),
        });
        if cache.versions != versions {
            let (a, s) = (self.rules.read(), self.blocks.read());
            build_weight_into(
                shape,
                dim3(a.value()),
                dim3(s.value()),
                cache.weight.view_mut(),
                &mut self.buffers.rearranged,
            );
            cache.versions = versions;
        }
        &cache.weight
    }

    /// Inference into a caller's buffer: `y ← X Wᵀ + b` for a matrix `x` `(B, d)`, allocating
    /// nothing once `workspace` has grown to this batch size and the
    /// [buffer pool](crate::kernels::buffer_pool) holds this layer's buffers (for `x` in
    /// standard layout; other layouts are copied). The kernel is the layer's
    /// [`Strategy`] for this batch ([`kernel_for`](Self::kernel_for) with
    /// [`Mode::Inference`]): the cached `W` when it is current; else, materialized, a `W`
    /// built for this call in pooled buffers (`2·k·d` values, never cached); else the factored
    /// kernel, which holds no `k × d` values ([`Strategy::Factored`] forces it).
    ///
    /// # Panics
    /// If `x` is not `(batch, in_features)`, or `y` is not `(batch, out_features)` in standard
    /// layout.
    #[track_caller]
    pub fn infer_into(
        &self,
        x: ArrayView2<'_, F>,
        mut y: ArrayViewMut2<'_, F>,
        workspace: &mut Workspace<F>,
    ) {
        assert_cols(
            "PhmLinear::infer_into",
            "input",
            x.shape(),
            self.shape.in_features(),
        );
        assert_same_shape(
            "PhmLinear::infer_into",
            "output",
            y.shape(),
            &[x.nrows(), self.shape.out_features()],
        );
        assert!(
            y.is_standard_layout(),
            "PhmLinear::infer_into: output must be in standard (row-major) layout"
        );
        // The bias is read in place, under its lock: no copy per call.
        let bias = self.bias.as_ref().map(|b| b.read());
        let bias = bias.as_ref().map(|b| bias_view(b.value()));
        match (
            self.cached_weight(),
            self.kernel_for(x.nrows(), Mode::Inference),
        ) {
            (Some(w), Kernel::Materialized) => {
                affine_forward_into(&x, &w.view(), bias.as_ref(), y);
            }
            (None, Kernel::Materialized) => {
                // W for this call only, in buffers from the pool (both written whole).
                let (n, p, q) = self.shape.blocks_dim();
                let mut w = buffer_pool::for_overwrite(self.shape.weight_dim());
                let mut rearranged = buffer_pool::for_overwrite((n * n, p * q));
                let (a, s) = (self.rules.read(), self.blocks.read());
                build_weight_into(
                    self.shape,
                    dim3(a.value()),
                    dim3(s.value()),
                    w.view_mut(),
                    &mut rearranged,
                );
                affine_forward_into(&x, &w.view(), bias.as_ref(), y);
                buffer_pool::recycle(w);
                buffer_pool::recycle(rearranged);
            }
            (_, Kernel::Factored) => {
                let order = factored::Order::for_shape(self.shape);
                let n = self.shape.n();
                let mut mixing = ArrayViewMut2::from_shape(
                    order.mixing_dim(n),
                    scratch(&mut workspace.mixing, n.pow(3)),
                )
                .expect("scratch has n³ entries");
                let (a, s) = (self.rules.read(), self.blocks.read());
                factored::mixing_matrix_into(order, dim3(a.value()), mixing.view_mut());
                let dim = order.intermediate_dim(self.shape, x.nrows());
                let t = ArrayViewMut2::from_shape(dim, scratch(&mut workspace.t, dim.0 * dim.1))
                    .expect("scratch has room for the intermediate");
                let beta = init_output(&mut y, bias.as_ref());
                let x = x.as_standard_layout();
                factored::forward(
                    self.shape,
                    order,
                    mixing.view(),
                    dim3(s.value()),
                    x.view(),
                    t,
                    y,
                    beta,
                );
            }
        }
    }

    /// Training forward on a matrix `x` `(B, d)` (standard layout): returns `Y` and what the
    /// backward pass needs.
    fn forward_matrix(&mut self, x: Array2<F>, lead: Vec<usize>) -> (Array2<F>, Saved<F>) {
        let (batch, k) = (x.nrows(), self.shape.out_features());
        // Written whole below (the bias or `beta = 0`, then the product).
        let mut y = buffer_pool::for_overwrite((batch, k));
        // A second handle to the bias, read in place (no copy) while `self` is borrowed mutably.
        let bias_param = self.bias.as_ref().map(Param::share);
        let bias_guard = bias_param.as_ref().map(|b| b.read());
        let bias = bias_guard.as_ref().map(|b| bias_view(b.value()));
        let kernel = match self.kernel_for(batch, Mode::Training) {
            Kernel::Materialized => {
                let w = self.current_weight();
                affine_forward_into(&x.view(), &w.view(), bias.as_ref(), y.view_mut());
                SavedKernel::Materialized
            }
            Kernel::Factored => {
                let order = factored::Order::for_shape(self.shape);
                let (a, s) = (self.rules.read(), self.blocks.read());
                let mixing = factored::mixing_matrix(order, dim3(a.value()));
                let beta = init_output(&mut y.view_mut(), bias.as_ref());
                let mut t = buffer_pool::for_overwrite(order.intermediate_dim(self.shape, batch));
                factored::forward(
                    self.shape,
                    order,
                    mixing.view(),
                    dim3(s.value()),
                    x.view(),
                    t.view_mut(),
                    y.view_mut(),
                    beta,
                );
                SavedKernel::Factored { order, mixing, t }
            }
        };
        (y, Saved { x, lead, kernel })
    }

    /// Backward for one saved forward; `g` is `(B, k)`.
    fn backward_matrix(&mut self, saved: Saved<F>, g: ArrayView2<'_, F>) -> Array2<F> {
        let shape = self.shape;
        if let Some(b) = &self.bias {
            let mut b = b.write();
            if b.is_trainable() {
                let db = b
                    .grad_mut()
                    .into_dimensionality::<Ix1>()
                    .expect("bias is 1-D");
                add_bias_grad(Some(db), &g);
            }
        }
        let rules_trainable = self.rules.is_trainable();
        let blocks_trainable = self.blocks.is_trainable();
        let needs_parts = rules_trainable || blocks_trainable;
        let Saved { x, kernel, .. } = saved;
        let dx = match kernel {
            SavedKernel::Materialized => {
                self.current_weight();
                let w = &self.cache.as_ref().expect("weight was just built").weight;
                let buffers = &mut self.buffers;
                let dw = needs_parts.then(|| reuse(&mut buffers.dw, shape.weight_dim()).view_mut());
                // dW is scratch here: overwrite it (beta 0) instead of accumulating.
                let dx = affine_backward(&x.view(), &w.view(), &g, dw, F::zero());
                if needs_parts {
                    add_weight_grad_to_parts(
                        &self.rules,
                        &self.blocks,
                        shape,
                        buffers.dw.view(),
                        &mut buffers.rearranged,
                    );
                }
                dx
            }
            SavedKernel::Factored { order, mixing, t } => {
                let buffers = &mut self.buffers;
                let dt = reuse(&mut buffers.dt, t.dim());
                // `factored::backward` writes every entry of `dX`.
                let mut dx = buffer_pool::for_overwrite(x.raw_dim());
                let mut a = self.rules.write();
                let mut s = self.blocks.write();
                let (_, da) = a.value_and_grad_mut();
                let (s_value, ds) = s.value_and_grad_mut();
                factored::backward(
                    shape,
                    order,
                    mixing.view(),
                    dim3(s_value),
                    x.view(),
                    t.view(),
                    g,
                    dt.view_mut(),
                    dx.view_mut(),
                    rules_trainable.then(|| dim3_mut(da)),
                    blocks_trainable.then(|| dim3_mut(ds)),
                );
                drop((a, s));
                buffer_pool::recycle(t);
                dx
            }
        };
        buffer_pool::recycle(x);
        dx
    }
}

/// A PHM parameter (`A` or `S`) as the 3-D array it is.
pub(crate) fn dim3<F>(v: ArrayViewD<'_, F>) -> ArrayView3<'_, F> {
    v.into_dimensionality::<Ix3>().expect("PHM tensors are 3-D")
}

/// [`dim3`], mutable.
pub(crate) fn dim3_mut<F>(v: ArrayViewMutD<'_, F>) -> ArrayViewMut3<'_, F> {
    v.into_dimensionality::<Ix3>().expect("PHM tensors are 3-D")
}

/// Adds to the gradients of the trainable ones of `rules` (`A`) and `blocks` (`S`) what a
/// gradient `dw` of the built weight `W = Σ A_i ⊗ S_i` implies (`dA`, `dS` through Van
/// Loan's rearrangement; `scratch` is reused between calls). The materialized backward of
/// [`PhmLinear`] and of the PHM convolutions (`dK̂`) both end here.
pub(crate) fn add_weight_grad_to_parts<F: Float>(
    rules: &Param<F>,
    blocks: &Param<F>,
    shape: PhmShape,
    dw: ArrayView2<'_, F>,
    scratch: &mut Array2<F>,
) {
    let (rules_trainable, blocks_trainable) = (rules.is_trainable(), blocks.is_trainable());
    if !(rules_trainable || blocks_trainable) {
        return;
    }
    let mut a = rules.write();
    let mut s = blocks.write();
    let (a, da) = a.value_and_grad_mut();
    let (s, ds) = s.value_and_grad_mut();
    accumulate_parts_grad(
        shape,
        dim3(a),
        dim3(s),
        dw,
        rules_trainable.then(|| dim3_mut(da)),
        blocks_trainable.then(|| dim3_mut(ds)),
        scratch,
    );
}

impl<F: Float> Module<F> for PhmLinear<F> {
    /// Training forward with the kernel [`Strategy`] picks for [`Mode::Training`].
    ///
    /// # Panics
    /// If the last axis of `x` is not `in_features`.
    #[track_caller]
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        // The saved input is a copy: the owned pass on it.
        self.forward_owned(buffer_pool::copy_of(&x))
    }

    /// Keeps `x` as the saved input (no copy).
    ///
    /// # Panics
    /// If the last axis of `x` is not `in_features`.
    #[track_caller]
    fn forward_owned(&mut self, x: ArrayD<F>) -> ArrayD<F> {
        let width = self.shape.in_features();
        let (xm, lead) = owned_matrix("PhmLinear::forward", "input", x, width);
        let (y, saved) = self.forward_matrix(xm, lead.clone());
        self.saved.push(saved);
        unflatten(y, &lead)
    }

    /// Backward through the kernel that forward used.
    ///
    /// # Panics
    /// If no forward pass is left to go back through, or `grad_output` is not
    /// `(…, out_features)` with the leading axes of that forward's input.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let saved = self.saved.pop("PhmLinear");
        let k = self.shape.out_features();
        assert_same_shape(
            "PhmLinear::backward",
            "grad_output",
            grad_output.shape(),
            &with_last(&saved.lead, k),
        );
        let lead = saved.lead.clone();
        let (g, _) = as_matrix("PhmLinear::backward", "grad_output", grad_output, k);
        let dx = self.backward_matrix(saved, g.view());
        unflatten(dx, &lead)
    }

    /// Inference through `&self`; never allocates `k × d` values (see
    /// [`infer_into`](PhmLinear::infer_into)).
    ///
    /// # Panics
    /// If the last axis of `x` is not `in_features`.
    #[track_caller]
    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (xm, lead) = as_matrix("PhmLinear::infer", "input", x, self.shape.in_features());
        // Written whole by `infer_into` (the bias or `beta = 0`, then the product).
        let mut y = buffer_pool::for_overwrite((xm.nrows(), self.shape.out_features()));
        self.infer_into(xm.view(), y.view_mut(), &mut Workspace::new());
        unflatten(y, &lead)
    }

    fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<F>)) {
        f("rules", &self.rules);
        f("blocks", &self.blocks);
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.saved)
    }

    /// Drops the saved states, giving their input arrays to the buffer pool.
    fn clear_saved(&mut self) {
        for s in self.saved.take_all() {
            buffer_pool::recycle(s.x);
        }
    }

    fn describe(&self) -> String {
        let rules = if self.rules.is_trainable() {
            "learned rules"
        } else {
            "fixed rules"
        };
        let bias = if self.bias.is_some() { "" } else { ", no bias" };
        format!(
            "PhmLinear({} → {}, n = {}, {rules}{bias})",
            self.shape.in_features(),
            self.shape.out_features(),
            self.shape.n()
        )
    }

    fn hyperparameters(&self) -> Vec<(String, String)> {
        let rules = if self.rules.is_trainable() {
            "learned"
        } else {
            "fixed"
        };
        vec![
            ("in_features".into(), self.shape.in_features().to_string()),
            ("out_features".into(), self.shape.out_features().to_string()),
            ("n".into(), self.shape.n().to_string()),
            ("rules".into(), rules.into()),
            ("bias".into(), self.bias.is_some().to_string()),
            ("strategy".into(), format!("{:?}", self.strategy)),
        ]
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        linear_output_shape(input, self.shape.in_features(), self.shape.out_features())
    }
}

impl<F: Float> std::fmt::Debug for PhmLinear<F> {
    /// The one-line description (`PhmLinear(…)`), not the arrays.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
