//! The crate's only `unsafe` code: the call into the `gemm` crate's packed kernels.
//!
//! [`packed_gemm`] computes `c ← alpha · a · b + beta · c` on ndarray views by handing their
//! pointers and strides to `gemm::gemm`, which picks its micro-kernels at run time from the
//! CPU's features (AVX-512 through the `x86-v4` feature, AVX2/FMA, NEON on aarch64, a portable
//! fallback). Everything that could make the raw call unsound is settled here, in safe code,
//! before it:
//!
//! - the element type is `f32` or `f64` (checked by `TypeId`; `gemm` panics on anything else);
//! - empty products never reach the kernel (`m = 0` or `n = 0`: nothing to do; `k = 0`: `c`
//!   is only scaled, with `beta = 0` meaning "overwrite");
//! - operands with a negative stride are copied to standard layout first (rare in practice:
//!   only reversed views have them), so the kernel only ever sees non-negative strides;
//! - `c` has no two indices at the same address (a mutable ndarray view cannot be built
//!   with a zero stride on an axis longer than 1; asserted anyway).
//!
//! Zero strides on `a` or `b` (broadcast views) are fine: the kernel only reads through them.

use std::any::TypeId;

use ndarray::{ArrayView2, ArrayViewMut2};

use crate::Float;

/// Whether `v`'s strides are all non-negative (axes of length ≤ 1 are ignored).
fn non_negative<F>(v: &ArrayView2<'_, F>) -> bool {
    v.shape()
        .iter()
        .zip(v.strides())
        .all(|(&len, &stride)| len <= 1 || stride >= 0)
}

/// The strides to pass for a view of `shape`: an axis of length ≤ 1 is never stepped along,
/// so its stride is made non-negative (its sign means nothing there).
fn strides(shape: &[usize], strides: &[isize]) -> [isize; 2] {
    let fix = |axis: usize| {
        if shape[axis] <= 1 {
            strides[axis].abs()
        } else {
            strides[axis]
        }
    };
    [fix(0), fix(1)]
}

/// `c ← alpha · a · b + beta · c` with the `gemm` crate, on the calling thread (threads split
/// the output before calling it: [`gemm`](super::gemm)). With `beta = 0`, `c` is never read
/// (NaN in it is ignored).
///
/// # Panics
/// If the shapes are not `(m, k)·(k, n) → (m, n)`, if `F` is not `f32` or `f64`, or if `c`
/// has a zero or negative stride on an axis longer than 1 (no safe ndarray view has a zero
/// one).
pub(crate) fn packed_gemm<F: Float>(
    alpha: F,
    a: &ArrayView2<'_, F>,
    b: &ArrayView2<'_, F>,
    beta: F,
    c: &mut ArrayViewMut2<'_, F>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert_eq!(k, b.nrows(), "gemm: inner dimensions differ");
    assert_eq!(c.dim(), (m, n), "gemm: output shape differs");
    let is_f32 = TypeId::of::<F>() == TypeId::of::<f32>();
    let is_f64 = TypeId::of::<F>() == TypeId::of::<f64>();
    assert!(is_f32 || is_f64, "gemm: only f32 and f64 are supported");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if beta.is_zero() {
            c.fill(F::zero());
        } else if beta != F::one() {
            c.mapv_inplace(|v| v * beta);
        }
        return;
    }
    if !non_negative(a) {
        let a = a.as_standard_layout();
        return packed_gemm(alpha, &a.view(), b, beta, c);
    }
    if !non_negative(b) {
        let b = b.as_standard_layout();
        return packed_gemm(alpha, a, &b.view(), beta, c);
    }
    if !non_negative(&c.view()) {
        // Compute into a fresh standard-layout array, then copy back through the view.
        let mut tmp = c.as_standard_layout().into_owned();
        packed_gemm(alpha, a, b, beta, &mut tmp.view_mut());
        c.assign(&tmp);
        return;
    }
    let [c_rs, c_cs] = strides(c.shape(), c.strides());
    let [a_rs, a_cs] = strides(a.shape(), a.strides());
    let [b_rs, b_cs] = strides(b.shape(), b.strides());
    assert!(
        (m <= 1 || c_rs != 0) && (n <= 1 || c_cs != 0),
        "gemm: the output has a zero stride (aliased elements)"
    );
    let read_dst = !beta.is_zero();
    // SAFETY: `gemm::gemm` requires, for i < m, j < n, l < k, that `dst + i·dst_rs + j·dst_cs`
    // is valid for reads (if `read_dst`) and writes, `lhs + i·lhs_rs + l·lhs_cs` and
    // `rhs + l·rhs_rs + j·rhs_cs` valid for reads, that the destination does not overlap the
    // inputs nor itself, and that `T` is one of its types.
    // - The pointers and strides are those of ndarray views of shapes (m, k), (k, n), (m, n):
    //   `as_ptr` is element [0, 0] and every index inside the shape is in bounds of the view's
    //   allocation, so every address above is valid; the strides are non-negative (checked or
    //   copied above) and k, m, n ≥ 1. On an axis of length 1 only index 0 is used, so
    //   replacing its stride by its absolute value (`strides`) changes no address.
    // - `c` is borrowed mutably while `a` and `b` are borrowed shared, so they cannot overlap
    //   (the borrow checker guarantees it for safely built views), and `c` has no zero stride
    //   on an axis longer than 1 (asserted above), so no two of its elements alias.
    // - `F` is `f32` or `f64` (asserted above), which `gemm` supports; it reads `alpha`/`beta`
    //   as that same type since `T = F`.
    // - With `read_dst = false` the kernel computes `dst = beta_g · lhs · rhs` without reading
    //   `dst` (NaN there is ignored, tested below).
    // `gemm`'s naming is `dst ← alpha_g·dst + beta_g·lhs·rhs`, so our `beta` is its `alpha`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs,
            c_rs,
            read_dst,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2, ShapeBuilder};

    /// Deterministic small integers (exact in f32 and f64, so products compare exactly).
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

    /// `alpha · a · b + beta · c` by the definition (`beta = 0` ignores `c`).
    fn naive<F: Float>(
        alpha: F,
        a: &ArrayView2<'_, F>,
        b: &ArrayView2<'_, F>,
        beta: F,
        c: &ArrayView2<'_, F>,
    ) -> Array2<F> {
        let (m, k) = a.dim();
        let n = b.ncols();
        Array2::from_shape_fn((m, n), |(i, j)| {
            let mut dot = F::zero();
            for l in 0..k {
                dot += a[[i, l]] * b[[l, j]];
            }
            let old = if beta.is_zero() {
                F::zero()
            } else {
                beta * c[[i, j]]
            };
            alpha * dot + old
        })
    }

    /// Runs `packed_gemm` on the views and compares with [`naive`].
    fn check<F: Float>(
        what: &str,
        a: ArrayView2<'_, F>,
        b: ArrayView2<'_, F>,
        c: &mut ArrayViewMut2<'_, F>,
    ) {
        for (alpha, beta) in [(1.0, 0.0), (2.0, 1.0), (-0.5, 3.0), (1.0, -1.0)] {
            let (alpha, beta) = (F::of(alpha), F::of(beta));
            let before = c.to_owned();
            let want = naive(alpha, &a, &b, beta, &before.view());
            if beta.is_zero() {
                c.fill(F::nan()); // beta = 0 must not read c
            }
            packed_gemm(alpha, &a, &b, beta, c);
            assert_eq!(c.to_owned(), want, "{what}: alpha={alpha} beta={beta}");
            c.assign(&before);
        }
    }

    fn layouts<F: Float>() {
        // Shapes: one row, one column, empty, tiny, and large enough to be packed and split.
        for (m, k, n) in [
            (1, 7, 9),
            (9, 7, 1),
            (1, 1, 1),
            (0, 3, 4),
            (3, 0, 4),
            (3, 4, 0),
            (5, 3, 6),
            (33, 17, 65),
            (130, 70, 90),
        ] {
            for (a_cm, b_cm, c_cm) in [
                (false, false, false),
                (true, false, false),
                (false, true, true),
                (true, true, false),
            ] {
                let a = filled::<F>(m, k, a_cm, 1);
                let b = filled::<F>(k, n, b_cm, 2);
                let mut c = filled::<F>(m, n, c_cm, 3);
                let what = format!("m={m} k={k} n={n} a_cm={a_cm} b_cm={b_cm} c_cm={c_cm}");
                check(&what, a.view(), b.view(), &mut c.view_mut());
                // Transposed operands: bᵀ aᵀ into cᵀ.
                let mut ct = c.t().to_owned();
                check(
                    &format!("{what} transposed"),
                    b.t(),
                    a.t(),
                    &mut ct.view_mut(),
                );
            }
        }
        // Sliced and stepped views, a reversed (negative-stride) operand and output.
        let big_a = filled::<F>(40, 30, false, 4);
        let big_b = filled::<F>(30, 50, true, 5);
        let mut big_c = filled::<F>(60, 60, false, 6);
        let a = big_a.slice(s![1..;2, 3..23]); // (20, 20), row stride 60
        let b = big_b.slice(s![5..25, ..;3]); // (20, 17), column stride 90
        check("stepped", a, b, &mut big_c.slice_mut(s![2..42;2, 1..18]));
        check(
            "reversed a",
            big_a.slice(s![..;-1, ..]),
            big_b.view(),
            &mut big_c.slice_mut(s![..40, ..50]),
        );
        check(
            "reversed b and c",
            big_a.view(),
            big_b.slice(s![..;-1, ..;-2]),
            &mut big_c.slice_mut(s![..40;-1, ..25]),
        );
        // Broadcast (zero-stride) operands: a row repeated, a column repeated.
        let row = filled::<F>(1, 30, false, 7);
        let col = filled::<F>(30, 1, false, 8);
        check(
            "broadcast a",
            row.broadcast((40, 30)).unwrap(),
            big_b.view(),
            &mut big_c.slice_mut(s![..40, ..50]),
        );
        check(
            "broadcast b",
            big_a.view(),
            col.broadcast((30, 50)).unwrap(),
            &mut big_c.slice_mut(s![..40, ..50]),
        );
    }

    #[test]
    fn packed_gemm_matches_the_definition_f32() {
        layouts::<f32>();
    }

    #[test]
    fn packed_gemm_matches_the_definition_f64() {
        layouts::<f64>();
    }

    #[test]
    #[should_panic(expected = "inner dimensions differ")]
    fn mismatched_shapes_panic() {
        let a = Array2::<f32>::zeros((2, 3));
        let b = Array2::<f32>::zeros((4, 2));
        let mut c = Array2::<f32>::zeros((2, 2));
        packed_gemm(1.0, &a.view(), &b.view(), 0.0, &mut c.view_mut());
    }
}
