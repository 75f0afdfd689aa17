//! Interrupted training: a kill -9 in the middle of a checkpoint write, then Ctrl-C, then
//! `--resume` to the end gives the same model, bit for bit, as a run never interrupted.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use common::{Sandbox, hidden_files};
use fmnist::train::checkpoint::Checkpoint;

/// A recipe that uses every random stream and every piece of state: dropout, shifts,
/// flips, erasing, a weight average, Adam's moments and the best-epoch bookkeeping.
const RECIPE: &[&str] = &[
    "train",
    "--epochs",
    "6",
    "--limit",
    "4000",
    "--val-size",
    "500",
    "--shift",
    "2",
    "--flip",
    "--erase",
    "0.3",
    "--ema",
    "0.99",
    "--seed",
    "7",
    "--threads",
    "2",
];

/// Continues `run.safetensors`'s run on the recipe's threads.
const RESUME: &[&str] = &[
    "train",
    "--resume",
    "run.checkpoint.safetensors",
    "--threads",
    "2",
    "--offline",
];

fn args(out: &str) -> Vec<&str> {
    let mut a = RECIPE.to_vec();
    a.extend(["--out", out, "--offline"]);
    a
}

/// Every tensor of a model file, in order.
fn weights(sb: &Sandbox, file: &str) -> Vec<Vec<u32>> {
    let model = fmnist::Classifier::load(&sb.path(file)).unwrap();
    model
        .net
        .tensors()
        .iter()
        .map(|(_, t)| t.data().iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// Runs `args`, presses Ctrl-C once `ready` holds (within two minutes, or fails saying
/// `late`), and returns the run's standard error after checking it exited with 130.
fn interrupt_once(
    sb: &Sandbox,
    args: &[&str],
    late: &str,
    ready: impl Fn(&Sandbox) -> bool,
) -> String {
    let mut run = sb.spawn(args, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready(sb) {
        assert!(Instant::now() < deadline, "{late}");
        assert!(
            run.try_wait().unwrap().is_none(),
            "the run ended before Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    common::interrupt(&run);
    let status = run.wait().unwrap();
    let mut err = String::new();
    run.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    err
}

fn epochs_saved(sb: &Sandbox, file: &str) -> Option<usize> {
    Checkpoint::load(&sb.path(file)).ok().map(|c| c.epochs_done)
}

#[test]
fn a_killed_then_interrupted_run_resumes_to_the_same_model() {
    let sb = Sandbox::new();
    sb.ok(&args("straight.safetensors"));

    // kill -9 while the checkpoint after epoch 2 is half written.
    let mut run = sb.spawn(
        &args("run.safetensors"),
        &[("FMNIST_FAULT_STALL_CHECKPOINT", "2")],
    );
    let mut stderr = BufReader::new(run.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("fault injection: stalled") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the run ended without stalling"
        );
    }
    run.kill().unwrap(); // SIGKILL
    run.wait().unwrap();
    assert!(!sb.path("run.safetensors").exists());
    assert_eq!(epochs_saved(&sb, "run.checkpoint.safetensors"), Some(1));
    // What the killed run was writing stays in hidden temporary files, never under a
    // final name.
    let temps = hidden_files(sb.dir.path());
    assert!(!temps.is_empty());
    assert!(
        temps
            .iter()
            .all(|n| n.starts_with(".fmnist-") && n.ends_with(".tmp")),
        "{temps:?}"
    );

    // Resume, and press Ctrl-C once a later checkpoint is written.
    let err = interrupt_once(&sb, RESUME, "no checkpoint after epoch 3", |sb| {
        epochs_saved(sb, "run.checkpoint.safetensors") >= Some(3)
    });
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: interrupted in epoch ")
            && last
                .ends_with("continue it with `fmnist train --resume run.checkpoint.safetensors`"),
        "{err}"
    );
    assert!(!sb.path("run.safetensors").exists());

    // Resume to the end.
    let out = sb.ok(RESUME);
    assert!(out.contains("resuming after epoch"), "{out}");
    assert!(
        !sb.path("run.checkpoint.safetensors").exists(),
        "a finished run keeps no checkpoint"
    );
    assert_eq!(
        weights(&sb, "run.safetensors"),
        weights(&sb, "straight.safetensors")
    );
    let history = std::fs::read_to_string(sb.path("run.history.csv")).unwrap();
    assert_eq!(history.lines().count(), 1 + 6, "{history}");
    let straight = std::fs::read_to_string(sb.path("straight.history.csv")).unwrap();
    let losses = |csv: &str| -> Vec<String> {
        csv.lines()
            .map(|l| l.split(',').take(5).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(losses(&history), losses(&straight));
}

#[test]
fn resume_refuses_what_it_cannot_continue() {
    let sb = Sandbox::new();
    sb.quick_model(500, 100);
    sb.fails(
        &["train", "--resume", "m.safetensors", "--offline"],
        "m.safetensors is not a usable fmnist checkpoint: this is a model file, not a checkpoint",
    );
    sb.fails(
        &["train", "--resume", "none.safetensors", "--offline"],
        "cannot read none.safetensors",
    );
    let out = sb.run(&["train", "--resume", "m.safetensors", "--epochs", "3"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'--resume <CHECKPOINT>' cannot be used with '--epochs <EPOCHS>'"),
        "{err}"
    );
}

/// Every tensor of every network of a model file, in order.
fn ensemble_weights(sb: &Sandbox, file: &str) -> Vec<Vec<u32>> {
    let model = fmnist::Classifier::load(&sb.path(file)).unwrap();
    model
        .each_network()
        .flat_map(|m| m.net.tensors())
        .map(|(_, t)| t.data().iter().map(|v| v.to_bits()).collect())
        .collect()
}

#[test]
fn an_interrupted_ensemble_resumes_to_the_same_networks() {
    let sb = Sandbox::new();
    let recipe = |out: &'static str, extra: &[&'static str]| -> Vec<&'static str> {
        let mut a = vec![
            "train",
            "--epochs",
            "3",
            "--limit",
            "3000",
            "--val-size",
            "500",
            "--shift",
            "1",
            "--seed",
            "7",
            "--threads",
            "2",
            "--offline",
            "--out",
            out,
        ];
        a.extend(extra);
        a
    };
    let out = sb.ok(&recipe("straight.safetensors", &["--members", "2"]));
    assert!(
        out.contains("training simple (2 × 225,034 parameters)"),
        "{out}"
    );
    assert!(out.contains("network 2 of 2 (seed 8)"), "{out}");
    assert!(out.contains("test accuracy of the ensemble"), "{out}");
    // Network k is the recipe trained alone with the seed moved on by k.
    sb.ok(&recipe("seed7.safetensors", &[]));
    let mut eight = recipe("seed8.safetensors", &[]);
    let seed = eight.iter().position(|a| *a == "7").unwrap();
    eight[seed] = "8";
    sb.ok(&eight);
    let networks = ensemble_weights(&sb, "straight.safetensors");
    let alone = [
        weights(&sb, "seed7.safetensors"),
        weights(&sb, "seed8.safetensors"),
    ]
    .concat();
    assert!(networks == alone, "the networks are the one-seed runs");
    let history = std::fs::read_to_string(sb.path("straight.history.csv")).unwrap();
    assert!(history.starts_with("member,epoch,"), "{history}");
    assert_eq!(history.lines().count(), 1 + 2 * 3, "{history}");

    // Ctrl-C once the second network has saved an epoch.
    let args = recipe("run.safetensors", &["--members", "2"]);
    let err = interrupt_once(&sb, &args, "the second network saved nothing", |sb| {
        Checkpoint::load(&sb.path("run.checkpoint.safetensors"))
            .ok()
            .is_some_and(|c| c.earlier.len() == 1 && c.epochs_done >= 1)
    });
    assert!(err.contains("of network 2 of 2"), "{err}");
    assert!(!sb.path("run.safetensors").exists());
    let out = sb.ok(RESUME);
    assert!(out.contains("of network 2 of 2 from"), "{out}");
    assert!(
        !out.contains("network 1 of 2 (seed"),
        "network 1 is not retrained: {out}"
    );
    assert!(ensemble_weights(&sb, "run.safetensors") == networks);
    assert!(!sb.path("run.checkpoint.safetensors").exists());
}
