//! Losses: hand-computed values, finite-difference gradients, stability at ±1000, errors.
mod common;

use common::{assert_close, rng, uniform2};
use ndarray::{array, Array2};
use phm_nn::loss::{accuracy, cross_entropy, mse, softmax, LossOutput};
use phm_nn::PhmError;

const EPS: f64 = 1e-6;

/// Checks `out.grad` against central differences of `loss` at `x`.
fn check_loss_gradient(
    x: &Array2<f64>,
    out: &LossOutput<f64, ndarray::Ix2>,
    loss: impl Fn(&Array2<f64>) -> f64,
) {
    assert_eq!(out.grad.dim(), x.dim());
    assert_close(out.value, loss(x), 1e-15, "value");
    for ((i, j), &analytic) in out.grad.indexed_iter() {
        let mut xp = x.clone();
        xp[[i, j]] += EPS;
        let lp = loss(&xp);
        xp[[i, j]] -= 2.0 * EPS;
        let lm = loss(&xp);
        assert_close(
            analytic,
            (lp - lm) / (2.0 * EPS),
            1e-8,
            &format!("dL/dpred[{i},{j}]"),
        );
    }
}

#[test]
fn mse_hand_computed() {
    // Differences 1, -2, 0, 3 → (1 + 4 + 0 + 9)/4 = 3.5; grad = 2·diff/4.
    let out = mse(
        array![[1.0, 0.0], [2.0, 5.0]].view(),
        array![[0.0, 2.0], [2.0, 2.0]].view(),
    );
    assert_eq!(out.value, 3.5);
    assert_eq!(out.grad, array![[0.5, -1.0], [0.0, 1.5]]);
    let zero = mse(array![[1.5f32, -2.0]].view(), array![[1.5f32, -2.0]].view());
    assert_eq!(zero.value, 0.0);
    assert_eq!(zero.grad, array![[0.0f32, 0.0]]);
}

#[test]
fn mse_gradient_matches_finite_differences() {
    let mut r = rng(21);
    let pred = uniform2(&mut r, 3, 4);
    let target = uniform2(&mut r, 3, 4);
    let out = mse(pred.view(), target.view());
    check_loss_gradient(&pred, &out, |p| {
        p.iter()
            .zip(&target)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            / 12.0
    });
}

#[test]
#[should_panic(expected = "mse: target has shape [2, 3], expected [3, 2]")]
fn mse_shape_mismatch_panics() {
    mse(
        Array2::<f64>::zeros((3, 2)).view(),
        Array2::zeros((2, 3)).view(),
    );
}

#[test]
fn cross_entropy_hand_computed() {
    // Row 0: logits (0, ln 3) → softmax (1/4, 3/4); label 1 → −ln(3/4) = ln(4/3).
    // Row 1: logits (ln 2, 0, ln 5) → softmax (2/8, 1/8, 5/8); label 0 → ln 4.
    let logits = array![[0.0, 3f64.ln(), 0.0], [2f64.ln(), 0.0, 5f64.ln()]];
    let one = cross_entropy(logits.slice(ndarray::s![0..1, 0..2]), &[1]).unwrap();
    assert_close(one.value, (4.0f64 / 3.0).ln(), 1e-15, "ln(4/3)");
    assert_close(one.grad[[0, 0]], 0.25, 1e-15, "grad 0");
    assert_close(one.grad[[0, 1]], 0.75 - 1.0, 1e-15, "grad 1");

    let label0 = cross_entropy(logits.slice(ndarray::s![0..1, 0..2]), &[0]).unwrap();
    assert_close(label0.value, 4f64.ln(), 1e-15, "ln 4");

    // Batch of two, 3 classes: row 0 logits (0, ln 3, 0) → softmax (1/5, 3/5, 1/5), label 1
    // → ln(5/3); row 1 label 0 → ln 4. Mean: (ln(5/3) + ln 4)/2; grads divided by 2.
    let both = cross_entropy(logits.view(), &[1, 0]).unwrap();
    assert_close(
        both.value,
        ((5.0f64 / 3.0).ln() + 4f64.ln()) / 2.0,
        1e-15,
        "batch mean",
    );
    let want = array![[0.2, 0.6 - 1.0, 0.2], [0.25 - 1.0, 0.125, 0.625]] / 2.0;
    for (g, w) in both.grad.iter().zip(&want) {
        assert_close(*g, *w, 1e-15, "batch grad");
    }
    // Each row of the gradient sums to zero.
    for row in both.grad.rows() {
        assert!(row.sum().abs() < 1e-15);
    }
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let logits = uniform2(&mut rng(22), 4, 5).mapv(|v| 3.0 * v);
    let labels = [0, 4, 2, 2];
    let out = cross_entropy(logits.view(), &labels).unwrap();
    check_loss_gradient(&logits, &out, |z| {
        // Naive (unstable but fine for |z| ≤ 3) reference formula.
        z.rows()
            .into_iter()
            .zip(&labels)
            .map(|(row, &y)| row.iter().map(|v| v.exp()).sum::<f64>().ln() - row[y])
            .sum::<f64>()
            / 4.0
    });
}

#[test]
fn cross_entropy_is_stable_at_large_logits() {
    let right = cross_entropy(array![[1000.0, 0.0]].view(), &[0]).unwrap();
    assert_eq!(right.value, 0.0);
    assert_eq!(right.grad, array![[0.0, 0.0]]);

    let wrong = cross_entropy(array![[1000.0, 0.0]].view(), &[1]).unwrap();
    assert_close(wrong.value, 1000.0, 1e-15, "CE of a confident mistake");
    assert_eq!(wrong.grad, array![[1.0, -1.0]]);

    let out = cross_entropy(
        array![[-1000.0f64, 1000.0, 0.0], [1000.0, 1000.0, -1000.0]].view(),
        &[0, 1],
    )
    .unwrap();
    assert!(out.value.is_finite() && out.grad.iter().all(|g| g.is_finite()));
    // Row 0: 2000; row 1: ln 2.
    assert_close(out.value, (2000.0 + 2f64.ln()) / 2.0, 1e-15, "mixed");

    let f32_out = cross_entropy(array![[1000.0f32, -1000.0]].view(), &[1]).unwrap();
    assert_eq!(f32_out.value, 2000.0f32);
    assert_eq!(f32_out.grad, array![[1.0f32, -1.0]]);
}

#[test]
fn cross_entropy_label_out_of_range() {
    let logits = Array2::<f64>::zeros((3, 4));
    let err = cross_entropy(logits.view(), &[0, 3, 4]).unwrap_err();
    assert_eq!(
        err,
        PhmError::LabelOutOfRange {
            row: 2,
            label: 4,
            classes: 4
        }
    );
    assert_eq!(
        err.to_string(),
        "label 4 in row 2 is out of range for 4 classes"
    );
    let msg = cross_entropy(logits.view(), &[7, 9, 0])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("label 7") && msg.contains("row 0") && msg.contains("4 classes"),
        "{msg}"
    );
}

#[test]
#[should_panic(expected = "cross_entropy: labels has length 3 but logits has shape [2, 5]")]
fn cross_entropy_label_count_mismatch_panics() {
    let _ = cross_entropy(Array2::<f64>::zeros((2, 5)).view(), &[0, 1, 2]);
}

#[test]
fn softmax_rows_sum_to_one_and_are_stable() {
    let z = array![
        [0.0, 2f64.ln(), 0.0],
        [1000.0, -1000.0, 1000.0],
        [-5.0, -5.0, -5.0]
    ];
    let p = softmax(z.view());
    for row in p.rows() {
        assert_close(row.sum(), 1.0, 1e-15, "row sum");
    }
    assert_close(p[[0, 0]], 0.25, 1e-15, "p00");
    assert_close(p[[0, 1]], 0.5, 1e-15, "p01");
    assert_eq!(p.row(1), array![0.5, 0.0, 0.5]);
    assert!(p.row(2).iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-15));
    // Agrees with the gradient of cross-entropy (+ onehot, × batch).
    let ce = cross_entropy(z.view(), &[0, 0, 0]).unwrap();
    let mut recovered = ce.grad * 3.0;
    recovered.column_mut(0).mapv_inplace(|v| v + 1.0);
    for (a, b) in recovered.iter().zip(&p) {
        assert_close(*a, *b, 1e-15, "softmax vs CE grad");
    }
}

#[test]
fn accuracy_counts_argmax_hits() {
    let logits = array![
        [0.1, 0.9, 0.0],
        [2.0, 2.0, 1.0],
        [f64::NAN, 0.0, 1.0],
        [0.0, 0.0, 5.0]
    ];
    // argmax: 1, 0 (first of a tie), 2 (NaN ignored), 2.
    assert_eq!(accuracy(logits.view(), &[1, 0, 2, 1]), 0.75);
    assert_eq!(accuracy(logits.view(), &[0, 1, 0, 0]), 0.0);
    assert_eq!(accuracy(array![[1.0f32, 0.0]].view(), &[0]), 1.0);
}

#[test]
#[should_panic(expected = "accuracy: labels has length 1 but logits has shape [4, 3]")]
fn accuracy_label_count_mismatch_panics() {
    accuracy(Array2::<f64>::zeros((4, 3)).view(), &[0]);
}
