//! The low-rank PHM layer (LPHM, Compacter): a PHM layer whose blocks are low-rank products.
//!
//! ```text
//!     Y = X Wᵀ + 1 bᵀ,     W = Σ_{i=1..n} A_i ⊗ (U_i V_iᵀ)
//!     X: (…, d)   A: (n, n, n)   U: (n, k/n, r)   V: (n, d/n, r)   b: (k)   Y: (…, k)
//! ```
//!
//! Parameters (each formula checked below):
//!
//! | variant                               | weights                  |
//! |---------------------------------------|--------------------------|
//! | dense                                 | `k·d`                    |
//! | PHM ([`PhmLinear`](crate::PhmLinear)) | `n³ + k·d/n`             |
//! | LPHM, full rules                      | `n³ + r·(k + d)`         |
//! | LPHM, factorized rules                | `2·n² + r·(k + d)`       |
//! | LPHM, fixed (algebra) rules           | `r·(k + d)` trainable    |
//! | rules shared by `L` layers            | rules counted once       |
//!
//! plus `k` for the bias (`r·(k + d)` is `n·r·(k + d)/n`: `n` blocks of `(k/n + d/n)·r`).
//!
//! The rules come from a [`PhmRules`]: full or factorized (`A_i = a_i b_iᵀ`), learned or
//! fixed, and shareable with any number of layers of the same `n`
//! ([`LphmLinearConfig::init_shared`]). Two kernels compute the layer (see
//! [`crate::kernels::low_rank`] for their costs and the rule [`Strategy::Auto`] applies):
//! the factored one never forms `S_i` or `W`; the materialized one builds `W` for each call
//! (no cache: it only pays at a sizeable part of the full rank). Both give exact `dX`, `dA`,
//! `dU`, `dV`, `db`; the factored kernel reuses its scratch and saved-state arrays from step
//! to step.
//! A rank `r ≥ min(k, d)/n` is allowed and is as expressive as a full PHM layer.
//!
//! Init: `U`, `V` entries `N(0, σ²)` with `σ⁴ = 1/(3·d·r)`; since every rule source here has
//! `Σ_i A_i[r,c]² = 1` (exactly for unit-fiber and algebra rules, in expectation for the
//! default factorized rules), the built `W` has variance `r·σ⁴ = 1/(3d)`, PyTorch's
//! `nn.Linear` default, like [`PhmLinear`](crate::PhmLinear).
//!
//! ```
//! use phm_nn::prelude::*;
//! use phm_nn::nn::{LphmLinearConfig, PhmRules};
//! let mut rng = StdRng::seed_from_u64(0);
//! let (d, k, n, r) = (768, 48, 4, 1);
//!
//! // LPHM, full learned rules: n³ + r·(k + d) + k.
//! let layer = LphmLinearConfig::new(d, k, n, r).init::<f32, _>(&mut rng)?;
//! assert_eq!(layer.num_parameters(), n * n * n + r * (k + d) + k);
//!
//! // Factorized rules: 2·n² + r·(k + d) + k.
//! let fact = LphmLinearConfig::new(d, k, n, r).with_factorized_rules(true).init::<f32, _>(&mut rng)?;
//! assert_eq!(fact.num_parameters(), 2 * n * n + r * (k + d) + k);
//!
//! // Fixed quaternion rules: only r·(k + d) + k trainable.
//! let quat = LphmLinearConfig::new(d, k, n, r)
//!     .with_rule(Rule::Fixed(Algebra::Quaternion)).init::<f32, _>(&mut rng)?;
//! assert_eq!(quat.num_parameters(), r * (k + d) + k);
//!
//! // Down- and up-projections sharing one rule set: the rules are counted once.
//! let rules = PhmRules::<f32>::new(n, Rule::Learned(Init::UnitFibers), &mut rng)?;
//! let down = LphmLinearConfig::new(d, k, n, r).init_shared(&rules, &mut rng)?;
//! let up = LphmLinearConfig::new(k, d, n, r).init_shared(&rules, &mut rng)?;
//! let pair = Sequential::new().add(down).add(up);
//! assert_eq!(pair.num_parameters(), n * n * n + 2 * (r * (k + d)) + k + d);
//!
//! // Any leading axes: (B, T, d) → (B, T, k).
//! let y = layer.infer(ArrayD::zeros(IxDyn(&[2, 3, d])).view());
//! assert_eq!(y.shape(), &[2, 3, k]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{Array1, Array2, Array3, ArrayD, ArrayView2, ArrayViewD, Ix1, Ix3};
use rand::Rng;

use crate::error::{check_shape, PhmError, Result};
use crate::init::{Fans, Init};
use crate::kernels::gemm::{add_bias_grad, affine_backward, affine_forward, assert_same_shape};
use crate::kernels::low_rank::{
    accumulate_factor_grads, build_blocks, factored_backward, factored_forward, FactoredState,
    LowRankShape, Pool,
};
use crate::kernels::phm::{build_weight, weight_grad_to_parts};
use crate::kernels::shapes::{as_matrix, linear_output_shape, unflatten, with_last};
use crate::kernels::strategy::{Kernel, Strategy};
use crate::module::{Module, Param, SavedStates, StateStack};
use crate::nn::linear::bias_view;
use crate::nn::phm_linear::dim3;
use crate::nn::rules::PhmRules;
use crate::nn::rules::Rule;
use crate::Float;

/// Configuration of an [`LphmLinear`] layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LphmLinearConfig {
    /// Input width `d` (a multiple of `n`).
    pub in_features: usize,
    /// Output width `k` (a multiple of `n`).
    pub out_features: usize,
    /// Hypercomplex dimension `n ≥ 1`.
    pub n: usize,
    /// Rank `r ≥ 1` of every block.
    pub rank: usize,
    /// Whether the layer adds a bias (default `true`).
    pub bias: bool,
    /// Learned (with an init) or fixed rules (default learned, [`Init::UnitFibers`]); for
    /// factorized rules only `Rule::Learned` applies, and its init is ignored in favour of
    /// the factor default of [`PhmRules::new_factorized`].
    pub rule: Rule,
    /// Factorized rules `A_i = a_i b_iᵀ` (default `false`).
    pub factorized_rules: bool,
    /// Init of `U` (fans `(d, k)`); `None` (default) for `N(0, σ²)`, `σ⁴ = 1/(3·d·r)`.
    pub u_init: Option<Init>,
    /// Init of `V` (fans `(d, k)`); `None` (default) as for `U`.
    pub v_init: Option<Init>,
    /// Bias init, with fans `(d, k)` (default [`Init::TorchLinear`]).
    pub bias_init: Init,
}

impl LphmLinearConfig {
    /// A `d → k` LPHM layer with dimension `n` and rank `r`, learned full rules and a bias.
    #[must_use]
    pub fn new(in_features: usize, out_features: usize, n: usize, rank: usize) -> Self {
        LphmLinearConfig {
            in_features,
            out_features,
            n,
            rank,
            bias: true,
            rule: Rule::Learned(Init::UnitFibers),
            factorized_rules: false,
            u_init: None,
            v_init: None,
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

    /// Sets whether the rules are factorized (`A_i = a_i b_iᵀ`, `2·n²` parameters).
    #[must_use]
    pub fn with_factorized_rules(mut self, factorized: bool) -> Self {
        self.factorized_rules = factorized;
        self
    }

    /// Sets the inits of `U` and `V` (`None` keeps the variance-matched default).
    #[must_use]
    pub fn with_factor_inits(mut self, u: Option<Init>, v: Option<Init>) -> Self {
        self.u_init = u;
        self.v_init = v;
        self
    }

    /// Sets the bias init.
    #[must_use]
    pub fn with_bias_init(mut self, init: Init) -> Self {
        self.bias_init = init;
        self
    }

    /// The standard deviation `σ` of the default `U` and `V` inits, `σ⁴ = 1/(3·d·r)`: it gives
    /// the built `W` the variance of PyTorch's `nn.Linear` default, `1/(3d)`, for rules with
    /// `Σ_i A_i[r,c]² = 1`.
    pub fn default_factor_std(&self) -> f64 {
        (3.0 * self.in_features as f64 * self.rank as f64).powf(-0.25)
    }

    /// The layer's sizes.
    ///
    /// # Errors
    /// As [`LowRankShape::new`].
    pub fn shape(&self) -> Result<LowRankShape> {
        LowRankShape::new(self.in_features, self.out_features, self.n, self.rank)
    }

    /// A new rule set for this config (full or factorized, learned or fixed); pass it to
    /// [`init_shared`](Self::init_shared) of every layer that should share it.
    ///
    /// # Errors
    /// As [`init`](Self::init); [`PhmError::InvalidArgument`] for factorized fixed rules.
    pub fn new_rules<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<PhmRules<F>> {
        let n = self.shape()?.n();
        match (self.factorized_rules, self.rule) {
            (false, rule) => PhmRules::new(n, rule, rng),
            (true, Rule::Learned(_)) => PhmRules::new_factorized(n, None, rng),
            (true, Rule::Fixed(algebra)) => Err(PhmError::InvalidArgument {
                what: "rule",
                reason: format!(
                    "fixed {algebra} rules cannot be factorized (they are not rank one)"
                ),
            }),
        }
    }

    /// Builds the layer, drawing its parameters from `rng`.
    ///
    /// # Errors
    /// - [`PhmError::ZeroN`], [`PhmError::ZeroSize`] (also for `rank = 0`),
    ///   [`PhmError::NotDivisible`] for sizes that do not fit `n`;
    /// - [`PhmError::InvalidArgument`] for a fixed algebra whose dimension is not `n`, fixed
    ///   factorized rules, or an invalid init.
    pub fn init<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<LphmLinear<F>> {
        let rules = self.new_rules(rng)?;
        self.init_shared(&rules, rng)
    }

    /// Builds a layer that **shares** `rules` (full or factorized): gradients from every layer
    /// that shares them accumulate into the same tensors, counted, optimized and saved once.
    /// [`rule`](Self::rule) and [`factorized_rules`](Self::factorized_rules) are ignored.
    ///
    /// # Errors
    /// As [`init`](Self::init), and [`PhmError::InvalidArgument`] if `rules.n()` is not `n`.
    pub fn init_shared<F: Float, R: Rng + ?Sized>(
        &self,
        rules: &PhmRules<F>,
        rng: &mut R,
    ) -> Result<LphmLinear<F>> {
        let shape = self.shape()?;
        if rules.n() != shape.n() {
            return Err(PhmError::InvalidArgument {
                what: "rules",
                reason: format!(
                    "the rules have n = {}, the layer n = {}",
                    rules.n(),
                    shape.n()
                ),
            });
        }
        let fans = Fans::new(self.in_features, self.out_features);
        let default = Init::Normal {
            std: self.default_factor_std(),
        };
        let (n, p, r) = shape.u_dim();
        let u = self
            .u_init
            .unwrap_or(default)
            .sample(&[n, p, r], fans, rng)?;
        let (_, q, _) = shape.v_dim();
        let v = self
            .v_init
            .unwrap_or(default)
            .sample(&[n, q, r], fans, rng)?;
        let bias = if self.bias {
            Some(Param::new(self.bias_init.sample(
                &[self.out_features],
                fans,
                rng,
            )?))
        } else {
            None
        };
        Ok(LphmLinear::assemble(
            shape,
            rules.share(),
            Param::new(u),
            Param::new(v),
            bias,
        ))
    }
}

/// What one training forward saved for its backward pass.
#[derive(Debug, Clone)]
struct Saved<F> {
    lead: Vec<usize>,
    /// The rules `A` as used by this forward.
    a: Array3<F>,
    kernel: SavedKernel<F>,
}

#[derive(Debug, Clone)]
enum SavedKernel<F> {
    /// The input `(B, d)`, the built blocks and weight.
    Materialized {
        x: Array2<F>,
        s: Array3<F>,
        w: Array2<F>,
    },
    Factored(FactoredState<F>),
}

/// A low-rank PHM layer `Y = X (Σ A_i ⊗ U_i V_iᵀ)ᵀ + b`; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct LphmLinear<F: Float> {
    shape: LowRankShape,
    rules: PhmRules<F>,
    u: Param<F>,
    v: Param<F>,
    bias: Option<Param<F>>,
    strategy: Strategy,
    saved: SavedStates<Saved<F>>,
    /// Scratch and saved-state arrays of finished steps, reused by the factored kernel.
    pool: Pool<F>,
}

impl<F: Float> LphmLinear<F> {
    fn assemble(
        shape: LowRankShape,
        rules: PhmRules<F>,
        u: Param<F>,
        v: Param<F>,
        bias: Option<Param<F>>,
    ) -> Self {
        LphmLinear {
            shape,
            rules,
            u,
            v,
            bias,
            strategy: Strategy::Auto,
            saved: SavedStates::new(),
            pool: Pool::default(),
        }
    }

    /// A layer from parameter handles: `rules` (shared as given), `U` `(n, k/n, r)`, `V`
    /// `(n, d/n, r)`, optional bias `(k)`.
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`] (naming the shapes) if the tensors do not fit together;
    /// [`PhmError::ZeroSize`] for empty tensors; [`PhmError::InvalidArgument`] if `U` and `V`
    /// are one tensor.
    pub fn from_params(
        rules: &PhmRules<F>,
        u: Param<F>,
        v: Param<F>,
        bias: Option<Param<F>>,
    ) -> Result<Self> {
        let (n, us, vs) = (rules.n(), u.shape(), v.shape());
        let (p, r) = if us.len() == 3 {
            (us[1], us[2])
        } else {
            (1, 1)
        };
        check_shape("u", &[n, p, r], &us)?;
        let q = if vs.len() == 3 { vs[1] } else { 1 };
        check_shape("v", &[n, q, r], &vs)?;
        if p == 0 || q == 0 {
            return Err(PhmError::ZeroSize { what: "blocks" });
        }
        if u.is_shared_with(&v) {
            return Err(PhmError::InvalidArgument {
                what: "v",
                reason: format!("U and V must be distinct tensors, got {} twice", u.id()),
            });
        }
        let shape = LowRankShape::new(q * n, p * n, n, r)?;
        if let Some(b) = &bias {
            check_shape("bias", &[shape.out_features()], &b.shape())?;
        }
        Ok(LphmLinear::assemble(shape, rules.share(), u, v, bias))
    }

    /// A layer from arrays: full learned rules `(n, n, n)`, `U`, `V`, optional bias.
    ///
    /// # Errors
    /// As [`from_params`](Self::from_params).
    pub fn from_parts(
        rules: Array3<F>,
        u: Array3<F>,
        v: Array3<F>,
        bias: Option<Array1<F>>,
    ) -> Result<Self> {
        let rules = PhmRules::full(Param::new(rules.into_dyn()))?;
        Self::from_params(
            &rules,
            Param::new(u.into_dyn()),
            Param::new(v.into_dyn()),
            bias.map(|b| Param::new(b.into_dyn())),
        )
    }

    /// The layer's sizes (`in`, `out`, `n`, rank).
    pub fn shape(&self) -> LowRankShape {
        self.shape
    }

    /// The rule source; [`share`](PhmRules::share) it to build other layers on the same rules.
    pub fn rules(&self) -> &PhmRules<F> {
        &self.rules
    }

    /// `U`'s handle `(n, k/n, r)`.
    pub fn u_param(&self) -> &Param<F> {
        &self.u
    }

    /// `V`'s handle `(n, d/n, r)`.
    pub fn v_param(&self) -> &Param<F> {
        &self.v
    }

    /// The bias's handle, if any.
    pub fn bias_param(&self) -> Option<&Param<F>> {
        self.bias.as_ref()
    }

    /// A copy of the bias, if any.
    pub fn bias(&self) -> Option<Array1<F>> {
        self.bias
            .as_ref()
            .map(|b| bias_view(b.read().value()).to_owned())
    }

    /// The blocks `S_i = U_i V_iᵀ`, `(n, k/n, d/n)`.
    pub fn blocks(&self) -> Array3<F> {
        let (u, v) = (self.u.read(), self.v.read());
        build_blocks(dim3(u.value()), dim3(v.value()))
    }

    /// The built weight `W = Σ A_i ⊗ U_i V_iᵀ`, `(out, in)`.
    pub fn weight(&self) -> Array2<F> {
        build_weight(self.rules.matrices().view(), self.blocks().view())
            .expect("a layer's rules and blocks fit together")
    }

    /// The kernel strategy (default [`Strategy::Auto`]).
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Forces a kernel, or lets the FLOP rule choose ([`Strategy::Auto`]).
    pub fn set_strategy(&mut self, strategy: Strategy) {
        self.strategy = strategy;
    }

    /// Builder form of [`set_strategy`](Self::set_strategy).
    #[must_use]
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The kernel a call with `batch` rows uses.
    pub fn kernel_for(&self, batch: usize) -> Kernel {
        self.shape.kernel(self.strategy, batch)
    }

    fn add_bias(&self, y: &mut Array2<F>) {
        if let Some(b) = &self.bias {
            let b = b.read();
            *y += &bias_view(b.value());
        }
    }

    /// `Y` for a matrix `x` `(B, d)`, and the saved kernel state.
    fn compute(
        &self,
        x: ArrayView2<'_, F>,
        a: &Array3<F>,
        save: bool,
        pool: &mut Pool<F>,
    ) -> (Array2<F>, Option<SavedKernel<F>>) {
        let (u, v) = (self.u.read(), self.v.read());
        let (u, v) = (dim3(u.value()), dim3(v.value()));
        let (mut y, kernel) = match self.kernel_for(x.nrows()) {
            Kernel::Factored => {
                let (y, state) = factored_forward(self.shape, a.view(), u, v, x, pool);
                (y, save.then_some(SavedKernel::Factored(state)))
            }
            Kernel::Materialized => {
                let s = build_blocks(u, v);
                let w = build_weight(a.view(), s.view()).expect("rules and blocks fit");
                let y = affine_forward(&x, &w.view(), None);
                let saved = save.then(|| SavedKernel::Materialized {
                    x: x.to_owned(),
                    s,
                    w,
                });
                (y, saved)
            }
        };
        self.add_bias(&mut y);
        (y, kernel)
    }
}

impl<F: Float> Module<F> for LphmLinear<F> {
    /// Training forward with the kernel the [`Strategy`] picks.
    ///
    /// # Panics
    /// If the last axis of `x` is not `in_features`.
    #[track_caller]
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (xm, lead) = as_matrix("LphmLinear::forward", "input", x, self.shape.in_features());
        let a = self.rules.matrices();
        let mut pool = std::mem::take(&mut self.pool);
        let (y, kernel) = self.compute(xm.view(), &a, true, &mut pool);
        self.pool = pool;
        self.saved.push(Saved {
            lead: lead.clone(),
            a,
            kernel: kernel.expect("saved"),
        });
        unflatten(y, &lead)
    }

    /// Backward through the kernel that forward used.
    ///
    /// # Panics
    /// If no forward pass is left to go back through, or `grad_output` is not
    /// `(…, out_features)` with the leading axes of that forward's input.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let saved = self.saved.pop("LphmLinear");
        let k = self.shape.out_features();
        assert_same_shape(
            "LphmLinear::backward",
            "grad_output",
            grad_output.shape(),
            &with_last(&saved.lead, k),
        );
        let (g, _) = as_matrix("LphmLinear::backward", "grad_output", grad_output, k);
        if let Some(b) = &self.bias {
            let mut b = b.write();
            if b.is_trainable() {
                let db = b
                    .grad_mut()
                    .into_dimensionality::<Ix1>()
                    .expect("bias is 1-D");
                add_bias_grad(Some(db), &g.view());
            }
        }
        let n = self.shape.n();
        let rules_trainable = self.rules.is_trainable();
        let mut da = rules_trainable.then(|| Array3::zeros((n, n, n)));
        let (mut u, mut v) = (self.u.write(), self.v.write());
        let (u_trainable, v_trainable) = (u.is_trainable(), v.is_trainable());
        let (u_value, du) = u.value_and_grad_mut();
        let (v_value, dv) = v.value_and_grad_mut();
        let (u_value, v_value) = (dim3(u_value), dim3(v_value));
        let du = u_trainable.then(|| du.into_dimensionality::<Ix3>().expect("3-D"));
        let dv = v_trainable.then(|| dv.into_dimensionality::<Ix3>().expect("3-D"));
        let dx = match &saved.kernel {
            SavedKernel::Factored(state) => factored_backward(
                self.shape,
                (saved.a.view(), u_value, v_value),
                state,
                g.view(),
                (da.as_mut().map(|d| d.view_mut()), du, dv),
                &mut self.pool,
            ),
            SavedKernel::Materialized { x, s, w } => {
                let mut dw = Array2::zeros(w.raw_dim());
                let dx = affine_backward(
                    &x.view(),
                    &w.view(),
                    &g.view(),
                    Some(dw.view_mut()),
                    F::zero(),
                );
                if rules_trainable || u_trainable || v_trainable {
                    let (da_part, ds) = weight_grad_to_parts(saved.a.view(), s.view(), dw.view())
                        .expect("shapes fit");
                    if let Some(da) = da.as_mut() {
                        *da += &da_part;
                    }
                    accumulate_factor_grads(u_value, v_value, ds.view(), du, dv);
                }
                dx
            }
        };
        drop((u, v));
        if let Some(da) = da {
            self.rules.accumulate_grad(da.view());
        }
        if let SavedKernel::Factored(state) = saved.kernel {
            self.pool.give_state(state);
        }
        unflatten(dx, &saved.lead)
    }

    /// Inference through `&self` (nothing saved).
    ///
    /// # Panics
    /// If the last axis of `x` is not `in_features`.
    #[track_caller]
    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (xm, lead) = as_matrix("LphmLinear::infer", "input", x, self.shape.in_features());
        let (y, _) = self.compute(
            xm.view(),
            &self.rules.matrices(),
            false,
            &mut Pool::default(),
        );
        unflatten(y, &lead)
    }

    fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<F>)) {
        self.rules.visit(f);
        f("u", &self.u);
        f("v", &self.v);
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.saved)
    }

    fn describe(&self) -> String {
        let rules = match (self.rules.is_factorized(), self.rules.is_trainable()) {
            (true, _) => "factorized rules",
            (false, true) => "learned rules",
            (false, false) => "fixed rules",
        };
        let bias = if self.bias.is_some() { "" } else { ", no bias" };
        format!(
            "LphmLinear({} → {}, n = {}, rank {}, {rules}{bias})",
            self.shape.in_features(),
            self.shape.out_features(),
            self.shape.n(),
            self.shape.rank()
        )
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        linear_output_shape(input, self.shape.in_features(), self.shape.out_features())
    }
}
