//! # phm-nn
//!
//! Parameterized hypercomplex multiplication (PHM) layers (Zhang et al., ICLR 2021): dense
//! layers whose weight is a sum of Kronecker products,
//!
//! ```text
//!     y = W x + b,     W = Σ_{i=1..n} A_i ⊗ S_i,     A_i ∈ R^{n×n},  S_i ∈ R^{(k/n)×(d/n)}
//! ```
//!
//! with `n³ + k·d/n` weights instead of `k·d`. Fixed rules `A_i` ([`algebra`]) make the layer
//! exactly a complex, quaternion or octonion layer; learned rules let it learn its own
//! multiplication; `n = 1` is a dense layer.
//!
//! # Quick start
//! ```
//! use phm_nn::prelude::*;
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! let mut layer = PhmLinearConfig::new(1024, 1024, 4).init::<f32, _>(&mut rng)?;
//! let x = ArrayD::zeros(IxDyn(&[8, 1024]));                // (batch, in); any leading axes
//! let y = layer.forward(x.view());                          // (batch, out)
//! let dx = layer.backward(ArrayD::ones(y.raw_dim()).view()); // accumulates dA, dS, db
//! assert_eq!((y.shape(), dx.shape()), (&[8, 1024][..], &[8, 1024][..]));
//!
//! // Weight counts n³ + k·d/n of a 1024 × 1024 layer (the README's table):
//! let counts: Vec<usize> = [1, 2, 4, 8, 16].iter()
//!     .map(|&n| PhmShape::new(1024, 1024, n).unwrap().num_weight_parameters())
//!     .collect();
//! assert_eq!(counts, [1_048_577, 524_296, 262_208, 131_584, 69_632]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```
//!
//! # Map of the crate
//! ```text
//!     src/
//!       lib.rs, prelude.rs, error.rs, float.rs   this page, `use phm_nn::prelude::*`, errors, f32/f64
//!       module/     the layer contract: Module, Param (identity, sharing), paths, SavedStates, Sequential, summary
//!       nn/         layers: the linear family (Linear, PhmLinear, LphmLinear, PhmRules and Rule,
//!                   Projection), activations, LayerNorm, Dropout, Embedding, PositionalEncoding,
//!                   pooling (pool.rs), adapters
//!         conv/       Conv1d/Conv2d, PhmConv1d/PhmConv2d: one lowering (im2col), a dense and a PHM core
//!         recurrent/  LSTM and GRU cells and sequence layers, gates dense, PHM or LPHM
//!         transformer/  attention, feed-forward, pre-norm blocks, a decoder-only language model
//!       kernels/    shapes, W from (A, S) and back, factored and low-rank products, im2col, the cost model, the GEMM
//!       optim/      Sgd, Adam/AdamW (one implementation), state by parameter path, schedules, clipping
//!       io/         safetensors checkpoints: models, training runs (resume exactly), PyTorch layouts, crash-safe saves
//!       compress/   dense → PHM: the best sum of Kronecker products (Van Loan–Pitsianis)
//!       data/       the bundled digits and Shakespeare, splits, mini-batches, metrics, next-character windows
//!       train.rs    the shared training loop: train_step, fit_epoch, evaluate
//!       loss.rs, init.rs, algebra.rs, linalg.rs, rng.rs   losses, init schemes, fixed rules, small dense algebra, RNG positions
//!       research/   the paper's synthetic rule-learning task and its metrics (not the core API)
//! ```
//!
//! - [`module`]: the [`Module`] contract (forward pushes a saved state, backward pops it,
//!   `infer` through `&self`), [`Param`] with its identity and sharing, parameter paths,
//!   [`module::SavedStates`], [`Sequential`], typed access ([`module::find_all`],
//!   [`Sequential::get`]) and [`module::summary`]. Read its docs first; "Writing a layer"
//!   there says where a new layer goes and what it implements.
//! - [`nn`]: [`PhmLinear`] and dense [`Linear`] (on the last axis of any rank), activations,
//!   [`nn::LayerNorm`], [`nn::Dropout`], [`nn::Embedding`], [`nn::PositionalEncoding`]; the
//!   Compacter family: [`LphmLinear`] (low-rank blocks), [`nn::PhmRules`] (shared or
//!   factorized rules) and [`nn::Adapter`]s with [`nn::insert_adapters`] and [`nn::freeze`];
//!   [`nn::Projection`], the one dense/PHM/LPHM choice of every layer that projects;
//!   [`nn::conv`] and [`nn::pool`]; [`nn::transformer`]; recurrent layers (`nn::recurrent`).
//! - [`kernels`]: [`kernels::phm`] (shapes, `W` from `(A, S)` by GEMM, gradients back to
//!   `(A, S)`), [`kernels::strategy`] (materialized or factored, chosen per call), and the
//!   GEMM's thread count ([`kernels::num_threads`], `PHM_NN_NUM_THREADS`).
//! - [`optim`]izers, [`io`] (checkpoints), [`compress`] (dense → PHM), [`data`] (datasets,
//!   splits, batches, metrics), [`train`] (the loop).
//! - [`loss`]es, [`init`] schemes, [`algebra`] rules, [`linalg`], [`rng`].
//! - [`research::synthetic`]: the paper's artificial rule-learning data and the metrics that
//!   compare learned rules with true ones (up to the mixing symmetry).
//! - Conventions: batch-first, `Y = X Wᵀ + 1 bᵀ`, dense weights `(out, in)`, rules `(n, n, n)`,
//!   blocks `(n, k/n, d/n)`, sizes always in the order `(in, out, n)`; generic over `f32`/`f64`
//!   through [`Float`]. The crate re-exports [`ndarray`] and [`rand`].
//! - No cargo features are needed.
#![warn(missing_docs)]

pub mod algebra;
pub mod compress;
pub mod data;
pub mod error;
mod float;
pub mod init;
pub mod io;
pub mod kernels;
pub mod linalg;
pub mod loss;
pub mod module;
pub mod nn;
pub mod optim;
pub mod prelude;
pub mod research;
pub mod rng;
pub mod train;

/// The `ndarray` this crate is built on (use it to avoid pinning a second version).
pub use ndarray;
/// The `rand` this crate is built on (use it to avoid pinning a second version).
pub use rand;

pub use error::{PhmError, Result};
pub use float::Float;
pub use init::Init;
pub use kernels::phm::PhmShape;
pub use kernels::strategy::{Kernel, Mode, Strategy};
pub use module::{Module, Param, Sequential};
pub use nn::activation::{Gelu, Relu, Sigmoid, Tanh};
pub use nn::linear::{Linear, LinearConfig};
pub use nn::lphm_linear::{LphmLinear, LphmLinearConfig};
pub use nn::phm_linear::{PhmLinear, PhmLinearConfig, Workspace};
pub use nn::rules::Rule;

// The README's code blocks are compiled and run as doctests by `phm-burn` (its
// `ReadmeDoctests`), where both crates of the workspace are visible.
