//! The Transformer blocks: finite-difference checks (f64) of attention (dense, PHM, low-rank
//! PHM, causal or not, with a padding mask), the feed-forward block, the pre-norm block, and
//! the key/value cache.

use crate::common::{check_gradients_d, rng, uniform_d};
use ndarray::{s, ArrayD, ArrayViewD, IxDyn};
use phm_nn::module::params;
use phm_nn::nn::transformer::{
    AttentionCache, AttentionConfig, Block, BlockConfig, FeedForwardConfig, MultiHeadAttention,
};
use phm_nn::nn::Projection;
use phm_nn::Module;

const TOL: f64 = 1e-6;

fn projections() -> [Projection; 3] {
    [
        Projection::Dense,
        Projection::phm(2),
        Projection::low_rank(2, 1),
    ]
}

#[test]
fn attention_gradients_match_finite_differences() {
    for (i, projection) in projections().into_iter().enumerate() {
        for causal in [true, false] {
            let mut attn = AttentionConfig::new(8, 2)
                .with_causal(causal)
                .with_projection(projection)
                .init::<f64, _>(None, &mut rng(i as u64))
                .unwrap();
            let x = uniform_d(&mut rng(10 + i as u64), &[2, 4, 8]);
            check_gradients_d(&mut attn, &x, 3, TOL);
        }
    }
}

/// Attention with a fixed padding mask, as a `Module` for the gradient check.
#[derive(Clone, Debug)]
struct Masked {
    attn: MultiHeadAttention<f64>,
    pad: ArrayD<bool>,
}

impl Module<f64> for Masked {
    fn forward(&mut self, x: ArrayViewD<'_, f64>) -> ArrayD<f64> {
        self.attn.forward_masked(x, Some(self.pad.view()))
    }
    fn backward(&mut self, g: ArrayViewD<'_, f64>) -> ArrayD<f64> {
        self.attn.backward(g)
    }
    fn infer(&self, x: ArrayViewD<'_, f64>) -> ArrayD<f64> {
        self.attn.infer_masked(x, Some(self.pad.view()))
    }
    fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<f64>)) {
        f("attn", &self.attn);
    }
    fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<f64>)) {
        f("attn", &mut self.attn);
    }
}

fn pad_mask(rows: &[&[bool]]) -> ArrayD<bool> {
    let t = rows[0].len();
    ArrayD::from_shape_fn(IxDyn(&[rows.len(), t]), |i| rows[i[0]][i[1]])
}

#[test]
fn masked_attention_gradients_match_finite_differences() {
    // Batch 1 pads its last two keys; with causal off, its query 0 still sees key 0.
    let pad = pad_mask(&[&[false; 4], &[false, false, true, true]]);
    for causal in [true, false] {
        let attn = AttentionConfig::new(8, 2)
            .with_causal(causal)
            .with_projection(Projection::phm(2))
            .init::<f64, _>(None, &mut rng(5))
            .unwrap();
        let mut m = Masked {
            attn,
            pad: pad.clone(),
        };
        check_gradients_d(&mut m, &uniform_d(&mut rng(6), &[2, 4, 8]), 7, TOL);
    }
}

#[test]
fn padded_keys_do_not_change_the_output() {
    let attn = AttentionConfig::new(8, 2)
        .with_causal(false)
        .init::<f64, _>(None, &mut rng(1))
        .unwrap();
    let pad = pad_mask(&[&[false, false, true, true]]);
    let x = uniform_d(&mut rng(2), &[1, 4, 8]);
    let mut changed = x.clone();
    changed.slice_mut(s![.., 2.., ..]).fill(7.0); // rewrite the padded positions
    let a = attn.infer_masked(x.view(), Some(pad.view()));
    let b = attn.infer_masked(changed.view(), Some(pad.view()));
    // The unpadded queries see only unpadded keys: their outputs are unchanged.
    for (u, v) in a
        .slice(s![.., ..2, ..])
        .iter()
        .zip(b.slice(s![.., ..2, ..]).iter())
    {
        assert!((u - v).abs() < 1e-12, "{u} vs {v}");
    }
    // Without the mask they do change.
    let c = attn.infer(changed.view());
    assert!(a
        .slice(s![.., ..2, ..])
        .iter()
        .zip(c.slice(s![.., ..2, ..]).iter())
        .any(|(u, v)| (u - v).abs() > 1e-6));
}

#[test]
fn causal_attention_ignores_the_future() {
    let attn = AttentionConfig::new(8, 4)
        .init::<f64, _>(None, &mut rng(3))
        .unwrap();
    let x = uniform_d(&mut rng(4), &[2, 5, 8]);
    let mut future = x.clone();
    future.slice_mut(s![.., 3.., ..]).fill(-3.0);
    let a = attn.infer(x.view());
    let b = attn.infer(future.view());
    assert_eq!(a.slice(s![.., ..3, ..]), b.slice(s![.., ..3, ..]));
    assert_ne!(a.slice(s![.., 3.., ..]), b.slice(s![.., 3.., ..]));
}

#[test]
fn attention_matches_a_naive_formula() {
    // One head, identity-free check: compute softmax(QKᵀ/√d)V by hand from the projections.
    let attn = AttentionConfig::new(4, 1)
        .init::<f64, _>(None, &mut rng(8))
        .unwrap();
    let x = uniform_d(&mut rng(9), &[1, 3, 4]);
    let [q, k, v, o] = attn.projections();
    let (q, k, v) = (q.infer(x.view()), k.infer(x.view()), v.infer(x.view()));
    let mut merged = ArrayD::<f64>::zeros(IxDyn(&[1, 3, 4]));
    for i in 0..3 {
        let scores: Vec<f64> = (0..=i)
            .map(|j| (0..4).map(|c| q[[0, i, c]] * k[[0, j, c]]).sum::<f64>() / 2.0)
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let z: f64 = e.iter().sum();
        for c in 0..4 {
            merged[[0, i, c]] = (0..=i).map(|j| e[j] / z * v[[0, j, c]]).sum();
        }
    }
    let expected = o.infer(merged.view());
    let got = attn.infer(x.view());
    for (a, b) in got.iter().zip(expected.iter()) {
        assert!((a - b).abs() < 1e-12);
    }
}

#[test]
fn a_query_with_no_visible_key_gets_zero_attention() {
    let attn = AttentionConfig::new(4, 2)
        .init::<f64, _>(None, &mut rng(11))
        .unwrap();
    let pad = pad_mask(&[&[true, false, false]]); // query 0 can only see key 0: padded
    let x = uniform_d(&mut rng(12), &[1, 3, 4]);
    let y = attn.infer_masked(x.view(), Some(pad.view()));
    assert!(y.iter().all(|v| v.is_finite()));
    let zero = attn.projections()[3].infer(ArrayD::zeros(IxDyn(&[1, 1, 4])).view());
    for (a, b) in y.slice(s![.., 0..1, ..]).iter().zip(zero.iter()) {
        assert!((a - b).abs() < 1e-15, "o(0) expected");
    }
}

#[test]
fn the_cache_gives_the_full_pass_outputs() {
    for projection in projections() {
        let attn = AttentionConfig::new(8, 2)
            .with_projection(projection)
            .init::<f64, _>(None, &mut rng(13))
            .unwrap();
        let x = uniform_d(&mut rng(14), &[2, 7, 8]);
        let full = attn.infer(x.view());
        let mut cache = AttentionCache::new(2, 8, 7);
        // A prompt of 3 tokens at once, then one at a time.
        let mut pieces = vec![attn.infer_cached(x.slice(s![.., 0..3, ..]).into_dyn(), &mut cache)];
        for t in 3..7 {
            pieces.push(attn.infer_cached(x.slice(s![.., t..t + 1, ..]).into_dyn(), &mut cache));
        }
        assert_eq!(cache.len(), 7);
        let views: Vec<_> = pieces.iter().map(|p| p.view()).collect();
        let stepped = ndarray::concatenate(ndarray::Axis(1), &views).unwrap();
        for (a, b) in stepped.iter().zip(full.iter()) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }
}

#[test]
#[should_panic(expected = "exceed the cache capacity")]
fn the_cache_refuses_to_overflow() {
    let attn = AttentionConfig::new(4, 1)
        .init::<f64, _>(None, &mut rng(1))
        .unwrap();
    let mut cache = AttentionCache::new(1, 4, 2);
    attn.infer_cached(ArrayD::zeros(IxDyn(&[1, 3, 4])).view(), &mut cache);
}

#[test]
fn attention_rejects_bad_configs() {
    assert!(AttentionConfig::new(10, 4)
        .init::<f32, _>(None, &mut rng(0))
        .is_err());
    assert!(AttentionConfig::new(8, 0)
        .init::<f32, _>(None, &mut rng(0))
        .is_err());
    assert!(AttentionConfig::new(12, 3)
        .with_projection(Projection::phm(8))
        .init::<f32, _>(None, &mut rng(0))
        .is_err());
}

#[test]
fn feed_forward_gradients_match_finite_differences() {
    for (i, projection) in projections().into_iter().enumerate() {
        let mut ffn = FeedForwardConfig::new(4, 8)
            .with_projection(projection)
            .init::<f64, _>(None, &mut rng(20 + i as u64))
            .unwrap();
        check_gradients_d(&mut ffn, &uniform_d(&mut rng(30), &[2, 3, 4]), 1, TOL);
    }
}

#[test]
fn shared_rules_are_one_tensor_across_projections() {
    let projection = Projection::phm(2);
    let rules = projection
        .new_rules::<f64, _>(&mut rng(0))
        .unwrap()
        .unwrap();
    let mut attn = AttentionConfig::new(8, 2)
        .with_projection(projection)
        .init::<f64, _>(Some(&rules), &mut rng(1))
        .unwrap();
    // 8 rule entries once + 4 × (8·8/2 blocks + 8 bias).
    assert_eq!(attn.num_parameters(), 8 + 4 * (32 + 8));
    check_gradients_d(&mut attn, &uniform_d(&mut rng(2), &[1, 3, 8]), 3, TOL);
}

#[test]
fn block_gradients_match_finite_differences() {
    for (i, projection) in projections().into_iter().enumerate() {
        let mut block = BlockConfig::new(8, 2, 12)
            .with_projection(projection)
            .init::<f64, _>(None, 0, &mut rng(i as u64))
            .unwrap();
        // Non-trivial layer-norm parameters, so their gradients are tested away from 1 / 0.
        for (path, p) in params(&block) {
            if path.starts_with("ln") {
                let shape = p.shape();
                p.set_value(uniform_d(&mut rng(40 + i as u64), &shape).view())
                    .unwrap();
            }
        }
        check_gradients_d(&mut block, &uniform_d(&mut rng(50), &[2, 3, 8]), 9, TOL);
    }
}

#[test]
fn block_with_shared_rules_and_padding_matches_finite_differences() {
    #[derive(Clone, Debug)]
    struct Masked(Block<f64>, ArrayD<bool>);
    impl Module<f64> for Masked {
        fn forward(&mut self, x: ArrayViewD<'_, f64>) -> ArrayD<f64> {
            self.0.forward_masked(x, Some(self.1.view()))
        }
        fn backward(&mut self, g: ArrayViewD<'_, f64>) -> ArrayD<f64> {
            self.0.backward(g)
        }
        fn infer(&self, x: ArrayViewD<'_, f64>) -> ArrayD<f64> {
            self.0.infer_masked(x, Some(self.1.view()))
        }
        fn visit_children<'a>(&'a self, f: &mut dyn FnMut(&str, &'a dyn Module<f64>)) {
            f("block", &self.0);
        }
        fn visit_children_mut<'a>(&'a mut self, f: &mut dyn FnMut(&str, &'a mut dyn Module<f64>)) {
            f("block", &mut self.0);
        }
    }
    let projection = Projection::phm(2);
    let rules = projection.new_rules::<f64, _>(&mut rng(1)).unwrap();
    let block = BlockConfig::new(8, 2, 8)
        .with_projection(projection)
        .init::<f64, _>(rules.as_ref(), 0, &mut rng(2))
        .unwrap();
    // Rules counted once: 8 + 4 × (32 + 8) attention + 2 × (32 + 8) feed-forward + 2 × 16 norms.
    assert_eq!(block.num_parameters(), 8 + 4 * 40 + 2 * 40 + 32);
    let pad = ArrayD::from_shape_fn(IxDyn(&[2, 4]), |i| i[0] == 1 && i[1] >= 2);
    let mut m = Masked(block, pad);
    check_gradients_d(&mut m, &uniform_d(&mut rng(3), &[2, 4, 8]), 4, TOL);
}

#[test]
fn fixed_quaternion_projections_are_frozen_and_exact() {
    use phm_nn::{algebra::Algebra, Rule};
    let projection = Projection::Phm {
        n: 4,
        rule: Rule::Fixed(Algebra::Quaternion),
    };
    let mut block = BlockConfig::new(8, 2, 8)
        .with_projection(projection)
        .init::<f64, _>(None, 0, &mut rng(60))
        .unwrap();
    // Frozen rules: 6 projections × 4³ entries, none trainable.
    assert_eq!(block.num_frozen_parameters(), 6 * 64);
    // Trainable: 4 × (8·8/4 + 8) attention, (8·8/4 + 8) × 2 feed-forward, 2 × 16 norms.
    assert_eq!(block.num_parameters(), 4 * 24 + 2 * 24 + 32);
    check_gradients_d(&mut block, &uniform_d(&mut rng(61), &[1, 3, 8]), 62, TOL);
}

#[test]
fn attention_softmax_is_stable_in_f32() {
    // Scores in the thousands: exp would overflow without subtracting the row maximum.
    let attn64 = AttentionConfig::new(8, 2)
        .init::<f64, _>(None, &mut rng(70))
        .unwrap();
    let attn32 = AttentionConfig::new(8, 2)
        .init::<f32, _>(None, &mut rng(70))
        .unwrap();
    let x = uniform_d(&mut rng(71), &[2, 6, 8]).mapv(|v| 300.0 * v);
    let y64 = attn64.infer(x.view());
    let y32 = attn32.infer(x.mapv(|v| v as f32).view());
    let scale = y64.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 1.0, "large outputs expected");
    for (a, b) in y32.iter().zip(y64.iter()) {
        assert!(a.is_finite(), "f32 output overflowed");
        assert!((*a as f64 - b).abs() <= 1e-4 * scale, "{a} vs {b}");
    }
}
