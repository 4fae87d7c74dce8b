//! Pooling and Flatten: hand-computed values, finite-difference gradients (f64), errors and
//! panics, and a small CNN built from every layer.
mod common;

use common::{check_gradients_d, rng, uniform_d};
use ndarray::{ArrayD, IxDyn};
use phm_nn::prelude::*;

fn grid(shape: &[usize], values: &[f64]) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).unwrap()
}

#[test]
fn max_and_avg_pool_values_by_hand() {
    // One 3×4 plane.
    let x = grid(
        &[1, 1, 3, 4],
        &[1.0, 5.0, 2.0, 0.0, 3.0, 4.0, 8.0, 6.0, -1.0, 7.0, 9.0, -2.0],
    );
    // 2×2 windows, stride 1: 2×3 outputs.
    let max = MaxPool2d::new(2, 1, 0).unwrap();
    assert_eq!(
        max.infer(x.view()),
        grid(&[1, 1, 2, 3], &[5.0, 8.0, 8.0, 7.0, 9.0, 9.0])
    );
    let avg = AvgPool2d::new(2, 1, 0).unwrap();
    assert_eq!(
        avg.infer(x.view()),
        grid(&[1, 1, 2, 3], &[3.25, 4.75, 4.0, 3.25, 7.0, 5.25])
    );
    // 2×2, stride 2, padding 1: windows cover rows {-1,0},{1,2} and cols {-1,0},{1,2},{3,4}.
    let max = MaxPool2d::new(2, 2, 1).unwrap();
    assert_eq!(
        max.infer(x.view()),
        grid(&[1, 1, 2, 3], &[1.0, 5.0, 0.0, 3.0, 9.0, 6.0])
    );
    // The average divides by 4 with the padding counted as zeros (count_include_pad).
    let avg = AvgPool2d::new(2, 2, 1).unwrap();
    assert_eq!(
        avg.infer(x.view()),
        grid(&[1, 1, 2, 3], &[0.25, 1.75, 0.0, 0.5, 7.0, 1.0])
    );
    // Rectangular kernel and stride: (1, 3) windows, stride (2, 1).
    let max = MaxPool2d::new((1, 3), (2, 1), 0).unwrap();
    assert_eq!(
        max.infer(x.view()),
        grid(&[1, 1, 2, 2], &[5.0, 5.0, 9.0, 9.0])
    );
}

#[test]
fn max_pool_gradient_goes_to_the_first_maximum() {
    let x = grid(&[1, 1, 2, 2], &[3.0, 3.0, 1.0, 3.0]);
    let mut max = MaxPool2d::new(2, 2, 0).unwrap();
    max.forward(x.view());
    let dx = max.backward(grid(&[1, 1, 1, 1], &[2.0]).view());
    assert_eq!(dx, grid(&[1, 1, 2, 2], &[2.0, 0.0, 0.0, 0.0]));
    // NaN propagates, as in PyTorch.
    let x = grid(&[1, 1, 1, 2], &[1.0, f64::NAN]);
    let y = MaxPool2d::new((1, 2), 1, 0).unwrap().infer(x.view());
    assert!(y[[0, 0, 0, 0]].is_nan());
}

#[test]
fn gradients_pooling_layers() {
    let mut r = rng(1);
    for (k, s, p) in [(2, 2, 0), (3, 1, 1), (2, 1, 1)] {
        let x = uniform_d(&mut r, &[2, 3, 5, 4]);
        check_gradients_d(&mut MaxPool2d::new(k, s, p).unwrap(), &x, 2, 1e-6);
        check_gradients_d(&mut AvgPool2d::new(k, s, p).unwrap(), &x, 3, 1e-6);
    }
    let x = uniform_d(&mut r, &[2, 3, 4, 3]);
    check_gradients_d(
        &mut AvgPool2d::new((2, 3), (1, 2), (1, 0)).unwrap(),
        &x,
        4,
        1e-6,
    );
    check_gradients_d(&mut GlobalAvgPool::new(), &x, 5, 1e-6);
    check_gradients_d(
        &mut GlobalAvgPool::new(),
        &uniform_d(&mut r, &[2, 3, 5]),
        6,
        1e-6,
    );
    check_gradients_d(&mut Flatten::new(), &x, 7, 1e-6);
}

#[test]
fn global_pool_and_flatten_values() {
    let x = grid(&[1, 2, 1, 3], &[1.0, 2.0, 6.0, -1.0, 0.0, 4.0]);
    assert_eq!(
        GlobalAvgPool::new().infer(x.view()),
        grid(&[1, 2], &[3.0, 1.0])
    );
    let flat = Flatten::new().infer(x.view());
    assert_eq!(flat, grid(&[1, 6], &[1.0, 2.0, 6.0, -1.0, 0.0, 4.0]));
    let mut g = GlobalAvgPool::new();
    g.forward(x.view());
    let dx = g.backward(grid(&[1, 2], &[3.0, 6.0]).view());
    assert_eq!(dx, grid(&[1, 2, 1, 3], &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]));
}

#[test]
fn output_shapes() {
    let max = MaxPool2d::new(2, 2, 0).unwrap();
    assert_eq!(
        Module::<f32>::output_shape(&max, &[4, 8, 7, 6]),
        Some(vec![4, 8, 3, 3])
    );
    assert_eq!(Module::<f32>::output_shape(&max, &[4, 8, 1, 6]), None);
    assert_eq!(
        Module::<f32>::output_shape(&GlobalAvgPool::new(), &[4, 8, 7, 6]),
        Some(vec![4, 8])
    );
    assert_eq!(
        Module::<f32>::output_shape(&Flatten::new(), &[4, 8, 7, 6]),
        Some(vec![4, 336])
    );
}

#[test]
fn pool_accessors_return_the_constructor_arguments() {
    let max = MaxPool2d::new((3, 2), (2, 1), (1, 0)).unwrap();
    assert_eq!(
        (max.kernel(), max.stride(), max.padding()),
        ((3, 2), (2, 1), (1, 0))
    );
    let avg = AvgPool2d::new(4, (1, 3), (2, 1)).unwrap();
    assert_eq!(
        (avg.kernel(), avg.stride(), avg.padding()),
        ((4, 4), (1, 3), (2, 1))
    );
}

#[test]
fn pool_errors() {
    assert!(matches!(
        MaxPool2d::new(0, 1, 0).unwrap_err(),
        PhmError::ZeroSize { .. }
    ));
    assert!(matches!(
        AvgPool2d::new(2, (1, 0), 0).unwrap_err(),
        PhmError::InvalidArgument { what: "stride", .. }
    ));
    assert!(matches!(
        MaxPool2d::new(2, 2, 2).unwrap_err(),
        PhmError::InvalidArgument {
            what: "padding",
            ..
        }
    ));
}

#[test]
#[should_panic(expected = "MaxPool2d::infer: input has shape [1, 1, 1, 3]")]
fn pool_window_larger_than_input_panics() {
    MaxPool2d::new(2, 2, 0)
        .unwrap()
        .infer(ArrayD::<f64>::zeros(IxDyn(&[1, 1, 1, 3])).view());
}

#[test]
#[should_panic(expected = "expected [batch, channels, height, width]")]
fn pool_needs_four_axes() {
    AvgPool2d::new(2, 2, 0)
        .unwrap()
        .infer(ArrayD::<f64>::zeros(IxDyn(&[3, 4, 4])).view());
}

/// conv → max pool → PHC → global pool → linear, as in the digits example, end to end.
#[test]
fn gradients_small_cnn() {
    let mut r = rng(9);
    let mut model = Sequential::new()
        .add(
            Conv2dConfig::new(1, 4, 3)
                .with_padding(1)
                .init::<f64, _>(&mut r)
                .unwrap(),
        )
        .add(Tanh::new())
        .add(MaxPool2d::new(2, 2, 0).unwrap())
        .add(
            PhmConv2dConfig::new(4, 4, 3, 2)
                .with_padding(1)
                .init::<f64, _>(&mut r)
                .unwrap(),
        )
        .add(Tanh::new())
        .add(GlobalAvgPool::new())
        .add(LinearConfig::new(4, 3).init::<f64, _>(&mut r).unwrap());
    let x = uniform_d(&mut r, &[2, 1, 4, 4]);
    check_gradients_d(&mut model, &x, 10, 1e-6);
    let flat = Sequential::new()
        .add(AvgPool2d::new(2, 2, 0).unwrap())
        .add(Flatten::new());
    assert_eq!(Module::<f64>::infer(&flat, x.view()).shape(), &[2, 4]);
}
