//! Layer normalization over the last axis, phm-nn's [`phm_nn::nn::LayerNorm`] in burn.
//!
//! ```text
//!     y = (x − mean(x)) / √(var(x) + ε) · w + b        var biased (divides by d)
//! ```
//!
//! Parameters `weight` `(d)` (ones at init) and `bias` `(d)` (zeros).
//!
//! ```
//! use phm_burn::burn::tensor::{DType, Device, Tensor};
//! use phm_burn::transformer::LayerNormConfig;
//! let device = Device::default();
//! let ln = LayerNormConfig::new(2).init::<f64>(&device)?;
//! let y = ln.forward(Tensor::<2>::from_data([[1.0f64, 3.0]], (&device, DType::F64)));
//! let y: Vec<f64> = y.to_data().try_to_vec::<f64>().unwrap();
//! assert!((y[0] + 1.0).abs() < 1e-4 && (y[1] - 1.0).abs() < 1e-4); // ±1, ε = 1e-5
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use phm_nn::Float;

use super::mismatch;
use crate::bridge::{array_from_tensor, tensor_from_array};
use crate::Bridge;

/// Configuration of a [`LayerNorm`].
#[derive(Config, Debug)]
pub struct LayerNormConfig {
    /// Width `d` of the normalized (last) axis.
    pub width: usize,
    /// `ε` added to the variance (default `1e-5`, as PyTorch).
    #[config(default = 1e-5)]
    pub eps: f64,
}

impl LayerNormConfig {
    /// Builds the layer (`w = 1`, `b = 0`) in `F`'s dtype on `device`.
    ///
    /// # Errors
    /// Those of [`phm_nn::nn::LayerNormConfig::init`]: a zero width, a negative or
    /// non-finite `ε`.
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<LayerNorm> {
        let native = phm_nn::nn::LayerNormConfig::new(self.width)
            .with_eps(self.eps)
            .init::<F>()?;
        LayerNorm::from_native(&native, device)
    }
}

/// Layer normalization over the last axis; see the [module docs](self).
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// The scale `w` `(d)`.
    pub weight: Param<Tensor<1>>,
    /// The shift `b` `(d)`.
    pub bias: Param<Tensor<1>>,
    /// `ε`.
    pub eps: f64,
}

impl LayerNorm {
    /// Normalizes `x` over its last axis.
    ///
    /// # Shapes
    /// - `x`: `[..., d]`
    /// - output: `[..., d]`
    ///
    /// # Panics
    /// If the last axis of `x` is not `d`.
    #[track_caller]
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let [d] = self.weight.dims();
        let dims = x.dims();
        assert_eq!(
            dims[D - 1],
            d,
            "LayerNorm::forward: input has shape {dims:?}, expected [.., {d}]"
        );
        let (var, mean) = x.clone().var_mean_bias(D - 1);
        let xhat = (x - mean) / (var + self.eps).sqrt();
        xhat * self.weight.val().unsqueeze::<D>() + self.bias.val().unsqueeze::<D>()
    }
}

impl Bridge for LayerNorm {
    type Native<F: Float> = phm_nn::nn::LayerNorm<F>;

    fn to_native<F: Float>(&self) -> phm_nn::Result<Self::Native<F>> {
        let w = array_from_tensor::<F, 1>(&self.weight.val(), "weight")?;
        let b = array_from_tensor::<F, 1>(&self.bias.val(), "bias")?;
        phm_nn::nn::LayerNorm::from_params(phm_nn::Param::new(w), phm_nn::Param::new(b), self.eps)
    }

    /// # Errors
    /// [`phm_nn::PhmError::CheckpointMismatch`] for a norm without the affine part (`w`, `b`).
    fn from_native<F: Float>(native: &Self::Native<F>, device: &Device) -> phm_nn::Result<Self> {
        let (Some(w), Some(b)) = (native.weight_param(), native.bias_param()) else {
            return Err(mismatch("weight", "an affine layer norm", "none"));
        };
        Ok(LayerNorm {
            weight: Param::from_tensor(tensor_from_array(w.value().view(), device)),
            bias: Param::from_tensor(tensor_from_array(b.value().view(), device)),
            eps: native.eps(),
        })
    }
}
