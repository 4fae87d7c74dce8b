//! Gradient clipping by global norm, as `torch.nn.utils.clip_grad_norm_`.

use ndarray::{Array2, ArrayViewD, Axis};

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
/// The norm is one pass over the gradients (parameters split across the crate's pool, each
/// parameter's `Σ g²` in eight independent accumulators combined in a fixed order, and the
/// parameters' sums in parameter order: the same norm whatever the thread count), then one
/// pass to scale them when clipping. It is computed without overflow or underflow: where
/// `Σ g²` would leave the `f64` range (`f64` entries beyond `~1e154`, or all below
/// `1e-140`) it is recomputed scaled by the largest `|entry|` (`‖g‖ = m·√(Σ (g/m)²)`):
/// finite gradients of `1e200` in `f64` have the norm they have, and are clipped, not
/// zeroed.
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
    // One pass over every gradient: the largest |entry| and Σ g² in f64 (finiteness follows
    // from them), parameters split across the pool, combined below in parameter order (the
    // same sums whatever the thread count).
    let mut sums = Array2::<f64>::zeros((trainable.len(), 2));
    let total: usize = trainable.iter().map(|(_, p)| p.len()).sum();
    for_each_chunk(sums.view_mut(), Axis(0), total * 3, |start, mut rows| {
        for (i, mut row) in rows.rows_mut().into_iter().enumerate() {
            let (largest, sum_sq) = largest_and_sum_sq(trainable[start + i].1.read().grad(), |a| a);
            row[0] = largest;
            row[1] = sum_sq;
        }
    });
    // An entry is NaN or ±inf exactly where the largest |entry| is +inf or Σ g² is NaN (a
    // finite entry's square is at most +inf, and a sum of non-negative terms is never NaN).
    if let Some(i) =
        (0..trainable.len()).find(|&i| sums[[i, 0]] == f64::INFINITY || sums[[i, 1]].is_nan())
    {
        return Err(PhmError::NonFiniteGradient {
            param: trainable[i].0.clone(),
        });
    }
    let (mut scale, mut largest, mut sum_sq) = (0.0f64, "", 0.0f64);
    for (i, (path, _)) in trainable.iter().enumerate() {
        if sums[[i, 0]] > scale {
            scale = sums[[i, 0]];
            largest = path;
        }
        sum_sq += sums[[i, 1]];
    }
    // Σ g² in f64 is exact enough unless it overflows (entries above ~1e154, f64 only) or its
    // terms underflow (every entry below ~1e-140): then ‖g‖ = scale · √(Σ (g/scale)²), every
    // term at most 1, in a second pass.
    let norm = if scale == 0.0 {
        0.0
    } else if sum_sq.is_finite() && scale >= 1e-140 {
        sum_sq.sqrt()
    } else {
        let sum_sq: f64 = trainable
            .iter()
            .map(|(_, p)| largest_and_sum_sq(p.read().grad(), |a| a / scale).1)
            .sum();
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
        let scaled = |g: &mut F| *g = F::of(g.as_f64() * coef);
        for (_, p) in &trainable {
            let mut w = p.write();
            let mut grad = w.grad_mut();
            match grad.as_slice_memory_order_mut() {
                Some(g) => g.iter_mut().for_each(scaled),
                None => grad.map_inplace(scaled),
            }
        }
    }
    Ok(norm)
}

/// Independent accumulators of [`largest_and_sum_sq`] (a loop over them vectorises).
const LANES: usize = 8;

/// The largest `f(|g|)` and `Σ f(|g|)²` over the entries `g` of `grad`, in `f64` (`f`: the
/// identity, or a division by the largest `|g|` where the plain sum would overflow or
/// underflow), in [`LANES`] independent accumulators (entry `i` of each block of [`LANES`]
/// into accumulator `i`) combined in a fixed order: the same bits for the same gradient,
/// whichever thread computes it. A NaN entry makes the sum NaN (and is not the largest); an
/// infinite one makes the largest +inf.
fn largest_and_sum_sq<F: Float>(grad: ArrayViewD<'_, F>, f: impl Fn(f64) -> f64) -> (f64, f64) {
    let owned;
    let g = match grad.as_slice_memory_order() {
        Some(g) => g,
        None => {
            owned = grad.iter().copied().collect::<Vec<F>>();
            &owned
        }
    };
    let (mut largest, mut sum) = ([0.0f64; LANES], [0.0f64; LANES]);
    let mut add = |lane: usize, g: F| {
        let a = f(g.as_f64().abs());
        // `>` rather than `max`: a NaN entry compares false and leaves the accumulator (no
        // NaN check in the loop, which lets it vectorise); the sum catches it.
        if a > largest[lane] {
            largest[lane] = a;
        }
        sum[lane] += a * a;
    };
    let blocks = g.chunks_exact(LANES);
    let rest = blocks.remainder();
    for block in blocks {
        for (lane, &g) in block.iter().enumerate() {
            add(lane, g);
        }
    }
    for (lane, &g) in rest.iter().enumerate() {
        add(lane, g);
    }
    let largest = largest
        .into_iter()
        .fold(0.0f64, |a, b| if b > a { b } else { a });
    let sum = ((sum[0] + sum[1]) + (sum[2] + sum[3])) + ((sum[4] + sum[5]) + (sum[6] + sum[7]));
    (largest, sum)
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
        // Split even small passes, so that the split paths are the ones checked.
        crate::kernels::set_elementwise_min_work(0);
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

    /// NaN, +inf and −inf anywhere (inside a block of lanes or in the remainder) are found,
    /// in the first parameter that holds one, and nothing changes; huge finite entries are
    /// not mistaken for them.
    #[test]
    fn non_finite_entries_are_found_wherever_they_are() {
        let layer = Linear::from_parts(Array2::<f32>::zeros((3, 7)), Some(Array1::zeros(3)));
        let layer = layer.unwrap();
        let (w, b) = (layer.weight_param(), layer.bias_param().unwrap());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 5, 16, 20] {
                w.write().grad_mut().fill(1.0);
                b.write().grad_mut().fill(f32::NAN);
                w.write().grad_mut().as_slice_mut().unwrap()[at] = bad;
                let bits = |g: ndarray::ArrayD<f32>| g.mapv(f32::to_bits);
                let before = bits(w.grad());
                let err = clip_grad_norm(&layer, 1.0).unwrap_err();
                assert_eq!(
                    err,
                    PhmError::NonFiniteGradient {
                        param: "weight".into()
                    },
                    "{bad} at {at}"
                );
                assert_eq!(bits(w.grad()), before);
                assert!(b.grad().iter().all(|g| g.is_nan()));
            }
        }
        w.write().grad_mut().fill(f32::MAX);
        b.write().grad_mut().fill(-f32::MAX);
        let norm = clip_grad_norm(&layer, 1.0).unwrap();
        let want = f64::from(f32::MAX) * 24f64.sqrt();
        assert!((norm - want).abs() <= 1e-15 * want, "{norm} vs {want}");
    }
}
