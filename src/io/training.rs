//! Training checkpoints: the model, the optimizer state, the schedule, the RNG position and
//! the counters in one safetensors file, to resume a run exactly.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::atomic::write_atomic;
use super::checkpoint::{
    assign, base_metadata, check_architecture, decode, decode_scalar, encode, encode_params,
    encode_scalar, extra_tensor, parse, read_file, read_params, serialize, LoadOptions,
};
use crate::error::{PhmError, Result};
use crate::module::{params, Module, ParamId};
use crate::optim::schedule::{Decay, Schedule, Warmup};
use crate::optim::{Optimizer, OptimizerState};
pub use crate::rng::RngState;
use crate::Float;

const MODEL: &str = "model.";
const OPT_TENSOR: &str = "optimizer.";
const OPT_SCALAR: &str = "optimizer_scalar.";

/// Everything of a training run besides the model and the optimizer: counters, schedule and
/// RNG position. Saved and restored by [`save_training`] and [`load_training`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingProgress {
    /// Completed epochs.
    pub epoch: u64,
    /// Completed optimizer steps.
    pub step: u64,
    /// The learning-rate schedule (with its own step counter), if any.
    pub schedule: Option<Schedule>,
    /// The position of the run's generator (shuffling, sampling).
    pub rng: RngState,
}

/// The safetensors bytes of a training checkpoint: `model`'s parameters (`model.{path}`),
/// `optimizer`'s state for them (`optimizer.{name}` tensors, `optimizer_scalar.{name}` `F64`
/// scalars) and `progress` in the metadata; see the [module docs](super).
///
/// # Errors
/// - As [`model_to_bytes`](super::model_to_bytes);
/// - [`PhmError::InvalidArgument`] if `optimizer` holds state for some parameters but for
///   none of `model`'s (e.g. `model` is a clone of the model the optimizer steps: the file
///   would silently hold no optimizer state).
pub fn training_to_bytes<F: Float>(
    model: &dyn Module<F>,
    optimizer: &dyn Optimizer<F>,
    progress: &TrainingProgress,
) -> Result<Vec<u8>> {
    let mut tensors = BTreeMap::new();
    encode_params(model, MODEL, &mut tensors)?;
    let held = optimizer.state_param_ids();
    if !held.is_empty() {
        let ids: HashSet<ParamId> = params(model).iter().map(|(_, p)| p.id()).collect();
        if !held.iter().any(|id| ids.contains(id)) {
            return Err(PhmError::InvalidArgument {
                what: "training checkpoint",
                reason: format!(
                    "the optimizer holds state for {} parameter tensors, none of them in this \
                     model (a clone of the model it steps?); save the model the optimizer steps",
                    held.len()
                ),
            });
        }
    }
    let state = optimizer.state(model);
    for (name, t) in &state.tensors {
        tensors.insert(format!("{OPT_TENSOR}{name}"), encode(t.view()));
    }
    for (name, &x) in &state.scalars {
        tensors.insert(format!("{OPT_SCALAR}{name}"), encode_scalar(x));
    }
    let mut meta = base_metadata(model, "training");
    write_progress(progress, &mut meta);
    serialize(&tensors, meta)
}

/// Saves a training checkpoint to `path` crash-safely (see [`training_to_bytes`] and the
/// [module docs](super)). If `path` is a symbolic link, the file it points to is replaced.
///
/// # Errors
/// [`PhmError::Write`] naming the path if the file cannot be written (the previous file is
/// unchanged), and the errors of [`training_to_bytes`].
pub fn save_training<F: Float>(
    model: &dyn Module<F>,
    optimizer: &dyn Optimizer<F>,
    progress: &TrainingProgress,
    path: impl AsRef<Path>,
) -> Result<()> {
    write_atomic(
        path.as_ref(),
        &training_to_bytes(model, optimizer, progress)?,
    )
}

/// Restores a training checkpoint made by [`training_to_bytes`] into a model of the same
/// architecture and an optimizer of the same kind, and returns the progress (counters,
/// schedule, RNG). All or nothing: on error neither the model nor the optimizer changes.
/// The same as [`load_training_from_bytes_with`] with the default [`LoadOptions`]; takes
/// `&mut model` for the reason [`load_model`](super::load_model) does.
///
/// # Errors
/// - [`PhmError::CheckpointFormat`] if the bytes are not a valid safetensors file, a checksum
///   does not match, or the metadata of the progress is missing, malformed or inconsistent
///   (naming the key);
/// - [`PhmError::CheckpointMismatch`] naming the tensor, and
///   [`PhmError::ArchitectureMismatch`] naming the layer, as for
///   [`load_model_from_bytes`](super::load_model_from_bytes);
/// - the errors of [`Optimizer::load_state`] (an optimizer of another kind, a state entry of
///   another shape, inconsistent entries), naming the entry.
pub fn load_training_from_bytes<F: Float>(
    model: &mut dyn Module<F>,
    optimizer: &mut dyn Optimizer<F>,
    bytes: &[u8],
) -> Result<TrainingProgress> {
    load_training_impl(model, optimizer, bytes, "bytes", LoadOptions::default())
}

/// [`load_training_from_bytes`] with [`LoadOptions`] (e.g. [`LoadOptions::weights_only`]).
///
/// # Errors
/// As [`load_training_from_bytes`] (no [`PhmError::ArchitectureMismatch`] when
/// `check_architecture` is off).
pub fn load_training_from_bytes_with<F: Float>(
    model: &mut dyn Module<F>,
    optimizer: &mut dyn Optimizer<F>,
    bytes: &[u8],
    options: LoadOptions,
) -> Result<TrainingProgress> {
    load_training_impl(model, optimizer, bytes, "bytes", options)
}

/// Restores the training checkpoint at `path`, as [`load_training_from_bytes`].
///
/// # Errors
/// [`PhmError::Io`] if the file cannot be read, and the errors of
/// [`load_training_from_bytes`] (naming the path).
pub fn load_training<F: Float>(
    model: &mut dyn Module<F>,
    optimizer: &mut dyn Optimizer<F>,
    path: impl AsRef<Path>,
) -> Result<TrainingProgress> {
    load_training_with(model, optimizer, path, LoadOptions::default())
}

/// [`load_training`] with [`LoadOptions`] (e.g. [`LoadOptions::weights_only`]).
///
/// # Errors
/// As [`load_training`] (no [`PhmError::ArchitectureMismatch`] when `check_architecture` is
/// off).
pub fn load_training_with<F: Float>(
    model: &mut dyn Module<F>,
    optimizer: &mut dyn Optimizer<F>,
    path: impl AsRef<Path>,
    options: LoadOptions,
) -> Result<TrainingProgress> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    load_training_impl(
        model,
        optimizer,
        &bytes,
        &path.display().to_string(),
        options,
    )
}

fn load_training_impl<F: Float>(
    model: &mut dyn Module<F>,
    optimizer: &mut dyn Optimizer<F>,
    bytes: &[u8],
    source: &str,
    options: LoadOptions,
) -> Result<TrainingProgress> {
    let (st, meta) = parse(bytes, source)?;
    let progress = read_progress(&meta, source)?;
    let values = read_params(&st, model, MODEL, source)?;
    let known: HashSet<String> = params(model)
        .into_iter()
        .map(|(path, _)| format!("{MODEL}{path}"))
        .collect();
    let mut state = OptimizerState::<F>::default();
    let mut names = st.names();
    names.sort();
    for name in names {
        if let Some(entry) = name.strip_prefix(OPT_TENSOR) {
            state
                .tensors
                .insert(entry.to_string(), decode::<F>(&st, name, None, source)?);
        } else if let Some(entry) = name.strip_prefix(OPT_SCALAR) {
            state
                .scalars
                .insert(entry.to_string(), decode_scalar(&st, name, source)?);
        } else if !known.contains(name) {
            return Err(extra_tensor(&st, name, source));
        }
    }
    if options.check_architecture {
        check_architecture(model, &meta, source)?;
    }
    optimizer.load_state(model, &state)?;
    assign(values);
    Ok(progress)
}

fn write_progress(p: &TrainingProgress, meta: &mut BTreeMap<String, String>) {
    let mut put = |k: &str, v: String| {
        meta.insert(k.to_string(), v);
    };
    put("train.epoch", p.epoch.to_string());
    put("train.step", p.step.to_string());
    put(
        "rng.seed",
        p.rng.seed.iter().map(|b| format!("{b:02x}")).collect(),
    );
    put("rng.stream", p.rng.stream.to_string());
    put("rng.word_pos", p.rng.word_pos.to_string());
    let Some(s) = &p.schedule else {
        put("schedule", "none".to_string());
        return;
    };
    put("schedule", "present".to_string());
    // `{:?}` of an f64 is the shortest text that parses back to the same bits.
    put("schedule.base_lr", format!("{:?}", s.base_lr()));
    put("schedule.step", s.step().to_string());
    if let Some(w) = s.warmup() {
        put("schedule.warmup_steps", w.steps.to_string());
        put(
            "schedule.warmup_start_factor",
            format!("{:?}", w.start_factor),
        );
    }
    match s.decay() {
        Decay::Constant => put("schedule.decay", "constant".to_string()),
        Decay::Step { step_size, gamma } => {
            put("schedule.decay", "step".to_string());
            put("schedule.step_size", step_size.to_string());
            put("schedule.gamma", format!("{gamma:?}"));
        }
        Decay::Cosine { t_max, min_lr } => {
            put("schedule.decay", "cosine".to_string());
            put("schedule.t_max", t_max.to_string());
            put("schedule.min_lr", format!("{min_lr:?}"));
        }
    }
}

/// The metadata of a training file, read with errors naming the key.
struct Meta<'a> {
    map: &'a BTreeMap<String, String>,
    source: &'a str,
}

impl<'a> Meta<'a> {
    fn bad(&self, key: &str, reason: String) -> PhmError {
        PhmError::CheckpointFormat {
            source: self.source.to_string(),
            reason: format!("metadata `{key}`: {reason}"),
        }
    }

    fn get(&self, key: &str) -> Result<&'a str> {
        self.map
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| self.bad(key, "missing (not a training checkpoint?)".to_string()))
    }

    /// A whole number: decimal digits only (no sign, no spaces), in `T`'s range.
    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let text = self.get(key)?;
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        match text.parse() {
            Ok(v) if digits => Ok(v),
            _ => Err(self.bad(
                key,
                format!("`{text}` is not a whole number in range (decimal digits only)"),
            )),
        }
    }

    /// A finite float, as written by `{:?}`.
    fn float(&self, key: &str) -> Result<f64> {
        let text = self.get(key)?;
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() && !text.starts_with('+') => Ok(v),
            _ => Err(self.bad(key, format!("`{text}` is not a finite number"))),
        }
    }
}

fn read_progress(map: &BTreeMap<String, String>, source: &str) -> Result<TrainingProgress> {
    let m = Meta { map, source };
    let seed_text = m.get("rng.seed")?;
    let bad_seed = || m.bad("rng.seed", "expected 64 hexadecimal digits".to_string());
    let mut seed = [0u8; 32];
    if seed_text.len() != 64 || !seed_text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad_seed());
    }
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&seed_text[2 * i..2 * i + 2], 16).map_err(|_| bad_seed())?;
    }
    let rng = RngState {
        seed,
        stream: m.num("rng.stream")?,
        word_pos: m.num("rng.word_pos")?,
    };
    let schedule = match m.get("schedule")? {
        "none" => None,
        "present" => {
            let warmup = if map.contains_key("schedule.warmup_steps") {
                Some(Warmup {
                    steps: m.num("schedule.warmup_steps")?,
                    start_factor: m.float("schedule.warmup_start_factor")?,
                })
            } else {
                None
            };
            let decay = match m.get("schedule.decay")? {
                "constant" => Decay::Constant,
                "step" => Decay::Step {
                    step_size: m.num("schedule.step_size")?,
                    gamma: m.float("schedule.gamma")?,
                },
                "cosine" => Decay::Cosine {
                    t_max: m.num("schedule.t_max")?,
                    min_lr: m.float("schedule.min_lr")?,
                },
                other => return Err(m.bad("schedule.decay", format!("unknown decay `{other}`"))),
            };
            let mut s = Schedule::new(m.float("schedule.base_lr")?, warmup, decay)
                .map_err(|e| m.bad("schedule", e.to_string()))?;
            s.set_step(m.num("schedule.step")?);
            Some(s)
        }
        other => {
            return Err(m.bad(
                "schedule",
                format!("expected `none` or `present`, got `{other}`"),
            ))
        }
    };
    let progress = TrainingProgress {
        epoch: m.num("train.epoch")?,
        step: m.num("train.step")?,
        schedule,
        rng,
    };
    // No entry that this progress would not write (e.g. `schedule.gamma` of a constant
    // schedule, a misspelt key): an edited file that says more than it means is refused.
    let mut expected = BTreeMap::new();
    write_progress(&progress, &mut expected);
    let ours = |k: &str| {
        k == "schedule"
            || ["schedule.", "train.", "rng."]
                .iter()
                .any(|p| k.starts_with(p))
    };
    if let Some(extra) = map.keys().find(|k| ours(k) && !expected.contains_key(*k)) {
        return Err(m.bad(
            extra,
            "unexpected for this progress (inconsistent with the other entries)".to_string(),
        ));
    }
    Ok(progress)
}
