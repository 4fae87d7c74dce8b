//! Learning-rate schedules against hand-computed values.

use phm_nn::optim::schedule::{Decay, Schedule, Warmup};
use phm_nn::optim::{Optimizer, Sgd, SgdConfig};

#[track_caller]
fn assert_lrs(schedule: &Schedule, expected: &[f64]) {
    for (t, &want) in expected.iter().enumerate() {
        let got = schedule.lr_at(t);
        assert!(
            (got - want).abs() <= 1e-15,
            "lr_at({t}) = {got}, expected {want}"
        );
    }
}

#[test]
fn step_decay_multiplies_by_gamma_every_step_size_steps() {
    let schedule = Schedule::step_decay(1.0, 3, 0.5).unwrap();
    let expected = [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125];
    for (t, want) in expected.into_iter().enumerate() {
        assert_eq!(schedule.lr_at(t), want, "t = {t}");
    }
    // PyTorch's StepLR example: lr 0.05, step_size 30, gamma 0.1.
    let torch = Schedule::step_decay(0.05, 30, 0.1).unwrap();
    assert_eq!(torch.lr_at(29), 0.05);
    assert!((torch.lr_at(30) - 0.005).abs() < 1e-17);
    assert!((torch.lr_at(89) - 0.0005).abs() < 1e-18);
    assert!((torch.lr_at(90) - 0.00005).abs() < 1e-19);
}

#[test]
fn cosine_anneals_to_min_lr_and_stays() {
    // η = 0.1, η_min = 0, T = 4: 0.05·(1 + cos(πt/4)), cos(π/4) = √2/2.
    let schedule = Schedule::cosine(0.1, 4, 0.0).unwrap();
    assert_lrs(
        &schedule,
        &[
            0.1,
            0.085_355_339_059_327_38, // 0.05·(1 + √2/2)
            0.05,
            0.014_644_660_940_672_62, // 0.05·(1 − √2/2)
            0.0,
            0.0,
            0.0,
        ],
    );
    assert_eq!(schedule.lr_at(1_000_000), 0.0);

    // η_min = 0.01, T = 3: 0.01 + 0.09·(1 + cos(πt/3))/2, cos(π/3) = 1/2.
    let schedule = Schedule::cosine(0.1, 3, 0.01).unwrap();
    assert_lrs(&schedule, &[0.1, 0.0775, 0.0325, 0.01, 0.01]);
}

#[test]
fn warmup_is_linear_then_the_decay_starts_from_its_own_step_0() {
    // 4 warm-up steps from 0, then η = 0.2 decayed by 0.1 every 2 steps.
    let schedule = Schedule::step_decay(0.2, 2, 0.1)
        .unwrap()
        .with_warmup(4, 0.0)
        .unwrap();
    assert_lrs(
        &schedule,
        &[0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.02, 0.02, 0.002],
    );

    // Warm-up from 0.25·η over 3 steps, then cosine to 0 over 2 steps.
    let schedule = Schedule::cosine(0.4, 2, 0.0)
        .unwrap()
        .with_warmup(3, 0.25)
        .unwrap();
    // 0.4·0.25, 0.4·0.5, 0.4·0.75, then 0.2·(1 + cos(πt'/2)) for t' = 0, 1, 2, and 0.
    assert_lrs(&schedule, &[0.1, 0.2, 0.3, 0.4, 0.2, 0.0, 0.0]);

    let schedule = Schedule::constant(0.3)
        .unwrap()
        .with_warmup(2, 0.5)
        .unwrap();
    assert_lrs(&schedule, &[0.15, 0.225, 0.3, 0.3]);
    assert_eq!(
        schedule.warmup(),
        Some(Warmup {
            steps: 2,
            start_factor: 0.5
        })
    );
    assert_eq!(schedule.decay(), Decay::Constant);
    assert_eq!(schedule.base_lr(), 0.3);
}

#[test]
fn advance_sets_the_optimizer_rate_and_counts_steps_apply_does_not_count() {
    let mut schedule = Schedule::step_decay(1.0, 2, 0.5).unwrap();
    let mut opt = Sgd::<f64>::new(SgdConfig {
        lr: 7.0,
        ..SgdConfig::default()
    })
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let lr = schedule.advance(&mut opt).unwrap();
        assert_eq!(opt.learning_rate(), lr);
        seen.push(lr);
    }
    assert_eq!(seen, [1.0, 1.0, 0.5, 0.5, 0.25]);
    assert_eq!(schedule.step(), 5);
    assert_eq!(schedule.lr(), 0.25);

    schedule.apply(6, &mut opt).unwrap();
    assert_eq!(opt.learning_rate(), 0.125);
    assert_eq!(schedule.step(), 5);
}

#[test]
fn a_saved_copy_resumes_where_it_stopped() {
    let mut opt = Sgd::<f32>::new(SgdConfig::default()).unwrap();
    let mut schedule = Schedule::cosine(0.1, 10, 0.0)
        .unwrap()
        .with_warmup(3, 0.1)
        .unwrap();
    for _ in 0..4 {
        schedule.advance(&mut opt).unwrap();
    }
    let saved = schedule.clone();
    assert_eq!(saved, schedule);

    // Rebuilt from its parts and the step counter, as a checkpoint would.
    let mut restored = Schedule::new(saved.base_lr(), saved.warmup(), saved.decay()).unwrap();
    assert_ne!(restored, saved, "a new schedule starts at step 0");
    restored.set_step(saved.step());
    assert_eq!(restored, saved);

    let mut other_opt = Sgd::<f32>::new(SgdConfig::default()).unwrap();
    for _ in 0..5 {
        assert_eq!(
            schedule.advance(&mut opt).unwrap(),
            restored.advance(&mut other_opt).unwrap()
        );
    }
    // Adding a warm-up keeps the counter.
    let warmed = restored.clone().with_warmup(1, 1.0).unwrap();
    assert_eq!(warmed.step(), 9);
}

#[test]
fn invalid_parameters_are_errors_naming_the_value() {
    let msg = |r: phm_nn::Result<Schedule>| r.unwrap_err().to_string();
    assert_eq!(
        msg(Schedule::constant(-1.0)),
        "invalid base_lr: base_lr must be finite and >= 0, got -1"
    );
    assert_eq!(
        msg(Schedule::constant(f64::NAN)),
        "invalid base_lr: base_lr must be finite and >= 0, got NaN"
    );
    assert_eq!(
        msg(Schedule::step_decay(0.1, 0, 0.5)),
        "invalid step_size: step_size must be at least 1, got 0"
    );
    assert_eq!(
        msg(Schedule::step_decay(0.1, 5, 1.5)),
        "invalid gamma: gamma must be in (0, 1], got 1.5"
    );
    assert_eq!(
        msg(Schedule::step_decay(0.1, 5, 0.0)),
        "invalid gamma: gamma must be in (0, 1], got 0"
    );
    assert_eq!(
        msg(Schedule::cosine(0.1, 0, 0.0)),
        "invalid t_max: t_max must be at least 1, got 0"
    );
    assert_eq!(
        msg(Schedule::cosine(0.1, 10, 0.2)),
        "invalid min_lr: min_lr must be in [0, base_lr = 0.1], got 0.2"
    );
    assert_eq!(
        msg(Schedule::cosine(0.1, 10, -0.01)),
        "invalid min_lr: min_lr must be in [0, base_lr = 0.1], got -0.01"
    );
    assert_eq!(
        msg(Schedule::constant(0.1).unwrap().with_warmup(0, 0.5)),
        "invalid warmup_steps: warmup_steps must be at least 1, got 0"
    );
    assert_eq!(
        msg(Schedule::constant(0.1).unwrap().with_warmup(5, 1.5)),
        "invalid start_factor: start_factor must be in [0, 1], got 1.5"
    );
    assert_eq!(
        msg(Schedule::new(
            0.1,
            Some(Warmup {
                steps: 2,
                start_factor: f64::NAN
            }),
            Decay::Constant
        )),
        "invalid start_factor: start_factor must be in [0, 1], got NaN"
    );
    assert!(matches!(
        Schedule::step_decay(0.1, 1, f64::NAN),
        Err(phm_nn::PhmError::InvalidArgument { what: "gamma", .. })
    ));
}
