//! The one GEMM entry point every layer and kernel goes through, the thread count it uses,
//! and the one shape check that `forward`/`backward` use for programmer errors.
//!
//! Products run on the `gemm` crate's packed kernels ([`gemm_backend`](super::gemm_backend),
//! the crate's only `unsafe`), which choose their SIMD code at run time: AVX-512, AVX2/FMA,
//! NEON or a portable fallback ([`simd_level`] says which). A product of at least
//! [`PARALLEL_MIN_WORK`] multiply-adds runs on [`num_threads`] threads; smaller ones run on the
//! calling thread, where threads cost more than they gain.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, ShapeBuilder};

use crate::kernels::gemm_backend::packed_gemm;
use crate::Float;

/// Rows of `a` up to which [`gemm`] computes a product with a weight into a column-major
/// temporary (the batch-1 path).
const FEW_ROWS: usize = 8;

/// Inner dimension from which the few-rows path applies (shorter products: the packing it
/// saves is small).
const FEW_ROWS_MIN_K: usize = 64;

/// Default multiply-adds (`m·n·k`) from which a product runs on several threads (when
/// [`num_threads`] > 1); [`set_parallel_min_work`] changes it. Measured with
/// `bench_report -- --threads-sweep` on an idle 2-core AVX-512 machine: up to 34 M
/// multiply-adds (32×1024×1024) two threads were 0.5–0.8× as fast as one, from 67 M
/// (256×512×512) 1.2–1.5× faster (see `BENCHMARKS.md`, "Threads, measured idle").
pub const PARALLEL_MIN_WORK: usize = 1 << 26;

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

/// The pool of `threads` threads (built on first use, rebuilt when the count changes).
pub(crate) fn pool(threads: usize) -> Option<Arc<rayon::ThreadPool>> {
    let slot = POOL.get_or_init(|| Mutex::new(None));
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    match slot.as_ref() {
        Some((t, p)) if *t == threads => Some(Arc::clone(p)),
        _ => {
            let p = Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
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
/// Everything runs on the `gemm` crate's kernels (SIMD chosen at run time), on
/// [`num_threads`] threads when the product has at least the threshold of
/// [`set_parallel_min_work`] multiply-adds. One layout is steered: a product with at most
/// [`FEW_ROWS`] rows of `a` (batch 1, or the `n` segments of one sample) by a `b` with
/// contiguous columns (a weight `W` read as `Wᵀ`) and an inner dimension of at least
/// [`FEW_ROWS_MIN_K`] is computed into a column-major temporary of `m × n` values. With a
/// row-major output the backend would transpose the problem and copy (pack) the whole weight
/// before using each entry once; with a column-major one it reads the weight in place
/// (12–25 % less CPU time at batch 1, 1024² and 4096², measured with `perf stat`; see
/// `BENCHMARKS.md`).
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
    let threads = threads_for(m.saturating_mul(n).saturating_mul(k));
    let few = (1..=FEW_ROWS).contains(&m) && n > 1 && k >= FEW_ROWS_MIN_K && b.strides()[0] == 1;
    let run = |c: &mut ArrayViewMut2<F>, beta: F| match (threads > 1).then(|| pool(threads)) {
        Some(Some(p)) => p.install(|| packed_gemm(alpha, a, b, beta, c, threads)),
        _ => packed_gemm(alpha, a, b, beta, c, 1),
    };
    if few {
        let mut tmp = Array2::<F>::zeros((m, n).f());
        run(&mut tmp.view_mut(), F::zero());
        if beta.is_zero() {
            c.assign(&tmp);
        } else {
            c.zip_mut_with(&tmp, |ci, &t| *ci = t + beta * *ci);
        }
    } else {
        run(c, beta);
    }
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
    match bias {
        Some(b) => {
            y.assign(b);
            F::one()
        }
        None => F::zero(),
    }
}

/// Adds the column sums of `g` (the bias gradient) into `db`, when given.
pub(crate) fn add_bias_grad<F: Float>(db: Option<ArrayViewMut1<F>>, g: &ArrayView2<F>) {
    if let Some(mut db) = db {
        db += &g.sum_axis(Axis(0));
    }
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
    let mut y = Array2::zeros((x.nrows(), w.nrows()));
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
    let mut dx = Array2::zeros((g.nrows(), w.ncols()));
    gemm(F::one(), g, w, F::zero(), &mut dx.view_mut());
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ShapeBuilder;

    fn filled(rows: usize, cols: usize, col_major: bool, seed: usize) -> Array2<f64> {
        let mut a = if col_major {
            Array2::zeros((rows, cols).f())
        } else {
            Array2::zeros((rows, cols))
        };
        for ((i, j), v) in a.indexed_iter_mut() {
            *v = ((i * 7 + j * 13 + seed * 31) % 17) as f64 - 8.0;
        }
        a
    }

    /// Products threaded on 2 threads (the threshold set to 0 for the call; few rows and
    /// many) give the same result as on 1 thread, equal to the definition (small integers:
    /// every sum is exact).
    #[test]
    fn threaded_products_match_one_thread() {
        for (m, k, n) in [(4, 1024, 1024), (64, 256, 512)] {
            let a = filled(m, k, false, 1);
            let b = filled(k, n, true, 2);
            let mut want = Array2::<f64>::zeros((m, n));
            for i in 0..m {
                for j in 0..n {
                    want[[i, j]] = (0..k).map(|l| a[[i, l]] * b[[l, j]]).sum();
                }
            }
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            let mut c2 = Array2::<f64>::zeros((m, n));
            set_parallel_min_work(0);
            pool.install(|| gemm(1.0, &a.view(), &b.view(), 0.0, &mut c2.view_mut()));
            set_parallel_min_work(PARALLEL_MIN_WORK);
            assert_eq!(c2, want, "entry point, threaded, m={m}");
            let mut c1 = Array2::<f64>::zeros((m, n));
            gemm(1.0, &a.view(), &b.view(), 0.0, &mut c1.view_mut());
            assert_eq!(c1, want, "entry point, m={m}");
            let mut c3 = Array2::<f64>::zeros((m, n));
            pool.install(|| packed_gemm(1.0, &a.view(), &b.view(), 0.0, &mut c3.view_mut(), 2));
            assert_eq!(c3, want, "packed, 2 threads");
        }
    }

    /// Every path of `gemm` (few rows, packed, matrix–vector) against a plain triple loop,
    /// with alpha and beta.
    #[test]
    fn gemm_branches_match_the_definition() {
        for (m, k, n) in [
            (1, 5, 7),
            (2, 5, 7),
            (3, 4, 6),
            (1, 1, 6),
            (4, 1, 3),
            (5, 3, 1),
        ] {
            for (a_cm, b_cm) in [(false, false), (false, true), (true, false), (true, true)] {
                for (alpha, beta) in [(1.0, 0.0), (2.0, 1.0), (-0.5, 3.0)] {
                    let a = filled(m, k, a_cm, 1);
                    let b = filled(k, n, b_cm, 2);
                    let mut c = filled(m, n, false, 3);
                    let mut want = c.clone();
                    for i in 0..m {
                        for j in 0..n {
                            let dot: f64 = (0..k).map(|l| a[[i, l]] * b[[l, j]]).sum();
                            want[[i, j]] = alpha * dot + beta * want[[i, j]];
                        }
                    }
                    gemm(alpha, &a.view(), &b.view(), beta, &mut c.view_mut());
                    assert_eq!(c, want, "m={m} k={k} n={n} a_cm={a_cm} b_cm={b_cm}");
                }
            }
        }
    }
}
