//! PHM 1-D convolution (PHC for signals): `K = Σ A_i ⊗ F_i` over a 1-D window.
//!
//! ```text
//!     K = Σ_{i=1..n} A_i ⊗ F_i      A: (n, n, n)   F: (n, C_out/n, C_in/n, k)   K: (C_out, C_in, k)
//!     Y = conv1d(X, K) + bias        X: (B, C_in, L)   Y: (B, C_out, ⌊(L + 2p − d·(k − 1) − 1)/s⌋ + 1)
//! ```
//!
//! Exactly PyTorch's `F.conv1d(x, K, bias, stride, padding, dilation)` on the built kernel;
//! computed as [`PhmConv2d`](super::PhmConv2d) with a height-1 window (`K` built as the
//! weight of a [`PhmLinear`] `C_in·k → C_out` whose blocks are the `F_i` reshaped, cached
//! until a parameter changes, then the dense per-image lowering).
//!
//! ```
//! use phm_nn::prelude::*;
//! let mut rng = StdRng::seed_from_u64(0);
//! let conv = PhmConv1dConfig::new(4, 6, 5, 2).with_stride(2).init::<f64, _>(&mut rng)?;
//! assert_eq!(conv.num_parameters(), 8 + 6 * 4 * 5 / 2 + 6);
//! let y = conv.infer(ArrayD::ones(IxDyn(&[3, 4, 11])).view());
//! assert_eq!(y.shape(), &[3, 6, 4]); // ⌊(11 − 5)/2⌋ + 1
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{Array1, Array3, Array4, ArrayD, ArrayViewD, Ix3, Ix4};
use rand::Rng;

use super::conv1d::options;
use super::delegate_module;
use super::phm_core::{PhmConv, PhmSpec};
use crate::error::Result;
use crate::init::Init;
use crate::kernels::im2col::ConvGeometry;
use crate::module::{Module, Param};
use crate::nn::phm_linear::PhmLinear;
use crate::nn::rules::Rule;
use crate::Float;

/// Configuration of a [`PhmConv1d`] layer.
#[derive(Debug, Clone, PartialEq)]
pub struct PhmConv1dConfig {
    /// Input channels `C_in` (a multiple of `n`).
    pub in_channels: usize,
    /// Output channels `C_out` (a multiple of `n`).
    pub out_channels: usize,
    /// Kernel size `k`.
    pub kernel_size: usize,
    /// Hypercomplex dimension `n ≥ 1`.
    pub n: usize,
    /// Stride (default 1).
    pub stride: usize,
    /// Zero padding on each side (default 0).
    pub padding: usize,
    /// Dilation (default 1).
    pub dilation: usize,
    /// Whether the layer adds a bias (default `true`).
    pub bias: bool,
    /// Learned or fixed rules (default learned, [`Init::UnitFibers`]).
    pub rule: Rule,
    /// Block init, fans `(C_in·k, C_out)` (default [`Init::TorchLinear`]).
    pub block_init: Init,
    /// Bias init, same fans (default [`Init::TorchLinear`]).
    pub bias_init: Init,
}

impl PhmConv1dConfig {
    /// A `C_in → C_out` PHM convolution with a window of `kernel_size` and dimension `n`:
    /// stride 1, no padding, dilation 1, a bias, learned rules, PyTorch's default variance for
    /// the built kernel.
    #[must_use]
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize, n: usize) -> Self {
        PhmConv1dConfig {
            in_channels,
            out_channels,
            kernel_size,
            n,
            stride: 1,
            padding: 0,
            dilation: 1,
            bias: true,
            rule: Rule::Learned(Init::UnitFibers),
            block_init: Init::TorchLinear,
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

    /// Sets the rule source (learned with an init, or fixed to an algebra).
    #[must_use]
    pub fn with_rule(mut self, rule: Rule) -> Self {
        self.rule = rule;
        self
    }

    /// Sets the block init.
    #[must_use]
    pub fn with_block_init(mut self, init: Init) -> Self {
        self.block_init = init;
        self
    }

    /// Sets the bias init.
    #[must_use]
    pub fn with_bias_init(mut self, init: Init) -> Self {
        self.bias_init = init;
        self
    }

    fn spec(&self) -> PhmSpec<'_> {
        PhmSpec {
            rank: 1,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            kernel: std::slice::from_ref(&self.kernel_size),
            n: self.n,
            options: options(self.stride, self.padding, self.dilation),
            bias: self.bias,
            rule: self.rule,
            block_init: self.block_init,
            bias_init: self.bias_init,
        }
    }

    /// Builds the layer, drawing its parameters from `rng`.
    ///
    /// # Errors
    /// As [`PhmConv2dConfig::init`](super::PhmConv2dConfig::init): channel counts `n` does not
    /// divide, zero sizes, a zero stride or dilation, a fixed algebra whose dimension is not
    /// `n`, an invalid init, a padding or dilation that makes the size arithmetic overflow.
    pub fn init<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<PhmConv1d<F>> {
        Ok(PhmConv1d {
            core: self.spec().init(None, rng)?,
        })
    }

    /// Builds a layer that **shares** `rules` `(n, n, n)` with other PHM layers;
    /// [`rule`](Self::rule) is ignored.
    ///
    /// # Errors
    /// As [`init`](Self::init), and
    /// [`PhmError::ShapeMismatch`](crate::PhmError::ShapeMismatch) if `rules` is not
    /// `(n, n, n)`.
    pub fn init_shared<F: Float, R: Rng + ?Sized>(
        &self,
        rules: &Param<F>,
        rng: &mut R,
    ) -> Result<PhmConv1d<F>> {
        Ok(PhmConv1d {
            core: self.spec().init(Some(rules), rng)?,
        })
    }

    /// A new rule tensor `(n, n, n)` for this config, to share.
    ///
    /// # Errors
    /// As [`init`](Self::init).
    pub fn new_rules<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Param<F>> {
        self.spec().new_rules(rng)
    }
}

/// A PHM 1-D convolution; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct PhmConv1d<F: Float> {
    core: PhmConv<F>,
}

impl<F: Float> PhmConv1d<F> {
    /// A layer from rules `(n, n, n)` (trainable), kernels `F` `(n, C_out/n, C_in/n, k)`, an
    /// optional bias `(C_out)`, and stride, padding and dilation.
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`](crate::PhmError::ShapeMismatch) if the tensors do not fit
    /// together; [`PhmError::ZeroN`](crate::PhmError::ZeroN) /
    /// [`PhmError::ZeroSize`](crate::PhmError::ZeroSize) for empty tensors;
    /// [`PhmError::InvalidArgument`](crate::PhmError::InvalidArgument) for a zero stride or
    /// dilation; [`PhmError::TooLarge`](crate::PhmError::TooLarge) as
    /// [`PhmConv1dConfig::init`].
    pub fn from_parts(
        rules: Array3<F>,
        kernels: Array4<F>,
        bias: Option<Array1<F>>,
        stride: usize,
        padding: usize,
        dilation: usize,
    ) -> Result<Self> {
        Ok(PhmConv1d {
            core: PhmConv::from_parts(
                1,
                rules,
                kernels.into_dyn(),
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
        self.core.linear().shape().out_features()
    }

    /// Hypercomplex dimension `n`.
    pub fn n(&self) -> usize {
        self.core.linear().shape().n()
    }

    /// A copy of the rules `A`, `(n, n, n)`.
    pub fn rules(&self) -> Array3<F> {
        self.core.linear().rules()
    }

    /// A copy of the kernels `F`, `(n, C_out/n, C_in/n, k)`.
    pub fn kernels(&self) -> Array4<F> {
        self.core
            .kernels()
            .into_dimensionality::<Ix4>()
            .expect("4-D")
    }

    /// The built kernel `K = Σ A_i ⊗ F_i`, `(C_out, C_in, k)`: PyTorch's `nn.Conv1d` weight.
    pub fn weight(&self) -> Array3<F> {
        self.core
            .weight()
            .into_dimensionality::<Ix3>()
            .expect("3-D")
    }

    /// A copy of the bias, if any.
    pub fn bias(&self) -> Option<Array1<F>> {
        self.core.linear().bias()
    }

    /// The rules' handle: share it with other PHM layers of the same `n`.
    pub fn rules_param(&self) -> &Param<F> {
        self.core.linear().rules_param()
    }

    /// The kernels' handle, stored as `(n, C_out/n, C_in/n·k)`.
    pub fn blocks_param(&self) -> &Param<F> {
        self.core.linear().blocks_param()
    }

    /// The bias's handle, if any.
    pub fn bias_param(&self) -> Option<&Param<F>> {
        self.core.linear().bias_param()
    }

    /// Whether the rules are learned (`true`) or fixed.
    pub fn rules_trainable(&self) -> bool {
        self.core.linear().rules_trainable()
    }

    /// Makes the rules learned or fixed (for every layer sharing them).
    pub fn set_rules_trainable(&self, trainable: bool) {
        self.core.linear().set_rules_trainable(trainable);
    }

    /// The parameters as a [`PhmLinear`] `C_in·k → C_out` (blocks = the `F_i` reshaped); its
    /// built weight is `K` `(C_out, C_in·k)`, cached until a parameter changes.
    pub fn linear(&self) -> &PhmLinear<F> {
        self.core.linear()
    }

    /// The [`PhmLinear`], mutably: [`PhmLinear::cache_weight`] builds `K` for the `&self`
    /// inference path. (The convolution always multiplies by the built `K`; the linear
    /// layer's [`Strategy`](crate::kernels::strategy::Strategy) does not apply to it.)
    pub fn linear_mut(&mut self) -> &mut PhmLinear<F> {
        self.core.linear_mut()
    }
}

delegate_module!(PhmConv1d);
