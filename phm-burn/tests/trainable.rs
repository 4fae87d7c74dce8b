//! Trainable flags cross the bridge both ways for every parameter, not only for rules: a
//! frozen phm-nn block, factor, bias, weight or table becomes a burn parameter without
//! gradients (no gradient after a backward pass) and back, and a burn parameter set with
//! `set_require_grad(false)` becomes a frozen phm-nn one.

use phm_burn::bridge::{is_trainable, tensor_from_array};
use phm_burn::burn::module::Module as _;
use phm_burn::burn::tensor::{Device, Int, Tensor, TensorData};
use phm_burn::conv::{Conv2d, PhmConv2d};
use phm_burn::linear::{LphmLinear, PhmLinear, PhmLinearConfig, ProjectionConfig};
use phm_burn::transformer::TransformerLm;
use phm_burn::Bridge;
use phm_nn::ndarray::{ArrayD, IxDyn};
use phm_nn::nn::transformer as native;
use phm_nn::rand::{rngs::StdRng, SeedableRng};
use phm_nn::Module;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Every parameter path of a phm-nn module with its trainable flag.
fn flags(m: &dyn Module<f64>) -> Vec<(String, bool)> {
    let mut v = Vec::new();
    m.visit_params(&mut |name, p| v.push((name.to_string(), p.is_trainable())));
    v
}

/// Freezes the parameters of `m` whose path is in `paths`; panics if one is missing.
fn freeze(m: &dyn Module<f64>, paths: &[&str]) {
    let mut found = 0;
    m.visit_params(&mut |name, p| {
        if paths.contains(&name) {
            p.set_trainable(false);
            found += 1;
        }
    });
    assert!(found >= paths.len(), "not every path of {paths:?} exists");
}

fn frozen(m: &dyn Module<f64>) -> Vec<String> {
    flags(m)
        .into_iter()
        .filter(|(_, t)| !t)
        .map(|(n, _)| n)
        .collect()
}

#[test]
fn phm_linear_frozen_blocks_come_across_both_ways_and_get_no_gradient() {
    let layer = phm_nn::PhmLinearConfig::new(8, 4, 2)
        .init::<f64, _>(&mut rng(1))
        .unwrap();
    freeze(&layer, &["blocks"]);
    let dev = Device::default().autodiff();
    let burn = PhmLinear::from_native(&layer, &dev).unwrap();
    assert!(!is_trainable(&burn.blocks));
    assert!(is_trainable(burn.rules.as_ref().unwrap()));
    assert!(is_trainable(burn.bias.as_ref().unwrap()));
    assert_eq!(flags(&burn.to_native::<f64>().unwrap()), flags(&layer));

    // burn trains the bias and rules, not the blocks.
    let x = ArrayD::from_shape_fn(IxDyn(&[3, 8]), |i| (i[0] + 2 * i[1]) as f64 / 9.0);
    let grads = burn
        .forward(tensor_from_array::<f64, 2>(x.view(), &dev))
        .sum()
        .backward();
    assert!(burn.blocks.grad(&grads).is_none());
    assert!(burn.bias.as_ref().unwrap().grad(&grads).is_some());
    assert!(burn.rules.as_ref().unwrap().grad(&grads).is_some());

    // burn → phm-nn: a bias frozen in burn (on a plain device) is frozen in phm-nn.
    let mut burn = PhmLinearConfig::new(8, 4, 2)
        .init::<f64>(&Device::default())
        .unwrap();
    burn.bias = burn.bias.map(|b| b.set_require_grad(false));
    let native = burn.to_native::<f64>().unwrap();
    assert_eq!(frozen(&native), ["bias"]);
    // And phm-nn's shared-rules path (to_native_with_rules) carries it too.
    let rules =
        phm_nn::nn::PhmRules::<f64>::new(2, phm_burn::rules::rule_of(2, false), &mut rng(3))
            .unwrap();
    let shared = burn.to_native_with_rules(&rules).unwrap();
    assert_eq!(frozen(&shared), ["bias"]);
}

#[test]
fn lphm_linear_frozen_factors_and_bias_round_trip() {
    let layer = phm_nn::LphmLinearConfig::new(8, 4, 2, 2)
        .init::<f64, _>(&mut rng(2))
        .unwrap();
    freeze(&layer, &["u", "bias"]);
    let burn = LphmLinear::from_native(&layer, &Device::default()).unwrap();
    assert!(!is_trainable(&burn.u));
    assert!(is_trainable(&burn.v));
    assert!(!is_trainable(burn.bias.as_ref().unwrap()));
    let back = burn.to_native::<f64>().unwrap();
    assert_eq!(flags(&back), flags(&layer));
    assert_eq!(frozen(&back), ["u", "bias"]);
}

#[test]
fn conv2d_frozen_weight_and_bias_round_trip() {
    let conv = phm_nn::nn::Conv2dConfig::new(3, 4, (2, 2))
        .init::<f64, _>(&mut rng(4))
        .unwrap();
    freeze(&conv, &["weight"]);
    let burn = Conv2d::from_native(&conv, &Device::default()).unwrap();
    assert!(!is_trainable(&burn.weight));
    assert!(is_trainable(burn.bias.as_ref().unwrap()));
    assert_eq!(flags(&burn.to_native::<f64>().unwrap()), flags(&conv));

    let phm = phm_nn::nn::PhmConv2dConfig::new(4, 4, (3, 3), 2)
        .init::<f64, _>(&mut rng(5))
        .unwrap();
    freeze(&phm, &["bias"]);
    let burn = PhmConv2d::from_native(&phm, &Device::default()).unwrap();
    assert!(is_trainable(&burn.blocks));
    assert!(!is_trainable(burn.bias.as_ref().unwrap()));
    let back = burn.to_native::<f64>().unwrap();
    assert_eq!(flags(&back), flags(&phm));
    assert_eq!(frozen(&back), ["bias"]);
}

fn lm_case(config: native::TransformerLmConfig, freeze_paths: &[&str]) {
    let lm = config.init::<f64, _>(&mut rng(6)).unwrap();
    freeze(&lm, freeze_paths);
    let want = frozen(&lm);
    let dev = Device::default().autodiff();
    let burn = TransformerLm::from_native(&lm, &dev).unwrap();
    assert!(!is_trainable(&burn.embed.weight));
    assert_eq!(frozen(&burn.to_native::<f64>().unwrap()), want);
    // The frozen table gets no gradient in burn; the final norm does.
    let ids = Tensor::<2, Int>::from_data(TensorData::from([[1i64, 2, 3]]), &dev);
    let grads = burn.forward(ids, None).sum().backward();
    assert!(burn.embed.weight.grad(&grads).is_none());
    assert!(burn.ln_f.weight.grad(&grads).is_some());
    // Valid then train keeps the setting (burn's own round trip).
    let again = burn.valid().train();
    assert!(!is_trainable(&again.embed.weight));
}

#[test]
fn lm_frozen_parameters_round_trip() {
    lm_case(
        native::TransformerLmConfig::new(11, 8, 2, 2, 8).with_ffn_width(12),
        &[
            "embed.weight",
            "blocks.0.ln1.bias",
            "blocks.1.attn.q.weight",
        ],
    );
    lm_case(
        native::TransformerLmConfig::new(11, 8, 2, 2, 8)
            .with_ffn_width(12)
            .with_projection(ProjectionConfig::phm(4).to_native())
            .with_shared_rules(true)
            .with_tied_embeddings(true),
        &[
            "embed.weight",
            "blocks.0.attn.k.blocks",
            "blocks.1.ffn.fc1.bias",
        ],
    );
}
