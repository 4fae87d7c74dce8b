//! [`Sequential`]: a chain of modules applied one after another.
//!
//! For layers `f_0, …, f_{L−1}`:
//!
//! ```text
//!     Y = f_{L−1}(… f_1(f_0(X)))
//!     dL/dX = J_0ᵀ(… J_{L−1}ᵀ(dL/dY))        (backward runs the layers in reverse)
//! ```
//!
//! Parameter names get the layer's index as a prefix: the `weight` of layer 0 is `"0.weight"`,
//! and a `Sequential` nested as layer 1 gives `"1.0.weight"` (PyTorch's `nn.Sequential`
//! naming). An empty `Sequential` is the identity.
//!
//! ```
//! use ndarray::array;
//! use phm_nn::nn::activation::{Relu, Tanh};
//! use phm_nn::module::sequential::Sequential;
//! use phm_nn::Module;
//!
//! let mut model = Sequential::new().add(Relu::new()).add(Tanh::new());
//! assert_eq!(model.len(), 2);
//! let y = model.forward(array![[-1.0, 0.5]].view());
//! assert_eq!(y, array![[0.0, 0.5f64.tanh()]]);
//! // dL/dX = relu'(x) · tanh'(relu(x)) · dL/dY
//! let dx = model.backward(array![[1.0, 1.0]].view());
//! assert_eq!(dx, array![[0.0, 1.0 - 0.5f64.tanh().powi(2)]]);
//! ```

use std::fmt;

use ndarray::{Array2, ArrayView2};

use crate::{Float, Module, Param};

/// Layers applied in order; itself a [`Module`].
pub struct Sequential<F: Float> {
    layers: Vec<Box<dyn Module<F>>>,
}

impl<F: Float> Sequential<F> {
    /// An empty chain (the identity).
    pub fn new() -> Self {
        Sequential { layers: Vec::new() }
    }

    /// Appends `layer` at the end.
    pub fn push<M: Module<F> + 'static>(&mut self, layer: M) {
        self.layers.push(Box::new(layer));
    }

    /// Appends `layer` at the end and returns the chain (builder style, as candle-nn's
    /// `seq().add(layer)`).
    #[allow(clippy::should_implement_trait)] // a builder, not `std::ops::Add`
    pub fn add<M: Module<F> + 'static>(mut self, layer: M) -> Self {
        self.push(layer);
        self
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layers, in the order they are applied.
    pub fn layers(&self) -> &[Box<dyn Module<F>>] {
        &self.layers
    }
}

impl<F: Float> Default for Sequential<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Float> fmt::Debug for Sequential<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sequential")
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl<F: Float> Module<F> for Sequential<F> {
    /// Runs every layer's `forward` in order.
    ///
    /// # Panics
    /// If a layer rejects its input's shape (the panic names the layer's own context).
    fn forward(&mut self, x: ArrayView2<'_, F>) -> Array2<F> {
        match self.layers.split_first_mut() {
            None => x.to_owned(),
            Some((first, rest)) => rest
                .iter_mut()
                .fold(first.forward(x), |y, layer| layer.forward(y.view())),
        }
    }

    /// Runs every layer's `backward` in reverse order.
    ///
    /// # Panics
    /// If a layer has no forward pass to go back through, or rejects the gradient's shape.
    fn backward(&mut self, grad_output: ArrayView2<'_, F>) -> Array2<F> {
        match self.layers.split_last_mut() {
            None => grad_output.to_owned(),
            Some((last, rest)) => rest
                .iter_mut()
                .rev()
                .fold(last.backward(grad_output), |g, layer| {
                    layer.backward(g.view())
                }),
        }
    }

    fn infer(&self, x: ArrayView2<'_, F>) -> Array2<F> {
        match self.layers.split_first() {
            None => x.to_owned(),
            Some((first, rest)) => rest
                .iter()
                .fold(first.infer(x), |y, layer| layer.infer(y.view())),
        }
    }

    fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<F>)) {
        for (i, layer) in self.layers.iter().enumerate() {
            layer.visit_params(&mut |name, p| f(&format!("{i}.{name}"), p));
        }
    }

    fn visit_params_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<F>)) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.visit_params_mut(&mut |name, p| f(&format!("{i}.{name}"), p));
        }
    }
}
