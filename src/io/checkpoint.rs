//! Model checkpoints: every distinct parameter tensor under its path, with the layers'
//! hyperparameters in the metadata. See the [module docs](super) for the format.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use safetensors::{Dtype, SafeTensors, View};

use super::atomic::write_atomic;
use crate::error::{PhmError, Result};
use crate::module::{join, params, Module, Param};
use crate::Float;

/// Metadata key of the crate version that wrote the file.
pub(crate) const KEY_VERSION: &str = "phm_nn.version";
/// Metadata key of the file kind (`"model"` or `"training"`).
pub(crate) const KEY_FORMAT: &str = "phm_nn.format";
/// Metadata key of the float type (`"f32"` or `"f64"`).
pub(crate) const KEY_DTYPE: &str = "phm_nn.dtype";

/// A tensor ready to be serialized: dtype, shape and little-endian bytes.
pub(crate) struct Encoded {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Encoded {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The safetensors dtype of `F`: `F32` for `f32`, `F64` for `f64`.
pub(crate) fn dtype_of<F: Float>() -> Dtype {
    if std::mem::size_of::<F>() == 4 {
        Dtype::F32
    } else {
        Dtype::F64
    }
}

/// `"f32"` or `"f64"`.
pub(crate) fn float_name<F: Float>() -> &'static str {
    if dtype_of::<F>() == Dtype::F32 {
        "f32"
    } else {
        "f64"
    }
}

/// The bytes of `a` in row-major order, as `F`'s dtype.
pub(crate) fn encode<F: Float>(a: ArrayViewD<'_, F>) -> Encoded {
    let dtype = dtype_of::<F>();
    let mut data = Vec::with_capacity(a.len() * dtype.bitsize() / 8);
    for &v in a.iter() {
        if dtype == Dtype::F32 {
            // Exact: `v` is an f32 and `as_f64` widens it without rounding.
            data.extend_from_slice(&(v.as_f64() as f32).to_le_bytes());
        } else {
            data.extend_from_slice(&v.as_f64().to_le_bytes());
        }
    }
    Encoded {
        dtype,
        shape: a.shape().to_vec(),
        data,
    }
}

/// An `f64` scalar as a rank-0 `F64` tensor (bit-exact).
pub(crate) fn encode_scalar(x: f64) -> Encoded {
    Encoded {
        dtype: Dtype::F64,
        shape: Vec::new(),
        data: x.to_le_bytes().to_vec(),
    }
}

/// Serializes `tensors` and `metadata` to safetensors bytes.
pub(crate) fn serialize(
    tensors: &BTreeMap<String, Encoded>,
    metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let metadata: HashMap<String, String> = metadata.into_iter().collect();
    safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata)).map_err(
        |e| PhmError::InvalidArgument {
            what: "checkpoint",
            reason: format!("cannot serialize: {e}"),
        },
    )
}

/// Parses safetensors bytes; any malformation is a [`PhmError::CheckpointFormat`].
pub(crate) fn parse<'a>(bytes: &'a [u8], source: &str) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| PhmError::CheckpointFormat {
        source: source.to_string(),
        reason: format!("not a readable safetensors file ({e})"),
    })
}

/// The metadata of parsed bytes, sorted (empty if the file has none).
pub(crate) fn metadata_of(bytes: &[u8], source: &str) -> Result<BTreeMap<String, String>> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| PhmError::CheckpointFormat {
        source: source.to_string(),
        reason: format!("not a readable safetensors file ({e})"),
    })?;
    Ok(meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default())
}

/// `"shape [a, b] (F32)"`.
fn describe_tensor(dtype: Dtype, shape: &[usize]) -> String {
    format!("shape {shape:?} ({dtype:?})")
}

/// The tensor `name` of `st` as an array of `F`, checked against `shape` (if given) and `F`'s
/// dtype.
pub(crate) fn decode<F: Float>(
    st: &SafeTensors<'_>,
    name: &str,
    shape: Option<&[usize]>,
    source: &str,
) -> Result<ArrayD<F>> {
    let want = dtype_of::<F>();
    let mismatch = |expected: String, found: String| PhmError::CheckpointMismatch {
        source: source.to_string(),
        tensor: name.to_string(),
        expected,
        found,
    };
    let view = st.tensor(name).map_err(|_| {
        mismatch(
            match shape {
                Some(s) => describe_tensor(want, s),
                None => format!("a {want:?} tensor"),
            },
            "no such tensor".to_string(),
        )
    })?;
    if view.dtype() != want {
        return Err(mismatch(
            format!("dtype {want:?}"),
            format!("dtype {:?}", view.dtype()),
        ));
    }
    if let Some(s) = shape {
        if view.shape() != s {
            return Err(mismatch(
                describe_tensor(want, s),
                describe_tensor(view.dtype(), view.shape()),
            ));
        }
    }
    let data = view.data();
    let values: Vec<F> = if want == Dtype::F32 {
        data.chunks_exact(4)
            .map(|c| F::of(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64))
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|c| F::of(f64::from_le_bytes(c.try_into().expect("chunks of 8"))))
            .collect()
    };
    // The parser checked that the data length matches the shape and dtype.
    ArrayD::from_shape_vec(IxDyn(view.shape()), values)
        .map_err(|e| mismatch(describe_tensor(want, view.shape()), e.to_string()))
}

/// The rank-0 `F64` tensor `name` of `st`.
pub(crate) fn decode_scalar(st: &SafeTensors<'_>, name: &str, source: &str) -> Result<f64> {
    let a = decode::<f64>(st, name, Some(&[]), source)?;
    Ok(a.iter().next().copied().unwrap_or(f64::NAN))
}

/// Every distinct parameter of `model`, encoded, named `{prefix}{path}`.
pub(crate) fn encode_params<F: Float>(
    model: &dyn Module<F>,
    prefix: &str,
    out: &mut BTreeMap<String, Encoded>,
) {
    for (path, p) in params(model) {
        out.insert(format!("{prefix}{path}"), encode(p.read().value()));
    }
}

/// The crate version, the float type, the file kind and every layer's description and
/// hyperparameters.
pub(crate) fn base_metadata<F: Float>(
    model: &dyn Module<F>,
    kind: &str,
) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    meta.insert(
        KEY_VERSION.to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    meta.insert(KEY_FORMAT.to_string(), kind.to_string());
    meta.insert(KEY_DTYPE.to_string(), float_name::<F>().to_string());
    describe_modules(model, String::new(), &mut meta);
    meta
}

fn describe_modules<F: Float>(m: &dyn Module<F>, path: String, out: &mut BTreeMap<String, String>) {
    let key = if path.is_empty() {
        "module".to_string()
    } else {
        format!("module.{path}")
    };
    let mut leaf = true;
    m.visit_children(&mut |name, child| {
        leaf = false;
        describe_modules(child, join(&path, name), out);
    });
    if leaf {
        out.insert(key.clone(), m.describe());
    }
    for (name, value) in m.hyperparameters() {
        out.insert(format!("{key}.{name}"), value);
    }
}

/// Reads and checks every parameter of `model` from the tensors `{prefix}{path}` of `st`
/// (dtype, shape, presence), without changing the model; returns the values to assign.
pub(crate) fn read_params<F: Float>(
    st: &SafeTensors<'_>,
    model: &dyn Module<F>,
    prefix: &str,
    source: &str,
) -> Result<Vec<(Param<F>, ArrayD<F>)>> {
    let mut out = Vec::new();
    for (path, p) in params(model) {
        let value = decode::<F>(st, &format!("{prefix}{path}"), Some(&p.shape()), source)?;
        out.push((p, value));
    }
    Ok(out)
}

/// An error for a tensor of the file that nothing in the model (or optimizer) takes.
pub(crate) fn extra_tensor(st: &SafeTensors<'_>, name: &str, source: &str) -> PhmError {
    let found = st
        .tensor(name)
        .map(|v| describe_tensor(v.dtype(), v.shape()))
        .unwrap_or_else(|_| "a tensor".to_string());
    PhmError::CheckpointMismatch {
        source: source.to_string(),
        tensor: name.to_string(),
        expected: "no such tensor (the model has no parameter of this path)".to_string(),
        found,
    }
}

/// Writes checked values into the parameters (cannot fail: shapes were checked).
pub(crate) fn assign<F: Float>(values: Vec<(Param<F>, ArrayD<F>)>) {
    for (p, v) in values {
        p.write().value_mut().assign(&v);
    }
}

/// The safetensors bytes of `model`: its distinct parameter tensors under their paths and the
/// metadata described in the [module docs](super).
///
/// # Errors
/// [`PhmError::InvalidArgument`] if the header would be too large for the format (over 100 MB
/// of names and metadata).
pub fn model_to_bytes<F: Float>(model: &dyn Module<F>) -> Result<Vec<u8>> {
    let mut tensors = BTreeMap::new();
    encode_params(model, "", &mut tensors);
    serialize(&tensors, base_metadata(model, "model"))
}

/// Saves `model` to `path` crash-safely (temporary file, sync, rename; see the
/// [module docs](super)).
///
/// # Errors
/// [`PhmError::Write`] naming the path if the file cannot be written (the previous file at
/// `path`, if any, is unchanged), and the errors of [`model_to_bytes`].
pub fn save_model<F: Float>(model: &dyn Module<F>, path: impl AsRef<Path>) -> Result<()> {
    write_atomic(path.as_ref(), &model_to_bytes(model)?)
}

/// Loads parameter values saved by [`model_to_bytes`] into `model`, which must have the same
/// architecture (the same parameter paths, shapes and float type); returns the file's
/// metadata. All or nothing: on error no parameter is changed.
///
/// # Errors
/// - [`PhmError::CheckpointFormat`] if `bytes` are not a valid safetensors file (truncated,
///   corrupted, another format);
/// - [`PhmError::CheckpointMismatch`] naming the tensor with the expected and the found shape
///   or dtype, if a tensor has another shape or dtype, a parameter has no tensor, or a tensor
///   has no parameter.
pub fn load_model_from_bytes<F: Float>(
    model: &dyn Module<F>,
    bytes: &[u8],
) -> Result<BTreeMap<String, String>> {
    load_model_impl(model, bytes, "bytes")
}

/// Loads the checkpoint at `path` into `model`, as [`load_model_from_bytes`]; returns its
/// metadata.
///
/// # Errors
/// [`PhmError::Io`] if the file cannot be read, and the errors of [`load_model_from_bytes`]
/// (naming the path).
pub fn load_model<F: Float>(
    model: &dyn Module<F>,
    path: impl AsRef<Path>,
) -> Result<BTreeMap<String, String>> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    load_model_impl(model, &bytes, &path.display().to_string())
}

/// The metadata of the checkpoint at `path` (model or training), without loading tensors.
///
/// # Errors
/// [`PhmError::Io`] if the file cannot be read, [`PhmError::CheckpointFormat`] if it is not a
/// valid safetensors file.
pub fn read_metadata(path: impl AsRef<Path>) -> Result<BTreeMap<String, String>> {
    let path = path.as_ref();
    metadata_of(&read_file(path)?, &path.display().to_string())
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| PhmError::Io {
        path: path.display().to_string(),
        kind: e.kind(),
        reason: e.to_string(),
    })
}

fn load_model_impl<F: Float>(
    model: &dyn Module<F>,
    bytes: &[u8],
    source: &str,
) -> Result<BTreeMap<String, String>> {
    let st = parse(bytes, source)?;
    let values = read_params(&st, model, "", source)?;
    let known: HashSet<String> = params(model).into_iter().map(|(path, _)| path).collect();
    let mut names = st.names();
    names.sort();
    if let Some(extra) = names.into_iter().find(|n| !known.contains(*n)) {
        return Err(extra_tensor(&st, extra, source));
    }
    let meta = metadata_of(bytes, source)?;
    assign(values);
    Ok(meta)
}
