//! The position-wise feed-forward block of a Transformer, phm-nn's
//! [`phm_nn::nn::transformer::FeedForward`] in burn.
//!
//! ```text
//!     Y = fc2(gelu(fc1(X)))      fc1: d → f,  fc2: f → d,  gelu(x) = ½·x·(1 + erf(x/√2))
//! ```
//!
//! The GELU is the exact (erf) one, as phm-nn and PyTorch's default. Both layers are dense,
//! PHM or low-rank PHM ([`ProjectionConfig`]).
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::linear::ProjectionConfig;
//! use phm_burn::transformer::FeedForwardConfig;
//! let device = Device::default();
//! let ffn = FeedForwardConfig::new(8, 32)
//!     .with_projection(ProjectionConfig::low_rank(2, 1))
//!     .init::<f32>(&device)?;
//! assert_eq!(ffn.forward(Tensor::<3>::ones([2, 3, 8], &device)).dims(), [2, 3, 8]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::collections::HashMap;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};
use phm_nn::nn::transformer as native;
use phm_nn::nn::PhmRules as NativeRules;
use phm_nn::prelude::{SeedableRng, StdRng};
use phm_nn::Float;

use super::{in_child, load_values, native_child_dyn, native_values, projection_config};
use crate::linear::{Projection, ProjectionConfig};
use crate::Bridge;

/// Configuration of a [`FeedForward`].
#[derive(Config, Debug)]
pub struct FeedForwardConfig {
    /// Model width `d`.
    pub width: usize,
    /// Hidden width `f`.
    pub hidden: usize,
    /// Both layers' kind (default dense).
    #[config(default = "ProjectionConfig::Dense")]
    pub projection: ProjectionConfig,
    /// Seed of the generator drawing the layers (phm-nn's init).
    #[config(default = 0)]
    pub seed: u64,
}

impl FeedForwardConfig {
    /// Builds the block in `F`'s dtype on `device`: phm-nn's init with a generator seeded by
    /// `seed`.
    ///
    /// # Errors
    /// Those of [`phm_nn::nn::transformer::FeedForwardConfig::init`] (a zero width, a width
    /// not a multiple of the projection's `n`).
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<FeedForward> {
        let native = native::FeedForwardConfig::new(self.width, self.hidden)
            .with_projection(self.projection.to_native())
            .init::<F, _>(None, &mut StdRng::seed_from_u64(self.seed))?;
        FeedForward::from_native(&native, device)
    }
}

/// `fc2(gelu(fc1(X)))`; see the [module docs](self). Parameters `fc1.*`, `fc2.*`.
#[derive(Module, Debug)]
pub struct FeedForward {
    /// `d → f`.
    pub fc1: Projection,
    /// `f → d`.
    pub fc2: Projection,
    /// Model width `d`.
    pub width: usize,
    /// Hidden width `f`.
    pub hidden: usize,
    /// Both layers' kind.
    #[module(skip)]
    pub projection: ProjectionConfig,
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
        self.forward_with_rules(x, None)
    }

    /// [`forward`](Self::forward) with the model's shared rule matrices `rules` `(n, n, n)`
    /// for layers built without their own rules (`None` otherwise).
    ///
    /// # Shapes
    /// - `x`: `[..., d]`
    /// - `rules`: `[n, n, n]`
    /// - output: `[..., d]`
    ///
    /// # Panics
    /// As [`forward`](Self::forward), and as [`Projection::forward_with_rules`] when the
    /// rules do not fit the layers.
    #[track_caller]
    pub fn forward_with_rules<const D: usize>(
        &self,
        x: Tensor<D>,
        rules: Option<&Tensor<3>>,
    ) -> Tensor<D> {
        let dims = x.dims();
        assert_eq!(
            dims[D - 1],
            self.width,
            "FeedForward::forward: input has shape {dims:?}, expected [.., {}]",
            self.width
        );
        let h = gelu(self.fc1.forward_with_rules(x, rules));
        self.fc2.forward_with_rules(h, rules)
    }

    /// The phm-nn twin; `shared` are the model's phm-nn rules when the layers use shared
    /// rules.
    ///
    /// # Errors
    /// As [`Bridge::to_native`], and [`phm_nn::PhmError::InvalidArgument`] if the layers
    /// use shared rules and `shared` is `None`.
    pub fn to_native_with_rules<F: Float>(
        &self,
        shared: Option<&NativeRules<F>>,
    ) -> phm_nn::Result<native::FeedForward<F>> {
        let out = native::FeedForwardConfig::new(self.width, self.hidden)
            .with_projection(self.projection.to_native())
            .init::<F, _>(shared, &mut StdRng::seed_from_u64(0))?;
        let mut values = HashMap::new();
        for (name, p) in [("fc1", &self.fc1), ("fc2", &self.fc2)] {
            let twin = p.to_native::<F>(shared).map_err(in_child(name))?;
            native_values(&*twin, name, &mut values);
        }
        load_values(&out, values)?;
        Ok(out)
    }

    /// The block with the values of `native`; with `shared`, its PHM-family layers hold no
    /// rules (the model holds them).
    ///
    /// # Errors
    /// As [`Bridge::from_native`].
    pub fn from_native_with_rules<F: Float>(
        native: &native::FeedForward<F>,
        shared: bool,
        device: &Device,
    ) -> phm_nn::Result<Self> {
        let layer = |name| {
            Projection::from_native::<F>(native_child_dyn(native, name)?, shared, device)
                .map_err(in_child(name))
        };
        Ok(FeedForward {
            fc1: layer("fc1")?,
            fc2: layer("fc2")?,
            width: native.width(),
            hidden: native.hidden(),
            projection: projection_config(native.projection()),
        })
    }
}

impl Bridge for FeedForward {
    type Native<F: Float> = native::FeedForward<F>;

    /// # Errors
    /// [`phm_nn::PhmError::CheckpointMismatch`] for a dtype that is not `F`'s;
    /// [`phm_nn::PhmError::InvalidArgument`] if the layers use a model's shared rules.
    fn to_native<F: Float>(&self) -> phm_nn::Result<Self::Native<F>> {
        self.to_native_with_rules(None)
    }

    /// # Errors
    /// [`phm_nn::PhmError::InvalidArgument`] for a layer that is not a phm-nn `Linear`,
    /// `PhmLinear` or `LphmLinear`.
    fn from_native<F: Float>(native: &Self::Native<F>, device: &Device) -> phm_nn::Result<Self> {
        Self::from_native_with_rules(native, false, device)
    }
}
