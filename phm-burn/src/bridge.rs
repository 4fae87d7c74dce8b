//! Values between phm-burn modules and their phm-nn twins, bit for bit.
//!
//! Every module of this crate implements [`Bridge`]: [`Bridge::to_native`] builds the phm-nn
//! layer (or model) with the same parameter paths, shapes and values, and
//! [`Bridge::from_native`] builds the burn module from one. Checkpoints go through phm-nn's
//! own reader and writer, so a file is the same whichever crate wrote it.
//!
//! Every parameter keeps its trainable flag both ways: a frozen phm-nn parameter
//! ([`phm_nn::Param::is_trainable`] false) becomes a burn parameter without gradients, and a
//! burn parameter without gradients ([`is_trainable`]) a frozen phm-nn one.
//!
//! Tensors keep their float type: an `f64` phm-nn tensor becomes a burn tensor of
//! [`DType::F64`] and back, with no rounding; asking for another type is an error, never a
//! silent conversion.
//!
//! ```
//! use phm_burn::bridge::{array_from_tensor, tensor_from_array};
//! use phm_burn::burn::tensor::{DType, Device, Tensor};
//! use phm_nn::ndarray::{ArrayD, IxDyn};
//!
//! let device = Device::default();
//! let a = ArrayD::from_shape_fn(IxDyn(&[2, 3]), |i| (i[0] * 3 + i[1]) as f64 / 7.0);
//! let t: Tensor<2> = tensor_from_array(a.view(), &device);
//! assert_eq!(t.dtype(), DType::F64);
//! let back = array_from_tensor::<f64, 2>(&t, "a")?;
//! assert_eq!(back, a);
//! // The same tensor read as f32 is an error naming it:
//! assert!(array_from_tensor::<f32, 2>(&t, "a").is_err());
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Tensor, TensorData};
use phm_nn::ndarray::{ArrayD, ArrayViewD, IxDyn};
use phm_nn::{Float, PhmError, Result};

/// A burn module with a phm-nn twin: the same parameter paths, shapes and values.
pub trait Bridge: Sized {
    /// The phm-nn layer or model with the same parameters.
    type Native<F: Float>: phm_nn::Module<F>;

    /// The phm-nn twin of this module, with its values as `F`.
    ///
    /// # Errors
    /// [`PhmError::CheckpointMismatch`] naming the tensor if a parameter's dtype is not `F`'s.
    fn to_native<F: Float>(&self) -> Result<Self::Native<F>>;

    /// The burn module with the values of `native`, on `device`, in `F`'s dtype.
    ///
    /// # Errors
    /// A [`PhmError`] if `native` cannot be expressed by this module (documented per module).
    fn from_native<F: Float>(native: &Self::Native<F>, device: &Device) -> Result<Self>;
}

/// The burn dtype of `F`: [`DType::F32`] or [`DType::F64`].
pub fn dtype_of<F: Float>() -> DType {
    if std::mem::size_of::<F>() == 4 {
        DType::F32
    } else {
        DType::F64
    }
}

/// A burn tensor of rank `D` with the values of `a`, in `F`'s dtype, on `device`.
///
/// # Panics
/// If `a` does not have rank `D`.
#[track_caller]
pub fn tensor_from_array<F: Float, const D: usize>(
    a: ArrayViewD<'_, F>,
    device: &Device,
) -> Tensor<D> {
    assert_eq!(
        a.ndim(),
        D,
        "tensor_from_array: an array of shape {:?} is not of rank {D}",
        a.shape()
    );
    let shape = a.shape().to_vec();
    let data = if dtype_of::<F>() == DType::F32 {
        TensorData::new(
            a.iter().map(|v| v.as_f64() as f32).collect::<Vec<f32>>(),
            shape,
        )
    } else {
        TensorData::new(a.iter().map(|v| v.as_f64()).collect::<Vec<f64>>(), shape)
    };
    Tensor::from_data(data, (device, dtype_of::<F>()))
}

/// The values of `t` as an array of `F`; `name` names the tensor in errors.
///
/// # Errors
/// [`PhmError::CheckpointMismatch`] if `t`'s dtype is not `F`'s (no silent rounding or
/// widening).
pub fn array_from_tensor<F: Float, const D: usize>(t: &Tensor<D>, name: &str) -> Result<ArrayD<F>> {
    let want = dtype_of::<F>();
    if t.dtype() != want {
        return Err(PhmError::CheckpointMismatch {
            source: "burn module".into(),
            tensor: name.into(),
            expected: format!("dtype {want:?}"),
            found: format!("dtype {:?}", t.dtype()),
        });
    }
    let data = t.to_data();
    let shape = data.shape().as_slice().to_vec();
    let values: Vec<F> = if want == DType::F32 {
        data.as_slice::<f32>()
            .expect("dtype checked above")
            .iter()
            .map(|&v| F::of(f64::from(v)))
            .collect()
    } else {
        data.as_slice::<f64>()
            .expect("dtype checked above")
            .iter()
            .map(|&v| F::of(v))
            .collect()
    };
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), values).expect("a tensor's data matches its shape"))
}

/// Whether burn trains `p`: the gradient setting burn keeps for it, also on a plain device
/// (where tensors never track gradients until the module is put into training with
/// `Module::train`). `false` for a parameter set with `set_require_grad(false)`.
pub fn is_trainable<const D: usize>(p: &Param<Tensor<D>>) -> bool {
    p.clone().train().val().is_require_grad()
}

/// The phm-nn parameter with the values of `p` as `F`, frozen if `p` is not
/// [trainable](is_trainable); `name` names it in errors.
///
/// # Errors
/// [`PhmError::CheckpointMismatch`] if `p`'s dtype is not `F`'s.
pub fn native_param<F: Float, const D: usize>(
    p: &Param<Tensor<D>>,
    name: &str,
) -> Result<phm_nn::Param<F>> {
    let value = array_from_tensor::<F, D>(&p.val(), name)?;
    Ok(if is_trainable(p) {
        phm_nn::Param::new(value)
    } else {
        phm_nn::Param::frozen(value)
    })
}

/// The burn parameter with the values of `p` on `device` in `F`'s dtype, without gradients if
/// `p` is frozen.
///
/// # Panics
/// If `p` does not have rank `D`.
#[track_caller]
pub fn burn_param<F: Float, const D: usize>(
    p: &phm_nn::Param<F>,
    device: &Device,
) -> Param<Tensor<D>> {
    let param = Param::from_tensor(tensor_from_array::<F, D>(p.value().view(), device));
    if p.is_trainable() {
        param
    } else {
        param.set_require_grad(false)
    }
}

/// Sets the trainable flags of a phm-nn layer's weight (or blocks) and bias to those of burn's
/// `weight` and `bias` (for the phm-nn constructors that take plain arrays).
pub(crate) fn carry_trainable<F: Float, const D: usize>(
    native_weight: &phm_nn::Param<F>,
    native_bias: Option<&phm_nn::Param<F>>,
    weight: &Param<Tensor<D>>,
    bias: Option<&Param<Tensor<1>>>,
) {
    native_weight.set_trainable(is_trainable(weight));
    if let (Some(nb), Some(b)) = (native_bias, bias) {
        nb.set_trainable(is_trainable(b));
    }
}
