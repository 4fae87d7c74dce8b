//! The PHM convolution core of any spatial rank: the kernel `K = Σ A_i ⊗ F_i` built as the
//! weight of a [`PhmLinear`] with `in = C_in·kh·kw` (whose blocks are the kernels `F_i`
//! reshaped), cached there until a parameter changes, then the dense
//! [lowering](super::lowering); backward maps `dK̂` to `dA`, `dF` through the rearrangement
//! (`dA_i[r, c] += ⟨F_i, dK̂_{rc}⟩`, `dF_i += Σ_{r,c} A_i[r, c] dK̂_{rc}`).
//! [`PhmConv1d`](super::PhmConv1d) and [`PhmConv2d`](super::PhmConv2d) wrap it.

use ndarray::{Array1, Array2, Array3, Array4, ArrayD, ArrayViewD, CowArray, Ix1, Ix2, IxDyn};
use rand::Rng;

use super::lowering::{lowering, Frame, Lowering, Options};
use super::{check_channels, describe_options};
use crate::error::{PhmError, Result};
use crate::init::Init;
use crate::kernels::buffer_pool;
use crate::kernels::gemm::reuse;
use crate::kernels::im2col::ConvGeometry;
use crate::kernels::phm::build_weight;
use crate::module::{Module, Param, SavedStates, StateStack};
use crate::nn::phm_linear::{add_weight_grad_to_parts, dim3};
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

/// The PHM convolution of any spatial rank (1 or 2): `K` built by a [`PhmLinear`], then the
/// dense lowering.
#[derive(Debug, Clone)]
pub(crate) struct PhmConv<F: Float> {
    lowering: Lowering,
    /// Spatial kernel sizes in PyTorch's layout: `[kh, kw]` or `[k]`.
    kernel: Vec<usize>,
    linear: PhmLinear<F>,
    /// The input `(B, C_in, H, W)` of each training forward (lowered again in backward).
    saved: SavedStates<(Array4<F>, Frame)>,
    /// `dK̂` `(C_out, C_in·kh·kw)` and the rearrangement scratch, reused across steps.
    dk: Array2<F>,
    rearranged: Array2<F>,
}

impl<F: Float> PhmConv<F> {
    fn assemble(lowering: Lowering, kernel: Vec<usize>, linear: PhmLinear<F>) -> Self {
        PhmConv {
            lowering,
            kernel,
            linear,
            saved: SavedStates::new(),
            dk: Array2::zeros((0, 0)),
            rearranged: Array2::zeros((0, 0)),
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

    /// `K̂` `(C_out, C_in·kh·kw)` built from the current parameters, for `&self` callers: the
    /// linear layer's cached `W` when current, else built now (`n·C_out·C_in·kh·kw`
    /// multiply-adds, small next to the convolution).
    fn kernel_matrix(&self) -> CowArray<'_, F, Ix2> {
        match self.linear.cached_weight() {
            Some(w) => CowArray::from(w.view()),
            None => {
                let (a, s) = (
                    self.linear.rules_param().read(),
                    self.linear.blocks_param().read(),
                );
                CowArray::from(
                    build_weight(dim3(a.value()), dim3(s.value()))
                        .expect("a layer's rules and blocks fit together"),
                )
            }
        }
    }

    #[track_caller]
    pub(crate) fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let context = self.context("forward");
        let frame = self.lowering.frame_of(&context, x.shape());
        let x = self.lowering.images(x, &frame);
        // A second handle to the bias, read in place while the layer is borrowed mutably.
        let bias = self.linear.bias_param().map(Param::share);
        let bias = bias.as_ref().map(|b| b.read());
        let bias = bias
            .as_ref()
            .map(|b| b.value().into_dimensionality::<Ix1>().expect("bias is 1-D"));
        // Built once per parameter change (the linear layer's cache), then the dense path.
        let k = self.linear.current_weight();
        let (y, kept) = self
            .lowering
            .forward(&context, x.view(), &frame, (k.view(), bias), true);
        self.saved.push((kept.expect("kept"), frame));
        y
    }

    #[track_caller]
    pub(crate) fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let rank = self.lowering.rank;
        let (x, frame) = self.saved.pop(format_args!("PhmConv{rank}d"));
        let bias = self.linear.bias_param().map(Param::share);
        let mut bias = bias.as_ref().map(|b| b.write());
        let db = bias.as_mut().filter(|b| b.is_trainable()).map(|b| {
            b.grad_mut()
                .into_dimensionality::<Ix1>()
                .expect("bias is 1-D")
        });
        let shape = self.linear.shape();
        let (rules, blocks) = (
            self.linear.rules_param().share(),
            self.linear.blocks_param().share(),
        );
        let (rules_trainable, blocks_trainable) = (rules.is_trainable(), blocks.is_trainable());
        let needs_parts = rules_trainable || blocks_trainable;
        let context = self.context("backward");
        let k = self.linear.current_weight();
        let dk = needs_parts.then(|| {
            let dk = reuse(&mut self.dk, shape.weight_dim());
            dk.fill(F::zero());
            dk.view_mut()
        });
        let dx = self
            .lowering
            .backward(&context, x.view(), &frame, k.view(), grad_output, dk, db);
        if needs_parts {
            // dK̂ → dA, dF through the rearrangement, as the PHM linear layer's materialized
            // backward.
            add_weight_grad_to_parts(&rules, &blocks, shape, self.dk.view(), &mut self.rearranged);
        }
        buffer_pool::recycle(x);
        dx
    }

    #[track_caller]
    pub(crate) fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let context = self.context("infer");
        let frame = self.lowering.frame_of(&context, x.shape());
        let x = self.lowering.images(x, &frame);
        let bias = self.linear.bias_param().map(|b| b.read());
        let bias = bias
            .as_ref()
            .map(|b| b.value().into_dimensionality::<Ix1>().expect("bias is 1-D"));
        let k = self.kernel_matrix();
        self.lowering
            .forward(&context, x.view(), &frame, (k.view(), bias), false)
            .0
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
