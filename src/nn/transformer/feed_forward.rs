//! The position-wise feed-forward block of a Transformer.
//!
//! ```text
//!     FFN(X) = fc2(gelu(fc1(X)))        X: (…, d)   fc1: d → f   fc2: f → d
//! ```
//!
//! with the exact (erf) GELU, and `fc1`, `fc2` dense, PHM or low-rank PHM ([`Projection`]).
//! Backward is the chain rule through the three layers.
//!
//! ```
//! use phm_nn::prelude::*;
//! use phm_nn::nn::transformer::FeedForwardConfig;
//! use phm_nn::nn::Projection;
//! let mut rng = StdRng::seed_from_u64(0);
//! let ffn = FeedForwardConfig::new(64, 256)
//!     .with_projection(Projection::phm(4))
//!     .init::<f32, _>(None, &mut rng)?;
//! // Two PHM layers: 4³ + 64·256/4 + 256 and 4³ + 256·64/4 + 64 parameters.
//! assert_eq!(ffn.num_parameters(), 2 * 64 + 2 * 4096 + 256 + 64);
//! assert_eq!(ffn.infer(ArrayD::zeros(IxDyn(&[2, 7, 64])).view()).shape(), &[2, 7, 64]);
//! # Ok::<(), PhmError>(())
//! ```

use ndarray::{ArrayD, ArrayViewD};
use rand::Rng;

use crate::error::{PhmError, Result};
use crate::kernels::buffer_pool::consume;
use crate::module::Module;
use crate::nn::projection::Projection;
use crate::nn::{Gelu, PhmRules};
use crate::Float;

/// Configuration of a [`FeedForward`] block.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedForwardConfig {
    /// Model width `d`.
    pub width: usize,
    /// Hidden width `f` (often `4d`).
    pub hidden: usize,
    /// The two layers' kind (default dense).
    pub projection: Projection,
}

impl FeedForwardConfig {
    /// A `d → f → d` block with dense layers.
    #[must_use]
    pub fn new(width: usize, hidden: usize) -> Self {
        FeedForwardConfig {
            width,
            hidden,
            projection: Projection::Dense,
        }
    }

    /// Sets the layers' kind.
    #[must_use]
    pub fn with_projection(mut self, projection: Projection) -> Self {
        self.projection = projection;
        self
    }

    /// Builds the block; with `shared`, both PHM-family layers use those rules.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] for a zero width, and the layers' errors
    /// ([`Projection::build`]).
    pub fn init<F: Float, R: Rng + ?Sized>(
        &self,
        shared: Option<&PhmRules<F>>,
        rng: &mut R,
    ) -> Result<FeedForward<F>> {
        for (what, size) in [("width", self.width), ("hidden", self.hidden)] {
            if size == 0 {
                return Err(PhmError::ZeroSize { what });
            }
        }
        Ok(FeedForward {
            fc1: self
                .projection
                .build(self.width, self.hidden, shared, rng)?,
            act: Gelu::new(),
            fc2: self
                .projection
                .build(self.hidden, self.width, shared, rng)?,
            width: self.width,
            hidden: self.hidden,
            projection: self.projection,
        })
    }
}

/// `fc2(gelu(fc1(X)))`; see the [module docs](self). Parameters are visited as `fc1.*` and
/// `fc2.*`.
#[derive(Clone)]
pub struct FeedForward<F: Float> {
    fc1: Box<dyn Module<F>>,
    act: Gelu<F>,
    fc2: Box<dyn Module<F>>,
    width: usize,
    hidden: usize,
    projection: Projection,
}

impl<F: Float> FeedForward<F> {
    /// Model width `d`.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Hidden width `f`.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// The layers' kind.
    pub fn projection(&self) -> Projection {
        self.projection
    }
}

impl<F: Float> Module<F> for FeedForward<F> {
    // Each intermediate is handed on to the next layer, which keeps or recycles it.
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let h = self.fc1.forward(x);
        let a = self.act.forward_owned(h);
        self.fc2.forward_owned(a)
    }

    fn forward_owned(&mut self, x: ArrayD<F>) -> ArrayD<F> {
        let h = self.fc1.forward_owned(x);
        let a = self.act.forward_owned(h);
        self.fc2.forward_owned(a)
    }

    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let g = self.fc2.backward(grad_output);
        let da = consume(g, |g| self.act.backward(g));
        consume(da, |da| self.fc1.backward(da))
    }

    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let h = self.fc1.infer(x);
        let a = consume(h, |h| self.act.infer(h));
        consume(a, |a| self.fc2.infer(a))
    }

    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<F>)) {
        f("fc1", &*self.fc1);
        f("act", &self.act);
        f("fc2", &*self.fc2);
    }

    fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<F>)) {
        f("fc1", &mut *self.fc1);
        f("act", &mut self.act);
        f("fc2", &mut *self.fc2);
    }

    fn describe(&self) -> String {
        format!(
            "FeedForward({} → {} → {}, {})",
            self.width,
            self.hidden,
            self.width,
            self.projection.name()
        )
    }

    fn hyperparameters(&self) -> Vec<(String, String)> {
        vec![
            ("width".into(), self.width.to_string()),
            ("hidden".into(), self.hidden.to_string()),
            ("projection".into(), self.projection.name()),
        ]
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        (input.last() == Some(&self.width)).then(|| input.to_vec())
    }

    fn is_chain(&self) -> bool {
        true
    }
}

impl<F: Float> std::fmt::Debug for FeedForward<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
