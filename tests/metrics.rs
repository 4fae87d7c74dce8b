//! The confusion matrix: counts, recall, precision, accuracy, its table, its errors.

use ndarray::array;
use phm_nn::data::{digits, ConfusionMatrix};
use phm_nn::loss;
use phm_nn::PhmError;

#[test]
fn counts_and_rates_from_predictions() {
    // true:      0  0  0  1  1  2  2  2  2
    // predicted: 0  1  0  1  1  2  0  2  1
    let labels = [0, 0, 0, 1, 1, 2, 2, 2, 2];
    let predicted = [0, 1, 0, 1, 1, 2, 0, 2, 1];
    let cm = ConfusionMatrix::from_predictions(&predicted, &labels, 3).unwrap();
    assert_eq!(cm.counts(), array![[2, 1, 0], [0, 2, 0], [1, 1, 2]]);
    assert_eq!((cm.classes(), cm.total(), cm.correct()), (3, 9, 6));
    assert_eq!(cm.accuracy(), 6.0 / 9.0);
    assert_eq!(cm.recalls(), [2.0 / 3.0, 1.0, 0.5]);
    assert_eq!(
        [cm.precision(0), cm.precision(1), cm.precision(2)],
        [2.0 / 3.0, 0.5, 1.0]
    );
    assert_eq!([cm.support(0), cm.support(1), cm.support(2)], [3, 2, 4]);
    assert_eq!(cm.unpredicted(), [0, 0, 0]);
}

#[test]
fn table_is_aligned_and_shows_missing_classes_and_unpredicted_rows() {
    // Class 0: 12 right, 3 as class 1. Class 1: 10 right. Class 2: no sample.
    let mut labels = vec![0; 15];
    labels.extend([1; 10]);
    let mut predicted = vec![0; 12];
    predicted.extend([1; 13]);
    let cm = ConfusionMatrix::from_predictions(&predicted, &labels, 3).unwrap();
    assert_eq!(
        cm.to_string(),
        "\
confusion matrix (rows: true class, columns: predicted class)
true\\pred  0  1  2 | recall
        0 12  3  0 |  80.0%
        1  0 10  0 | 100.0%
        2  0  0  0 |      -
accuracy 88.0% (22/25)
"
    );

    // Logits: rows 1 and 2 are all NaN (no prediction), row 0 is right.
    let nan = f64::NAN;
    let logits = array![[1.0, 0.0], [nan, nan], [nan, nan]];
    let cm = ConfusionMatrix::from_logits(logits.view(), &[0, 0, 1]).unwrap();
    assert_eq!(cm.unpredicted(), [1, 1]);
    assert_eq!(
        cm.to_string(),
        "\
confusion matrix (rows: true class, columns: predicted class)
true\\pred    0    1 none | recall
        0    1    0    1 |  50.0%
        1    0    0    1 |   0.0%
accuracy 33.3% (1/3)
"
    );

    let empty = ConfusionMatrix::new(1).unwrap();
    assert_eq!(
        empty.to_string(),
        "\
confusion matrix (rows: true class, columns: predicted class)
true\\pred 0 | recall
        0 0 |      -
accuracy - (0/0)
"
    );
    assert!(empty.accuracy().is_nan() && empty.recall(0).is_nan() && empty.precision(0).is_nan());
}

#[test]
fn logits_follow_the_conventions_of_loss_accuracy() {
    let nan = f64::NAN;
    // Arg-max: 1 (NaN skipped), 0 (tie: lowest index), none (all NaN), 2, 2.
    let logits = array![
        [nan, 5.0, 1.0],
        [2.0, 2.0, 0.0],
        [nan, nan, nan],
        [0.0, -1.0, 0.5],
        [-3.0, -2.0, -1.0],
    ];
    let labels = [1, 1, 2, 2, 0];
    let cm = ConfusionMatrix::from_logits(logits.view(), &labels).unwrap();
    assert_eq!(cm.counts(), array![[0, 0, 1], [1, 1, 0], [0, 0, 1]]);
    assert_eq!(cm.unpredicted(), [0, 0, 1]);
    assert_eq!(cm.accuracy(), 2.0 / 5.0);
    assert_eq!(cm.accuracy(), loss::accuracy(logits.view(), &labels));
    assert_eq!(cm.recall(2), 0.5);

    // f32 logits, accumulated over two batches, equal the predictions in one go.
    let mut acc = ConfusionMatrix::new(2).unwrap();
    acc.add_logits(array![[0.9f32, 0.1], [0.2, 0.8]].view(), &[0, 0])
        .unwrap();
    acc.add_logits(array![[0.3f32, 0.7]].view(), &[1]).unwrap();
    assert_eq!(
        acc,
        ConfusionMatrix::from_predictions(&[0, 1, 1], &[0, 0, 1], 2).unwrap()
    );
}

#[test]
fn a_perfect_classifier_on_the_digits_has_the_class_counts_on_its_diagonal() {
    let data = digits::bundled::<f32>().unwrap();
    let cm = ConfusionMatrix::from_predictions(data.y(), data.y(), digits::CLASSES).unwrap();
    assert_eq!(
        cm.counts().diag().to_vec(),
        [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    );
    assert_eq!((cm.correct(), cm.total(), cm.accuracy()), (1797, 1797, 1.0));
    assert!(cm.recalls().iter().all(|&r| r == 1.0));
}

#[test]
fn out_of_range_values_are_errors_and_add_nothing() {
    let mut cm = ConfusionMatrix::from_predictions(&[0], &[0], 3).unwrap();
    let before = cm.clone();

    let err = cm.add_predictions(&[0, 1], &[2, 5]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "label 5 in row 1 is out of range for 3 classes"
    );
    assert_eq!(
        err,
        PhmError::LabelOutOfRange {
            row: 1,
            label: 5,
            classes: 3
        }
    );
    let err = cm.add_predictions(&[0, 3], &[0, 1]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid predictions: prediction 3 in row 1 is out of range for 3 classes"
    );
    let err = cm
        .add_logits(array![[1.0, 0.0, 0.0]].view(), &[3])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "label 3 in row 0 is out of range for 3 classes"
    );
    assert_eq!(cm, before);

    assert_eq!(
        ConfusionMatrix::new(0).unwrap_err().to_string(),
        "classes must be at least 1, got 0"
    );
    let no_columns = ndarray::Array2::<f64>::zeros((2, 0));
    assert!(matches!(
        ConfusionMatrix::from_logits(no_columns.view(), &[0, 0]),
        Err(PhmError::ZeroSize { what: "classes" })
    ));
}

#[test]
#[should_panic(expected = "ConfusionMatrix: 2 predictions but 1 labels")]
fn length_mismatch_panics() {
    let _ = ConfusionMatrix::from_predictions(&[0, 1], &[0], 2);
}

#[test]
#[should_panic(expected = "ConfusionMatrix: logits of shape [1, 3] with 1 labels, expected (1, 2)")]
fn logits_with_the_wrong_number_of_classes_panic() {
    let mut cm = ConfusionMatrix::new(2).unwrap();
    let _ = cm.add_logits(array![[0.0, 1.0, 2.0]].view(), &[0]);
}
