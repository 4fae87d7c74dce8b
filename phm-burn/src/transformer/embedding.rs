//! A token embedding table, phm-nn's [`phm_nn::nn::Embedding`] in burn.
//!
//! ```text
//!     y[b, t, :] = E[ids[b, t], :]          E: (vocab, d)
//! ```
//!
//! The gradient of `E` adds each position's output gradient into the row of its id.
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Int, Tensor};
//! use phm_burn::transformer::EmbeddingConfig;
//! let device = Device::default();
//! let embed = EmbeddingConfig::new(10, 4).init::<f32>(&device)?;
//! let y = embed.forward(Tensor::<2, Int>::from_ints([[1, 2, 3]], &device));
//! assert_eq!(y.dims(), [1, 3, 4]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor};
use phm_nn::prelude::{SeedableRng, StdRng};
use phm_nn::{Float, PhmError};

use crate::bridge::{burn_param, native_param};
use crate::Bridge;

/// Configuration of an [`Embedding`].
#[derive(Config, Debug)]
pub struct EmbeddingConfig {
    /// Number of rows (distinct ids).
    pub vocab: usize,
    /// Width `d` of each row.
    pub width: usize,
    /// Seed of the generator that draws the table (phm-nn's init, `N(0, 1)` as PyTorch).
    #[config(default = 0)]
    pub seed: u64,
}

impl EmbeddingConfig {
    /// Builds the table in `F`'s dtype on `device`: phm-nn's init with a generator seeded by
    /// `seed`.
    ///
    /// # Errors
    /// [`phm_nn::PhmError::ZeroSize`] for `vocab = 0` or `width = 0`.
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<Embedding> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let native =
            phm_nn::nn::EmbeddingConfig::new(self.vocab, self.width).init::<F, _>(&mut rng)?;
        Embedding::from_native(&native, device)
    }
}

/// A token embedding table; see the [module docs](self).
#[derive(Module, Debug)]
pub struct Embedding {
    /// The table `E` `(vocab, d)`.
    pub weight: Param<Tensor<2>>,
}

impl Embedding {
    /// Number of rows (ids `0..vocab`).
    pub fn vocab(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The rows of `ids`. The ids are checked here, not left to the backend's gather (a GPU
    /// backend may not check indices and would read another row): the check reads the
    /// smallest and largest id back from the device.
    ///
    /// # Shapes
    /// - `ids`: `[B, T]`
    /// - output: `[B, T, d]`
    ///
    /// # Panics
    /// If an id is negative or not below the vocabulary size (the message names the id and
    /// `vocab`); [`try_forward`](Self::try_forward) reports it instead.
    #[track_caller]
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.try_forward(ids)
            .unwrap_or_else(|e| panic!("Embedding::forward: {e}"))
    }

    /// As [`forward`](Self::forward), reporting a bad id instead of panicking.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] if an id is negative or `≥ vocab`, naming the id and
    /// `vocab` (the smallest id if one is negative, else the largest).
    pub fn try_forward(&self, ids: Tensor<2, Int>) -> phm_nn::Result<Tensor<3>> {
        self.check_ids(&ids)?;
        Ok(burn::tensor::module::embedding(self.weight.val(), ids))
    }

    fn check_ids(&self, ids: &Tensor<2, Int>) -> phm_nn::Result<()> {
        if ids.dims().contains(&0) {
            return Ok(());
        }
        let vocab = self.vocab();
        // One read back from the device for both bounds.
        let bounds = Tensor::cat(vec![ids.clone().min(), ids.clone().max()], 0)
            .into_data()
            .iter::<i64>()
            .collect::<Vec<i64>>();
        let (min, max) = (bounds[0], bounds[1]);
        let bad = if min < 0 {
            Some(min)
        } else if usize::try_from(max).map_or(true, |m| m >= vocab) {
            Some(max)
        } else {
            None
        };
        match bad {
            Some(id) => Err(PhmError::InvalidArgument {
                what: "ids",
                reason: format!("id {id} is out of range for vocab {vocab}"),
            }),
            None => Ok(()),
        }
    }
}

impl Bridge for Embedding {
    type Native<F: Float> = phm_nn::nn::Embedding<F>;

    fn to_native<F: Float>(&self) -> phm_nn::Result<Self::Native<F>> {
        phm_nn::nn::Embedding::from_param(native_param::<F, 2>(&self.weight, "weight")?)
    }

    fn from_native<F: Float>(native: &Self::Native<F>, device: &Device) -> phm_nn::Result<Self> {
        Ok(Embedding {
            weight: burn_param::<F, 2>(native.weight_param(), device),
        })
    }
}
