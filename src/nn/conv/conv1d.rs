//! Dense 1-D convolution, the baseline for [`PhmConv1d`](super::PhmConv1d).
//!
//! ```text
//!     Y[b, o, t] = bias[o] + Σ_{c, j} K[o, c, j] · X[b, c, t·s + j·d − p]
//!     X: (B, C_in, L)   K: (C_out, C_in, k)   bias: (C_out)   Y: (B, C_out, ⌊(L + 2p − d·(k − 1) − 1)/s⌋ + 1)
//! ```
//!
//! PyTorch's `nn.Conv1d` (layout, output size, default init with `fan_in = C_in·k`); computed
//! as a 2-D convolution of height 1 (see [`Conv2d`](super::Conv2d)).
//!
//! ```
//! use phm_nn::prelude::*;
//! let mut rng = StdRng::seed_from_u64(0);
//! let conv = Conv1dConfig::new(2, 4, 3).with_padding(1).with_dilation(2).init::<f64, _>(&mut rng)?;
//! let y = conv.infer(ArrayD::ones(IxDyn(&[5, 2, 10])).view());
//! assert_eq!(y.shape(), &[5, 4, 8]); // 10 + 2 − 2·2 − 1 + 1 = 8
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{Array1, Array3, ArrayD, ArrayViewD, Ix3};
use rand::Rng;

use super::delegate_module;
use super::dense_core::DenseConv;
use crate::error::Result;
use crate::init::Init;
use crate::kernels::im2col::ConvGeometry;
use crate::module::{Module, Param};
use crate::Float;

/// Configuration of a dense [`Conv1d`] layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv1dConfig {
    /// Input channels `C_in`.
    pub in_channels: usize,
    /// Output channels `C_out`.
    pub out_channels: usize,
    /// Kernel size `k`.
    pub kernel_size: usize,
    /// Stride (default 1).
    pub stride: usize,
    /// Zero padding on each side (default 0).
    pub padding: usize,
    /// Dilation (default 1).
    pub dilation: usize,
    /// Whether the layer adds a bias (default `true`).
    pub bias: bool,
    /// Kernel init, with fans `(C_in·k, C_out·k)` (default [`Init::TorchLinear`], PyTorch's).
    pub weight_init: Init,
    /// Bias init, same fans (default [`Init::TorchLinear`]).
    pub bias_init: Init,
}

impl Conv1dConfig {
    /// A `C_in → C_out` convolution with a window of `kernel_size`, stride 1, no padding,
    /// dilation 1, a bias and PyTorch's default init.
    #[must_use]
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Self {
        Conv1dConfig {
            in_channels,
            out_channels,
            kernel_size,
            stride: 1,
            padding: 0,
            dilation: 1,
            bias: true,
            weight_init: Init::TorchLinear,
            bias_init: Init::TorchLinear,
        }
    }

    /// Sets the stride.
    #[must_use]
    pub fn with_stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the zero padding (on each side).
    #[must_use]
    pub fn with_padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the dilation.
    #[must_use]
    pub fn with_dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
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
    /// [`PhmError::ZeroSize`](crate::PhmError::ZeroSize) for zero channels or kernel size;
    /// [`PhmError::InvalidArgument`](crate::PhmError::InvalidArgument) for a zero stride or
    /// dilation, or an invalid init.
    pub fn init<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Conv1d<F>> {
        let core = DenseConv::init(
            1,
            self.in_channels,
            self.out_channels,
            &[self.kernel_size],
            options(self.stride, self.padding, self.dilation),
            (self.bias, self.weight_init, self.bias_init),
            rng,
        )?;
        Ok(Conv1d { core })
    }
}

/// 1-D options as the 2-D ones of a height-1 window.
pub(crate) fn options(stride: usize, padding: usize, dilation: usize) -> super::lowering::Options {
    ((1, stride), (0, padding), (1, dilation))
}

/// A dense 1-D convolution; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Conv1d<F: Float> {
    core: DenseConv<F>,
}

impl<F: Float> Conv1d<F> {
    /// A layer with the kernel `weight` `(C_out, C_in, k)` (PyTorch's layout), an optional bias
    /// `(C_out)`, and stride, padding and dilation.
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`](crate::PhmError::ShapeMismatch) if the bias length is not
    /// `C_out`; [`PhmError::ZeroSize`](crate::PhmError::ZeroSize) for an empty kernel;
    /// [`PhmError::InvalidArgument`](crate::PhmError::InvalidArgument) for a zero stride or
    /// dilation.
    pub fn from_parts(
        weight: Array3<F>,
        bias: Option<Array1<F>>,
        stride: usize,
        padding: usize,
        dilation: usize,
    ) -> Result<Self> {
        Ok(Conv1d {
            core: DenseConv::from_parts(
                1,
                weight.into_dyn(),
                bias,
                options(stride, padding, dilation),
            )?,
        })
    }

    /// The window as a height-1 2-D window.
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

    /// A copy of the kernel `(C_out, C_in, k)`.
    pub fn weight(&self) -> Array3<F> {
        self.core
            .weight_param()
            .value()
            .into_dimensionality::<Ix3>()
            .expect("the kernel is 3-D")
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

delegate_module!(Conv1d);
