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
//! let y = model.forward(array![[-1.0, 0.5]].into_dyn().view());
//! assert_eq!(y, array![[0.0, 0.5f64.tanh()]].into_dyn());
//! // dL/dX = relu'(x) · tanh'(relu(x)) · dL/dY
//! let dx = model.backward(array![[1.0, 1.0]].into_dyn().view());
//! assert_eq!(dx, array![[0.0, 1.0 - 0.5f64.tanh().powi(2)]].into_dyn());
//! // Typed access to a layer inside:
//! assert!(model.get::<Tanh<f64>>(1).is_some());
//! assert!(model.get::<Relu<f64>>(1).is_none());
//! ```
//!
//! Cloning a `Sequential` deep-copies its layers and keeps the tensors shared between them
//! shared in the copy ([`clone_model`]).

use std::any::Any;
use std::fmt;

use ndarray::{ArrayD, ArrayViewD};

use crate::module::{clone_model, summary, Module};
use crate::Float;

/// Layers applied in order; itself a [`Module`].
pub struct Sequential<F: Float> {
    layers: Vec<Box<dyn Module<F>>>,
}

impl<F: Float> Sequential<F> {
    /// An empty chain (the identity).
    #[must_use]
    pub fn new() -> Self {
        Sequential { layers: Vec::new() }
    }

    /// Appends `layer` at the end.
    pub fn push<M: Module<F>>(&mut self, layer: M) {
        self.layers.push(Box::new(layer));
    }

    /// Appends an already boxed layer at the end (e.g. a clone of another chain's layer).
    pub fn push_boxed(&mut self, layer: Box<dyn Module<F>>) {
        self.layers.push(layer);
    }

    /// Appends `layer` at the end and returns the chain (builder style, as candle-nn's
    /// `seq().add(layer)`).
    #[allow(clippy::should_implement_trait)] // a builder, not `std::ops::Add`
    #[must_use]
    pub fn add<M: Module<F>>(mut self, layer: M) -> Self {
        self.push(layer);
        self
    }

    /// Inserts `layer` at position `index` (e.g. an adapter after a layer of a trained model).
    ///
    /// # Panics
    /// If `index > len()`.
    #[track_caller]
    pub fn insert<M: Module<F>>(&mut self, index: usize, layer: M) {
        assert!(
            index <= self.layers.len(),
            "Sequential::insert: index {index} is past the end ({} layers)",
            self.layers.len()
        );
        self.layers.insert(index, Box::new(layer));
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

    /// Layer `index` as a `T`, or `None` if there is no such layer or it is not a `T`.
    pub fn get<T: Module<F>>(&self, index: usize) -> Option<&T> {
        let layer: &dyn Module<F> = self.layers.get(index)?.as_ref();
        (layer as &dyn Any).downcast_ref::<T>()
    }

    /// Layer `index` as a mutable `T`, or `None` if there is no such layer or it is not a `T`.
    pub fn get_mut<T: Module<F>>(&mut self, index: usize) -> Option<&mut T> {
        let layer: &mut dyn Module<F> = self.layers.get_mut(index)?.as_mut();
        (layer as &mut dyn Any).downcast_mut::<T>()
    }
}

impl<F: Float> Default for Sequential<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Float> Clone for Sequential<F> {
    fn clone(&self) -> Self {
        clone_model(&self.layers).into()
    }
}

impl<F: Float> From<Vec<Box<dyn Module<F>>>> for Sequential<F> {
    fn from(layers: Vec<Box<dyn Module<F>>>) -> Self {
        Sequential { layers }
    }
}

impl<F: Float> fmt::Debug for Sequential<F> {
    /// The summary table without shapes (see [`summary`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", summary(self, &[]))
    }
}

impl<F: Float> Module<F> for Sequential<F> {
    /// Runs every layer's `forward` in order.
    ///
    /// # Panics
    /// If a layer rejects its input's shape (the panic names the layer's own context).
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        match self.layers.split_first_mut() {
            None => x.to_owned(),
            // Each intermediate handed on: a layer may keep it instead of copying it.
            Some((first, rest)) => rest
                .iter_mut()
                .fold(first.forward(x), |y, layer| layer.forward_owned(y)),
        }
    }

    /// Runs every layer's `backward` in reverse order.
    ///
    /// # Panics
    /// If a layer has no forward pass to go back through, or rejects the gradient's shape.
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
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

    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        match self.layers.split_first() {
            None => x.to_owned(),
            Some((first, rest)) => rest
                .iter()
                .fold(first.infer(x), |y, layer| layer.infer(y.view())),
        }
    }

    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<F>)) {
        for (i, layer) in self.layers.iter().enumerate() {
            f(&i.to_string(), layer.as_ref());
        }
    }

    fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<F>)) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            f(&i.to_string(), layer.as_mut());
        }
    }

    fn describe(&self) -> String {
        format!("Sequential({} layers)", self.layers.len())
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        self.layers
            .iter()
            .try_fold(input.to_vec(), |shape, layer| layer.output_shape(&shape))
    }

    fn is_chain(&self) -> bool {
        true
    }
}
