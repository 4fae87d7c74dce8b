//! Pooling and reshaping for convolutional models, channels first (phm-nn's `nn::pool`):
//! [`MaxPool2d`], [`GlobalAvgPool`], [`Flatten`]. No parameters.
//!
//! ```text
//!     MaxPool2d:     Y[b, c, oh, ow] = max_{i, j} X[b, c, oh·s_h + i − p_h, ow·s_w + j − p_w]   (padding ignored)
//!                    H_out = ⌊(H + 2p_h − kh) / s_h⌋ + 1                                      (likewise W_out)
//!     GlobalAvgPool: (B, C, …) → (B, C), the mean over every axis after the channels
//!     Flatten:       (B, …)    → (B, product of the other axes), row-major
//! ```
//!
//! burn's own `max_pool2d` computes the max pool; ReLU is burn's
//! (`burn::tensor::activation::relu`, the same function as phm-nn's `Relu`).
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::pool::{Flatten, GlobalAvgPool, MaxPool2d};
//! let device = Device::default();
//! let x = Tensor::<4>::from_floats([[[[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 8.0, 6.0]]]], &device);
//! let y = MaxPool2d::new([2, 2], [2, 2], [0, 0])?.forward(x.clone());
//! assert_eq!(y.into_data().to_vec::<f32>().unwrap(), [5.0, 8.0]);
//! assert_eq!(GlobalAvgPool.forward(x.clone()).dims(), [1, 1]);
//! assert_eq!(Flatten.forward(x).dims(), [1, 8]);
//! # Ok::<(), phm_burn::phm_nn::PhmError>(())
//! ```

use burn::module::Module;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::Tensor;
use phm_nn::PhmError;

/// 2-D max pooling; see the [module docs](self).
#[derive(Module, Debug)]
pub struct MaxPool2d {
    /// Window `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Padding on each side (never selected: it is `−∞`).
    pub padding: [usize; 2],
}

impl MaxPool2d {
    /// A max pool with the given window, stride and padding.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] for a zero kernel size or stride, or a padding larger
    /// than half the kernel (as phm-nn and PyTorch).
    pub fn new(
        kernel_size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> phm_nn::Result<Self> {
        // phm-nn's constructor checks the same arguments; one rule for both crates.
        phm_nn::nn::MaxPool2d::new(
            (kernel_size[0], kernel_size[1]),
            (stride[0], stride[1]),
            (padding[0], padding[1]),
        )
        .map_err(|e| match e {
            PhmError::InvalidArgument { .. } => e,
            other => PhmError::InvalidArgument {
                what: "max pool",
                reason: other.to_string(),
            },
        })?;
        Ok(MaxPool2d {
            kernel_size,
            stride,
            padding,
        })
    }

    /// The phm-nn layer with the same window.
    pub fn to_native(&self) -> phm_nn::nn::MaxPool2d {
        let pair = |a: [usize; 2]| (a[0], a[1]);
        phm_nn::nn::MaxPool2d::new(
            pair(self.kernel_size),
            pair(self.stride),
            pair(self.padding),
        )
        .expect("checked by MaxPool2d::new")
    }

    /// The max pool of `x`.
    ///
    /// # Shapes
    /// - `x`: `(B, C, H, W)`; output `(B, C, H_out, W_out)`.
    ///
    /// # Panics
    /// If the window is larger than the padded input.
    #[track_caller]
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let [ph, pw] = self.padding;
        assert!(
            h + 2 * ph >= self.kernel_size[0] && w + 2 * pw >= self.kernel_size[1],
            "MaxPool2d::forward: input of shape {:?} is smaller than the window {:?}",
            x.dims(),
            self.kernel_size
        );
        let mut options = MaxPoolOptions::new(self.kernel_size);
        options.stride = self.stride;
        options.padding = [(ph, ph), (pw, pw)];
        max_pool2d(x, options)
    }
}

/// The mean over every axis after the channels, `(B, C, …) → (B, C)`; see the
/// [module docs](self).
#[derive(Module, Debug, Default)]
pub struct GlobalAvgPool;

impl GlobalAvgPool {
    /// The global average of `x`.
    ///
    /// # Shapes
    /// - `x`: `(B, C, …)` with `D ≥ 3` axes; output `(B, C)`.
    ///
    /// # Panics
    /// If `x` has fewer than 3 axes.
    #[track_caller]
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<2> {
        assert!(
            D >= 3,
            "GlobalAvgPool::forward: input of shape {:?}, expected (B, C, spatial…)",
            x.dims()
        );
        let [b, c] = [x.dims()[0], x.dims()[1]];
        x.reshape([b, c, usize::MAX]).mean_dim(2).reshape([b, c])
    }
}

/// `(B, …) → (B, product of the other axes)`, row-major; see the [module docs](self).
#[derive(Module, Debug, Default)]
pub struct Flatten;

impl Flatten {
    /// `x` with every axis after the first flattened.
    ///
    /// # Shapes
    /// - `x`: `(B, …)` with `D ≥ 2` axes; output `(B, product of the rest)`.
    ///
    /// # Panics
    /// If `x` has fewer than 2 axes.
    #[track_caller]
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<2> {
        assert!(
            D >= 2,
            "Flatten::forward: input of shape {:?}, expected (B, …)",
            x.dims()
        );
        x.flatten(1, D - 1)
    }
}
