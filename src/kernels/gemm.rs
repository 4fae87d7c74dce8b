//! The one GEMM entry point every layer and kernel goes through, the thread count it uses,
//! and the one shape check that `forward`/`backward` use for programmer errors.
//!
//! Products run on the `gemm` crate's packed kernels ([`gemm_backend`](super::gemm_backend),
//! the crate's only `unsafe`), which choose their SIMD code at run time: AVX-512, AVX2/FMA,
//! NEON or a portable fallback ([`simd_level`] says which). A product of at least
//! [`PARALLEL_MIN_WORK`] multiply-adds runs on [`num_threads`] threads, each computing one
//! contiguous block of the output on its own (the one pool of
//! [`parallel`](super::parallel)); smaller ones run on the calling thread, where threads cost
//! more than they gain.
//!
//! ```text
//!     C (m × n) = A B:  n ≥ m → C = [A B₁ | A B₂ | …]   (column blocks: each thread packs its Bⱼ)
//!                       n < m → C = [A₁ B; A₂ B; …]     (row blocks: each thread packs its Aᵢ)
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ndarray::{
    s, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, ShapeBuilder,
};

use crate::kernels::buffer_pool;
use crate::kernels::gemm_backend::packed_gemm;
use crate::kernels::parallel::for_each_chunk;
use crate::Float;

/// Inner dimension from which [`gemm`] steers a product with a transposed weight to a
/// column-major temporary (shorter products: the packing it saves is small).
const STEER_MIN_K: usize = 64;

/// Default multiply-adds (`m·n·k`) from which a product runs on several threads (when
/// [`num_threads`] > 1); [`set_parallel_min_work`] changes it. With the backend's own
/// threading (which shares the packing and meets at every depth block) two threads were
/// 0.5–0.8× as fast as one up to 34 M multiply-adds, so the threshold was 2²⁶. With the output
/// split into one independent block per thread, 2²² (4 M) is the issue's target: on a loaded
/// 2-core AVX-512 machine (load 5–9) two threads gave 1.6–2.3× on most products from 4 M and
/// 0.8–1.0× on others, varying from run to run; re-measure idle with
/// `bench_report -- --threads-sweep` (see `BENCHMARKS.md`, "Products with a weight, and
/// threads").
pub const PARALLEL_MIN_WORK: usize = 1 << 22;

/// Multiply-adds a product is counted per entry of its right operand (`k·n`) when deciding to
/// thread it: a product of few rows (a matrix–vector product at batch 1) does few
/// multiply-adds per weight it reads and is bound by reading the weight, which two threads
/// also share. A 1024 × 1024 weight read transposed (`X·Wᵀ`, a `Linear`'s forward) at one
/// row counts as 8 M and is threaded.
const WORK_PER_WEIGHT_ENTRY: usize = 8;

/// The threshold in force (see [`PARALLEL_MIN_WORK`]).
static MIN_WORK: AtomicUsize = AtomicUsize::new(PARALLEL_MIN_WORK);

/// Sets the multiply-adds from which a product is threaded (default [`PARALLEL_MIN_WORK`]),
/// for the whole process; `0` threads every product, `usize::MAX` none.
pub fn set_parallel_min_work(work: usize) {
    MIN_WORK.store(work, Ordering::Relaxed);
}

/// The environment variable read (once, at the first product) for the default thread count.
pub const NUM_THREADS_ENV: &str = "PHM_NN_NUM_THREADS";

/// The thread count set by [`set_num_threads`] or read from [`NUM_THREADS_ENV`]; `0` = not yet
/// decided.
static NUM_THREADS: Mutex<usize> = Mutex::new(0);
/// A thread pool and its size.
type SizedPool = (usize, Arc<rayon::ThreadPool>);
/// The pool large products run on, with its size.
static POOL: OnceLock<Mutex<Option<SizedPool>>> = OnceLock::new();

/// The number of threads a large product runs on.
///
/// Defaults to the environment variable `PHM_NN_NUM_THREADS`, read once (at the first call,
/// usually the first large product), and to the number of CPUs the process may use
/// ([`std::thread::available_parallelism`]) when it is unset or empty. A count above the
/// available parallelism is capped to it, with one warning on stderr: more threads than CPUs
/// only add contention (`PHM_NN_NUM_THREADS=5000` once made a product 3500 times slower).
/// [`set_num_threads`] overrides both. Products smaller than [`PARALLEL_MIN_WORK`]
/// multiply-adds always run on the calling thread.
///
/// ```
/// phm_nn::kernels::set_num_threads(1); // single-threaded from now on
/// assert_eq!(phm_nn::kernels::num_threads(), 1);
/// ```
///
/// # Panics
/// If `PHM_NN_NUM_THREADS` is set to anything but a positive integer (`0`, `-3`, `2.5`,
/// `abc`, not Unicode): the message names the value. A misspelt thread count is a
/// configuration error that should stop the program at its first product, not run it on a
/// count the user did not ask for. Every later call panics the same way until
/// [`set_num_threads`] decides the count.
#[track_caller]
pub fn num_threads() -> usize {
    let mut n = NUM_THREADS.lock().unwrap_or_else(|e| e.into_inner());
    if *n == 0 {
        let available = std::thread::available_parallelism().map_or(1, |p| p.get());
        let (threads, warning) = match std::env::var_os(NUM_THREADS_ENV) {
            None => (available, None),
            Some(value) => threads_from_env(&value, available).unwrap_or_else(|e| panic!("{e}")),
        };
        if let Some(warning) = warning {
            eprintln!("phm-nn: warning: {warning}");
        }
        *n = threads;
    }
    *n
}

/// The thread count that `PHM_NN_NUM_THREADS=value` asks for on a machine with `available`
/// CPUs, and the warning to print when it was capped; or why the value is rejected.
fn threads_from_env(
    value: &std::ffi::OsStr,
    available: usize,
) -> Result<(usize, Option<String>), String> {
    let text = value.to_str().ok_or_else(|| {
        format!("{NUM_THREADS_ENV}={value:?} is not a positive integer (not Unicode)")
    })?;
    if text.trim().is_empty() {
        return Ok((available, None));
    }
    match text.trim().parse::<usize>() {
        Ok(0) | Err(_) => Err(format!(
            "{NUM_THREADS_ENV}={text:?} is not a positive integer: set it to a thread count \
             from 1 to {available} (this machine's available parallelism), or unset it"
        )),
        Ok(t) if t > available => Ok((
            available,
            Some(format!(
                "{NUM_THREADS_ENV}={t} exceeds the available parallelism {available}; \
                 capped to {available} threads"
            )),
        )),
        Ok(t) => Ok((t, None)),
    }
}

/// Sets the number of threads large products run on, for the whole process (`1`: every
/// product runs on the calling thread). Results do not depend on it beyond floating-point
/// reassociation (the threads split the output; the backend may block a sum differently).
///
/// To get one thread: `set_num_threads(1)`, or `PHM_NN_NUM_THREADS=1` in the environment.
/// Unlike the environment variable, an explicit count is not capped at the available
/// parallelism (thread sweeps and oversubscription tests ask for what they mean).
///
/// # Panics
/// If `threads` is 0.
pub fn set_num_threads(threads: usize) {
    assert!(
        threads > 0,
        "set_num_threads: the thread count must be at least 1"
    );
    *NUM_THREADS.lock().unwrap_or_else(|e| e.into_inner()) = threads;
}

/// The SIMD instruction set the GEMM backend dispatches to on this CPU (detected at run time):
/// `"avx512f"`, `"avx2+fma"`, `"neon"` or `"portable"`.
///
/// The `gemm` crate (0.19) does not expose its choice: `gemm::gemm` calls
/// `gemm_f32::gemm::f32::get_gemm_fn()` (and the f64 twin), whose kernels live in private
/// modules. This function applies the crate's own rule, `init_gemm_fn` in
/// `gemm-common-0.19.0/src/gemm.rs` (lines 1011–1056, inside the `gemm_def!` macro): on x86, with the
/// `x86-v4` feature (which this crate's `Cargo.toml` always enables),
/// `is_x86_feature_detected!("avx512f")` picks the `avx512f` kernels; otherwise
/// `is_x86_feature_detected!("fma")` picks the `fma` kernels (the `V3` level: AVX2 + FMA);
/// otherwise the scalar ones. On aarch64, `neon` (the `experimental-apple-amx` feature, which
/// would pick AMX, is not enabled); elsewhere the scalar kernels.
pub fn simd_level() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            return "neon";
        }
    }
    "portable"
}

/// The pool for `threads` threads: `threads − 1` workers, since the calling thread always
/// computes one chunk itself ([`super::parallel`]); a worker more would only spin beside it
/// for a core (measured: about 7 % of a 2-thread tiny_lm step in a third thread's wake-ups
/// and spinning on 2 cores). Built on first use, rebuilt when the count changes.
pub(crate) fn pool(threads: usize) -> Option<Arc<rayon::ThreadPool>> {
    let slot = POOL.get_or_init(|| Mutex::new(None));
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    match slot.as_ref() {
        Some((t, p)) if *t == threads => Some(Arc::clone(p)),
        _ => {
            let p = Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads.saturating_sub(1).max(1))
                    .thread_name(|i| format!("phm-nn-gemm-{i}"))
                    .build()
                    .ok()?,
            );
            *slot = Some((threads, Arc::clone(&p)));
            Some(p)
        }
    }
}

/// Threads for a product of `work` multiply-adds: [`num_threads`] when it is at least the
/// threshold ([`set_parallel_min_work`]), else 1.
/// A product inside a pass already split across the pool (one chunk per thread) runs on its
/// chunk's thread.
fn threads_for(work: usize) -> usize {
    if work < MIN_WORK.load(Ordering::Relaxed) {
        return 1;
    }
    let threads = num_threads();
    if threads > 1 && super::parallel::in_pool(threads) {
        1
    } else {
        threads
    }
}

/// The crate's GEMM, public: `c ← alpha · a · b + beta · c` for `f32` or `f64` views of any
/// strides, on the same backend, small-product paths and threads as every layer (with
/// `beta = 0`, `c` is not read). For benchmarks and for users who want the same product.
///
/// ```
/// use ndarray::array;
/// let a = array![[1.0f32, 2.0], [3.0, 4.0]];
/// let mut c = array![[1.0f32, 1.0], [1.0, 1.0]];
/// phm_nn::kernels::matmul(1.0, a.view(), a.t(), 2.0, c.view_mut()); // c ← a aᵀ + 2c
/// assert_eq!(c, array![[7.0, 13.0], [13.0, 27.0]]);
/// ```
///
/// # Panics
/// If the shapes are not `(m, k)·(k, n) → (m, n)`.
#[track_caller]
pub fn matmul<F: Float>(
    alpha: F,
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    beta: F,
    mut c: ArrayViewMut2<'_, F>,
) {
    assert!(
        a.ncols() == b.nrows() && c.dim() == (a.nrows(), b.ncols()),
        "matmul: shapes {:?} · {:?} → {:?} do not fit",
        a.shape(),
        b.shape(),
        c.shape()
    );
    gemm(alpha, &a, &b, beta, &mut c);
}

/// `c ← alpha · a · b + beta · c`, for any strides (negative ones are copied first). With
/// `beta = 0`, `c` is not read (NaN in it is ignored).
///
/// Everything runs on the `gemm` crate's kernels (SIMD chosen at run time). A product of at
/// least the threshold of [`set_parallel_min_work`] multiply-adds is split into
/// [`num_threads`] contiguous blocks of `c` (columns when `n ≥ m`, else rows), each computed
/// on one thread of the pool: a thread packs only its share of the split operand and never
/// waits for another inside the product.
///
/// One layout is steered: a row-major output by a column-major `b` (a weight `W` stored
/// `(out, in)` and read as `Wᵀ`, as in `Y = X Wᵀ`), with few rows (`2·m·(k + n) < k·n`: packing
/// the input and copying the output cost less than half of packing the weight) and an inner
/// dimension of at least [`STEER_MIN_K`], is computed into a column-major
/// temporary of `m × n` values and copied back. With the row-major output the backend
/// transposes the problem (`Cᵀ = Bᵀ Aᵀ`, its kernels write column-major) and `Bᵀ = W`
/// becomes its left operand, which it packs from rows `k` apart (a gather at a stride of a
/// whole row, 4 KiB for `k = 1024` f32: every row of a panel in the same cache set) on every
/// call, to use each entry only `m` times. With a column-major output the weight is the
/// right operand, read in place along its contiguous rows, and only the `m × k` input is
/// packed. Measured with `bench_report -- --layouts` (1024² and 4096 → 1024, f32, one
/// AVX-512 core): 0.3–0.7× the rate of the column-major output for 16–128 rows before; from
/// 256 rows of 1024 on both run at the same rate, and the copy is not worth it. Steering
/// every `m < n` also slowed the factored kernel's `128 × 256 · 256` products (`bench_report
/// -- --key`, 1024², batch 32, n = 4 inference: 0.73–0.78 ms → 0.90–1.29 ms), hence the
/// cost rule.
///
/// # Panics
/// If the shapes are not `(m, k)·(k, n) → (m, n)` (callers check shapes first).
#[inline]
pub(crate) fn gemm<F: Float>(
    alpha: F,
    a: &ArrayView2<F>,
    b: &ArrayView2<F>,
    beta: F,
    c: &mut ArrayViewMut2<F>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert_eq!(k, b.nrows(), "gemm: inner dimensions differ");
    assert_eq!(c.dim(), (m, n), "gemm: output shape differs");
    // Only a right operand read along its columns (a weight stored `(out, in)` and read as
    // `Wᵀ`): each thread then reads whole contiguous rows of `W`. Split by columns, a
    // row-major right operand (`dX = G·W` at batch 1) ran slower on 2 threads than on one
    // (`bench_report -- --layouts`: 14.0 → 8.8 GFLOP/s at 1024²).
    let weight_reads = if b.strides()[0] == 1 {
        k.saturating_mul(n).saturating_mul(WORK_PER_WEIGHT_ENTRY)
    } else {
        0
    };
    let threads = threads_for(m.saturating_mul(n).saturating_mul(k).max(weight_reads));
    if threads > 1 {
        // Each thread computes a block of the output on its own: it packs only its share of
        // the operand that is split, and no thread waits for another inside the product.
        if n >= m {
            super::parallel::for_each_chunk(c.view_mut(), Axis(1), usize::MAX, |j, mut c| {
                let b = b.slice(s![.., j..j + c.ncols()]);
                gemm_on_this_thread(alpha, a, &b, beta, &mut c);
            });
        } else {
            super::parallel::for_each_chunk(c.view_mut(), Axis(0), usize::MAX, |i, mut c| {
                let a = a.slice(s![i..i + c.nrows(), ..]);
                gemm_on_this_thread(alpha, &a, b, beta, &mut c);
            });
        }
    } else {
        gemm_on_this_thread(alpha, a, b, beta, c);
    }
}

/// [`gemm`] on the calling thread: the steered layout (see [`gemm`]) or the backend.
fn gemm_on_this_thread<F: Float>(
    alpha: F,
    a: &ArrayView2<F>,
    b: &ArrayView2<F>,
    beta: F,
    c: &mut ArrayViewMut2<F>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    if transposed_weight_layout(m, k, n, b.strides(), c.strides()) {
        with_scratch(m * n, |buf: &mut [F]| {
            let mut tmp = ArrayViewMut2::from_shape((m, n).f(), buf).expect("m·n values");
            packed_gemm(alpha, a, b, F::zero(), &mut tmp);
            if beta.is_zero() {
                c.assign(&tmp);
            } else {
                c.zip_mut_with(&tmp, |ci, &t| *ci = t + beta * *ci);
            }
        });
    } else {
        packed_gemm(alpha, a, b, beta, c);
    }
}

/// Values up to which the temporary of a steered product is kept for the next one (per
/// thread): 4 MiB of f32. Larger ones are allocated for the call.
const SCRATCH_MAX: usize = 1 << 20;

thread_local! {
    /// The temporary of steered f32 products on this thread.
    static SCRATCH_F32: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The temporary of steered f64 products on this thread.
    static SCRATCH_F64: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` values of scratch (contents unspecified): this thread's reused buffer
/// for up to [`SCRATCH_MAX`] values, a fresh one for more (or if the buffer is in use).
fn with_scratch<F: Float, R>(len: usize, f: impl FnOnce(&mut [F]) -> R) -> R {
    fn reuse<T: 'static, F: Float, R, G: FnOnce(&mut [F]) -> R>(
        cell: &std::cell::RefCell<Vec<T>>,
        len: usize,
        f: G,
    ) -> Result<R, G> {
        let Ok(mut buf) = cell.try_borrow_mut() else {
            return Err(f);
        };
        let Some(buf) = (&mut *buf as &mut dyn std::any::Any).downcast_mut::<Vec<F>>() else {
            return Err(f);
        };
        if buf.len() < len {
            buf.resize(len, F::zero());
        }
        Ok(f(&mut buf[..len]))
    }
    let f = if len > SCRATCH_MAX {
        f
    } else if std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>() {
        match SCRATCH_F32.with(|cell| reuse(cell, len, f)) {
            Ok(r) => return r,
            Err(f) => f,
        }
    } else {
        match SCRATCH_F64.with(|cell| reuse(cell, len, f)) {
            Ok(r) => return r,
            Err(f) => f,
        }
    };
    f(&mut vec![F::zero(); len])
}

/// Whether [`gemm`] computes a product into a column-major temporary: a row-major output
/// (`c` columns contiguous), a column-major `b` (rows contiguous, columns apart: a weight
/// read transposed), `2·m·(k + n) < k·n` and an inner dimension of at least
/// [`STEER_MIN_K`].
fn transposed_weight_layout(
    m: usize,
    k: usize,
    n: usize,
    b_strides: &[isize],
    c_strides: &[isize],
) -> bool {
    2 * m * (k + n) < k * n
        && k >= STEER_MIN_K
        && b_strides[0] == 1
        && b_strides[1].unsigned_abs() > 1
        && c_strides[1] == 1
}

/// `buf` resized to `dim` (reallocated only when the shape changes; contents unspecified).
pub(crate) fn reuse<F: Float>(buf: &mut Array2<F>, dim: (usize, usize)) -> &mut Array2<F> {
    if buf.dim() != dim {
        *buf = Array2::zeros(dim);
    }
    buf
}

/// Panics with a message naming both shapes unless `got` has `expected` columns.
#[track_caller]
#[inline]
pub(crate) fn assert_cols(context: &str, what: &str, got: &[usize], expected_cols: usize) {
    if got.len() != 2 || got[1] != expected_cols {
        panic!("{context}: {what} has shape {got:?}, expected [batch, {expected_cols}]");
    }
}

/// Panics with a message naming both shapes unless they are equal.
#[track_caller]
#[inline]
pub(crate) fn assert_same_shape(context: &str, what: &str, got: &[usize], expected: &[usize]) {
    if got != expected {
        panic!("{context}: {what} has shape {got:?}, expected {expected:?}");
    }
}

/// Fills every row of `y` with `bias` and returns the `beta` a following GEMM must use to keep
/// it (`1`), or returns `0` when there is no bias.
pub(crate) fn init_output<F: Float>(y: &mut ArrayViewMut2<F>, bias: Option<&ArrayView1<F>>) -> F {
    let Some(b) = bias else {
        return F::zero();
    };
    let b = b.as_standard_layout();
    // Rows split across the pool; a contiguous row is one copy of the bias.
    let len = y.len();
    for_each_chunk(y.view_mut(), Axis(0), len, |_, mut rows| {
        for mut row in rows.rows_mut() {
            match (row.as_slice_mut(), b.as_slice()) {
                (Some(row), Some(b)) => row.copy_from_slice(b),
                _ => row.assign(&b),
            }
        }
    });
    F::one()
}

/// Adds the column sums of `g` (the bias gradient) into `db`, when given: columns split
/// across the pool, each summed over the rows in order (the same sums whatever the thread
/// count).
pub(crate) fn add_bias_grad<F: Float>(db: Option<ArrayViewMut1<F>>, g: &ArrayView2<F>) {
    let Some(db) = db else {
        return;
    };
    for_each_chunk(db, Axis(0), g.len(), |c0, mut db| {
        let cols = g.slice(s![.., c0..c0 + db.len()]);
        let mut sum = ndarray::Array1::<F>::zeros(db.len());
        for row in cols.rows() {
            sum += &row;
        }
        db += &sum;
    });
}

/// `Y = X Wᵀ + 1 bᵀ` for a dense weight `w` `(k, d)`, written into `y` `(B, k)`.
pub(crate) fn affine_forward_into<F: Float>(
    x: &ArrayView2<F>,
    w: &ArrayView2<F>,
    bias: Option<&ArrayView1<F>>,
    mut y: ArrayViewMut2<F>,
) {
    let beta = init_output(&mut y, bias);
    gemm(F::one(), x, &w.t(), beta, &mut y);
}

/// `Y = X Wᵀ + 1 bᵀ` for a dense weight `w` `(k, d)`.
pub(crate) fn affine_forward<F: Float>(
    x: &ArrayView2<F>,
    w: &ArrayView2<F>,
    bias: Option<&ArrayView1<F>>,
) -> Array2<F> {
    let mut y = buffer_pool::for_overwrite((x.nrows(), w.nrows()));
    affine_forward_into(x, w, bias, y.view_mut());
    y
}

/// Backward of [`affine_forward`] for the weight and input: `dw ← Gᵀ X + dw_beta · dw` (when
/// given) and returns `dX = G W`. The bias gradient is [`add_bias_grad`].
pub(crate) fn affine_backward<F: Float>(
    x: &ArrayView2<F>,
    w: &ArrayView2<F>,
    g: &ArrayView2<F>,
    dw: Option<ArrayViewMut2<F>>,
    dw_beta: F,
) -> Array2<F> {
    if let Some(mut dw) = dw {
        gemm(F::one(), &g.t(), x, dw_beta, &mut dw);
    }
    let mut dx = buffer_pool::for_overwrite((g.nrows(), w.ncols()));
    gemm(F::one(), g, w, F::zero(), &mut dx.view_mut());
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, ShapeBuilder};

    /// Deterministic small integers (every sum below is exact in f32 and f64, in any order).
    fn filled<F: Float>(rows: usize, cols: usize, col_major: bool, seed: usize) -> Array2<F> {
        let mut a = if col_major {
            Array2::zeros((rows, cols).f())
        } else {
            Array2::zeros((rows, cols))
        };
        for ((i, j), v) in a.indexed_iter_mut() {
            *v = F::of(((i * 7 + j * 13 + seed * 31) % 17) as f64 - 8.0);
        }
        a
    }

    /// `alpha · a · b + beta · c` by the definition.
    fn naive<F: Float>(
        alpha: F,
        a: &Array2<F>,
        b: &Array2<F>,
        beta: F,
        c: &Array2<F>,
    ) -> Array2<F> {
        Array2::from_shape_fn(c.dim(), |(i, j)| {
            let mut dot = F::zero();
            for l in 0..a.ncols() {
                dot += a[[i, l]] * b[[l, j]];
            }
            alpha * dot + beta * c[[i, j]]
        })
    }

    /// Every path of `gemm` (the steered transposed-weight layout, the backend's layouts,
    /// products split into row or column blocks across threads, matrix–vector) against the
    /// definition, at odd shapes, every operand layout, with alpha and beta, on 1, 2 and 3
    /// threads (every product threaded: threshold 0).
    fn paths_match_the_definition<F: Float>() {
        let shapes = [
            (1, 5, 7),
            (3, 4, 6),
            (5, 3, 1),
            (1, 67, 5),
            (3, 65, 17),
            (2, 130, 131),
            (7, 100, 33),
            (33, 70, 9),
            (64, 64, 64),
            (45, 3, 50),
        ];
        for threads in [1, 2, 3] {
            set_num_threads(threads);
            set_parallel_min_work(0);
            for &(m, k, n) in &shapes {
                for layout in 0..8 {
                    let (a_cm, b_cm, c_cm) = (layout & 1 != 0, layout & 2 != 0, layout & 4 != 0);
                    for (alpha, beta) in [(1.0, 0.0), (2.0, 1.0), (-0.5, 3.0)] {
                        let (alpha, beta) = (F::of(alpha), F::of(beta));
                        let a = filled::<F>(m, k, a_cm, 1);
                        let b = filled::<F>(k, n, b_cm, 2);
                        let mut c = filled::<F>(m, n, c_cm, 3);
                        let want = naive(alpha, &a, &b, beta, &c);
                        if beta.is_zero() {
                            c.fill(F::nan()); // beta = 0 must not read c
                        }
                        gemm(alpha, &a.view(), &b.view(), beta, &mut c.view_mut());
                        assert_eq!(
                            c, want,
                            "threads={threads} m={m} k={k} n={n} a_cm={a_cm} b_cm={b_cm} \
                             c_cm={c_cm} alpha={alpha} beta={beta}"
                        );
                    }
                }
            }
        }
        set_parallel_min_work(PARALLEL_MIN_WORK);
        set_num_threads(1);
    }

    /// The bias fill and the bias gradient, split across 1–3 threads (large enough to split),
    /// on row-major and column-major arrays, equal the definition (small integers: exact).
    #[test]
    fn bias_fill_and_bias_gradient_match_the_definition() {
        let (rows, cols) = (300, 130);
        let b = Array1::from_shape_fn(cols, |j| (j % 7) as f64 - 3.0);
        let g = filled::<f64>(rows, cols, false, 2);
        let g_cm = filled::<f64>(rows, cols, true, 2);
        // Split even small passes, so that the split paths are the ones checked.
        crate::kernels::set_elementwise_min_work(0);
        for threads in 1..=3 {
            set_num_threads(threads);
            for col_major in [false, true] {
                let mut y = filled::<f64>(rows, cols, col_major, 1);
                assert_eq!(init_output(&mut y.view_mut(), Some(&b.view())), 1.0);
                assert!(y.rows().into_iter().all(|r| r == b), "{threads} threads");
                assert_eq!(init_output(&mut y.view_mut(), None), 0.0);
            }
            for g in [&g, &g_cm] {
                let mut db = Array1::from_elem(cols, 0.5);
                add_bias_grad(Some(db.view_mut()), &g.view());
                let want = Array1::from_shape_fn(cols, |j| 0.5 + g.column(j).sum());
                assert_eq!(db, want, "{threads} threads");
            }
        }
        set_num_threads(1);
    }

    #[test]
    fn gemm_paths_match_the_definition_f32() {
        paths_match_the_definition::<f32>();
    }

    #[test]
    fn gemm_paths_match_the_definition_f64() {
        paths_match_the_definition::<f64>();
    }

    /// The steered layout is the one `Y = X Wᵀ` has (a weight stored `(out, in)` read
    /// transposed, a row-major output) with few rows, and only that one.
    #[test]
    fn the_transposed_weight_layout_is_steered() {
        let x = Array2::<f32>::zeros((16, 1024));
        let w = Array2::<f32>::zeros((1024, 1024));
        let w_t = Array2::<f32>::zeros((1024, 1024));
        let y = Array2::<f32>::zeros((16, 1024));
        let y_f = Array2::<f32>::zeros((16, 1024).f());
        let steered = |a: &Array2<f32>, b: ndarray::ArrayView2<f32>, c: &Array2<f32>| {
            transposed_weight_layout(a.nrows(), a.ncols(), b.ncols(), b.strides(), c.strides())
        };
        assert!(steered(&x, w.t(), &y), "X Wᵀ into a row-major Y");
        assert!(!steered(&x, w_t.view(), &y), "a row-major right operand");
        assert!(!steered(&x, w.t(), &y_f), "a column-major output");
        let x_many = Array2::<f32>::zeros((1024, 1024));
        let y_many = Array2::<f32>::zeros((1024, 1024));
        assert!(!steered(&x_many, w.t(), &y_many), "as many rows as columns");
        let x_256 = Array2::<f32>::zeros((256, 1024));
        let y_256 = Array2::<f32>::zeros((256, 1024));
        assert!(
            !steered(&x_256, w.t(), &y_256),
            "a quarter as many rows as columns"
        );
        let x_255 = Array2::<f32>::zeros((255, 1024));
        let y_255 = Array2::<f32>::zeros((255, 1024));
        assert!(steered(&x_255, w.t(), &y_255), "fewer");
        let w_short = Array2::<f32>::zeros((1024, 32));
        let x_short = Array2::<f32>::zeros((16, 32));
        assert!(
            !steered(&x_short, w_short.t(), &y),
            "a short inner dimension"
        );
    }
}
