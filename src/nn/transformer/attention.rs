//! Multi-head self-attention with causal and key-padding masks, and its key/value cache.
//!
//! ```text
//!     Q = q(X),  K = k(X),  V = v(X)              X: (…, T, d), each projection d → d
//!     for each head h (columns h·d_h … (h+1)·d_h, d_h = d / H):
//!         S_h = Q_h K_hᵀ / √d_h  (+ −∞ where masked)          (T, T)
//!         P_h = softmax(S_h)  row by row                       (T, T)
//!         O_h = P_h V_h                                        (T, d_h)
//!     Y = o([O_1 … O_H])
//! ```
//!
//! Masks: with `causal`, query `i` sees keys `j ≤ i`; a key-padding mask `(…, T)` of `bool`
//! (`true` = padding, PyTorch's `key_padding_mask` convention) hides those keys from every
//! query. A query that sees no key at all (every key it could see is padding) gets `P = 0`
//! and so output `o(0)` and no gradient, where PyTorch would give NaN.
//!
//! The softmax subtracts each row's maximum before exponentiating, so large scores do not
//! overflow in `f32`. Backward, for `G_O = dL/dO_h`:
//!
//! ```text
//!     dV_h = P_hᵀ G_O    dP = G_O V_hᵀ    dS = P ⊙ (dP − rowsum(P ⊙ dP))
//!     dQ_h = dS K_h / √d_h    dK_h = dSᵀ Q_h / √d_h
//! ```
//!
//! then back through the four projections. Each projection is dense, PHM or low-rank PHM
//! ([`Projection`]).
//!
//! **Generation.** [`MultiHeadAttention::infer_cached`] runs through `&self` on the new
//! tokens only, appending their keys and values to an [`AttentionCache`]: the prefix is never
//! recomputed, and the outputs equal those of a full causal pass over the whole sequence.
//!
//! ```
//! use phm_nn::prelude::*;
//! use phm_nn::nn::transformer::{AttentionCache, AttentionConfig};
//! use phm_nn::nn::Projection;
//! let mut rng = StdRng::seed_from_u64(0);
//! let attn = AttentionConfig::new(16, 4)
//!     .with_projection(Projection::phm(4))
//!     .init::<f64, _>(None, &mut rng)?;
//! let x = ArrayD::from_shape_fn(IxDyn(&[2, 5, 16]), |i| ((i[1] * 16 + i[2]) as f64).sin());
//! let full = attn.infer(x.view()); // (2, 5, 16), causal
//!
//! // The same outputs, one token at a time, through a key/value cache:
//! let mut cache = AttentionCache::new(2, 16, 8);
//! for t in 0..5 {
//!     let step = attn.infer_cached(x.slice(s![.., t..t + 1, ..]).into_dyn(), &mut cache);
//!     for (a, b) in step.iter().zip(full.slice(s![.., t..t + 1, ..]).iter()) {
//!         assert!((a - b).abs() < 1e-12);
//!     }
//! }
//! # use phm_nn::ndarray::s;
//! # Ok::<(), PhmError>(())
//! ```

use ndarray::{s, Array2, Array3, ArrayD, ArrayView1, ArrayView2, ArrayViewD, ArrayViewMut2};
use rand::Rng;

use crate::error::{PhmError, Result};
use crate::kernels::gemm::{assert_same_shape, gemm};
use crate::kernels::shapes::{as_matrix, into_matrix, unflatten, with_last};
use crate::module::{Module, SavedStates, StateStack};
use crate::nn::projection::Projection;
use crate::nn::PhmRules;
use crate::Float;

/// Configuration of a [`MultiHeadAttention`] layer.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionConfig {
    /// Model width `d` (a multiple of `heads`, and of the projection's `n`).
    pub width: usize,
    /// Number of heads `H`.
    pub heads: usize,
    /// Whether query `i` sees only keys `j ≤ i` (default `true`, a decoder).
    pub causal: bool,
    /// The four projections' kind (default dense).
    pub projection: Projection,
}

impl AttentionConfig {
    /// Causal attention of width `width` with `heads` heads and dense projections.
    #[must_use]
    pub fn new(width: usize, heads: usize) -> Self {
        AttentionConfig {
            width,
            heads,
            causal: true,
            projection: Projection::Dense,
        }
    }

    /// Sets whether the attention is causal.
    #[must_use]
    pub fn with_causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }

    /// Sets the projections' kind.
    #[must_use]
    pub fn with_projection(mut self, projection: Projection) -> Self {
        self.projection = projection;
        self
    }

    /// Builds the layer; with `shared`, every PHM-family projection uses those rules.
    ///
    /// # Errors
    /// [`PhmError::ZeroSize`] for a zero width or no heads, [`PhmError::NotDivisible`] if the
    /// width is not a multiple of `heads`, and the projections' errors ([`Projection::build`]).
    pub fn init<F: Float, R: Rng + ?Sized>(
        &self,
        shared: Option<&PhmRules<F>>,
        rng: &mut R,
    ) -> Result<MultiHeadAttention<F>> {
        let (d, h) = (self.width, self.heads);
        for (what, size) in [("width", d), ("heads", h)] {
            if size == 0 {
                return Err(PhmError::ZeroSize { what });
            }
        }
        if d % h != 0 {
            return Err(PhmError::NotDivisible {
                what: "width",
                size: d,
                n: h,
            });
        }
        let mut build = || self.projection.build(d, d, shared, rng);
        Ok(MultiHeadAttention {
            q: build()?,
            k: build()?,
            v: build()?,
            o: build()?,
            width: d,
            heads: h,
            causal: self.causal,
            projection: self.projection,
            saved: SavedStates::new(),
        })
    }
}

/// What a forward pass keeps for its backward pass.
#[derive(Clone)]
struct Saved<F> {
    /// The input's leading axes `(…, T)`.
    lead: Vec<usize>,
    /// `Q`, `K`, `V` as `(rows, d)` matrices, rows = batch·T.
    q: Array2<F>,
    k: Array2<F>,
    v: Array2<F>,
    /// `P` for every (batch, head), `(batch·H, T, T)`.
    p: Array3<F>,
}

/// Multi-head self-attention; see the [module docs](self).
///
/// Parameters are visited as `q.*`, `k.*`, `v.*`, `o.*` (e.g. `q.weight`, or `q.rules`,
/// `q.blocks`, `q.bias` for PHM projections).
#[derive(Clone)]
pub struct MultiHeadAttention<F: Float> {
    q: Box<dyn Module<F>>,
    k: Box<dyn Module<F>>,
    v: Box<dyn Module<F>>,
    o: Box<dyn Module<F>>,
    width: usize,
    heads: usize,
    causal: bool,
    projection: Projection,
    saved: SavedStates<Saved<F>>,
}

/// The keys and values of the tokens seen so far, for generation through
/// [`MultiHeadAttention::infer_cached`]: `(batch, allocated, d)` each, of which the first
/// [`len`](AttentionCache::len) positions are filled.
///
/// The allocation grows with what is cached (doubling, up to the
/// [`capacity`](AttentionCache::capacity)), not with the capacity: a cache for a context of
/// `2⁴⁰` tokens that holds ten positions holds ten positions' worth of memory.
#[derive(Debug, Clone)]
pub struct AttentionCache<F> {
    k: Array3<F>,
    v: Array3<F>,
    len: usize,
    capacity: usize,
}

impl<F: Float> AttentionCache<F> {
    /// An empty cache for `batch` sequences of width `width`, holding up to `capacity`
    /// positions. Nothing is allocated for positions until they are cached.
    pub fn new(batch: usize, width: usize, capacity: usize) -> Self {
        AttentionCache {
            k: Array3::zeros((batch, 0, width)),
            v: Array3::zeros((batch, 0, width)),
            len: 0,
            capacity,
        }
    }

    /// Number of positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of sequences.
    pub fn batch(&self) -> usize {
        self.k.dim().0
    }

    /// Width `d` of each key and value.
    pub fn width(&self) -> usize {
        self.k.dim().2
    }

    /// Positions allocated now (at least [`len`](Self::len), at most the capacity).
    pub fn allocated(&self) -> usize {
        self.k.dim().1
    }

    /// Positions that will be allocated once `end` positions are cached: the current
    /// allocation if it suffices, else `end` rounded up by doubling, at most the capacity.
    pub(crate) fn allocation_for(&self, end: usize) -> usize {
        let now = self.allocated();
        if end <= now {
            now
        } else {
            end.max(now.saturating_mul(2)).min(self.capacity.max(end))
        }
    }

    /// Makes room for `positions` positions (if fewer are allocated), keeping the cached
    /// ones.
    pub(crate) fn reserve(&mut self, positions: usize) {
        if positions <= self.allocated() {
            return;
        }
        let (batch, _, width) = self.k.dim();
        for a in [&mut self.k, &mut self.v] {
            let mut bigger = Array3::zeros((batch, positions, width));
            bigger
                .slice_mut(s![.., ..self.len, ..])
                .assign(&a.slice(s![.., ..self.len, ..]));
            *a = bigger;
        }
    }

    /// Forgets every cached position (keeps the allocation).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Scores, masked softmax and weighted values for one (batch, head): `q` `(tq, d_h)`, `k` and
/// `v` `(tk, d_h)`. Query `i` is at absolute position `offset + i`; with `causal` it sees the
/// keys `j ≤ offset + i`, and never the keys marked in `pad`. Writes `P` `(tq, tk)` and adds
/// nothing: `O` `(tq, d_h)` is overwritten.
#[allow(clippy::too_many_arguments)]
fn attend<F: Float>(
    q: ArrayView2<'_, F>,
    k: ArrayView2<'_, F>,
    v: ArrayView2<'_, F>,
    scale: F,
    offset: usize,
    causal: bool,
    pad: Option<ArrayView1<'_, bool>>,
    mut p: ArrayViewMut2<'_, F>,
    mut o: ArrayViewMut2<'_, F>,
) {
    let tk = k.nrows();
    gemm(scale, &q, &k.t(), F::zero(), &mut p);
    for (i, mut row) in p.rows_mut().into_iter().enumerate() {
        let visible = if causal { (offset + i + 1).min(tk) } else { tk };
        let seen = |j: usize| j < visible && pad.as_ref().is_none_or(|m| !m[j]);
        let mut max = F::neg_infinity();
        for j in 0..tk {
            if seen(j) {
                max = max.max(row[j]);
            }
        }
        if max == F::neg_infinity() {
            row.fill(F::zero());
            continue;
        }
        let mut sum = F::zero();
        for j in 0..tk {
            row[j] = if seen(j) {
                let e = (row[j] - max).exp();
                sum += e;
                e
            } else {
                F::zero()
            };
        }
        let inv = F::one() / sum;
        row.mapv_inplace(|e| e * inv);
    }
    gemm(F::one(), &p.view(), &v, F::zero(), &mut o);
}

impl<F: Float> MultiHeadAttention<F> {
    /// Model width `d`.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of heads `H`.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Width of each head, `d / H`.
    pub fn head_width(&self) -> usize {
        self.width / self.heads
    }

    /// Whether the attention is causal.
    pub fn is_causal(&self) -> bool {
        self.causal
    }

    /// The projections' kind.
    pub fn projection(&self) -> Projection {
        self.projection
    }

    /// The query, key, value and output projections, in that order.
    pub fn projections(&self) -> [&dyn Module<F>; 4] {
        [&*self.q, &*self.k, &*self.v, &*self.o]
    }

    fn scale(&self) -> F {
        F::of(1.0 / (self.head_width() as f64).sqrt())
    }

    /// Checks `x` is `(…, T, d)` and `pad` (if any) is `(…, T)`; returns `(batch, T)` with
    /// batch the product of the axes before `T`.
    #[track_caller]
    fn dims(
        &self,
        context: &str,
        x: &[usize],
        pad: Option<&ArrayViewD<'_, bool>>,
    ) -> (usize, usize) {
        if x.len() < 2 || x[x.len() - 1] != self.width {
            panic!(
                "{context}: input has shape {x:?}, expected [.., T, {}]",
                self.width
            );
        }
        if let Some(pad) = pad {
            assert_same_shape(context, "padding mask", pad.shape(), &x[..x.len() - 1]);
        }
        let t = x[x.len() - 2];
        (x[..x.len() - 2].iter().product(), t)
    }

    /// Attention over projected `q`, `k`, `v` `(batch·T, d)` of an input with leading axes
    /// `lead` `(…, T)`: returns the merged heads `(…, T, d)` and, when `keep_p`, every `P`.
    #[allow(clippy::too_many_arguments)]
    fn core(
        &self,
        (batch, t): (usize, usize),
        lead: &[usize],
        q: &Array2<F>,
        k: &Array2<F>,
        v: &Array2<F>,
        pad: Option<ArrayViewD<'_, bool>>,
        keep_p: bool,
    ) -> (ArrayD<F>, Option<Array3<F>>) {
        let pad = pad.map(|m| flat_mask(m, (batch, t)));
        let (heads, dh) = (self.heads, self.head_width());
        let mut out = Array2::zeros((batch * t, self.width));
        let mut all_p = keep_p.then(|| Array3::zeros((batch * heads, t, t)));
        let mut scratch = Array2::zeros((t, t));
        for b in 0..batch {
            let rows = b * t..(b + 1) * t;
            for h in 0..heads {
                let cols = h * dh..(h + 1) * dh;
                let p = match all_p.as_mut() {
                    Some(all) => all.index_axis_mut(ndarray::Axis(0), b * heads + h),
                    None => scratch.view_mut(),
                };
                attend(
                    q.slice(s![rows.clone(), cols.clone()]),
                    k.slice(s![rows.clone(), cols.clone()]),
                    v.slice(s![rows.clone(), cols.clone()]),
                    self.scale(),
                    0,
                    self.causal,
                    pad.as_ref().map(|m| m.row(b)),
                    p,
                    out.slice_mut(s![rows.clone(), cols]),
                );
            }
        }
        (unflatten(out, lead), all_p)
    }

    /// Training forward pass with an optional key-padding mask `(…, T)` (`true` = padding).
    ///
    /// # Panics
    /// If `x` is not `(…, T, d)` or the mask is not `(…, T)`; the message names the shapes.
    pub fn forward_masked(
        &mut self,
        x: ArrayViewD<'_, F>,
        pad: Option<ArrayViewD<'_, bool>>,
    ) -> ArrayD<F> {
        let dims = self.dims("MultiHeadAttention::forward", x.shape(), pad.as_ref());
        let lead = x.shape()[..x.ndim() - 1].to_vec();
        let q = into_matrix(self.q.forward(x.view()), self.width);
        let k = into_matrix(self.k.forward(x.view()), self.width);
        let v = into_matrix(self.v.forward(x.view()), self.width);
        let (merged, p) = self.core(dims, &lead, &q, &k, &v, pad, true);
        let y = self.o.forward(merged.view());
        self.saved.push(Saved {
            lead,
            q,
            k,
            v,
            p: p.expect("kept"),
        });
        y
    }

    /// Inference with an optional key-padding mask `(…, T)` (`true` = padding), through
    /// `&self`.
    ///
    /// # Panics
    /// As [`forward_masked`](Self::forward_masked).
    pub fn infer_masked(
        &self,
        x: ArrayViewD<'_, F>,
        pad: Option<ArrayViewD<'_, bool>>,
    ) -> ArrayD<F> {
        let dims = self.dims("MultiHeadAttention::infer", x.shape(), pad.as_ref());
        let lead = x.shape()[..x.ndim() - 1].to_vec();
        let q = into_matrix(self.q.infer(x.view()), self.width);
        let k = into_matrix(self.k.infer(x.view()), self.width);
        let v = into_matrix(self.v.infer(x.view()), self.width);
        let (merged, _) = self.core(dims, &lead, &q, &k, &v, pad, false);
        self.o.infer(merged.view())
    }

    /// Inference on the **new** tokens `x` `(batch, t, d)` of sequences whose earlier keys and
    /// values are in `cache`: appends the new ones and returns the outputs of the new
    /// positions, equal to the last `t` positions of a full causal pass.
    ///
    /// # Panics
    /// If the attention is not causal (a cache is only valid for causal attention), `x` is
    /// not `(batch, t, d)` with the cache's batch and width, or the cache would overflow its
    /// capacity.
    pub fn infer_cached(&self, x: ArrayViewD<'_, F>, cache: &mut AttentionCache<F>) -> ArrayD<F> {
        assert!(
            self.causal,
            "MultiHeadAttention::infer_cached: a key/value cache needs causal attention"
        );
        let (batch, cap, width) = (cache.batch(), cache.capacity(), cache.width());
        assert_same_shape(
            "MultiHeadAttention::infer_cached",
            "input",
            x.shape(),
            &[batch, x.shape().get(1).copied().unwrap_or(0), width],
        );
        assert_eq!(
            width, self.width,
            "MultiHeadAttention::infer_cached: cache width {width}, layer width {}",
            self.width
        );
        let t = x.shape()[1];
        let (start, end) = (cache.len, cache.len + t);
        assert!(
            end <= cap,
            "MultiHeadAttention::infer_cached: {end} positions exceed the cache capacity {cap}"
        );
        let q = into_matrix(self.q.infer(x.view()), width);
        let k = into_matrix(self.k.infer(x.view()), width);
        let v = into_matrix(self.v.infer(x.view()), width);
        cache.reserve(cache.allocation_for(end));
        for b in 0..batch {
            let rows = b * t..(b + 1) * t;
            cache
                .k
                .slice_mut(s![b, start..end, ..])
                .assign(&k.slice(s![rows.clone(), ..]));
            cache
                .v
                .slice_mut(s![b, start..end, ..])
                .assign(&v.slice(s![rows, ..]));
        }
        cache.len = end;
        let (heads, dh) = (self.heads, self.head_width());
        let mut merged = Array2::zeros((batch * t, width));
        let mut p = Array2::zeros((t, end));
        for b in 0..batch {
            let rows = b * t..(b + 1) * t;
            for h in 0..heads {
                let cols = h * dh..(h + 1) * dh;
                attend(
                    q.slice(s![rows.clone(), cols.clone()]),
                    cache.k.slice(s![b, ..end, cols.clone()]),
                    cache.v.slice(s![b, ..end, cols.clone()]),
                    self.scale(),
                    start,
                    true,
                    None,
                    p.view_mut(),
                    merged.slice_mut(s![rows.clone(), cols]),
                );
            }
        }
        self.o.infer(unflatten(merged, &[batch, t]).view())
    }
}

/// A padding mask `(…, T)` as `(batch, T)`.
fn flat_mask(m: ArrayViewD<'_, bool>, (batch, t): (usize, usize)) -> Array2<bool> {
    m.as_standard_layout()
        .into_owned()
        .into_shape_with_order((batch, t))
        .expect("checked against the input")
}

impl<F: Float> Module<F> for MultiHeadAttention<F> {
    fn forward(&mut self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.forward_masked(x, None)
    }

    fn backward(&mut self, grad_output: ArrayViewD<'_, F>) -> ArrayD<F> {
        let saved = self.saved.pop("MultiHeadAttention");
        assert_same_shape(
            "MultiHeadAttention::backward",
            "grad_output",
            grad_output.shape(),
            &with_last(&saved.lead, self.width),
        );
        let d_merged = self.o.backward(grad_output);
        let (d_merged, _) = as_matrix(
            "MultiHeadAttention::backward",
            "dO",
            d_merged.view(),
            self.width,
        );
        let t = saved.lead[saved.lead.len() - 1];
        let batch = saved.q.nrows() / t.max(1);
        let (heads, dh, scale) = (self.heads, self.head_width(), self.scale());
        let mut dq = Array2::zeros(saved.q.raw_dim());
        let mut dk = Array2::zeros(saved.k.raw_dim());
        let mut dv = Array2::zeros(saved.v.raw_dim());
        let mut ds = Array2::zeros((t, t));
        for b in 0..batch {
            let rows = b * t..(b + 1) * t;
            for h in 0..heads {
                let cols = h * dh..(h + 1) * dh;
                let p = saved.p.index_axis(ndarray::Axis(0), b * heads + h);
                let g = d_merged.slice(s![rows.clone(), cols.clone()]);
                let q = saved.q.slice(s![rows.clone(), cols.clone()]);
                let k = saved.k.slice(s![rows.clone(), cols.clone()]);
                let v = saved.v.slice(s![rows.clone(), cols.clone()]);
                // dV = Pᵀ G, dP = G Vᵀ.
                gemm(
                    F::one(),
                    &p.t(),
                    &g,
                    F::zero(),
                    &mut dv.slice_mut(s![rows.clone(), cols.clone()]),
                );
                gemm(F::one(), &g, &v.t(), F::zero(), &mut ds.view_mut());
                // dS = P ⊙ (dP − rowsum(P ⊙ dP)).
                for (mut ds_row, p_row) in ds.rows_mut().into_iter().zip(p.rows()) {
                    let dot = ds_row
                        .iter()
                        .zip(p_row.iter())
                        .fold(F::zero(), |acc, (&a, &b)| acc + a * b);
                    ds_row.zip_mut_with(&p_row, |d, &p| *d = p * (*d - dot));
                }
                gemm(
                    scale,
                    &ds.view(),
                    &k,
                    F::zero(),
                    &mut dq.slice_mut(s![rows.clone(), cols.clone()]),
                );
                gemm(
                    scale,
                    &ds.t(),
                    &q,
                    F::zero(),
                    &mut dk.slice_mut(s![rows.clone(), cols]),
                );
            }
        }
        let lead = &saved.lead;
        let mut dx = self.v.backward(unflatten(dv, lead).view());
        dx += &self.k.backward(unflatten(dk, lead).view());
        dx += &self.q.backward(unflatten(dq, lead).view());
        dx
    }

    fn infer(&self, x: ArrayViewD<'_, F>) -> ArrayD<F> {
        self.infer_masked(x, None)
    }

    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<F>)) {
        f("q", &*self.q);
        f("k", &*self.k);
        f("v", &*self.v);
        f("o", &*self.o);
    }

    fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<F>)) {
        f("q", &mut *self.q);
        f("k", &mut *self.k);
        f("v", &mut *self.v);
        f("o", &mut *self.o);
    }

    fn saved_states(&self) -> Option<&dyn StateStack> {
        Some(&self.saved)
    }

    fn describe(&self) -> String {
        format!(
            "MultiHeadAttention(d = {}, heads = {}, {}{})",
            self.width,
            self.heads,
            self.projection.name(),
            if self.causal { ", causal" } else { "" }
        )
    }

    fn hyperparameters(&self) -> Vec<(String, String)> {
        vec![
            ("width".into(), self.width.to_string()),
            ("heads".into(), self.heads.to_string()),
            ("causal".into(), self.causal.to_string()),
            ("projection".into(), self.projection.name()),
        ]
    }

    fn output_shape(&self, input: &[usize]) -> Option<Vec<usize>> {
        (input.len() >= 2 && input[input.len() - 1] == self.width).then(|| input.to_vec())
    }
}

impl<F: Float> std::fmt::Debug for MultiHeadAttention<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
