//! Training utilities: gradient clipping by global norm, the shared loop (train_step,
//! fit_epoch, evaluate), and training checkpoints that resume a run bit for bit.
use ndarray::array;
use phm_nn::data::{Batches, Dataset};
use phm_nn::io::{self, RngState, TrainingProgress};
use phm_nn::module::params;
use phm_nn::optim::schedule::Schedule;
use phm_nn::optim::OptimizerState;
use phm_nn::prelude::*;
use phm_nn::train::EpochStats;

// ---------------------------------------------------------------- clipping

/// Two PHM layers sharing their rules, one with a frozen bias, and gradients set by hand.
fn clip_model() -> Sequential<f64> {
    let mut rng = StdRng::seed_from_u64(0);
    let a = PhmLinearConfig::new(4, 4, 2)
        .init::<f64, _>(&mut rng)
        .unwrap();
    let b = PhmLinearConfig::new(4, 2, 2)
        .init_shared::<f64, _>(a.rules_param(), &mut rng)
        .unwrap();
    b.bias_param().unwrap().set_trainable(false);
    Sequential::new().add(a).add(b)
}

fn set_grads(m: &Sequential<f64>, g: f64) {
    for (_, p) in params(m) {
        if p.is_trainable() {
            p.write().grad_mut().fill(g);
        }
    }
}

fn grads(m: &Sequential<f64>) -> Vec<ArrayD<f64>> {
    params(m).into_iter().map(|(_, p)| p.grad()).collect()
}

#[test]
fn clipping_uses_each_distinct_trainable_tensor_once() {
    let m = clip_model();
    set_grads(&m, 0.5);
    // Trainable and distinct: rules 8, blocks 8 + 4, bias 4 → 24 entries of 0.5; the
    // shared rules count once, the frozen bias not at all.
    let expected = (24.0f64 * 0.25).sqrt();
    let norm = clip_grad_norm(&m, 1.0).unwrap();
    assert_eq!(norm, expected);
    let c = 1.0 / (expected + 1e-6);
    for (_, p) in params(&m) {
        let want = if p.is_trainable() { 0.5 * c } else { 0.0 };
        assert!(p.grad().iter().all(|&g| g == want), "{p:?}");
    }
    // The clipped norm is just below max_norm.
    assert!((clip_grad_norm(&m, 10.0).unwrap() - 1.0).abs() < 1e-5);
}

#[test]
fn a_norm_below_the_limit_is_left_alone() {
    let m = clip_model();
    set_grads(&m, 0.01);
    let before = grads(&m);
    let norm = clip_grad_norm(&m, 1.0).unwrap();
    assert!((norm - (24.0f64 * 1e-4).sqrt()).abs() < 1e-15);
    assert_eq!(grads(&m), before);
}

#[test]
fn clipping_rejects_bad_limits_and_non_finite_gradients() {
    let m = clip_model();
    set_grads(&m, 3.0);
    let before = grads(&m);
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            clip_grad_norm(&m, bad),
            Err(PhmError::InvalidArgument { .. })
        ));
    }
    params(&m)[1].1.write().grad_mut()[[0, 0, 0]] = f64::NAN;
    let err = clip_grad_norm(&m, 1.0).unwrap_err();
    assert_eq!(
        err,
        PhmError::NonFiniteGradient {
            param: "0.blocks".into()
        }
    );
    let mut after = grads(&m);
    after[1][[0, 0, 0]] = 3.0;
    assert_eq!(after, before, "no gradient changed");
}

// ---------------------------------------------------------------- loop

/// A small 3-class problem: class = argmax of the first three features, plus noise columns.
fn data(seed: u64, n: usize) -> Dataset<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = Array2::from_shape_fn((n, 8), |_| rand::RngExt::random::<f64>(&mut rng));
    let y = x
        .rows()
        .into_iter()
        .map(|r| (0..3).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
        .collect();
    Dataset::new(x, y).unwrap()
}

fn net(seed: u64) -> Sequential<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    Sequential::new()
        .add(PhmLinearConfig::new(8, 16, 4).init(&mut rng).unwrap())
        .add(Relu::new())
        .add(
            PhmLinearConfig::new(16, 16, 4)
                .with_rule(Rule::Fixed(Algebra::Quaternion))
                .init(&mut rng)
                .unwrap(),
        )
        .add(Tanh::new())
        .add(LinearConfig::new(16, 3).init(&mut rng).unwrap())
}

fn values(m: &Sequential<f64>) -> Vec<(String, ArrayD<f64>)> {
    params(m).into_iter().map(|(p, t)| (p, t.value())).collect()
}

#[test]
fn training_learns_and_evaluation_changes_nothing() {
    let train = data(1, 300);
    let test = data(2, 200);
    let mut model = net(0);
    let mut opt = Adam::new(AdamConfig {
        lr: 0.02,
        ..AdamConfig::default()
    })
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let config = FitConfig {
        batch_size: 32,
        max_grad_norm: Some(5.0),
    };
    let before = evaluate(&model, &test, 64).unwrap();
    let mut last = None;
    for _ in 0..30 {
        last = Some(fit_epoch(&mut model, &mut opt, None, &train, &config, &mut rng).unwrap());
    }
    let EpochStats {
        samples,
        steps,
        max_grad_norm,
        ..
    } = last.unwrap();
    assert_eq!((samples, steps), (300, 10));
    assert!(max_grad_norm.unwrap() > 0.0);

    let snapshot = values(&model);
    let after = evaluate(&model, &test, 64).unwrap();
    assert_eq!(values(&model), snapshot, "evaluate changes no parameter");
    assert_eq!(model.pending(), 0, "evaluate saves no state");
    assert!(
        after.accuracy > 0.85 && after.accuracy > before.accuracy + 0.2,
        "{before:?} → {after:?}"
    );
    assert!(after.loss < before.loss);
    // The same numbers as computing them by hand on the whole set.
    let logits = model.infer(test.x().into_dyn());
    assert_eq!(after.accuracy, accuracy(logits.view(), test.y()));
    let whole = cross_entropy(logits.view(), test.y()).unwrap().value;
    assert!((after.loss - whole).abs() < 1e-12);
    assert_eq!(after.confusion.total(), 200);
    // Batch size does not change the result.
    assert_eq!(evaluate(&model, &test, 7).unwrap().accuracy, after.accuracy);
}

#[test]
fn a_step_uses_the_schedule_rate_and_counts_only_successful_steps() {
    let train = data(1, 40);
    let mut model = net(0);
    let mut opt = Sgd::new(SgdConfig {
        lr: 1.0,
        ..SgdConfig::default()
    })
    .unwrap();
    let mut schedule = Schedule::step_decay(0.1, 1, 0.5).unwrap();
    let batch = Batches::in_order(&train, 40).unwrap().next().unwrap();
    let s = train_step(&mut model, &mut opt, Some(&mut schedule), &batch, None).unwrap();
    assert_eq!((s.lr, schedule.step()), (0.1, 1));
    let s = train_step(&mut model, &mut opt, Some(&mut schedule), &batch, None).unwrap();
    assert_eq!((s.lr, schedule.step()), (0.05, 2));
    // A label out of range: an error, no step, no count.
    let mut bad = batch.clone();
    bad.y[3] = 7;
    let snapshot = values(&model);
    assert!(matches!(
        train_step(&mut model, &mut opt, Some(&mut schedule), &bad, None),
        Err(PhmError::LabelOutOfRange {
            row: 3,
            label: 7,
            classes: 3
        })
    ));
    assert_eq!(schedule.step(), 2);
    assert_eq!(values(&model), snapshot);
    assert_eq!(model.pending(), 0);
}

// ---------------------------------------------------------------- resume

/// `steps` steps, each on a mini-batch of 16 drawn with `rng` (so the generator advances
/// every step, not only every epoch).
fn run(
    model: &mut Sequential<f64>,
    opt: &mut dyn Optimizer<f64>,
    schedule: &mut Schedule,
    rng: &mut ChaCha8Rng,
    train: &Dataset<f64>,
    steps: usize,
) {
    for _ in 0..steps {
        let batch = Batches::shuffled(train, 16, rng).unwrap().next().unwrap();
        train_step(model, opt, Some(schedule), &batch, Some(1.0)).unwrap();
    }
}

fn resume_is_exact(make_opt: &dyn Fn() -> Box<dyn Optimizer<f64>>, schedule: Schedule) {
    let train = data(5, 100);
    let k = 12;
    // Straight through: 2k steps.
    let mut straight = net(0);
    let mut opt_a = make_opt();
    let mut sched_a = schedule.clone();
    let mut rng_a = ChaCha8Rng::seed_from_u64(42);
    run(
        &mut straight,
        opt_a.as_mut(),
        &mut sched_a,
        &mut rng_a,
        &train,
        2 * k,
    );

    // k steps, save, drop everything.
    let dir = std::env::temp_dir().join(format!("phm-nn-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("run-{}.safetensors", opt_a.learning_rate()));
    {
        let mut model = net(0);
        let mut opt = make_opt();
        let mut sched = schedule.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        run(&mut model, opt.as_mut(), &mut sched, &mut rng, &train, k);
        let progress = TrainingProgress {
            epoch: 0,
            step: k as u64,
            schedule: Some(sched),
            rng: RngState::of(&rng),
        };
        io::save_training(&model, opt.as_ref(), &progress, &path).unwrap();
    }
    // A fresh process state: another init, another optimizer setting, another generator.
    let mut resumed = net(99);
    let mut opt_b = make_opt();
    opt_b.set_learning_rate(123.0).unwrap();
    let progress = io::load_training(&mut resumed, opt_b.as_mut(), &path).unwrap();
    assert_eq!(progress.step, k as u64);
    let mut sched_b = progress.schedule.unwrap();
    assert_eq!(sched_b.step(), k);
    let mut rng_b = progress.rng.to_rng();
    run(
        &mut resumed,
        opt_b.as_mut(),
        &mut sched_b,
        &mut rng_b,
        &train,
        k,
    );

    // Bit for bit: every parameter, the optimizer state, the schedule, the generator.
    assert_eq!(values(&resumed), values(&straight));
    let (sa, sb): (OptimizerState<f64>, OptimizerState<f64>) =
        (opt_a.state(&straight), opt_b.state(&resumed));
    assert_eq!(sa, sb);
    assert_eq!(sched_b, sched_a);
    assert_eq!(RngState::of(&rng_b), RngState::of(&rng_a));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn resume_is_exact_with_adam_and_cosine_warmup() {
    resume_is_exact(
        &|| {
            Box::new(
                Adam::new(AdamConfig {
                    lr: 0.01,
                    weight_decay: 1e-3,
                    ..AdamConfig::default()
                })
                .unwrap(),
            )
        },
        Schedule::cosine(0.01, 15, 1e-4)
            .unwrap()
            .with_warmup(5, 0.1)
            .unwrap(),
    );
}

#[test]
fn resume_is_exact_with_sgd_momentum_and_step_decay() {
    resume_is_exact(
        &|| {
            Box::new(
                Sgd::new(SgdConfig {
                    lr: 0.05,
                    momentum: 0.9,
                    nesterov: true,
                    ..SgdConfig::default()
                })
                .unwrap(),
            )
        },
        Schedule::step_decay(0.05, 7, 0.5).unwrap(),
    );
}

#[test]
fn resume_at_an_epoch_boundary_with_fit_epoch() {
    let train = data(6, 90);
    let config = FitConfig {
        batch_size: 20,
        max_grad_norm: None,
    };
    let make = || AdamW::new(AdamWConfig::default()).unwrap();
    let (mut a, mut opt_a, mut rng_a) = (net(0), make(), ChaCha8Rng::seed_from_u64(8));
    for _ in 0..4 {
        fit_epoch(&mut a, &mut opt_a, None, &train, &config, &mut rng_a).unwrap();
    }
    let (mut b, mut opt_b, mut rng_b) = (net(0), make(), ChaCha8Rng::seed_from_u64(8));
    for _ in 0..2 {
        fit_epoch(&mut b, &mut opt_b, None, &train, &config, &mut rng_b).unwrap();
    }
    let progress = TrainingProgress {
        epoch: 2,
        step: 10,
        schedule: None,
        rng: RngState::of(&rng_b),
    };
    let bytes = io::training_to_bytes(&b, &opt_b, &progress).unwrap();
    let meta_epoch =
        phm_nn::io::load_training_from_bytes(&mut net(1), &mut make(), &bytes).unwrap();
    assert_eq!(meta_epoch, progress);

    let (mut c, mut opt_c) = (net(7), make());
    let p = io::load_training_from_bytes(&mut c, &mut opt_c, &bytes).unwrap();
    let (mut c, mut rng_c) = (c, p.rng.to_rng());
    for _ in p.epoch..4 {
        fit_epoch(&mut c, &mut opt_c, None, &train, &config, &mut rng_c).unwrap();
    }
    assert_eq!(values(&c), values(&a));
}

#[test]
fn training_checkpoints_refuse_what_does_not_fit() {
    let train = data(6, 40);
    let mut model = net(0);
    let mut adam = Adam::new(AdamConfig::default()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let config = FitConfig {
        batch_size: 20,
        max_grad_norm: None,
    };
    fit_epoch(&mut model, &mut adam, None, &train, &config, &mut rng).unwrap();
    let progress = TrainingProgress {
        epoch: 1,
        step: 2,
        schedule: None,
        rng: RngState::of(&rng),
    };
    let bytes = io::training_to_bytes(&model, &adam, &progress).unwrap();

    // An SGD optimizer cannot take Adam's state: an error, and neither changes.
    let mut fresh = net(1);
    let before = values(&fresh);
    let mut sgd = Sgd::new(SgdConfig {
        lr: 0.3,
        ..SgdConfig::default()
    })
    .unwrap();
    assert!(io::load_training_from_bytes(&mut fresh, &mut sgd, &bytes).is_err());
    assert_eq!(values(&fresh), before);
    assert_eq!(sgd.learning_rate(), 0.3);

    // Another architecture: the mismatch names the tensor under its `model.` name.
    let mut r = StdRng::seed_from_u64(0);
    let mut other = Sequential::<f64>::new().add(LinearConfig::new(8, 3).init(&mut r).unwrap());
    let err = io::load_training_from_bytes(
        &mut other,
        &mut Adam::new(AdamConfig::default()).unwrap(),
        &bytes,
    )
    .unwrap_err();
    assert!(
        matches!(&err, PhmError::CheckpointMismatch { tensor, .. } if tensor == "model.0.weight"),
        "{err}"
    );

    // A model file is not a training file.
    let err = io::load_training_from_bytes(
        &mut fresh,
        &mut Adam::new(AdamConfig::default()).unwrap(),
        &io::model_to_bytes(&model).unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, PhmError::CheckpointFormat { .. }), "{err}");
    assert!(
        err.to_string().contains("not a training checkpoint"),
        "{err}"
    );

    // Truncated: a format error.
    for cut in [0, 8, bytes.len() / 2, bytes.len() - 1] {
        let err = io::load_training_from_bytes(
            &mut fresh,
            &mut Adam::new(AdamConfig::default()).unwrap(),
            &bytes[..cut],
        )
        .unwrap_err();
        assert!(
            matches!(err, PhmError::CheckpointFormat { .. }),
            "{cut}: {err}"
        );
    }
    let _ = array![1.0];
}
