//! Dense fully connected layer, the baseline PHM is measured against.
//!
//! ```text
//!     Y = X Wᵀ + 1 bᵀ        X: (B, d)   W: (k, d) (out × in)   b: (k)   Y: (B, k)
//! ```
//!
//! Backward: `dW += Gᵀ X`, `db += Σ_rows G`, `dX = G W`, for `G = dL/dY`.
//! The default init is PyTorch's `nn.Linear` default, `U(−1/√d, 1/√d)` for `W` and `b`.
//!
//! ```
//! use phm_nn::{LinearConfig, Module};
//! let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
//! let mut layer = LinearConfig::new(8, 3).init::<f32, _>(&mut rng)?;
//! let y = layer.forward(ndarray::Array2::ones((5, 8)).view());
//! assert_eq!(y.dim(), (5, 3));
//! assert_eq!(layer.num_parameters(), 8 * 3 + 3);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Ix1, Ix2};
use rand::Rng;

use crate::error::{check_shape, PhmError, Result};
use crate::init::{Fans, Init};
use crate::kernels::gemm::{
    add_bias_grad, affine_backward, affine_forward, assert_cols, assert_same_shape,
};
use crate::module::{Module, Param};
use crate::Float;

/// Configuration of a dense [`Linear`] layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearConfig {
    /// Input width `d`.
    pub in_features: usize,
    /// Output width `k`.
    pub out_features: usize,
    /// Whether the layer adds a bias (default `true`).
    pub bias: bool,
    /// Weight init (default [`Init::TorchLinear`]), with fans `(d, k)`.
    pub weight_init: Init,
    /// Bias init (default [`Init::TorchLinear`]), with fans `(d, k)`.
    pub bias_init: Init,
}

impl LinearConfig {
    /// A `d → k` layer with bias and PyTorch's default init.
    pub fn new(in_features: usize, out_features: usize) -> Self {
        LinearConfig {
            in_features,
            out_features,
            bias: true,
            weight_init: Init::TorchLinear,
            bias_init: Init::TorchLinear,
        }
    }

    /// Sets whether the layer has a bias.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets the weight init.
    pub fn with_weight_init(mut self, init: Init) -> Self {
        self.weight_init = init;
        self
    }

    /// Sets the bias init.
    pub fn with_bias_init(mut self, init: Init) -> Self {
        self.bias_init = init;
        self
    }

    /// Builds the layer, drawing its parameters from `rng`.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] for a zero width; [`PhmError::InvalidArgument`] for an invalid init.
    pub fn init<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Linear<F>> {
        let (d, k) = (self.in_features, self.out_features);
        for (what, size) in [("in_features", d), ("out_features", k)] {
            if size == 0 {
                return Err(PhmError::ZeroSize { what });
            }
        }
        let fans = Fans::new(d, k);
        let weight = self.weight_init.sample(&[k, d], fans, rng)?;
        let bias = if self.bias {
            Some(Param::new(self.bias_init.sample(&[k], fans, rng)?))
        } else {
            None
        };
        Ok(Linear {
            weight: Param::new(weight),
            bias,
            input: None,
        })
    }
}

/// A dense layer `Y = X Wᵀ + b`; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Linear<F: Float> {
    weight: Param<F>,
    bias: Option<Param<F>>,
    input: Option<Array2<F>>,
}

impl<F: Float> Linear<F> {
    /// A layer with the given weight `(out, in)` and optional bias `(out)`.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] for an empty weight, [`PhmError::ShapeMismatch`] if the bias
    /// length is not `out`.
    pub fn from_parts(weight: Array2<F>, bias: Option<Array1<F>>) -> Result<Self> {
        let (k, d) = weight.dim();
        if d == 0 {
            return Err(PhmError::ZeroSize {
                what: "in_features",
            });
        }
        if k == 0 {
            return Err(PhmError::ZeroSize {
                what: "out_features",
            });
        }
        if let Some(b) = &bias {
            check_shape("bias", &[k], b.shape())?;
        }
        Ok(Linear {
            weight: Param::new(weight.into_dyn()),
            bias: bias.map(|b| Param::new(b.into_dyn())),
            input: None,
        })
    }

    /// Input width `d`.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Output width `k`.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// The weight `(out, in)`.
    pub fn weight(&self) -> ArrayView2<'_, F> {
        weight_view(&self.weight)
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<ArrayView1<'_, F>> {
        self.bias.as_ref().map(bias_view)
    }

    #[track_caller]
    fn check_input(&self, context: &str, x: &ArrayView2<'_, F>) {
        assert_cols(context, "input", x.shape(), self.in_features());
    }
}

fn weight_view<F: Float>(p: &Param<F>) -> ArrayView2<'_, F> {
    p.value()
        .into_dimensionality::<Ix2>()
        .expect("weight is 2-D")
}

pub(crate) fn bias_view<F: Float>(p: &Param<F>) -> ArrayView1<'_, F> {
    p.value().into_dimensionality::<Ix1>().expect("bias is 1-D")
}

impl<F: Float> Module<F> for Linear<F> {
    /// # Panics
    /// If `x` is not `(batch, in_features)`.
    #[track_caller]
    fn forward(&mut self, x: ArrayView2<'_, F>) -> Array2<F> {
        self.check_input("Linear::forward", &x);
        let y = self.infer(x.view());
        self.input = Some(x.to_owned());
        y
    }

    /// # Panics
    /// If no forward pass preceded it, or `grad_output` is not `(batch, out_features)`.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayView2<'_, F>) -> Array2<F> {
        let x = self
            .input
            .take()
            .expect("Linear::backward called before forward");
        assert_same_shape(
            "Linear::backward",
            "grad_output",
            grad_output.shape(),
            &[x.nrows(), self.out_features()],
        );
        let trainable = self.weight.is_trainable();
        let (w, dw) = self.weight.value_and_grad_mut();
        let w = w.into_dimensionality::<Ix2>().expect("weight is 2-D");
        let dw = trainable.then(|| dw.into_dimensionality::<Ix2>().expect("weight is 2-D"));
        let db = self.bias.as_mut().filter(|b| b.is_trainable()).map(|b| {
            b.grad_mut()
                .into_dimensionality::<Ix1>()
                .expect("bias is 1-D")
        });
        add_bias_grad(db, &grad_output);
        affine_backward(&x.view(), &w, &grad_output, dw, F::one())
    }

    #[track_caller]
    fn infer(&self, x: ArrayView2<'_, F>) -> Array2<F> {
        self.check_input("Linear::infer", &x);
        affine_forward(&x, &self.weight(), self.bias().as_ref())
    }

    fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<F>)) {
        f("weight", &self.weight);
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<F>)) {
        f("weight", &mut self.weight);
        if let Some(b) = &mut self.bias {
            f("bias", b);
        }
    }
}
