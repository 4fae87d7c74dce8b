//! Loss functions returning the loss value and its gradient with respect to the prediction.
//!
//! Both losses average, as PyTorch's `reduction='mean'` does. For predictions `P ∈ R^{B×d}`
//! (any rank for [`mse`]; for [`cross_entropy`] the classes are the last axis and every other
//! axis counts as batch, so `(B, T, C)` logits take `B·T` labels):
//!
//! ```text
//!     mse(P, T)        = (1/(B·d)) · Σ_{b,j} (P_bj − T_bj)²
//!     d mse / dP       = (2/(B·d)) · (P − T)
//!
//!     cross_entropy(Z, y) = (1/B) · Σ_b ( logsumexp(Z_b) − Z_b,y_b )
//!     d ce / dZ           = (softmax(Z) − onehot(y)) / B
//! ```
//!
//! with `logsumexp(z) = m + ln Σ_j e^{z_j − m}`, `m = max_j z_j`, so that logits of any
//! finite size (say `±1000`) give a finite loss and gradient. Feed [`LossOutput::grad`] to
//! the model's [`backward`](crate::Module::backward).
//!
//! ```
//! use ndarray::array;
//! use phm_nn::loss::{cross_entropy, mse};
//!
//! let out = mse(array![[1.0, 2.0]].view(), array![[0.0, 4.0]].view());
//! assert_eq!(out.value, (1.0 + 4.0) / 2.0);
//! assert_eq!(out.grad, array![[1.0, -2.0]]); // 2·(P − T)/2
//! // The same on a model's dynamic-rank output:
//! let out = mse(array![[1.0, 2.0]].into_dyn().view(), array![[0.0, 4.0]].into_dyn().view());
//! assert_eq!(out.grad, array![[1.0, -2.0]].into_dyn());
//!
//! // Logits (0, ln 3): softmax = (1/4, 3/4); the loss for class 1 is −ln(3/4) = ln(4/3).
//! let ce = cross_entropy(array![[0.0, 3f64.ln()]].view(), &[1])?;
//! assert!((ce.value - (4.0f64 / 3.0).ln()).abs() < 1e-15);
//! assert!((ce.grad[[0, 0]] - 0.25).abs() < 1e-15 && (ce.grad[[0, 1]] + 0.25).abs() < 1e-15);
//! # Ok::<(), phm_nn::PhmError>(())
//! ```

use ndarray::{
    Array, Array2, ArrayView, ArrayView1, ArrayView2, ArrayViewMut1, Axis, CowArray, Dimension,
    Ix2, IxDyn, Zip,
};

use crate::kernels::gemm::assert_same_shape;
use crate::kernels::shapes::as_matrix;
use crate::{Float, PhmError, Result};

/// A scalar loss and its gradient with respect to the prediction (or logits).
#[derive(Debug, Clone, PartialEq)]
pub struct LossOutput<F, D: Dimension = IxDyn> {
    /// The loss value.
    pub value: F,
    /// `dL/dpred`, with the prediction's shape.
    pub grad: Array<F, D>,
}

/// `x` `(…, C)` as a matrix `(M, C)`.
#[track_caller]
fn rows<'a, F: Float, D: Dimension>(context: &str, x: ArrayView<'a, F, D>) -> CowArray<'a, F, Ix2> {
    let width = match x.shape().last() {
        Some(&w) => w,
        None => panic!("{context}: logits have shape [], expected [.., classes]"),
    };
    as_matrix(context, "logits", x.into_dyn(), width).0
}

/// Mean squared error over all elements: `(1/N)·Σ (pred − target)²`, with `N = B·d`.
///
/// The gradient is `2·(pred − target)/N`. Matches PyTorch's `nn.MSELoss()`. For an empty
/// batch the value is NaN (`0/0`, as in PyTorch) and the gradient is empty.
///
/// # Panics
/// If `pred` and `target` have different shapes; the message names both.
#[track_caller]
pub fn mse<F: Float, D: Dimension>(
    pred: ArrayView<'_, F, D>,
    target: ArrayView<'_, F, D>,
) -> LossOutput<F, D> {
    assert_same_shape("mse", "target", target.shape(), pred.shape());
    let n = F::of(pred.len() as f64);
    let mut grad = &pred - &target;
    let value = grad.iter().map(|&e| e * e).sum::<F>() / n;
    let scale = F::of(2.0) / n;
    grad.mapv_inplace(|e| e * scale);
    LossOutput { value, grad }
}

/// Softmax cross-entropy with integer class labels, averaged over the batch.
///
/// `logits` is `(batch, classes)` (or `(…, classes)`: every leading axis counts as batch, in
/// row-major order), `labels[b]` is the class of row `b`. The loss is
/// `(1/B)·Σ_b (logsumexp(logits_b) − logits_b[labels_b])` and the gradient
/// `(softmax(logits) − onehot(labels))/B`. Matches PyTorch's `nn.CrossEntropyLoss()`.
/// Computed with the row maximum subtracted, so large logits (e.g. `±1000`) neither overflow
/// nor lose the loss.
///
/// # Errors
/// - [`PhmError::ZeroSize`] (`what: "batch"`) for an empty batch (no rows): the mean over no
///   samples is `0/0`, which PyTorch returns as NaN; here, as in [`crate::train::fit_epoch`]
///   and [`crate::train::evaluate`] on an empty dataset, it is an error;
/// - [`PhmError::LabelOutOfRange`] if some `labels[row] >= classes` (the first such row).
///
/// # Panics
/// If `labels.len() != logits.nrows()`; the message names both.
#[track_caller]
pub fn cross_entropy<F: Float, D: Dimension>(
    logits: ArrayView<'_, F, D>,
    labels: &[usize],
) -> Result<LossOutput<F, D>> {
    let dim = logits.raw_dim();
    let logits = rows("cross_entropy", logits);
    let logits = logits.view();
    check_labels_len("cross_entropy", &logits, labels);
    if labels.is_empty() {
        return Err(PhmError::ZeroSize { what: "batch" });
    }
    let classes = logits.ncols();
    if let Some((row, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
        return Err(PhmError::LabelOutOfRange {
            row,
            label,
            classes,
        });
    }
    let batch = F::of(labels.len() as f64);
    let mut grad = Array2::zeros(logits.raw_dim());
    let mut total = F::zero();
    Zip::from(grad.rows_mut())
        .and(logits.rows())
        .and(ArrayView1::from(labels))
        .for_each(|mut g, z, &label| {
            // g ← softmax(z), and the row's loss logsumexp(z) − z[label].
            let log_sum_exp = softmax_row(z, g.view_mut());
            total += log_sum_exp - z[label];
            g[label] -= F::one();
        });
    grad.mapv_inplace(|g| g / batch);
    Ok(LossOutput {
        value: total / batch,
        grad: grad
            .into_shape_with_order(dim)
            .expect("the gradient has the logits' size"),
    })
}

/// Softmax over the last axis, `softmax(z)_j = e^{z_j − m} / Σ_l e^{z_l − m}` with
/// `m = max_l z_l`.
///
/// Stable for any finite logits: `softmax([[1000, 0]]) = [[1, 0]]`. Each row sums to 1.
///
/// ```
/// use ndarray::array;
/// let p = phm_nn::loss::softmax(array![[0.0, 2f64.ln()], [1000.0, 0.0]].view());
/// assert!((p[[0, 0]] - 1.0 / 3.0).abs() < 1e-15 && (p[[0, 1]] - 2.0 / 3.0).abs() < 1e-15);
/// assert_eq!(p.row(1), array![1.0, 0.0]);
/// ```
pub fn softmax<F: Float, D: Dimension>(logits: ArrayView<'_, F, D>) -> Array<F, D> {
    let dim = logits.raw_dim();
    let logits = rows("softmax", logits);
    let mut out = Array2::zeros(logits.raw_dim());
    Zip::from(out.rows_mut())
        .and(logits.rows())
        .for_each(|p, z| {
            softmax_row(z, p);
        });
    out.into_shape_with_order(dim)
        .expect("softmax has the logits' size")
}

/// Writes `softmax(z)` into `out` and returns `logsumexp(z)`.
fn softmax_row<F: Float>(z: ArrayView1<'_, F>, mut out: ArrayViewMut1<'_, F>) -> F {
    let m = z.fold(F::neg_infinity(), |m, &v| m.max(v));
    Zip::from(&mut out)
        .and(z)
        .for_each(|p, &v| *p = (v - m).exp());
    let sum = out.sum();
    out.mapv_inplace(|p| p / sum);
    m + sum.ln()
}

/// Fraction of rows (every leading axis counts as batch) whose arg-max logit is the label, in
/// `[0, 1]`.
///
/// Ties go to the lowest index; NaN logits are never the maximum. A label out of range just
/// counts as wrong. For an empty batch the result is NaN (`0/0`).
///
/// ```
/// use ndarray::array;
/// let logits = array![[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]];
/// assert_eq!(phm_nn::loss::accuracy(logits.view(), &[1, 0, 0]), 2.0 / 3.0);
/// ```
///
/// # Panics
/// If `labels.len() != logits.nrows()`; the message names both.
#[track_caller]
pub fn accuracy<F: Float, D: Dimension>(logits: ArrayView<'_, F, D>, labels: &[usize]) -> f64 {
    let logits = rows("accuracy", logits);
    let logits = logits.view();
    check_labels_len("accuracy", &logits, labels);
    let correct = logits
        .axis_iter(Axis(0))
        .zip(labels)
        .filter(|(z, &label)| argmax(z.view()) == Some(label))
        .count();
    correct as f64 / labels.len() as f64
}

/// Index of the first maximum, ignoring NaN; `None` for an empty or all-NaN row.
pub(crate) fn argmax<F: Float>(z: ArrayView1<'_, F>) -> Option<usize> {
    z.iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .fold(None, |best: Option<(usize, F)>, (j, &v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((j, v)),
        })
        .map(|(j, _)| j)
}

#[track_caller]
fn check_labels_len<F>(context: &str, logits: &ArrayView2<'_, F>, labels: &[usize]) {
    if labels.len() != logits.nrows() {
        panic!(
            "{context}: labels has length {} but logits has shape {:?} ({} rows)",
            labels.len(),
            logits.shape(),
            logits.nrows()
        );
    }
}
