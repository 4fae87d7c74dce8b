//! A dense projection `y = x Wᵀ + b`: a stand-in until the linear family's `Projection`
//! lands, with the bridge the Transformer layers need from it.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use phm_nn::{Float, Module as NativeModule, Result};

use super::mismatch;
use crate::bridge::{array_from_tensor, tensor_from_array};

/// A dense projection: `weight` `(out, in)`, `bias` `(out)`.
#[derive(Module, Debug)]
pub struct Proj {
    /// `W` `(out, in)`.
    pub weight: Param<Tensor<2>>,
    /// `b` `(out)`.
    pub bias: Param<Tensor<1>>,
}

impl Proj {
    /// `x Wᵀ + b` on the last axis.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let w = self.weight.val().transpose().unsqueeze::<D>();
        x.matmul(w) + self.bias.val().unsqueeze::<D>()
    }

    /// The phm-nn layer.
    pub fn to_native<F: Float>(&self) -> Result<Box<dyn NativeModule<F>>> {
        let w = array_from_tensor::<F, 2>(&self.weight.val(), "weight")?;
        let b = array_from_tensor::<F, 1>(&self.bias.val(), "bias")?;
        Ok(Box::new(phm_nn::Linear::from_params(
            phm_nn::Param::new(w),
            Some(phm_nn::Param::new(b)),
        )?))
    }

    /// From a phm-nn projection.
    pub fn from_native<F: Float>(native: &dyn NativeModule<F>, device: &Device) -> Result<Self> {
        let any: &dyn std::any::Any = native;
        let lin = any
            .downcast_ref::<phm_nn::Linear<F>>()
            .ok_or_else(|| mismatch("projection", "a dense Linear", &native.describe()))?;
        let b = lin
            .bias_param()
            .ok_or_else(|| mismatch("bias", "a bias", "none"))?;
        Ok(Proj {
            weight: Param::from_tensor(tensor_from_array(
                lin.weight_param().value().view(),
                device,
            )),
            bias: Param::from_tensor(tensor_from_array(b.value().view(), device)),
        })
    }
}
