//! Dense fully connected layer, the baseline PHM is measured against.
//!
//! ```text
//!     Y = X Wᵀ + 1 bᵀ        X: (…, d)   W: (k, d) (out × in)   b: (k)   Y: (…, k)
//! ```
//!
//! The layer acts on the last axis: any leading axes (batch, time, …) are flattened into the
//! rows of one matrix product, as in PyTorch's `nn.Linear`.
//!
//! Backward: `dW += Gᵀ X`, `db += Σ_rows G`, `dX = G W`, for `G = dL/dY`.
//! The default init is PyTorch's `nn.Linear` default, `U(−1/√d, 1/√d)` for `W` and `b`.
//!
//! ```
//! use phm_nn::{LinearConfig, Module};
//! let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
//! let mut layer = LinearConfig::new(8, 3).init::<f32, _>(&mut rng)?;
//! let y = layer.forward(ndarray::ArrayD::ones(vec![5, 8]).view());
//! assert_eq!(y.shape(), &[5, 3]);
//! let y = layer.infer(ndarray::ArrayD::ones(vec![2, 7, 8]).view()); // (B, T, d)
//! assert_eq!(y.shape(), &[2, 7, 3]);
//! assert_eq!(layer.num_parameters(), 8 * 3 + 3);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{Array1, Array2, ArrayD, ArrayView1, ArrayView2, ArrayViewD, Ix1, Ix2};
use rand::Rng;

use crate::error::{check_shape, PhmError, Result};
use crate::init::{Fans, Init};
use crate::kernels::buffer_pool;
use crate::kernels::gemm::{add_bias_grad, affine_backward, affine_forward, assert_same_shape};
use crate::kernels::shapes::{as_matrix, linear_output_shape, owned_matrix, unflatten};
use crate::module::{Module, Param, SavedStates, StateStack};
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
    #[must_use]
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
    #[must_use]
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets the weight init.
    #[must_use]
    pub fn with_weight_init(mut self, init: Init) -> Self {
        self.weight_init = init;
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
            saved: SavedStates::new(),
        })
    }
}

/// A dense layer `Y = X Wᵀ + b`; see the [module docs](self).
#[derive(Clone)]
pub struct Linear<F: Float> {
    weight: Param<F>,
    bias: Option<Param<F>>,
    /// Per forward call: the input as a matrix and its leading axes.
    saved: SavedStates<(Array2<F>, Vec<usize>)>,
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
            saved: SavedStates::new(),
        })
    }

    /// A layer from parameter handles: `weight` `(out, in)` and `bias` `(out)`, e.g. the
    /// [`share`](Param::share)d weight of another layer (weight tying).
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`] if `weight` is not 2-D or the bias length is not `out`;
    /// [`PhmError::ZeroSize`] for an empty weight.
    pub fn from_params(weight: Param<F>, bias: Option<Param<F>>) -> Result<Self> {
        let shape = weight.shape();
        if shape.len() != 2 {
            return Err(PhmError::ShapeMismatch {
                what: "weight",
                expected: vec![0, 0],
                got: shape,
            });
        }
        for (what, size) in [("out_features", shape[0]), ("in_features", shape[1])] {
            if size == 0 {
                return Err(PhmError::ZeroSize { what });
            }
        }
        if let Some(b) = &bias {
            check_shape("bias", &[shape[0]], &b.shape())?;
        }
        Ok(Linear {
            weight,
            bias,
            saved: SavedStates::new(),
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

    /// A copy of the weight `(out, in)`.
    pub fn weight(&self) -> Array2<F> {
        weight_view(self.weight.read().value()).to_owned()
    }

    /// A copy of the bias, if any.
    pub fn bias(&self) -> Option<Array1<F>> {
        self.bias
            .as_ref()
            .map(|b| bias_view(b.read().value()).to_owned())
    }

    /// The weight's handle (share it to tie another layer to this weight).
    pub fn weight_param(&self) -> &Param<F> {
        &self.weight
    }

    /// The bias's handle, if any.
    pub fn bias_param(&self) -> Option<&Param<F>> {
        self.bias.as_ref()
    }

    /// `Y = X Wᵀ + b` for a matrix `x` `(M, d)`.
    fn affine(&self, x: &ArrayView2<'_, F>) -> Array2<F> {
        let w = self.weight.read();
        let b = self.bias.as_ref().map(|b| b.read());
        let b = b.as_ref().map(|b| bias_view(b.value()));
        affine_forward(x, &weight_view(w.value()), b.as_ref())
    }
}

fn weight_view<F: Float>(v: ArrayViewD<'_, F>) -> ArrayView2<'_, F> {
    v.into_dimensionality::<Ix2>().expect("weight is 2-D")
}

pub(crate) fn bias_view<F: Float>(v: ArrayViewD<'_, F>) -> ArrayView1<'_, F> {
    v.into_dimensionality::<Ix1>().expect("bias is 1-D")
}

impl<F: Float> Module<F> for Linear<F> {
    /// # Panics
    /// If the last axis of `x` is not `in_features`.
    #[track_caller]
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        // The saved input is a copy: the owned pass on it.
        self.forward_owned(buffer_pool::copy_of(&x))
    }

    /// Keeps `x` as the saved input (no copy).
    ///
    /// # Panics
    /// If the last axis of `x` is not `in_features`.
    #[track_caller]
    fn forward_owned(&mut self, x: ArrayD<F>) -> ArrayD<F> {
        let (x, lead) = owned_matrix("Linear::forward", "input", x, self.in_features());
        let y = self.affine(&x.view());
        self.saved.push((x, lead.clone()));
        unflatten(y, &lead)
    }

    /// # Panics
    /// If no forward pass is left to go back through, or `grad_output` is not
    /// `(…, out_features)` with the leading axes of that forward's input.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (x, lead) = self.saved.pop("Linear");
        let k = self.out_features();
        assert_same_shape(
            "Linear::backward",
            "grad_output",
            grad_output.shape(),
            &crate::kernels::shapes::with_last(&lead, k),
        );
        let (g, _) = as_matrix("Linear::backward", "grad_output", grad_output, k);
        if let Some(b) = &self.bias {
            let mut b = b.write();
            if b.is_trainable() {
                let db = b
                    .grad_mut()
                    .into_dimensionality::<Ix1>()
                    .expect("bias is 1-D");
                add_bias_grad(Some(db), &g.view());
            }
        }
        let mut w = self.weight.write();
        let trainable = w.is_trainable();
        let (w, dw) = w.value_and_grad_mut();
        let w = w.into_dimensionality::<Ix2>().expect("weight is 2-D");
        let dw = trainable.then(|| dw.into_dimensionality::<Ix2>().expect("weight is 2-D"));
        let dx = affine_backward(&x.view(), &w, &g.view(), dw, F::one());
        buffer_pool::recycle(x);
        unflatten(dx, &lead)
    }

    /// # Panics
    /// If the last axis of `x` is not `in_features`.
    #[track_caller]
    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let (x, lead) = as_matrix("Linear::infer", "input", x, self.in_features());
        unflatten(self.affine(&x.view()), &lead)
    }

    fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<F>)) {
        f("weight", &self.weight);
        if let Some(b) = &self.bias {
            f("bias", b);
        }
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.saved)
    }

    fn describe(&self) -> String {
        let bias = if self.bias.is_some() { "" } else { ", no bias" };
        format!(
            "Linear({} → {}{bias})",
            self.in_features(),
            self.out_features()
        )
    }

    fn hyperparameters(&self) -> Vec<(String, String)> {
        vec![
            ("in_features".into(), self.in_features().to_string()),
            ("out_features".into(), self.out_features().to_string()),
            ("bias".into(), self.bias.is_some().to_string()),
        ]
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        linear_output_shape(input, self.in_features(), self.out_features())
    }
}

impl<F: Float> std::fmt::Debug for Linear<F> {
    /// The one-line description (`Linear(…)`), not the arrays.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
