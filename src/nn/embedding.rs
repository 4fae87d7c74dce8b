//! Token embedding: a lookup table of `vocab` rows of `width`, as PyTorch's
//! `nn.Embedding(vocab, width)`.
//!
//! ```text
//!     Y[…, :] = W[ids[…], :]        ids: (…) integers < vocab   W: (vocab, width)   Y: (…, width)
//!     dW[v, :] += Σ_{positions with ids = v} G[…, :]          (repeated ids accumulate)
//! ```
//!
//! The typed API takes the ids as `usize`: [`Embedding::lookup`] (training, saves the ids),
//! [`Embedding::lookup_infer`] / [`Embedding::try_lookup_infer`] (inference) and
//! [`Embedding::backward_ids`]. The layer also implements [`Module`] so it composes with
//! [`Sequential`](crate::Sequential): there the input holds the ids as floats (each a
//! non-negative integer below `vocab`), and `backward` returns zeros of the input's shape
//! (ids have no gradient). Both APIs share one stack of saved ids, so a `lookup` is gone back
//! through by `backward_ids` or `backward` alike.
//!
//! The default init is PyTorch's, `N(0, 1)`.
//!
//! ```
//! use ndarray::array;
//! use phm_nn::nn::EmbeddingConfig;
//! use phm_nn::prelude::*;
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! let mut emb = EmbeddingConfig::new(10, 4).init::<f32, _>(&mut rng)?;
//! let ids = array![[1usize, 2, 1], [0, 9, 3]].into_dyn(); // (B, T)
//! let y = emb.lookup(ids.view());
//! assert_eq!(y.shape(), &[2, 3, 4]); // (B, T, width)
//! assert_eq!(y.slice(ndarray::s![0, 0, ..]), y.slice(ndarray::s![0, 2, ..])); // same id, same row
//! emb.backward_ids(ArrayD::ones(IxDyn(&[2, 3, 4])).view());
//! // id 1 appears twice: its row of the gradient is 2.
//! assert_eq!(emb.weight_param().grad()[[1, 0]], 2.0);
//! assert!(emb.try_lookup_infer(array![10usize].into_dyn().view()).is_err());
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{ArrayD, ArrayView2, ArrayViewD, Axis, Ix2};
use rand::Rng;

use crate::error::{PhmError, Result};
use crate::init::{Fans, Init};
use crate::kernels::buffer_pool;
use crate::kernels::gemm::assert_same_shape;
use crate::kernels::shapes::{unflatten, with_last};
use crate::module::{Module, Param, SavedStates, StateStack};
use crate::Float;

/// Configuration of an [`Embedding`].
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingConfig {
    /// Number of rows (distinct ids).
    pub vocab: usize,
    /// Width of each row.
    pub width: usize,
    /// Init of the table (default `Init::Normal { std: 1.0 }`, as PyTorch), with fans
    /// `(width, vocab)`.
    pub init: Init,
}

impl EmbeddingConfig {
    /// A `vocab × width` table with PyTorch's default init `N(0, 1)`.
    #[must_use]
    pub fn new(vocab: usize, width: usize) -> Self {
        EmbeddingConfig {
            vocab,
            width,
            init: Init::Normal { std: 1.0 },
        }
    }

    /// Sets the init.
    #[must_use]
    pub fn with_init(mut self, init: Init) -> Self {
        self.init = init;
        self
    }

    /// Builds the layer, drawing the table from `rng`.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] for `vocab = 0` or `width = 0`; the errors of
    /// [`Init::sample`] for an invalid init or a table too large to allocate.
    pub fn init<F: Float, R: Rng + ?Sized>(&self, rng: &mut R) -> Result<Embedding<F>> {
        for (what, size) in [("vocab", self.vocab), ("width", self.width)] {
            if size == 0 {
                return Err(PhmError::ZeroSize { what });
            }
        }
        let w = self.init.sample(
            &[self.vocab, self.width],
            Fans::new(self.width, self.vocab),
            rng,
        )?;
        Ok(Embedding {
            weight: Param::new(w),
            saved: SavedStates::new(),
        })
    }
}

/// A token embedding table; see the [module docs](self).
#[derive(Clone)]
pub struct Embedding<F: Float> {
    weight: Param<F>,
    /// Per forward call: the ids.
    saved: SavedStates<ArrayD<usize>>,
}

impl<F: Float> Embedding<F> {
    /// An embedding from a table handle `(vocab, width)`, e.g. the shared output projection
    /// of a language model (weight tying).
    ///
    /// # Errors
    /// [`PhmError::ShapeMismatch`] unless `weight` is 2-D; [`PhmError::ZeroSize`] for an
    /// empty table.
    pub fn from_param(weight: Param<F>) -> Result<Self> {
        let shape = weight.shape();
        if shape.len() != 2 {
            return Err(PhmError::ShapeMismatch {
                what: "weight",
                expected: vec![0, 0],
                got: shape,
            });
        }
        for (what, size) in [("vocab", shape[0]), ("width", shape[1])] {
            if size == 0 {
                return Err(PhmError::ZeroSize { what });
            }
        }
        Ok(Embedding {
            weight,
            saved: SavedStates::new(),
        })
    }

    /// Number of rows (ids `0..vocab`).
    pub fn vocab(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Width of each row.
    pub fn width(&self) -> usize {
        self.weight.shape()[1]
    }

    /// The table's handle `(vocab, width)` (share it to tie another layer to it).
    pub fn weight_param(&self) -> &Param<F> {
        &self.weight
    }

    /// Training lookup: the rows of `ids`, shape `ids.shape + [width]`; saves the ids for
    /// [`backward_ids`](Embedding::backward_ids) (or [`Module::backward`]).
    ///
    /// # Panics
    /// If an id is `≥ vocab` (the message names the id and `vocab`).
    #[track_caller]
    pub fn lookup(&mut self, ids: ArrayViewD<'_, usize>) -> ArrayD<F> {
        let y = self.lookup_infer(ids.view());
        self.saved.push(ids.to_owned());
        y
    }

    /// Inference lookup: as [`lookup`](Embedding::lookup), saving nothing.
    ///
    /// # Panics
    /// If an id is `≥ vocab` (the message names the id and `vocab`).
    #[track_caller]
    pub fn lookup_infer(&self, ids: ArrayViewD<'_, usize>) -> ArrayD<F> {
        if let Err(e) = self.check_ids(&ids) {
            panic!("Embedding::lookup: {e}");
        }
        self.gather(&ids)
    }

    /// Inference lookup that reports a bad id instead of panicking.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] if an id is `≥ vocab`, naming the id and `vocab`.
    pub fn try_lookup_infer(&self, ids: ArrayViewD<'_, usize>) -> Result<ArrayD<F>> {
        self.check_ids(&ids)?;
        Ok(self.gather(&ids))
    }

    /// Backward pass of the most recent [`lookup`](Embedding::lookup) (or `forward`) not yet
    /// gone back through: pops its ids and adds each row of `grad` `(ids.shape…, width)` into
    /// the table's gradient at its id (repeated ids accumulate). Nothing is added if the
    /// table is frozen.
    ///
    /// # Panics
    /// If no lookup is left to go back through, or `grad` is not `ids.shape + [width]`.
    #[track_caller]
    pub fn backward_ids(&mut self, grad: ArrayViewD<'_, F>) {
        let ids = self.saved.pop("Embedding");
        self.scatter(&ids, grad);
    }

    fn check_ids(&self, ids: &ArrayViewD<'_, usize>) -> Result<()> {
        let vocab = self.vocab();
        match ids.iter().find(|&&id| id >= vocab) {
            Some(&id) => Err(PhmError::InvalidArgument {
                what: "ids",
                reason: format!("id {id} is out of range for vocab {vocab}"),
            }),
            None => Ok(()),
        }
    }

    /// The rows of (checked) `ids`.
    fn gather(&self, ids: &ArrayViewD<'_, usize>) -> ArrayD<F> {
        let width = self.width();
        let w = self.weight.read();
        let w = table(w.value());
        // Every row is written below.
        let mut out = buffer_pool::for_overwrite((ids.len(), width));
        for (mut row, &id) in out.rows_mut().into_iter().zip(ids.iter()) {
            row.assign(&w.row(id));
        }
        unflatten(out, ids.shape())
    }

    #[track_caller]
    fn scatter(&self, ids: &ArrayD<usize>, grad: ArrayViewD<'_, F>) {
        let width = self.width();
        assert_same_shape(
            "Embedding::backward",
            "grad_output",
            grad.shape(),
            &with_last(ids.shape(), width),
        );
        let mut w = self.weight.write();
        if !w.is_trainable() {
            return;
        }
        let mut dw = w
            .grad_mut()
            .into_dimensionality::<Ix2>()
            .expect("table is 2-D");
        let g = grad
            .to_shape((ids.len(), width))
            .expect("grad has ids.len() rows of width");
        for (row, &id) in g.axis_iter(Axis(0)).zip(ids.iter()) {
            let mut d = dw.row_mut(id);
            d += &row;
        }
    }
}

fn table<F: Float>(v: ArrayViewD<'_, F>) -> ArrayView2<'_, F> {
    v.into_dimensionality::<Ix2>().expect("table is 2-D")
}

impl<F: Float> Module<F> for Embedding<F> {
    /// The input holds the ids as floats.
    ///
    /// # Panics
    /// If an entry is not a non-negative integer below `vocab`, or is not below `2²⁴` in
    /// `f32` (`2⁵³` in `f64`): from there on a float cannot tell neighbouring ids apart
    /// (`2²⁴ + 1` as `f32` is `2²⁴`), so larger vocabularies take `usize` ids
    /// ([`Embedding::lookup`]).
    #[track_caller]
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let ids = ids_of("Embedding::forward", &x, self.vocab());
        let y = self.gather(&ids.view());
        self.saved.push(ids);
        y
    }

    /// Adds the table's gradient as [`Embedding::backward_ids`] and returns zeros of the
    /// input's shape (ids have no gradient).
    ///
    /// # Panics
    /// As [`Embedding::backward_ids`].
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let ids = self.saved.pop("Embedding");
        self.scatter(&ids, grad_output);
        ArrayD::zeros(ids.raw_dim())
    }

    /// # Panics
    /// As [`forward`](Module::forward).
    #[track_caller]
    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        let ids = ids_of("Embedding::infer", &x, self.vocab());
        self.gather(&ids.view())
    }

    fn visit_params(&self, f: &mut dyn FnMut(&str, &Param<F>)) {
        f("weight", &self.weight);
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.saved)
    }

    fn describe(&self) -> String {
        format!("Embedding({} → {})", self.vocab(), self.width())
    }

    fn hyperparameters(&self) -> Vec<(String, String)> {
        vec![
            ("vocab".into(), self.vocab().to_string()),
            ("width".into(), self.width().to_string()),
        ]
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        Some(with_last(input, self.width()))
    }
}

/// The ids held as floats in `x`, checked. Only ids below `2^p` (`p` the float's mantissa
/// digits: `2²⁴` for `f32`, `2⁵³` for `f64`) are accepted: from `2^p` on, neighbouring integers
/// round to the same float (`2²⁴ + 1` reads as `2²⁴` in `f32`), so the row would be a guess.
#[track_caller]
fn ids_of<F: Float>(context: &str, x: &ArrayViewD<'_, F>, vocab: usize) -> ArrayD<usize> {
    // 2^p = 2 / ε (ε = 2^(1 − p)).
    let exact = 2.0 / F::epsilon().as_f64();
    x.mapv(|v| {
        let f = v.as_f64();
        if !(f >= 0.0 && f.fract() == 0.0 && f < vocab as f64) {
            panic!("{context}: id {f} is not an integer in 0..{vocab} (out of range for vocab {vocab})");
        }
        if f >= exact {
            panic!(
                "{context}: id {f} is not below {exact}, the integers {} holds exactly: it may \
                 be the rounding of a neighbouring id; pass ids above {exact} as usize \
                 (Embedding::lookup, TransformerLm::forward_ids)",
                std::any::type_name::<F>()
            );
        }
        f as usize
    })
}

impl<F: Float> std::fmt::Debug for Embedding<F> {
    /// The one-line description (`Embedding(…)`), not the table.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
