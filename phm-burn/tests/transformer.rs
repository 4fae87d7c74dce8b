//! The burn Transformer against phm-nn's, in f64 on the CPU device with autodiff: forward
//! values and the gradients of every parameter and of the input equal phm-nn's manual
//! forward/backward to 1e-10 relative to the largest entry; the bridge round trip is bit
//! exact.

use std::collections::HashMap;

use phm_burn::bridge::{array_from_tensor, tensor_from_array};
use phm_burn::burn::module::{Module, ModuleVisitor, Param};
use phm_burn::burn::tensor::activation::log_softmax;
use phm_burn::burn::tensor::{Bool, DType, Device, Gradients, Int, Tensor, TensorData};
use phm_burn::kernels::PhmPath;
use phm_burn::linear::ProjectionConfig;
use phm_burn::transformer::{
    AttentionConfig, Block, BlockConfig, MultiHeadAttention, Positional, Sampling, TransformerLm,
};
use phm_burn::Bridge;
use phm_nn::module::params;
use phm_nn::ndarray::{Array2, ArrayD, IxDyn};
use phm_nn::nn::transformer as native;
use phm_nn::prelude::{cross_entropy, SeedableRng, StdRng};
use phm_nn::Module as _;

const TOL: f64 = 1e-10;

fn device() -> Device {
    Device::default().autodiff()
}

/// Deterministic values in `[-1, 1)`.
fn values(shape: &[usize], seed: u64) -> ArrayD<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    ArrayD::from_shape_fn(IxDyn(shape), |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    })
}

fn max_abs(a: &ArrayD<f64>) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// `|a − b| ≤ TOL · max|b|` entrywise, same shapes.
#[track_caller]
fn assert_rel(a: &ArrayD<f64>, b: &ArrayD<f64>, what: &str) {
    assert_rel_floor(a, b, 1e-300, what);
}

/// `|a − b| ≤ TOL · max(max|b|, floor)` entrywise, same shapes.
#[track_caller]
fn assert_rel_floor(a: &ArrayD<f64>, b: &ArrayD<f64>, floor: f64, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    let scale = max_abs(b).max(floor);
    let err = a
        .iter()
        .zip(b.iter())
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        err <= TOL * scale,
        "{what}: max error {err:e} > {TOL:e} × {scale:e}"
    );
}

/// Reads an f64 tensor, asserting its dtype.
fn read<const D: usize>(t: &Tensor<D>, what: &str) -> ArrayD<f64> {
    assert_eq!(t.dtype(), DType::F64, "{what} is not f64");
    array_from_tensor::<f64, D>(t, what).unwrap()
}

/// Every float parameter of a burn module by its path (`a.b.weight`), asserting f64, with
/// its gradient in `grads` (zeros where there is none).
struct Paths<'a> {
    grads: Option<&'a Gradients>,
    stack: Vec<String>,
    found: HashMap<String, ArrayD<f64>>,
    /// Whether each parameter takes part in autodiff (fixed rules must not).
    trainable: HashMap<String, bool>,
}

impl<'a> Paths<'a> {
    fn new(grads: Option<&'a Gradients>) -> Self {
        Paths {
            grads,
            stack: Vec::new(),
            found: HashMap::new(),
            trainable: HashMap::new(),
        }
    }
}

impl ModuleVisitor for Paths<'_> {
    // An enum (the `Projection` choice) adds its variant to burn's path but not to phm-nn's.
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.stack.push(name.to_string());
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if !container_type.starts_with("Enum:") {
            self.stack.pop();
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.stack.join(".");
        let t = param.val();
        let value = read(&t, &path);
        let grad = match self.grads.and_then(|g| t.grad(g)) {
            Some(g) => read(&g, &path),
            None => ArrayD::zeros(value.raw_dim()),
        };
        self.trainable.insert(path.clone(), t.is_require_grad());
        self.found.insert(path, grad);
    }
}

/// The gradient of every parameter of `m` by path.
fn burn_grads<M: Module>(m: &M, grads: &Gradients) -> HashMap<String, ArrayD<f64>> {
    let mut paths = Paths::new(Some(grads));
    m.visit(&mut paths);
    paths.found
}

/// Every parameter gradient of the phm-nn model equals burn's of the same path, to `TOL`
/// relative to the tensor's largest entry — or to 1e-4 of the model's largest gradient
/// entry for a tensor whose exact gradient is zero (the key bias: softmax ignores a
/// constant added to every score of a row) and whose two values are rounding noise.
#[track_caller]
fn assert_grads<F: phm_nn::Module<f64>>(native: &F, burn: &HashMap<String, ArrayD<f64>>) {
    let list = params(native);
    assert!(!list.is_empty());
    let floor = 1e-4
        * list
            .iter()
            .fold(0.0f64, |m, (_, p)| m.max(max_abs(&p.grad())));
    for (path, p) in list {
        // Shared rules: phm-nn lists them at their first use, the burn model holds them once.
        let g = burn
            .get(&path)
            .or_else(|| {
                path.ends_with(".rules")
                    .then(|| burn.get("rules.rules"))
                    .flatten()
            })
            .unwrap_or_else(|| panic!("burn has no parameter {path}; it has {:?}", burn.keys()));
        assert_rel_floor(g, &p.grad(), floor, &format!("grad of {path}"));
    }
}

fn pad_tensor(pad: &Array2<bool>, device: &Device) -> Tensor<2, Bool> {
    let (b, t) = pad.dim();
    Tensor::from_data(
        TensorData::new(pad.iter().copied().collect::<Vec<_>>(), [b, t]),
        device,
    )
}

/// A padding mask for `b` sequences of `t`: sequence `i` has its last `i` positions padded,
/// and the last sequence is all padding (its queries see no key).
fn pad_mask(b: usize, t: usize) -> Array2<bool> {
    Array2::from_shape_fn((b, t), |(i, j)| i == b - 1 || j + i >= t)
}

/// The sum of `y ⊙ G` through a layer `(B, T, d) → (B, T, d)`: burn's forward and autodiff
/// against phm-nn's forward and backward.
fn check_layer<N, B>(
    native: &mut N,
    burn: &B,
    shape: [usize; 3],
    pad: Option<Array2<bool>>,
    nat_fwd: impl Fn(&mut N, &ArrayD<f64>, Option<&Array2<bool>>) -> ArrayD<f64>,
    burn_fwd: impl Fn(&B, Tensor<3>, Option<Tensor<2, Bool>>) -> Tensor<3>,
) where
    N: phm_nn::Module<f64>,
    B: Module,
{
    let dev = device();
    let x = values(&shape, 1);
    let g = values(&shape, 2);
    native.zero_grad();
    let y_native = nat_fwd(native, &x, pad.as_ref());
    let dx_native = native.backward(g.view());
    let xt: Tensor<3> = tensor_from_array(x.view(), &dev).require_grad();
    let y = burn_fwd(burn, xt.clone(), pad.as_ref().map(|m| pad_tensor(m, &dev)));
    let gt: Tensor<3> = tensor_from_array(g.view(), &dev);
    let grads = (y.clone() * gt).sum().backward();
    assert_rel(&read(&y, "y"), &y_native, "forward");
    assert_rel(
        &read(&xt.grad(&grads).expect("input gradient"), "dx"),
        &dx_native,
        "input gradient",
    );
    assert_grads(native, &burn_grads(burn, &grads));
}

/// Dense, PHM n = 1, 2 and 4, quaternion (fixed) rules, LPHM.
fn kinds() -> [ProjectionConfig; 6] {
    [
        ProjectionConfig::Dense,
        ProjectionConfig::phm(1),
        ProjectionConfig::phm(2),
        ProjectionConfig::phm(4),
        ProjectionConfig::Phm { n: 4, fixed: true },
        ProjectionConfig::low_rank(2, 1),
    ]
}

fn attention_case(kind: ProjectionConfig, causal: bool, pad: bool, batch: usize) {
    let mut native = native::AttentionConfig::new(8, 2)
        .with_causal(causal)
        .with_projection(kind.to_native())
        .init::<f64, _>(None, &mut StdRng::seed_from_u64(7))
        .unwrap();
    let burn = MultiHeadAttention::from_native(&native, &device()).unwrap();
    check_layer(
        &mut native,
        &burn,
        [batch, 5, 8],
        pad.then(|| pad_mask(batch, 5)),
        |n, x, m| n.forward_masked(x.view(), m.map(|m| m.view().into_dyn())),
        |b, x, m| b.forward(x, m),
    );
}

#[test]
fn attention_matches_phm_nn() {
    for kind in kinds() {
        for causal in [true, false] {
            for pad in [false, true] {
                attention_case(kind, causal, pad, 3);
            }
        }
        attention_case(kind, true, true, 1);
    }
}

#[test]
fn attention_config_init_is_phm_nn_init() {
    let burn = AttentionConfig::new(8, 2)
        .with_seed(7)
        .init::<f64>(&device())
        .unwrap();
    let native = native::AttentionConfig::new(8, 2)
        .init::<f64, _>(None, &mut StdRng::seed_from_u64(7))
        .unwrap();
    let back = burn.to_native::<f64>().unwrap();
    for ((pa, a), (pb, b)) in params(&back).into_iter().zip(params(&native)) {
        assert_eq!(pa, pb);
        assert_eq!(a.value(), b.value(), "{pa}");
    }
}

fn block_case(kind: ProjectionConfig, causal: bool, pad: bool, batch: usize) {
    let mut native = native::BlockConfig::new(8, 2, 12)
        .with_causal(causal)
        .with_projection(kind.to_native())
        .init::<f64, _>(None, 0, &mut StdRng::seed_from_u64(11))
        .unwrap();
    // Non-trivial norms: phm-nn starts them at w = 1, b = 0.
    for (path, p) in params(&native) {
        if path.starts_with("ln") {
            let v = values(&p.shape(), path.len() as u64);
            p.set_value((v * 0.5 + 1.0).view()).unwrap();
        }
    }
    let burn = Block::from_native(&native, &device()).unwrap();
    check_layer(
        &mut native,
        &burn,
        [batch, 4, 8],
        pad.then(|| pad_mask(batch, 4)),
        |n, x, m| n.forward_masked(x.view(), m.map(|m| m.view().into_dyn())),
        |b, x, m| b.forward(x, m),
    );
}

#[test]
fn block_matches_phm_nn() {
    for kind in kinds() {
        block_case(kind, true, false, 3);
        block_case(kind, true, true, 3);
        block_case(kind, false, true, 1);
    }
}

#[test]
fn block_config_builds_the_phm_nn_block() {
    let burn = BlockConfig::new(8, 2, 16)
        .with_seed(3)
        .init::<f64>(&device())
        .unwrap();
    let native = native::BlockConfig::new(8, 2, 16)
        .init::<f64, _>(None, 0, &mut StdRng::seed_from_u64(3))
        .unwrap();
    let back = burn.to_native::<f64>().unwrap();
    for ((pa, a), (pb, b)) in params(&back).into_iter().zip(params(&native)) {
        assert_eq!(pa, pb);
        assert_eq!(a.value(), b.value(), "{pa}");
    }
}

/// Mean cross-entropy of `logits` `(B, T, V)` against `targets` (row-major), in burn.
fn burn_cross_entropy(logits: Tensor<3>, targets: &[usize]) -> Tensor<1> {
    let [b, t, v] = logits.dims();
    let dev = logits.device();
    let idx: Vec<i64> = targets.iter().map(|&i| i as i64).collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(idx, [b * t, 1]), &dev);
    let logp = log_softmax(logits.reshape([b * t, v]), 1);
    logp.gather(1, idx).mean().neg()
}

fn lm_case(config: native::TransformerLmConfig, batch: usize, pad: bool) {
    for path in [PhmPath::Auto, PhmPath::Materialized, PhmPath::Factored] {
        lm_case_with(config.clone(), batch, pad, path);
    }
}

fn lm_case_with(config: native::TransformerLmConfig, batch: usize, pad: bool, path: PhmPath) {
    let mut native = config
        .init::<f64, _>(&mut StdRng::seed_from_u64(5))
        .unwrap();
    for (path, p) in params(&native) {
        if path.contains("ln") {
            let v = values(&p.shape(), path.len() as u64);
            p.set_value((v * 0.5 + 1.0).view()).unwrap();
        }
    }
    let dev = device();
    let burn = TransformerLm::from_native(&native, &dev)
        .unwrap()
        .with_path(path);
    let (t, vocab) = (6, native.vocab());
    let ids = Array2::from_shape_fn((batch, t), |(b, i)| (5 * b + 3 * i + 1) % vocab);
    let targets: Vec<usize> = ids.iter().map(|&i| (7 * i + 2) % vocab).collect();
    let mask = pad.then(|| Array2::from_shape_fn((batch, t), |(b, i)| i + b > t));

    native.zero_grad();
    let logits_native = native.forward_ids(ids.view(), mask.as_ref().map(|m| m.view()));
    let loss_native = cross_entropy(logits_native.view(), &targets).unwrap();
    native.backward_logits(loss_native.grad.view());

    let id_data: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    let id_t = Tensor::<2, Int>::from_data(TensorData::new(id_data, [batch, t]), &dev);
    let logits = burn.forward(id_t, mask.as_ref().map(|m| pad_tensor(m, &dev)));
    let loss = burn_cross_entropy(logits.clone(), &targets);
    let grads = loss.backward();
    assert_rel(
        &read(&logits, "logits"),
        &logits_native.into_dyn(),
        "logits",
    );
    assert_rel(
        &read(&loss, "loss"),
        &ArrayD::from_elem(IxDyn(&[1]), loss_native.value),
        "loss",
    );
    assert_grads(&native, &burn_grads(&burn, &grads));
}

#[test]
fn lm_dense_learned_positions_matches_phm_nn() {
    lm_case(
        native::TransformerLmConfig::new(11, 8, 2, 2, 8).with_ffn_width(12),
        3,
        false,
    );
}

#[test]
fn lm_phm_shared_rules_sinusoidal_tied_matches_phm_nn() {
    lm_case(
        native::TransformerLmConfig::new(11, 8, 2, 2, 8)
            .with_ffn_width(12)
            .with_projection(ProjectionConfig::phm(4).to_native())
            .with_shared_rules(true)
            .with_positional(Positional::Sinusoidal)
            .with_tied_embeddings(true),
        3,
        true,
    );
}

#[test]
fn lm_fixed_quaternion_rules_matches_phm_nn() {
    lm_case(
        native::TransformerLmConfig::new(9, 8, 2, 1, 8)
            .with_ffn_width(16)
            .with_projection(ProjectionConfig::Phm { n: 4, fixed: true }.to_native()),
        1,
        false,
    );
}

#[test]
fn lm_lphm_and_phm2_match_phm_nn() {
    for (kind, shared) in [
        (ProjectionConfig::low_rank(2, 2), false),
        (ProjectionConfig::low_rank(4, 1), true),
        (ProjectionConfig::phm(2), false),
    ] {
        lm_case(
            native::TransformerLmConfig::new(10, 8, 2, 2, 8)
                .with_ffn_width(16)
                .with_projection(kind.to_native())
                .with_shared_rules(shared),
            3,
            false,
        );
    }
}

#[test]
fn lm_dense_sinusoidal_tied_with_padding_matches_phm_nn() {
    lm_case(
        native::TransformerLmConfig::new(11, 8, 2, 2, 8)
            .with_positional(Positional::Sinusoidal)
            .with_tied_embeddings(true),
        3,
        true,
    );
    lm_case(
        native::TransformerLmConfig::new(7, 4, 1, 1, 6).with_tied_embeddings(true),
        1,
        false,
    );
}

/// phm-nn → burn → phm-nn keeps every parameter bit for bit, with its path.
fn round_trip<F: phm_nn::Float>(config: native::TransformerLmConfig) {
    let native = config.init::<F, _>(&mut StdRng::seed_from_u64(9)).unwrap();
    let burn = TransformerLm::from_native(&native, &Device::default()).unwrap();
    if std::mem::size_of::<F>() == 8 {
        let mut paths = Paths::new(None);
        burn.visit(&mut paths);
        let mut burn_paths: Vec<String> = paths.found.into_keys().collect();
        burn_paths.sort();
        let shared = native.config().shared_rules;
        let mut native_paths: Vec<String> = params(&native)
            .into_iter()
            .map(|(p, _)| p)
            .map(|p| match shared && p.ends_with(".rules") {
                true => "rules.rules".to_string(),
                false => p,
            })
            .collect();
        native_paths.sort();
        assert_eq!(burn_paths, native_paths, "the same parameter paths");
    }
    let back = burn.to_native::<F>().unwrap();
    let (a, b) = (params(&native), params(&back));
    assert_eq!(a.len(), b.len());
    for ((pa, x), (pb, y)) in a.into_iter().zip(b) {
        assert_eq!(pa, pb);
        assert_eq!(x.is_trainable(), y.is_trainable(), "{pa}");
        let (x, y) = (x.value(), y.value());
        assert!(
            x.iter()
                .zip(y.iter())
                .all(|(u, v)| u.as_f64().to_bits() == v.as_f64().to_bits()),
            "{pa} changed"
        );
    }
    assert_eq!(back.config(), native.config());
}

#[test]
fn bridge_round_trip_is_bit_exact() {
    let configs = [
        native::TransformerLmConfig::new(13, 8, 2, 2, 10),
        native::TransformerLmConfig::new(13, 8, 4, 1, 10)
            .with_positional(Positional::Sinusoidal)
            .with_tied_embeddings(true),
        native::TransformerLmConfig::new(13, 8, 2, 2, 10)
            .with_projection(ProjectionConfig::phm(4).to_native())
            .with_shared_rules(true)
            .with_tied_embeddings(true),
        native::TransformerLmConfig::new(13, 8, 2, 1, 10)
            .with_projection(ProjectionConfig::Phm { n: 4, fixed: true }.to_native()),
        native::TransformerLmConfig::new(13, 8, 2, 1, 10)
            .with_projection(ProjectionConfig::low_rank(2, 2).to_native()),
    ];
    for c in configs {
        round_trip::<f32>(c.clone());
        round_trip::<f64>(c);
    }
}

#[test]
fn to_native_in_the_wrong_float_type_is_an_error() {
    let native = native::TransformerLmConfig::new(5, 4, 1, 1, 4)
        .init::<f64, _>(&mut StdRng::seed_from_u64(0))
        .unwrap();
    let burn = TransformerLm::from_native(&native, &Device::default()).unwrap();
    let err = burn.to_native::<f32>().unwrap_err();
    assert!(err.to_string().contains("embed"), "{err}");
}

#[test]
fn greedy_generation_matches_phm_nn() {
    let native = native::TransformerLmConfig::new(9, 8, 2, 1, 6)
        .init::<f64, _>(&mut StdRng::seed_from_u64(4))
        .unwrap();
    let burn = TransformerLm::from_native(&native, &Device::default()).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let want = native
        .generate_uncached(&[1, 2], 9, native::Sampling::greedy(), &mut rng)
        .unwrap();
    let got = burn
        .generate(&[1, 2], 9, Sampling::greedy(), &mut rng)
        .unwrap();
    assert_eq!(got, want);
    assert!(burn.generate(&[], 1, Sampling::greedy(), &mut rng).is_err());
    assert!(burn
        .generate(&[9], 1, Sampling::greedy(), &mut rng)
        .is_err());
    assert!(burn
        .generate(&[1], 1, Sampling::new(-1.0, None), &mut rng)
        .is_err());
}

#[test]
fn lm_config_init_is_phm_nn_init_and_holds_shared_tensors_once() {
    let config = phm_burn::transformer::TransformerLmConfig::new(12, 8, 2, 2, 9)
        .with_ffn_width(16)
        .with_projection(ProjectionConfig::Phm { n: 4, fixed: true })
        .with_shared_rules(true)
        .with_tied_embeddings(true)
        .with_seed(21);
    let burn = config.init::<f64>(&device()).unwrap();
    let native = config
        .to_native()
        .init::<f64, _>(&mut StdRng::seed_from_u64(21))
        .unwrap();
    let back = burn.to_native::<f64>().unwrap();
    for ((pa, a), (pb, b)) in params(&back).into_iter().zip(params(&native)) {
        assert_eq!(pa, pb);
        assert_eq!(a.value(), b.value(), "{pa}");
    }
    // One rule tensor and one embedding, as phm-nn counts them.
    let all = native.num_parameters() + native.num_frozen_parameters();
    assert_eq!(burn.num_params(), all);
    // The fixed (quaternion) rules take no part in autodiff.
    let mut paths = Paths::new(None);
    burn.visit(&mut paths);
    assert!(!paths.trainable["rules.rules"]);
    assert!(paths.trainable["embed.weight"]);
}

#[test]
fn dropout_is_off_at_inference_and_scales_kept_values_in_training() {
    let drop = phm_burn::transformer::DropoutConfig::new(0.5)
        .init()
        .unwrap();
    let x = Tensor::<2>::ones([64, 64], &Device::default());
    assert_eq!(drop.forward(x.clone()).to_data(), x.to_data());
    let y = drop.forward(Tensor::<2>::ones([64, 64], &device()));
    let v: Vec<f32> = y.to_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    assert!(
        v.iter().all(|&a| a == 0.0 || a == 2.0),
        "kept values × 1/(1 − p)"
    );
    let kept = v.iter().filter(|&&a| a == 2.0).count();
    assert!(
        (1500..2600).contains(&kept),
        "{kept} of 4096 kept at p = 0.5"
    );
    assert!(phm_burn::transformer::DropoutConfig::new(1.0)
        .init()
        .is_err());
}

#[test]
fn sampling_with_a_temperature_is_seeded_and_in_vocabulary() {
    let lm = phm_burn::transformer::TransformerLmConfig::new(7, 4, 1, 1, 5)
        .init::<f32>(&Device::default())
        .unwrap();
    let run = || {
        lm.generate(
            &[3],
            12,
            Sampling::new(1.5, None),
            &mut StdRng::seed_from_u64(8),
        )
        .unwrap()
    };
    let a = run();
    assert_eq!(a, run());
    assert_eq!(a.len(), 13);
    assert!(a.iter().all(|&t| t < 7));
}

#[test]
fn cached_steps_equal_the_full_forward() {
    let configs = [
        native::TransformerLmConfig::new(11, 8, 2, 2, 9)
            .with_ffn_width(16)
            .with_projection(ProjectionConfig::phm(4).to_native())
            .with_shared_rules(true),
        native::TransformerLmConfig::new(11, 8, 4, 1, 9)
            .with_positional(Positional::Sinusoidal)
            .with_tied_embeddings(true),
    ];
    for config in configs {
        let native = config
            .init::<f64, _>(&mut StdRng::seed_from_u64(3))
            .unwrap();
        let dev = Device::default();
        let lm = TransformerLm::from_native(&native, &dev).unwrap();
        let (b, t) = (3, 7);
        let ids: Vec<i64> = (0..b * t).map(|i| ((5 * i + 2) % 11) as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), &dev);
        let full = read(&lm.forward(ids.clone(), None), "full");
        let mut cache = lm.new_cache();
        for (from, to) in [(0usize, 3usize), (3, 4), (4, 7)] {
            let step = lm.forward_step(ids.clone().slice([0..b, from..to]), &mut cache);
            assert_eq!(cache.len(), to);
            let want = full
                .slice(phm_nn::ndarray::s![.., from..to, ..])
                .to_owned()
                .into_dyn();
            assert_rel(&read(&step, "step"), &want, "cached step");
        }
    }
}

#[test]
fn cached_generation_equals_uncached_and_phm_nn() {
    let native = native::TransformerLmConfig::new(9, 8, 2, 2, 6)
        .with_projection(ProjectionConfig::low_rank(2, 1).to_native())
        .init::<f64, _>(&mut StdRng::seed_from_u64(6))
        .unwrap();
    let lm = TransformerLm::from_native(&native, &Device::default()).unwrap();
    // 14 steps with max_len 6: the context restarts several times.
    let want = native
        .generate(
            &[4, 1],
            14,
            native::Sampling::greedy(),
            &mut StdRng::seed_from_u64(0),
        )
        .unwrap();
    let rng = || StdRng::seed_from_u64(2);
    assert_eq!(
        lm.generate(&[4, 1], 14, Sampling::greedy(), &mut rng())
            .unwrap(),
        want
    );
    let warm = Sampling::new(0.8, Some(4));
    let sampled = lm.generate(&[4, 1], 14, warm, &mut rng()).unwrap();
    assert_eq!(
        sampled,
        lm.generate_uncached(&[4, 1], 14, warm, &mut rng()).unwrap()
    );
    // The same draws as phm-nn: one sampling rule, the same logits to rounding.
    assert_eq!(
        sampled,
        native.generate(&[4, 1], 14, warm, &mut rng()).unwrap()
    );
}

#[test]
fn embedding_ids_out_of_range_are_errors_naming_the_id() {
    let device = Device::default();
    let embed = phm_burn::transformer::EmbeddingConfig::new(5, 3)
        .init::<f64>(&device)
        .unwrap();
    let ids = |v: [[i64; 3]; 1]| Tensor::<2, Int>::from_data(TensorData::from(v), &device);
    let ok = embed.try_forward(ids([[0, 4, 2]])).unwrap();
    // Row 4 of the table, read back exactly.
    let table = array_from_tensor::<f64, 2>(&embed.weight.val(), "weight").unwrap();
    let got = array_from_tensor::<f64, 3>(&ok, "y").unwrap();
    let row = |a: &ArrayD<f64>, i: usize| a.index_axis(phm_nn::ndarray::Axis(0), i).to_owned();
    assert_eq!(row(&row(&got, 0), 1), row(&table, 4));
    for (bad, id) in [([[0, 5, 1]], "5"), ([[2, -1, 7]], "-1"), ([[9, 0, 0]], "9")] {
        let err = embed.try_forward(ids(bad)).unwrap_err().to_string();
        assert!(err.contains(&format!("id {id} ")), "{err}");
        assert!(err.contains("vocab 5"), "{err}");
    }
}

#[test]
#[should_panic(expected = "id 5 is out of range for vocab 5")]
fn embedding_forward_panics_on_an_id_out_of_range() {
    let device = Device::default();
    let embed = phm_burn::transformer::EmbeddingConfig::new(5, 3)
        .init::<f32>(&device)
        .unwrap();
    embed.forward(Tensor::<2, Int>::from_ints([[1, 5]], &device));
}

#[test]
#[should_panic(expected = "out of range for vocab 9")]
fn lm_forward_panics_on_an_id_out_of_range() {
    let native = native::TransformerLmConfig::new(9, 8, 2, 1, 6)
        .init::<f64, _>(&mut StdRng::seed_from_u64(4))
        .unwrap();
    let burn = TransformerLm::from_native(&native, &Device::default()).unwrap();
    burn.forward(
        Tensor::<2, Int>::from_data(TensorData::from([[1i64, 9]]), &Device::default()),
        None,
    );
}
