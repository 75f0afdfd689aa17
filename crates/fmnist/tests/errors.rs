//! Every kind of bad input ends in one clear error line and a non-zero exit, with no
//! partial output and no good file replaced.

mod common;

use std::io::Write;

use common::{Sandbox, hidden_files};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gunzip(path: &std::path::Path) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn nonsense_arguments() {
    let sb = Sandbox::new();
    sb.fails(&["train", "--epochs", "0"], "--epochs");
    sb.fails(&["train", "--batch-size", "0"], "--batch-size");
    sb.fails(&["train", "--lr", "-0.1"], "--lr");
    sb.fails(&["train", "--lr", "fast"], "--lr");
    sb.fails(&["train", "--lr", "NaN"], "--lr");
    sb.fails(&["train", "--model", "resnet9000"], "resnet9000");
    sb.fails(
        &["train", "--label-smoothing", "1.5", "--offline"],
        "--label-smoothing",
    );
    sb.fails(&["train", "--threads", "0"], "--threads");
    for n in ["0", "9", "18446744073709551616", "three"] {
        sb.fails(&["train", "--members", n], "--members");
    }
    sb.fails(&["train", "--members", "-1"], "'-1'");
    sb.fails(
        &["predict", "m.safetensors", "x.png", "--top", "0"],
        "--top",
    );
    sb.fails(&["predict", "m.safetensors"], "IMAGE");
    sb.fails(&["frobnicate"], "frobnicate");
    assert!(sb.run(&["train", "--epochs", "0"]).stdout.is_empty());
}

#[test]
fn missing_truncated_and_corrupt_data_files() {
    let sb = Sandbox::new();
    let empty = sb.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = empty.to_str().unwrap();
    sb.fails(
        &["data", "--data-dir", e, "--offline"],
        "Fashion-MNIST not found",
    );
    // Without --offline the download is tried (and fails: no mirror is reachable).
    sb.fails(&["data", "--data-dir", e], "cannot download");
    assert!(
        std::fs::read_dir(&empty).unwrap().next().is_none(),
        "no partial download left"
    );

    let partial = sb.data_copy("partial");
    std::fs::remove_file(partial.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    sb.fails(
        &["data", "--data-dir", partial.to_str().unwrap()],
        "not t10k-labels-idx1-ubyte",
    );

    // A truncated gzip stream.
    let trunc = sb.data_copy("trunc");
    let f = trunc.join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    sb.fails(
        &["data", "--data-dir", trunc.to_str().unwrap()],
        "train-images-idx3-ubyte.gz",
    );

    // A raw (uncompressed) IDX file cut short: the header's dimensions no longer fit.
    let short = sb.data_copy("short");
    let raw = gunzip(&short.join("t10k-labels-idx1-ubyte.gz"));
    std::fs::remove_file(short.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(short.join("t10k-labels-idx1-ubyte"), &raw[..5000]).unwrap();
    let msg = sb.fails(
        &["data", "--data-dir", short.to_str().unwrap()],
        "t10k-labels-idx1-ubyte",
    );
    assert!(msg.contains("need 10000 data bytes, found 4992"), "{msg}");

    // Well-formed but altered: one label changed, recompressed. Only the checksum knows.
    let altered = sb.data_copy("altered");
    let mut raw = gunzip(&altered.join("train-labels-idx1-ubyte.gz"));
    raw[100] = (raw[100] + 1) % 10;
    std::fs::write(altered.join("train-labels-idx1-ubyte.gz"), gz(&raw)).unwrap();
    let msg = sb.fails(
        &["train", "--data-dir", altered.to_str().unwrap()],
        "checksum mismatch",
    );
    assert!(
        msg.contains("train-labels-idx1-ubyte.gz is corrupt")
            && msg.contains("9018921c3c673c538a1fc5bad174d6f9"),
        "{msg}"
    );

    // Not IDX at all.
    let foreign = sb.data_copy("foreign");
    std::fs::write(
        foreign.join("t10k-images-idx3-ubyte.gz"),
        gz(b"<html>404 Not Found</html>"),
    )
    .unwrap();
    sb.fails(
        &["data", "--data-dir", foreign.to_str().unwrap()],
        "not a valid IDX file",
    );
    // And the environment variable names a directory the same way.
    let out = sb.run(&["data"]);
    assert!(out.status.success());
}

#[test]
fn unreadable_and_non_image_files_for_predict() {
    let sb = Sandbox::new();
    sb.quick_model(500, 100);
    std::fs::write(sb.path("notes.png"), "these are my notes, not a picture").unwrap();
    sb.fails(
        &["predict", "m.safetensors", "notes.png"],
        "notes.png is not an image",
    );
    sb.fails(
        &["predict", "m.safetensors", "nowhere.jpg"],
        "cannot read nowhere.jpg",
    );
    image::GrayImage::from_pixel(40, 30, image::Luma([200]))
        .save(sb.path("ok.png"))
        .unwrap();
    let png = std::fs::read(sb.path("ok.png")).unwrap();
    std::fs::write(sb.path("cut.png"), &png[..png.len() / 2]).unwrap();
    sb.fails(
        &["predict", "m.safetensors", "ok.png", "cut.png"],
        "cannot decode cut.png",
    );
    std::fs::write(sb.path("empty.gif"), b"").unwrap();
    sb.fails(&["predict", "m.safetensors", "empty.gif"], "empty.gif");
    // A PNG header that declares a 100000×100000 image: refused before allocating.
    let mut huge = png.clone();
    huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    std::fs::write(sb.path("huge.png"), &huge).unwrap();
    sb.fails(&["predict", "m.safetensors", "huge.png"], "huge.png");
    assert!(
        sb.ok(&["predict", "m.safetensors", "ok.png"])
            .starts_with("ok.png: ")
    );
}

#[test]
fn truncated_foreign_and_mismatched_model_files() {
    let sb = Sandbox::new();
    sb.quick_model(500, 100);
    image::GrayImage::from_pixel(28, 28, image::Luma([0]))
        .save(sb.path("x.png"))
        .unwrap();
    let good = std::fs::read(sb.path("m.safetensors")).unwrap();

    sb.fails(
        &["predict", "missing.safetensors", "x.png"],
        "cannot read missing.safetensors",
    );
    std::fs::write(sb.path("cut.safetensors"), &good[..good.len() - 1000]).unwrap();
    sb.fails(
        &["predict", "cut.safetensors", "x.png"],
        "cut.safetensors is not a usable fmnist model",
    );
    std::fs::write(
        sb.path("junk.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\xffjunk",
    )
    .unwrap();
    sb.fails(
        &["eval", "junk.safetensors", "--offline"],
        "not a safetensors file",
    );

    // A valid safetensors file from elsewhere (no fmnist metadata).
    let data = vec![0u8; 16];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &data).unwrap();
    let foreign = safetensors::serialize([("w", view)], None).unwrap();
    std::fs::write(sb.path("foreign.safetensors"), foreign).unwrap();
    sb.fails(
        &["eval", "foreign.safetensors", "--offline"],
        "not an fmnist model",
    );

    // The right metadata but a tensor of the wrong shape.
    let model = fmnist::Classifier::load(&sb.path("m.safetensors")).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&good).unwrap();
    let meta = header.metadata().clone();
    let file = safetensors::SafeTensors::deserialize(&good).unwrap();
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.data().to_vec(), v.shape().to_vec()))
        .collect();
    let w = tensors
        .iter_mut()
        .find(|(n, _, _)| n == "0.weight")
        .unwrap();
    w.2 = vec![32, 9];
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, b, s)| {
            (
                n.as_str(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(
        sb.path("shape.safetensors"),
        safetensors::serialize(views, meta).unwrap(),
    )
    .unwrap();
    sb.fails(
        &["predict", "shape.safetensors", "x.png"],
        "tensor 0.weight has shape [32, 9]",
    );
    assert_eq!(model.net.num_params(), 225_034);
}

#[test]
fn unwritable_outputs_fail_before_training_and_keep_good_files() {
    let sb = Sandbox::new();
    sb.fails(
        &["train", "--out", "no/such/dir/m.safetensors", "--offline"],
        "cannot write no/such/dir/m.safetensors",
    );
    std::fs::create_dir(sb.path("adir")).unwrap();
    sb.fails(&["train", "--out", "adir", "--offline"], "adir");

    sb.quick_model(500, 100);
    let good = std::fs::read(sb.path("m.safetensors")).unwrap();
    let history = std::fs::read(sb.path("m.history.csv")).unwrap();
    // A training that diverges must leave the existing model and history untouched.
    let msg = sb.fails(
        &[
            "train",
            "--epochs",
            "1",
            "--limit",
            "2000",
            "--val-size",
            "100",
            "--lr",
            "1e30",
            "--out",
            "m.safetensors",
            "--offline",
        ],
        "training diverged",
    );
    assert!(msg.contains("learning rate"), "{msg}");
    // Diverging after a few epochs keeps the last good checkpoint and says where it is.
    let msg = sb.fails(
        &[
            "train",
            "--epochs",
            "6",
            "--limit",
            "512",
            "--val-size",
            "100",
            "--optimizer",
            "sgd",
            "--schedule",
            "constant",
            "--lr",
            "1",
            "--out",
            "d.safetensors",
            "--offline",
        ],
        "training diverged",
    );
    let epoch: usize = msg
        .split("at epoch ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("{msg}"));
    assert!(epoch >= 2, "{msg}");
    assert!(
        msg.ends_with(&format!(
            "the last good state, after epoch {}, is kept in d.checkpoint.safetensors",
            epoch - 1
        )),
        "{msg}"
    );
    let kept =
        fmnist::train::checkpoint::Checkpoint::load(&sb.path("d.checkpoint.safetensors")).unwrap();
    assert_eq!(kept.epochs_done, epoch - 1);
    assert!(!sb.path("d.safetensors").exists());
    // So must a bad architecture file.
    std::fs::write(
        sb.path("bad.json"),
        r#"{"input":[28,28,1],"layers":[{"type":"flatten"},{"type":"linear","units":7}]}"#,
    )
    .unwrap();
    sb.fails(
        &[
            "train",
            "--arch",
            "bad.json",
            "--out",
            "m.safetensors",
            "--offline",
        ],
        "needs [10]",
    );
    std::fs::write(sb.path("broken.json"), "{ not json").unwrap();
    sb.fails(
        &["train", "--arch", "broken.json", "--offline"],
        "broken.json",
    );
    assert_eq!(std::fs::read(sb.path("m.safetensors")).unwrap(), good);
    assert_eq!(std::fs::read(sb.path("m.history.csv")).unwrap(), history);
    assert!(
        hidden_files(sb.dir.path()).is_empty(),
        "{:?}",
        hidden_files(sb.dir.path())
    );
}

#[test]
fn a_user_architecture_from_json_trains() {
    let sb = Sandbox::new();
    let arch = r#"{
      "name": "tiny",
      "input": [28, 28, 1],
      "layers": [
        {"type": "conv2d", "filters": 8, "kernel": 3, "stride": 2, "padding": 1},
        {"type": "batch_norm"},
        {"type": "gelu"},
        {"type": "residual", "body": [{"type": "conv2d", "filters": 8, "kernel": 3, "padding": 1}, {"type": "relu"}]},
        {"type": "global_avg_pool"},
        {"type": "linear", "units": 10}
      ]
    }"#;
    std::fs::write(sb.path("tiny.json"), arch).unwrap();
    let out = sb.ok(&[
        "train",
        "--arch",
        "tiny.json",
        "--epochs",
        "2",
        "--limit",
        "5000",
        "--val-size",
        "500",
        "--lr",
        "0.01",
        "--schedule",
        "constant",
        "--out",
        "t.safetensors",
        "--offline",
    ]);
    assert!(out.contains("training tiny ("), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&sb.ok(&["eval", "t.safetensors", "--json", "--offline"])).unwrap();
    assert!(json["accuracy"].as_f64().unwrap() > 0.3, "{json}");
}
