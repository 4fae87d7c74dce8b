//! Model checkpoints: every distinct parameter tensor under its path, with the layers'
//! hyperparameters in the metadata. See the [module docs](super) for the format.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use safetensors::{Dtype, SafeTensors, View};

use super::atomic::write_atomic;
use crate::error::{PhmError, Result};
use crate::module::{check_paths, join, params, Module, Param};
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

/// Metadata key of the CRC-32 of the header (see [`header_text`]).
pub(crate) const KEY_HEADER_CRC: &str = "phm_nn.header_crc32";
/// Prefix of the metadata keys holding each tensor's CRC-32 (`crc32.{tensor name}`).
pub(crate) const CRC_PREFIX: &str = "crc32.";

/// The largest header the safetensors format reads (its parser's limit).
const MAX_HEADER: usize = 100_000_000;

/// CRC-32 (IEEE) as 8 lowercase hexadecimal digits.
fn crc_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// The text the header checksum covers: every tensor's name, dtype and shape, and every
/// metadata entry but the header checksum itself, in sorted order, each field
/// length-prefixed (so no two headers give the same text).
fn header_text<'a>(
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize])>,
    metadata: &BTreeMap<String, String>,
) -> String {
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut text = String::new();
    for (name, dtype, shape) in sorted {
        text.push_str(&format!("t{}:{name}{dtype:?}{shape:?}\n", name.len()));
    }
    for (k, v) in metadata.iter().filter(|(k, _)| *k != KEY_HEADER_CRC) {
        text.push_str(&format!("m{}:{k}{}:{v}\n", k.len(), v.len()));
    }
    text
}

/// Appends `s` to `out` as a JSON string.
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Serializes `tensors` and `metadata` to safetensors bytes, deterministically (the same
/// input gives the same bytes in every process: metadata and tensors in sorted order), with
/// the checksums: `crc32.{name}` of every tensor's bytes and [`KEY_HEADER_CRC`] of the
/// header.
pub(crate) fn serialize(
    tensors: &BTreeMap<String, Encoded>,
    mut metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    for (name, t) in tensors {
        metadata.insert(format!("{CRC_PREFIX}{name}"), crc_hex(&t.data));
    }
    let text = header_text(
        tensors
            .iter()
            .map(|(k, t)| (k.as_str(), t.dtype, t.shape.as_slice())),
        &metadata,
    );
    metadata.insert(KEY_HEADER_CRC.to_string(), crc_hex(text.as_bytes()));
    // Wider dtypes first, then by name: every tensor stays aligned to its element size.
    let mut order: Vec<(&String, &Encoded)> = tensors.iter().collect();
    order.sort_by(|a, b| (b.1.dtype.bitsize(), a.0).cmp(&(a.1.dtype.bitsize(), b.0)));
    let mut header = String::from("{\"__metadata__\":{");
    for (i, (k, v)) in metadata.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        json_string(k, &mut header);
        header.push(':');
        json_string(v, &mut header);
    }
    header.push('}');
    let mut offset = 0usize;
    for (name, t) in &order {
        header.push(',');
        json_string(name, &mut header);
        let end = offset + t.data.len();
        header.push_str(&format!(
            ":{{\"dtype\":\"{:?}\",\"shape\":{:?},\"data_offsets\":[{offset},{end}]}}",
            t.dtype, t.shape
        ));
        offset = end;
    }
    header.push('}');
    // The data starts at a multiple of 8 bytes (spaces pad the header, as the format allows).
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    if header.len() > MAX_HEADER {
        return Err(PhmError::InvalidArgument {
            what: "checkpoint",
            reason: format!(
                "cannot serialize: the header ({} bytes of names and metadata) exceeds the \
                 format's limit of {MAX_HEADER} bytes",
                header.len()
            ),
        });
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for (_, t) in &order {
        out.extend_from_slice(&t.data);
    }
    Ok(out)
}

/// Parses safetensors bytes and verifies their checksums; returns the tensors and the
/// metadata (sorted; empty if the file has none). Any malformation, and any checksum that
/// does not match, is a [`PhmError::CheckpointFormat`]. A file without any checksum key (written
/// before checksums existed, or by another tool) is not verified.
pub(crate) fn parse<'a>(
    bytes: &'a [u8],
    source: &str,
) -> Result<(SafeTensors<'a>, BTreeMap<String, String>)> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| PhmError::CheckpointFormat {
        source: source.to_string(),
        reason: format!("not a readable safetensors file ({e})"),
    })?;
    let meta = metadata_of(bytes, source)?;
    verify_checksums(&st, &meta, source)?;
    Ok((st, meta))
}

fn verify_checksums(
    st: &SafeTensors<'_>,
    meta: &BTreeMap<String, String>,
    source: &str,
) -> Result<()> {
    let checksummed =
        meta.contains_key(KEY_HEADER_CRC) || meta.keys().any(|k| k.starts_with(CRC_PREFIX));
    if !checksummed {
        return Ok(());
    }
    let bad = |reason: String| PhmError::CheckpointFormat {
        source: source.to_string(),
        reason,
    };
    let tensors = st.tensors();
    let recorded = meta.get(KEY_HEADER_CRC).ok_or_else(|| {
        bad(format!(
            "metadata `{KEY_HEADER_CRC}` is missing although the file has tensor checksums \
             (the header is corrupted)"
        ))
    })?;
    let text = header_text(
        tensors
            .iter()
            .map(|(k, v)| (k.as_str(), v.dtype(), v.shape())),
        meta,
    );
    let actual = crc_hex(text.as_bytes());
    if *recorded != actual {
        return Err(bad(format!(
            "header checksum mismatch: `{KEY_HEADER_CRC}` records {recorded}, the header gives \
             {actual} (the header is corrupted or was edited)"
        )));
    }
    let mut sorted: Vec<_> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in sorted {
        let key = format!("{CRC_PREFIX}{name}");
        let recorded = meta
            .get(&key)
            .ok_or_else(|| bad(format!("tensor `{name}`: its checksum `{key}` is missing")))?;
        let actual = crc_hex(view.data());
        if *recorded != actual {
            return Err(bad(format!(
                "tensor `{name}`: checksum mismatch: the file records {recorded}, its bytes give \
                 {actual} (the data is corrupted)"
            )));
        }
    }
    if let Some(orphan) = meta
        .keys()
        .filter_map(|k| k.strip_prefix(CRC_PREFIX))
        .find(|name| st.tensor(name).is_err())
    {
        return Err(bad(format!(
            "metadata `{CRC_PREFIX}{orphan}`: a checksum of a tensor the file does not have"
        )));
    }
    Ok(())
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
///
/// # Errors
/// The error of [`check_paths`] if two things of `model` share a path (one would be lost).
pub(crate) fn encode_params<F: Float>(
    model: &dyn Module<F>,
    prefix: &str,
    out: &mut BTreeMap<String, Encoded>,
) -> Result<()> {
    check_paths(model)?;
    for (path, p) in params(model) {
        out.insert(format!("{prefix}{path}"), encode(p.read().value()));
    }
    Ok(())
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
    for (key, entry) in architecture(model) {
        meta.insert(key, entry.value);
    }
    meta
}

/// One entry of a model's architecture in the metadata.
pub(crate) struct ArchEntry {
    /// The layer's path (`""` for the model itself).
    layer: String,
    /// `"describe"` or the hyperparameter's name.
    name: String,
    /// The recorded text.
    value: String,
}

/// The architecture entries of `model` by metadata key: `module.{path}` for each leaf
/// layer's [`describe`](Module::describe), `module.{path}.{name}` for every layer's
/// [`hyperparameters`](Module::hyperparameters) (`module` and `module.{name}` at the root).
pub(crate) fn architecture<F: Float>(model: &dyn Module<F>) -> BTreeMap<String, ArchEntry> {
    let mut out = BTreeMap::new();
    describe_modules(model, String::new(), &mut out);
    out
}

fn describe_modules<F: Float>(
    m: &dyn Module<F>,
    path: String,
    out: &mut BTreeMap<String, ArchEntry>,
) {
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
    let entry = |name: &str, value: String| ArchEntry {
        layer: path.clone(),
        name: name.to_string(),
        value,
    };
    if leaf {
        out.insert(key.clone(), entry("describe", m.describe()));
    }
    for (name, value) in m.hyperparameters() {
        out.insert(format!("{key}.{name}"), entry(&name, value));
    }
}

/// Checks the architecture recorded in a file's metadata against `model`'s (see
/// [`LoadOptions`]): every `module*` entry of either must be in the other with the same
/// text. A file without [`KEY_FORMAT`] (a plain state dict, another tool's file) records no
/// architecture and passes.
pub(crate) fn check_architecture<F: Float>(
    model: &dyn Module<F>,
    meta: &BTreeMap<String, String>,
    source: &str,
) -> Result<()> {
    if !meta.contains_key(KEY_FORMAT) {
        return Ok(());
    }
    let is_arch = |k: &str| k == "module" || k.starts_with("module.");
    let expected = architecture(model);
    let mismatch = |layer: String, key: String, e: Option<&str>, f: Option<&str>| {
        PhmError::ArchitectureMismatch {
            source: source.to_string(),
            layer,
            key,
            expected: e.map(str::to_string),
            found: f.map(str::to_string),
        }
    };
    for (key, entry) in &expected {
        let found = meta.get(key).map(String::as_str);
        if found != Some(entry.value.as_str()) {
            return Err(mismatch(
                entry.layer.clone(),
                entry.name.clone(),
                Some(&entry.value),
                found,
            ));
        }
    }
    if let Some((key, value)) = meta
        .iter()
        .find(|(k, _)| is_arch(k) && !expected.contains_key(*k))
    {
        // Not in the model: name the layer as well as the key allows.
        let rest = key.strip_prefix("module.").unwrap_or("");
        let (layer, name) = match rest.rsplit_once('.') {
            Some((layer, name)) => (layer.to_string(), name.to_string()),
            None => (rest.to_string(), "describe".to_string()),
        };
        return Err(mismatch(layer, name, None, Some(value)));
    }
    Ok(())
}

/// How [`load_model_with`] (and [`load_training_with`](super::load_training_with)) treat
/// the architecture the file records.
///
/// ```
/// use phm_nn::prelude::*;
/// use phm_nn::io::{self, LoadOptions};
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let relu = Sequential::<f32>::new()
///     .add(LinearConfig::new(4, 4).init(&mut rng)?)
///     .add(Relu::new());
/// let bytes = io::model_to_bytes(&relu)?;
/// let mut tanh = Sequential::<f32>::new()
///     .add(LinearConfig::new(4, 4).init(&mut rng)?)
///     .add(Tanh::new());
/// // Same tensors, another activation: refused by default...
/// let err = io::load_model_from_bytes(&mut tanh, &bytes).unwrap_err();
/// assert!(err.to_string().starts_with(
///     "bytes: layer `1`: `describe`: the model has `Tanh`, the file has `Relu`"));
/// // ...copied when asked for explicitly.
/// io::load_model_from_bytes_with(&mut tanh, &bytes, LoadOptions::weights_only())?;
/// # Ok::<(), phm_nn::PhmError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Compare the architecture the file records (each layer's `describe` and
    /// hyperparameters, under `module.*` in the metadata) with the model's, and refuse the
    /// file on any difference ([`PhmError::ArchitectureMismatch`]). `true` by default. A file
    /// that records no architecture (no `phm_nn.format` key: a plain state dict, another
    /// tool's file) is loaded by tensor names, shapes and dtypes only, either way.
    pub check_architecture: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            check_architecture: true,
        }
    }
}

impl LoadOptions {
    /// Load the tensors only (names, shapes and dtypes still checked, checksums still
    /// verified), whatever architecture the file records: e.g. the weights of a ReLU model
    /// into a GELU one on purpose.
    pub fn weights_only() -> Self {
        LoadOptions {
            check_architecture: false,
        }
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
    check_paths(model)?;
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
/// metadata described in the [module docs](super), checksums included. Deterministic: the
/// same model gives the same bytes in every process.
///
/// # Errors
/// - [`PhmError::InvalidArgument`] if two modules or tensors of `model` have the same path
///   ([`check_paths`]);
/// - [`PhmError::InvalidArgument`] if the header would be too large for the format (over
///   100 MB of names and metadata).
pub fn model_to_bytes<F: Float>(model: &dyn Module<F>) -> Result<Vec<u8>> {
    let mut tensors = BTreeMap::new();
    encode_params(model, "", &mut tensors)?;
    serialize(&tensors, base_metadata(model, "model"))
}

/// Saves `model` to `path` crash-safely (temporary file, sync, rename; see the
/// [module docs](super)). If `path` is a symbolic link, the file it points to is replaced
/// and the link stays.
///
/// # Errors
/// [`PhmError::Write`] naming the path if the file cannot be written (the previous file at
/// `path`, if any, is unchanged), and the errors of [`model_to_bytes`].
pub fn save_model<F: Float>(model: &dyn Module<F>, path: impl AsRef<Path>) -> Result<()> {
    write_atomic(path.as_ref(), &model_to_bytes(model)?)
}

/// Loads parameter values saved by [`model_to_bytes`] into `model`, which must have the same
/// architecture (the same parameter paths, shapes and float type, and the same layers and
/// hyperparameters as the file records); returns the file's metadata. All or nothing: on
/// error no parameter is changed. The same as [`load_model_from_bytes_with`] with the default
/// [`LoadOptions`].
///
/// Loading takes `&mut model`: no inference (`infer(&model)`) can run while the values
/// change, so every inference sees either all old or all new values. To reload a model that
/// serves other threads, keep it behind a lock (e.g. `RwLock`) and load under its write guard.
///
/// ```compile_fail,E0502
/// use phm_nn::prelude::*;
/// let mut model = Sequential::<f32>::new().add(Relu::new());
/// let bytes = phm_nn::io::model_to_bytes(&model).unwrap();
/// std::thread::scope(|s| {
///     s.spawn(|| model.infer(ndarray::ArrayD::zeros(vec![1, 1]).view()));
///     // A shared borrow is serving: loading needs `&mut` and does not compile.
///     phm_nn::io::load_model_from_bytes(&mut model, &bytes).unwrap();
/// });
/// ```
///
/// # Errors
/// - [`PhmError::CheckpointFormat`] if `bytes` are not a valid safetensors file (truncated,
///   corrupted, another format) or a checksum does not match (naming the tensor);
/// - [`PhmError::CheckpointMismatch`] naming the tensor with the expected and the found shape
///   or dtype, if a tensor has another shape or dtype, a parameter has no tensor, or a tensor
///   has no parameter;
/// - [`PhmError::ArchitectureMismatch`] naming the layer and the entry, if the file records
///   another architecture;
/// - [`PhmError::InvalidArgument`] if two modules or tensors of `model` have the same path.
pub fn load_model_from_bytes<F: Float>(
    model: &mut dyn Module<F>,
    bytes: &[u8],
) -> Result<BTreeMap<String, String>> {
    load_model_impl(model, bytes, "bytes", LoadOptions::default())
}

/// [`load_model_from_bytes`] with [`LoadOptions`] (e.g. [`LoadOptions::weights_only`]).
///
/// # Errors
/// As [`load_model_from_bytes`] (no [`PhmError::ArchitectureMismatch`] when
/// `check_architecture` is off).
pub fn load_model_from_bytes_with<F: Float>(
    model: &mut dyn Module<F>,
    bytes: &[u8],
    options: LoadOptions,
) -> Result<BTreeMap<String, String>> {
    load_model_impl(model, bytes, "bytes", options)
}

/// Loads the checkpoint at `path` into `model`, as [`load_model_from_bytes`]; returns its
/// metadata.
///
/// # Errors
/// [`PhmError::Io`] if the file cannot be read, and the errors of [`load_model_from_bytes`]
/// (naming the path).
pub fn load_model<F: Float>(
    model: &mut dyn Module<F>,
    path: impl AsRef<Path>,
) -> Result<BTreeMap<String, String>> {
    load_model_with(model, path, LoadOptions::default())
}

/// [`load_model`] with [`LoadOptions`] (e.g. [`LoadOptions::weights_only`]).
///
/// # Errors
/// As [`load_model`] (no [`PhmError::ArchitectureMismatch`] when `check_architecture` is
/// off).
pub fn load_model_with<F: Float>(
    model: &mut dyn Module<F>,
    path: impl AsRef<Path>,
    options: LoadOptions,
) -> Result<BTreeMap<String, String>> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    load_model_impl(model, &bytes, &path.display().to_string(), options)
}

/// The metadata of the checkpoint at `path` (model or training), without loading tensors;
/// the checksums are verified.
///
/// # Errors
/// [`PhmError::Io`] if the file cannot be read, [`PhmError::CheckpointFormat`] if it is not a
/// valid safetensors file or a checksum does not match.
pub fn read_metadata(path: impl AsRef<Path>) -> Result<BTreeMap<String, String>> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    Ok(parse(&bytes, &path.display().to_string())?.1)
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| PhmError::Io {
        path: path.display().to_string(),
        kind: e.kind(),
        reason: e.to_string(),
    })
}

fn load_model_impl<F: Float>(
    model: &mut dyn Module<F>,
    bytes: &[u8],
    source: &str,
    options: LoadOptions,
) -> Result<BTreeMap<String, String>> {
    let (st, meta) = parse(bytes, source)?;
    let values = read_params(&st, model, "", source)?;
    let known: HashSet<String> = params(model).into_iter().map(|(path, _)| path).collect();
    let mut names = st.names();
    names.sort();
    if let Some(extra) = names.into_iter().find(|n| !known.contains(*n)) {
        return Err(extra_tensor(&st, extra, source));
    }
    if options.check_architecture {
        check_architecture(model, &meta, source)?;
    }
    assign(values);
    Ok(meta)
}
