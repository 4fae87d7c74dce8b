//! Plain state dicts: tensors by name in a safetensors file, as PyTorch's
//! `safetensors.torch.save_file(model.state_dict(), path)` writes them.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::Dtype;

use super::atomic::write_atomic;
use super::checkpoint::{encode, parse, read_file, serialize};
use super::layouts::StateDict;
use crate::error::{PhmError, Result};
use crate::Float;

/// Reads every tensor of a safetensors file into a [`StateDict`] of `F`. `F32` and `F64`
/// tensors are accepted (an `f64` file read as `f32` rounds to nearest); other dtypes are an
/// error naming the tensor. The checksums of a file written by this crate are verified (a
/// file without them, e.g. from PyTorch, is read as it is).
///
/// # Errors
/// [`PhmError::Io`] if the file cannot be read, [`PhmError::CheckpointFormat`] if it is not a
/// safetensors file or a checksum does not match, [`PhmError::CheckpointMismatch`] naming a
/// tensor of another dtype.
pub fn load_state_dict<F: Float>(path: impl AsRef<Path>) -> Result<StateDict<F>> {
    let path = path.as_ref();
    let source = path.display().to_string();
    let bytes = read_file(path)?;
    let (st, _) = parse(&bytes, &source)?;
    let mut dict = StateDict::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<F> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| F::of(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64))
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| F::of(f64::from_le_bytes(c.try_into().expect("chunks of 8"))))
                .collect(),
            other => {
                return Err(PhmError::CheckpointMismatch {
                    source,
                    tensor: name,
                    expected: "dtype F32 or F64".to_string(),
                    found: format!("dtype {other:?}"),
                })
            }
        };
        let a = ArrayD::from_shape_vec(IxDyn(view.shape()), values).map_err(|e| {
            PhmError::CheckpointFormat {
                source: source.clone(),
                reason: format!("tensor `{name}`: {e}"),
            }
        })?;
        dict.insert(name, a);
    }
    Ok(dict)
}

/// Writes a [`StateDict`] as a safetensors file (dtype of `F`), crash-safely (a temporary file
/// in the same folder, synced, then renamed over `path`), with a checksum of every tensor in
/// the metadata (`crc32.{name}`, and `phm_nn.header_crc32`; other readers ignore them).
///
/// # Errors
/// [`PhmError::Write`] if the file cannot be written.
pub fn save_state_dict<F: Float>(dict: &StateDict<F>, path: impl AsRef<Path>) -> Result<()> {
    let tensors = dict
        .iter()
        .map(|(k, v)| (k.clone(), encode(v.view())))
        .collect::<BTreeMap<_, _>>();
    let bytes = serialize(&tensors, BTreeMap::new())?;
    write_atomic(path.as_ref(), &bytes)
}
