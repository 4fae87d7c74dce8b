//! Dense linear layer, the baseline.
//!
//! ```text
//!     Y = X Wᵀ + 1 bᵀ        X: (…, d)   W: (k, d) (out × in)   b: (k)   Y: (…, k)
//! ```
//!
//! phm-nn's `Linear` with its parameter names (`weight`, `bias`), layout and init (PyTorch's
//! `nn.Linear` default). Note that burn's own `nn::Linear` stores `(in, out)`.
//!
//! ```
//! use phm_burn::burn::tensor::{DType, Device, Tensor};
//! use phm_burn::linear::LinearConfig;
//! let device = Device::default();
//! let layer = LinearConfig::new(8, 3).init::<f32>(&device)?;
//! assert_eq!(layer.weight.dims(), [3, 8]);
//! assert_eq!(layer.forward(Tensor::<3>::ones([2, 7, 8], &device)).dims(), [2, 7, 3]);
//! // An f64 layer takes f64 inputs (burn panics on mixed dtypes):
//! let layer = LinearConfig::new(8, 3).init::<f64>(&device)?;
//! let x = Tensor::<2>::ones([4, 8], (&device, DType::F64));
//! assert_eq!(layer.forward(x).dtype(), DType::F64);
//! # Ok::<(), phm_burn::phm_nn::PhmError>(())
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor};
use phm_nn::ndarray::{Ix1, Ix2};
use phm_nn::rand::{rngs::StdRng, SeedableRng};
use phm_nn::Float;

use super::{array_of, check_dtype};
use crate::bridge::Bridge;
use crate::rules::param;

/// Configuration of a dense [`Linear`] layer.
#[derive(Config, Debug, PartialEq)]
pub struct LinearConfig {
    /// Input width `d`.
    pub in_features: usize,
    /// Output width `k`.
    pub out_features: usize,
    /// Whether the layer adds a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Seed of the phm-nn init the parameters are drawn with.
    #[config(default = 0)]
    pub seed: u64,
}

impl LinearConfig {
    /// The layer, drawn as phm-nn's `LinearConfig::init` draws it from a `StdRng` seeded with
    /// `seed`, in `F`'s dtype on `device`.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`](phm_nn::PhmError::ZeroSize) for a zero width.
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<Linear> {
        let native = phm_nn::LinearConfig::new(self.in_features, self.out_features)
            .with_bias(self.bias)
            .init::<F, _>(&mut StdRng::seed_from_u64(self.seed))?;
        Linear::from_native(&native, device)
    }
}

/// A dense layer `Y = X Wᵀ + b`; see the [module docs](self).
#[derive(Module, Debug)]
pub struct Linear {
    /// The weight `(out, in)`.
    pub weight: Param<Tensor<2>>,
    /// The bias `(out)`, if any.
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    /// `Y = X Wᵀ + b` on the last axis.
    ///
    /// # Shapes
    /// - `x`: `(…, in)`; output `(…, out)`.
    ///
    /// # Panics
    /// If the last axis of `x` is not `in`, or its dtype is not the layer's.
    #[track_caller]
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let w = self.weight.val();
        let [k, d] = w.dims();
        assert_eq!(
            x.dims()[D - 1],
            d,
            "Linear::forward: input of shape {:?}, expected (…, {d}) for a {d} → {k} layer",
            x.dims()
        );
        check_dtype("Linear::forward", &x, &w);
        linear(x, w.transpose(), self.bias.as_ref().map(Param::val))
    }
}

impl Bridge for Linear {
    type Native<F: Float> = phm_nn::Linear<F>;

    fn to_native<F: Float>(&self) -> phm_nn::Result<phm_nn::Linear<F>> {
        let weight = array_of::<F, Ix2, 2>(&self.weight, "weight")?;
        let bias = match &self.bias {
            Some(b) => Some(array_of::<F, Ix1, 1>(b, "bias")?),
            None => None,
        };
        phm_nn::Linear::from_parts(weight, bias)
    }

    /// # Errors
    /// None (every phm-nn `Linear` has a burn twin).
    fn from_native<F: Float>(native: &phm_nn::Linear<F>, device: &Device) -> phm_nn::Result<Self> {
        Ok(Linear {
            weight: param::<F, 2>(&native.weight().into_dyn(), false, device),
            bias: native
                .bias()
                .map(|b| param::<F, 1>(&b.into_dyn(), false, device)),
        })
    }
}
