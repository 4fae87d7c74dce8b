//! What a training loop needs, in one import: `use phm_nn::prelude::*;`.
//!
//! Layers and their configs, the [`Module`] trait and its helpers, losses, optimizers, the
//! error type, and the `ndarray` and `rand` items every example uses (the crate re-exports
//! both crates as [`crate::ndarray`] and [`crate::rand`], so their versions always match).
//!
//! ```
//! use phm_nn::prelude::*;
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! let mut model = Sequential::<f32>::new()
//!     .add(PhmLinearConfig::new(8, 16, 4).init(&mut rng)?)
//!     .add(Relu::new())
//!     .add(LinearConfig::new(16, 3).init(&mut rng)?);
//! let mut opt = Adam::new(AdamConfig::default())?;
//! let x = ArrayD::<f32>::ones(IxDyn(&[4, 8]));
//! model.zero_grad();
//! let logits = model.forward(x.view());
//! let loss = cross_entropy(logits.view(), &[0, 1, 2, 0])?;
//! model.backward(loss.grad.view());
//! opt.step(&mut model)?;
//! # Ok::<(), PhmError>(())
//! ```

pub use crate::algebra::Algebra;
pub use crate::error::{PhmError, Result};
pub use crate::init::Init;
pub use crate::kernels::phm::PhmShape;
pub use crate::kernels::strategy::{Kernel, Mode, Strategy};
pub use crate::loss::{accuracy, cross_entropy, mse};
pub use crate::module::{
    clone_model, find_all, for_each_mut, params, summary, Module, Param, Sequential,
};
pub use crate::nn::{
    Adapter, AdapterConfig, AvgPool2d, Conv1d, Conv1dConfig, Conv2d, Conv2dConfig, Flatten, Gelu,
    GlobalAvgPool, Linear, LinearConfig, LphmLinear, LphmLinearConfig, MaxPool2d, PhmConv1d,
    PhmConv1dConfig, PhmConv2d, PhmConv2dConfig, PhmLinear, PhmLinearConfig, PhmRules, Relu, Rule,
    Sigmoid, Size2, Tanh,
};
pub use crate::nn::{
    AttentionConfig, BlockConfig, Dropout, Embedding, EmbeddingConfig, FeedForwardConfig,
    LayerNorm, LayerNormConfig, MultiHeadAttention, PositionalEncoding, Projection, Sampling,
    TransformerLm, TransformerLmConfig,
};
pub use crate::nn::{Gru, GruConfig, Lstm, LstmConfig};
pub use crate::optim::{
    clip_grad_norm, Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig,
};
pub use crate::train::{evaluate, fit_epoch, train_step, FitConfig};
pub use crate::Float;
pub use ndarray::{array, Array1, Array2, ArrayD, ArrayView2, ArrayViewD, Axis, IxDyn};
pub use rand::rngs::{ChaCha8Rng, StdRng};
pub use rand::SeedableRng;
