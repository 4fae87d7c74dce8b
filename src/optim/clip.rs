//! Gradient clipping by global norm, as `torch.nn.utils.clip_grad_norm_`.

use ndarray::{Array2, Axis};

use crate::error::{PhmError, Result};
use crate::kernels::parallel::for_each_chunk;
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
/// The norm is one pass over the gradients (parameters split across the crate's pool, their
/// sums combined in parameter order: the same norm whatever the thread count), then one pass
/// to scale them when clipping. It is computed without overflow or underflow: where `Σ g²`
/// would leave the `f64` range (`f64` entries beyond `~1e154`, or all below `1e-140`) it is
/// recomputed scaled by the largest `|entry|` (`‖g‖ = m·√(Σ (g/m)²)`): finite gradients of
/// `1e200` in `f64` have the norm they have, and are clipped, not zeroed.
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
    // One pass over every gradient: finiteness, the largest |entry| and Σ g² in f64,
    // parameters split across the pool, combined below in parameter order (the same sums
    // whatever the thread count).
    let mut sums = Array2::<f64>::zeros((trainable.len(), 3));
    let total: usize = trainable.iter().map(|(_, p)| p.len()).sum();
    for_each_chunk(sums.view_mut(), Axis(0), total * 3, |start, mut rows| {
        for (i, mut row) in rows.rows_mut().into_iter().enumerate() {
            let (mut finite, mut largest, mut sum_sq) = (true, 0.0f64, 0.0f64);
            for &g in trainable[start + i].1.read().grad().iter() {
                let g = g.as_f64();
                finite &= g.is_finite();
                largest = largest.max(g.abs());
                sum_sq += g * g;
            }
            row[0] = f64::from(u8::from(finite));
            row[1] = largest;
            row[2] = sum_sq;
        }
    });
    if let Some(i) = (0..trainable.len()).find(|&i| sums[[i, 0]] == 0.0) {
        return Err(PhmError::NonFiniteGradient {
            param: trainable[i].0.clone(),
        });
    }
    let (mut scale, mut largest, mut sum_sq) = (0.0f64, "", 0.0f64);
    for (i, (path, _)) in trainable.iter().enumerate() {
        if sums[[i, 1]] > scale {
            scale = sums[[i, 1]];
            largest = path;
        }
        sum_sq += sums[[i, 2]];
    }
    // Σ g² in f64 is exact enough unless it overflows (entries above ~1e154, f64 only) or its
    // terms underflow (every entry below ~1e-140): then ‖g‖ = scale · √(Σ (g/scale)²), every
    // term at most 1, in a second pass.
    let norm = if scale == 0.0 {
        0.0
    } else if sum_sq.is_finite() && scale >= 1e-140 {
        sum_sq.sqrt()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::set_num_threads;
    use crate::nn::Linear;
    use ndarray::{Array1, Array2};

    /// The one-pass norm against `√(Σ g²)` summed plainly in `f64`, on parameters large
    /// enough to be split across threads, and bit-identical at 1 and 2 threads (norm and the
    /// clipped gradients).
    #[test]
    fn one_pass_norm_matches_the_definition_and_the_thread_count_does_not_matter() {
        let (k, d) = (97, 389);
        let w = Array2::<f32>::zeros((k, d));
        let b = Array1::<f32>::zeros(k);
        let g = |i: usize| ((i as f64 * 0.013).sin() * 3.0) as f32;
        let mut results = Vec::new();
        for threads in [1, 2] {
            set_num_threads(threads);
            let layer = Linear::from_parts(w.clone(), Some(b.clone())).unwrap();
            let params = [layer.weight_param(), layer.bias_param().unwrap()];
            let mut i = 0;
            let mut want = 0.0f64;
            for p in params {
                for a in p.write().grad_mut().iter_mut() {
                    *a = g(i);
                    want += f64::from(g(i)).powi(2);
                    i += 1;
                }
            }
            let want = want.sqrt();
            let norm = clip_grad_norm(&layer, 1.0).unwrap();
            assert!((norm - want).abs() <= 1e-12 * want, "{norm} vs {want}");
            let c = 1.0 / (want + 1e-6);
            let got = layer.weight_param().grad();
            assert!((f64::from(got[[3, 5]]) - f64::from(g(3 * d + 5)) * c).abs() < 1e-7);
            results.push((norm, got, layer.bias_param().unwrap().grad()));
        }
        assert!(results[0] == results[1], "1 and 2 threads differ");
        set_num_threads(1);
    }
}
