//! Positional encodings added to a sequence `(B, T, d)`: phm-nn's
//! [`phm_nn::nn::PositionalEncoding`] in burn.
//!
//! ```text
//!     y[b, t, :] = x[b, t, :] + P[start + t, :]
//!     sinusoidal:  P[p, 2i] = sin(p / 10000^(2i/d)),   P[p, 2i+1] = cos(p / 10000^(2i/d))
//!     learned:     P is a parameter `weight` (max_len, d)
//! ```
//!
//! The sinusoidal table is phm-nn's own (computed in `f64`, rounded to the input's dtype), so
//! the two crates add the same values.
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::transformer::PositionalEncodingConfig;
//! let device = Device::default();
//! let pe = PositionalEncodingConfig::new(4).init::<f64>(&device)?; // sinusoidal
//! let y = pe.forward(Tensor::<3>::zeros([1, 2, 4], (&device, phm_burn::burn::tensor::DType::F64)));
//! let y: Vec<f64> = y.to_data().try_to_vec::<f64>().unwrap();
//! assert_eq!(y[4 + 1], 1f64.cos()); // P[1, 1]
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use phm_nn::prelude::{SeedableRng, StdRng};
use phm_nn::Float;

use crate::bridge::{array_from_tensor, tensor_from_array};
use crate::Bridge;

/// Configuration of a [`PositionalEncoding`].
#[derive(Config, Debug)]
pub struct PositionalEncodingConfig {
    /// Width `d` of the rows.
    pub width: usize,
    /// `None`: sinusoidal (default); `Some(max_len)`: a learned table of `max_len` rows.
    #[config(default = "None")]
    pub learned: Option<usize>,
    /// Seed of the generator drawing a learned table (phm-nn's `N(0, 0.02²)`).
    #[config(default = 0)]
    pub seed: u64,
}

impl PositionalEncodingConfig {
    /// Builds the encoding in `F`'s dtype on `device`.
    ///
    /// # Errors
    /// [`phm_nn::PhmError::ZeroSize`] for a zero width or `max_len`.
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<PositionalEncoding> {
        let native = match self.learned {
            None => phm_nn::nn::PositionalEncoding::<F>::sinusoidal(self.width)?,
            Some(max_len) => phm_nn::nn::PositionalEncoding::learned(
                max_len,
                self.width,
                phm_nn::nn::DEFAULT_LEARNED_INIT,
                &mut StdRng::seed_from_u64(self.seed),
            )?,
        };
        PositionalEncoding::from_native(&native, device)
    }
}

/// A sinusoidal or learned positional encoding; see the [module docs](self).
#[derive(Module, Debug)]
pub struct PositionalEncoding {
    /// The learned table `(max_len, d)`, `None` for sinusoidal.
    pub weight: Option<Param<Tensor<2>>>,
    /// Width `d`.
    pub width: usize,
}

impl PositionalEncoding {
    /// `x + P[start..start + T]`.
    ///
    /// # Shapes
    /// - `x`: `[B, T, d]`
    /// - output: `[B, T, d]`
    ///
    /// # Panics
    /// If the last axis of `x` is not `d`, or the table is learned and `start + T > max_len`.
    #[track_caller]
    pub fn forward_at(&self, x: Tensor<3>, start: usize) -> Tensor<3> {
        let [_, t, d] = x.dims();
        assert_eq!(
            d,
            self.width,
            "PositionalEncoding::forward: input has shape {:?}, expected [B, T, {}]",
            x.dims(),
            self.width
        );
        let p = match &self.weight {
            Some(w) => {
                let [max_len, _] = w.dims();
                assert!(
                    start + t <= max_len,
                    "PositionalEncoding::forward: positions {start}..{} exceed the learned table's max_len {max_len}",
                    start + t
                );
                w.val().slice([start..start + t, 0..d])
            }
            None => {
                let table = phm_nn::nn::PositionalEncoding::<f64>::sinusoidal(d)
                    .expect("d > 0: the encoding was built with it")
                    .table(start + t);
                let rows = table.slice(phm_nn::ndarray::s![start.., ..]).into_dyn();
                tensor_from_array::<f64, 2>(rows, &x.device()).cast(x.dtype())
            }
        };
        x + p.unsqueeze::<3>()
    }

    /// `x + P[0..T]`; see [`forward_at`](Self::forward_at).
    ///
    /// # Shapes
    /// - `x`: `[B, T, d]`
    /// - output: `[B, T, d]`
    ///
    /// # Panics
    /// As [`forward_at`](Self::forward_at).
    #[track_caller]
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_at(x, 0)
    }
}

impl Bridge for PositionalEncoding {
    type Native<F: Float> = phm_nn::nn::PositionalEncoding<F>;

    fn to_native<F: Float>(&self) -> phm_nn::Result<Self::Native<F>> {
        match &self.weight {
            None => phm_nn::nn::PositionalEncoding::sinusoidal(self.width),
            Some(w) => {
                let [max_len, width] = w.dims();
                let native = phm_nn::nn::PositionalEncoding::learned(
                    max_len,
                    width,
                    phm_nn::nn::DEFAULT_LEARNED_INIT,
                    &mut StdRng::seed_from_u64(0),
                )?;
                let value = array_from_tensor::<F, 2>(&w.val(), "weight")?;
                native
                    .weight_param()
                    .expect("learned")
                    .set_value(value.view())?;
                Ok(native)
            }
        }
    }

    fn from_native<F: Float>(native: &Self::Native<F>, device: &Device) -> phm_nn::Result<Self> {
        Ok(PositionalEncoding {
            weight: native
                .weight_param()
                .map(|w| Param::from_tensor(tensor_from_array(w.value().view(), device))),
            width: native.width(),
        })
    }
}
