//! PHM 2-D convolution (PHC): a convolution whose kernel is a sum of Kronecker products.
//!
//! ```text
//!     K = Σ_{i=1..n} A_i ⊗ F_i      A: (n, n, n)   F: (n, C_out/n, C_in/n, kh, kw)   K: (C_out, C_in, kh, kw)
//!     K[r·C_out/n + o, c·C_in/n + q, :, :] = Σ_i A_i[r, c] · F_i[o, q, :, :]
//!     Y = conv2d(X, K) + bias        X: (B, C_in, H, W)   Y: (B, C_out, H_out, W_out)
//! ```
//!
//! Exactly PyTorch's `F.conv2d(x, K, bias, stride, padding, dilation)` on the built kernel,
//! with `n³ + C_out·C_in·kh·kw/n + C_out` parameters (fixed rules frozen, not counted). `n`
//! must divide both channel counts. The parameters are those of a [`PhmLinear`] with
//! `in = C_in·kh·kw`, `out = C_out`, whose blocks `(n, C_out/n, C_in/n·kh·kw)` are the `F_i`
//! reshaped (that is how they are stored: the `"blocks"` parameter; [`PhmConv2d::kernels`]
//! gives the 5-D view). `K` is built once per parameter change (`n·C_out·C_in·kh·kw`
//! multiply-adds, cached in that layer; `infer` without the cache builds it per call) and the
//! convolution runs as the dense one (per-image im2col, one product per image, images split
//! across threads); backward maps `dK` back to `dA`, `dF`. Rules can be learned, fixed to an algebra, or shared with other PHM
//! layers of the same `n` (linear or convolutional).
//!
//! The default init draws the blocks like a [`PhmLinear`] with fans `(C_in·kh·kw, C_out)`,
//! so the built `K` has PyTorch's default variance `1/(3·C_in·kh·kw)`.
//!
//! ```
//! use phm_nn::prelude::*;
//! let mut rng = StdRng::seed_from_u64(0);
//! // A quaternion convolution 4 → 8, 3×3, stride 2, padding 1.
//! let conv = PhmConv2dConfig::new(4, 8, 3, 4)
//!     .with_rule(Rule::Fixed(Algebra::Quaternion))
//!     .with_stride(2)
//!     .with_padding(1)
//!     .init::<f64, _>(&mut rng)?;
//! assert_eq!(conv.num_parameters(), 8 * 4 * 9 / 4 + 8); // rules frozen
//! assert_eq!(conv.kernels().dim(), (4, 2, 1, 3, 3));
//! let y = conv.infer(ArrayD::ones(IxDyn(&[1, 4, 7, 7])).view());
//! assert_eq!(y.shape(), &[1, 8, 4, 4]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{Array1, Array3, Array4, Array5, ArrayD, ArrayViewD, Ix4, Ix5};
use rand::Rng;

use super::phm_core::{PhmConv, PhmSpec};
use super::{delegate_module, Size2};
#[cfg(doc)]
use crate::error::PhmError;
use crate::error::Result;
use crate::init::Init;
use crate::kernels::im2col::ConvGeometry;
use crate::module::{Module, Param};
use crate::nn::phm_linear::PhmLinear;
use crate::nn::rules::Rule;
use crate::Float;

/// Configuration of a [`PhmConv2d`] layer.
#[derive(Debug, Clone, PartialEq)]
pub struct PhmConv2dConfig {
    /// Input channels `C_in` (a multiple of `n`).
    pub in_channels: usize,
    /// Output channels `C_out` (a multiple of `n`).
    pub out_channels: usize,
    /// Kernel size `(kh, kw)`.
    pub kernel_size: Size2,
    /// Hypercomplex dimension `n ≥ 1`.
    pub n: usize,
    /// Stride (default 1).
    pub stride: Size2,
    /// Zero padding on each side (default 0).
    pub padding: Size2,
    /// Dilation (default 1).
    pub dilation: Size2,
    /// Whether the layer adds a bias (default `true`).
    pub bias: bool,
    /// Learned or fixed rules (default learned, [`Init::UnitFibers`]).
    pub rule: Rule,
    /// Block init, fans `(C_in·kh·kw, C_out)` (default [`Init::TorchLinear`]).
    pub block_init: Init,
    /// Bias init, same fans (default [`Init::TorchLinear`]).
    pub bias_init: Init,
}

impl PhmConv2dConfig {
    /// A `C_in → C_out` PHM convolution with a `kernel_size` window and dimension `n`: stride 1,
    /// no padding, dilation 1, a bias, learned rules, and an init whose built kernel has the
    /// variance of PyTorch's `nn.Conv2d` default.
    #[must_use]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: impl Into<Size2>,
        n: usize,
    ) -> Self {
        PhmConv2dConfig {
            in_channels,
            out_channels,
            kernel_size: kernel_size.into(),
            n,
            stride: Size2(1, 1),
            padding: Size2(0, 0),
            dilation: Size2(1, 1),
            bias: true,
            rule: Rule::Learned(Init::UnitFibers),
            block_init: Init::TorchLinear,
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

    /// Builds the layer, drawing its parameters from `rng`.
    ///
    /// # Errors
    /// - [`PhmError::ZeroN`], [`PhmError::ZeroSize`], or [`PhmError::NotDivisible`] for channel
    ///   counts that `n` does not divide (e.g. `in_channels 6 is not divisible by n = 4`);
    /// - [`PhmError::InvalidArgument`] for a zero stride or dilation, a fixed algebra whose
    ///   dimension is not `n`, or an invalid init;
    /// - [`PhmError::TooLarge`] if the padding or dilation makes the size arithmetic overflow
    ///   (see [`ConvGeometry::new`](crate::kernels::im2col::ConvGeometry::new)).
    pub fn init<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<PhmConv2d<F>> {
        let kernel = [self.kernel_size.0, self.kernel_size.1];
        Ok(PhmConv2d {
            core: self.with_spec(&kernel, |s| s.init(None, rng))?,
        })
    }

    /// Builds a layer that **shares** `rules` `(n, n, n)` with other PHM layers (from their
    /// `rules_param()`, or [`new_rules`](Self::new_rules)); [`rule`](Self::rule) is ignored.
    ///
    /// # Errors
    /// As [`init`](Self::init), and [`PhmError::ShapeMismatch`] if `rules` is not `(n, n, n)`.
    pub fn init_shared<F: Float, R: Rng + ?Sized>(
        &self,
        rules: &Param<F>,
        rng: &mut R,
    ) -> Result<PhmConv2d<F>> {
        let kernel = [self.kernel_size.0, self.kernel_size.1];
        Ok(PhmConv2d {
            core: self.with_spec(&kernel, |s| s.init(Some(rules), rng))?,
        })
    }

    /// A new rule tensor `(n, n, n)` for this config (learned or the frozen rules of an
    /// algebra), to pass to [`init_shared`](Self::init_shared) of every layer sharing it.
    ///
    /// # Errors
    /// As [`init`](Self::init).
    pub fn new_rules<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Param<F>> {
        let kernel = [self.kernel_size.0, self.kernel_size.1];
        self.with_spec(&kernel, |s| s.new_rules(rng))
    }

    fn with_spec<T>(&self, kernel: &[usize], f: impl FnOnce(&PhmSpec<'_>) -> T) -> T {
        f(&PhmSpec {
            rank: 2,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            kernel,
            n: self.n,
            options: (
                self.stride.into(),
                self.padding.into(),
                self.dilation.into(),
            ),
            bias: self.bias,
            rule: self.rule,
            block_init: self.block_init,
            bias_init: self.bias_init,
        })
    }
}

/// A PHM 2-D convolution; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct PhmConv2d<F: Float> {
    core: PhmConv<F>,
}

impl<F: Float> PhmConv2d<F> {
    /// A layer from rules `(n, n, n)` (trainable; see
    /// [`set_rules_trainable`](Self::set_rules_trainable)), kernels `F`
    /// `(n, C_out/n, C_in/n, kh, kw)`, an optional bias `(C_out)`, and stride, padding and
    /// dilation.
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`] if the tensors do not fit together; [`PhmError::ZeroN`] /
    /// [`PhmError::ZeroSize`] for empty tensors; [`PhmError::InvalidArgument`] for a zero
    /// stride or dilation; [`PhmError::TooLarge`] as [`PhmConv2dConfig::init`].
    pub fn from_parts(
        rules: Array3<F>,
        kernels: Array5<F>,
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
        Ok(PhmConv2d {
            core: PhmConv::from_parts(2, rules, kernels.into_dyn(), bias, options)?,
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

    /// A copy of the kernels `F`, `(n, C_out/n, C_in/n, kh, kw)`.
    pub fn kernels(&self) -> Array5<F> {
        self.core
            .kernels()
            .into_dimensionality::<Ix5>()
            .expect("5-D")
    }

    /// The built kernel `K = Σ A_i ⊗ F_i`, `(C_out, C_in, kh, kw)`: PyTorch's `nn.Conv2d`
    /// weight for the same convolution.
    pub fn weight(&self) -> Array4<F> {
        self.core
            .weight()
            .into_dimensionality::<Ix4>()
            .expect("4-D")
    }

    /// A copy of the bias, if any.
    pub fn bias(&self) -> Option<Array1<F>> {
        self.core.linear().bias()
    }

    /// The rules' handle: share it with other PHM layers of the same `n`.
    pub fn rules_param(&self) -> &Param<F> {
        self.core.linear().rules_param()
    }

    /// The kernels' handle, stored as `(n, C_out/n, C_in/n·kh·kw)`.
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

    /// The parameters as a [`PhmLinear`] `C_in·kh·kw → C_out` (blocks = the `F_i` reshaped);
    /// its built weight is `K` `(C_out, C_in·kh·kw)`, cached until a parameter changes.
    pub fn linear(&self) -> &PhmLinear<F> {
        self.core.linear()
    }

    /// The [`PhmLinear`], mutably: [`PhmLinear::cache_weight`] builds `K` for the `&self`
    /// inference path ([`Module::infer`] otherwise builds it on every call). The convolution
    /// always multiplies by the built `K`; the linear layer's
    /// [`Strategy`](crate::kernels::strategy::Strategy) does not apply to it.
    pub fn linear_mut(&mut self) -> &mut PhmLinear<F> {
        self.core.linear_mut()
    }
}

delegate_module!(PhmConv2d);
