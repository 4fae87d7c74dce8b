//! Pooling and reshaping for convolutional models, channels first as in PyTorch:
//! [`MaxPool2d`], [`AvgPool2d`], [`GlobalAvgPool`] and [`Flatten`].
//!
//! ```text
//!     MaxPool2d:  Y[b, c, oh, ow] = max_{i, j} X[b, c, oh·s_h + i − p_h, ow·s_w + j − p_w]     (padding ignored)
//!     AvgPool2d:  Y[b, c, oh, ow] = (1 / (kh·kw)) Σ_{i, j} X[…]                               (padding counts as 0)
//!     H_out = ⌊(H + 2p_h − kh) / s_h⌋ + 1                                                   (likewise W_out)
//!     GlobalAvgPool: (B, C, …) → (B, C), the mean over every axis after the channels
//!     Flatten:       (B, …)    → (B, product of the other axes), row-major
//! ```
//!
//! These are PyTorch's `nn.MaxPool2d` (the first maximum of a window gets the gradient; NaN
//! propagates), `nn.AvgPool2d` with its default `count_include_pad=True`,
//! `nn.AdaptiveAvgPool2d(1)` followed by a flatten, and `nn.Flatten()`; no parameters.
//!
//! ```
//! use phm_nn::prelude::*;
//! let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 4]), vec![1.0, 5.0, 2.0, 0.0,
//!                                                          3.0, 4.0, 8.0, 6.0])?;
//! let max = MaxPool2d::new(2, 2, 0)?;
//! assert_eq!(max.infer(x.view()).into_raw_vec_and_offset().0, [5.0, 8.0]);
//! let avg = AvgPool2d::new(2, 2, 0)?;
//! assert_eq!(avg.infer(x.view()).into_raw_vec_and_offset().0, [3.25, 4.0]);
//! assert_eq!(GlobalAvgPool::new().infer(x.view()).shape(), &[1, 1]);
//! assert_eq!(Flatten::new().infer(x.view()).shape(), &[1, 8]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};

use crate::error::{PhmError, Result};
use crate::kernels::im2col::ConvGeometry;
use crate::module::{Module, SavedStates, StateStack};
use crate::nn::conv::Size2;
use crate::Float;

/// The window of a 2-D pooling layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    geometry: ConvGeometry,
}

/// The sizes of one pooling call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PoolFrame {
    planes: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

impl Window {
    fn new(kernel: Size2, stride: Size2, padding: Size2) -> Result<Self> {
        let geometry = ConvGeometry::new(1, kernel.into(), stride.into(), padding.into(), (1, 1))?;
        // `p > ⌊k/2⌋` is `2p > k` without the overflow of `2p`.
        if padding.0 > kernel.0 / 2 || padding.1 > kernel.1 / 2 {
            return Err(PhmError::InvalidArgument {
                what: "padding",
                reason: format!(
                    "padding ({}, {}) must be at most half the kernel ({}, {})",
                    padding.0, padding.1, kernel.0, kernel.1
                ),
            });
        }
        Ok(Window { geometry })
    }

    fn frame(&self, shape: &[usize]) -> std::result::Result<PoolFrame, String> {
        if shape.len() != 4 {
            return Err(format!(
                "input has shape {shape:?}, expected [batch, channels, height, width]"
            ));
        }
        let (ho, wo) = self
            .geometry
            .output_size(shape[2], shape[3])
            .map_err(|e| format!("input has shape {shape:?}: {e}"))?;
        let planes = shape[0]
            .checked_mul(shape[1])
            .filter(|p| p.checked_mul(ho).and_then(|v| v.checked_mul(wo)).is_some())
            .ok_or_else(|| {
                format!("input has shape {shape:?}: the output ({ho} × {wo}) is too large")
            })?;
        Ok(PoolFrame {
            planes,
            h: shape[2],
            w: shape[3],
            ho,
            wo,
        })
    }

    #[track_caller]
    fn frame_or_panic(&self, context: &str, shape: &[usize]) -> PoolFrame {
        self.frame(shape)
            .unwrap_or_else(|e| panic!("{context}: {e}"))
    }

    /// Calls `f(output index, input index)` for every in-bounds tap of every window.
    fn for_each_tap(&self, f: &PoolFrame, mut visit: impl FnMut(usize, usize)) {
        let (kh, kw) = self.geometry.kernel();
        let ((sh, sw), (ph, pw)) = (self.geometry.stride(), self.geometry.padding());
        for plane in 0..f.planes {
            for oh in 0..f.ho {
                for ow in 0..f.wo {
                    let out = (plane * f.ho + oh) * f.wo + ow;
                    for i in 0..kh {
                        let Some(ih) = (oh * sh + i).checked_sub(ph).filter(|&v| v < f.h) else {
                            continue;
                        };
                        for j in 0..kw {
                            if let Some(iw) = (ow * sw + j).checked_sub(pw).filter(|&v| v < f.w) {
                                visit(out, (plane * f.h + ih) * f.w + iw);
                            }
                        }
                    }
                }
            }
        }
    }

    fn out_shape(input: &[usize], f: &PoolFrame) -> Vec<usize> {
        vec![input[0], input[1], f.ho, f.wo]
    }

    fn describe(&self, name: &str) -> String {
        let (kh, kw) = self.geometry.kernel();
        let (sh, sw) = self.geometry.stride();
        let (ph, pw) = self.geometry.padding();
        format!("{name}(kernel {kh}×{kw}, stride ({sh}, {sw}), padding ({ph}, {pw}))")
    }
}

/// Checks `grad_output` against the forward output's shape.
#[track_caller]
fn check_grad(context: &str, got: &[usize], expected: &[usize]) {
    if got != expected {
        panic!("{context}: grad_output has shape {got:?}, expected {expected:?}");
    }
}

fn contiguous<F: Float>(x: &ArrayViewD<'_, F>) -> Vec<F> {
    x.as_standard_layout().iter().copied().collect()
}

/// 2-D max pooling; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct MaxPool2d {
    window: Window,
    /// Per forward: the input shape and, per output, the input index of its maximum.
    saved: SavedStates<(Vec<usize>, Vec<usize>)>,
}

impl MaxPool2d {
    /// Max pooling over `kernel` windows moved by `stride` (PyTorch's default stride is the
    /// kernel size), with `padding` on each side that never wins the maximum.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] for a zero kernel; [`PhmError::InvalidArgument`] for a zero
    /// stride or a padding larger than half the kernel; [`PhmError::TooLarge`] for a padding
    /// whose double overflows `usize` (the message names it).
    pub fn new(
        kernel: impl Into<Size2>,
        stride: impl Into<Size2>,
        padding: impl Into<Size2>,
    ) -> Result<Self> {
        Ok(MaxPool2d {
            window: Window::new(kernel.into(), stride.into(), padding.into())?,
            saved: SavedStates::new(),
        })
    }

    /// The window `(kh, kw)`.
    pub fn kernel(&self) -> (usize, usize) {
        self.window.geometry.kernel()
    }

    /// The stride `(s_h, s_w)`.
    pub fn stride(&self) -> (usize, usize) {
        self.window.geometry.stride()
    }

    /// The padding `(p_h, p_w)` on each side.
    pub fn padding(&self) -> (usize, usize) {
        self.window.geometry.padding()
    }

    #[track_caller]
    fn run<F: Float>(&self, context: &str, x: &ArrayViewD<'_, F>) -> (ArrayD<F>, Vec<usize>) {
        let f = self.window.frame_or_panic(context, x.shape());
        let xs = contiguous(x);
        let outputs = f.planes * f.ho * f.wo;
        let mut best = vec![usize::MAX; outputs];
        self.window.for_each_tap(&f, |o, i| {
            let b = best[o];
            if b == usize::MAX || xs[i] > xs[b] || (xs[i].is_nan() && !xs[b].is_nan()) {
                best[o] = i;
            }
        });
        let y: Vec<F> = best.iter().map(|&i| xs[i]).collect();
        let y = ArrayD::from_shape_vec(IxDyn(&Window::out_shape(x.shape(), &f)), y)
            .expect("one value per window");
        (y, best)
    }
}

impl<F: Float> Module<F> for MaxPool2d {
    /// # Panics
    /// If `x` is not `(B, C, H, W)` or the window is larger than the padded input.
    #[track_caller]
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (y, best) = self.run("MaxPool2d::forward", &x);
        self.saved.push((x.shape().to_vec(), best));
        y
    }

    /// # Panics
    /// If no forward is left to go back through, or `grad_output` is not its output's shape.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (shape, best) = self.saved.pop("MaxPool2d");
        let f = self.window.frame_or_panic("MaxPool2d::backward", &shape);
        check_grad(
            "MaxPool2d::backward",
            grad_output.shape(),
            &Window::out_shape(&shape, &f),
        );
        let mut dx = ArrayD::zeros(IxDyn(&shape));
        let dxs = dx.as_slice_mut().expect("new arrays are contiguous");
        for (&i, &g) in best.iter().zip(grad_output.as_standard_layout().iter()) {
            dxs[i] += g;
        }
        dx
    }

    /// # Panics
    /// As [`forward`](Module::forward).
    #[track_caller]
    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.run("MaxPool2d::infer", &x).0
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.saved)
    }

    fn describe(&self) -> String {
        self.window.describe("MaxPool2d")
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        let f = self.window.frame(input).ok()?;
        Some(Window::out_shape(input, &f))
    }
}

/// 2-D average pooling (padding counts as zeros, as PyTorch's default
/// `count_include_pad=True`); see the [module docs](self).
#[derive(Debug, Clone)]
pub struct AvgPool2d {
    window: Window,
    saved: SavedStates<Vec<usize>>,
}

impl AvgPool2d {
    /// Average pooling over `kernel` windows moved by `stride`, with zero `padding` on each
    /// side; every window divides by `kh·kw`.
    ///
    /// # Errors
    /// As [`MaxPool2d::new`].
    pub fn new(
        kernel: impl Into<Size2>,
        stride: impl Into<Size2>,
        padding: impl Into<Size2>,
    ) -> Result<Self> {
        Ok(AvgPool2d {
            window: Window::new(kernel.into(), stride.into(), padding.into())?,
            saved: SavedStates::new(),
        })
    }

    fn scale<F: Float>(&self) -> F {
        let (kh, kw) = self.window.geometry.kernel();
        F::one() / F::of((kh * kw) as f64)
    }

    /// The window `(kh, kw)`.
    pub fn kernel(&self) -> (usize, usize) {
        self.window.geometry.kernel()
    }

    /// The stride `(s_h, s_w)`.
    pub fn stride(&self) -> (usize, usize) {
        self.window.geometry.stride()
    }

    /// The padding `(p_h, p_w)` on each side.
    pub fn padding(&self) -> (usize, usize) {
        self.window.geometry.padding()
    }

    #[track_caller]
    fn run<F: Float>(&self, context: &str, x: &ArrayViewD<'_, F>) -> ArrayD<F> {
        let f = self.window.frame_or_panic(context, x.shape());
        let xs = contiguous(x);
        let mut y = vec![F::zero(); f.planes * f.ho * f.wo];
        self.window.for_each_tap(&f, |o, i| y[o] += xs[i]);
        let scale = self.scale::<F>();
        y.iter_mut().for_each(|v| *v *= scale);
        ArrayD::from_shape_vec(IxDyn(&Window::out_shape(x.shape(), &f)), y)
            .expect("one value per window")
    }
}

impl<F: Float> Module<F> for AvgPool2d {
    /// # Panics
    /// If `x` is not `(B, C, H, W)` or the window is larger than the padded input.
    #[track_caller]
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let y = self.run("AvgPool2d::forward", &x);
        self.saved.push(x.shape().to_vec());
        y
    }

    /// # Panics
    /// If no forward is left to go back through, or `grad_output` is not its output's shape.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let shape = self.saved.pop("AvgPool2d");
        let f = self.window.frame_or_panic("AvgPool2d::backward", &shape);
        check_grad(
            "AvgPool2d::backward",
            grad_output.shape(),
            &Window::out_shape(&shape, &f),
        );
        let g = contiguous(&grad_output);
        let scale = self.scale::<F>();
        let mut dx = ArrayD::zeros(IxDyn(&shape));
        let dxs = dx.as_slice_mut().expect("new arrays are contiguous");
        self.window.for_each_tap(&f, |o, i| dxs[i] += g[o] * scale);
        dx
    }

    /// # Panics
    /// As [`forward`](Module::forward).
    #[track_caller]
    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.run("AvgPool2d::infer", &x)
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.saved)
    }

    fn describe(&self) -> String {
        self.window.describe("AvgPool2d")
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        let f = self.window.frame(input).ok()?;
        Some(Window::out_shape(input, &f))
    }
}

/// Global average pooling `(B, C, …) → (B, C)`: the mean over every axis after the channels
/// (1-D or 2-D feature maps); see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct GlobalAvgPool {
    saved: SavedStates<Vec<usize>>,
}

impl GlobalAvgPool {
    /// A global average pooling layer.
    #[must_use]
    pub fn new() -> Self {
        GlobalAvgPool::default()
    }

    #[track_caller]
    fn run<F: Float>(context: &str, x: &ArrayViewD<'_, F>) -> ArrayD<F> {
        let shape = x.shape();
        if shape.len() < 3 || shape[2..].iter().product::<usize>() == 0 {
            panic!("{context}: input has shape {shape:?}, expected [batch, channels, spatial…] with a non-empty spatial part");
        }
        let x = x.as_standard_layout();
        let m = x
            .view()
            .into_shape_with_order((shape[0], shape[1], shape[2..].iter().product()))
            .expect("standard layout reshapes");
        let scale = F::one() / F::of(m.len_of(Axis(2)) as f64);
        m.sum_axis(Axis(2)).mapv(|v| v * scale).into_dyn()
    }
}

impl<F: Float> Module<F> for GlobalAvgPool {
    /// # Panics
    /// If `x` has fewer than 3 axes or an empty spatial part.
    #[track_caller]
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let y = Self::run("GlobalAvgPool::forward", &x);
        self.saved.push(x.shape().to_vec());
        y
    }

    /// # Panics
    /// If no forward is left to go back through, or `grad_output` is not `(B, C)`.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let shape = self.saved.pop("GlobalAvgPool");
        check_grad("GlobalAvgPool::backward", grad_output.shape(), &shape[..2]);
        let spatial: usize = shape[2..].iter().product();
        let scale = F::one() / F::of((spatial) as f64);
        let g = grad_output
            .mapv(|v| v * scale)
            .into_shape_with_order((shape[0], shape[1], 1))
            .expect("(B, C) reshapes");
        let dx = g
            .broadcast((shape[0], shape[1], spatial))
            .expect("broadcast over the spatial axis")
            .to_owned();
        dx.into_shape_with_order(IxDyn(&shape))
            .expect("standard layout reshapes")
    }

    /// # Panics
    /// As [`forward`](Module::forward).
    #[track_caller]
    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        Self::run("GlobalAvgPool::infer", &x)
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.saved)
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        (input.len() >= 3).then(|| input[..2].to_vec())
    }
}

/// Flattens `(B, …)` to `(B, product of the other axes)` in row-major order; see the
/// [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct Flatten {
    saved: SavedStates<Vec<usize>>,
}

impl Flatten {
    /// A flatten layer.
    #[must_use]
    pub fn new() -> Self {
        Flatten::default()
    }

    #[track_caller]
    fn run<F: Float>(context: &str, x: &ArrayViewD<'_, F>) -> ArrayD<F> {
        let shape = x.shape();
        if shape.len() < 2 {
            panic!(
                "{context}: input has shape {shape:?}, expected [batch, …] with at least 2 axes"
            );
        }
        let rest = shape[1..].iter().product::<usize>();
        x.as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&[shape[0], rest]))
            .expect("standard layout reshapes")
    }
}

impl<F: Float> Module<F> for Flatten {
    /// # Panics
    /// If `x` has fewer than 2 axes.
    #[track_caller]
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let y = Self::run("Flatten::forward", &x);
        self.saved.push(x.shape().to_vec());
        y
    }

    /// # Panics
    /// If no forward is left to go back through, or `grad_output` is not its output's shape.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let shape = self.saved.pop("Flatten");
        let rest = shape[1..].iter().product::<usize>();
        check_grad("Flatten::backward", grad_output.shape(), &[shape[0], rest]);
        grad_output
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&shape))
            .expect("standard layout reshapes")
    }

    /// # Panics
    /// As [`forward`](Module::forward).
    #[track_caller]
    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        Self::run("Flatten::infer", &x)
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.saved)
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        (input.len() >= 2).then(|| vec![input[0], input[1..].iter().product()])
    }
}
