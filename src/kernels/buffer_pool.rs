//! Buffers reused across training steps.
//!
//! A training step allocates the same arrays every time: layer outputs, the activations saved
//! for the backward pass, gradients. Given back to the system allocator at the end of a step,
//! they cost the next step again: glibc returns the freed top of its heap to the kernel, so
//! every step page-faults and zero-fills its activations anew (measured on the `tiny_lm`
//! Transformer: about 6 ms of a 47 ms step at one thread).
//!
//! The crate's layers therefore take the arrays they write from the pool and give back the
//! ones they are done with (a saved activation after its backward pass, an intermediate
//! inside a composite layer, im2col columns). The optimizers need none: they update the
//! parameters and their state in place. A request takes a returned buffer of exactly the
//! requested length, the most recently returned first, or allocates a new one.
//! Arrays handed to the user are never taken back: dropping them frees them as usual.
//!
//! ```text
//!     held bytes ≤ limit          (default 256 MiB; the oldest buffers are freed first)
//! ```
//!
//! The pool is shared by all threads. [`set_limit`] bounds it ([`set_limit`]`(0)` turns
//! reuse off), [`clear`] frees what it holds, [`held_bytes`] tells how much that is.
//!
//! ```
//! use phm_nn::kernels::buffer_pool;
//! use phm_nn::{LinearConfig, Module};
//! let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
//! let mut layer = LinearConfig::new(64, 64).init::<f32, _>(&mut rng)?;
//! let x = ndarray::ArrayD::<f32>::ones(vec![32, 64]);
//! let y = layer.forward(x.view());
//! layer.backward(y.view()); // the saved input goes back to the pool
//! assert!(buffer_pool::held_bytes() >= 32 * 64 * 4);
//! buffer_pool::clear();
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use ndarray::{
    Array, ArrayBase, ArrayView, ArrayViewMut1, Axis, CowArray, Data, Dimension, ShapeBuilder,
};

use crate::kernels::parallel::for_each_chunk;

use crate::Float;

/// The default bound on the bytes the pool holds: 256 MiB.
pub const DEFAULT_LIMIT: usize = 256 << 20;

/// Most buffers held at once (a step of a deep model returns a few hundred).
const MAX_BUFFERS: usize = 1024;

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_LIMIT);

/// One returned buffer, of either float type.
enum Buffer {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Buffers are found by float type (`true`: `f64`) and length.
type Key = (bool, usize);

impl Buffer {
    fn bytes(&self) -> usize {
        match self {
            Buffer::F32(v) => v.len() * 4,
            Buffer::F64(v) => v.len() * 8,
        }
    }

    fn key(&self) -> Key {
        match self {
            Buffer::F32(v) => (false, v.len()),
            Buffer::F64(v) => (true, v.len()),
        }
    }
}

/// The held buffers by key, each list oldest first with the stamp it was given back at, and
/// their total count and size in bytes. A request is one hash lookup, whatever is held.
struct Held {
    buckets: HashMap<Key, VecDeque<(u64, Buffer)>>,
    count: usize,
    bytes: usize,
    stamp: u64,
}

static HELD: LazyLock<Mutex<Held>> = LazyLock::new(|| Mutex::new(Held::new()));

fn held() -> MutexGuard<'static, Held> {
    HELD.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Held {
    fn new() -> Self {
        Held {
            buckets: HashMap::new(),
            count: 0,
            bytes: 0,
            stamp: 0,
        }
    }

    /// Holds `buffer`, then frees the oldest ones beyond `limit` bytes.
    fn push(&mut self, buffer: Buffer, limit: usize) {
        self.stamp += 1;
        self.count += 1;
        self.bytes += buffer.bytes();
        self.buckets
            .entry(buffer.key())
            .or_default()
            .push_back((self.stamp, buffer));
        self.shrink_to(limit);
    }

    /// The most recently given back buffer of `key`, if any.
    fn take(&mut self, key: Key) -> Option<Buffer> {
        let bucket = self.buckets.get_mut(&key)?;
        let (_, buffer) = bucket.pop_back()?;
        if bucket.is_empty() {
            self.buckets.remove(&key);
        }
        self.count -= 1;
        self.bytes -= buffer.bytes();
        Some(buffer)
    }

    /// Frees the oldest buffers until at most `limit` bytes and [`MAX_BUFFERS`] are held
    /// (a scan of the keys per buffer freed: only when over a bound).
    fn shrink_to(&mut self, limit: usize) {
        while self.bytes > limit || self.count > MAX_BUFFERS {
            let Some(key) = self
                .buckets
                .iter()
                .filter_map(|(k, b)| b.front().map(|(stamp, _)| (*stamp, *k)))
                .min()
                .map(|(_, k)| k)
            else {
                break;
            };
            let bucket = self.buckets.get_mut(&key).expect("a key just found");
            let (_, buffer) = bucket.pop_front().expect("a non-empty bucket");
            if bucket.is_empty() {
                self.buckets.remove(&key);
            }
            self.count -= 1;
            self.bytes -= buffer.bytes();
        }
    }
}

/// Bounds the bytes the pool holds (0 turns reuse off) and frees the oldest buffers
/// beyond it.
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
    held().shrink_to(bytes);
}

/// The bound set by [`set_limit`] ([`DEFAULT_LIMIT`] unless changed).
pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Frees every buffer the pool holds.
pub fn clear() {
    held().shrink_to(0);
}

/// The bytes the pool holds now.
pub fn held_bytes() -> usize {
    held().bytes
}

/// A returned buffer of exactly `len` values of `F` (the most recent one), if any.
fn take<F: Float>(len: usize) -> Option<Vec<F>> {
    if len == 0 {
        return None;
    }
    let mut out: Option<Vec<F>> = None;
    let slot = &mut out as &mut dyn Any;
    let f64 = !slot.is::<Option<Vec<f32>>>();
    match held().take((f64, len))? {
        Buffer::F32(v) => *slot.downcast_mut::<Option<Vec<f32>>>()? = Some(v),
        Buffer::F64(v) => *slot.downcast_mut::<Option<Vec<f64>>>()? = Some(v),
    }
    out
}

/// Gives `a`'s buffer to the pool for a later request of the same length (or frees it,
/// beyond the limit).
pub(crate) fn recycle<F: Float, D: Dimension>(a: Array<F, D>) {
    let (mut vec, _) = a.into_raw_vec_and_offset();
    let limit = limit();
    if vec.is_empty() || vec.len() * std::mem::size_of::<F>() > limit {
        return;
    }
    let slot = &mut vec as &mut dyn Any;
    let buffer = if let Some(v) = slot.downcast_mut::<Vec<f32>>() {
        Buffer::F32(std::mem::take(v))
    } else if let Some(v) = slot.downcast_mut::<Vec<f64>>() {
        Buffer::F64(std::mem::take(v))
    } else {
        return;
    };
    held().push(buffer, limit);
}

/// `f(x)`, then `x`'s buffer to the pool: a layer's input that nothing reads afterwards.
pub(crate) fn consume<F: Float, D: Dimension, R>(
    x: Array<F, D>,
    f: impl FnOnce(ArrayView<'_, F, D>) -> R,
) -> R {
    let y = f(x.view());
    recycle(x);
    y
}

/// An array of `shape` whose contents are unspecified (values of an earlier step, or zeros):
/// for outputs the caller overwrites entirely, such as a GEMM's with `beta = 0`.
pub(crate) fn for_overwrite<F: Float, Sh: ShapeBuilder>(shape: Sh) -> Array<F, Sh::Dim> {
    let shape = shape.into_shape_with_order();
    match take(shape.size()) {
        Some(v) => Array::from_shape_vec(shape, v).expect("the length was matched"),
        None => Array::zeros(shape),
    }
}

/// An array of zeros of `shape`.
pub(crate) fn zeros<F: Float, Sh: ShapeBuilder>(shape: Sh) -> Array<F, Sh::Dim> {
    let shape = shape.into_shape_with_order();
    match take::<F>(shape.size()) {
        Some(mut v) => {
            v.fill(F::zero());
            Array::from_shape_vec(shape, v).expect("the length was matched")
        }
        None => Array::zeros(shape),
    }
}

/// A standard-layout copy of `a` (split across the crate's pool when large and contiguous).
pub(crate) fn copy_of<F: Float, S: Data<Elem = F>, D: Dimension>(
    a: &ArrayBase<S, D>,
) -> Array<F, D> {
    let mut out = for_overwrite(a.raw_dim());
    match (a.as_slice(), out.as_slice_mut()) {
        (Some(src), Some(dst)) => {
            let len = dst.len();
            for_each_chunk(
                ArrayViewMut1::from(dst),
                Axis(0),
                len,
                |start, mut chunk| {
                    let n = chunk.len();
                    chunk
                        .as_slice_mut()
                        .expect("a chunk of a slice is contiguous")
                        .copy_from_slice(&src[start..start + n]);
                },
            );
        }
        _ => out.assign(a),
    }
    out
}

/// `a` owned and in standard layout: moved if it already is both, else copied into a
/// pooled buffer.
pub(crate) fn owned<F: Float, D: Dimension>(a: CowArray<'_, F, D>) -> Array<F, D> {
    if a.is_view() || !a.is_standard_layout() {
        copy_of(&a)
    } else {
        a.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, ArrayD};

    /// The pool is global: tests that assert on what it holds take this lock, so no
    /// other test of this module changes it meanwhile (other tests of the binary only take
    /// and give buffers of their own lengths).
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn a_returned_buffer_is_taken_again_by_length_and_type() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        // An unusual length, so other tests' buffers never match.
        let len = 7919;
        let a = Array2::<f32>::from_elem((1, len), 3.0);
        let ptr = a.as_ptr();
        recycle(a);
        // Another type of the same length does not take it.
        let b = for_overwrite::<f64, _>((len, 1));
        assert_ne!(b.as_ptr() as usize, ptr as usize);
        // The same length in another shape does; `zeros` clears it, `for_overwrite` does not.
        let c = zeros::<f32, _>(vec![len]);
        assert_eq!(c.as_ptr(), ptr);
        assert!(c.iter().all(|&v| v == 0.0));
        recycle(c.into_dimensionality::<ndarray::IxDyn>().unwrap());
        let mut d = for_overwrite::<f32, _>((len, 1));
        assert_eq!(d.as_ptr(), ptr);
        d.fill(5.0);
        // A copy has the source's values whatever the buffer held.
        recycle(d);
        let src = ArrayD::<f32>::from_shape_fn(vec![len], |i| i[0] as f32);
        let e = copy_of(&src.t());
        assert_eq!(e.as_ptr(), ptr);
        assert_eq!(e, src);
    }

    /// A copy large enough to be split across threads is the source, at 1–3 threads.
    #[test]
    fn a_split_copy_is_the_source() {
        let src = ArrayD::<f64>::from_shape_fn(vec![3, 211, 163], |i| {
            (i[0] * 7 + i[1] * 5 + i[2]) as f64
        });
        // Split even small passes, so that the split paths are the ones checked.
        crate::kernels::set_elementwise_min_work(0);
        for threads in 1..=3 {
            crate::kernels::set_num_threads(threads);
            assert_eq!(copy_of(&src), src, "{threads} threads");
        }
        crate::kernels::set_num_threads(1);
    }

    #[test]
    fn the_limit_frees_the_oldest_buffers_first() {
        // A pool of the test's own: the global one is shared with the other tests.
        let mut h = Held::new();
        let (small, large) = (6151, 6143);
        h.push(Buffer::F64(vec![0.0; small]), usize::MAX);
        h.push(Buffer::F32(vec![0.0; large]), usize::MAX);
        assert_eq!((h.count, h.bytes), (2, small * 8 + large * 4));
        // Room for the newer one only: the older one is freed.
        h.shrink_to(large * 4);
        assert_eq!((h.count, h.bytes), (1, large * 4));
        assert!(h.take((true, small)).is_none());
        assert!(matches!(h.take((false, large)), Some(Buffer::F32(v)) if v.len() == large));
        // Over the count bound: the oldest go first, across keys; the newest of a key is
        // taken first.
        for len in 1..=MAX_BUFFERS + 5 {
            h.push(Buffer::F32(vec![0.0; len % 7 + 1]), usize::MAX);
        }
        assert_eq!(h.count, MAX_BUFFERS);
        let stamps: Vec<u64> = h.buckets.values().flatten().map(|(s, _)| *s).collect();
        assert_eq!(*stamps.iter().min().unwrap(), 2 + 6); // stamps 3..=7 (the first five) freed
        let bytes: usize = h.buckets.values().flatten().map(|(_, b)| b.bytes()).sum();
        assert_eq!(h.bytes, bytes);
        let newest = h.buckets[&(false, 3)].back().unwrap().0;
        assert!(matches!(h.take((false, 3)), Some(Buffer::F32(v)) if v.len() == 3));
        assert!(h.buckets[&(false, 3)].iter().all(|(s, _)| *s < newest));
        // A limit of 0 frees everything.
        h.shrink_to(0);
        assert_eq!((h.count, h.bytes, h.buckets.len()), (0, 0, 0));
    }
}
