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

use ndarray::{
    s, Array2, Array3, Array4, ArrayD, ArrayView1, ArrayView2, ArrayViewD, ArrayViewMut2,
    ArrayViewMut3, Axis, IxDyn, Zip,
};
use rand::Rng;

use crate::error::{PhmError, Result};
use crate::kernels::buffer_pool::{self, consume};
use crate::kernels::gemm::{assert_same_shape, gemm};
use crate::kernels::parallel::{for_each_chunk, for_each_chunk2};
use crate::kernels::shapes::{into_matrix, unflatten, with_last};
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
    /// `P` for every (batch, head), `(batch, H, T, T)`.
    p: Array4<F>,
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
    gemm(scale, &q, &k.t(), F::zero(), &mut p);
    masked_softmax_rows(p.view_mut(), offset, causal, pad);
    gemm(F::one(), &p.view(), &v, F::zero(), &mut o);
}

/// Row-wise masked softmax in place on scores `s` `(tq, tk)`, one fused pass per row (the row
/// stays in cache): hide the masked keys, find the row's maximum, `e = exp(s − max)` and its
/// sum, scale by `1/sum`. Query `i` is at absolute position `offset + i`; with `causal` it
/// sees the keys `j ≤ offset + i`, and never the keys marked in `pad`. A row that sees no key
/// becomes 0.
pub(crate) fn masked_softmax_rows<F: Float>(
    mut s: ArrayViewMut2<'_, F>,
    offset: usize,
    causal: bool,
    pad: Option<ArrayView1<'_, bool>>,
) {
    let tk = s.ncols();
    for (i, mut row) in s.rows_mut().into_iter().enumerate() {
        let visible = if causal { (offset + i + 1).min(tk) } else { tk };
        let (mut seen, mut hidden) = row.view_mut().split_at(Axis(0), visible);
        hidden.fill(F::zero());
        if let Some(pad) = &pad {
            Zip::from(&mut seen)
                .and(&pad.slice(s![..visible]))
                .for_each(|v, &m| {
                    if m {
                        *v = F::neg_infinity();
                    }
                });
        }
        let max = seen.fold(F::neg_infinity(), |m, &v| m.max(v));
        if max == F::neg_infinity() {
            seen.fill(F::zero());
            continue;
        }
        let mut sum = F::zero();
        seen.mapv_inplace(|v| {
            let e = (v - max).exp();
            sum += e;
            e
        });
        let inv = F::one() / sum;
        seen.mapv_inplace(|e| e * inv);
    }
}

/// Softmax backward in place, one fused pass per row: `dP` `(tq, tk)` becomes
/// `dS = P ⊙ (dP − rowsum(P ⊙ dP))` for the softmax output `p`.
pub(crate) fn softmax_backward_rows<F: Float>(mut dp: ArrayViewMut2<'_, F>, p: ArrayView2<'_, F>) {
    for (mut d, p) in dp.rows_mut().into_iter().zip(p.rows()) {
        let dot = Zip::from(&d)
            .and(&p)
            .fold(F::zero(), |acc, &a, &b| acc + a * b);
        d.zip_mut_with(&p, |d, &p| *d = p * (*d - dot));
    }
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
    ) -> (ArrayD<F>, Option<Array4<F>>) {
        let pad = pad.map(|m| flat_mask(m, (batch, t)));
        let (heads, dh, scale, causal) = (self.heads, self.head_width(), self.scale(), self.causal);
        let d = self.width;
        // Every entry is written below (each head's columns of O, each P row whole).
        let mut out = buffer_pool::for_overwrite((batch, t, d));
        let mut all_p = keep_p.then(|| buffer_pool::for_overwrite((batch, heads, t, t)));
        // Each (batch, head) pair's two products on one thread, batches split across the pool;
        // the heads are read as column blocks of Q, K, V and O written in place.
        let one = |b: usize,
                   mut o: ArrayViewMut2<'_, F>,
                   mut p_b: Option<ArrayViewMut3<'_, F>>,
                   scratch: &mut Array2<F>| {
            let rows = b * t..(b + 1) * t;
            for h in 0..heads {
                let cols = h * dh..(h + 1) * dh;
                let p = match p_b.as_mut() {
                    Some(p_b) => p_b.index_axis_mut(Axis(0), h),
                    None => scratch.view_mut(),
                };
                attend(
                    q.slice(s![rows.clone(), cols.clone()]),
                    k.slice(s![rows.clone(), cols.clone()]),
                    v.slice(s![rows.clone(), cols.clone()]),
                    scale,
                    0,
                    causal,
                    pad.as_ref().map(|m| m.row(b)),
                    p,
                    o.slice_mut(s![.., cols]),
                );
            }
        };
        let work = batch * heads * t * t * (4 * dh + 16);
        match all_p.as_mut() {
            Some(all_p) => for_each_chunk2(
                out.view_mut(),
                all_p.view_mut(),
                Axis(0),
                work,
                |start, mut o, mut p| {
                    let mut scratch = Array2::zeros((0, 0));
                    for i in 0..o.len_of(Axis(0)) {
                        one(
                            start + i,
                            o.index_axis_mut(Axis(0), i),
                            Some(p.index_axis_mut(Axis(0), i)),
                            &mut scratch,
                        );
                    }
                },
            ),
            None => for_each_chunk(out.view_mut(), Axis(0), work, |start, mut o| {
                let mut scratch = Array2::zeros((t, t));
                for i in 0..o.len_of(Axis(0)) {
                    one(start + i, o.index_axis_mut(Axis(0), i), None, &mut scratch);
                }
            }),
        }
        let out = out
            .into_shape_with_order((batch * t, d))
            .expect("standard layout");
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
        let y = self.o.forward_owned(merged);
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
        [q, k, v].into_iter().for_each(buffer_pool::recycle);
        consume(merged, |m| self.o.infer(m))
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
        // The output projection's input gradient has the input's shape `(…, T, d)`.
        let d_merged = into_matrix(self.o.backward(grad_output), self.width);
        let t = saved.lead[saved.lead.len() - 1];
        let batch = saved.q.nrows() / t.max(1);
        let (heads, dh, scale, d) = (self.heads, self.head_width(), self.scale(), self.width);
        // dQ, dK, dV as one array `(3, batch, T, d)`; batches split across the pool, each
        // (batch, head) pair's products on one thread, written in place.
        // Every entry is written below (each head's columns of dQ, dK and dV).
        let mut grads = buffer_pool::for_overwrite((3, batch, t, d));
        let work = batch * heads * t * t * (8 * dh + 16);
        let (sq, sk, sv, sp) = (&saved.q, &saved.k, &saved.v, &saved.p);
        let dm = &d_merged;
        for_each_chunk(grads.view_mut(), Axis(1), work, |start, mut g3| {
            let mut ds = Array2::zeros((t, t));
            for i in 0..g3.len_of(Axis(1)) {
                let b = start + i;
                let rows = b * t..(b + 1) * t;
                for h in 0..heads {
                    let cols = h * dh..(h + 1) * dh;
                    let p = sp.slice(s![b, h, .., ..]);
                    let g = dm.slice(s![rows.clone(), cols.clone()]);
                    let q = sq.slice(s![rows.clone(), cols.clone()]);
                    let k = sk.slice(s![rows.clone(), cols.clone()]);
                    let v = sv.slice(s![rows.clone(), cols.clone()]);
                    // dV = Pᵀ G, dP = G Vᵀ.
                    gemm(
                        F::one(),
                        &p.t(),
                        &g,
                        F::zero(),
                        &mut g3.slice_mut(s![2, i, .., cols.clone()]),
                    );
                    gemm(F::one(), &g, &v.t(), F::zero(), &mut ds.view_mut());
                    // dS = P ⊙ (dP − rowsum(P ⊙ dP)).
                    softmax_backward_rows(ds.view_mut(), p);
                    gemm(
                        scale,
                        &ds.view(),
                        &k,
                        F::zero(),
                        &mut g3.slice_mut(s![0, i, .., cols.clone()]),
                    );
                    gemm(
                        scale,
                        &ds.t(),
                        &q,
                        F::zero(),
                        &mut g3.slice_mut(s![1, i, .., cols]),
                    );
                }
            }
        });
        let shape = IxDyn(&with_last(&saved.lead, d));
        let part = |i: usize| {
            grads
                .index_axis(Axis(0), i)
                .into_shape_with_order(shape.clone())
                .expect("standard layout")
        };
        let mut dx = self.v.backward(part(2));
        for (proj, i) in [(&mut self.k, 1), (&mut self.q, 0)] {
            let dxi = proj.backward(part(i));
            dx += &dxi;
            buffer_pool::recycle(dxi);
        }
        buffer_pool::recycle(grads);
        buffer_pool::recycle(d_merged);
        let Saved { q, k, v, p, .. } = saved;
        buffer_pool::recycle(q);
        buffer_pool::recycle(k);
        buffer_pool::recycle(v);
        buffer_pool::recycle(p);
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// The plain definition in `f64`: `p_j = e^{s_j} / Σ_{visible} e^{s_k}` over the visible,
    /// unpadded keys (scores small enough not to overflow), 0 elsewhere.
    fn plain_softmax(
        s: &Array2<f64>,
        offset: usize,
        causal: bool,
        pad: Option<&[bool]>,
    ) -> Array2<f64> {
        let (tq, tk) = s.dim();
        let mut p = Array2::zeros((tq, tk));
        for i in 0..tq {
            let seen = |j: usize| (!causal || j <= offset + i) && pad.is_none_or(|m| !m[j]);
            let sum: f64 = (0..tk).filter(|&j| seen(j)).map(|j| s[[i, j]].exp()).sum();
            for j in (0..tk).filter(|&j| seen(j)) {
                p[[i, j]] = s[[i, j]].exp() / sum;
            }
        }
        p
    }

    #[test]
    fn fused_softmax_matches_the_definition() {
        for (tq, tk, offset) in [(1, 1, 0), (5, 5, 0), (3, 7, 4), (9, 13, 0)] {
            let s = Array2::from_shape_fn((tq, tk), |(i, j)| {
                ((i * 7 + j * 3) as f64 * 0.37).sin() * 6.0
            });
            let pad: Vec<bool> = (0..tk).map(|j| j % 4 == 2).collect();
            for causal in [false, true] {
                for pad in [None, Some(&pad[..])] {
                    let want = plain_softmax(&s, offset, causal, pad);
                    let pad_view = pad.map(ArrayView1::from);
                    let mut got = s.clone();
                    masked_softmax_rows(got.view_mut(), offset, causal, pad_view);
                    let mut got32 = s.mapv(|v| v as f32);
                    masked_softmax_rows(got32.view_mut(), offset, causal, pad_view);
                    for ((a, b), w) in got.iter().zip(&got32).zip(&want) {
                        assert!(
                            (a - w).abs() <= 1e-15,
                            "{tq}×{tk} causal={causal}: {a} vs {w}"
                        );
                        assert!((f64::from(*b) - w).abs() <= 1e-6, "f32: {b} vs {w}");
                    }
                }
            }
        }
    }

    /// Huge scores do not overflow (the maximum is subtracted), −∞ scores and masked keys get
    /// exactly 0, and a row that sees nothing is all 0 (not NaN).
    #[test]
    fn fused_softmax_is_stable_and_masks_exactly() {
        let mut s = array![
            [1e30f32, 0.0, 1e30],
            [f32::NEG_INFINITY, 88.0, 89.0],
            [3.0e38, -3.0e38, 0.0],
            [1.0, 2.0, 3.0]
        ];
        let pad = [false, false, false];
        masked_softmax_rows(s.view_mut(), 0, false, Some(ArrayView1::from(&pad[..])));
        assert_eq!(s.row(0).to_vec(), vec![0.5, 0.0, 0.5]);
        let e = (-1.0f64).exp();
        let (a, b) = ((e / (1.0 + e)) as f32, (1.0 / (1.0 + e)) as f32);
        assert_eq!(s[[1, 0]], 0.0);
        assert!((s[[1, 1]] - a).abs() <= 1e-7 && (s[[1, 2]] - b).abs() <= 1e-7);
        assert_eq!(s.row(2).to_vec(), vec![1.0, 0.0, 0.0]);
        assert!(s.iter().all(|v| v.is_finite()));
        // Every key padded: the row is 0. Causal with the first key padded: row 0 sees nothing.
        let mut s = array![[1.0f64, 2.0], [3.0, 4.0]];
        masked_softmax_rows(
            s.view_mut(),
            0,
            false,
            Some(ArrayView1::from(&[true, true][..])),
        );
        assert_eq!(s, Array2::<f64>::zeros((2, 2)));
        let mut s = array![[1.0f64, 2.0], [3.0, 4.0]];
        masked_softmax_rows(
            s.view_mut(),
            0,
            true,
            Some(ArrayView1::from(&[true, false][..])),
        );
        assert_eq!(s, array![[0.0, 0.0], [0.0, 1.0]]);
    }

    /// `dS = P ⊙ (dP − rowsum(P ⊙ dP))` against the Jacobian of the softmax,
    /// `dS_j = Σ_k dP_k · P_k (δ_jk − P_j)`.
    #[test]
    fn fused_softmax_backward_matches_the_jacobian() {
        for (tq, tk) in [(1, 1), (3, 5), (6, 11)] {
            let mut p =
                Array2::from_shape_fn((tq, tk), |(i, j)| ((i * 5 + j) as f64 * 0.9).cos() * 3.0);
            masked_softmax_rows(p.view_mut(), 0, true, None);
            let dp = Array2::from_shape_fn((tq, tk), |(i, j)| ((i + 2 * j) as f64 * 0.41).sin());
            let mut ds = dp.clone();
            softmax_backward_rows(ds.view_mut(), p.view());
            for i in 0..tq {
                for j in 0..tk {
                    let want: f64 = (0..tk)
                        .map(|k| dp[[i, k]] * p[[i, k]] * (f64::from(u8::from(j == k)) - p[[i, j]]))
                        .sum();
                    assert!(
                        (ds[[i, j]] - want).abs() <= 1e-15,
                        "{i},{j}: {} vs {want}",
                        ds[[i, j]]
                    );
                }
            }
        }
    }
}
