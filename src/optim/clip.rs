//! Gradient clipping by global norm, as `torch.nn.utils.clip_grad_norm_`.

use crate::error::{PhmError, Result};
use crate::module::{params, Module};
use crate::Float;

/// Scales the accumulated gradients of `model`'s distinct trainable tensors so that their
/// global L2 norm is at most `max_norm`; returns the norm **before** clipping.
///
/// With `‖g‖ = √(Σ_p Σ g_p²)` over every distinct trainable tensor (a shared tensor counted
/// once, frozen ones left out), every gradient is multiplied by
/// `c = max_norm / (‖g‖ + 1e-6)` when `c < 1` and left alone otherwise: PyTorch's formula
/// (`clip_grad_norm_` with `norm_type = 2`), so after clipping the norm is just below
/// `max_norm`. The norm is accumulated in `f64`. Call it between `backward` and the
/// optimizer step.
///
/// The norm is computed without overflow or underflow, scaled by the largest `|entry|`
/// (`‖g‖ = m·√(Σ (g/m)²)`): finite gradients of `1e200` in `f64` have the norm they have, and
/// are clipped, not zeroed.
///
/// ```
/// use ndarray::array;
/// use phm_nn::optim::clip_grad_norm;
/// use phm_nn::{Linear, Module};
///
/// let mut layer = Linear::from_parts(array![[1.0f64, 1.0]], None)?;
/// layer.forward(array![[3.0, 4.0]].into_dyn().view());
/// layer.backward(array![[1.0]].into_dyn().view()); // dL/dW = [3, 4], norm 5
/// let norm = clip_grad_norm(&layer, 1.0)?;
/// assert_eq!(norm, 5.0);
/// let g = layer.weight_param().grad();
/// let c = 1.0 / (5.0 + 1e-6);
/// assert_eq!(g, array![[3.0 * c, 4.0 * c]].into_dyn());
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
///
/// # Errors
/// - [`PhmError::InvalidArgument`] if `max_norm` is negative or not finite;
/// - [`PhmError::NonFiniteGradient`] naming the first parameter whose gradient holds NaN or
///   inf (PyTorch's `error_if_nonfinite = True`);
/// - [`PhmError::TooLarge`] (`what: "gradient norm"`) if every entry is finite but the global
///   norm is not (it exceeds `f64::MAX`): PyTorch's `error_if_nonfinite = True` again, where
///   clipping by an infinite norm would set every gradient to 0 and silently stop training.
///
/// Either way no gradient is changed.
pub fn clip_grad_norm<F: Float>(model: &dyn Module<F>, max_norm: f64) -> Result<f64> {
    if !(max_norm.is_finite() && max_norm >= 0.0) {
        return Err(PhmError::InvalidArgument {
            what: "max_norm",
            reason: format!("max_norm must be finite and >= 0, got {max_norm}"),
        });
    }
    let trainable: Vec<_> = params(model)
        .into_iter()
        .filter(|(_, p)| p.is_trainable())
        .collect();
    // Pass 1: every entry finite, and the largest |entry| (the scale).
    let mut scale = 0.0f64;
    let mut largest = "";
    for (path, p) in &trainable {
        for &g in p.read().grad().iter() {
            let g = g.as_f64();
            if !g.is_finite() {
                return Err(PhmError::NonFiniteGradient {
                    param: path.clone(),
                });
            }
            if g.abs() > scale {
                scale = g.abs();
                largest = path;
            }
        }
    }
    // Pass 2: ‖g‖ = scale · √(Σ (g/scale)²): every term is at most 1, so the sum neither
    // overflows (gradients of 1e200) nor underflows (gradients of 1e-200).
    let norm = if scale == 0.0 {
        0.0
    } else {
        let mut sum_sq = 0.0f64;
        for (_, p) in &trainable {
            sum_sq += p
                .read()
                .grad()
                .iter()
                .map(|&g| (g.as_f64() / scale).powi(2))
                .sum::<f64>();
        }
        scale * sum_sq.sqrt()
    };
    if !norm.is_finite() {
        return Err(PhmError::TooLarge {
            what: "gradient norm",
            reason: format!(
                "the global L2 norm of the gradients exceeds the f64 range (largest |entry| \
                 {scale:e}, in `{largest}`); no gradient was changed"
            ),
        });
    }
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        // Scaled in f64, then rounded once: a tiny `coef` does not flush to 0 in f32 first.
        for (_, p) in &trainable {
            p.write()
                .grad_mut()
                .mapv_inplace(|g| F::of(g.as_f64() * coef));
        }
    }
    Ok(norm)
}
