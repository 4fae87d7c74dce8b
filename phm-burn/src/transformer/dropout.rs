//! Inverted dropout, active only while training on an autodiff device.
//!
//! ```text
//!     training:   y = x ⊙ m / (1 − p),   m_i ~ Bernoulli(1 − p)
//!     otherwise:  y = x
//! ```
//!
//! It is off on a plain (inference, non-autodiff) device — where [`Module::valid`] puts a
//! model — when its `training` flag is cleared (burn's freezing does), and for `p = 0`
//! (what the parity tests use).
//! The masks come from burn's generator, so they differ from phm-nn's seeded masks; the
//! layer has no parameters.
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::transformer::DropoutConfig;
//! let device = Device::default(); // not autodiff: inference, dropout off
//! let drop = DropoutConfig::new(0.5).init()?;
//! let x = Tensor::<1>::from_data([1.0f32, 2.0, 3.0], &device);
//! assert_eq!(drop.forward(x.clone()).to_data(), x.to_data());
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use burn::config::Config;
use burn::module::{Flag, Module, Param};
use burn::tensor::{Device, Distribution, Tensor};
use phm_nn::Float;

use crate::Bridge;

/// Configuration of a [`Dropout`].
#[derive(Config, Debug)]
pub struct DropoutConfig {
    /// Probability `p ∈ [0, 1)` of zeroing an element.
    pub p: f64,
}

impl DropoutConfig {
    /// Builds the layer.
    ///
    /// # Errors
    /// [`phm_nn::PhmError::InvalidArgument`] unless `0 ≤ p < 1`.
    pub fn init(&self) -> phm_nn::Result<Dropout> {
        Dropout::from_native(
            &phm_nn::nn::Dropout::<f64>::new(self.p, 0)?,
            &Device::default(),
        )
    }
}

/// Inverted dropout; see the [module docs](self).
#[derive(Module, Debug)]
pub struct Dropout {
    /// Probability of zeroing an element.
    pub p: f64,
    /// Whether the layer behaves as in training (cleared by freezing).
    pub training: Param<Flag>,
}

impl Dropout {
    /// Drops elements of `x` while training on an autodiff device; else returns `x`.
    ///
    /// # Shapes
    /// - `x`: `[...]`
    /// - output: the shape of `x`
    ///
    /// # Panics
    /// Never.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.p == 0.0 || !self.training.is_enabled() || !x.device().is_autodiff() {
            return x;
        }
        let keep = 1.0 - self.p;
        let mask = x.random_like(Distribution::Bernoulli(keep));
        x * mask / keep
    }
}

impl Bridge for Dropout {
    type Native<F: Float> = phm_nn::nn::Dropout<F>;

    /// The phm-nn layer with this `p` and seed 0.
    fn to_native<F: Float>(&self) -> phm_nn::Result<Self::Native<F>> {
        phm_nn::nn::Dropout::new(self.p, 0)
    }

    fn from_native<F: Float>(native: &Self::Native<F>, _device: &Device) -> phm_nn::Result<Self> {
        Ok(Dropout {
            p: native.p(),
            training: Param::from_bool(true),
        })
    }
}
