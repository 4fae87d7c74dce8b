//! Compressing a safetensors state dict on disk, keeping its dtype.

use std::collections::BTreeSet;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::{compress_state_dict, LayerReport};
use crate::error::{PhmError, Result};
use crate::io::{load_state_dict, save_state_dict};
use crate::Float;

/// Compresses the linear layers of the state dict in the safetensors file `input`
/// ([`compress_state_dict`]) and writes the result to `output`; returns what was done to each
/// layer.
///
/// The tensors keep their dtype: an `F32` file is compressed in `f32` and written as `F32`, an
/// `F64` one in `f64` and written as `F64`, so the tensors that are not compressed are copied
/// bit for bit. An existing `output` is replaced only with `overwrite`.
///
/// # Errors
/// - [`PhmError::Write`] (kind `AlreadyExists`) if `output` exists and `overwrite` is `false`
///   (nothing is read or written then);
/// - [`PhmError::Io`] / [`PhmError::CheckpointFormat`] if `input` cannot be read or is not a
///   safetensors file;
/// - [`PhmError::CheckpointMismatch`] if it holds a dtype other than `F32` and `F64`, or both
///   (naming a tensor of each: a mixed file would be written in one dtype);
/// - the errors of [`compress_state_dict`] and of [`save_state_dict`].
pub fn compress_file(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    n: usize,
    only: Option<&BTreeSet<String>>,
    overwrite: bool,
) -> Result<Vec<LayerReport>> {
    let (input, output) = (input.as_ref(), output.as_ref());
    if !overwrite && output.exists() {
        return Err(PhmError::Write {
            path: output.display().to_string(),
            kind: std::io::ErrorKind::AlreadyExists,
            reason: "the file exists; choose another path or allow overwriting it".into(),
        });
    }
    match file_dtype(input)? {
        Dtype::F64 => compress_as::<f64>(input, output, n, only),
        _ => compress_as::<f32>(input, output, n, only),
    }
}

fn compress_as<F: Float>(
    input: &Path,
    output: &Path,
    n: usize,
    only: Option<&BTreeSet<String>>,
) -> Result<Vec<LayerReport>> {
    let dict = load_state_dict::<F>(input)?;
    let (out, reports) = compress_state_dict(&dict, n, only)?;
    save_state_dict(&out, output)?;
    Ok(reports)
}

/// The one float dtype of the file's tensors (`F32` for a file without tensors).
fn file_dtype(input: &Path) -> Result<Dtype> {
    let source = input.display().to_string();
    let bytes = std::fs::read(input).map_err(|e| PhmError::Io {
        path: source.clone(),
        kind: e.kind(),
        reason: e.to_string(),
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| PhmError::CheckpointFormat {
        source: source.clone(),
        reason: e.to_string(),
    })?;
    let mut seen: Option<(String, Dtype)> = None;
    let mut names = st.names();
    names.sort();
    for name in names {
        let dtype = st.tensor(name).expect("a listed name").dtype();
        if !matches!(dtype, Dtype::F32 | Dtype::F64) {
            return Err(PhmError::CheckpointMismatch {
                source,
                tensor: name.to_string(),
                expected: "dtype F32 or F64".into(),
                found: format!("dtype {dtype:?}"),
            });
        }
        match &seen {
            Some((first, d)) if *d != dtype => {
                return Err(PhmError::CheckpointMismatch {
                    source,
                    tensor: name.to_string(),
                    expected: format!("dtype {d:?}, the dtype of `{first}` (one dtype per file)"),
                    found: format!("dtype {dtype:?}"),
                })
            }
            Some(_) => {}
            None => seen = Some((name.to_string(), dtype)),
        }
    }
    Ok(seen.map_or(Dtype::F32, |(_, d)| d))
}
