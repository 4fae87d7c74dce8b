//! Model checkpoints (io): bit-exact round trips in f32 and f64, metadata, every mismatch
//! and malformed-file error, all-or-nothing loading, and a property test that no input
//! bytes make the loader panic.
use std::path::PathBuf;

use phm_nn::io;
use phm_nn::module::params;
use phm_nn::prelude::*;
use proptest::prelude::*;

/// PHM (learned) → ReLU → PHM (fixed quaternion rules) → Tanh → PHM sharing the first
/// layer's rules → dense.
fn model<F: Float>(seed: u64) -> Sequential<F> {
    let mut rng = StdRng::seed_from_u64(seed);
    let first = PhmLinearConfig::new(8, 16, 4)
        .init::<F, _>(&mut rng)
        .unwrap();
    let shared = PhmLinearConfig::new(16, 8, 4)
        .init_shared::<F, _>(first.rules_param(), &mut rng)
        .unwrap();
    let quaternion = PhmLinearConfig::new(16, 16, 4)
        .with_rule(Rule::Fixed(Algebra::Quaternion))
        .init::<F, _>(&mut rng)
        .unwrap();
    Sequential::new()
        .add(first)
        .add(Relu::new())
        .add(quaternion)
        .add(Tanh::new())
        .add(shared)
        .add(LinearConfig::new(8, 3).init(&mut rng).unwrap())
}

/// Every parameter value, by path.
fn values<F: Float>(m: &Sequential<F>) -> Vec<(String, ArrayD<F>)> {
    params(m).into_iter().map(|(p, t)| (p, t.value())).collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("phm-nn-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn round_trip<F: Float>(dtype: &str) {
    let saved = model::<F>(1);
    let bytes = io::model_to_bytes(&saved).unwrap();
    let mut fresh = model::<F>(2);
    assert_ne!(values(&fresh), values(&saved));
    let meta = io::load_model_from_bytes(&mut fresh, &bytes).unwrap();
    // Bit for bit (== on every scalar; no NaN in an initialised model).
    assert_eq!(values(&fresh), values(&saved));
    // The shared rules are one tensor: saved once, loaded once, still shared.
    let names: Vec<String> = params(&saved).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        names,
        [
            "0.rules", "0.blocks", "0.bias", "2.rules", "2.blocks", "2.bias", "4.blocks", "4.bias",
            "5.weight", "5.bias"
        ]
    );
    let l0 = fresh.get::<PhmLinear<F>>(0).unwrap();
    let l4 = fresh.get::<PhmLinear<F>>(4).unwrap();
    assert!(l0.rules_param().is_shared_with(l4.rules_param()));
    // The fixed rules stay frozen.
    assert!(!fresh.get::<PhmLinear<F>>(2).unwrap().rules_trainable());

    assert_eq!(meta["phm_nn.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(meta["phm_nn.format"], "model");
    assert_eq!(meta["phm_nn.dtype"], dtype);
    assert_eq!(meta["module.0"], "PhmLinear(8 → 16, n = 4, learned rules)");
    assert_eq!(meta["module.0.n"], "4");
    assert_eq!(meta["module.0.in_features"], "8");
    assert_eq!(meta["module.0.out_features"], "16");
    assert_eq!(meta["module.0.rules"], "learned");
    assert_eq!(meta["module.0.strategy"], "Auto");
    assert_eq!(meta["module.2.rules"], "fixed");
    assert_eq!(meta["module.1"], "Relu");
    assert_eq!(meta["module.5"], "Linear(8 → 3)");
    assert_eq!(meta["module.5.out_features"], "3");
    assert_eq!(meta["module.5.bias"], "true");
}

#[test]
fn round_trip_is_bit_exact_in_f32() {
    round_trip::<f32>("f32");
}

#[test]
fn round_trip_is_bit_exact_in_f64() {
    round_trip::<f64>("f64");
}

#[test]
fn files_save_load_and_overwrite() {
    let dir = scratch("files");
    let path = dir.join("model.safetensors");
    let a = model::<f32>(1);
    let b = model::<f32>(2);
    io::save_model(&a, &path).unwrap();
    io::save_model(&b, &path).unwrap(); // replaces the first
    let mut fresh = model::<f32>(3);
    io::load_model(&mut fresh, &path).unwrap();
    assert_eq!(values(&fresh), values(&b));
    assert_eq!(io::read_metadata(&path).unwrap()["module.0.n"], "4");
    // Only the checkpoint in the folder: no temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["model.safetensors"]);
    // The layer computes with the loaded values (its cached weight is not stale).
    let x = ArrayD::from_elem(IxDyn(&[2, 8]), 0.5f32);
    assert_eq!(fresh.infer(x.view()), b.infer(x.view()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_loaded_model_computes_like_the_saved_one_after_a_cached_weight() {
    let saved = model::<f64>(1);
    let mut fresh = model::<f64>(2);
    // Cache W from the old values, then load: the cache must not survive the load.
    phm_nn::module::for_each_mut::<f64, PhmLinear<f64>>(&mut fresh, &mut |_, l| {
        l.cache_weight().unwrap()
    });
    io::load_model_from_bytes(&mut fresh, &io::model_to_bytes(&saved).unwrap()).unwrap();
    let x = ArrayD::from_elem(IxDyn(&[3, 8]), 0.25);
    // A stale W would give other outputs altogether; the kernels may differ in rounding.
    let (got, want) = (fresh.forward(x.view()), saved.infer(x.view()));
    assert!(
        got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12),
        "{got} vs {want}"
    );
}

fn mismatch(err: PhmError) -> (String, String, String) {
    match err {
        PhmError::CheckpointMismatch {
            tensor,
            expected,
            found,
            ..
        } => (tensor, expected, found),
        other => panic!("expected CheckpointMismatch, got {other:?}"),
    }
}

#[test]
fn another_shape_names_the_tensor_and_both_shapes() {
    let bytes = io::model_to_bytes(&model::<f32>(1)).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let mut other =
        Sequential::<f32>::new().add(PhmLinearConfig::new(8, 32, 4).init(&mut rng).unwrap());
    let (tensor, expected, found) =
        mismatch(io::load_model_from_bytes(&mut other, &bytes).unwrap_err());
    assert_eq!(tensor, "0.blocks");
    assert_eq!(expected, "shape [4, 8, 2] (F32)");
    assert_eq!(found, "shape [4, 4, 2] (F32)");
}

#[test]
fn a_missing_tensor_is_named() {
    // The file has no layer 6.
    let bytes = io::model_to_bytes(&model::<f32>(1)).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let mut bigger = model::<f32>(2).add(LinearConfig::new(3, 2).init(&mut rng).unwrap());
    let before = values(&bigger);
    let (tensor, expected, found) =
        mismatch(io::load_model_from_bytes(&mut bigger, &bytes).unwrap_err());
    assert_eq!(tensor, "6.weight");
    assert_eq!(expected, "shape [2, 3] (F32)");
    assert_eq!(found, "no such tensor");
    // All or nothing: layers 0..5, which matched, were not loaded either.
    assert_eq!(values(&bigger), before);
}

#[test]
fn an_extra_tensor_is_named() {
    let mut rng = StdRng::seed_from_u64(0);
    let big = model::<f32>(1).add(LinearConfig::new(3, 2).init(&mut rng).unwrap());
    let bytes = io::model_to_bytes(&big).unwrap();
    let mut small = model::<f32>(2);
    let before = values(&small);
    let (tensor, expected, found) =
        mismatch(io::load_model_from_bytes(&mut small, &bytes).unwrap_err());
    assert_eq!(tensor, "6.bias");
    assert!(expected.starts_with("no such tensor"), "{expected}");
    assert_eq!(found, "shape [2] (F32)");
    assert_eq!(values(&small), before);
}

#[test]
fn a_wrong_dtype_is_named() {
    let bytes = io::model_to_bytes(&model::<f64>(1)).unwrap();
    let mut fresh = model::<f32>(2);
    let err = io::load_model_from_bytes(&mut fresh, &bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bytes: tensor `0.rules`: expected dtype F32, found dtype F64"
    );
}

#[test]
fn malformed_files_are_format_errors_naming_the_source() {
    let good = io::model_to_bytes(&model::<f32>(1)).unwrap();
    let mut fresh = model::<f32>(2);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("seven bytes", vec![1; 7]),
        ("truncated data", good[..good.len() - 1].to_vec()),
        ("truncated header", good[..40].to_vec()),
        ("one byte too many", [good.clone(), vec![0]].concat()),
        (
            "text",
            b"this is not a checkpoint at all, just some text".to_vec(),
        ),
        (
            "huge header length",
            [u64::MAX.to_le_bytes().to_vec(), good[8..].to_vec()].concat(),
        ),
        (
            "gzip",
            include_bytes!("../data/digits.csv.gz")[..200].to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let err = io::load_model_from_bytes(&mut fresh, &bytes).unwrap_err();
        assert!(
            matches!(&err, PhmError::CheckpointFormat { source, .. } if source == "bytes"),
            "{what}: {err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("bytes is not a valid checkpoint"),
            "{what}: {err}"
        );
    }
    assert_eq!(values(&fresh), values(&model::<f32>(2)));

    let dir = scratch("malformed");
    let path = dir.join("bad.safetensors");
    std::fs::write(&path, &good[..100]).unwrap();
    let err = io::load_model(&mut fresh, &path).unwrap_err();
    assert!(err.to_string().contains("bad.safetensors"), "{err}");
    let err = io::load_model(&mut fresh, dir.join("missing.safetensors")).unwrap_err();
    assert!(
        matches!(
            err,
            PhmError::Io {
                kind: std::io::ErrorKind::NotFound,
                ..
            }
        ),
        "{err:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Length of the header (8-byte length + JSON) of safetensors bytes.
fn header_len(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut fresh = model::<f32>(2);
        let _ = io::load_model_from_bytes(&mut fresh, &bytes);
        let _ = io::load_model_from_bytes(&mut fresh, &[&bytes.len().to_le_bytes()[..], &bytes].concat());
    }

    #[test]
    fn truncated_files_are_errors(cut in 0usize..10_000) {
        let good = io::model_to_bytes(&model::<f32>(1)).unwrap();
        let cut = cut % good.len();
        let mut fresh = model::<f32>(2);
        let before = values(&fresh);
        prop_assert!(io::load_model_from_bytes(&mut fresh, &good[..cut]).is_err());
        prop_assert_eq!(values(&fresh), before);
    }

    #[test]
    fn a_flipped_bit_errors_or_changes_only_values(at in 0usize..100_000, bit in 0u8..8) {
        let saved = model::<f32>(1);
        let mut bytes = io::model_to_bytes(&saved).unwrap();
        let header = header_len(&bytes);
        let at = at % bytes.len();
        bytes[at] ^= 1 << bit;
        let mut fresh = model::<f32>(2);
        let before = values(&fresh);
        match io::load_model_from_bytes(&mut fresh, &bytes) {
            Err(_) => prop_assert_eq!(values(&fresh), before),
            Ok(_) => {
                // Same tensors, same shapes; at most the one scalar holding the flipped bit
                // differs from the saved model (none if the flip hit the header's padding
                // or metadata).
                let (got, want) = (values(&fresh), values(&saved));
                let mut differing = 0;
                for ((pg, g), (pw, w)) in got.iter().zip(&want) {
                    prop_assert_eq!(pg, pw);
                    prop_assert_eq!(g.shape(), w.shape());
                    differing += g.iter().zip(w).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                }
                prop_assert!(differing <= 1);
                if at >= header {
                    prop_assert_eq!(differing, 1);
                }
            }
        }
    }
}
