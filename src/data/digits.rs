//! The UCI "Optical Recognition of Handwritten Digits" data: 8×8 images of the digits 0–9.
//!
//! E. Alpaydin, C. Kaynak, UCI Machine Learning Repository, DOI
//! [10.24432/C50P49](https://doi.org/10.24432/C50P49), licence CC BY 4.0. The crate ships the
//! 1,797-image copy that scikit-learn distributes (UCI's test set, `optdigits.tes`) as
//! `data/digits.csv.gz`; `data/README.md` in the repository gives its origin, format and
//! checksums. [`bundled`] reads the copy compiled into the library, so no file is needed at
//! run time; [`load`] reads the same format from a path.
//!
//! # Format
//! gzip-compressed text, one sample per line (`\n` or `\r\n`), no header, 65 comma-separated
//! integers: 64 pixel counts `p` in `0..=16` (the 8×8 image row by row) and then the label in
//! `0..=9`. Each pixel becomes the feature `p / 16 ∈ [0, 1]` (exact in `f32` and `f64`).
//! UCI's own `optdigits.tra`/`optdigits.tes` have the same lines without compression:
//! read them with [`from_csv`].
//!
//! # Errors
//! Nothing here panics on bad data. A file that cannot be read gives [`PhmError::Io`]; data
//! that is not gzip, is corrupt or truncated, or has a malformed line gives
//! [`PhmError::Data`], whose message names the file (or `"bundled digits"`), the 1-based line
//! and column, and the offending value:
//!
//! ```text
//! /tmp/d.csv.gz, line 3: column 65: label 12 is outside 0..=9
//! ```
//!
//! # Example
//! ```
//! use phm_nn::data::digits;
//!
//! let data = digits::bundled::<f64>()?;
//! assert_eq!(data.x().dim(), (digits::BUNDLED_SAMPLES, digits::FEATURES));
//! assert_eq!(data.class_counts(), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
//! assert_eq!(data.y()[0], 0);
//! assert_eq!(data.x()[[0, 2]], 5.0 / 16.0); // the first image's third pixel is 5
//!
//! let err = digits::from_csv::<f64>(b"1,2,3\n", "mine.csv").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "mine.csv, line 1: expected 65 comma-separated values (64 pixels, then the label), found 3"
//! );
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use std::io::Read;
use std::num::IntErrorKind;
use std::path::Path;

use flate2::read::MultiGzDecoder;
use ndarray::Array2;

use super::Dataset;
use crate::error::{PhmError, Result};
use crate::Float;

/// Pixels per image (8×8), the number of features.
pub const FEATURES: usize = 64;
/// Number of classes: the digits 0 to 9.
pub const CLASSES: usize = 10;
/// The largest pixel count (a 4×4 block fully on); features are `pixel / MAX_PIXEL`.
pub const MAX_PIXEL: u32 = 16;
/// Number of samples in the bundled file.
pub const BUNDLED_SAMPLES: usize = 1797;
/// The name [`bundled`] gives its data in error messages.
pub const BUNDLED_SOURCE: &str = "bundled digits";

/// The committed `data/digits.csv.gz`, byte for byte.
static BUNDLED_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// The 1,797 digits shipped with the crate: `x` is `(1797, 64)` in `[0, 1]`, `y` in `0..=9`.
///
/// Decompresses and parses the copy compiled into the library (about 58 kB), every call.
///
/// # Errors
/// [`PhmError::Data`] naming `"bundled digits"` if the compiled-in copy were malformed (the
/// crate's tests check that it is not).
pub fn bundled<F: Float>() -> Result<Dataset<F>> {
    from_gzip(BUNDLED_GZ, BUNDLED_SOURCE)
}

/// Reads a gzip-compressed digits file (see the [module docs](self) for the format).
///
/// # Errors
/// - [`PhmError::Io`] if the file cannot be read (e.g. it does not exist); the message names
///   the path.
/// - [`PhmError::Data`] naming the path, as [`from_gzip`] describes.
pub fn load<F: Float>(path: impl AsRef<Path>) -> Result<Dataset<F>> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| PhmError::Io {
        path: name.clone(),
        kind: e.kind(),
        reason: e.to_string(),
    })?;
    from_gzip(&bytes, &name)
}

/// Parses gzip-compressed digits data held in memory; `source` names it in errors.
///
/// Several gzip members one after another (as `cat a.gz b.gz` makes) are read as one file.
///
/// # Errors
/// [`PhmError::Data`] naming `source` if `bytes` does not start like gzip data (the message
/// shows its first bytes), if decompression fails (corrupt or truncated data), or for any
/// error that [`from_csv`] reports.
pub fn from_gzip<F: Float>(bytes: &[u8], source: &str) -> Result<Dataset<F>> {
    const MAGIC: [u8; 2] = [0x1f, 0x8b];
    if !bytes.starts_with(&MAGIC) {
        let reason = if bytes.is_empty() {
            "the data is empty, expected gzip data".to_string()
        } else {
            let head: Vec<String> = bytes.iter().take(2).map(|b| format!("{b:02x}")).collect();
            format!(
                "not gzip data: it starts with the bytes {}, expected 1f 8b",
                head.join(" ")
            )
        };
        return Err(data_error(source, None, reason));
    }
    let mut text = Vec::new();
    MultiGzDecoder::new(bytes)
        .read_to_end(&mut text)
        .map_err(|e| data_error(source, None, format!("corrupt gzip data: {e}")))?;
    from_csv(&text, source)
}

/// Parses uncompressed digits text (see the [module docs](self) for the format); `source`
/// names it in errors.
///
/// Spaces around a value are ignored; a final line without a newline is read like the
/// others. At least one sample is required.
///
/// # Errors
/// [`PhmError::Data`] naming `source`, the 1-based line (and 1-based column) and the
/// offending value, for the first of: a line that is not UTF-8, is empty, or does not have
/// 65 comma-separated values; a value that is not an integer; a pixel outside `0..=16`; a
/// label outside `0..=9`. With `line: None` if there is no sample at all.
pub fn from_csv<F: Float>(text: &[u8], source: &str) -> Result<Dataset<F>> {
    let columns = FEATURES + 1;
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop(); // the newline that ends the last line
    }
    for (i, raw) in lines.into_iter().enumerate() {
        let line = i + 1;
        let err = |reason: String| data_error(source, Some(line), reason);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let record = std::str::from_utf8(raw).map_err(|e| {
            let at = e.valid_up_to();
            err(format!(
                "byte {} (0x{:02x}) is not valid UTF-8 text",
                at + 1,
                raw[at]
            ))
        })?;
        if record.trim().is_empty() {
            return Err(err(format!(
                "empty line, expected {columns} comma-separated values"
            )));
        }
        let fields: Vec<&str> = record.split(',').collect();
        if fields.len() != columns {
            return Err(err(format!(
                "expected {columns} comma-separated values ({FEATURES} pixels, then the label), found {}",
                fields.len()
            )));
        }
        for (j, field) in fields.iter().enumerate() {
            let column = j + 1;
            let (what, max) = if j < FEATURES {
                ("pixel value", MAX_PIXEL as i64)
            } else {
                ("label", CLASSES as i64 - 1)
            };
            let raw_field = *field;
            let field = field.trim();
            let value = match field.parse::<i64>() {
                Ok(v) if (0..=max).contains(&v) => v,
                Ok(_) => {
                    return Err(err(format!(
                        "column {column}: {what} {field} is outside 0..={max}"
                    )))
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow
                    ) =>
                {
                    return Err(err(format!(
                        "column {column}: {what} {field} is outside 0..={max}"
                    )))
                }
                Err(_) => {
                    return Err(err(format!(
                        "column {column}: expected an integer, found {raw_field:?}"
                    )))
                }
            };
            if j < FEATURES {
                x.push(F::of(value as f64 / MAX_PIXEL as f64));
            } else {
                y.push(value as usize);
            }
        }
    }
    if y.is_empty() {
        return Err(data_error(source, None, "no samples".to_string()));
    }
    let x = Array2::from_shape_vec((y.len(), FEATURES), x)
        .expect("every accepted line adds exactly FEATURES values");
    Dataset::new(x, y)
}

fn data_error(source: &str, line: Option<usize>, reason: String) -> PhmError {
    PhmError::Data {
        source: source.to_string(),
        line,
        reason,
    }
}
