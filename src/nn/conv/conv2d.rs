//! Dense 2-D convolution, the baseline PHM convolutions are measured against.
//!
//! ```text
//!     Y[b, o, oh, ow] = bias[o] + Σ_{c, i, j} K[o, c, i, j] · X[b, c, oh·s_h + i·d_h − p_h, ow·s_w + j·d_w − p_w]
//!     X: (B, C_in, H, W)   K: (C_out, C_in, kh, kw)   bias: (C_out)   Y: (B, C_out, H_out, W_out)
//! ```
//!
//! PyTorch's `nn.Conv2d` (cross-correlation, zero padding, weight layout, output size
//! `⌊(H + 2p − d·(k − 1) − 1)/s⌋ + 1`) and its default init `U(−1/√fan_in, 1/√fan_in)` for `K` and
//! the bias, `fan_in = C_in·kh·kw`. Computed as `im2col(X) · K̂ᵀ` with `K̂` the kernel viewed as
//! `(C_out, C_in·kh·kw)`; backward `dK̂ += Gᵀ cols`, `db += Σ G`, `dX = col2im(G K̂)`.
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

use ndarray::{Array1, Array2, Array4, ArrayD, ArrayView2, ArrayViewD, ArrayViewMut2, Ix1, Ix4};
use rand::Rng;

use super::{delegate_module, describe_options, Frame, Lowering, Size2};
use crate::error::{check_shape, PhmError, Result};
use crate::init::{Fans, Init};
use crate::kernels::gemm::{add_bias_grad, affine_backward, affine_forward};
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

/// Options `(stride, padding, dilation)` as `(height, width)` pairs.
pub(crate) type Options = ((usize, usize), (usize, usize), (usize, usize));

/// The dense convolution of any spatial rank (1 or 2), lowered with im2col.
#[derive(Debug, Clone)]
pub(crate) struct DenseConv<F: Float> {
    lowering: Lowering,
    out_channels: usize,
    /// `(C_out, C_in, kh, kw)` or `(C_out, C_in, k)`.
    weight: Param<F>,
    bias: Option<Param<F>>,
    saved: Vec<(Array2<F>, Frame)>,
}

impl<F: Float> DenseConv<F> {
    /// `kernel` is `[kh, kw]` (rank 2) or `[k]` (rank 1).
    pub(crate) fn init<R: Rng + ?Sized>(
        rank: usize,
        in_channels: usize,
        out_channels: usize,
        kernel: &[usize],
        options: Options,
        (bias, weight_init, bias_init): (bool, Init, Init),
        rng: &mut R,
    ) -> Result<Self> {
        if out_channels == 0 {
            return Err(PhmError::ZeroSize {
                what: "out_channels",
            });
        }
        let lowering = lowering(rank, in_channels, kernel, options)?;
        let taps: usize = kernel.iter().product();
        let fans = Fans::new(in_channels * taps, out_channels * taps);
        let mut shape = vec![out_channels, in_channels];
        shape.extend_from_slice(kernel);
        let weight = Param::new(weight_init.sample(&shape, fans, rng)?);
        let bias = if bias {
            Some(Param::new(bias_init.sample(&[out_channels], fans, rng)?))
        } else {
            None
        };
        Ok(DenseConv {
            lowering,
            out_channels,
            weight,
            bias,
            saved: Vec::new(),
        })
    }

    /// From a kernel of PyTorch's layout (rank + 2 axes) and an optional bias.
    pub(crate) fn from_parts(
        rank: usize,
        weight: ArrayD<F>,
        bias: Option<Array1<F>>,
        options: Options,
    ) -> Result<Self> {
        let shape = weight.shape().to_vec();
        if shape.len() != rank + 2 {
            return Err(PhmError::ShapeMismatch {
                what: "weight",
                expected: vec![0; rank + 2],
                got: shape,
            });
        }
        if shape[0] == 0 {
            return Err(PhmError::ZeroSize {
                what: "out_channels",
            });
        }
        let lowering = lowering(rank, shape[1], &shape[2..], options)?;
        if let Some(b) = &bias {
            check_shape("bias", &[shape[0]], b.shape())?;
        }
        Ok(DenseConv {
            lowering,
            out_channels: shape[0],
            weight: Param::new(weight.as_standard_layout().into_owned()),
            bias: bias.map(|b| Param::new(b.into_dyn())),
            saved: Vec::new(),
        })
    }

    pub(crate) fn geometry(&self) -> ConvGeometry {
        self.lowering.geometry
    }

    /// `Conv1d::method` or `Conv2d::method`, for panic messages.
    fn context(&self, method: &str) -> String {
        format!("Conv{}d::{method}", self.lowering.rank)
    }

    pub(crate) fn out_channels(&self) -> usize {
        self.out_channels
    }

    pub(crate) fn weight_param(&self) -> &Param<F> {
        &self.weight
    }

    pub(crate) fn bias_param(&self) -> Option<&Param<F>> {
        self.bias.as_ref()
    }

    pub(crate) fn bias(&self) -> Option<Array1<F>> {
        self.bias.as_ref().map(|b| {
            b.read()
                .value()
                .into_dimensionality::<Ix1>()
                .expect("bias is 1-D")
                .to_owned()
        })
    }

    fn rows(&self, cols: ArrayView2<'_, F>) -> Array2<F> {
        let w = self.weight.read();
        let b = self.bias.as_ref().map(|b| b.read());
        let b = b
            .as_ref()
            .map(|b| b.value().into_dimensionality::<Ix1>().expect("bias is 1-D"));
        affine_forward(&cols, &matrix(w.value(), self.out_channels), b.as_ref())
    }

    #[track_caller]
    pub(crate) fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (cols, frame) = self.lowering.lower(&self.context("forward"), x);
        let y = self.rows(cols.view());
        self.saved.push((cols, frame));
        self.lowering.raise_output(y.view(), &frame)
    }

    #[track_caller]
    pub(crate) fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (cols, frame) = self
            .saved
            .pop()
            .unwrap_or_else(|| panic!("{} called before forward", self.context("backward")));
        let g = self.lowering.grad_rows(
            &self.context("backward"),
            grad_output,
            &frame,
            self.out_channels,
        );
        if let Some(b) = &self.bias {
            let mut b = b.write();
            if b.is_trainable() {
                let db = b
                    .grad_mut()
                    .into_dimensionality::<Ix1>()
                    .expect("bias is 1-D");
                add_bias_grad(Some(db), &g.view());
            }
        }
        let k = self.out_channels;
        let mut w = self.weight.write();
        let trainable = w.is_trainable();
        let (value, grad) = w.value_and_grad_mut();
        let dw: Option<ArrayViewMut2<'_, F>> = trainable.then(|| {
            let cols = grad.len() / k;
            grad.into_shape_with_order((k, cols))
                .expect("gradients are in standard layout")
        });
        let dcols = affine_backward(&cols.view(), &matrix(value, k), &g.view(), dw, F::one());
        drop(w);
        self.lowering.raise_input_grad(dcols.view(), &frame)
    }

    #[track_caller]
    pub(crate) fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (cols, frame) = self.lowering.lower(&self.context("infer"), x);
        let y = self.rows(cols.view());
        self.lowering.raise_output(y.view(), &frame)
    }

    pub(crate) fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<F>)) {
        f("weight", &self.weight);
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }

    pub(crate) fn clear_saved(&mut self) {
        self.saved.clear();
    }

    pub(crate) fn pending(&self) -> usize {
        self.saved.len()
    }

    pub(crate) fn describe(&self, name: &str) -> String {
        let g = self.lowering.geometry;
        let (kh, kw) = g.kernel();
        let kernel = if self.lowering.rank == 1 {
            format!("{kw}")
        } else {
            format!("{kh}×{kw}")
        };
        let bias = if self.bias.is_some() { "" } else { ", no bias" };
        format!(
            "{name}({} → {}, kernel {kernel}{}{bias})",
            g.channels(),
            self.out_channels,
            describe_options(&g, self.lowering.rank)
        )
    }

    pub(crate) fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        self.lowering.output_shape(input, self.out_channels)
    }
}

/// The kernel `(C_out, C_in, …)` viewed as the matrix `(C_out, C_in·kh·kw)`.
fn matrix<F: Float>(w: ArrayViewD<'_, F>, out: usize) -> ArrayView2<'_, F> {
    let cols = w.len() / out;
    w.into_shape_with_order((out, cols))
        .expect("parameters are in standard layout")
}

/// The lowering of a rank-1 (`kernel = [k]`, options on the width) or rank-2 convolution.
pub(crate) fn lowering(
    rank: usize,
    in_channels: usize,
    kernel: &[usize],
    (stride, padding, dilation): Options,
) -> Result<Lowering> {
    let kernel = if rank == 1 {
        (1, kernel[0])
    } else {
        (kernel[0], kernel[1])
    };
    Ok(Lowering {
        geometry: ConvGeometry::new(in_channels, kernel, stride, padding, dilation)?,
        rank,
    })
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
