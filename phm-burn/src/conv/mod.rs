//! Convolutions as burn modules, channels first as in PyTorch and phm-nn: dense
//! [`Conv1d`]/[`Conv2d`] and PHM convolutions [`PhmConv1d`]/[`PhmConv2d`].
//!
//! ```text
//!     Y[b, o, …] = bias[o] + Σ_{c, taps} K[o, c, taps] · X[b, c, position·stride + tap·dilation − padding]
//!     X: (B, C_in, H, W)   K: (C_out, C_in, kh, kw)   Y: (B, C_out, H_out, W_out)
//!     H_out = ⌊(H + 2p − d·(kh − 1) − 1) / s⌋ + 1                            (likewise W_out)
//!
//!     PHC:  K = Σ_{i=1..n} A_i ⊗ F_i     A: (n, n, n)   F: (n, C_out/n, C_in/n, kh, kw)
//! ```
//!
//! (1-D: `X (B, C_in, L)`, `K (C_out, C_in, k)`.) A PHM convolution stores its kernels as
//! phm-nn does, the `blocks` parameter `(n, C_out/n, C_in/n·kh·kw)`; each call builds
//! `K = Σ A_i ⊗ F_i` with [`build_weight`](crate::kernels::build_weight) (one matmul,
//! differentiable) and runs burn's functional convolution with it, so every backend's
//! convolution kernels serve it. Parameter names, shapes and inits are phm-nn's (`weight`,
//! `bias`; `rules`, `blocks`, `bias`).
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::conv::PhmConv2dConfig;
//! let device = Device::default();
//! // A quaternion convolution 4 → 8, 3×3, stride 2, padding 1.
//! let conv = PhmConv2dConfig::new(4, 8, [3, 3], 4)
//!     .with_fixed_rules(true)
//!     .with_stride([2, 2])
//!     .with_padding([1, 1])
//!     .init::<f32>(&device)?;
//! assert_eq!(conv.blocks.dims(), [4, 2, 9]);
//! let y = conv.forward(Tensor::<4>::ones([1, 4, 7, 7], &device));
//! assert_eq!(y.dims(), [1, 8, 4, 4]);
//! # Ok::<(), phm_burn::phm_nn::PhmError>(())
//! ```

pub mod dense;
pub mod phm;

pub use dense::{Conv1d, Conv1dConfig, Conv2d, Conv2dConfig};
pub use phm::{PhmConv1d, PhmConv1dConfig, PhmConv2d, PhmConv2dConfig};

use burn::tensor::ops::ConvOptions;
use burn::tensor::Tensor;

/// burn's options for a convolution with one group.
fn options<const N: usize>(
    stride: [usize; N],
    padding: [usize; N],
    dilation: [usize; N],
) -> ConvOptions<N> {
    ConvOptions::new(stride, padding, dilation, 1)
}

/// Panics unless `x` is `(B, channels, …)` of the kernel's dtype.
#[track_caller]
fn check_input<const D: usize>(layer: &str, x: &Tensor<D>, kernel: &Tensor<D>) {
    crate::linear::check_dtype(layer, x, kernel);
    let channels = kernel.dims()[1];
    assert_eq!(
        x.dims()[1],
        channels,
        "{layer}: input of shape {:?}, expected (B, {channels}, …)",
        x.dims()
    );
}
