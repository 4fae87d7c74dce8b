//! Issue 21, "Nothing silent": the numerics, geometry and tools faults. Each test is named
//! after its fault and failed before the fix.
mod common;

use common::rng;
use ndarray::{array, ArrayD, IxDyn};
use phm_nn::module::params;
use phm_nn::optim::clip_grad_norm;
use phm_nn::prelude::*;

fn grads(m: &dyn Module<f64>) -> Vec<ArrayD<f64>> {
    params(m).iter().map(|(_, p)| p.grad()).collect()
}

/// A bias-free 1 → 2 layer whose weight gradient is `g` after one backward pass.
fn layer_with_grad(g: [f64; 2]) -> Linear<f64> {
    let mut layer = Linear::from_parts(array![[1.0f64], [1.0]], None).unwrap();
    layer.forward(array![[1.0]].into_dyn().view());
    layer.backward(array![[g[0], g[1]]].into_dyn().view());
    layer
}

// ---- Fault 1: clipping must not erase training ---------------------------------------------

#[test]
fn fault1_clip_grad_norm_of_finite_huge_gradients_does_not_overflow() {
    // Σ g² = 2·10⁴⁰⁰ overflows f64; the norm itself, √2·10²⁰⁰, does not.
    let layer = layer_with_grad([1e200, 1e200]);
    let norm = clip_grad_norm(&layer, 1.0).unwrap();
    let expected = std::f64::consts::SQRT_2 * 1e200;
    assert!(
        ((norm - expected) / expected).abs() < 1e-15,
        "norm {norm}, expected {expected}"
    );
    // Clipped to (just below) 1, not to 0: the direction survives.
    let g = layer.weight_param().grad();
    let clipped = (g[[0, 0]].powi(2) + g[[1, 0]].powi(2)).sqrt();
    assert!((clipped - 1.0).abs() < 1e-5, "clipped norm {clipped}");
    assert_eq!(g[[0, 0]], g[[1, 0]]);
    assert!(g[[0, 0]] > 0.7, "{g}");
}

#[test]
fn fault1_clip_grad_norm_of_tiny_gradients_is_exact() {
    // Σ g² underflows to 0 without scaling: the norm must still be 5·10⁻²⁰⁰.
    let layer = layer_with_grad([3e-200, 4e-200]);
    let norm = clip_grad_norm(&layer, 1.0).unwrap();
    assert!(((norm - 5e-200) / 5e-200).abs() < 1e-15, "norm {norm}");
}

#[test]
fn fault1_clip_grad_norm_that_is_not_finite_is_an_error_and_changes_nothing() {
    // Every entry is finite, but the norm √2·1.5·10³⁰⁸ exceeds f64::MAX.
    let layer = layer_with_grad([1.5e308, 1.5e308]);
    let before = grads(&layer);
    let err = clip_grad_norm(&layer, 1.0).unwrap_err();
    assert!(
        matches!(
            err,
            PhmError::TooLarge {
                what: "gradient norm",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("norm"), "{err}");
    assert_eq!(grads(&layer), before);
}

// ---- Fault 10: the thread count from the environment -----------------------------------------

fn available() -> usize {
    std::thread::available_parallelism().map_or(1, |p| p.get())
}

/// Runs this binary's `fault10_num_threads_is_capped_child` in a child process with
/// `PHM_NN_NUM_THREADS=value` (the variable is read once per process).
fn child_with_threads(value: &str) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fault10_num_threads_is_capped_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PHM_NN_NUM_THREADS", value)
        .env("PHM_NN_TEST_CHILD", "1")
        .output()
        .unwrap()
}

/// In every process: the thread count is at most the available parallelism, whatever the
/// environment says. As a child of the tests below it also prints the count.
#[test]
fn fault10_num_threads_is_capped_child() {
    let first = phm_nn::kernels::num_threads();
    let second = phm_nn::kernels::num_threads();
    assert_eq!(first, second);
    assert!(first >= 1 && first <= available(), "{first} threads");
    if std::env::var_os("PHM_NN_TEST_CHILD").is_some() {
        println!("threads = {first}");
    }
}

#[test]
fn fault10_a_huge_thread_count_is_capped_with_one_warning() {
    let out = child_with_threads("100000");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("threads = {}", available())),
        "{stdout}"
    );
    let warnings = stderr.matches("PHM_NN_NUM_THREADS=100000").count();
    assert_eq!(warnings, 1, "stderr: {stderr}");
    assert!(stderr.contains("capped"), "stderr: {stderr}");
}

#[test]
fn fault10_zero_or_garbage_thread_counts_are_rejected_with_a_clear_message() {
    for bad in ["0", "abc", "-3", "2.5"] {
        let out = child_with_threads(bad);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: {stderr}");
        assert!(
            stderr.contains(&format!("PHM_NN_NUM_THREADS={bad:?}"))
                || stderr.contains(&format!("PHM_NN_NUM_THREADS=\"{bad}\"")),
            "{bad}: {stderr}"
        );
        assert!(stderr.contains("positive integer"), "{bad}: {stderr}");
    }
    // A valid count within the machine's parallelism is taken as is.
    let out = child_with_threads("1");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("threads = 1"));
}

// ---- Fault 6: geometry that overflows ------------------------------------------------------

/// Asserts that `r` is an error whose message names `value`.
#[track_caller]
fn err_naming<T: std::fmt::Debug>(r: std::result::Result<T, PhmError>, value: usize) {
    let err = r.unwrap_err();
    assert!(err.to_string().contains(&value.to_string()), "{err}");
}

#[test]
fn fault6_padding_that_overflows_is_refused_at_construction() {
    let p = 1usize << 63;
    let mut r = rng(6);
    err_naming(
        Conv2dConfig::new(1, 1, 3)
            .with_padding(p)
            .init::<f64, _>(&mut r),
        p,
    );
    err_naming(
        Conv2dConfig::new(1, 1, 3)
            .with_padding((0, p))
            .init::<f64, _>(&mut r),
        p,
    );
    err_naming(
        Conv1dConfig::new(1, 1, 3)
            .with_padding(p)
            .init::<f64, _>(&mut r),
        p,
    );
    err_naming(
        PhmConv2dConfig::new(2, 2, 3, 2)
            .with_padding(p)
            .init::<f64, _>(&mut r),
        p,
    );
    err_naming(
        PhmConv1dConfig::new(2, 2, 3, 2)
            .with_padding(p)
            .init::<f64, _>(&mut r),
        p,
    );
    err_naming(MaxPool2d::new(2, 2, p), p);
    err_naming(AvgPool2d::new(2, 2, p), p);
    err_naming(MaxPool2d::new(2, 2, (0, p)), p);
}

#[test]
fn fault6_dilation_and_kernel_spans_that_overflow_are_refused_at_construction() {
    let mut r = rng(6);
    let d = usize::MAX;
    // (k − 1)·d = usize::MAX fits, but the span (k − 1)·d + 1 does not.
    err_naming(
        Conv1dConfig::new(1, 1, 2)
            .with_dilation(d)
            .init::<f64, _>(&mut r),
        d,
    );
    err_naming(
        Conv2dConfig::new(1, 1, 2)
            .with_dilation((1, d))
            .init::<f64, _>(&mut r),
        d,
    );
    err_naming(
        PhmConv1dConfig::new(2, 2, 2, 2)
            .with_dilation(d)
            .init::<f64, _>(&mut r),
        d,
    );
    // A span that fits, but not with twice the padding added.
    let half = usize::MAX / 2;
    err_naming(
        Conv1dConfig::new(1, 1, 2)
            .with_dilation(half)
            .with_padding(half)
            .init::<f64, _>(&mut r),
        half,
    );
}

#[test]
fn fault6_an_output_too_large_to_index_is_a_panic_naming_it_not_a_wrong_answer() {
    // Legal padding (PyTorch allows any), but a 5×5 image then has a 2⁴¹ × 2⁴¹ output: more
    // positions than usize counts. No output shape, and a panic naming the sizes.
    let conv = Conv2dConfig::new(1, 1, 3)
        .with_padding(1usize << 40)
        .init::<f64, _>(&mut rng(6))
        .unwrap();
    assert_eq!(conv.output_shape(&[1, 1, 5, 5]), None);
    let x = ArrayD::<f64>::ones(IxDyn(&[1, 1, 5, 5]));
    let panic = std::panic::catch_unwind(|| conv.infer(x.view())).unwrap_err();
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("too large"), "{msg}");
    assert!(msg.contains("2199023255555"), "{msg}"); // the output height 2⁴¹ + 3
}

#[test]
fn fault6_geometry_that_fits_still_works() {
    let pool = MaxPool2d::new(3, 1, 1).unwrap();
    let x = ArrayD::<f64>::from_shape_fn(IxDyn(&[1, 1, 3, 3]), |i| (i[2] * 3 + i[3]) as f64);
    assert_eq!(pool.infer(x.view())[[0, 0, 0, 0]], 4.0);
    let conv = Conv1dConfig::new(1, 1, 2)
        .with_dilation(3)
        .with_padding(2)
        .init::<f64, _>(&mut rng(6))
        .unwrap();
    // ⌊(4 + 4 − 3·1 − 1)/1⌋ + 1 = 5
    assert_eq!(conv.output_shape(&[1, 1, 4]), Some(vec![1, 1, 5]));
}

// ---- Fault 5: a key/value cache from another model -------------------------------------------

use phm_nn::nn::transformer::{Positional, TransformerLmConfig};

fn lm(layers: usize, max_len: usize, positional: Positional) -> TransformerLm<f64> {
    TransformerLmConfig::new(11, 8, 2, layers, max_len)
        .with_positional(positional)
        .init::<f64, _>(&mut rng(5))
        .unwrap()
}

#[test]
fn fault5_a_cache_from_a_model_with_other_layers_is_an_error() {
    let one = lm(1, 8, Positional::Learned);
    let two = lm(2, 8, Positional::Learned);
    let mut cache = one.new_cache(1);
    let ids = array![[1usize, 2, 3]];
    let err = two.infer_step(ids.view(), &mut cache).unwrap_err();
    assert!(
        matches!(err, PhmError::InvalidArgument { what: "cache", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("layers"), "{err}");
    assert!(cache.is_empty(), "nothing appended");
    // The cache still serves its own model.
    assert_eq!(
        one.infer_step(ids.view(), &mut cache).unwrap().dim(),
        (1, 3, 11)
    );
}

#[test]
fn fault5_a_cache_from_a_model_with_a_longer_max_len_is_an_error_not_a_panic() {
    let long = lm(1, 16, Positional::Learned);
    let short = lm(1, 4, Positional::Learned);
    let mut cache = long.new_cache(1);
    let ids = array![[1usize, 2, 3, 4, 5, 6]];
    let err = short.infer_step(ids.view(), &mut cache).unwrap_err();
    assert!(err.to_string().contains("max_len"), "{err}");
    // Other widths, heads or position encodings are errors too.
    let wide = TransformerLmConfig::new(11, 16, 2, 1, 16)
        .init::<f64, _>(&mut rng(5))
        .unwrap();
    assert!(wide.infer_step(ids.view(), &mut cache).is_err());
    let sin = lm(1, 16, Positional::Sinusoidal);
    let err = sin.infer_step(ids.view(), &mut cache).unwrap_err();
    assert!(err.to_string().contains("positional"), "{err}");
}

// ---- Fault 9: allocations sized by the request, checked against the budget -------------------

#[test]
fn fault9_generation_allocates_for_what_is_generated_not_for_max_len() {
    // A 2⁴⁰-token context: a cache sized by max_len would need 2⁴⁰ · 8 · 2 · 8 bytes.
    let huge = lm(2, 1 << 40, Positional::Sinusoidal);
    let tokens = huge
        .generate(&[1, 2], 6, Sampling::greedy(), &mut rng(9))
        .unwrap();
    assert_eq!(tokens.len(), 8);
    let again = huge
        .generate_uncached(&[1, 2], 6, Sampling::greedy(), &mut rng(9))
        .unwrap();
    assert_eq!(tokens, again);
    let mut cache = huge.new_cache(1);
    assert_eq!(cache.capacity(), 1 << 40);
    huge.infer_step(array![[3usize]].view(), &mut cache)
        .unwrap();
    assert_eq!(cache.len(), 1);
}

#[test]
fn fault9_cache_weight_beyond_the_memory_budget_is_an_error() {
    // 2¹⁵ × 2¹⁵ with n = 64: 2²⁴ block entries (64 MiB in f32) build a 4 GiB W, above the
    // cost model's 1 GiB budget.
    let mut layer = PhmLinearConfig::new(1 << 15, 1 << 15, 64)
        .init::<f32, _>(&mut rng(9))
        .unwrap();
    let err = layer.cache_weight().unwrap_err();
    assert!(matches!(err, PhmError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("4294967296"), "{err}");
    assert!(!layer.weight_is_current());
    // A layer within the budget caches its W.
    let mut small = PhmLinearConfig::new(64, 64, 4)
        .init::<f32, _>(&mut rng(9))
        .unwrap();
    small.cache_weight().unwrap();
    assert!(small.weight_is_current());
}

// ---- 12: Embedding ids that the float type cannot hold exactly -------------------------------

#[test]
fn fault12_embedding_ids_beyond_the_exact_integers_of_f32_are_rejected() {
    use phm_nn::nn::EmbeddingConfig;
    // A table of 2²⁴ + 2 rows: id 2²⁴ + 1 exists, but as f32 it reads 2²⁴ (the next float).
    let vocab = (1usize << 24) + 2;
    let emb = EmbeddingConfig::new(vocab, 1)
        .with_init(Init::Zeros)
        .init::<f32, _>(&mut rng(12))
        .unwrap();
    let ambiguous = ((1u32 << 24) + 1) as f32;
    assert_eq!(ambiguous as usize, 1 << 24); // the rounding the layer cannot see
    let x = ArrayD::from_elem(IxDyn(&[1, 1]), ambiguous);
    let panic = std::panic::catch_unwind(|| emb.infer(x.view())).unwrap_err();
    let msg = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("16777216"), "{msg}");
    assert!(msg.contains("exactly"), "{msg}");
    // The largest id f32 holds exactly, 2²⁴ − 1, is still accepted; usize ids reach every row.
    let ok = ArrayD::from_elem(IxDyn(&[1, 1]), ((1u32 << 24) - 1) as f32);
    assert_eq!(emb.infer(ok.view()).shape(), &[1, 1, 1]);
    let ids = ndarray::arr1(&[(1usize << 24) + 1]).into_dyn();
    assert_eq!(emb.try_lookup_infer(ids.view()).unwrap().shape(), &[1, 1]);
}

// ---- 12: an empty batch or dataset is an error, everywhere ----------------------------------

#[test]
fn fault12_cross_entropy_on_an_empty_batch_is_an_error() {
    let logits = ndarray::Array2::<f64>::zeros((0, 3));
    let err = cross_entropy(logits.view(), &[]).unwrap_err();
    assert_eq!(err, PhmError::ZeroSize { what: "batch" });
    // Every leading axis counts as batch: (2, 0, 3) is empty too.
    let logits = ndarray::Array3::<f64>::zeros((2, 0, 3));
    assert!(cross_entropy(logits.view(), &[]).is_err());
}

#[test]
fn fault12_fit_epoch_on_an_empty_dataset_is_an_error_like_evaluate() {
    use phm_nn::data::Dataset;
    use phm_nn::train::{evaluate, fit_epoch, FitConfig};
    let mut model = LinearConfig::new(2, 3)
        .init::<f64, _>(&mut rng(12))
        .unwrap();
    let before: Vec<ArrayD<f64>> = params(&model).iter().map(|(_, p)| p.value()).collect();
    let empty = Dataset::new(ndarray::Array2::<f64>::zeros((0, 2)), vec![]).unwrap();
    let mut opt = Sgd::new(SgdConfig::default()).unwrap();
    let config = FitConfig {
        batch_size: 4,
        max_grad_norm: None,
    };
    let err = fit_epoch(&mut model, &mut opt, None, &empty, &config, &mut rng(1)).unwrap_err();
    assert_eq!(err, PhmError::ZeroSize { what: "dataset" });
    assert_eq!(evaluate(&model, &empty, 4).unwrap_err(), err);
    let after: Vec<ArrayD<f64>> = params(&model).iter().map(|(_, p)| p.value()).collect();
    assert_eq!(before, after);
}

// ---- 12: the compress tool -------------------------------------------------------------------

#[path = "../examples/compress/cli.rs"]
mod compress_cli;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn fault12_compress_tool_prints_help_and_refuses_repeated_or_unknown_flags() {
    use compress_cli::{parse, Command, USAGE};
    assert_eq!(parse(&strings(&["--help"])), Ok(Command::Help));
    assert_eq!(parse(&strings(&["a", "b", "-h"])), Ok(Command::Help));
    assert!(USAGE.contains("--n N"));
    assert_eq!(parse(&[]), Ok(Command::Demo));
    let err = parse(&strings(&["a", "b", "--n", "2", "--n", "4"])).unwrap_err();
    assert!(err.contains("--n is given more than once"), "{err}");
    let err = parse(&strings(&[
        "a", "b", "--n", "4", "--layers", "x", "--layers", "y",
    ]));
    assert!(err.unwrap_err().contains("more than once"));
    for bad in [
        &["a", "b", "--n", "0"][..],
        &["a", "b", "--n", "x"],
        &["a", "b", "--n"],
    ] {
        assert!(parse(&strings(bad)).is_err(), "{bad:?}");
    }
    assert!(parse(&strings(&["a", "b"]))
        .unwrap_err()
        .contains("--n N is required"));
    assert!(parse(&strings(&["a", "b", "--n", "2", "--nn", "3"]))
        .unwrap_err()
        .contains("unknown option --nn"));
    assert!(parse(&strings(&["a", "--n", "2"])).is_err());
    match parse(&strings(&[
        "in", "out", "--n", "4", "--layers", "x,y", "--force",
    ]))
    .unwrap()
    {
        Command::Compress {
            input,
            output,
            n,
            layers,
            force,
        } => {
            assert_eq!(
                (input.as_str(), output.as_str(), n, force),
                ("in", "out", 4, true)
            );
            assert_eq!(layers.unwrap().into_iter().collect::<Vec<_>>(), ["x", "y"]);
        }
        other => panic!("{other:?}"),
    }
}

/// The dtype of every tensor of a safetensors file.
fn dtypes(path: &std::path::Path) -> Vec<(String, safetensors::Dtype)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(k, t)| (k, t.dtype()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn fault12_compress_file_keeps_f64_skips_embeddings_and_never_overwrites_silently() {
    use phm_nn::compress::{compress_file, compress_state_dict};
    use phm_nn::io::{load_state_dict, save_state_dict};
    use std::collections::BTreeMap;
    let dir = std::env::temp_dir().join(format!("phm-f2-compress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join("in.safetensors"), dir.join("out.safetensors"));
    let mut dict = BTreeMap::new();
    dict.insert("fc.weight".to_string(), common::xorshift(1, IxDyn(&[8, 8])));
    dict.insert("fc.bias".to_string(), common::xorshift(2, IxDyn(&[8])));
    dict.insert(
        "emb.weight".to_string(),
        common::xorshift(3, IxDyn(&[10, 8])),
    );
    dict.insert(
        "scale".to_string(),
        ArrayD::from_elem(IxDyn(&[1]), 1.0f64 / 3.0),
    );
    save_state_dict(&dict, &input).unwrap();

    let reports = compress_file(&input, &output, 2, None, false).unwrap();
    // f64 in, f64 out: the copied tensor is bit-identical (f32 would round 1/3).
    assert!(dtypes(&output)
        .iter()
        .all(|(_, d)| *d == safetensors::Dtype::F64));
    let out = load_state_dict::<f64>(&output).unwrap();
    assert_eq!(out["scale"][[0]], 1.0 / 3.0);
    // The layer with a bias is compressed; the bias-free 2-D table is kept, and says why.
    assert!(out.contains_key("fc.rules") && !out.contains_key("fc.weight"));
    assert_eq!(out["emb.weight"], dict["emb.weight"]);
    let emb = reports.iter().find(|r| r.name == "emb").unwrap();
    assert!(
        emb.kept.as_deref().unwrap().contains("embedding"),
        "{emb:?}"
    );
    // Named explicitly, it is compressed.
    let only = ["emb".to_string()].into();
    let (named, _) = compress_state_dict(&dict, 2, Some(&only)).unwrap();
    assert!(named.contains_key("emb.rules"));

    // An existing output file is not replaced without being asked.
    let before = std::fs::read(&output).unwrap();
    let err = compress_file(&input, &output, 4, None, false).unwrap_err();
    assert!(
        matches!(
            err,
            PhmError::Write {
                kind: std::io::ErrorKind::AlreadyExists,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("exists"), "{err}");
    assert_eq!(std::fs::read(&output).unwrap(), before);
    compress_file(&input, &output, 4, None, true).unwrap();
    assert_ne!(std::fs::read(&output).unwrap(), before);

    // A tensor that compressing would overwrite is an error naming it.
    let mut taken = dict.clone();
    taken.insert("fc.rules".to_string(), ArrayD::zeros(IxDyn(&[2, 2, 2])));
    let err = compress_state_dict(&taken, 2, None).unwrap_err();
    assert!(err.to_string().contains("`fc.rules`"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// In a child process (the budget is process-wide): with a 4 KiB budget, a cache that would
/// grow beyond it is an error that appends nothing; below it, generation works.
#[test]
fn fault9_a_kv_cache_beyond_the_memory_budget_is_an_error() {
    use phm_nn::kernels::strategy::{set_cost_model, CostModel};
    if std::env::var_os("PHM_NN_TEST_BUDGET_CHILD").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "fault9_a_kv_cache_beyond_the_memory_budget_is_an_error",
                "--test-threads=1",
            ])
            .env("PHM_NN_TEST_BUDGET_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
        return;
    }
    set_cost_model(CostModel {
        max_materialized_bytes: 4096,
        ..CostModel::default()
    });
    // 2 layers × (keys + values) × width 8 × 8 bytes = 256 bytes per position: 16 fit.
    let model = lm(2, 64, Positional::Learned);
    let mut cache = model.new_cache(1);
    let first = ndarray::Array2::from_elem((1, 10), 1usize);
    model.infer_step(first.view(), &mut cache).unwrap();
    assert_eq!(cache.allocated_bytes(), 10 * 256);
    // 10 + 10 positions need 20 · 256 = 5120 bytes > 4096.
    let err = model.infer_step(first.view(), &mut cache).unwrap_err();
    assert!(matches!(err, PhmError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("4096"), "{err}");
    assert_eq!(cache.len(), 10, "nothing appended");
    let more = ndarray::Array2::from_elem((1, 6), 2usize);
    model.infer_step(more.view(), &mut cache).unwrap();
    assert_eq!(cache.len(), 16);
}
