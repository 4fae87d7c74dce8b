//! The crate's error type: everything a user can get wrong in configuration or data.
//!
//! Programmer errors (a batch with the wrong number of columns passed to `forward`, `backward`
//! called before `forward`) panic instead, with a message naming both shapes; see each
//! method's `# Panics` section.
//!
//! ```
//! use phm_nn::{PhmError, PhmShape};
//! let err = PhmShape::new(10, 8, 4).unwrap_err();
//! assert_eq!(err.to_string(), "in_features 10 is not divisible by n = 4");
//! assert!(matches!(err, PhmError::NotDivisible { .. }));
//! ```

use std::fmt;

/// Errors returned for invalid configuration, invalid tensors or invalid data.
///
/// Every message names the offending values.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PhmError {
    /// The hypercomplex dimension `n` was zero.
    ZeroN,
    /// A size is zero where a positive size is required (e.g. `in_features = 0`).
    ZeroSize {
        /// Which size, e.g. `"in_features"`.
        what: &'static str,
    },
    /// A layer size is not a multiple of `n`.
    NotDivisible {
        /// Which size, e.g. `"in_features"`.
        what: &'static str,
        /// The size given.
        size: usize,
        /// The hypercomplex dimension.
        n: usize,
    },
    /// A tensor handed to a constructor has the wrong shape.
    ShapeMismatch {
        /// Which tensor, e.g. `"rules"`.
        what: &'static str,
        /// The shape that was expected.
        expected: Vec<usize>,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// A hyperparameter or other argument is out of its valid range.
    InvalidArgument {
        /// Which argument, e.g. `"lr"`.
        what: &'static str,
        /// Why it is invalid, naming the value.
        reason: String,
    },
    /// A class label is not below the number of classes.
    LabelOutOfRange {
        /// Row of the batch holding the label.
        row: usize,
        /// The label.
        label: usize,
        /// Number of classes (columns of the logits).
        classes: usize,
    },
    /// A gradient holds NaN or infinity; the optimizer left every parameter unchanged.
    NonFiniteGradient {
        /// Path of the first parameter found with a non-finite gradient.
        param: String,
    },
    /// An optimizer step would have written NaN or infinity into a parameter (e.g. a huge
    /// learning rate); the optimizer left every parameter and its own state unchanged.
    NonFiniteUpdate {
        /// Path of the first parameter whose new value is not finite.
        param: String,
    },
    /// A size computation overflows, or a tensor would be too large to allocate.
    TooLarge {
        /// What was being sized, e.g. `"blocks"`.
        what: &'static str,
        /// The sizes involved.
        reason: String,
    },
    /// A file could not be opened or read (e.g. it does not exist).
    Io {
        /// The file's path, as given.
        path: String,
        /// The kind of I/O error, e.g. [`std::io::ErrorKind::NotFound`].
        kind: std::io::ErrorKind,
        /// The I/O error's message.
        reason: String,
    },
    /// Data read from a file (or from data bundled with the crate) is malformed: not the
    /// expected compression, wrong number of columns, a value that is not a number or is out
    /// of range.
    Data {
        /// Where the data came from: the file's path, or a name such as `"bundled digits"`.
        source: String,
        /// The 1-based line of the offending record, if the problem is on one line.
        line: Option<usize>,
        /// What is wrong, naming the offending value.
        reason: String,
    },
    /// A file could not be written (e.g. a checkpoint: the folder does not exist, the disk is
    /// full); the previous file at that path, if any, is unchanged.
    Write {
        /// The file's path, as given.
        path: String,
        /// The kind of I/O error.
        kind: std::io::ErrorKind,
        /// The I/O error's message.
        reason: String,
    },
    /// A checkpoint is not a readable safetensors file of this crate: truncated, corrupted,
    /// another format, or its metadata is malformed.
    CheckpointFormat {
        /// Where the bytes came from: the file's path, or `"bytes"`.
        source: String,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint does not fit the model (or optimizer) it is loaded into: a tensor with
    /// another shape or dtype, a missing tensor, or one the model does not have. Nothing was
    /// loaded.
    CheckpointMismatch {
        /// Where the bytes came from: the file's path, or `"bytes"`.
        source: String,
        /// The tensor's name in the checkpoint (the parameter path, e.g. `"0.blocks"`).
        tensor: String,
        /// What the model expects, e.g. `"shape [4, 16, 8]"` or `"dtype F32"`.
        expected: String,
        /// What the checkpoint holds, e.g. `"shape [4, 8, 8]"`, or `"no such tensor"`.
        found: String,
    },
    /// A checkpoint was written by a model of another architecture: a layer of another kind,
    /// or a hyperparameter that changes the function (heads, stride, frozen or learned rules)
    /// differs, although the tensors may have the same shapes. Nothing was loaded; see
    /// [`LoadOptions::weights_only`](crate::io::LoadOptions::weights_only) to copy the
    /// tensors anyway.
    ArchitectureMismatch {
        /// Where the bytes came from: the file's path, or `"bytes"`.
        source: String,
        /// The layer's path (`"0"`, `"blocks.1.attn"`; `""` for the model itself).
        layer: String,
        /// The entry that differs: `"describe"` (the layer's kind and shape) or a
        /// hyperparameter's name (`"heads"`, `"rules"`).
        key: String,
        /// What the model has (`None`: the model has no such entry).
        expected: Option<String>,
        /// What the file records (`None`: the file has no such entry).
        found: Option<String>,
    },
}

impl fmt::Display for PhmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhmError::ZeroN => write!(f, "n must be at least 1, got n = 0"),
            PhmError::ZeroSize { what } => write!(f, "{what} must be at least 1, got 0"),
            PhmError::NotDivisible { what, size, n } => {
                write!(f, "{what} {size} is not divisible by n = {n}")
            }
            PhmError::ShapeMismatch {
                what,
                expected,
                got,
            } => write!(f, "{what} has shape {got:?}, expected {expected:?}"),
            PhmError::InvalidArgument { what, reason } => write!(f, "invalid {what}: {reason}"),
            PhmError::LabelOutOfRange {
                row,
                label,
                classes,
            } => write!(
                f,
                "label {label} in row {row} is out of range for {classes} classes"
            ),
            PhmError::NonFiniteGradient { param } => write!(
                f,
                "gradient of parameter `{param}` is not finite (NaN or inf); no parameter was updated"
            ),
            PhmError::NonFiniteUpdate { param } => write!(
                f,
                "the update of parameter `{param}` is not finite (NaN or inf); no parameter was updated"
            ),
            PhmError::TooLarge { what, reason } => write!(f, "{what} is too large: {reason}"),
            PhmError::Io { path, reason, .. } => write!(f, "cannot read {path}: {reason}"),
            PhmError::Write { path, reason, .. } => write!(f, "cannot write {path}: {reason}"),
            PhmError::CheckpointFormat { source, reason } => {
                write!(f, "{source} is not a valid checkpoint: {reason}")
            }
            PhmError::CheckpointMismatch {
                source,
                tensor,
                expected,
                found,
            } => write!(
                f,
                "{source}: tensor `{tensor}`: expected {expected}, found {found}"
            ),
            PhmError::ArchitectureMismatch {
                source,
                layer,
                key,
                expected,
                found,
            } => {
                let show = |v: &Option<String>| match v {
                    Some(v) => format!("`{v}`"),
                    None => "no such entry".to_string(),
                };
                let layer = if layer.is_empty() {
                    "(the model itself)"
                } else {
                    layer
                };
                write!(
                    f,
                    "{source}: layer `{layer}`: `{key}`: the model has {}, the file has {} \
                     (load with LoadOptions::weights_only() to copy the tensors anyway)",
                    show(expected),
                    show(found)
                )
            }
            PhmError::Data {
                source,
                line: Some(line),
                reason,
            } => write!(f, "{source}, line {line}: {reason}"),
            PhmError::Data {
                source,
                line: None,
                reason,
            } => write!(f, "{source}: {reason}"),
        }
    }
}

impl std::error::Error for PhmError {}

/// Shorthand for `Result<T, PhmError>`.
pub type Result<T> = std::result::Result<T, PhmError>;

/// Checks that `got` equals `expected`, naming the tensor in the error.
pub(crate) fn check_shape(what: &'static str, expected: &[usize], got: &[usize]) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(PhmError::ShapeMismatch {
            what,
            expected: expected.to_vec(),
            got: got.to_vec(),
        })
    }
}
