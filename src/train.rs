//! The classification training loop, written once: [`train_step`], [`fit_epoch`] and
//! [`evaluate`], shared by the examples and tests.
//!
//! One step is the pattern every model repeats:
//!
//! ```text
//!     zero_grad → lr from the schedule → forward → cross-entropy → backward
//!               → clip the global gradient norm (optional) → optimizer step
//! ```
//!
//! # Training and evaluation modes
//! Training runs [`Module::forward`]/[`Module::backward`] (`&mut model`: saved states,
//! accumulated gradients); [`evaluate`] runs [`Module::infer`] through `&model`, which saves
//! nothing and changes nothing, so evaluating in the middle of training cannot disturb it.
//! The layers of this crate behave the same in both modes (no dropout or batch statistics
//! yet); a layer that needs to differ would do so between `forward` and `infer`.
//!
//! # Determinism
//! Every random choice (the shuffle of each epoch) is drawn from the generator passed in;
//! with the same seed, model and optimizer a run is repeatable bit for bit, and with a
//! [`ChaCha8Rng`](rand::rngs::ChaCha8Rng) its position can be saved in a training checkpoint
//! ([`crate::io::save_training`]) to resume exactly.
//!
//! ```
//! use phm_nn::prelude::*;
//! use phm_nn::data::Dataset;
//! use phm_nn::train::{evaluate, fit_epoch, FitConfig};
//!
//! // Two separable classes in 4 dimensions.
//! let x = Array2::from_shape_fn((64, 4), |(i, j)| if (i % 2 == 0) == (j < 2) { 1.0f32 } else { 0.0 });
//! let y = (0..64).map(|i| i % 2).collect();
//! let data = Dataset::new(x, y)?;
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! let mut model = Sequential::new()
//!     .add(PhmLinearConfig::new(4, 8, 2).init::<f32, _>(&mut rng)?)
//!     .add(Relu::new())
//!     .add(LinearConfig::new(8, 2).init(&mut rng)?);
//! let mut opt = Adam::new(AdamConfig { lr: 0.05, ..AdamConfig::default() })?;
//! let config = FitConfig { batch_size: 16, max_grad_norm: Some(1.0) };
//! for _ in 0..20 {
//!     fit_epoch(&mut model, &mut opt, None, &data, &config, &mut rng)?;
//! }
//! let eval = evaluate(&model, &data, 32)?;
//! assert_eq!(eval.accuracy, 1.0);
//! assert_eq!(eval.confusion.total(), 64);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::Ix2;
use rand::Rng;

use crate::data::{Batch, Batches, ConfusionMatrix, Dataset};
use crate::error::{PhmError, Result};
use crate::loss::cross_entropy;
use crate::module::Module;
use crate::optim::schedule::Schedule;
use crate::optim::{clip_grad_norm, Optimizer};
use crate::Float;

/// How [`fit_epoch`] trains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitConfig {
    /// Samples per mini-batch (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Clip the global gradient norm to this value before each step ([`clip_grad_norm`]);
    /// `None` for no clipping.
    pub max_grad_norm: Option<f64>,
}

/// What one [`train_step`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy of the batch (before the step).
    pub loss: f64,
    /// Correctly classified samples of the batch (before the step).
    pub correct: usize,
    /// Samples in the batch.
    pub samples: usize,
    /// Global gradient norm before clipping, if clipping is on.
    pub grad_norm: Option<f64>,
    /// The learning rate the step used.
    pub lr: f64,
}

/// What one [`fit_epoch`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// Mean training cross-entropy over the epoch's samples (each measured before its step).
    pub loss: f64,
    /// Training accuracy over the epoch's samples (each measured before its step).
    pub accuracy: f64,
    /// Samples seen.
    pub samples: usize,
    /// Optimizer steps taken.
    pub steps: usize,
    /// The largest global gradient norm before clipping, if clipping is on.
    pub max_grad_norm: Option<f64>,
}

/// Loss, accuracy and confusion matrix of a model on a dataset ([`evaluate`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy over the samples.
    pub loss: f64,
    /// Fraction of samples whose largest logit is their label.
    pub accuracy: f64,
    /// Rows: true class; columns: predicted class.
    pub confusion: ConfusionMatrix,
}

/// One optimizer step on `batch` with cross-entropy loss (the [module docs](self) list the
/// order). With a schedule, the step runs at the schedule's current rate and the schedule is
/// advanced only if the step succeeds.
///
/// # Errors
/// [`PhmError::ZeroSize`] for an empty batch and [`PhmError::LabelOutOfRange`] if a label
/// is not below the model's output width ([`cross_entropy`]), the
/// errors of [`clip_grad_norm`] and of [`Optimizer::step`] (NaN or inf gradients or updates):
/// then no parameter and no counter has changed (the gradients hold the failed batch's).
///
/// # Panics
/// If the batch does not fit the model (its width is not the model's input width, or the
/// model's output is not `(batch, classes)`).
pub fn train_step<F: Float>(
    model: &mut dyn Module<F>,
    optimizer: &mut dyn Optimizer<F>,
    schedule: Option<&mut Schedule>,
    batch: &Batch<F>,
    max_grad_norm: Option<f64>,
) -> Result<StepStats> {
    model.zero_grad();
    if let Some(s) = schedule.as_deref() {
        s.apply(s.step(), optimizer)?;
    }
    let logits = model.forward(batch.x.view().into_dyn());
    let loss = match cross_entropy(logits.view(), &batch.y) {
        Ok(loss) => loss,
        Err(e) => {
            model.clear_saved();
            return Err(e);
        }
    };
    let correct =
        (crate::loss::accuracy(logits.view(), &batch.y) * batch.y.len() as f64).round() as usize;
    model.backward(loss.grad.view());
    let grad_norm = match max_grad_norm {
        Some(max) => Some(clip_grad_norm(model, max)?),
        None => None,
    };
    let lr = optimizer.learning_rate();
    optimizer.step(model)?;
    if let Some(s) = schedule {
        s.set_step(s.step().saturating_add(1));
    }
    Ok(StepStats {
        loss: loss.value.as_f64(),
        correct,
        samples: batch.y.len(),
        grad_norm,
        lr,
    })
}

/// One epoch over `data` in mini-batches shuffled with `rng` ([`Batches::shuffled`]), one
/// [`train_step`] per batch.
///
/// # Errors
/// [`PhmError::ZeroSize`] if `data` is empty (`what: "dataset"`, as [`evaluate`]: an epoch
/// over no samples has no loss) or `config.batch_size` is 0 — nothing is changed then — and
/// the errors of [`train_step`] (the epoch stops at the failing batch; earlier steps are
/// kept).
///
/// # Panics
/// As [`train_step`].
pub fn fit_epoch<F: Float, R: Rng + ?Sized>(
    model: &mut dyn Module<F>,
    optimizer: &mut dyn Optimizer<F>,
    mut schedule: Option<&mut Schedule>,
    data: &Dataset<F>,
    config: &FitConfig,
    rng: &mut R,
) -> Result<EpochStats> {
    if data.is_empty() {
        return Err(PhmError::ZeroSize { what: "dataset" });
    }
    let mut loss_sum = 0.0;
    let mut correct = 0;
    let mut samples = 0;
    let mut steps = 0;
    let mut max_norm: Option<f64> = None;
    for batch in Batches::shuffled(data, config.batch_size, rng)? {
        let s = train_step(
            model,
            optimizer,
            schedule.as_deref_mut(),
            &batch,
            config.max_grad_norm,
        )?;
        loss_sum += s.loss * s.samples as f64;
        correct += s.correct;
        samples += s.samples;
        steps += 1;
        if let Some(n) = s.grad_norm {
            max_norm = Some(max_norm.map_or(n, |m| m.max(n)));
        }
    }
    Ok(EpochStats {
        loss: loss_sum / samples as f64,
        accuracy: correct as f64 / samples as f64,
        samples,
        steps,
        max_grad_norm: max_norm,
    })
}

/// Loss, accuracy and confusion matrix of `model` on `data`, in batches of `batch_size`,
/// through [`Module::infer`] (nothing saved, nothing changed).
///
/// # Errors
/// [`PhmError::ZeroSize`] if `batch_size` is 0 or `data` is empty;
/// [`PhmError::LabelOutOfRange`] if a label is not below the model's output width.
///
/// # Panics
/// If the data does not fit the model (width), or the model's output is not
/// `(batch, classes)`.
pub fn evaluate<F: Float>(
    model: &dyn Module<F>,
    data: &Dataset<F>,
    batch_size: usize,
) -> Result<Evaluation> {
    if data.is_empty() {
        return Err(PhmError::ZeroSize { what: "dataset" });
    }
    let mut confusion: Option<ConfusionMatrix> = None;
    let mut loss_sum = 0.0;
    for batch in Batches::in_order(data, batch_size)? {
        let logits = model.infer(batch.x.view().into_dyn());
        let loss = cross_entropy(logits.view(), &batch.y)?;
        loss_sum += loss.value.as_f64() * batch.y.len() as f64;
        let logits = logits
            .into_dimensionality::<Ix2>()
            .unwrap_or_else(|_| panic!("evaluate: the model's output must be (batch, classes)"));
        let cm = match &mut confusion {
            Some(cm) => cm,
            None => confusion.insert(ConfusionMatrix::new(logits.ncols())?),
        };
        cm.add_logits(logits.view(), &batch.y)?;
    }
    let confusion = confusion.expect("data is not empty");
    Ok(Evaluation {
        loss: loss_sum / data.len() as f64,
        accuracy: confusion.accuracy(),
        confusion,
    })
}
