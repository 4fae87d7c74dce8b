//! Crash safety of saves with a real crash: a child process saves a checkpoint over and over
//! and is killed (SIGKILL on unix) at some point of a save; the file at the path must always
//! be one complete checkpoint, never a mix of two or a torn one.
//!
//! The child is this test binary itself, started with an environment variable that turns
//! `child_saves_in_a_loop` from a no-op into the save loop.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use phm_nn::io;
use phm_nn::module::params;
use phm_nn::prelude::*;

const CHILD_ENV: &str = "PHM_NN_CRASH_TEST_PATH";

/// About 2 MB of f32 parameters, so a save takes long enough to be killed in the middle.
fn model() -> Sequential<f32> {
    let mut rng = StdRng::seed_from_u64(0);
    Sequential::new()
        .add(PhmLinearConfig::new(1024, 1024, 2).init(&mut rng).unwrap())
        .add(LinearConfig::new(1024, 16).init(&mut rng).unwrap())
}

/// Sets every parameter of `m` to the constant `g`.
fn fill(m: &Sequential<f32>, g: f32) {
    for (_, p) in params(m) {
        p.write().value_mut().fill(g);
    }
}

/// The save loop, run only in the child process (a no-op in a normal test run).
#[test]
fn child_saves_in_a_loop() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let m = model();
    for generation in 1.. {
        fill(&m, generation as f32);
        io::save_model(&m, &path).unwrap();
    }
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("phm-nn-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits (up to a minute) until the child has written the file at least once.
fn wait_for(path: &Path) {
    for _ in 0..6000 {
        if path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the child never wrote {}", path.display());
}

#[test]
fn a_process_killed_while_saving_leaves_a_complete_checkpoint() {
    let dir = scratch();
    let path = dir.join("model.safetensors");
    let mut fresh = model();
    let mut generations = Vec::new();
    for round in 0..6u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_saves_in_a_loop", "--exact", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&path);
        // Let it run a varying while, so the kill lands at various points of a save.
        std::thread::sleep(Duration::from_millis(20 + 37 * round));
        child.kill().unwrap();
        child.wait().unwrap();

        // Whatever the moment of the kill: one complete checkpoint, of one generation.
        io::load_model(&mut fresh, &path).unwrap();
        let values: Vec<f32> = params(&fresh)
            .into_iter()
            .flat_map(|(_, p)| p.value().into_iter().collect::<Vec<_>>())
            .collect();
        let g = values[0];
        assert!(
            g >= 1.0 && values.iter().all(|&v| v == g),
            "a torn checkpoint"
        );
        generations.push(g);
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    // Visible with --nocapture: more than one file left means kills landed inside a save.
    eprintln!(
        "generations at the kills: {generations:?}; files in the folder: {}",
        left.len()
    );
    // Only the checkpoint and possibly the killed saves' temporary files are in the folder.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            name == "model.safetensors" || name.starts_with(".model.safetensors.tmp."),
            "{name}"
        );
    }
    // Each child starts again at generation 1, and saves at least once before the kill.
    assert!(generations.iter().all(|&g| g >= 1.0), "{generations:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
