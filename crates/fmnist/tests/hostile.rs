//! The hostile-input review's findings, each as it was reproduced: tiny files that asked
//! for gigabytes, devices and FIFOs where files belong, checkpoints that chose where to
//! write, truncated images, damaged normalisation. Each ends in one error line, at once,
//! with nothing written.

mod common;

use std::time::{Duration, Instant};

use common::{Sandbox, edit_header, edit_metadata_json, hidden_files, mkfifo};

/// The review's quick run: `--offline --threads 1 --limit 512 --val-size 256 --epochs 1`.
const T: [&str; 9] = [
    "--offline",
    "--threads",
    "1",
    "--limit",
    "512",
    "--val-size",
    "256",
    "--epochs",
    "1",
];

fn train(extra: &[&str]) -> Vec<String> {
    let mut args = vec!["train".to_string()];
    args.extend(T.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[cfg(unix)]
#[test]
fn outputs_never_replace_a_device_or_fifo() {
    use std::os::unix::fs::FileTypeExt;
    let sb = Sandbox::new();
    let fifo = sb.path("fifo");
    mkfifo(&fifo);
    sb.fails_within(&strs(&train(&["--out", "fifo"])), "it is a FIFO", 60);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // A link to a device (how `--out /dev/null` looks from a scratch folder).
    std::os::unix::fs::symlink("/dev/null", sb.path("null")).unwrap();
    sb.fails_within(&strs(&train(&["--out", "null"])), "links to a device", 60);
    assert!(
        std::fs::symlink_metadata(sb.path("null"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // Pictures and reports refuse them too.
    sb.quick_model(300, 100);
    mkfifo(&sb.path("x.input.png"));
    sb.data_copy("data");
    let img = sb.path("x.png");
    image::GrayImage::from_fn(40, 40, |x, _| image::Luma([(x * 6) as u8]))
        .save(&img)
        .unwrap();
    sb.fails_within(
        &["predict", "m.safetensors", "x.png", "--show-input", "."],
        "it is a FIFO",
        60,
    );
    assert!(hidden_files(sb.dir.path()).is_empty());
}

/// Trains 3 epochs into `m.safetensors` and stops it in the middle of the second
/// checkpoint, leaving the first: `m.checkpoint.safetensors` after epoch 1.
fn checkpoint_after_one_epoch(sb: &Sandbox) {
    let mut args = train(&["--out", "m.safetensors"]);
    args[9] = "3".into(); // --epochs 3
    let mut child = sb.spawn(&strs(&args), &[("FMNIST_FAULT_STALL_CHECKPOINT", "2")]);
    let started = Instant::now();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("fault injection: stalled") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(
            n > 0 && started.elapsed() < Duration::from_secs(120),
            "{line}"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_checkpoint_cannot_choose_where_outputs_go_and_its_recipe_is_checked() {
    let sb = Sandbox::new();
    checkpoint_after_one_epoch(&sb);
    // The killed write's temporary file stays (nothing can remove it at kill -9); no
    // command below may add one.
    let killed = hidden_files(sb.dir.path());
    let ck = sb.path("m.checkpoint.safetensors");
    // An edited checkpoint naming an unrelated file as its output (the old format kept
    // one): that file is untouched, the model goes beside the checkpoint.
    let victim = sb.path("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    edit_metadata_json(&ck, "state", |s| {
        s["out"] = victim.to_str().unwrap().into();
    });
    std::fs::copy(&ck, sb.path("copy.checkpoint.safetensors")).unwrap();
    sb.ok(&["train", "--resume", "m.checkpoint.safetensors", "--offline"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(!sb.path("victim.history.csv").exists());
    fmnist::Classifier::load(&sb.path("m.safetensors")).unwrap();
    assert!(!ck.exists(), "a finished run removes its checkpoint");
    // --out moves the outputs; a file not named like a checkpoint needs it.
    std::fs::copy(
        sb.path("copy.checkpoint.safetensors"),
        sb.path("renamed.bin"),
    )
    .unwrap();
    sb.fails(
        &["train", "--resume", "renamed.bin", "--offline"],
        "give --out",
    );
    // Its recipe is checked as the flags are: a trillion epochs, a batch of a billion.
    for (field, value, needle) in [
        (
            "epochs",
            1_000_000_000_000u64,
            "--epochs must be between 1 and 100000",
        ),
        (
            "batch_size",
            1_000_000_000,
            "--batch-size must be between 1 and 60000",
        ),
    ] {
        let path = sb.path(&format!("{field}.checkpoint.safetensors"));
        std::fs::copy(sb.path("copy.checkpoint.safetensors"), &path).unwrap();
        edit_metadata_json(&path, "state", |s| s["config"][field] = value.into());
        let line = sb.fails_within(
            &["train", "--resume", path.to_str().unwrap(), "--offline"],
            needle,
            60,
        );
        assert!(line.contains("not a usable fmnist checkpoint"), "{line}");
    }
    assert_eq!(hidden_files(sb.dir.path()), killed);
}

/// An architecture file holding `json`.
fn arch(sb: &Sandbox, name: &str, json: &str) -> String {
    std::fs::write(sb.path(name), json).unwrap();
    name.to_string()
}

#[test]
fn tiny_files_that_would_need_gigabytes_are_refused_from_the_spec() {
    let sb = Sandbox::new();
    let padded = arch(
        &sb,
        "padded.json",
        r#"{"input":[28,28,1],"layers":[{"type":"conv2d","filters":1,"kernel":1,"padding":2000},{"type":"global_avg_pool"},{"type":"linear","units":10}]}"#,
    );
    assert!(std::fs::metadata(sb.path(&padded)).unwrap().len() < 200);
    sb.fails_within(&strs(&train(&["--arch", &padded])), "values per image", 60);
    sb.fails_within(
        &["bench", "--arch", &padded, "--offline"],
        "values per image",
        60,
    );
    let relus = vec![r#"{"type":"relu"}"#; 60_000].join(",");
    let many = arch(
        &sb,
        "many.json",
        &format!(
            r#"{{"input":[28,28,1],"layers":[{relus},{{"type":"flatten"}},{{"type":"linear","units":10}}]}}"#
        ),
    );
    sb.fails_within(&strs(&train(&["--arch", &many])), "layers is too many", 60);
    let wide = arch(
        &sb,
        "wide.json",
        r#"{"input":[28,28,1],"layers":[{"type":"flatten"},{"type":"linear","units":342000},{"type":"linear","units":10}]}"#,
    );
    sb.fails_within(&strs(&train(&["--arch", &wide])), "too many", 60);
    // Model files: the padded network and a million relu layers in the metadata, with
    // no tensors for them.
    sb.quick_model(300, 100);
    for (name, layers) in [
        ("padded", r#"[{"type":"conv2d","filters":1,"kernel":1,"padding":2000},{"type":"global_avg_pool"},{"type":"linear","units":10}]"#.to_string()),
        ("relus", format!(r#"[{}]"#, vec![r#"{"type":"relu"}"#; 1_000_000].join(","))),
        ("huge", r#"[{"type":"flatten"},{"type":"linear","units":342000},{"type":"linear","units":10}]"#.to_string()),
    ] {
        let file = format!("{name}.safetensors");
        std::fs::copy(sb.path("m.safetensors"), sb.path(&file)).unwrap();
        edit_metadata_json(&sb.path(&file), "architecture", |a| {
            a["layers"] = serde_json::from_str(&layers).unwrap();
        });
        let started = Instant::now();
        sb.fails_within(&["eval", &file, "--offline"], "is not a usable fmnist model", 60);
        assert!(started.elapsed() < Duration::from_secs(20), "{name}");
    }
    assert!(hidden_files(sb.dir.path()).is_empty());
}

#[test]
fn a_batch_beyond_the_memory_budget_is_refused_naming_one_that_fits() {
    let sb = Sandbox::new();
    let out = sb.run_within(&strs(&train(&["--batch-size", "60000"])), 60);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad setting is a bad argument"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("more than the 4 GiB training budget; use --batch-size"),
        "{err}"
    );
    sb.fails_within(
        &["bench", "--batch-size", "50000", "--offline"],
        "training budget",
        60,
    );
    // Within the budget it trains.
    sb.ok(&strs(&train(&[
        "--batch-size",
        "4096",
        "--out",
        "big.safetensors",
    ])));
}

#[cfg(unix)]
#[test]
fn devices_fifos_and_huge_raw_files_are_refused_at_once() {
    let sb = Sandbox::new();
    sb.quick_model(300, 100);
    std::os::unix::fs::symlink("/dev/zero", sb.path("zero.safetensors")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", sb.path("zero.png")).unwrap();
    mkfifo(&sb.path("fifo.safetensors"));
    mkfifo(&sb.path("fifo.png"));
    mkfifo(&sb.path("fifo.json"));
    mkfifo(&sb.path("fifo.checkpoint.safetensors"));
    for (args, needle) in [
        (
            vec!["predict", "zero.safetensors", "x.png"],
            "it is a device",
        ),
        (
            vec!["eval", "zero.safetensors", "--offline"],
            "it is a device",
        ),
        (
            vec!["serve", "zero.safetensors", "--addr", "127.0.0.1:0"],
            "it is a device",
        ),
        (
            vec!["predict", "m.safetensors", "zero.png"],
            "it is a device",
        ),
        (vec!["predict", "fifo.safetensors", "x.png"], "FIFO"),
        (vec!["predict", "m.safetensors", "fifo.png"], "FIFO"),
        (vec!["train", "--arch", "fifo.json", "--offline"], "FIFO"),
        (vec!["bench", "--arch", "fifo.json", "--offline"], "FIFO"),
        (
            vec![
                "train",
                "--resume",
                "fifo.checkpoint.safetensors",
                "--offline",
            ],
            "FIFO",
        ),
        (
            vec!["train", "--resume", "zero.safetensors", "--offline"],
            "it is a device",
        ),
    ] {
        sb.fails_within(&args, needle, 20);
    }
    // A 1 GiB raw training-images file (sparse) is refused from its header.
    let data = sb.data_copy("data");
    std::fs::remove_file(data.join("train-images-idx3-ubyte.gz")).unwrap();
    let raw = std::fs::File::create(data.join("train-images-idx3-ubyte")).unwrap();
    std::io::Write::write_all(&mut &raw, &fmnist::data::idx::encode(&[60000, 28, 28], &[]))
        .unwrap();
    raw.set_len(1 << 30).unwrap();
    let started = Instant::now();
    sb.fails_within(
        &["data", "--data-dir", data.to_str().unwrap(), "--offline"],
        "need 47040000 data bytes",
        20,
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_truncated_jpeg_is_refused() {
    let sb = Sandbox::new();
    sb.quick_model(300, 100);
    let img = image::RgbImage::from_fn(120, 90, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 2) as u8, 90])
    });
    img.save(sb.path("whole.jpg")).unwrap();
    let bytes = std::fs::read(sb.path("whole.jpg")).unwrap();
    std::fs::write(sb.path("half.jpg"), &bytes[..bytes.len() / 2]).unwrap();
    sb.ok(&["predict", "m.safetensors", "whole.jpg"]);
    sb.fails(&["predict", "m.safetensors", "half.jpg"], "truncated");
}

#[test]
fn a_model_with_damaged_normalisation_is_refused() {
    let sb = Sandbox::new();
    sb.quick_model(300, 100);
    image::GrayImage::from_fn(40, 40, |x, _| image::Luma([(x * 6) as u8]))
        .save(sb.path("x.png"))
        .unwrap();
    edit_metadata_json(&sb.path("m.safetensors"), "normalization", |n| {
        n["std"] = 1e-45.into();
    });
    sb.fails(
        &["predict", "m.safetensors", "x.png"],
        "invalid input normalisation",
    );
    sb.fails(
        &["eval", "m.safetensors", "--offline"],
        "invalid input normalisation",
    );
}

#[test]
fn label_smoothing_of_one_is_a_bad_argument() {
    let sb = Sandbox::new();
    let out = sb.run(&["train", "--label-smoothing", "1", "--offline"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--label-smoothing"));
}

#[test]
fn images_with_one_name_keep_both_inputs() {
    let sb = Sandbox::new();
    sb.quick_model(300, 100);
    // A square and a wide bar on black: different inputs.
    for (dir, half_w, half_h) in [("a", 10u32, 10u32), ("b", 15, 5)] {
        std::fs::create_dir(sb.path(dir)).unwrap();
        image::GrayImage::from_fn(40, 40, |x, y| {
            let inside = x.abs_diff(20) < half_w && y.abs_diff(20) < half_h;
            image::Luma([if inside { 200 } else { 0 }])
        })
        .save(sb.path(&format!("{dir}/x.png")))
        .unwrap();
    }
    let out = sb.run(&[
        "predict",
        "m.safetensors",
        "a/x.png",
        "b/x.png",
        "--show-input",
        "seen",
    ]);
    assert!(out.status.success());
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("b/x.png") && note.contains("x-2.input.png"),
        "{note}"
    );
    let first = std::fs::read(sb.path("seen/x.input.png")).unwrap();
    let second = std::fs::read(sb.path("seen/x-2.input.png")).unwrap();
    assert_ne!(first, second);
}

#[test]
fn a_checkpoint_header_naming_huge_tensors_is_refused() {
    let sb = Sandbox::new();
    checkpoint_after_one_epoch(&sb);
    let ck = sb.path("m.checkpoint.safetensors");
    edit_header(&ck, |h| {
        h["model/0.weight"]["shape"] = serde_json::json!([1 << 20, 1 << 20]);
    });
    sb.fails_within(
        &["train", "--resume", "m.checkpoint.safetensors", "--offline"],
        "not a usable fmnist checkpoint",
        30,
    );
}
