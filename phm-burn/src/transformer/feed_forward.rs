//! The position-wise feed-forward block of a Transformer, phm-nn's
//! [`phm_nn::nn::transformer::FeedForward`] in burn.
//!
//! ```text
//!     Y = fc2(gelu(fc1(X)))      fc1: d → f,  fc2: f → d,  gelu(x) = ½·x·(1 + erf(x/√2))
//! ```
//!
//! The GELU is the exact (erf) one, as phm-nn and PyTorch's default.
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::transformer::FeedForwardConfig;
//! let device = Device::default();
//! let ffn = FeedForwardConfig::new(8, 32).init::<f32>(&device)?;
//! assert_eq!(ffn.forward(Tensor::<3>::ones([2, 3, 8], &device)).dims(), [2, 3, 8]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::collections::HashMap;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};
use phm_nn::nn::transformer as native;
use phm_nn::prelude::{SeedableRng, StdRng};
use phm_nn::Float;

use super::proj::Proj;
use super::{load_values, native_child_dyn, native_values};
use crate::Bridge;

/// Configuration of a [`FeedForward`].
#[derive(Config, Debug)]
pub struct FeedForwardConfig {
    /// Model width `d`.
    pub width: usize,
    /// Hidden width `f`.
    pub hidden: usize,
    /// Seed of the generator drawing the layers (phm-nn's init).
    #[config(default = 0)]
    pub seed: u64,
}

impl FeedForwardConfig {
    /// Builds the block in `F`'s dtype on `device`: phm-nn's init with a generator seeded by
    /// `seed`.
    ///
    /// # Errors
    /// Those of [`phm_nn::nn::transformer::FeedForwardConfig::init`] (a zero width).
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<FeedForward> {
        let native = native::FeedForwardConfig::new(self.width, self.hidden)
            .init::<F, _>(None, &mut StdRng::seed_from_u64(self.seed))?;
        FeedForward::from_native(&native, device)
    }
}

/// `fc2(gelu(fc1(X)))`; see the [module docs](self). Parameters `fc1.*`, `fc2.*`.
#[derive(Module, Debug)]
pub struct FeedForward {
    /// `d → f`.
    pub fc1: Proj,
    /// `f → d`.
    pub fc2: Proj,
    /// Model width `d`.
    pub width: usize,
    /// Hidden width `f`.
    pub hidden: usize,
}

impl FeedForward {
    /// `fc2(gelu(fc1(x)))` on the last axis.
    ///
    /// # Shapes
    /// - `x`: `[..., d]`
    /// - output: `[..., d]`
    ///
    /// # Panics
    /// If the last axis of `x` is not `d`.
    #[track_caller]
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        assert_eq!(
            dims[D - 1],
            self.width,
            "FeedForward::forward: input has shape {dims:?}, expected [.., {}]",
            self.width
        );
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }
}

impl Bridge for FeedForward {
    type Native<F: Float> = native::FeedForward<F>;

    fn to_native<F: Float>(&self) -> phm_nn::Result<Self::Native<F>> {
        let out = native::FeedForwardConfig::new(self.width, self.hidden)
            .init::<F, _>(None, &mut StdRng::seed_from_u64(0))?;
        let mut values = HashMap::new();
        native_values(&*self.fc1.to_native::<F>()?, "fc1", &mut values);
        native_values(&*self.fc2.to_native::<F>()?, "fc2", &mut values);
        load_values(&out, values)?;
        Ok(out)
    }

    /// # Errors
    /// [`phm_nn::PhmError::CheckpointMismatch`] for a layer kind this module cannot hold.
    fn from_native<F: Float>(native: &Self::Native<F>, device: &Device) -> phm_nn::Result<Self> {
        Ok(FeedForward {
            fc1: Proj::from_native(native_child_dyn(native, "fc1")?, device)?,
            fc2: Proj::from_native(native_child_dyn(native, "fc2")?, device)?,
            width: native.width(),
            hidden: native.hidden(),
        })
    }
}
