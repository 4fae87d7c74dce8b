//! Convolutions, channels first as in PyTorch: dense [`Conv1d`]/[`Conv2d`] and PHM
//! convolutions ("PHC", Grassucci et al., 2022) [`PhmConv1d`]/[`PhmConv2d`].
//!
//! ```text
//!     Y[b, o, oh, ow] = bias[o] + Σ_{c, i, j} K[o, c, i, j] · X[b, c, oh·s_h + i·d_h − p_h, ow·s_w + j·d_w − p_w]
//!     X: (B, C_in, H, W)   K: (C_out, C_in, kh, kw)   Y: (B, C_out, H_out, W_out)
//!     H_out = ⌊(H + 2p_h − d_h·(kh − 1) − 1) / s_h⌋ + 1                 (likewise W_out)
//!
//!     PHC:  K = Σ_{i=1..n} A_i ⊗ F_i     A: (n, n, n)   F: (n, C_out/n, C_in/n, kh, kw)
//!           K[r·C_out/n + o, c·C_in/n + q, :, :] = Σ_i A_i[r, c] · F_i[o, q, :, :]
//! ```
//!
//! (1-D: `X (B, C_in, L)`, `K (C_out, C_in, k)`.) Positions outside the input read zeros.
//! Weights use PyTorch's layouts, and the output size is PyTorch's formula.
//!
//! **How it is computed.** Image by image, [`im2col`](crate::kernels::im2col) lowers
//! `X[b]` to `cols` `(C_in·kh·kw, H_out·W_out)` (channel-major rows) and one GEMM
//! `Y[b] = K̂ · cols` with `K` viewed as `K̂` `(C_out, C_in·kh·kw)` writes the channels-first
//! output in place: no permutation of channels, and the batch is split across the thread
//! pool (each image's product on its thread, per-thread `dK̂` summed in image order). The PHM
//! convolution keeps its parameters as a [`PhmLinear`](crate::nn::PhmLinear) with
//! `in = C_in·kh·kw`, `out = C_out`, whose blocks `(n, C_out/n, C_in/n·kh·kw)` *are* the `F_i`
//! reshaped: its built weight is `K̂`, cached until a parameter changes, and the convolution
//! then runs as the dense one; backward maps `dK̂` to `dA`, `dF`. The input gradient goes
//! back through `col2im`.
//!
//! Parameters: a PHC layer has `n³ + C_out·C_in·kh·kw/n + C_out` (rules, kernels, bias)
//! instead of `C_out·C_in·kh·kw + C_out`; fixed rules are frozen and not counted. The bias is
//! **added** (the HyperNets implementation creates one and never adds it).
//!
//! ```
//! use phm_nn::prelude::*;
//! let mut rng = StdRng::seed_from_u64(0);
//! // 3×3, 8 → 16 channels, n = 4, padding 1: the spatial size is kept.
//! let mut conv = PhmConv2dConfig::new(8, 16, 3, 4).with_padding(1).init::<f64, _>(&mut rng)?;
//! assert_eq!(conv.num_parameters(), 64 + 16 * 8 * 9 / 4 + 16);
//! let y = conv.forward(ArrayD::ones(IxDyn(&[2, 8, 5, 5])).view());
//! assert_eq!(y.shape(), &[2, 16, 5, 5]);
//! // The built kernel in PyTorch's layout (C_out, C_in, kh, kw):
//! assert_eq!(conv.weight().dim(), (16, 8, 3, 3));
//! // Channels must be divisible by n:
//! assert!(PhmConv2dConfig::new(6, 16, 3, 4).init::<f64, _>(&mut rng).is_err());
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use crate::error::{PhmError, Result};
use crate::kernels::im2col::ConvGeometry;

pub mod conv1d;
pub mod conv2d;
mod dense_core;
mod lowering;
pub mod phm_conv1d;
pub mod phm_conv2d;
mod phm_core;

pub use conv1d::{Conv1d, Conv1dConfig};
pub use conv2d::{Conv2d, Conv2dConfig};
pub use phm_conv1d::{PhmConv1d, PhmConv1dConfig};
pub use phm_conv2d::{PhmConv2d, PhmConv2dConfig};

/// A size along the two spatial axes `(height, width)`; `From<usize>` gives the same size on
/// both, as PyTorch's `int` arguments do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size2(pub usize, pub usize);

impl From<usize> for Size2 {
    fn from(v: usize) -> Self {
        Size2(v, v)
    }
}

impl From<(usize, usize)> for Size2 {
    fn from((h, w): (usize, usize)) -> Self {
        Size2(h, w)
    }
}

impl From<Size2> for (usize, usize) {
    fn from(s: Size2) -> Self {
        (s.0, s.1)
    }
}

/// Checks a channel count against `n` (for PHM convolutions).
pub(crate) fn check_channels(what: &'static str, size: usize, n: usize) -> Result<()> {
    if n == 0 {
        return Err(PhmError::ZeroN);
    }
    if size == 0 {
        return Err(PhmError::ZeroSize { what });
    }
    if !size.is_multiple_of(n) {
        return Err(PhmError::NotDivisible { what, size, n });
    }
    Ok(())
}

/// Implements [`Module`](crate::Module) for a public convolution that wraps a core.
macro_rules! delegate_module {
    ($ty:ident) => {
        impl<F: Float> Module<F> for $ty<F> {
            /// # Panics
            /// If `x` is not channels first with the layer's input channels, the dilated
            /// kernel is larger than the padded input, or the output is too large to count or
            /// allocate (a huge padding); the message names the shapes.
            #[track_caller]
            fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
                self.core.forward(x)
            }

            /// # Panics
            /// If no forward pass is left to go back through, or `grad_output` is not the
            /// shape of that forward's output.
            #[track_caller]
            fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
                self.core.backward(grad_output)
            }

            /// # Panics
            /// As [`forward`](Module::forward).
            #[track_caller]
            fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
                self.core.infer(x)
            }

            fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<F>)) {
                self.core.visit_params(f)
            }

            fn saved_states(&self) -> Option<&dyn $crate::module::StateStack> {
                Some(self.core.saved_states())
            }

            fn clear_saved(&mut self) {
                self.core.clear_saved()
            }

            fn describe(&self) -> String {
                self.core.describe(stringify!($ty))
            }

            fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
                self.core.output_shape(input)
            }
        }
    };
}
pub(crate) use delegate_module;

/// `, stride s, padding p, dilation d` for the options that differ from the defaults.
pub(crate) fn describe_options(g: &ConvGeometry, rank: usize) -> String {
    let pick = |(a, b): (usize, usize)| {
        if rank == 1 {
            format!("{b}")
        } else if a == b {
            format!("{a}")
        } else {
            format!("({a}, {b})")
        }
    };
    let mut s = String::new();
    if g.stride() != (1, 1) {
        s += &format!(", stride {}", pick(g.stride()));
    }
    if g.padding() != (0, 0) {
        s += &format!(", padding {}", pick(g.padding()));
    }
    if g.dilation() != (1, 1) {
        s += &format!(", dilation {}", pick(g.dilation()));
    }
    s
}
