//! PyTorch parity: forward and every gradient of the linear family, a Sequential with
//! activations and softmax cross-entropy against PyTorch autograd on the plain formulas
//! (fixtures written by scripts/make_fixtures.py), on every kernel path, in f32 and f64.
use std::collections::BTreeSet;

use ndarray::{Array1, Array2, ArrayD, IxDyn};
use phm_nn::module::params;
use phm_nn::prelude::*;
use safetensors::{Dtype, SafeTensors};

/// The tensors of one fixture file.
struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    fn open(name: &str) -> Self {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        Fixture {
            bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
        }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("a fixture is a safetensors file")
    }

    fn names(&self) -> BTreeSet<String> {
        self.tensors()
            .names()
            .into_iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn has(&self, name: &str) -> bool {
        self.tensors().tensor(name).is_ok()
    }

    fn get<F: Float>(&self, name: &str) -> ArrayD<F> {
        let st = self.tensors();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture tensor {name}"));
        let data = t.data();
        let values: Vec<F> = match t.dtype() {
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| F::of(f64::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| F::of(f32::from_le_bytes(c.try_into().unwrap()) as f64))
                .collect(),
            other => panic!("{name}: unexpected dtype {other:?}"),
        };
        ArrayD::from_shape_vec(IxDyn(t.shape()), values).unwrap()
    }
}

/// `max |got − want| ≤ tol · max |want|`.
#[track_caller]
fn assert_rel<F: Float>(got: &ArrayD<F>, want: &ArrayD<F>, tol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let scale = want
        .iter()
        .fold(0.0f64, |m, v| m.max(v.as_f64().abs()))
        .max(1e-30);
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((a.as_f64() - b.as_f64()).abs()));
    assert!(
        err <= tol * scale,
        "{what}: max error {err:e} > {tol:e} · {scale:e}"
    );
}

fn cases(f: &Fixture, prefix: &str) -> Vec<String> {
    f.names()
        .iter()
        .filter_map(|n| n.split('.').next().map(str::to_string))
        .filter(|n| n.starts_with(prefix))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn phm_cases<F: Float>(file: &str, tol: f64) {
    let f = Fixture::open(file);
    let names = cases(&f, "phm_");
    assert_eq!(names.len(), 8, "{names:?}");
    for name in names {
        let t = |k: &str| f.get::<F>(&format!("{name}.{k}"));
        for strategy in [Strategy::Materialized, Strategy::Factored, Strategy::Auto] {
            let bias = f
                .has(&format!("{name}.b"))
                .then(|| t("b").into_dimensionality::<ndarray::Ix1>().unwrap());
            let mut layer = PhmLinear::from_parts(
                t("A").into_dimensionality::<ndarray::Ix3>().unwrap(),
                t("S").into_dimensionality::<ndarray::Ix3>().unwrap(),
                bias.clone(),
            )
            .unwrap()
            .with_strategy(strategy);
            let what = |k: &str| format!("{file} {name} {strategy:?} {k}");
            assert_rel(
                &layer.infer(t("x").view().into_dyn()),
                &t("y"),
                tol,
                &what("infer"),
            );
            let y = layer.forward(t("x").view().into_dyn());
            assert_rel(&y, &t("y"), tol, &what("y"));
            let dx = layer.backward(t("g").view().into_dyn());
            assert_rel(&dx, &t("dx"), tol, &what("dx"));
            assert_rel(&layer.rules_param().grad(), &t("dA"), tol, &what("dA"));
            assert_rel(&layer.blocks_param().grad(), &t("dS"), tol, &what("dS"));
            if bias.is_some() {
                assert_rel(
                    &layer.bias_param().unwrap().grad(),
                    &t("db"),
                    tol,
                    &what("db"),
                );
            }
        }
    }
}

fn linear_cases<F: Float>(file: &str, tol: f64) {
    let f = Fixture::open(file);
    for name in ["linear", "linear_rank3"] {
        let t = |k: &str| f.get::<F>(&format!("{name}.{k}"));
        let w: Array2<F> = t("W").into_dimensionality().unwrap();
        let b: Array1<F> = t("b").into_dimensionality().unwrap();
        let mut layer = Linear::from_parts(w, Some(b)).unwrap();
        let y = layer.forward(t("x").view().into_dyn());
        assert_rel(&y, &t("y"), tol, &format!("{file} {name} y"));
        let dx = layer.backward(t("g").view().into_dyn());
        assert_rel(&dx, &t("dx"), tol, &format!("{file} {name} dx"));
        assert_rel(
            &layer.weight_param().grad(),
            &t("dW"),
            tol,
            &format!("{file} {name} dW"),
        );
        assert_rel(
            &layer.bias_param().unwrap().grad(),
            &t("db"),
            tol,
            &format!("{file} {name} db"),
        );
    }
}

fn sequential_case<F: Float>(file: &str, tol: f64) {
    let f = Fixture::open(file);
    let p = |k: &str| f.get::<F>(&format!("seq.p.{k}"));
    let phm = |i: usize| {
        PhmLinear::from_parts(
            p(&format!("{i}.rules"))
                .into_dimensionality::<ndarray::Ix3>()
                .unwrap(),
            p(&format!("{i}.blocks"))
                .into_dimensionality::<ndarray::Ix3>()
                .unwrap(),
            Some(p(&format!("{i}.bias")).into_dimensionality().unwrap()),
        )
        .unwrap()
    };
    let dense = |i: usize| {
        Linear::from_parts(
            p(&format!("{i}.weight")).into_dimensionality().unwrap(),
            Some(p(&format!("{i}.bias")).into_dimensionality().unwrap()),
        )
        .unwrap()
    };
    for strategy in [Strategy::Materialized, Strategy::Factored] {
        let mut model = Sequential::<F>::new()
            .add(phm(0).with_strategy(strategy))
            .add(Relu::new())
            .add(dense(2))
            .add(Tanh::new())
            .add(phm(4).with_strategy(strategy))
            .add(Gelu::new())
            .add(dense(6))
            .add(Sigmoid::new());
        let y = model.forward(f.get::<F>("seq.x").view().into_dyn());
        assert_rel(&y, &f.get("seq.y"), tol, "seq y");
        let dx = model.backward(f.get::<F>("seq.g").view().into_dyn());
        assert_rel(&dx, &f.get("seq.dx"), tol, "seq dx");
        for (path, param) in params(&model) {
            let want = f.get::<F>(&format!("seq.grad.{path}"));
            assert_rel(
                &param.grad(),
                &want,
                tol,
                &format!("seq {strategy:?} d{path}"),
            );
        }
    }
}

fn cross_entropy_case<F: Float>(file: &str, tol: f64) {
    let f = Fixture::open(file);
    let logits = f.get::<F>("ce.logits");
    let labels: Vec<usize> = f
        .get::<f64>("ce.labels")
        .iter()
        .map(|&l| l as usize)
        .collect();
    let out = cross_entropy(logits.view(), &labels).unwrap();
    let want = f.get::<F>("ce.loss")[[0]];
    assert!(
        (out.value - want).abs().as_f64() <= tol * want.abs().as_f64(),
        "ce loss {} vs {}",
        out.value,
        want
    );
    assert_rel(&out.grad, &f.get("ce.dlogits"), tol, "ce dlogits");
}

#[test]
fn phm_layers_match_pytorch_f64() {
    phm_cases::<f64>("linear_f64.safetensors", 1e-12);
}

#[test]
fn phm_layers_match_pytorch_f32() {
    phm_cases::<f32>("linear_f32.safetensors", 1e-5);
}

#[test]
fn dense_layers_match_pytorch() {
    linear_cases::<f64>("linear_f64.safetensors", 1e-12);
    linear_cases::<f32>("linear_f32.safetensors", 1e-5);
}

#[test]
fn a_sequential_with_activations_matches_pytorch() {
    sequential_case::<f64>("linear_f64.safetensors", 1e-12);
    sequential_case::<f32>("linear_f32.safetensors", 1e-5);
}

#[test]
fn softmax_cross_entropy_matches_pytorch() {
    cross_entropy_case::<f64>("linear_f64.safetensors", 1e-12);
    cross_entropy_case::<f32>("linear_f32.safetensors", 1e-5);
}

#[test]
fn layouts_match_their_libraries_formulas() {
    use phm_nn::io::layouts::{import_phm, Layout, NameMap, StateDict};
    let f = Fixture::open("layouts.safetensors");
    let x = f.get::<f64>("x");
    for (prefix, layout) in [
        ("compacter.", Layout::Compacter),
        ("hypernets.", Layout::HyperNets),
    ] {
        let dict: StateDict<f64> = f
            .names()
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .map(|n| {
                let t = f.get::<f64>(&n);
                (n, t)
            })
            .collect();
        let layer = import_phm(&dict, layout, &NameMap::prefix(prefix)).unwrap();
        let want = f.get::<f64>(&format!("{prefix}y"));
        assert_rel(&layer.infer(x.view().into_dyn()), &want, 1e-12, prefix);
    }
}

#[test]
fn compacter_low_rank_and_factorized_rules_match_their_formula() {
    use phm_nn::io::layouts::{export_lphm, import_lphm, NameMap, StateDict};
    let f = Fixture::open("layouts.safetensors");
    let names = NameMap::prefix("compacter_lr.");
    let dict: StateDict<f64> = f
        .names()
        .into_iter()
        .filter(|n| n.starts_with("compacter_lr.") && !n.ends_with(".y"))
        .map(|n| {
            let t = f.get::<f64>(&n);
            (n, t)
        })
        .collect();
    let layer = import_lphm(&dict, &names).unwrap();
    assert!(layer.rules().is_factorized());
    let want = f.get::<f64>("compacter_lr.y");
    assert_rel(
        &layer.infer(f.get::<f64>("x").view()),
        &want,
        1e-12,
        "x (Σ kron(l r, W_left W_right)) + b",
    );
    // Export gives PyTorch's tensors back, bit for bit.
    assert_eq!(export_lphm(&layer, &names), dict);
}

/// One pre-norm PHM Transformer block (causal and key-padding masks, six PHM projections,
/// GELU feed-forward) against the same block written with `torch.nn.functional`: output,
/// input gradient and every parameter gradient.
fn transformer_block_case<F: Float>(file: &str, tol: f64) {
    use phm_nn::nn::transformer::BlockConfig;
    use phm_nn::nn::Projection;
    let f = Fixture::open(file);
    let meta = |k: &str| -> usize {
        let st = f.tensors();
        let (_, m) = SafeTensors::read_metadata(&f.bytes).unwrap();
        drop(st);
        m.metadata().as_ref().unwrap()[k].parse().unwrap()
    };
    let (d, heads, ffn, n) = (meta("d"), meta("H"), meta("f"), meta("n"));
    let mut block = BlockConfig::new(d, heads, ffn)
        .with_projection(Projection::phm(n))
        .init::<F, _>(None, 0, &mut StdRng::seed_from_u64(0))
        .unwrap();
    let ps = params(&block);
    assert_eq!(
        ps.len(),
        4 + 6 * 3,
        "2 norms × 2 + 6 projections × 3 tensors"
    );
    for (path, p) in &ps {
        p.set_value(f.get::<F>(path).view())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let pad = f.get::<F>("pad").mapv(|v| v != F::zero());
    let x = f.get::<F>("x");
    let what = |k: &str| format!("{file} {k}");
    let y = block.infer_masked(x.view(), Some(pad.view()));
    assert_rel(&y, &f.get::<F>("y"), tol, &what("infer"));
    block.zero_grad();
    let y = block.forward_masked(x.view(), Some(pad.view()));
    assert_rel(&y, &f.get::<F>("y"), tol, &what("y"));
    let dx = block.backward(f.get::<F>("g").view());
    assert_rel(&dx, &f.get::<F>("dx"), tol, &what("dx"));
    for (path, p) in &ps {
        let (got, want) = (p.grad(), f.get::<F>(&format!("grad.{path}")));
        if path == "attn.k.bias" {
            // The key bias adds q·b to every score of a query's row, which the softmax
            // ignores: its gradient is exactly zero, and both sides hold rounding noise.
            let noise = |a: &ArrayD<F>| a.iter().fold(0.0f64, |m, v| m.max(v.as_f64().abs()));
            let (a, b) = (noise(&got), noise(&want));
            assert!(a < tol && b < tol, "{}: {a:e}, PyTorch {b:e}", what(path));
            continue;
        }
        assert_rel(&got, &want, tol, &what(path));
    }
}

#[test]
fn a_phm_transformer_block_matches_pytorch() {
    transformer_block_case::<f64>("transformer_block_f64.safetensors", 1e-10);
    transformer_block_case::<f32>("transformer_block_f32.safetensors", 1e-5);
}
