//! Inverted dropout (Srivastava et al., 2014), as PyTorch's `nn.Dropout(p)`.
//!
//! In training ([`Module::forward`]) each entry is kept with probability `1 − p` and the kept
//! ones are scaled so the expectation is unchanged; at inference ([`Module::infer`]) the layer
//! is the identity:
//!
//! ```text
//!     forward:  y = x ⊙ m / (1 − p),   m_i ~ Bernoulli(1 − p) independently
//!     backward: dX = G ⊙ m / (1 − p)   (the same mask)
//!     infer:    y = x
//! ```
//!
//! The layer owns its generator, a [`ChaCha8Rng`] seeded at construction
//! ([`Dropout::new`]) or by [`Dropout::reseed`], so a run is reproducible and a mask can be
//! replayed. With `p = 0` the forward pass is the identity and draws nothing.
//!
//! ```
//! use ndarray::ArrayD;
//! use phm_nn::nn::Dropout;
//! use phm_nn::Module;
//!
//! let mut drop = Dropout::<f64>::new(0.5, 42)?;
//! let x = ArrayD::ones(vec![4, 8]);
//! let y = drop.forward(x.view());
//! assert!(y.iter().all(|&v| v == 0.0 || v == 2.0)); // dropped, or kept and scaled by 1/(1 − p)
//! assert_eq!(drop.infer(x.view()), x); // off at inference
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{ArrayD, ArrayViewD, Zip};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::error::{PhmError, Result};
use crate::kernels::buffer_pool;
use crate::kernels::gemm::assert_same_shape;
use crate::module::{Module, SavedStates, StateStack};
use crate::rng::RngState;
use crate::Float;

/// What one forward pass saves: the scaled mask `m / (1 − p)`, or only the shape for `p = 0`.
#[derive(Clone)]
enum Saved<F> {
    Mask(ArrayD<F>),
    Identity(Vec<usize>),
}

/// Inverted dropout with its own seeded generator; see the [module docs](self).
///
/// A clone continues from the same generator position (it draws the same masks next).
pub struct Dropout<F> {
    p: f64,
    rng: ChaCha8Rng,
    saved: SavedStates<Saved<F>>,
}

impl<F: Clone> Clone for Dropout<F> {
    fn clone(&self) -> Self {
        // `ChaCha8Rng` is not `Clone`; copy it through its exact position.
        Dropout {
            p: self.p,
            rng: RngState::of(&self.rng).to_rng(),
            saved: self.saved.clone(),
        }
    }
}

fn check_p(p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(PhmError::InvalidArgument {
            what: "p",
            reason: format!("dropout probability must be in [0, 1), got {p}"),
        })
    }
}

impl<F: Float> Dropout<F> {
    /// Dropout with probability `p` of zeroing each entry, its generator seeded with `seed`.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] unless `0 ≤ p < 1` (`p = 1` would zero everything and
    /// scale by infinity; NaN is rejected).
    pub fn new(p: f64, seed: u64) -> Result<Self> {
        check_p(p)?;
        Ok(Dropout {
            p,
            rng: ChaCha8Rng::seed_from_u64(seed),
            saved: SavedStates::new(),
        })
    }

    /// The probability of zeroing an entry.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Sets the probability (e.g. a schedule), keeping the generator's position.
    ///
    /// # Errors
    /// [`PhmError::InvalidArgument`] unless `0 ≤ p < 1`; `p` is then unchanged.
    pub fn set_p(&mut self, p: f64) -> Result<()> {
        check_p(p)?;
        self.p = p;
        Ok(())
    }

    /// Restarts the generator from `seed`: the next masks are those of a layer built with
    /// this seed.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// [`Module::backward`] on a gradient the caller gives up (no copy at `p = 0`).
    ///
    /// # Panics
    /// As [`Module::backward`].
    #[track_caller]
    pub(crate) fn backward_owned(&mut self, grad_output: ArrayD<F>) -> ArrayD<F> {
        match self.pop_checked(grad_output.shape()) {
            None => grad_output,
            Some(mask) => buffer_pool::consume(grad_output, |g| times_mask(mask, &g)),
        }
    }

    /// Draws a mask for `y` (standard layout: one uniform per entry, in logical order),
    /// applies it in place and saves it.
    fn apply_mask(&mut self, y: &mut ArrayD<F>) {
        let scale = F::of(1.0 / (1.0 - self.p));
        let p = self.p;
        let rng = &mut self.rng;
        // Every entry of the mask is written below.
        let mut mask = buffer_pool::for_overwrite(y.raw_dim());
        Zip::from(y).and(&mut mask).for_each(|y, m| {
            *m = if rng.random::<f64>() < p {
                F::zero()
            } else {
                scale
            };
            *y *= *m;
        });
        self.saved.push(Saved::Mask(mask));
    }

    /// The saved state of the matching forward pass, checked against `grad_shape`: `None`
    /// for the identity (`p = 0`), else the mask.
    #[track_caller]
    fn pop_checked(&mut self, grad_shape: &[usize]) -> Option<ArrayD<F>> {
        let (shape, mask) = match self.saved.pop("Dropout") {
            Saved::Identity(shape) => (shape, None),
            Saved::Mask(mask) => (mask.shape().to_vec(), Some(mask)),
        };
        assert_same_shape("Dropout::backward", "grad_output", grad_shape, &shape);
        mask
    }
}

/// `G ⊙ m`, written over the saved mask `m`.
fn times_mask<F: Float>(mut mask: ArrayD<F>, grad_output: &ArrayViewD<'_, F>) -> ArrayD<F> {
    Zip::from(&mut mask)
        .and(grad_output)
        .for_each(|m, &g| *m *= g);
    mask
}

impl<F: Float> Module<F> for Dropout<F> {
    /// Draws a mask (one uniform per entry, in the input's logical order), applies it and
    /// saves it.
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.forward_owned(buffer_pool::copy_of(&x))
    }

    /// In place: the output is written in `x`'s buffer (at `p = 0` it is `x` itself).
    fn forward_owned(&mut self, x: ArrayD<F>) -> ArrayD<F> {
        if self.p == 0.0 {
            self.saved.push(Saved::Identity(x.shape().to_vec()));
            return x;
        }
        let mut y = buffer_pool::owned(x.into());
        self.apply_mask(&mut y);
        y
    }

    /// `dX = G ⊙ m / (1 − p)` with the mask of the matching forward pass.
    ///
    /// # Panics
    /// If no forward pass is left to go back through, or `grad_output` does not have the
    /// shape of that forward's input.
    #[track_caller]
    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        match self.pop_checked(grad_output.shape()) {
            None => buffer_pool::copy_of(&grad_output),
            Some(mask) => times_mask(mask, &grad_output),
        }
    }

    /// The identity: dropout is off at inference.
    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        x.to_owned()
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.saved)
    }

    fn describe(&self) -> String {
        format!("Dropout(p = {})", self.p)
    }

    fn hyperparameters(&self) -> Vec<(String, String)> {
        vec![("p".into(), self.p.to_string())]
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        Some(input.to_vec())
    }
}

impl<F> std::fmt::Debug for Dropout<F> {
    /// `Dropout(p = …)`, not the generator or the masks.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dropout(p = {})", self.p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// The owned entry points (used inside the Transformer) give what `forward` and
    /// `backward` give, mask for mask, at `p = 0` and above, for a standard and a transposed
    /// input; a gradient of the wrong shape still panics.
    #[test]
    fn owned_passes_equal_the_view_passes() {
        for p in [0.0, 0.3] {
            let x = Array2::from_shape_fn((9, 7), |(i, j)| (i * 7 + j) as f64 - 20.0).into_dyn();
            let g = x.mapv(|v| v * 0.5 + 1.0);
            for input in [
                x.clone(),
                x.t().to_owned(),
                x.t().as_standard_layout().into_owned(),
            ] {
                let mut a = Dropout::<f64>::new(p, 3).unwrap();
                let mut b = Dropout::<f64>::new(p, 3).unwrap();
                let ya = a.forward(input.view());
                let yb = b.forward_owned(input.clone());
                assert_eq!(ya, yb, "p = {p}");
                let ga = a.backward(g.view().into_shape_with_order(ya.raw_dim()).unwrap());
                let gb = b.backward_owned(g.clone().into_shape_with_order(yb.raw_dim()).unwrap());
                assert_eq!(ga, gb, "p = {p}");
            }
            let mut c = Dropout::<f64>::new(p, 3).unwrap();
            c.forward_owned(x.clone());
            let wrong = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                c.backward_owned(ArrayD::zeros(vec![9, 8]))
            }));
            assert!(wrong.is_err(), "p = {p}: a wrong-shape gradient must panic");
        }
    }

    /// The one-pass forward against the definition: `m_i = 0` if the `i`-th uniform (in the
    /// input's logical order, from the layer's seeded generator) is below `p`, else
    /// `1/(1 − p)`; `y = x ⊙ m`, and backward multiplies by the same `m`. Also for a
    /// transposed (column-major) input and with NaN entries (dropped NaN stays NaN, as
    /// `x · 0`).
    #[test]
    fn one_pass_mask_matches_the_definition() {
        fn check<F: Float>(p: f64, seed: u64) {
            let base = Array2::from_shape_fn((7, 13), |(i, j)| F::of((i * 13 + j) as f64 - 40.0));
            for x in [
                base.clone(),
                base.t().to_owned(),
                base.t().as_standard_layout().t().to_owned(),
            ] {
                let mut x = x;
                x[[1, 2]] = F::nan();
                let mut drop = Dropout::<F>::new(p, seed).unwrap();
                let y = drop.forward(x.view().into_dyn());
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let scale = F::of(1.0 / (1.0 - p));
                let m = Array2::from_shape_simple_fn(x.dim(), || {
                    if rng.random::<f64>() < p {
                        F::zero()
                    } else {
                        scale
                    }
                });
                for ((&y, &x), &m) in y.iter().zip(x.iter()).zip(m.iter()) {
                    let want = x * m;
                    assert!(y == want || (y.is_nan() && want.is_nan()), "{y} vs {want}");
                }
                let g = drop.backward(ArrayD::from_elem(x.shape(), F::one()).view());
                assert!(g.iter().zip(m.iter()).all(|(a, b)| a == b));
            }
        }
        check::<f64>(0.3, 9);
        check::<f32>(0.5, 10);
    }
}
