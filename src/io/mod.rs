//! Checkpoints in the [safetensors](https://huggingface.co/docs/safetensors) format: save a
//! model, load it back bit-exactly, and save or resume a whole training run.
//!
//! # Format
//! A safetensors file is an 8-byte little-endian header length, a JSON header (each tensor's
//! dtype, shape and byte range, plus a string-to-string `__metadata__` map) and the raw
//! little-endian tensor data. Any safetensors reader (Python `safetensors.torch.load_file`,
//! candle, burn) opens the files this module writes.
//!
//! **Model files** ([`save_model`], [`model_to_bytes`]) hold every distinct parameter tensor
//! once ([`params`](crate::module::params): a shared tensor under its first path), named by
//! its path (`"0.rules"`, `"0.blocks"`, `"0.bias"`, `"2.weight"`), as `F32` or `F64` after the
//! model's float type; frozen tensors (fixed rules) are saved too. The metadata holds:
//!
//! | key | value |
//! |---|---|
//! | `phm_nn.version` | the crate version that wrote the file, e.g. `0.1.0` |
//! | `phm_nn.format` | `model` or `training` |
//! | `phm_nn.dtype` | `f32` or `f64` |
//! | `module.{path}` | each leaf layer's [`describe`](crate::Module::describe), e.g. `PhmLinear(64 → 32, n = 4, learned rules)` |
//! | `module.{path}.{name}` | its [`hyperparameters`](crate::Module::hyperparameters): `in_features`, `out_features`, `n`, `rules` (`learned`/`fixed`), `bias`, `strategy` |
//!
//! **Training files** ([`save_training`], [`training_to_bytes`]) hold the model's tensors as
//! `model.{path}`, the optimizer's state ([`Optimizer::state`](crate::optim::Optimizer::state))
//! as `optimizer.{name}` tensors and `optimizer_scalar.{name}` rank-0 `F64` tensors (step
//! counts, hyperparameters: bit-exact), and in the metadata, besides the keys above, the
//! counters (`train.epoch`, `train.step`), the schedule (`schedule.*`: kind, parameters, step;
//! floats written as the shortest text that parses back to the same bits) and the RNG position
//! (`rng.seed` in hex, `rng.stream`, `rng.word_pos` of a [`ChaCha8Rng`](rand::rngs::ChaCha8Rng);
//! see [`RngState`]).
//!
//! # Loading
//! Loading copies the values into a model of the same architecture, bit for bit, **all or
//! nothing**: every tensor is checked first (presence, dtype, shape; no tensor left over),
//! and any problem returns a [`PhmError::CheckpointMismatch`](crate::PhmError::CheckpointMismatch)
//! naming the tensor with the expected and the found shape or dtype, before any parameter
//! changes. Bytes that are not a valid safetensors file (truncated, corrupted, another format)
//! give [`PhmError::CheckpointFormat`](crate::PhmError::CheckpointFormat); no input panics
//! (a property test feeds random, truncated and bit-flipped files). The metadata is returned
//! for inspection; loading does not require it, so a file written by another tool with the
//! same tensor names loads too.
//!
//! # Crash safety
//! Saving writes a temporary file in the target's folder, syncs it to the disk, renames it
//! over the target and syncs the folder: a crash or a failed write at any point leaves the
//! previous checkpoint intact and loadable. A failed write removes its temporary file; a
//! killed process may leave one (`.{name}.tmp.{pid}.{n}`), which is never read and can be
//! deleted.
//!
//! ```
//! use phm_nn::prelude::*;
//! use phm_nn::io;
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! let model = Sequential::<f32>::new()
//!     .add(PhmLinearConfig::new(8, 16, 4).init(&mut rng)?)
//!     .add(Relu::new())
//!     .add(LinearConfig::new(16, 3).init(&mut rng)?);
//! let bytes = io::model_to_bytes(&model)?;
//!
//! // A freshly initialised model of the same architecture takes the saved values exactly.
//! let fresh = Sequential::<f32>::new()
//!     .add(PhmLinearConfig::new(8, 16, 4).init(&mut StdRng::seed_from_u64(1))?)
//!     .add(Relu::new())
//!     .add(LinearConfig::new(16, 3).init(&mut StdRng::seed_from_u64(1))?);
//! let meta = io::load_model_from_bytes(&fresh, &bytes)?;
//! assert_eq!(fresh.get::<PhmLinear<f32>>(0).unwrap().blocks(),
//!            model.get::<PhmLinear<f32>>(0).unwrap().blocks());
//! assert_eq!(meta["module.0.n"], "4");
//! assert_eq!(meta["phm_nn.dtype"], "f32");
//!
//! // Another architecture is refused, naming the tensor and both shapes.
//! let other = Sequential::<f32>::new().add(PhmLinearConfig::new(8, 16, 2).init(&mut rng)?);
//! let err = io::load_model_from_bytes(&other, &bytes).unwrap_err();
//! assert_eq!(err.to_string(),
//!     "bytes: tensor `0.rules`: expected shape [2, 2, 2] (F32), found shape [4, 4, 4] (F32)");
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

mod atomic;
mod checkpoint;
pub mod layouts;
mod state_dict;
mod training;

pub use checkpoint::{
    load_model, load_model_from_bytes, load_model_from_bytes_with, load_model_with, model_to_bytes,
    read_metadata, save_model, LoadOptions,
};
pub use state_dict::{load_state_dict, save_state_dict};
pub use training::{
    load_training, load_training_from_bytes, load_training_from_bytes_with, load_training_with,
    save_training, training_to_bytes, RngState, TrainingProgress,
};
