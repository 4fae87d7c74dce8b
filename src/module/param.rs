//! [`Param`]: a parameter tensor with an identity, shareable between layers.
//!
//! A `Param` is a handle to one tensor (its value, its accumulated gradient, whether it is
//! trainable) with a stable [`ParamId`]. [`Param::share`] gives another handle to the **same**
//! tensor, with the same id: that is how several layers share one rule tensor (Compacter) or
//! one weight (tying). Everything that walks a model — `num_parameters`, optimizers,
//! checkpoints — keys parameters by id, so a shared tensor is counted, updated and saved once.
//!
//! The tensor sits behind a read–write lock, so a model is `Send + Sync`: several threads can
//! run inference through `&model` at once, and a layer reads its parameters through
//! [`Param::read`] (or changes them through [`Param::write`]) without `&mut`. The value's shape
//! is fixed at creation: no method replaces a parameter by one of another shape.
//!
//! # Cloning
//! `Clone` is a **deep copy** with a fresh id: a clone of a model is a snapshot that later
//! training of the original does not change. Parameters shared *inside* what is cloned stay
//! shared in the copy when the clone runs through [`clone_model`] (or a container of this
//! crate, such as [`Sequential`](crate::Sequential), which does so itself).
//!
//! ```
//! use ndarray::{array, ArrayD};
//! use phm_nn::Param;
//!
//! let a = Param::new(array![1.0, 2.0].into_dyn());
//! let b = a.share();                 // same tensor, same id
//! b.write().value_mut()[0] = 5.0;
//! assert_eq!(a.value(), array![5.0, 2.0].into_dyn());
//! assert_eq!(a.id(), b.id());
//!
//! let c = a.clone();                 // a deep copy: a new tensor with a new id
//! assert_ne!(c.id(), a.id());
//! c.write().value_mut()[0] = 0.0;
//! assert_eq!(a.value()[0], 5.0);
//! ```

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD};

use crate::error::{check_shape, Result};
use crate::Float;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_stamp() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The identity of a parameter tensor: unique in the process, shared by every handle
/// ([`Param::share`]) to the same tensor, new for every [`Param::new`] and every clone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(u64);

impl fmt::Display for ParamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The tensor behind a [`Param`] handle.
#[derive(Debug)]
struct Data<F> {
    value: ArrayD<F>,
    grad: ArrayD<F>,
    trainable: bool,
    version: u64,
}

/// A handle to a parameter tensor and its accumulated gradient; see the [module docs](crate::module).
///
/// A *frozen* parameter (`is_trainable() == false`, e.g. the fixed rules of a quaternion
/// layer) takes no gradient and is skipped by optimizers, but is still visited (and saved).
/// Every write access to the value stamps the tensor with a new, globally unique
/// [`version`](Param::version); layers use it to know when a cached weight is stale.
///
/// **Locking.** [`read`](Param::read) and [`write`](Param::write) hold the tensor's lock
/// until the guard is dropped; the convenience methods ([`value`](Param::value),
/// [`grad`](Param::grad), [`set_value`](Param::set_value), …) take it for one call. Do not
/// call them on a tensor while you hold its write guard (or take the write guard while you
/// hold a read guard) on the same thread: like any read–write lock, that waits forever.
pub struct Param<F> {
    id: ParamId,
    data: Arc<RwLock<Data<F>>>,
}

/// Read access to a parameter ([`Param::read`]); holds a read lock while alive.
pub struct ParamRef<'a, F>(RwLockReadGuard<'a, Data<F>>);

/// Write access to a parameter ([`Param::write`]); holds the write lock while alive.
pub struct ParamMut<'a, F>(RwLockWriteGuard<'a, Data<F>>);

impl<F: Float> Param<F> {
    /// A trainable parameter with a zero gradient and a new id.
    pub fn new(value: ArrayD<F>) -> Self {
        // Kernels view parameters as matrices: keep them in standard (row-major) layout.
        let value = if value.is_standard_layout() {
            value
        } else {
            value.as_standard_layout().into_owned()
        };
        let grad = ArrayD::zeros(value.raw_dim());
        Param {
            id: ParamId(next_stamp()),
            data: Arc::new(RwLock::new(Data {
                value,
                grad,
                trainable: true,
                version: next_stamp(),
            })),
        }
    }

    /// A frozen parameter: never given a gradient, never changed by an optimizer.
    pub fn frozen(value: ArrayD<F>) -> Self {
        let p = Param::new(value);
        p.set_trainable(false);
        p
    }

    /// The parameter's identity (the same for every [`share`](Self::share)d handle).
    pub fn id(&self) -> ParamId {
        self.id
    }

    /// Another handle to the same tensor (same id, same value and gradient): give it to a
    /// second layer to share the parameter.
    pub fn share(&self) -> Param<F> {
        Param {
            id: self.id,
            data: Arc::clone(&self.data),
        }
    }

    /// Whether `other` is a handle to the same tensor.
    pub fn is_shared_with(&self, other: &Param<F>) -> bool {
        self.id == other.id
    }

    /// Read access to the value and the gradient.
    pub fn read(&self) -> ParamRef<'_, F> {
        ParamRef(self.data.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Write access to the value and the gradient.
    pub fn write(&self) -> ParamMut<'_, F> {
        ParamMut(self.data.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// A copy of the current value.
    pub fn value(&self) -> ArrayD<F> {
        self.read().value().to_owned()
    }

    /// A copy of the accumulated gradient (zeros for a frozen parameter).
    pub fn grad(&self) -> ArrayD<F> {
        self.read().grad().to_owned()
    }

    /// Replaces the value by a copy of `value`.
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`](crate::PhmError::ShapeMismatch) if the shapes differ;
    /// the parameter is unchanged then.
    pub fn set_value(&self, value: ArrayViewD<'_, F>) -> Result<()> {
        let mut w = self.write();
        check_shape("parameter value", w.0.value.shape(), value.shape())?;
        w.value_mut().assign(&value);
        Ok(())
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&self) {
        self.write().zero_grad();
    }

    /// Whether optimizers update this parameter and backward passes give it a gradient.
    pub fn is_trainable(&self) -> bool {
        self.read().0.trainable
    }

    /// Freezes (`false`) or unfreezes (`true`) the tensor, for every handle that shares it.
    /// Freezing clears its gradient.
    pub fn set_trainable(&self, trainable: bool) {
        let mut w = self.write();
        w.0.trainable = trainable;
        if !trainable {
            w.zero_grad();
        }
    }

    /// A stamp that changes on every write access to the value.
    pub fn version(&self) -> u64 {
        self.read().0.version
    }

    /// Shape of the value.
    pub fn shape(&self) -> Vec<usize> {
        self.read().value().shape().to_vec()
    }

    /// Number of scalars in the value.
    pub fn len(&self) -> usize {
        self.read().0.value.len()
    }

    /// Whether the value holds no scalars.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn deep_copy(&self) -> Param<F> {
        let d = self.read();
        Param {
            id: ParamId(next_stamp()),
            data: Arc::new(RwLock::new(Data {
                value: d.0.value.clone(),
                grad: d.0.grad.clone(),
                trainable: d.0.trainable,
                version: next_stamp(),
            })),
        }
    }
}

impl<F> ParamRef<'_, F> {
    /// The value.
    pub fn value(&self) -> ArrayViewD<'_, F> {
        self.0.value.view()
    }

    /// The accumulated gradient.
    pub fn grad(&self) -> ArrayViewD<'_, F> {
        self.0.grad.view()
    }
}

impl<F: Float> ParamMut<'_, F> {
    /// The value (read-only).
    pub fn value(&self) -> ArrayViewD<'_, F> {
        self.0.value.view()
    }

    /// The accumulated gradient (read-only).
    pub fn grad(&self) -> ArrayViewD<'_, F> {
        self.0.grad.view()
    }

    /// Mutable access to the value (its shape cannot change). Marks the tensor as changed.
    pub fn value_mut(&mut self) -> ArrayViewMutD<'_, F> {
        self.0.version = next_stamp();
        self.0.value.view_mut()
    }

    /// Mutable access to the accumulated gradient.
    pub fn grad_mut(&mut self) -> ArrayViewMutD<'_, F> {
        self.0.grad.view_mut()
    }

    /// The value (read-only) and the gradient (mutable) at once, for backward passes.
    pub fn value_and_grad_mut(&mut self) -> (ArrayViewD<'_, F>, ArrayViewMutD<'_, F>) {
        let d = &mut *self.0;
        (d.value.view(), d.grad.view_mut())
    }

    /// The value (mutable; marks the tensor as changed) and the gradient (read-only) at
    /// once, for optimizers that update the value in place.
    pub(crate) fn value_mut_and_grad(&mut self) -> (ArrayViewMutD<'_, F>, ArrayViewD<'_, F>) {
        self.0.version = next_stamp();
        let d = &mut *self.0;
        (d.value.view_mut(), d.grad.view())
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&mut self) {
        self.0.grad.fill(F::zero());
    }

    /// Whether the tensor is trainable.
    pub fn is_trainable(&self) -> bool {
        self.0.trainable
    }
}

impl<F: Float> fmt::Debug for Param<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.read();
        f.debug_struct("Param")
            .field("id", &self.id)
            .field("shape", &d.0.value.shape())
            .field("trainable", &d.0.trainable)
            .finish()
    }
}

thread_local! {
    /// While a [`clone_model`] runs on this thread: the copies made so far, by source id.
    static CLONE_MEMO: RefCell<Option<HashMap<ParamId, Box<dyn Any>>>> = const { RefCell::new(None) };
}

impl<F: Float> Clone for Param<F> {
    /// A deep copy with a fresh id; inside [`clone_model`], every handle of one tensor maps
    /// to the same copy.
    fn clone(&self) -> Self {
        CLONE_MEMO.with(|memo| {
            let mut memo = memo.borrow_mut();
            let Some(map) = memo.as_mut() else {
                return self.deep_copy();
            };
            if let Some(copy) = map.get(&self.id).and_then(|c| c.downcast_ref::<Param<F>>()) {
                return copy.share();
            }
            let copy = self.deep_copy();
            map.insert(self.id, Box::new(copy.share()));
            copy
        })
    }
}

/// Clones `value` deeply while keeping the sharing inside it: two handles of one tensor in
/// `value` become two handles of one new tensor in the copy (a plain `clone` of a struct of
/// your own whose fields share a parameter would give each field its own copy). The copy
/// shares nothing with `value`.
///
/// ```
/// use ndarray::array;
/// use phm_nn::module::clone_model;
/// use phm_nn::Param;
///
/// let a = Param::new(array![1.0f32].into_dyn());
/// let pair = (a.share(), a.share());
/// let copy = clone_model(&pair);
/// assert!(copy.0.is_shared_with(&copy.1));
/// assert!(!copy.0.is_shared_with(&a));
/// ```
pub fn clone_model<T: Clone>(value: &T) -> T {
    let outer = CLONE_MEMO.with(|memo| {
        let mut memo = memo.borrow_mut();
        if memo.is_some() {
            false
        } else {
            *memo = Some(HashMap::new());
            true
        }
    });
    // Clears the memo even if a clone panics.
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            if self.0 {
                CLONE_MEMO.with(|memo| *memo.borrow_mut() = None);
            }
        }
    }
    let _reset = Reset(outer);
    value.clone()
}
