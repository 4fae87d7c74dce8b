//! Shape checks for the linear family: inputs `(…, width)` viewed as matrices `(M, width)`.

use ndarray::{ArrayD, ArrayViewD, CowArray, Ix2, IxDyn};

use crate::Float;

/// Views `x` of shape `(…, width)` as the matrix `(M, width)`, `M` the product of the leading
/// axes (copied only when `x` is not in standard layout), and returns it with the leading
/// axes.
///
/// # Panics
/// If `x` has rank 0 or its last axis is not `width`; the message names both shapes.
#[track_caller]
pub(crate) fn as_matrix<'a, F: Float>(
    context: &str,
    what: &str,
    x: ArrayViewD<'a, F>,
    width: usize,
) -> (CowArray<'a, F, Ix2>, Vec<usize>) {
    let lead = leading_axes(context, what, x.shape(), width);
    let rows = lead.iter().product();
    let x = CowArray::from(x);
    let x = if x.is_standard_layout() {
        x
    } else {
        CowArray::from(x.as_standard_layout().into_owned())
    };
    let m = x
        .into_shape_with_order((rows, width))
        .expect("a standard-layout array reshapes");
    (m, lead)
}

/// The leading axes of a `(…, width)` shape: the one shape check of [`as_matrix`] and
/// [`owned_matrix`].
///
/// # Panics
/// As [`as_matrix`].
#[track_caller]
fn leading_axes(context: &str, what: &str, shape: &[usize], width: usize) -> Vec<usize> {
    if shape.last() != Some(&width) {
        panic!("{context}: {what} has shape {shape:?}, expected [.., {width}]");
    }
    shape[..shape.len() - 1].to_vec()
}

/// An owned `(…, width)` input as the matrix `(M, width)` and its leading axes: the owned
/// counterpart of [`as_matrix`], with the same check (no copy when in standard layout).
///
/// # Panics
/// As [`as_matrix`].
#[track_caller]
pub(crate) fn owned_matrix<F: Float>(
    context: &str,
    what: &str,
    x: ArrayD<F>,
    width: usize,
) -> (ndarray::Array2<F>, Vec<usize>) {
    let lead = leading_axes(context, what, x.shape(), width);
    (into_matrix(x, width), lead)
}

/// `lead` with `last` appended.
pub(crate) fn with_last(lead: &[usize], last: usize) -> Vec<usize> {
    let mut s = lead.to_vec();
    s.push(last);
    s
}

/// An owned `(…, width)` tensor (e.g. a layer's output) as the matrix `(M, width)`, without a
/// copy when it is in standard layout: the owned counterpart of [`as_matrix`].
pub(crate) fn into_matrix<F: Float>(y: ArrayD<F>, width: usize) -> ndarray::Array2<F> {
    let rows = y.len() / width.max(1);
    crate::kernels::buffer_pool::owned(y.into())
        .into_shape_with_order((rows, width))
        .expect("a standard-layout array reshapes")
}

/// Reshapes a matrix `(M, width)` back to `(lead…, width)`.
pub(crate) fn unflatten<F: Float>(m: ndarray::Array2<F>, lead: &[usize]) -> ArrayD<F> {
    let width = m.ncols();
    m.into_shape_with_order(IxDyn(&with_last(lead, width)))
        .expect("rows are the product of the leading axes")
}

/// The output shape `(…, out)` of a linear-family layer for `input` `(…, in)`, or `None` if
/// the last axis is not `in_features`.
pub(crate) fn linear_output_shape(
    input: &[usize],
    in_features: usize,
    out_features: usize,
) -> Option<Vec<usize>> {
    match input.split_last() {
        Some((&last, lead)) if last == in_features => Some(with_last(lead, out_features)),
        _ => None,
    }
}
