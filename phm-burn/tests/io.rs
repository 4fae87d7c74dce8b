//! Checkpoints go through phm-nn: phm-nn saves → phm-burn loads → phm-burn saves → phm-nn
//! loads is bit-exact, and every mismatch is an error naming the tensor that changes nothing.

mod common;

use burn::tensor::{DType, Device};
use common::{native_mlp, TinyPhmMlp};
use phm_burn::{burn, io, Bridge};
use phm_nn::module::params;
use phm_nn::{Float, LinearConfig, PhmError, PhmLinearConfig, Relu, Sequential};

const D: usize = 16;
const H: usize = 12;
const C: usize = 5;
const N: usize = 4;

fn template<F: Float>(seed: u64) -> TinyPhmMlp {
    TinyPhmMlp::from_native(&native_mlp::<F>(D, H, C, N, seed), &Device::default()).expect("bridge")
}

/// Every parameter's values, by path.
fn values<F: Float>(m: &Sequential<F>) -> Vec<(String, phm_nn::ndarray::ArrayD<F>)> {
    params(m).into_iter().map(|(p, v)| (p, v.value())).collect()
}

/// The same file, byte for byte (phm-nn's writer is deterministic), without printing
/// megabytes on failure.
#[track_caller]
fn assert_same_file(a: &[u8], b: &[u8], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    assert!(a == b, "{what}: bytes differ");
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("phm_burn_io_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn round_trip<F: Float>(want: DType) {
    let original = native_mlp::<F>(D, H, C, N, 7);
    let file_a = tmp(&format!("a_{want:?}.safetensors"));
    phm_nn::io::save_model(&original, &file_a).unwrap();

    // phm-burn loads it into a model initialised differently.
    let loaded = io::load(&template::<F>(99), &file_a).unwrap();
    assert_eq!(loaded.phm.blocks.val().dtype(), want);
    assert_eq!(loaded.out.weight.val().dtype(), want);

    // phm-burn saves; phm-nn loads into another differently initialised twin.
    let file_b = tmp(&format!("b_{want:?}.safetensors"));
    io::save(&loaded, &file_b).unwrap();
    let mut back = native_mlp::<F>(D, H, C, N, 123);
    assert_ne!(values(&back), values(&original));
    phm_nn::io::load_model(&mut back, &file_b).unwrap();
    assert_eq!(values(&back), values(&original));

    // The files are the same bytes, whichever crate wrote them.
    let a = std::fs::read(&file_a).unwrap();
    assert_same_file(&a, &std::fs::read(&file_b).unwrap(), "phm-burn's file");
    assert_same_file(&a, &io::to_bytes(&loaded).unwrap(), "to_bytes");
    let again = io::from_bytes(&template::<F>(5), &a).unwrap();
    assert_same_file(&a, &io::to_bytes(&again).unwrap(), "from_bytes");
}

#[test]
fn phm_nn_to_phm_burn_to_phm_nn_is_bit_exact_in_f64() {
    round_trip::<f64>(DType::F64);
}

#[test]
fn phm_nn_to_phm_burn_to_phm_nn_is_bit_exact_in_f32() {
    round_trip::<f32>(DType::F32);
}

/// Loads `file_bytes` into an f64 template; the error must name `tensor`, and the template
/// must be unchanged.
fn expect_mismatch(file_bytes: &[u8], tensor: &str, what: &str) {
    let model = template::<f64>(3);
    let before = io::to_bytes(&model).unwrap();
    match io::from_bytes(&model, file_bytes) {
        Err(PhmError::CheckpointMismatch {
            tensor: t,
            expected,
            found,
            ..
        }) => {
            assert_eq!(t, tensor, "{what}: expected {expected}, found {found}");
        }
        Err(e) => panic!("{what}: not a mismatch naming the tensor: {e}"),
        Ok(_) => panic!("{what}: loaded"),
    }
    assert_same_file(
        &io::to_bytes(&model).unwrap(),
        &before,
        &format!("{what}: model changed"),
    );
    // The same through a file path.
    // One file per case: several cases name the same tensor and the tests run in parallel.
    let case: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = tmp(&format!("bad_{case}.safetensors"));
    std::fs::write(&path, file_bytes).unwrap();
    let e = io::load(&model, &path).expect_err("a mismatch");
    assert!(e.to_string().contains(tensor), "{what}: {e}");
}

#[test]
fn a_missing_tensor_is_an_error_naming_it() {
    let mut rng = <phm_nn::rand::rngs::StdRng as phm_nn::rand::SeedableRng>::seed_from_u64(1);
    let no_bias = Sequential::<f64>::new()
        .add(
            PhmLinearConfig::new(D, H, N)
                .with_bias(false)
                .init::<f64, _>(&mut rng)
                .unwrap(),
        )
        .add(Relu::new())
        .add(LinearConfig::new(H, C).init::<f64, _>(&mut rng).unwrap());
    let bytes = phm_nn::io::model_to_bytes(&no_bias).unwrap();
    expect_mismatch(&bytes, "0.bias", "missing bias");
}

#[test]
fn another_shape_is_an_error_naming_the_tensor() {
    // Same n, twice the hidden width: the blocks have another shape.
    let wider = native_mlp::<f64>(D, 2 * H, C, N, 1);
    let bytes = phm_nn::io::model_to_bytes(&wider).unwrap();
    expect_mismatch(&bytes, "0.blocks", "wider");
}

#[test]
fn another_dtype_is_an_error_naming_the_tensor() {
    let single = native_mlp::<f32>(D, H, C, N, 1);
    let bytes = phm_nn::io::model_to_bytes(&single).unwrap();
    expect_mismatch(&bytes, "0.rules", "f32 file into f64 model");
}

#[test]
fn another_architecture_is_an_error_naming_the_tensor() {
    // A dense first layer instead of a PHM one: `0.weight` instead of `0.rules`/`0.blocks`.
    let mut rng = <phm_nn::rand::rngs::StdRng as phm_nn::rand::SeedableRng>::seed_from_u64(1);
    let dense = Sequential::<f64>::new()
        .add(LinearConfig::new(D, H).init::<f64, _>(&mut rng).unwrap())
        .add(Relu::new())
        .add(LinearConfig::new(H, C).init::<f64, _>(&mut rng).unwrap());
    let bytes = phm_nn::io::model_to_bytes(&dense).unwrap();
    expect_mismatch(&bytes, "0.rules", "dense first layer");
}

#[test]
fn a_model_of_mixed_precision_cannot_be_saved() {
    let mut model = template::<f64>(3);
    let w = model.out.weight.val().cast(DType::F32);
    model.out.weight = burn::module::Param::from_tensor(w);
    match io::to_bytes(&model) {
        Err(PhmError::CheckpointMismatch { tensor, .. }) => assert_eq!(tensor, "2.weight"),
        other => panic!("expected a mismatch naming 2.weight, got {other:?}"),
    }
}
