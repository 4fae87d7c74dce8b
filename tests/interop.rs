//! Other libraries' PHM layouts: each imported layer computes the upstream formula (evaluated
//! here from the upstream tensors with plain Kronecker products), and export ∘ import is the
//! identity, bit for bit.
mod common;

use common::{assert_close, xorshift};
use ndarray::{Array1, Array2, Array3, Axis};
use phm_nn::io::layouts::{export_phm, import_phm, Layout, NameMap, StateDict};
use phm_nn::prelude::*;

fn kron_sum(a: &Array3<f64>, b: &Array3<f64>) -> Array2<f64> {
    (0..a.len_of(Axis(0)))
        .fold(None, |acc: Option<Array2<f64>>, i| {
            let k = ndarray::linalg::kron(&a.index_axis(Axis(0), i), &b.index_axis(Axis(0), i));
            Some(match acc {
                Some(s) => s + k,
                None => k,
            })
        })
        .unwrap()
}

#[test]
fn compacter_layout_computes_x_h_plus_b() {
    for (n, d, k) in [(2, 6, 4), (4, 8, 12), (3, 3, 6)] {
        let rule: Array3<f64> = xorshift(1, (n, n, n));
        let w: Array3<f64> = xorshift(2, (n, d / n, k / n)); // (n, in/n, out/n)
        let b: Array1<f64> = xorshift(3, k);
        let mut dict = StateDict::new();
        dict.insert("adapter.phm_rule".to_string(), rule.clone().into_dyn());
        dict.insert("adapter.W".to_string(), w.clone().into_dyn());
        dict.insert("adapter.b".to_string(), b.clone().into_dyn());
        let names = NameMap::prefix("adapter.");
        let layer = import_phm(&dict, Layout::Compacter, &names).unwrap();
        assert_eq!(
            (layer.shape().in_features(), layer.shape().out_features()),
            (d, k)
        );

        let h = kron_sum(&rule, &w); // (in, out)
        let x: Array2<f64> = xorshift(4, (5, d));
        let want = x.dot(&h) + &b;
        let got = layer.infer(x.view().into_dyn());
        for (g, w) in got.iter().zip(&want) {
            assert_close(*g, *w, 1e-13, "x H + b");
        }
        // Export gives the same tensors back, bit for bit.
        assert_eq!(export_phm(&layer, Layout::Compacter, &names), dict);
    }
}

#[test]
fn hypernets_layout_computes_f_linear() {
    let (n, d, k) = (4, 8, 4);
    let a: Array3<f64> = xorshift(5, (n, n, n));
    let f: Array3<f64> = xorshift(6, (n, k / n, d / n)); // (n, out/n, in/n)
    let bias: Array1<f64> = xorshift(7, k);
    let mut dict = StateDict::new();
    dict.insert("A".to_string(), a.clone().into_dyn());
    dict.insert("F".to_string(), f.clone().into_dyn());
    dict.insert("bias".to_string(), bias.clone().into_dyn());
    let layer = import_phm(&dict, Layout::HyperNets, &NameMap::new()).unwrap();
    let w = kron_sum(&a, &f); // (out, in)
    let x: Array2<f64> = xorshift(8, (3, d));
    let want = x.dot(&w.t()) + &bias;
    for (g, w) in layer.infer(x.view().into_dyn()).iter().zip(&want) {
        assert_close(*g, *w, 1e-13, "F.linear");
    }
    assert_eq!(export_phm(&layer, Layout::HyperNets, &NameMap::new()), dict);
    // The two layouts describe the same layer through transposes.
    let c = export_phm(&layer, Layout::Compacter, &NameMap::new());
    let again = import_phm(&c, Layout::Compacter, &NameMap::new()).unwrap();
    assert_eq!(again.weight(), layer.weight());
}

#[test]
fn renames_missing_tensors_and_bad_ranks() {
    let layer = PhmLinearConfig::new(4, 4, 2)
        .with_bias(false)
        .init::<f32, _>(&mut StdRng::seed_from_u64(0))
        .unwrap();
    let names = NameMap::prefix("m.").rename("phm_rule", "shared.rule");
    let dict = export_phm(&layer, Layout::Compacter, &names);
    let keys: Vec<&String> = dict.keys().collect();
    assert_eq!(keys, ["m.W", "shared.rule"]);
    let back = import_phm(&dict, Layout::Compacter, &names).unwrap();
    assert!(back.bias().is_none());
    assert_eq!(back.rules(), layer.rules());

    let err = import_phm(&dict, Layout::Compacter, &NameMap::prefix("m.")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid state dict: tensor `m.phm_rule` is missing (found: m.W, shared.rule)"
    );
    let mut bad = dict.clone();
    bad.insert("m.W".into(), ArrayD::zeros(IxDyn(&[8])));
    let err = import_phm(&bad, Layout::Compacter, &names).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid state dict: tensor `m.W` has shape [8], expected 3-D blocks"
    );
    let mut bad = dict;
    bad.insert("m.W".into(), ArrayD::zeros(IxDyn(&[3, 2, 2])));
    assert!(matches!(
        import_phm(&bad, Layout::Compacter, &names),
        Err(PhmError::ShapeMismatch { .. })
    ));
}

#[test]
fn low_rank_layers_round_trip_in_the_compacter_layout() {
    use phm_nn::io::layouts::{export_lphm, import_lphm};
    use phm_nn::nn::LphmLinearConfig;
    let mut r = StdRng::seed_from_u64(3);
    for factorized in [false, true] {
        let layer = LphmLinearConfig::new(8, 12, 4, 2)
            .with_factorized_rules(factorized)
            .init::<f64, _>(&mut r)
            .unwrap();
        let dict = export_lphm(&layer, &NameMap::new());
        let names: Vec<&String> = dict.keys().collect();
        if factorized {
            assert_eq!(
                names,
                ["W_left", "W_right", "b", "phm_rule_left", "phm_rule_right"]
            );
            assert_eq!(dict["phm_rule_left"].shape(), &[4, 4, 1]);
        } else {
            assert_eq!(names, ["W_left", "W_right", "b", "phm_rule"]);
        }
        assert_eq!(dict["W_left"].shape(), &[4, 2, 2]); // (n, in/n, r)
        assert_eq!(dict["W_right"].shape(), &[4, 2, 3]); // (n, r, out/n)
        let back = import_lphm(&dict, &NameMap::new()).unwrap();
        assert_eq!(back.weight(), layer.weight());
        assert_eq!(export_lphm(&back, &NameMap::new()), dict);
    }
}
