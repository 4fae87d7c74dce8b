//! Dense 2-D convolution, the baseline PHM convolutions are measured against.
//!
//! ```text
//!     Y[b, o, oh, ow] = bias[o] + Σ_{c, i, j} K[o, c, i, j] · X[b, c, oh·s_h + i·d_h − p_h, ow·s_w + j·d_w − p_w]
//!     X: (B, C_in, H, W)   K: (C_out, C_in, kh, kw)   bias: (C_out)   Y: (B, C_out, H_out, W_out)
//! ```
//!
//! PyTorch's `nn.Conv2d` (cross-correlation, zero padding, weight layout, output size
//! `⌊(H + 2p − d·(k − 1) − 1)/s⌋ + 1`) and its default init `U(−1/√fan_in, 1/√fan_in)` for `K` and
//! the bias, `fan_in = C_in·kh·kw`. Computed image by image as `Y[b] = K̂ · cols(X[b])` with `K̂`
//! the kernel viewed as `(C_out, C_in·kh·kw)` and `cols(X[b])` `(C_in·kh·kw, H_out·W_out)` the
//! transposed im2col, written straight into the channels-first output; backward
//! `dK̂ += Σ_b G[b] cols(X[b])ᵀ`, `db += Σ G`, `dX[b] = col2im(K̂ᵀ G[b])`. Images are split
//! across the thread pool.
//!
//! ```
//! use phm_nn::prelude::*;
//! let mut rng = StdRng::seed_from_u64(0);
//! let conv = Conv2dConfig::new(3, 8, (3, 3)).with_stride(2).init::<f32, _>(&mut rng)?;
//! assert_eq!(conv.num_parameters(), 8 * 3 * 9 + 8);
//! let y = conv.infer(ArrayD::ones(IxDyn(&[4, 3, 9, 9])).view());
//! assert_eq!(y.shape(), &[4, 8, 4, 4]); // ⌊(9 − 3)/2⌋ + 1 = 4
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{Array1, Array4, ArrayD, ArrayViewD, Ix4};
use rand::Rng;

use super::dense_core::DenseConv;
use super::{delegate_module, Size2};
#[cfg(doc)]
use crate::error::PhmError;
use crate::error::Result;
use crate::init::Init;
use crate::kernels::im2col::ConvGeometry;
use crate::module::{Module, Param};
use crate::Float;

/// Configuration of a dense [`Conv2d`] layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2dConfig {
    /// Input channels `C_in`.
    pub in_channels: usize,
    /// Output channels `C_out`.
    pub out_channels: usize,
    /// Kernel size `(kh, kw)`.
    pub kernel_size: Size2,
    /// Stride (default 1).
    pub stride: Size2,
    /// Zero padding on each side (default 0).
    pub padding: Size2,
    /// Dilation (default 1).
    pub dilation: Size2,
    /// Whether the layer adds a bias (default `true`).
    pub bias: bool,
    /// Kernel init, with fans `(C_in·kh·kw, C_out·kh·kw)` (default [`Init::TorchLinear`], PyTorch's).
    pub weight_init: Init,
    /// Bias init, same fans (default [`Init::TorchLinear`]).
    pub bias_init: Init,
}

impl Conv2dConfig {
    /// A `C_in → C_out` convolution with a `kernel_size` window, stride 1, no padding,
    /// dilation 1, a bias and PyTorch's default init.
    #[must_use]
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: impl Into<Size2>) -> Self {
        Conv2dConfig {
            in_channels,
            out_channels,
            kernel_size: kernel_size.into(),
            stride: Size2(1, 1),
            padding: Size2(0, 0),
            dilation: Size2(1, 1),
            bias: true,
            weight_init: Init::TorchLinear,
            bias_init: Init::TorchLinear,
        }
    }

    /// Sets the stride.
    #[must_use]
    pub fn with_stride(mut self, stride: impl Into<Size2>) -> Self {
        self.stride = stride.into();
        self
    }

    /// Sets the zero padding (on each side).
    #[must_use]
    pub fn with_padding(mut self, padding: impl Into<Size2>) -> Self {
        self.padding = padding.into();
        self
    }

    /// Sets the dilation.
    #[must_use]
    pub fn with_dilation(mut self, dilation: impl Into<Size2>) -> Self {
        self.dilation = dilation.into();
        self
    }

    /// Sets whether the layer has a bias.
    #[must_use]
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets the kernel init.
    #[must_use]
    pub fn with_weight_init(mut self, init: Init) -> Self {
        self.weight_init = init;
        self
    }

    /// Sets the bias init.
    #[must_use]
    pub fn with_bias_init(mut self, init: Init) -> Self {
        self.bias_init = init;
        self
    }

    /// Builds the layer, drawing its parameters from `rng`.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] for zero channels or kernel size; [`PhmError::InvalidArgument`]
    /// for a zero stride or dilation, or an invalid init; [`PhmError::TooLarge`] if the
    /// padding or dilation makes the size arithmetic overflow (see [`ConvGeometry::new`]).
    pub fn init<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Conv2d<F>> {
        let core = DenseConv::init(
            2,
            self.in_channels,
            self.out_channels,
            &[self.kernel_size.0, self.kernel_size.1],
            (
                self.stride.into(),
                self.padding.into(),
                self.dilation.into(),
            ),
            (self.bias, self.weight_init, self.bias_init),
            rng,
        )?;
        Ok(Conv2d { core })
    }
}

/// A dense 2-D convolution; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Conv2d<F: Float> {
    core: DenseConv<F>,
}

impl<F: Float> Conv2d<F> {
    /// A layer with the kernel `weight` `(C_out, C_in, kh, kw)` (PyTorch's layout), an optional
    /// bias `(C_out)`, and stride, padding and dilation.
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`] if the bias length is not `C_out`; [`PhmError::ZeroSize`] for
    /// an empty kernel; [`PhmError::InvalidArgument`] for a zero stride or dilation;
    /// [`PhmError::TooLarge`] as [`Conv2dConfig::init`].
    pub fn from_parts(
        weight: Array4<F>,
        bias: Option<Array1<F>>,
        stride: impl Into<Size2>,
        padding: impl Into<Size2>,
        dilation: impl Into<Size2>,
    ) -> Result<Self> {
        let options = (
            stride.into().into(),
            padding.into().into(),
            dilation.into().into(),
        );
        Ok(Conv2d {
            core: DenseConv::from_parts(2, weight.into_dyn(), bias, options)?,
        })
    }

    /// The window: input channels, kernel size, stride, padding, dilation.
    pub fn geometry(&self) -> ConvGeometry {
        self.core.geometry()
    }

    /// Input channels `C_in`.
    pub fn in_channels(&self) -> usize {
        self.core.geometry().channels()
    }

    /// Output channels `C_out`.
    pub fn out_channels(&self) -> usize {
        self.core.out_channels()
    }

    /// A copy of the kernel `(C_out, C_in, kh, kw)`.
    pub fn weight(&self) -> Array4<F> {
        self.core
            .weight_param()
            .value()
            .into_dimensionality::<Ix4>()
            .expect("the kernel is 4-D")
    }

    /// A copy of the bias, if any.
    pub fn bias(&self) -> Option<Array1<F>> {
        self.core.bias()
    }

    /// The kernel's handle.
    pub fn weight_param(&self) -> &Param<F> {
        self.core.weight_param()
    }

    /// The bias's handle, if any.
    pub fn bias_param(&self) -> Option<&Param<F>> {
        self.core.bias_param()
    }
}

delegate_module!(Conv2d);
