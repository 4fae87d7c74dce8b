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
//!
//! A PHM layer trained with burn, then moved to phm-nn (the README's example):
//!
//! ```
//! use phm_burn::burn::optim::{AdamConfig, GradientsParams};
//! use phm_burn::burn::tensor::{Device, Tensor};
//! use phm_burn::{bridge::tensor_from_array, linear::PhmLinearConfig, Bridge};
//! use phm_nn::ndarray::Array2;
//!
//! let device = Device::default().autodiff(); // CPU; with `--features cuda`, the GPU
//! let mut model = PhmLinearConfig::new(8, 4, 2).with_seed(1).init::<f64>(&device)?;
//! let x = Array2::from_shape_fn((16, 8), |(i, j)| ((i * 7 + j) % 5) as f64 - 2.0);
//! let x: Tensor<2> = tensor_from_array(x.into_dyn().view(), &device);
//! let target = x.clone().slice([0..16, 0..4]) * 0.5; // a linear map to learn
//! let mut optim = AdamConfig::new().init();
//! # let mut first = None;
//! for _ in 0..200 {
//!     let loss = (model.forward(x.clone()) - target.clone()).powi_scalar(2).mean();
//! #   first.get_or_insert(loss.clone().into_scalar::<f64>());
//!     let grads = GradientsParams::from_grads(loss.backward(), &model);
//!     model = optim.step(2e-2, model, grads);
//! }
//! let native: phm_nn::PhmLinear<f64> = model.to_native()?; // to phm-nn: same tensors, bit for bit
//! # use phm_nn::Module as _;
//! # let xs = Array2::from_shape_fn((16, 8), |(i, j)| ((i * 7 + j) % 5) as f64 - 2.0).into_dyn();
//! # let y = native.infer(xs.view());
//! # let err = (&y - &xs.slice(phm_nn::ndarray::s![.., 0..4]).mapv(|v| 0.5 * v)).mapv(|v| v * v).mean().unwrap();
//! # assert!(err < 0.05 * first.unwrap(), "{err} vs {}", first.unwrap());
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

#![warn(missing_docs)]

pub mod bridge;
pub mod conv;
pub mod io;
pub mod kernels;
pub mod linear;
pub mod pool;
pub mod rules;
pub mod transformer;

pub use bridge::Bridge;
pub use burn;
pub use phm_nn;

/// The workspace README's code blocks — phm-nn's and phm-burn's — compiled and run as
/// doctests here, where both crates are visible.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
