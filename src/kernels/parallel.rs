//! The crate's one thread pool, for the work that is not a GEMM: element-wise and
//! normalisation passes over rows, images of a convolution's lowering, heads of attention,
//! parameters of an optimizer update.
//!
//! A pass of `work` elementary operations is split into at most [`num_threads`] contiguous
//! chunks along one axis and run on the pool the GEMMs use; below
//! [`ELEMENTWISE_MIN_WORK`] operations ([`set_elementwise_min_work`]; or with one thread) it
//! runs whole on the calling thread, where waking a thread would cost more than it saves. Chunks are contiguous and
//! each element is computed by exactly one chunk. A pass that only writes its own chunk gives
//! the same result on any thread count; one that sums partial results per chunk (a
//! convolution's kernel gradient) adds them in chunk order, so it is deterministic for a
//! given thread count but may differ from one thread by rounding. Work started inside a
//! chunk (a GEMM, a nested pass) runs whole on that chunk's thread.
//!
//! ```text
//!     view ──split along axis──► [0, s₁) [s₁, s₂) … [s_{t-1}, len)    t ≤ num_threads()
//! ```
//!

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ndarray::{ArrayViewMut, Axis, Dimension};

use super::gemm::{num_threads, pool};

/// Default elementary operations from which an element-wise, normalisation, image, head or
/// parameter pass is split across threads (when [`num_threads`] > 1): 2²⁰, a few hundred
/// microseconds of element-wise work. Waking a pool thread and sending it back to sleep costs
/// tens of microseconds on a virtual machine; with 2¹⁵ a `tiny_lm` training step made so many
/// small hand-offs that about a tenth of its time at 2 threads went to the kernel's scheduler
/// (`perf`), and 2²⁰ made the step 3–10 % faster (`examples/profile_lm`, 2-core AVX-512 VM;
/// 2¹⁹–2²¹ were alike). Since a worker stays awake between passes (`run`), the threshold
/// matters less: 2¹⁵, 2¹⁷ and 2²⁰ gave the same 2-thread step (17.4–18.9 ms, alternated
/// `profile_lm dense` runs). [`set_elementwise_min_work`] changes it.
pub const ELEMENTWISE_MIN_WORK: usize = 1 << 20;

/// The threshold in force (see [`ELEMENTWISE_MIN_WORK`]).
static MIN_WORK: AtomicUsize = AtomicUsize::new(ELEMENTWISE_MIN_WORK);

/// Sets the elementary operations from which a pass that is not a product is split across
/// threads (default [`ELEMENTWISE_MIN_WORK`]), for the whole process; `0` splits every pass
/// of two or more items, `usize::MAX` none. Results do not depend on it, only speed does: a
/// split pass computes each entry on one thread exactly as the whole pass would (a
/// convolution's kernel gradient, summed per chunk of images, may differ by rounding).
///
/// ```
/// phm_nn::kernels::set_elementwise_min_work(1 << 16); // split smaller passes
/// phm_nn::kernels::set_elementwise_min_work(phm_nn::kernels::ELEMENTWISE_MIN_WORK);
/// ```
pub fn set_elementwise_min_work(work: usize) {
    MIN_WORK.store(work, Ordering::Relaxed);
}

/// How many chunks a pass of `work` operations over `len` independent items is split into:
/// 1 when the work is small, there is one thread, or the calling thread is already one of
/// the pool's (a pass inside a parallel pass runs whole on its thread).
pub(crate) fn parts_for(work: usize, len: usize) -> usize {
    if work < MIN_WORK.load(Ordering::Relaxed) || len < 2 {
        return 1;
    }
    let threads = num_threads();
    if threads < 2 || in_pool(threads) {
        return 1;
    }
    threads.min(len)
}

thread_local! {
    /// Whether the calling thread is running a chunk of a split pass.
    static IN_CHUNK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is running a chunk of a split pass, or is a worker of the pool
/// of `threads` threads (a GEMM threaded on the pool): work started there must not split
/// again.
pub(crate) fn in_pool(threads: usize) -> bool {
    IN_CHUNK.with(|c| c.get()) || pool(threads).is_some_and(|p| p.current_thread_index().is_some())
}

/// Runs `f` with the calling thread marked as running a chunk (restored afterwards, also on
/// panic).
fn as_chunk<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_CHUNK.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(IN_CHUNK.with(|c| c.replace(true)));
    f()
}

/// The start of chunk `i` of `parts` over `len` items (the first `len % parts` chunks get
/// one more item).
fn chunk_start(len: usize, parts: usize, i: usize) -> usize {
    let base = len / parts;
    let extra = len % parts;
    i * base + i.min(extra)
}

/// Runs `f(start, chunk)` over `view` split along `axis` into contiguous chunks (`start` =
/// the chunk's first index along `axis`), on the pool when `work` is large enough
/// ([`parts_for`]), else once on the calling thread with the whole view.
pub(crate) fn for_each_chunk<A, D, Fun>(
    view: ArrayViewMut<'_, A, D>,
    axis: Axis,
    work: usize,
    f: Fun,
) where
    A: Send,
    D: Dimension,
    Fun: Fn(usize, ArrayViewMut<'_, A, D>) + Sync,
{
    let len = view.len_of(axis);
    let parts = parts_for(work, len);
    if parts == 1 {
        f(0, view);
        return;
    }
    let mut chunks = Vec::with_capacity(parts);
    let mut rest = view;
    for i in 1..parts {
        let at = chunk_start(len, parts, i) - chunk_start(len, parts, i - 1);
        let (head, tail) = rest.split_at(axis, at);
        chunks.push((chunk_start(len, parts, i - 1), head));
        rest = tail;
    }
    chunks.push((chunk_start(len, parts, parts - 1), rest));
    run(chunks, |(start, chunk)| f(start, chunk));
}

/// [`for_each_chunk`] over two views of the same length along `axis`, split at the same
/// indices: `f(start, a_chunk, b_chunk)`.
///
/// # Panics
/// If the views differ in length along `axis`.
pub(crate) fn for_each_chunk2<A, B, DA, DB, Fun>(
    a: ArrayViewMut<'_, A, DA>,
    b: ArrayViewMut<'_, B, DB>,
    axis: Axis,
    work: usize,
    f: Fun,
) where
    A: Send,
    B: Send,
    DA: Dimension,
    DB: Dimension,
    Fun: Fn(usize, ArrayViewMut<'_, A, DA>, ArrayViewMut<'_, B, DB>) + Sync,
{
    let len = a.len_of(axis);
    assert_eq!(len, b.len_of(axis), "for_each_chunk2: lengths differ");
    let parts = parts_for(work, len);
    if parts == 1 {
        f(0, a, b);
        return;
    }
    let mut chunks = Vec::with_capacity(parts);
    let (mut rest_a, mut rest_b) = (a, b);
    for i in 1..parts {
        let at = chunk_start(len, parts, i) - chunk_start(len, parts, i - 1);
        let (ha, ta) = rest_a.split_at(axis, at);
        let (hb, tb) = rest_b.split_at(axis, at);
        chunks.push((chunk_start(len, parts, i - 1), ha, hb));
        rest_a = ta;
        rest_b = tb;
    }
    chunks.push((chunk_start(len, parts, parts - 1), rest_a, rest_b));
    run(chunks, |(start, ca, cb)| f(start, ca, cb));
}

/// How long the calling thread of a split pass spins for the pool's chunks to finish after
/// its own, before it blocks (the chunks are equal, so the others usually finish within
/// microseconds; blocking and being woken costs tens of microseconds on a virtual machine).
const SPIN_FOR_CHUNKS: Duration = Duration::from_micros(200);

/// How long a pool worker stays awake looking for the next chunk after a split pass, before
/// it goes back to sleep (see [`keep_workers_awake`]).
const LINGER: Duration = Duration::from_micros(1000);

/// Runs `f` on every task: the first on the calling thread, the others on the pool of
/// [`num_threads`] threads (the one pool, whatever the number of tasks; all on the calling
/// thread if the pool cannot be built).
///
/// Hand-offs are what a split pass pays beyond its work: a training step makes hundreds of
/// them, and waking a sleeping worker (and being woken by it) costs tens of microseconds of
/// the kernel's scheduler each. So the calling thread spins for up to [`SPIN_FOR_CHUNKS`]
/// for the other chunks before blocking, and the workers stay awake for [`LINGER`] after the
/// pass ([`keep_workers_awake`]), where the next pass finds them without a wake-up.
fn run<T: Send, Fun: Fn(T) + Sync>(tasks: Vec<T>, f: Fun) {
    let Some(pool) = pool(num_threads()) else {
        tasks.into_iter().for_each(f);
        return;
    };
    let f = &f;
    let others = tasks.len().saturating_sub(1);
    let finished = AtomicUsize::new(0);
    let finished = &finished;
    pool.in_place_scope(|scope| {
        let mut tasks = tasks.into_iter();
        let first = tasks.next();
        for task in tasks {
            scope.spawn(move |_| {
                as_chunk(|| f(task));
                finished.fetch_add(1, Ordering::Release);
            });
        }
        if let Some(task) = first {
            as_chunk(|| f(task));
        }
        let start = Instant::now();
        while finished.load(Ordering::Acquire) < others && start.elapsed() < SPIN_FOR_CHUNKS {
            std::hint::spin_loop();
        }
    });
    keep_workers_awake(&pool);
}

/// Whether a [`keep_workers_awake`] job is queued or running.
static LINGERING: AtomicBool = AtomicBool::new(false);

/// Queues one job on `pool` (unless one is already there) that keeps its worker awake: it
/// runs the pool's pending jobs as they come ([`rayon::yield_now`]) and returns once it has
/// found none for [`LINGER`]. A pass that starts meanwhile finds the worker awake, so
/// handing it a chunk costs no wake-up. The worker spins on its own core meanwhile, as
/// OpenMP runtimes do between parallel regions (`OMP_WAIT_POLICY`); one thread per pass
/// (the calling one) is never kept.
fn keep_workers_awake(pool: &rayon::ThreadPool) {
    if LINGERING.swap(true, Ordering::AcqRel) {
        return;
    }
    pool.spawn(|| {
        let mut last_work = Instant::now();
        while last_work.elapsed() < LINGER {
            match rayon::yield_now() {
                Some(rayon::Yield::Executed) => last_work = Instant::now(),
                _ => std::hint::spin_loop(),
            }
        }
        LINGERING.store(false, Ordering::Release);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// Inside every chunk, including the one the calling thread runs, work does not split
    /// again; outside, it may. (Called from the one test that sets the process-wide thread
    /// count, so that no other test changes it meanwhile.)
    fn chunks_do_not_split_again() {
        crate::kernels::set_num_threads(2);
        assert_eq!(parts_for(usize::MAX, 8), 2);
        let mut a = Array2::<usize>::zeros((8, 3));
        for_each_chunk(a.view_mut(), Axis(0), usize::MAX, |_, mut chunk| {
            chunk.fill(parts_for(usize::MAX, 8));
        });
        assert!(a.iter().all(|&p| p == 1), "{a:?}");
        assert_eq!(parts_for(usize::MAX, 8), 2);
        crate::kernels::set_num_threads(1);
    }

    /// Passes back to back, with pauses shorter and longer than [`LINGER`] between them (so
    /// that chunks reach a worker that is kept awake, one going back to sleep, and one
    /// asleep), each write every index once; and the kept-awake worker does go back to sleep.
    fn back_to_back_passes_and_the_worker_sleeps_again() {
        crate::kernels::set_num_threads(2);
        for (round, pause_us) in [0, 0, 300, 900, 1100, 3000, 0, 50].into_iter().enumerate() {
            let mut a = Array2::<usize>::zeros((64, 5));
            for_each_chunk(a.view_mut(), Axis(0), usize::MAX, |start, mut chunk| {
                for ((i, j), v) in chunk.indexed_iter_mut() {
                    *v += (start + i) * 10 + j + round;
                }
            });
            for ((i, j), &v) in a.indexed_iter() {
                assert_eq!(v, i * 10 + j + round, "round {round}");
            }
            std::thread::sleep(Duration::from_micros(pause_us));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while LINGERING.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            !LINGERING.load(Ordering::Acquire),
            "the pool worker is still kept awake 5 s after the last pass"
        );
        crate::kernels::set_num_threads(1);
    }

    #[test]
    fn chunks_cover_every_index_once() {
        for (len, parts) in [(1, 1), (5, 2), (7, 3), (64, 2), (3, 3)] {
            let mut seen = vec![0; len];
            for i in 0..parts {
                let end = if i + 1 == parts {
                    len
                } else {
                    chunk_start(len, parts, i + 1)
                };
                (chunk_start(len, parts, i)..end).for_each(|j| seen[j] += 1);
            }
            assert!(seen.iter().all(|&s| s == 1), "len={len} parts={parts}");
        }
    }

    /// Every element is written once with its own global index, whether the pass runs on
    /// one thread or is split (threshold passed), along either axis; and chunks do not split
    /// again.
    #[test]
    fn split_passes_see_global_indices() {
        chunks_do_not_split_again();
        back_to_back_passes_and_the_worker_sleeps_again();
        for threads in [1, 2, 3] {
            crate::kernels::set_num_threads(threads);
            for axis in [Axis(0), Axis(1)] {
                let mut a = Array2::<i64>::zeros((37, 29));
                for_each_chunk(a.view_mut(), axis, usize::MAX, |start, mut chunk| {
                    for ((i, j), v) in chunk.indexed_iter_mut() {
                        let (gi, gj) = if axis == Axis(0) {
                            (start + i, j)
                        } else {
                            (i, start + j)
                        };
                        *v += (gi * 100 + gj) as i64 + 1;
                    }
                });
                for ((i, j), &v) in a.indexed_iter() {
                    assert_eq!(v, (i * 100 + j) as i64 + 1, "threads={threads} {axis:?}");
                }
                let mut b = Array2::<i64>::zeros((37, 29));
                for_each_chunk2(
                    b.view_mut(),
                    a.view_mut(),
                    axis,
                    usize::MAX,
                    |start, mut cb, ca| {
                        for ((i, j), v) in cb.indexed_iter_mut() {
                            let (gi, gj) = if axis == Axis(0) {
                                (start + i, j)
                            } else {
                                (i, start + j)
                            };
                            assert_eq!(ca[[i, j]], (gi * 100 + gj) as i64 + 1);
                            *v = ca[[i, j]] * 10;
                        }
                    },
                );
                assert_eq!(b, &a * 10);
            }
        }
        crate::kernels::set_num_threads(1);
    }
}
