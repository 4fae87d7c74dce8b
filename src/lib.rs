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
//! use ndarray::Array2;
//! use phm_nn::{Module, PhmLinearConfig, PhmShape};
//!
//! let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
//! let mut layer = PhmLinearConfig::new(1024, 1024, 4).init::<f32, _>(&mut rng)?;
//! let y = layer.forward(Array2::zeros((8, 1024)).view());   // (batch, in) → (batch, out)
//! let dx = layer.backward(Array2::ones((8, 1024)).view()); // accumulates dA, dS, db
//! assert_eq!((y.dim(), dx.dim()), ((8, 1024), (8, 1024)));
//!
//! // Weight counts n³ + k·d/n of a 1024 × 1024 layer (the README's table):
//! let counts: Vec<usize> = [1, 2, 4, 8, 16].iter()
//!     .map(|&n| PhmShape::new(n, 1024, 1024).unwrap().num_weight_parameters())
//!     .collect();
//! assert_eq!(counts, [1_048_577, 524_296, 262_208, 131_584, 69_632]);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```
//!
//! # Map of the crate
//! - [`phm`]: the core (shapes, `W` from `(A, S)` by GEMM, gradients back to `(A, S)`).
//! - [`PhmLinear`] and dense [`Linear`], both [`Module`]s; [`Sequential`]; [`activation`]s;
//!   [`loss`]es; [`optim`]izers; [`init`] schemes; [`algebra`] rules.
//! - [`synthetic`]: the paper's artificial rule-learning data and the metrics that compare
//!   learned rules with true ones (up to the mixing symmetry).
//! - Conventions: batch-first, `Y = X Wᵀ + 1 bᵀ`, dense weights `(out, in)`, rules `(n, n, n)`,
//!   blocks `(n, k/n, d/n)`; generic over `f32`/`f64` through [`Float`].
//! - No cargo features are needed; the default build is single-threaded.
#![warn(missing_docs)]

pub mod activation;
pub mod algebra;
pub mod data;
pub mod error;
mod factored;
mod float;
pub mod init;
mod linalg;
pub mod linear;
pub mod loss;
pub mod module;
pub mod optim;
pub mod phm;
pub mod phm_linear;
pub mod schedule;
pub mod sequential;
pub mod strategy;
pub mod synthetic;

pub use activation::{Gelu, Relu, Sigmoid, Tanh};
pub use error::{PhmError, Result};
pub use float::Float;
pub use init::Init;
pub use linear::{Linear, LinearConfig};
pub use module::{Module, Param};
pub use phm::PhmShape;
pub use phm_linear::{PhmLinear, PhmLinearConfig, Rule, Workspace};
pub use sequential::Sequential;
pub use strategy::{Kernel, Mode, Strategy};

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
