//! Dense 1-D and 2-D convolutions (phm-nn's `Conv1d`, `Conv2d`).
//!
//! ```text
//!     Y = conv(X, K) + bias     X: (B, C_in, H, W)   K: (C_out, C_in, kh, kw)   Y: (B, C_out, H_out, W_out)
//! ```
//!
//! Parameters `weight` (PyTorch's layout) and `bias`; PyTorch's default init, drawn by
//! phm-nn from a seeded `StdRng`.
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::conv::{Conv1dConfig, Conv2dConfig};
//! let device = Device::default();
//! let conv = Conv2dConfig::new(3, 8, [3, 3]).with_padding([1, 1]).init::<f32>(&device)?;
//! assert_eq!(conv.forward(Tensor::<4>::ones([2, 3, 5, 5], &device)).dims(), [2, 8, 5, 5]);
//! let conv = Conv1dConfig::new(2, 4, 3).with_dilation(2).init::<f32>(&device)?;
//! assert_eq!(conv.forward(Tensor::<3>::ones([2, 2, 9], &device)).dims(), [2, 4, 5]);
//! # Ok::<(), phm_burn::phm_nn::PhmError>(())
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::module::{conv1d, conv2d};
use burn::tensor::{Device, Tensor};
use phm_nn::ndarray::{Ix1, Ix3, Ix4};
use phm_nn::rand::{rngs::StdRng, SeedableRng};
use phm_nn::Float;

use super::{check_input, options};
use crate::bridge::Bridge;
use crate::linear::array_of;
use crate::rules::param;

/// Configuration of a [`Conv2d`] layer.
#[derive(Config, Debug, PartialEq)]
pub struct Conv2dConfig {
    /// Input channels `C_in`.
    pub in_channels: usize,
    /// Output channels `C_out`.
    pub out_channels: usize,
    /// Kernel size `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// Stride.
    #[config(default = "[1, 1]")]
    pub stride: [usize; 2],
    /// Zero padding on each side.
    #[config(default = "[0, 0]")]
    pub padding: [usize; 2],
    /// Dilation.
    #[config(default = "[1, 1]")]
    pub dilation: [usize; 2],
    /// Whether the layer adds a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Seed of the phm-nn init the parameters are drawn with.
    #[config(default = 0)]
    pub seed: u64,
}

impl Conv2dConfig {
    /// The layer, drawn as phm-nn's `Conv2dConfig::init` draws it from a `StdRng` seeded with
    /// `seed`, in `F`'s dtype on `device`.
    ///
    /// # Errors
    /// phm-nn's: [`PhmError::ZeroSize`](phm_nn::PhmError::ZeroSize) for zero sizes,
    /// [`PhmError::InvalidArgument`](phm_nn::PhmError::InvalidArgument) for a zero stride or
    /// dilation.
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<Conv2d> {
        let [kh, kw] = self.kernel_size;
        let native = phm_nn::nn::Conv2dConfig::new(self.in_channels, self.out_channels, (kh, kw))
            .with_stride((self.stride[0], self.stride[1]))
            .with_padding((self.padding[0], self.padding[1]))
            .with_dilation((self.dilation[0], self.dilation[1]))
            .with_bias(self.bias)
            .init::<F, _>(&mut StdRng::seed_from_u64(self.seed))?;
        Conv2d::from_native(&native, device)
    }
}

/// A dense 2-D convolution; see the [module docs](self).
#[derive(Module, Debug)]
pub struct Conv2d {
    /// The kernel `(C_out, C_in, kh, kw)`.
    pub weight: Param<Tensor<4>>,
    /// The bias `(C_out)`, if any.
    pub bias: Option<Param<Tensor<1>>>,
    /// Stride.
    pub stride: [usize; 2],
    /// Zero padding on each side.
    pub padding: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
}

impl Conv2d {
    /// The convolution of `x`.
    ///
    /// # Shapes
    /// - `x`: `(B, C_in, H, W)`; output `(B, C_out, H_out, W_out)`.
    ///
    /// # Panics
    /// If `x` does not have `C_in` channels or the layer's dtype, or the dilated kernel is larger than the padded
    /// input.
    #[track_caller]
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        check_input("Conv2d::forward", &x, &self.weight);
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            options(self.stride, self.padding, self.dilation),
        )
    }
}

impl Bridge for Conv2d {
    type Native<F: Float> = phm_nn::nn::Conv2d<F>;

    fn to_native<F: Float>(&self) -> phm_nn::Result<phm_nn::nn::Conv2d<F>> {
        let bias = match &self.bias {
            Some(b) => Some(array_of::<F, Ix1, 1>(b, "bias")?),
            None => None,
        };
        let pair = |a: [usize; 2]| (a[0], a[1]);
        phm_nn::nn::Conv2d::from_parts(
            array_of::<F, Ix4, 4>(&self.weight, "weight")?,
            bias,
            pair(self.stride),
            pair(self.padding),
            pair(self.dilation),
        )
    }

    /// # Errors
    /// None (every phm-nn `Conv2d` has a burn twin).
    fn from_native<F: Float>(
        native: &phm_nn::nn::Conv2d<F>,
        device: &Device,
    ) -> phm_nn::Result<Self> {
        let g = native.geometry();
        let arr = |(a, b): (usize, usize)| [a, b];
        Ok(Conv2d {
            weight: param::<F, 4>(&native.weight().into_dyn(), false, device),
            bias: native
                .bias()
                .map(|b| param::<F, 1>(&b.into_dyn(), false, device)),
            stride: arr(g.stride()),
            padding: arr(g.padding()),
            dilation: arr(g.dilation()),
        })
    }
}

/// Configuration of a [`Conv1d`] layer.
#[derive(Config, Debug, PartialEq)]
pub struct Conv1dConfig {
    /// Input channels `C_in`.
    pub in_channels: usize,
    /// Output channels `C_out`.
    pub out_channels: usize,
    /// Kernel size `k`.
    pub kernel_size: usize,
    /// Stride.
    #[config(default = 1)]
    pub stride: usize,
    /// Zero padding on each side.
    #[config(default = 0)]
    pub padding: usize,
    /// Dilation.
    #[config(default = 1)]
    pub dilation: usize,
    /// Whether the layer adds a bias.
    #[config(default = true)]
    pub bias: bool,
    /// Seed of the phm-nn init the parameters are drawn with.
    #[config(default = 0)]
    pub seed: u64,
}

impl Conv1dConfig {
    /// The layer, drawn as phm-nn's `Conv1dConfig::init` draws it from a `StdRng` seeded with
    /// `seed`, in `F`'s dtype on `device`.
    ///
    /// # Errors
    /// As [`Conv2dConfig::init`].
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<Conv1d> {
        let native =
            phm_nn::nn::Conv1dConfig::new(self.in_channels, self.out_channels, self.kernel_size)
                .with_stride(self.stride)
                .with_padding(self.padding)
                .with_dilation(self.dilation)
                .with_bias(self.bias)
                .init::<F, _>(&mut StdRng::seed_from_u64(self.seed))?;
        Conv1d::from_native(&native, device)
    }
}

/// A dense 1-D convolution; see the [module docs](self).
#[derive(Module, Debug)]
pub struct Conv1d {
    /// The kernel `(C_out, C_in, k)`.
    pub weight: Param<Tensor<3>>,
    /// The bias `(C_out)`, if any.
    pub bias: Option<Param<Tensor<1>>>,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Dilation.
    pub dilation: usize,
}

impl Conv1d {
    /// The convolution of `x`.
    ///
    /// # Shapes
    /// - `x`: `(B, C_in, L)`; output `(B, C_out, L_out)`.
    ///
    /// # Panics
    /// If `x` does not have `C_in` channels or the layer's dtype, or the dilated kernel is longer than the padded
    /// input.
    #[track_caller]
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        check_input("Conv1d::forward", &x, &self.weight);
        conv1d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
            options([self.stride], [self.padding], [self.dilation]),
        )
    }
}

impl Bridge for Conv1d {
    type Native<F: Float> = phm_nn::nn::Conv1d<F>;

    fn to_native<F: Float>(&self) -> phm_nn::Result<phm_nn::nn::Conv1d<F>> {
        let bias = match &self.bias {
            Some(b) => Some(array_of::<F, Ix1, 1>(b, "bias")?),
            None => None,
        };
        phm_nn::nn::Conv1d::from_parts(
            array_of::<F, Ix3, 3>(&self.weight, "weight")?,
            bias,
            self.stride,
            self.padding,
            self.dilation,
        )
    }

    /// # Errors
    /// None (every phm-nn `Conv1d` has a burn twin).
    fn from_native<F: Float>(
        native: &phm_nn::nn::Conv1d<F>,
        device: &Device,
    ) -> phm_nn::Result<Self> {
        // phm-nn keeps a 1-D window as a height-1 2-D one: the width holds the sizes.
        let g = native.geometry();
        Ok(Conv1d {
            weight: param::<F, 3>(&native.weight().into_dyn(), false, device),
            bias: native
                .bias()
                .map(|b| param::<F, 1>(&b.into_dyn(), false, device)),
            stride: g.stride().1,
            padding: g.padding().1,
            dilation: g.dilation().1,
        })
    }
}
