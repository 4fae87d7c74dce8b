//! The [`Module`] trait every layer implements, and [`Param`], a named trainable tensor.
//!
//! A module maps a batch `X ∈ R^{B×d}` (rows are samples) to `Y ∈ R^{B×k}`:
//!
//! - [`Module::forward`] computes `Y` and caches what the backward pass needs;
//! - [`Module::backward`] takes `dL/dY`, **adds** `dL/dθ` into each parameter's gradient
//!   (gradients accumulate until [`Module::zero_grad`]) and returns `dL/dX`;
//! - [`Module::infer`] computes `Y` through `&self`, caching nothing (inference);
//! - [`Module::visit_params`] / [`Module::visit_params_mut`] walk the parameters with stable
//!   names (`"weight"`, `"0.rules"`, …): optimizers and serialization use these names.
//!
//! ```
//! use ndarray::array;
//! use phm_nn::{Linear, Module};
//!
//! let mut layer = Linear::from_parts(array![[1.0, 2.0], [0.0, -1.0]], Some(array![0.5, 0.0]))?;
//! let y = layer.forward(array![[1.0, 1.0]].view());
//! assert_eq!(y, array![[3.5, -1.0]]);
//! let dx = layer.backward(array![[1.0, 0.0]].view());
//! assert_eq!(dx, array![[1.0, 2.0]]);
//! let mut names = Vec::new();
//! layer.visit_params(&mut |name, p| names.push((name.to_string(), p.grad().sum())));
//! assert_eq!(names, [("weight".to_string(), 2.0), ("bias".to_string(), 1.0)]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, ArrayViewMutD};

use crate::error::{check_shape, Result};
use crate::Float;

static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

fn next_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}

/// A parameter tensor with its accumulated gradient.
///
/// A *frozen* parameter (`is_trainable() == false`, e.g. the fixed rules of a quaternion
/// layer) takes no gradient and is skipped by optimizers, but is still visited (and so saved).
///
/// Every mutable access to the value stamps the parameter with a new, globally unique
/// [`version`](Param::version); layers use it to know when a cached weight is stale.
#[derive(Debug, Clone)]
pub struct Param<F> {
    value: ArrayD<F>,
    grad: ArrayD<F>,
    trainable: bool,
    version: u64,
}

impl<F: Float> Param<F> {
    /// A trainable parameter with a zero gradient.
    pub fn new(value: ArrayD<F>) -> Self {
        // Kernels view parameters as matrices: keep them in standard (row-major) layout.
        let value = if value.is_standard_layout() {
            value
        } else {
            value.as_standard_layout().into_owned()
        };
        let grad = ArrayD::zeros(value.raw_dim());
        Param {
            value,
            grad,
            trainable: true,
            version: next_version(),
        }
    }

    /// A frozen parameter: never given a gradient, never changed by an optimizer.
    pub fn frozen(value: ArrayD<F>) -> Self {
        let mut p = Param::new(value);
        p.trainable = false;
        p
    }

    /// The current value.
    pub fn value(&self) -> ArrayViewD<'_, F> {
        self.value.view()
    }

    /// Mutable access to the value (its shape cannot change). Marks the parameter as changed.
    pub fn value_mut(&mut self) -> ArrayViewMutD<'_, F> {
        self.version = next_version();
        self.value.view_mut()
    }

    /// Replaces the value by a copy of `value`.
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`](crate::PhmError::ShapeMismatch) if the shapes differ;
    /// the parameter is unchanged then.
    pub fn set_value(&mut self, value: ArrayViewD<'_, F>) -> Result<()> {
        check_shape("parameter value", self.value.shape(), value.shape())?;
        self.value_mut().assign(&value);
        Ok(())
    }

    /// The accumulated gradient (zeros for a frozen parameter).
    pub fn grad(&self) -> ArrayViewD<'_, F> {
        self.grad.view()
    }

    /// Mutable access to the accumulated gradient.
    pub fn grad_mut(&mut self) -> ArrayViewMutD<'_, F> {
        self.grad.view_mut()
    }

    /// The value (marked as changed) and the gradient at once, for optimizers.
    pub fn value_mut_and_grad(&mut self) -> (ArrayViewMutD<'_, F>, ArrayViewD<'_, F>) {
        self.version = next_version();
        (self.value.view_mut(), self.grad.view())
    }

    /// The value (read-only) and the gradient (mutable) at once, for backward passes.
    pub fn value_and_grad_mut(&mut self) -> (ArrayViewD<'_, F>, ArrayViewMutD<'_, F>) {
        (self.value.view(), self.grad.view_mut())
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grad.fill(F::zero());
    }

    /// Whether optimizers update this parameter and backward passes give it a gradient.
    pub fn is_trainable(&self) -> bool {
        self.trainable
    }

    /// Freezes (`false`) or unfreezes (`true`) the parameter. Freezing clears its gradient.
    pub fn set_trainable(&mut self, trainable: bool) {
        self.trainable = trainable;
        if !trainable {
            self.zero_grad();
        }
    }

    /// A stamp that changes on every mutable access to the value.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Shape of the value.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// Number of scalars in the value.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Whether the value holds no scalars.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

/// A differentiable layer or model with a manual forward/backward pass.
///
/// # Shapes
/// Inputs are `(batch, in_features)`, outputs `(batch, out_features)`.
pub trait Module<F: Float> {
    /// Training forward pass: returns the output and caches what [`backward`](Module::backward)
    /// needs.
    ///
    /// # Panics
    /// If `x` does not have the module's input width; the message names both shapes.
    fn forward(&mut self, x: ArrayView2<'_, F>) -> Array2<F>;

    /// Backward pass for the most recent [`forward`](Module::forward): adds the parameter
    /// gradients into [`Param::grad`] and returns `dL/dX`.
    ///
    /// # Panics
    /// If no forward pass was run since the last backward, or if `grad_output` does not have
    /// the shape of the last output; the message names both shapes.
    fn backward(&mut self, grad_output: ArrayView2<'_, F>) -> Array2<F>;

    /// Inference forward pass through `&self`: same output as `forward`, nothing cached.
    ///
    /// # Panics
    /// If `x` does not have the module's input width.
    fn infer(&self, x: ArrayView2<'_, F>) -> Array2<F>;

    /// Calls `f(name, param)` for every parameter, trainable or frozen, in a stable order.
    fn visit_params(&self, _f: &mut dyn FnMut(&str, &Param<F>)) {}

    /// Calls `f(name, param)` for every parameter with mutable access, in the same order and
    /// with the same names as [`visit_params`](Module::visit_params).
    fn visit_params_mut(&mut self, _f: &mut dyn FnMut(&str, &mut Param<F>)) {}

    /// Sets every gradient to zero.
    fn zero_grad(&mut self) {
        self.visit_params_mut(&mut |_, p| p.zero_grad());
    }

    /// Number of trainable scalars (frozen parameters are not counted).
    fn num_parameters(&self) -> usize {
        let mut count = 0;
        self.visit_params(&mut |_, p| {
            if p.is_trainable() {
                count += p.len();
            }
        });
        count
    }
}
pub mod sequential;
