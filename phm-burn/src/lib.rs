//! The phm-nn PHM layer family as [burn](https://burn.dev) modules: the same math, parameter
//! names, shapes and checkpoint files as phm-nn, trained through burn's autodiff on any of
//! its backends (CPU, CUDA, ROCm, wgpu/Vulkan/Metal) and on several devices.
//!
//! A PHM layer's weight is `W = Σ_{i=1..n} A_i ⊗ S_i` with rules `A` of shape `(n, n, n)` and
//! blocks `S` of shape `(n, k/n, d/n)`; `y = x Wᵀ + b` on the last axis of an input of any
//! rank. phm-nn is the reference (exact manual gradients, CPU kernels, checkpoints); every
//! module here has a phm-nn twin ([`Bridge`]) with the same parameters, and the tests check
//! forward values and autodiff gradients against phm-nn's in f64.
//!
//! Only this crate depends on burn; phm-nn never does.

#![warn(missing_docs)]

pub mod bridge;
pub mod io;
pub mod kernels;
pub mod linear;
pub mod rules;

pub use bridge::Bridge;
pub use burn;
pub use phm_nn;
