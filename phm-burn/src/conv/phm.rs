//! PHM convolutions (PHC): the kernel is a sum of Kronecker products.
//!
//! ```text
//!     K = Σ_{i=1..n} A_i ⊗ F_i      A: (n, n, n)   F: (n, C_out/n, C_in/n, kh, kw)   K: (C_out, C_in, kh, kw)
//!     K[r·C_out/n + o, c·C_in/n + q, …] = Σ_i A_i[r, c] · F_i[o, q, …]
//!     Y = conv(X, K) + bias
//! ```
//!
//! phm-nn's `PhmConv1d`/`PhmConv2d`: parameters `rules` `(n, n, n)`, `blocks`
//! `(n, C_out/n, C_in/n·kh·kw)` (the `F_i` flattened, as phm-nn stores them) and `bias`;
//! fixed rules are frozen (`fixed_rules`). `K` is built on each call
//! ([`build_weight`](crate::kernels::build_weight), reshaped) and passed to burn's
//! functional convolution with the layer's stride, padding and dilation.
//!
//! ```
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::conv::PhmConv1dConfig;
//! let device = Device::default();
//! let conv = PhmConv1dConfig::new(4, 8, 3, 2).with_padding(1).init::<f32>(&device)?;
//! assert_eq!(conv.weight().dims(), [8, 4, 3]);
//! assert_eq!(conv.forward(Tensor::<3>::ones([2, 4, 10], &device)).dims(), [2, 8, 10]);
//! # Ok::<(), phm_burn::phm_nn::PhmError>(())
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::module::{conv1d, conv2d};
use burn::tensor::{Device, Tensor};
use phm_nn::ndarray::{Ix1, Ix3};
use phm_nn::rand::{rngs::StdRng, SeedableRng};
use phm_nn::Float;

use super::{check_input, options};
use crate::bridge::Bridge;
use crate::kernels::build_weight;
use crate::linear::array_of;
use crate::rules::{param, rule_of};

/// The parameters of a PHM convolution, read from burn: rules, kernels `F` with `kernel`'s
/// window axes, bias.
#[allow(clippy::type_complexity)]
fn native_parts<F: Float>(
    rules: &Param<Tensor<3>>,
    blocks: &Param<Tensor<3>>,
    bias: Option<&Param<Tensor<1>>>,
    kernel: &[usize],
) -> phm_nn::Result<(
    phm_nn::ndarray::Array3<F>,
    phm_nn::ndarray::ArrayD<F>,
    Option<phm_nn::ndarray::Array1<F>>,
)> {
    let a = array_of::<F, Ix3, 3>(rules, "rules")?;
    let s = array_of::<F, Ix3, 3>(blocks, "blocks")?;
    let (n, p, qt) = s.dim();
    let taps: usize = kernel.iter().product();
    let mut shape = vec![n, p, qt / taps];
    shape.extend_from_slice(kernel);
    let f = s
        .into_dyn()
        .into_shape_with_order(shape)
        .expect("blocks hold (n, C_out/n, C_in/n·taps)");
    let b = match bias {
        Some(b) => Some(array_of::<F, Ix1, 1>(b, "bias")?),
        None => None,
    };
    Ok((a, f, b))
}

/// Configuration of a [`PhmConv2d`] layer.
#[derive(Config, Debug, PartialEq)]
pub struct PhmConv2dConfig {
    /// Input channels `C_in` (a multiple of `n`).
    pub in_channels: usize,
    /// Output channels `C_out` (a multiple of `n`).
    pub out_channels: usize,
    /// Kernel size `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// Hypercomplex dimension `n ≥ 1`.
    pub n: usize,
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
    /// Fixed rules: those of [`fixed_algebra(n)`](crate::rules::fixed_algebra), frozen.
    #[config(default = false)]
    pub fixed_rules: bool,
    /// Seed of the phm-nn init the parameters are drawn with.
    #[config(default = 0)]
    pub seed: u64,
}

impl PhmConv2dConfig {
    /// The layer, drawn as phm-nn's `PhmConv2dConfig::init` draws it from a `StdRng` seeded
    /// with `seed`, in `F`'s dtype on `device`.
    ///
    /// # Errors
    /// phm-nn's: [`PhmError::NotDivisible`](phm_nn::PhmError::NotDivisible) for channels that
    /// `n` does not divide, [`PhmError::ZeroN`](phm_nn::PhmError::ZeroN),
    /// [`PhmError::ZeroSize`](phm_nn::PhmError::ZeroSize),
    /// [`PhmError::InvalidArgument`](phm_nn::PhmError::InvalidArgument) for a zero stride or
    /// dilation or fixed rules of an `n` with no algebra.
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<PhmConv2d> {
        let pair = |a: [usize; 2]| (a[0], a[1]);
        let native = phm_nn::nn::PhmConv2dConfig::new(
            self.in_channels,
            self.out_channels,
            pair(self.kernel_size),
            self.n,
        )
        .with_stride(pair(self.stride))
        .with_padding(pair(self.padding))
        .with_dilation(pair(self.dilation))
        .with_bias(self.bias)
        .with_rule(rule_of(self.n, self.fixed_rules))
        .init::<F, _>(&mut StdRng::seed_from_u64(self.seed))?;
        PhmConv2d::from_native(&native, device)
    }
}

/// A PHM 2-D convolution; see the [module docs](self).
#[derive(Module, Debug)]
pub struct PhmConv2d {
    /// The rules `(n, n, n)`.
    pub rules: Param<Tensor<3>>,
    /// The kernels `F` as `(n, C_out/n, C_in/n·kh·kw)`.
    pub blocks: Param<Tensor<3>>,
    /// The bias `(C_out)`, if any.
    pub bias: Option<Param<Tensor<1>>>,
    /// Kernel size `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Zero padding on each side.
    pub padding: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
    /// Whether the rules are fixed (a frozen parameter).
    pub fixed_rules: bool,
}

impl PhmConv2d {
    /// The built kernel `K = Σ A_i ⊗ F_i`, `(C_out, C_in, kh, kw)`: PyTorch's `nn.Conv2d`
    /// weight for the same convolution.
    pub fn weight(&self) -> Tensor<4> {
        let [n, _, qt] = self.blocks.dims();
        let [kh, kw] = self.kernel_size;
        let w = build_weight(self.rules.val(), self.blocks.val());
        let out = w.dims()[0];
        w.reshape([out, n * qt / (kh * kw), kh, kw])
    }

    /// The convolution of `x` with the built kernel.
    ///
    /// # Shapes
    /// - `x`: `(B, C_in, H, W)`; output `(B, C_out, H_out, W_out)`.
    ///
    /// # Panics
    /// If `x` does not have `C_in` channels or the layer's dtype, or the dilated kernel is larger than the padded
    /// input.
    #[track_caller]
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let k = self.weight();
        check_input("PhmConv2d::forward", &x, &k);
        conv2d(
            x,
            k,
            self.bias.as_ref().map(Param::val),
            options(self.stride, self.padding, self.dilation),
        )
    }
}

impl Bridge for PhmConv2d {
    type Native<F: Float> = phm_nn::nn::PhmConv2d<F>;

    fn to_native<F: Float>(&self) -> phm_nn::Result<phm_nn::nn::PhmConv2d<F>> {
        let (a, f, b) = native_parts::<F>(
            &self.rules,
            &self.blocks,
            self.bias.as_ref(),
            &self.kernel_size,
        )?;
        let pair = |a: [usize; 2]| (a[0], a[1]);
        let native = phm_nn::nn::PhmConv2d::from_parts(
            a,
            f.into_dimensionality().expect("5-D kernels"),
            b,
            pair(self.stride),
            pair(self.padding),
            pair(self.dilation),
        )?;
        native.set_rules_trainable(!self.fixed_rules);
        Ok(native)
    }

    /// # Errors
    /// None (every phm-nn `PhmConv2d` has a burn twin; shared rules are copied).
    fn from_native<F: Float>(
        native: &phm_nn::nn::PhmConv2d<F>,
        device: &Device,
    ) -> phm_nn::Result<Self> {
        let g = native.geometry();
        let arr = |(a, b): (usize, usize)| [a, b];
        let fixed = !native.rules_trainable();
        Ok(PhmConv2d {
            rules: param::<F, 3>(&native.rules().into_dyn(), fixed, device),
            blocks: param::<F, 3>(&native.blocks_param().value(), false, device),
            bias: native
                .bias()
                .map(|b| param::<F, 1>(&b.into_dyn(), false, device)),
            kernel_size: arr(g.kernel()),
            stride: arr(g.stride()),
            padding: arr(g.padding()),
            dilation: arr(g.dilation()),
            fixed_rules: fixed,
        })
    }
}

/// Configuration of a [`PhmConv1d`] layer.
#[derive(Config, Debug, PartialEq)]
pub struct PhmConv1dConfig {
    /// Input channels `C_in` (a multiple of `n`).
    pub in_channels: usize,
    /// Output channels `C_out` (a multiple of `n`).
    pub out_channels: usize,
    /// Kernel size `k`.
    pub kernel_size: usize,
    /// Hypercomplex dimension `n ≥ 1`.
    pub n: usize,
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
    /// Fixed rules: those of [`fixed_algebra(n)`](crate::rules::fixed_algebra), frozen.
    #[config(default = false)]
    pub fixed_rules: bool,
    /// Seed of the phm-nn init the parameters are drawn with.
    #[config(default = 0)]
    pub seed: u64,
}

impl PhmConv1dConfig {
    /// The layer, drawn as phm-nn's `PhmConv1dConfig::init` draws it from a `StdRng` seeded
    /// with `seed`, in `F`'s dtype on `device`.
    ///
    /// # Errors
    /// As [`PhmConv2dConfig::init`].
    pub fn init<F: Float>(&self, device: &Device) -> phm_nn::Result<PhmConv1d> {
        let native = phm_nn::nn::PhmConv1dConfig::new(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.n,
        )
        .with_stride(self.stride)
        .with_padding(self.padding)
        .with_dilation(self.dilation)
        .with_bias(self.bias)
        .with_rule(rule_of(self.n, self.fixed_rules))
        .init::<F, _>(&mut StdRng::seed_from_u64(self.seed))?;
        PhmConv1d::from_native(&native, device)
    }
}

/// A PHM 1-D convolution; see the [module docs](self).
#[derive(Module, Debug)]
pub struct PhmConv1d {
    /// The rules `(n, n, n)`.
    pub rules: Param<Tensor<3>>,
    /// The kernels `F` as `(n, C_out/n, C_in/n·k)`.
    pub blocks: Param<Tensor<3>>,
    /// The bias `(C_out)`, if any.
    pub bias: Option<Param<Tensor<1>>>,
    /// Kernel size `k`.
    pub kernel_size: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Dilation.
    pub dilation: usize,
    /// Whether the rules are fixed (a frozen parameter).
    pub fixed_rules: bool,
}

impl PhmConv1d {
    /// The built kernel `K = Σ A_i ⊗ F_i`, `(C_out, C_in, k)`: PyTorch's `nn.Conv1d` weight.
    pub fn weight(&self) -> Tensor<3> {
        let [n, _, qt] = self.blocks.dims();
        let w = build_weight(self.rules.val(), self.blocks.val());
        let out = w.dims()[0];
        w.reshape([out, n * qt / self.kernel_size, self.kernel_size])
    }

    /// The convolution of `x` with the built kernel.
    ///
    /// # Shapes
    /// - `x`: `(B, C_in, L)`; output `(B, C_out, L_out)`.
    ///
    /// # Panics
    /// If `x` does not have `C_in` channels or the layer's dtype, or the dilated kernel is longer than the padded
    /// input.
    #[track_caller]
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let k = self.weight();
        check_input("PhmConv1d::forward", &x, &k);
        conv1d(
            x,
            k,
            self.bias.as_ref().map(Param::val),
            options([self.stride], [self.padding], [self.dilation]),
        )
    }
}

impl Bridge for PhmConv1d {
    type Native<F: Float> = phm_nn::nn::PhmConv1d<F>;

    fn to_native<F: Float>(&self) -> phm_nn::Result<phm_nn::nn::PhmConv1d<F>> {
        let (a, f, b) = native_parts::<F>(
            &self.rules,
            &self.blocks,
            self.bias.as_ref(),
            &[self.kernel_size],
        )?;
        let native = phm_nn::nn::PhmConv1d::from_parts(
            a,
            f.into_dimensionality().expect("4-D kernels"),
            b,
            self.stride,
            self.padding,
            self.dilation,
        )?;
        native.set_rules_trainable(!self.fixed_rules);
        Ok(native)
    }

    /// # Errors
    /// None (every phm-nn `PhmConv1d` has a burn twin; shared rules are copied).
    fn from_native<F: Float>(
        native: &phm_nn::nn::PhmConv1d<F>,
        device: &Device,
    ) -> phm_nn::Result<Self> {
        // phm-nn keeps a 1-D window as a height-1 2-D one: the width holds the sizes.
        let g = native.geometry();
        let fixed = !native.rules_trainable();
        Ok(PhmConv1d {
            rules: param::<F, 3>(&native.rules().into_dyn(), fixed, device),
            blocks: param::<F, 3>(&native.blocks_param().value(), false, device),
            bias: native
                .bias()
                .map(|b| param::<F, 1>(&b.into_dyn(), false, device)),
            kernel_size: g.kernel().1,
            stride: g.stride().1,
            padding: g.padding().1,
            dilation: g.dilation().1,
            fixed_rules: fixed,
        })
    }
}
