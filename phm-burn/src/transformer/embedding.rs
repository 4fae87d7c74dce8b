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
use phm_nn::Float;

use crate::bridge::{array_from_tensor, tensor_from_array};
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
    /// The rows of `ids`.
    ///
    /// # Shapes
    /// - `ids`: `[B, T]`
    /// - output: `[B, T, d]`
    ///
    /// # Panics
    /// If an id is not below the vocabulary size (burn's index check, backend-dependent).
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        burn::tensor::module::embedding(self.weight.val(), ids)
    }
}

impl Bridge for Embedding {
    type Native<F: Float> = phm_nn::nn::Embedding<F>;

    fn to_native<F: Float>(&self) -> phm_nn::Result<Self::Native<F>> {
        let w = array_from_tensor::<F, 2>(&self.weight.val(), "weight")?;
        phm_nn::nn::Embedding::from_param(phm_nn::Param::new(w))
    }

    fn from_native<F: Float>(native: &Self::Native<F>, device: &Device) -> phm_nn::Result<Self> {
        let w = native.weight_param().value();
        Ok(Embedding {
            weight: Param::from_tensor(tensor_from_array(w.view(), device)),
        })
    }
}
