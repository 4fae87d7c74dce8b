//! Checkpoints of phm-burn models, written and read **through phm-nn**, so that a file is the
//! same whichever crate wrote it.
//!
//! [`save`] converts the burn model to its phm-nn twin ([`Bridge::to_native`], in the float
//! type of the model's parameters) and writes it with [`phm_nn::io::save_model`]. [`load`]
//! builds the phm-nn twin of the given burn model, reads the file into it with
//! [`phm_nn::io::load_model`] — which checks every tensor's name, shape, dtype and checksum
//! and the architecture recorded in the file, all or nothing — and converts it back with [`Bridge::from_native`] on the model's device. A model
//! trained on GPUs with phm-burn is served on a CPU with phm-nn, and the reverse, bit for bit:
//! `f64` values stay `f64`, `f32` stay `f32`.
//!
//! ```no_run
//! # fn demo<M: phm_burn::Bridge + phm_burn::burn::module::Module>(model: M) -> phm_nn::Result<()> {
//! phm_burn::io::save(&model, "model.safetensors")?;
//! // … later, or in phm-nn: `phm_nn::io::load_model(&mut native_twin, "model.safetensors")`.
//! let restored: M = phm_burn::io::load(&model, "model.safetensors")?;
//! # Ok(()) }
//! ```

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Tensor};
use phm_nn::{Float, PhmError, Result};

use crate::bridge::Bridge;

/// The float type shared by every float parameter of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    F32,
    F64,
}

/// Finds the dtype of the model's parameters (the first one decides; the bridge checks the
/// others) and the device of the first one.
#[derive(Default)]
struct Probe {
    path: Vec<String>,
    found: Option<(String, DType, Device)>,
}

impl ModuleVisitor for Probe {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.found.is_none() {
            let t = param.val();
            let name = self
                .path
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join(".");
            self.found = Some((name, t.dtype(), t.device()));
        }
    }
}

/// The precision and device of `model`'s parameters (`f32` on the default device if it has
/// none).
fn probe<M: Module>(model: &M) -> Result<(Precision, Device)> {
    let mut probe = Probe::default();
    model.visit(&mut probe);
    match probe.found {
        None => Ok((Precision::F32, Device::default())),
        Some((_, DType::F32, device)) => Ok((Precision::F32, device)),
        Some((_, DType::F64, device)) => Ok((Precision::F64, device)),
        Some((name, dtype, _)) => Err(PhmError::CheckpointMismatch {
            source: "burn module".into(),
            tensor: name,
            expected: "dtype F32 or F64 (the float types of phm-nn checkpoints)".into(),
            found: format!("dtype {dtype:?}"),
        }),
    }
}

/// Saves `model` to `path` as a phm-nn checkpoint: exactly the file
/// [`phm_nn::io::save_model`] writes for the model's phm-nn twin (same tensors, names, dtype
/// and metadata), crash-safely.
///
/// # Errors
/// - [`PhmError::CheckpointMismatch`] naming the tensor if the parameters are not all `f32`
///   or all `f64`;
/// - the errors of [`phm_nn::io::save_model`] ([`PhmError::Write`] naming the path).
pub fn save<M: Bridge + Module>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    match probe(model)?.0 {
        Precision::F32 => phm_nn::io::save_model(&model.to_native::<f32>()?, path),
        Precision::F64 => phm_nn::io::save_model(&model.to_native::<f64>()?, path),
    }
}

/// The bytes [`save`] would write (those of [`phm_nn::io::model_to_bytes`] for the twin).
///
/// # Errors
/// As [`save`], without the write errors.
pub fn to_bytes<M: Bridge + Module>(model: &M) -> Result<Vec<u8>> {
    match probe(model)?.0 {
        Precision::F32 => phm_nn::io::model_to_bytes(&model.to_native::<f32>()?),
        Precision::F64 => phm_nn::io::model_to_bytes(&model.to_native::<f64>()?),
    }
}

/// Loads the checkpoint at `path` (written by [`save`] or by [`phm_nn::io::save_model`]) into
/// a copy of `model`: the returned module has `model`'s architecture, float type and device and
/// the file's values. `model` itself is never changed, so a failed load leaves it as it was.
///
/// # Errors
/// - [`PhmError::Io`] if the file cannot be read, [`PhmError::CheckpointFormat`] if it is not
///   a safetensors file;
/// - [`PhmError::CheckpointMismatch`] naming the tensor if one is missing, has another shape
///   or dtype, or has no parameter in the model (another architecture);
/// - the errors of [`Bridge::to_native`] and [`Bridge::from_native`].
pub fn load<M: Bridge + Module>(model: &M, path: impl AsRef<Path>) -> Result<M> {
    reload(model, Source::Path(path.as_ref()))
}

/// As [`load`], from the bytes of a checkpoint.
///
/// # Errors
/// As [`load`], without the read error.
pub fn from_bytes<M: Bridge + Module>(model: &M, bytes: &[u8]) -> Result<M> {
    reload(model, Source::Bytes(bytes))
}

/// Where a checkpoint is read from.
#[derive(Clone, Copy)]
enum Source<'a> {
    Path(&'a Path),
    Bytes(&'a [u8]),
}

/// Builds the twin in the model's precision, reads the checkpoint into it (phm-nn's checks,
/// all or nothing), and converts it back on the model's device.
fn reload<M: Bridge + Module>(model: &M, source: Source<'_>) -> Result<M> {
    let (precision, device) = probe(model)?;
    match precision {
        Precision::F32 => reload_as::<f32, M>(model, &device, source),
        Precision::F64 => reload_as::<f64, M>(model, &device, source),
    }
}

fn reload_as<F: Float, M: Bridge>(model: &M, device: &Device, source: Source<'_>) -> Result<M> {
    let mut native = model.to_native::<F>()?;
    match source {
        Source::Path(path) => phm_nn::io::load_model(&mut native, path)?,
        Source::Bytes(bytes) => phm_nn::io::load_model_from_bytes(&mut native, bytes)?,
    };
    M::from_native(&native, device)
}
