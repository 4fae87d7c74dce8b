//! PyTorch parity of the recurrent layers (fixtures by scripts/recurrent_fixtures.py):
//! `nn.LSTM` and `nn.GRU`, two bidirectional layers over variable-length sequences packed with
//! `pack_padded_sequence`, from given initial states, with dense weights and with PHM-built
//! weights (the PHM-LSTM): outputs, final states, the input and initial-state gradients and
//! every parameter gradient, in f64 at 1e-10.

use std::collections::BTreeMap;

use ndarray::{Array3, ArrayD};
use phm_nn::io::{load_state_dict, read_metadata};
use phm_nn::module::params;
use phm_nn::nn::recurrent::{padding_mask, Gates, GruGates, LstmGates, RecurrentConfig, RnnState};
use phm_nn::nn::Projection;
use phm_nn::prelude::*;

const TOL: f64 = 1e-10;

#[track_caller]
fn assert_rel(got: &ArrayD<f64>, want: &ArrayD<f64>, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want.iter())
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= TOL * scale, "{what}: max error {err:e}");
}

fn to3(a: &ArrayD<f64>) -> Array3<f64> {
    a.clone().into_dimensionality().unwrap()
}

fn case<K: Gates>(file: &str) {
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    let dict: BTreeMap<String, ArrayD<f64>> = load_state_dict(&path).unwrap();
    let meta = read_metadata(&path).unwrap();
    let size = |k: &str| -> usize { meta[k].parse().unwrap() };
    assert_eq!(meta["cell"], K::NAME.to_lowercase());
    let n = size("n");
    let projection = if n == 1 {
        Projection::Dense
    } else {
        Projection::phm(n)
    };
    let mut rnn = RecurrentConfig::<K>::new(size("input"), size("hidden"))
        .with_layers(size("layers"))
        .with_bidirectional(meta["bidirectional"] == "true")
        .with_projection(projection)
        .init::<f64, _>(None, &mut StdRng::seed_from_u64(0))
        .unwrap();
    // Every parameter of the layer is in the file under its path, and nothing else is.
    let ps = params(&rnn);
    let in_file = dict
        .keys()
        .filter(|k| k.starts_with('l') && !k.starts_with("lengths"))
        .count();
    assert_eq!(ps.len(), in_file, "{file}: parameter count");
    for (p, param) in &ps {
        param.set_value(dict[p].view()).unwrap();
    }
    let x = &dict["x"];
    let lengths: Vec<usize> = dict["lengths"].iter().map(|&l| l as usize).collect();
    let mask = padding_mask(&lengths, x.shape()[1]).unwrap();
    let state = RnnState {
        h: to3(&dict["h0"]),
        c: K::HAS_CELL.then(|| to3(&dict["c0"])),
    };
    let what = |k: &str| format!("{file} {k}");

    let (y, last) = rnn.infer_seq(x.view(), Some(mask.view()), Some(&state));
    assert_rel(&y, &dict["y"], &what("infer y"));
    assert_rel(&last.h.into_dyn(), &dict["h_n"], &what("infer h_n"));

    rnn.zero_grad();
    let (y, last) = rnn.forward_seq(x.view(), Some(mask.view()), Some(&state));
    assert_rel(&y, &dict["y"], &what("y"));
    assert_rel(&last.h.into_dyn(), &dict["h_n"], &what("h_n"));
    if let Some(c) = last.c {
        assert_rel(&c.into_dyn(), &dict["c_n"], &what("c_n"));
    }
    let d_final = RnnState {
        h: to3(&dict["gh"]),
        c: K::HAS_CELL.then(|| to3(&dict["gc"])),
    };
    let (dx, d0) = rnn.backward_seq(dict["g"].view(), Some(&d_final));
    assert_rel(&dx, &dict["dx"], &what("dx"));
    assert_rel(&d0.h.into_dyn(), &dict["dh0"], &what("dh0"));
    if let Some(dc) = d0.c {
        assert_rel(&dc.into_dyn(), &dict["dc0"], &what("dc0"));
    }
    for (p, param) in &ps {
        assert_rel(&param.grad(), &dict[&format!("grad.{p}")], &what(p));
    }
    assert_eq!(rnn.pending(), 0);
}

#[test]
fn lstm_matches_pytorch() {
    case::<LstmGates>("recurrent_lstm.safetensors");
}

#[test]
fn gru_matches_pytorch() {
    case::<GruGates>("recurrent_gru.safetensors");
}

#[test]
fn phm_lstm_matches_pytorch() {
    case::<LstmGates>("recurrent_phm_lstm.safetensors");
}

#[test]
fn phm_gru_matches_pytorch() {
    case::<GruGates>("recurrent_phm_gru.safetensors");
}
