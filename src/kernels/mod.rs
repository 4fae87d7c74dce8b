//! The numerical kernels every layer is built on: PHM shapes and `W` from `(A, S)`
//! ([`phm`]), the factored product that never builds `W`, the cost model that picks a kernel
//! ([`strategy`]), the lowering of convolutions onto them ([`im2col`]), and the crate's one
//! GEMM entry point, with its thread count ([`num_threads`], [`set_num_threads`], the
//! `PHM_NN_NUM_THREADS` environment variable) and the SIMD level it dispatched to
//! ([`simd_level`]), and the [`buffer_pool`] that reuses arrays across training steps.
//!
//! ```text
//!     W = Σ_{i=1..n} A_i ⊗ S_i        R(W) = Âᵀ Ŝ   (Van Loan's rearrangement: one GEMM)
//! ```
//!
//! ```
//! use phm_nn::kernels::phm::{build_weight, PhmShape};
//! let shape = PhmShape::new(4, 6, 2)?; // in, out, n
//! let w = build_weight(ndarray::Array3::<f64>::ones(shape.rules_dim()).view(),
//!                      ndarray::Array3::ones(shape.blocks_dim()).view())?;
//! assert_eq!(w.dim(), (6, 4));
//! assert!(w.iter().all(|&v| v == 2.0)); // every entry sums n = 2 products 1·1
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

pub mod buffer_pool;
pub(crate) mod factored;
pub(crate) mod gemm;
mod gemm_backend;
pub mod im2col;
pub mod low_rank;
pub(crate) mod parallel;
pub mod phm;
pub(crate) mod shapes;
pub mod strategy;

pub use gemm::{
    matmul, num_threads, set_num_threads, set_parallel_min_work, simd_level, NUM_THREADS_ENV,
    PARALLEL_MIN_WORK,
};
pub use parallel::{set_elementwise_min_work, ELEMENTWISE_MIN_WORK};
