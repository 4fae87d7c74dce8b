//! The inference path allocates no `k × d` array where it runs factored (Auto at small
//! batches, `Strategy::Factored` always), and `infer_into` allocates nothing of its own once
//! its workspace has grown. Measured with a counting global allocator.
//!
//! The GEMM library (the `gemm` crate) allocates packing buffers on some calls, of at most
//! about 1.1 MB for these f32 shapes, and once per thread a scratch the size of the L2 cache
//! (warmed up below before measuring); allocations up to that bound are the library's,
//! anything larger would be ours.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::Array2;
use phm_nn::{Module, PhmLinear, PhmLinearConfig, Strategy, Workspace};

/// Counts allocations and remembers the largest one (bytes) on this process.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        LARGEST.fetch_max(layout.size(), Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The per-call packing bound (first set for matrixmultiply: KC = 256, MC = 64, NC = 1024 f32
/// values plus alignment, rounded up); the `gemm` crate's per-call buffers for these shapes
/// stay within it.
const PACKING_BOUND: usize = 1_200_000;

/// Runs `f` and returns (allocations, largest allocation in bytes) made meanwhile.
/// Tests in this file run one at a time (see `main`-like serialization below).
fn measure(f: impl FnOnce()) -> (usize, usize) {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    LARGEST.store(0, Ordering::SeqCst);
    f();
    (
        ALLOCATIONS.load(Ordering::SeqCst),
        LARGEST.load(Ordering::SeqCst),
    )
}

/// One test function so the global counters are not shared between concurrent tests.
#[test]
fn inference_memory() {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let (d, k, n) = (1024, 1024, 4);
    let weight_bytes = k * d * std::mem::size_of::<f32>();
    let layer: PhmLinear<f32> = PhmLinearConfig::new(d, k, n).init(&mut rng).unwrap();
    // The GEMM backend's one-time per-thread scratch (L2-cache sized) is not a per-call cost.
    layer.infer(Array2::<f32>::ones((64, d)).view().into_dyn());
    for batch in [1, 8, 64] {
        let x = Array2::<f32>::ones((batch, d));
        let (_, largest) = measure(|| {
            let y = layer.infer(x.view().into_dyn());
            assert_eq!(y.shape(), &[batch, k]);
        });
        // The biggest buffer is T (B·n·k floats) or a packing buffer, never W.
        assert!(
            largest < weight_bytes,
            "batch {batch}: infer allocated {largest} bytes"
        );
        assert!(
            largest <= (batch * n * k * 4).max(PACKING_BOUND),
            "batch {batch}: {largest} bytes"
        );
    }

    // An expanding layer (k > d) mixes its inputs instead: same guarantee.
    let wide: PhmLinear<f32> = PhmLinearConfig::new(256, 2048, n).init(&mut rng).unwrap();
    let x_wide = Array2::<f32>::ones((8, 256));
    let (_, largest) = measure(|| {
        wide.infer(x_wide.view().into_dyn());
    });
    assert!(
        largest < 256 * 2048 * 4,
        "expanding layer: infer allocated {largest} bytes"
    );

    // infer_into: after a first call sizes the workspace, nothing but packing buffers. At
    // batch 256, T alone would be 4 MiB: a per-call T or output would exceed the bound.
    let batch = 256;
    assert!(batch * n * k * 4 > PACKING_BOUND);
    let mut ws = Workspace::new();
    let x = Array2::<f32>::ones((batch, d));
    let mut y = Array2::<f32>::zeros((batch, k));
    layer.infer_into(x.view(), y.view_mut(), &mut ws);
    let capacity = ws.capacity();
    assert!(capacity >= batch * n * k);
    let (_, largest) = measure(|| {
        for _ in 0..3 {
            layer.infer_into(x.view(), y.view_mut(), &mut ws);
        }
    });
    assert!(
        largest <= PACKING_BOUND,
        "infer_into allocated {largest} bytes on the hot path"
    );
    assert_eq!(ws.capacity(), capacity);
    assert_eq!(y.into_dyn(), layer.infer(x.view().into_dyn()));
    // Smaller batches reuse the same workspace.
    let x1 = Array2::<f32>::ones((1, d));
    let mut y1 = Array2::<f32>::zeros((1, k));
    let (_, largest) = measure(|| layer.infer_into(x1.view(), y1.view_mut(), &mut ws));
    assert!(largest <= PACKING_BOUND, "{largest} bytes");
    assert_eq!(ws.capacity(), capacity);

    // Forcing the factored kernel never holds W, at a batch where building it for the call
    // would pay (1024 rows: W is 4 MiB, the output 4 MiB too, T 16 MiB).
    let forced = layer.clone().with_strategy(Strategy::Factored);
    let x64 = Array2::<f32>::ones((64, d));
    let (_, largest) = measure(|| {
        forced.infer(x64.view().into_dyn());
    });
    assert!(
        largest < weight_bytes,
        "forced factored infer allocated {largest} bytes"
    );
    // Forcing the materialized kernel builds W for the call only: nothing is cached, and the
    // result is the factored kernel's to rounding.
    let materialized = layer.clone().with_strategy(Strategy::Materialized);
    let y_mat = materialized.infer(x64.view().into_dyn());
    assert!(!materialized.weight_is_current());
    let y_fact = forced.infer(x64.view().into_dyn());
    let scale = y_fact.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = y_mat
        .iter()
        .zip(&y_fact)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-5 * scale, "materialized vs factored: {diff}");
}
