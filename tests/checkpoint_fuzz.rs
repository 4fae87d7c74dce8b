//! Fuzzing every loader with mutated files (issue 21): `load_model`, `load_training`,
//! `load_state_dict` and the layout importers get truncated files, bit flips in the header
//! and in the data, huge declared sizes, wrong dtypes, duplicate, missing and renamed
//! tensors, each on a checksummed file and, for the structural edits, on the same file
//! without checksums (the format before them). Asserted: no input panics; every corrupted
//! checksummed file is an error; every structurally broken file is an error; a failed load
//! leaves the model and the optimizer unchanged.
//!
//! Budget: about 3000 mutated files in all (fixed case counts below), a few seconds in the
//! test profile.
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{rng, uniform2};
use ndarray::ArrayD;
use phm_nn::io::layouts::{export_lphm, export_phm, import_lphm, import_phm, Layout, NameMap};
use phm_nn::io::{self, RngState, TrainingProgress};
use phm_nn::module::params;
use phm_nn::nn::LphmLinearConfig;
use phm_nn::optim::OptimizerState;
use phm_nn::prelude::*;
use proptest::prelude::*;
use proptest::strategy::Strategy as _;
use serde_json::Value;

fn mlp<F: Float>(seed: u64) -> Sequential<F> {
    let mut r = rng(seed);
    Sequential::new()
        .add(PhmLinearConfig::new(4, 8, 2).init(&mut r).unwrap())
        .add(Relu::new())
        .add(LinearConfig::new(8, 3).init(&mut r).unwrap())
}

fn values<F: Float>(m: &dyn Module<F>) -> Vec<ArrayD<F>> {
    params(m).iter().map(|(_, p)| p.value()).collect()
}

/// `m` after one AMSGrad step on data of `seed`, with its optimizer.
fn trained(seed: u64) -> (Sequential<f64>, Adam<f64>) {
    let mut m = mlp::<f64>(seed);
    let mut opt = Adam::new(AdamConfig {
        amsgrad: true,
        ..AdamConfig::default()
    })
    .unwrap();
    let x = uniform2(&mut rng(seed), 5, 4).into_dyn();
    let y = m.forward(x.view());
    m.backward(ArrayD::ones(y.raw_dim()).view());
    opt.step(&mut m).unwrap();
    (m, opt)
}

fn progress() -> TrainingProgress {
    TrainingProgress {
        epoch: 3,
        step: 7,
        schedule: None,
        rng: RngState::of(&ChaCha8Rng::seed_from_u64(1)),
    }
}

/// The JSON header and the data of a safetensors file.
fn split(bytes: &[u8]) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header.as_object().unwrap().clone(), bytes[8 + n..].to_vec())
}

/// A safetensors file from a header text and data (the header padded to 8 bytes).
fn join(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_string();
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

/// The file without its checksum keys: a file of the format before checksums.
fn strip_checksums(bytes: &[u8]) -> Vec<u8> {
    let (mut header, data) = split(bytes);
    if let Some(Value::Object(meta)) = header.get_mut("__metadata__") {
        meta.retain(|k, _| !k.starts_with("crc32.") && k != "phm_nn.header_crc32");
    }
    join(&Value::Object(header).to_string(), &data)
}

/// A change to the structure of the header (the JSON stays valid).
#[derive(Debug, Clone)]
enum Edit {
    /// Another dtype for a tensor.
    Dtype(usize, &'static str),
    /// A huge shape for a tensor.
    HugeShape(usize, u64),
    /// A huge end offset for a tensor.
    HugeOffset(usize, u64),
    /// A tensor listed twice (the second time under the name of another one).
    Duplicate(usize, usize),
    /// A tensor's entry removed.
    Missing(usize),
    /// A tensor renamed.
    Rename(usize),
}

fn edit_strategy() -> impl proptest::strategy::Strategy<Value = Edit> {
    let dtypes = prop::sample::select(vec!["F16", "BF16", "I64", "I32", "U8", "BOOL", "F8_E4M3"]);
    prop_oneof![
        (any::<usize>(), dtypes).prop_map(|(i, d)| Edit::Dtype(i, d)),
        (any::<usize>(), 1u64 << 20..u64::MAX).prop_map(|(i, n)| Edit::HugeShape(i, n)),
        (any::<usize>(), 1u64 << 20..u64::MAX).prop_map(|(i, n)| Edit::HugeOffset(i, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Edit::Duplicate(i, j)),
        any::<usize>().prop_map(Edit::Missing),
        any::<usize>().prop_map(Edit::Rename),
    ]
}

/// Applies `edit` to the file's header. Whether the result still parses as JSON with
/// duplicate keys is the parser's business: the header is written as text.
fn apply(bytes: &[u8], edit: &Edit) -> Option<Vec<u8>> {
    let (header, data) = split(bytes);
    let names: Vec<String> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let pick = |i: usize| names[i % names.len()].clone();
    let mut entries: Vec<(String, Value)> = header.into_iter().collect();
    let find = |entries: &mut Vec<(String, Value)>, name: &str| {
        entries.iter().position(|(k, _)| k == name).unwrap()
    };
    match edit {
        Edit::Dtype(i, d) => {
            let at = find(&mut entries, &pick(*i));
            entries[at].1["dtype"] = Value::from(*d);
        }
        Edit::HugeShape(i, n) => {
            let at = find(&mut entries, &pick(*i));
            entries[at].1["shape"] = Value::from(vec![*n, *n]);
        }
        Edit::HugeOffset(i, n) => {
            let at = find(&mut entries, &pick(*i));
            entries[at].1["data_offsets"][1] = Value::from(*n);
        }
        Edit::Duplicate(i, j) => {
            // Listed again under another tensor's name (under its own name the JSON would
            // mean the same header).
            let (a, b) = (pick(*i), pick(*j));
            let b = if a == b { pick(j + 1) } else { b };
            if a == b {
                return None;
            }
            let at = find(&mut entries, &a);
            let copy = entries[at].1.clone();
            entries.push((b, copy));
        }
        Edit::Missing(i) => {
            let at = find(&mut entries, &pick(*i));
            entries.remove(at);
        }
        Edit::Rename(i) => {
            let at = find(&mut entries, &pick(*i));
            entries[at].0.push_str(".renamed");
        }
    }
    let text = format!(
        "{{{}}}",
        entries
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
            .collect::<Vec<_>>()
            .join(",")
    );
    Some(join(&text, &data))
}

/// A corruption of the bytes of a file.
#[derive(Debug, Clone)]
enum Corruption {
    /// The first `n` bytes only (`n` below the length).
    Truncate(usize),
    /// Bits flipped in the header (the 8-byte length included).
    FlipHeader(Vec<usize>),
    /// Bits flipped in the data section.
    FlipData(Vec<usize>),
    /// A huge declared header length.
    HugeLength(u64),
    /// A structural edit of the header, checksums kept (they no longer match).
    Edit(Edit),
    /// A structural edit of the header of the file without checksums.
    LegacyEdit(Edit),
}

fn corruption() -> impl proptest::strategy::Strategy<Value = Corruption> {
    let bits = prop::collection::vec(any::<usize>(), 1..4);
    prop_oneof![
        any::<usize>().prop_map(Corruption::Truncate),
        bits.clone().prop_map(Corruption::FlipHeader),
        bits.prop_map(Corruption::FlipData),
        (1u64 << 27..u64::MAX).prop_map(Corruption::HugeLength),
        edit_strategy().prop_map(Corruption::Edit),
        edit_strategy().prop_map(Corruption::LegacyEdit),
    ]
}

/// The corrupted bytes; `None` if the corruption happens to change nothing (flips that
/// cancel out).
fn corrupt(good: &[u8], c: &Corruption) -> Option<Vec<u8>> {
    let start = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut b = good.to_vec();
    match c {
        Corruption::Truncate(n) => b.truncate(n % good.len()),
        Corruption::FlipHeader(bits) => {
            for bit in bits {
                let bit = bit % (start * 8);
                b[bit / 8] ^= 1 << (bit % 8);
            }
        }
        Corruption::FlipData(bits) => {
            for bit in bits {
                let bit = bit % ((good.len() - start) * 8);
                b[start + bit / 8] ^= 1 << (bit % 8);
            }
        }
        Corruption::HugeLength(n) => b[..8].copy_from_slice(&n.to_le_bytes()),
        Corruption::Edit(e) => b = apply(good, e)?,
        Corruption::LegacyEdit(e) => b = apply(&strip_checksums(good), e)?,
    }
    (b != good).then_some(b)
}

/// Whether a corrupted file must be refused by a loader that matches tensors by name
/// (model, training: always) or reads any tensor (a state dict: all but a renamed tensor in
/// a file without checksums, which is a valid file of other names).
fn must_fail(c: &Corruption, by_name: bool) -> bool {
    by_name || !matches!(c, Corruption::LegacyEdit(Edit::Rename(_)))
}

fn optimizer_state(opt: &Adam<f64>, m: &Sequential<f64>) -> OptimizerState<f64> {
    opt.state(m)
}

/// A folder of this process for the state-dict files (each removed after its case).
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("phm-nn-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1200, ..ProptestConfig::default() })]

    #[test]
    fn load_model_refuses_every_corruption_and_changes_nothing(c in corruption()) {
        thread_local! {
            static GOOD: Vec<u8> = io::model_to_bytes(&mlp::<f32>(1)).unwrap();
        }
        let good = GOOD.with(Clone::clone);
        let Some(bad) = corrupt(&good, &c) else { return Ok(()) };
        let mut target = mlp::<f32>(2);
        let before = values(&target);
        let result = io::load_model_from_bytes(&mut target, &bad);
        prop_assert!(result.is_err() || !must_fail(&c, true), "{c:?} loaded");
        if result.is_err() {
            prop_assert_eq!(values(&target), before);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 900, ..ProptestConfig::default() })]

    #[test]
    fn load_training_refuses_every_corruption_and_changes_nothing(c in corruption()) {
        thread_local! {
            static GOOD: Vec<u8> = {
                let (m, opt) = trained(1);
                io::training_to_bytes(&m, &opt, &progress()).unwrap()
            };
        }
        let good = GOOD.with(Clone::clone);
        let Some(bad) = corrupt(&good, &c) else { return Ok(()) };
        let (mut target, mut opt) = trained(2);
        let before = (values(&target), optimizer_state(&opt, &target));
        let result = io::load_training_from_bytes(&mut target, &mut opt, &bad);
        prop_assert!(result.is_err() || !must_fail(&c, true), "{c:?} loaded");
        if result.is_err() {
            prop_assert_eq!(values(&target), before.0);
            prop_assert_eq!(optimizer_state(&opt, &target), before.1);
            prop_assert!(opt.config().amsgrad);
        }
    }
}

/// The state dict of a PHM layer in the Compacter layout and of a low-rank one, in one
/// file.
fn layout_dict() -> BTreeMap<String, ArrayD<f32>> {
    let mut r = rng(3);
    let phm = PhmLinearConfig::new(8, 4, 2)
        .init::<f32, _>(&mut r)
        .unwrap();
    let lphm = LphmLinearConfig::new(8, 4, 2, 1)
        .init::<f32, _>(&mut r)
        .unwrap();
    let mut dict = export_phm(&phm, Layout::Compacter, &NameMap::prefix("a."));
    dict.extend(export_lphm(&lphm, &NameMap::prefix("b.")));
    dict
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn load_state_dict_and_the_importers_refuse_corruption(c in corruption()) {
        thread_local! {
            static GOOD: Vec<u8> = {
                let path = scratch().join("good.safetensors");
                io::save_state_dict(&layout_dict(), &path).unwrap();
                let bytes = std::fs::read(&path).unwrap();
                std::fs::remove_file(&path).unwrap();
                bytes
            };
        }
        let good = GOOD.with(Clone::clone);
        let Some(bad) = corrupt(&good, &c) else { return Ok(()) };
        let path = scratch().join(format!("{:?}.safetensors", std::thread::current().id()));
        std::fs::write(&path, &bad).unwrap();
        let result = io::load_state_dict::<f32>(&path);
        std::fs::remove_file(&path).unwrap();
        prop_assert!(result.is_err() || !must_fail(&c, false), "{c:?} loaded");
        if let Ok(dict) = result {
            // A valid file of other names: the importers answer, without a panic.
            let _ = import_phm(&dict, Layout::Compacter, &NameMap::prefix("a."));
            let _ = import_lphm(&dict, &NameMap::prefix("b."));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// The importers on dicts with a tensor of another shape or rank, or without it: an
    /// error or a layer, never a panic; a missing weight is an error.
    #[test]
    fn the_importers_refuse_wrong_tensors(
        which in any::<usize>(),
        shape in prop::collection::vec(0usize..5, 0..5),
        remove in any::<bool>(),
    ) {
        let dict = layout_dict();
        let names: Vec<String> = dict.keys().cloned().collect();
        let name = names[which % names.len()].clone();
        let mut bad = dict.clone();
        if remove {
            bad.remove(&name);
        } else {
            bad.insert(name.clone(), ArrayD::zeros(shape.clone()));
        }
        let phm = import_phm(&bad, Layout::Compacter, &NameMap::prefix("a."));
        let lphm = import_lphm(&bad, &NameMap::prefix("b."));
        let weight = name.ends_with(".W") || name.ends_with("W_left") || name.ends_with("W_right");
        if remove && weight {
            prop_assert!(phm.is_err() || lphm.is_err(), "{name} removed");
        }
        if !remove && shape.iter().product::<usize>() == 0 && weight {
            prop_assert!(phm.is_err() || lphm.is_err(), "{name}: {shape:?}");
        }
    }
}

#[test]
fn the_unmutated_files_load() {
    let mut m = mlp::<f32>(2);
    io::load_model_from_bytes(&mut m, &io::model_to_bytes(&mlp::<f32>(1)).unwrap()).unwrap();
    assert_eq!(values(&m), values(&mlp::<f32>(1)));
    let (m1, opt1) = trained(1);
    let bytes = io::training_to_bytes(&m1, &opt1, &progress()).unwrap();
    let (mut m2, mut opt2) = trained(2);
    io::load_training_from_bytes(&mut m2, &mut opt2, &bytes).unwrap();
    assert_eq!(values(&m2), values(&m1));
    // Every structural edit of the file without checksums is still caught by name and shape.
    let legacy = strip_checksums(&bytes);
    let (mut m3, mut opt3) = trained(2);
    io::load_training_from_bytes(&mut m3, &mut opt3, &legacy).unwrap();
    assert_eq!(values(&m3), values(&m1));
}
