//! The PHM convolution core of any spatial rank: im2col, then a
//! [`PhmLinear`] with `in = C_in·kh·kw` whose blocks are the kernels `F_i` reshaped.
//! [`PhmConv1d`](super::PhmConv1d) and [`PhmConv2d`](super::PhmConv2d) wrap it.

use ndarray::{Array1, Array3, ArrayD, ArrayViewD, Ix2, IxDyn};
use rand::Rng;

use super::lowering::{lowering, Frame, Lowering, Options};
use super::{check_channels, describe_options};
use crate::error::{PhmError, Result};
use crate::init::Init;
use crate::kernels::im2col::ConvGeometry;
use crate::module::{Module, Param, SavedStates, StateStack};
use crate::nn::phm_linear::{PhmLinear, PhmLinearConfig};
use crate::nn::rules::Rule;
use crate::Float;

/// The sizes `(in, out, n, taps)` and options of a PHM convolution config.
pub(crate) struct PhmSpec<'a> {
    pub rank: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: &'a [usize],
    pub n: usize,
    pub options: Options,
    pub bias: bool,
    pub rule: Rule,
    pub block_init: Init,
    pub bias_init: Init,
}

impl PhmSpec<'_> {
    fn check(&self) -> Result<Lowering> {
        check_channels("in_channels", self.in_channels, self.n)?;
        check_channels("out_channels", self.out_channels, self.n)?;
        lowering(self.rank, self.in_channels, self.kernel, self.options)
    }

    fn linear_config(&self, lowering: &Lowering) -> PhmLinearConfig {
        PhmLinearConfig::new(lowering.geometry.cols(), self.out_channels, self.n)
            .with_bias(self.bias)
            .with_rule(self.rule)
            .with_block_init(self.block_init)
            .with_bias_init(self.bias_init)
    }

    pub(crate) fn new_rules<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Param<F>> {
        let lowering = self.check()?;
        self.linear_config(&lowering).new_rules(rng)
    }

    pub(crate) fn init<F: Float, R: Rng + ?Sized>(
        &self,
        rules: Option<&Param<F>>,
        rng: &mut R,
    ) -> Result<PhmConv<F>> {
        let lowering = self.check()?;
        let config = self.linear_config(&lowering);
        let linear = match rules {
            Some(rules) => config.init_shared(rules, rng)?,
            None => config.init(rng)?,
        };
        Ok(PhmConv::assemble(lowering, self.kernel.to_vec(), linear))
    }
}

/// The PHM convolution of any spatial rank (1 or 2): im2col, then a [`PhmLinear`].
#[derive(Debug, Clone)]
pub(crate) struct PhmConv<F: Float> {
    lowering: Lowering,
    /// Spatial kernel sizes in PyTorch's layout: `[kh, kw]` or `[k]`.
    kernel: Vec<usize>,
    linear: PhmLinear<F>,
    saved: SavedStates<Frame>,
}

impl<F: Float> PhmConv<F> {
    fn assemble(lowering: Lowering, kernel: Vec<usize>, linear: PhmLinear<F>) -> Self {
        PhmConv {
            lowering,
            kernel,
            linear,
            saved: SavedStates::new(),
        }
    }

    /// From rules `(n, n, n)`, kernels `(n, C_out/n, C_in/n, k…)` (rank + 3 axes), an optional
    /// bias.
    pub(crate) fn from_parts(
        rank: usize,
        rules: Array3<F>,
        kernels: ArrayD<F>,
        bias: Option<Array1<F>>,
        options: Options,
    ) -> Result<Self> {
        let shape = kernels.shape().to_vec();
        if shape.len() != rank + 3 {
            return Err(PhmError::ShapeMismatch {
                what: "kernels",
                expected: vec![0; rank + 3],
                got: shape,
            });
        }
        let n = shape[0];
        if n == 0 {
            return Err(PhmError::ZeroN);
        }
        let kernel = shape[3..].to_vec();
        let taps: usize = kernel.iter().product();
        let lowering = lowering(rank, n * shape[2], &kernel, options)?;
        let blocks = kernels
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((n, shape[1], shape[2] * taps))
            .expect("standard layout reshapes");
        let linear = PhmLinear::from_parts(rules, blocks, bias)?;
        Ok(PhmConv::assemble(lowering, kernel, linear))
    }

    pub(crate) fn geometry(&self) -> ConvGeometry {
        self.lowering.geometry
    }

    /// `PhmConv1d::method` or `PhmConv2d::method`, for panic messages.
    fn context(&self, method: &str) -> String {
        format!("PhmConv{}d::{method}", self.lowering.rank)
    }

    pub(crate) fn linear(&self) -> &PhmLinear<F> {
        &self.linear
    }

    pub(crate) fn linear_mut(&mut self) -> &mut PhmLinear<F> {
        &mut self.linear
    }

    fn spatial_shape(&self, lead: &[usize]) -> Vec<usize> {
        let mut s = lead.to_vec();
        s.extend_from_slice(&self.kernel);
        s
    }

    /// `F` as `(n, C_out/n, C_in/n, k…)`.
    pub(crate) fn kernels(&self) -> ArrayD<F> {
        let shape = self.linear.shape();
        let n = shape.n();
        let lead = [
            n,
            shape.out_features() / n,
            self.lowering.geometry.channels() / n,
        ];
        self.linear
            .blocks()
            .into_shape_with_order(IxDyn(&self.spatial_shape(&lead)))
            .expect("blocks are in standard layout")
    }

    /// The built `K` as `(C_out, C_in, k…)`.
    pub(crate) fn weight(&self) -> ArrayD<F> {
        let lead = [
            self.linear.shape().out_features(),
            self.lowering.geometry.channels(),
        ];
        self.linear
            .weight()
            .into_shape_with_order(IxDyn(&self.spatial_shape(&lead)))
            .expect("the weight is in standard layout")
    }

    #[track_caller]
    pub(crate) fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (cols, frame) = self.lowering.lower(&self.context("forward"), x);
        let y = self.linear.forward(cols.into_dyn().view());
        self.saved.push(frame);
        self.lowering.raise_output(rows(&y), &frame)
    }

    #[track_caller]
    pub(crate) fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let rank = self.lowering.rank;
        let frame = self.saved.pop(format_args!("PhmConv{rank}d"));
        let out = self.linear.shape().out_features();
        let g = self
            .lowering
            .grad_rows(&self.context("backward"), grad_output, &frame, out);
        let dcols = self.linear.backward(g.into_dyn().view());
        self.lowering.raise_input_grad(rows(&dcols), &frame)
    }

    #[track_caller]
    pub(crate) fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (cols, frame) = self.lowering.lower(&self.context("infer"), x);
        let y = self.linear.infer(cols.into_dyn().view());
        self.lowering.raise_output(rows(&y), &frame)
    }

    pub(crate) fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<F>)) {
        self.linear.visit_params(f);
    }

    pub(crate) fn saved_states(&self) -> &dyn StateStack {
        &self.saved
    }

    /// Also drops the inner layer's states (one per frame; it is not a visited child).
    pub(crate) fn clear_saved(&mut self) {
        self.saved.clear();
        self.linear.clear_saved();
    }

    pub(crate) fn describe(&self, name: &str) -> String {
        let g = self.lowering.geometry;
        let kernel = self
            .kernel
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("×");
        let rules = if self.linear.rules_trainable() {
            "learned rules"
        } else {
            "fixed rules"
        };
        let bias = if self.linear.bias_param().is_some() {
            ""
        } else {
            ", no bias"
        };
        format!(
            "{name}({} → {}, kernel {kernel}, n = {}, {rules}{}{bias})",
            g.channels(),
            self.linear.shape().out_features(),
            self.linear.shape().n(),
            describe_options(&g, self.lowering.rank)
        )
    }

    pub(crate) fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        self.lowering
            .output_shape(input, self.linear.shape().out_features())
    }
}

fn rows<F: Float>(a: &ArrayD<F>) -> ndarray::ArrayView2<'_, F> {
    a.view()
        .into_dimensionality::<Ix2>()
        .expect("the lowered product is 2-D")
}
