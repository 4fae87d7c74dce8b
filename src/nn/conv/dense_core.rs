//! The dense convolution core of any spatial rank: the [lowering](super::lowering) with the
//! kernel viewed as `K̂` `(C_out, C_in·kh·kw)` (per image: im2col, one GEMM, col2im for the
//! input gradient). [`Conv1d`](super::Conv1d) and
//! [`Conv2d`](super::Conv2d) wrap it.

use ndarray::{Array1, Array4, ArrayD, ArrayView2, ArrayView4, ArrayViewD, ArrayViewMut2, Ix1};
use rand::Rng;

use super::describe_options;
use super::lowering::{lowering, Frame, Lowering, Options};
use crate::error::{check_shape, PhmError, Result};
use crate::init::{Fans, Init};
use crate::kernels::buffer_pool;
use crate::kernels::im2col::ConvGeometry;
use crate::module::{Param, SavedStates, StateStack};
use crate::Float;

/// The dense convolution of any spatial rank (1 or 2), lowered with im2col.
#[derive(Debug, Clone)]
pub(crate) struct DenseConv<F: Float> {
    lowering: Lowering,
    out_channels: usize,
    /// `(C_out, C_in, kh, kw)` or `(C_out, C_in, k)`.
    weight: Param<F>,
    bias: Option<Param<F>>,
    /// The input `(B, C_in, H, W)` of each training forward (lowered again in backward).
    saved: SavedStates<(Array4<F>, Frame)>,
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
            saved: SavedStates::new(),
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
            saved: SavedStates::new(),
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

    /// `Y` for the images `x` `(B, C_in, H, W)` of `frame`, and a copy of `x` with `keep`.
    fn run_forward(
        &self,
        context: &str,
        x: ArrayView4<'_, F>,
        frame: &Frame,
        keep: bool,
    ) -> (ArrayD<F>, Option<Array4<F>>) {
        let w = self.weight.read();
        let b = self.bias.as_ref().map(|b| b.read());
        let b = b
            .as_ref()
            .map(|b| b.value().into_dimensionality::<Ix1>().expect("bias is 1-D"));
        self.lowering.forward(
            context,
            x,
            frame,
            (matrix(w.value(), self.out_channels), b),
            keep,
        )
    }

    #[track_caller]
    pub(crate) fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let context = self.context("forward");
        let frame = self.lowering.frame_of(&context, x.shape());
        let x = self.lowering.images(x, &frame);
        let (y, kept) = self.run_forward(&context, x.view(), &frame, true);
        self.saved.push((kept.expect("kept"), frame));
        y
    }

    #[track_caller]
    pub(crate) fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let rank = self.lowering.rank;
        let (x, frame) = self.saved.pop(format_args!("Conv{rank}d"));
        let mut bias = self.bias.as_ref().map(|b| b.write());
        let db = bias.as_mut().filter(|b| b.is_trainable()).map(|b| {
            b.grad_mut()
                .into_dimensionality::<Ix1>()
                .expect("bias is 1-D")
        });
        let k = self.out_channels;
        let mut w = self.weight.write();
        let trainable = w.is_trainable();
        let (value, grad) = w.value_and_grad_mut();
        let dk: Option<ArrayViewMut2<'_, F>> = trainable.then(|| {
            let cols = grad.len() / k;
            grad.into_shape_with_order((k, cols))
                .expect("gradients are in standard layout")
        });
        let dx = self.lowering.backward(
            &self.context("backward"),
            x.view(),
            &frame,
            matrix(value, k),
            grad_output,
            dk,
            db,
        );
        buffer_pool::recycle(x);
        dx
    }

    #[track_caller]
    pub(crate) fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let context = self.context("infer");
        let frame = self.lowering.frame_of(&context, x.shape());
        let x = self.lowering.images(x, &frame);
        self.run_forward(&context, x.view(), &frame, false).0
    }

    pub(crate) fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<F>)) {
        f("weight", &self.weight);
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }

    pub(crate) fn saved_states(&self) -> &dyn StateStack {
        &self.saved
    }

    pub(crate) fn clear_saved(&mut self) {
        self.saved.clear();
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
