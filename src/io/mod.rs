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
//! | `module.{path}.{name}` | every layer's [`hyperparameters`](crate::Module::hyperparameters): `in_features`, `out_features`, `n`, `rules` (`learned`/`fixed`), `bias`, `strategy`, `heads`, … (`module.{name}` for the model itself) |
//! | `crc32.{tensor}` | the CRC-32 (IEEE) of the tensor's little-endian bytes, 8 lowercase hex digits, e.g. `crc32.0.rules` → `1c291ca3` |
//! | `phm_nn.header_crc32` | the CRC-32 of the header: every tensor's name, dtype and shape and every metadata entry but this one, sorted, each field length-prefixed (`t{len}:{name}{dtype}{shape}\n`, then `m{len}:{key}{len}:{value}\n`) |
//!
//! The bytes are deterministic: metadata and tensors are written in sorted order (tensors
//! wider dtype first, so each stays aligned), and the same model gives the same bytes in any
//! process. [`save_state_dict`] files carry the two checksum keys too.
//!
//! **Training files** ([`save_training`], [`training_to_bytes`]) hold the model's tensors as
//! `model.{path}`, the optimizer's state ([`Optimizer::state`](crate::optim::Optimizer::state))
//! as `optimizer.{name}` tensors and `optimizer_scalar.{name}` rank-0 `F64` tensors (step
//! counts, hyperparameters: bit-exact), and in the metadata, besides the keys above, the
//! counters (`train.epoch`, `train.step`), the schedule (`schedule.*`: kind, parameters, step;
//! floats written as the shortest text that parses back to the same bits) and the RNG position
//! (`rng.seed` in hex, `rng.stream`, `rng.word_pos` of a [`ChaCha8Rng`](rand::rngs::ChaCha8Rng);
//! see [`RngState`]). Saving refuses an optimizer that holds state for none of the model's
//! tensors (a clone of the model it steps), which would otherwise save no optimizer state.
//!
//! # Loading
//! Loading copies the values into a model of the same architecture, bit for bit, **all or
//! nothing**: everything is checked before any parameter changes, and any problem is an
//! error:
//!
//! - the bytes must be a valid safetensors file, and the checksums must match: a flipped bit
//!   anywhere in the header or the data is a [`PhmError::CheckpointFormat`](crate::PhmError::CheckpointFormat)
//!   naming the tensor (or the header). **Files written before the checksums existed** (no
//!   `crc32.*` and no `phm_nn.header_crc32` key) still load, unverified; a file with some
//!   checksum keys must have all of them;
//! - every parameter must have its tensor, of its shape and dtype, and no tensor may be left
//!   over: a [`PhmError::CheckpointMismatch`](crate::PhmError::CheckpointMismatch) names the
//!   tensor with the expected and the found shape or dtype;
//! - the architecture the file records (`module.*`) must equal the model's, entry by entry:
//!   a [`PhmError::ArchitectureMismatch`](crate::PhmError::ArchitectureMismatch) names the
//!   layer, the entry and both values (a ReLU model into a Tanh one, 4 heads into 8, another
//!   stride, learned rules over fixed ones). [`LoadOptions::weights_only`] skips this check
//!   on purpose. A file that records no architecture (no `phm_nn.format` key: a plain state
//!   dict, a PyTorch or [`compress`](crate::compress) file) is loaded by tensor names, shapes
//!   and dtypes only;
//! - no two modules or tensors of the model may share a path
//!   ([`check_paths`](crate::module::check_paths));
//! - training files: the progress metadata is parsed strictly (whole numbers are decimal
//!   digits only, the seed 64 hex digits, no entry the progress would not write), and the
//!   optimizer state must be consistent (flags exactly 0 or 1, AMSGrad state present exactly
//!   when `hyper.amsgrad` is 1, no unknown hyperparameter), each error naming the entry.
//!
//! No input panics (`tests/checkpoint_fuzz.rs` feeds about 3000 mutated files to every
//! loader). The metadata is returned for inspection.
//!
//! Loading takes `&mut model`: no `infer(&model)` can run during a load, so every inference
//! sees all old or all new values. A model that serves threads while it is reloaded lives
//! behind a lock (`RwLock`: `infer` under read guards, the load under the write guard).
//!
//! # Crash safety
//! Saving writes a temporary file in the target's folder, syncs it to the disk, renames it
//! over the target and syncs the folder: a crash or a failed write at any point leaves the
//! previous checkpoint intact and loadable. A failed write removes its temporary file; a
//! killed process may leave one (`.{name}.tmp.{pid}.{random}`), which is never read, never
//! reused (a fresh random name, created exclusively, for every save: a restarted process
//! with the same id cannot collide with it) and can be deleted. Saving to a symbolic link
//! replaces the file it points to; the link stays.
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
//! let mut fresh = Sequential::<f32>::new()
//!     .add(PhmLinearConfig::new(8, 16, 4).init(&mut StdRng::seed_from_u64(1))?)
//!     .add(Relu::new())
//!     .add(LinearConfig::new(16, 3).init(&mut StdRng::seed_from_u64(1))?);
//! let meta = io::load_model_from_bytes(&mut fresh, &bytes)?;
//! assert_eq!(fresh.get::<PhmLinear<f32>>(0).unwrap().blocks(),
//!            model.get::<PhmLinear<f32>>(0).unwrap().blocks());
//! assert_eq!(meta["module.0.n"], "4");
//! assert_eq!(meta["phm_nn.dtype"], "f32");
//!
//! // Another architecture is refused, naming the tensor and both shapes.
//! let mut other = Sequential::<f32>::new().add(PhmLinearConfig::new(8, 16, 2).init(&mut rng)?);
//! let err = io::load_model_from_bytes(&mut other, &bytes).unwrap_err();
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
