//! Parity with PyTorch: `F.conv1d`/`F.conv2d` on the built kernel `K = Σ A_i ⊗ F_i`, and the
//! gradients autograd gives for `L = Σ Y ⊙ G` (fixtures written by `scripts/make_fixtures.py`,
//! PyTorch float64). Every PHM case runs on both kernels (materialized and factored), and the
//! dense layers run on the same `K`.

use ndarray::{Array1, ArrayD, Ix3, Ix4, Ix5, IxDyn};
use phm_nn::prelude::*;
use serde_json::Value;

fn tensor(v: &Value) -> ArrayD<f64> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|s| s.as_u64().expect("size") as usize)
        .collect();
    let data: Vec<f64> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), data).expect("data fits the shape")
}

fn pair(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|s| s.as_u64().expect("size") as usize)
        .collect()
}

#[track_caller]
fn assert_all_close(got: &ArrayD<f64>, expected: &ArrayD<f64>, what: &str) {
    assert_eq!(got.shape(), expected.shape(), "{what}: shape");
    for (i, (a, b)) in got.iter().zip(expected.iter()).enumerate() {
        assert!(
            (a - b).abs() <= 1e-11 * (1.0 + b.abs()),
            "{what}[{i}]: ours {a}, PyTorch {b}"
        );
    }
}

fn cases(file: &str) -> Vec<Value> {
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture file");
    let root: Value = serde_json::from_str(&text).expect("valid JSON");
    root["cases"].as_array().expect("cases").clone()
}

/// Runs forward and backward of `layer` on the case's `x` and `grad_output`; checks `y`, `dx`
/// and the gradients named in `grads` (parameter path → fixture key, reshaped to the
/// parameter's storage shape).
fn check_layer<M: Module<f64>>(mut layer: M, case: &Value, grads: &[(&str, &str)], what: &str) {
    let x = tensor(&case["x"]);
    let g = tensor(&case["grad_output"]);
    assert_all_close(
        &layer.infer(x.view()),
        &tensor(&case["y"]),
        &format!("{what} infer y"),
    );
    layer.zero_grad();
    let y = layer.forward(x.view());
    assert_all_close(&y, &tensor(&case["y"]), &format!("{what} y"));
    let dx = layer.backward(g.view());
    assert_all_close(&dx, &tensor(&case["dx"]), &format!("{what} dx"));
    let ps = params(&layer);
    for (path, key) in grads {
        let (_, p) = ps
            .iter()
            .find(|(name, _)| name == path)
            .unwrap_or_else(|| panic!("{what}: no parameter {path}"));
        let expected = tensor(&case[*key]);
        let expected = expected
            .into_shape_with_order(IxDyn(&p.shape()))
            .expect("same number of values");
        assert_all_close(&p.grad(), &expected, &format!("{what} {key}"));
    }
}

fn run(file: &str, rank: usize) {
    let all = cases(file);
    assert!(!all.is_empty());
    for case in &all {
        let name = case["name"].as_str().unwrap().to_string();
        let (s, p, d) = (
            pair(&case["stride"]),
            pair(&case["padding"]),
            pair(&case["dilation"]),
        );
        let rules = tensor(&case["rules"]).into_dimensionality::<Ix3>().unwrap();
        let kernels = tensor(&case["kernels"]);
        let weight = tensor(&case["weight"]);
        let bias: Option<Array1<f64>> = case
            .get("bias")
            .map(|b| tensor(b).into_dimensionality().unwrap());
        let mut grads = vec![("rules", "drules"), ("blocks", "dkernels")];
        let mut dense_grads = vec![("weight", "dweight")];
        if bias.is_some() {
            grads.push(("bias", "dbias"));
            dense_grads.push(("bias", "dbias"));
        }
        for strategy in [Strategy::Materialized, Strategy::Factored] {
            let what = format!("{name} PHM {strategy:?}");
            if rank == 2 {
                let mut layer = PhmConv2d::from_parts(
                    rules.clone(),
                    kernels.clone().into_dimensionality::<Ix5>().unwrap(),
                    bias.clone(),
                    (s[0], s[1]),
                    (p[0], p[1]),
                    (d[0], d[1]),
                )
                .unwrap();
                layer.linear_mut().set_strategy(strategy);
                assert_all_close(&layer.weight().into_dyn(), &weight, &format!("{what} K"));
                check_layer(layer, case, &grads, &what);
            } else {
                let mut layer = PhmConv1d::from_parts(
                    rules.clone(),
                    kernels.clone().into_dimensionality::<Ix4>().unwrap(),
                    bias.clone(),
                    s[0],
                    p[0],
                    d[0],
                )
                .unwrap();
                layer.linear_mut().set_strategy(strategy);
                assert_all_close(&layer.weight().into_dyn(), &weight, &format!("{what} K"));
                check_layer(layer, case, &grads, &what);
            }
        }
        let what = format!("{name} dense");
        if rank == 2 {
            let layer = Conv2d::from_parts(
                weight.clone().into_dimensionality::<Ix4>().unwrap(),
                bias.clone(),
                (s[0], s[1]),
                (p[0], p[1]),
                (d[0], d[1]),
            )
            .unwrap();
            check_layer(layer, case, &dense_grads, &what);
        } else {
            let layer = Conv1d::from_parts(
                weight.clone().into_dimensionality::<Ix3>().unwrap(),
                bias.clone(),
                s[0],
                p[0],
                d[0],
            )
            .unwrap();
            check_layer(layer, case, &dense_grads, &what);
        }
    }
}

#[test]
fn conv2d_matches_pytorch() {
    run("conv2d.json", 2);
}

#[test]
fn conv1d_matches_pytorch() {
    run("conv1d.json", 1);
}
