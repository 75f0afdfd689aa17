//! The whole workflow on the real data: data, train, eval, predict.

mod common;

use common::{SYSTEM_DATA, Sandbox};
use fmnist::data::{DataOptions, PIXELS, SIDE};

fn test_set() -> fmnist::FashionMnist {
    let opts = DataOptions {
        data_dir: Some(SYSTEM_DATA.into()),
        offline: true,
        verbose: false,
    };
    fmnist::data::load(&opts).expect("real data")
}

/// Saves test image `i` as a PNG, optionally as a photo would show it (dark on light,
/// larger, RGB).
fn save_png(data: &fmnist::FashionMnist, i: usize, path: &std::path::Path, photo_like: bool) {
    let px = data.test.image(i);
    if photo_like {
        let img = image::RgbImage::from_fn(84, 84, |x, y| {
            let v = 255 - px[(y as usize / 3) * SIDE + x as usize / 3];
            image::Rgb([v, v, v])
        });
        img.save(path).unwrap();
    } else {
        image::GrayImage::from_raw(SIDE as u32, SIDE as u32, px.to_vec())
            .unwrap()
            .save(path)
            .unwrap();
    }
}

/// The largest difference between two sets of probabilities.
fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn data_reports_where_it_found_the_data_and_the_counts() {
    let sb = Sandbox::new();
    let out = sb.ok(&["data", "--offline"]);
    assert!(
        out.contains(SYSTEM_DATA) && out.contains("Debian package"),
        "{out}"
    );
    assert!(
        out.contains("train: 60,000 images, test: 10,000 images"),
        "{out}"
    );
    assert_eq!(out.matches("6,000  1,000").count(), 10, "{out}");
}

#[test]
fn train_then_eval_then_predict() {
    let sb = Sandbox::new();
    let out = sb.ok(&[
        "train",
        "--epochs",
        "3",
        "--limit",
        "12000",
        "--val-size",
        "2000",
        "--out",
        "m.safetensors",
        "--offline",
        "--threads",
        "2",
    ]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("epoch ")).count(),
        3,
        "{out}"
    );
    let reported: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("test accuracy "))
        .and_then(|l| l.split(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("a test accuracy line");
    assert!(reported > 80.0, "{out}");

    let history = std::fs::read_to_string(sb.path("m.history.csv")).unwrap();
    assert_eq!(history.lines().count(), 4, "{history}");
    assert!(history.starts_with("epoch,train_loss,train_accuracy,val_loss,val_accuracy"));

    // eval reproduces the test accuracy training measured, exactly.
    let model = fmnist::Classifier::load(&sb.path("m.safetensors")).unwrap();
    assert_eq!(model.summary.epochs, 3);
    assert_eq!(model.summary.train_images, 12000);
    let json: serde_json::Value =
        serde_json::from_str(&sb.ok(&["eval", "m.safetensors", "--json", "--offline"])).unwrap();
    let acc = json["accuracy"].as_f64().unwrap();
    assert_eq!(acc, model.summary.test_accuracy);
    assert!((100.0 * acc - reported).abs() < 0.006);
    let confusion = json["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), 10);
    let total: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 10_000);
    let diagonal: u64 = (0..10).map(|i| confusion[i][i].as_u64().unwrap()).sum();
    assert_eq!(diagonal as f64 / 10_000.0, acc);
    assert_eq!(json["per_class"].as_array().unwrap().len(), 10);
    assert_eq!(json["per_class"][7]["class"], "Sneaker");

    let table = sb.ok(&["eval", "m.safetensors", "--offline"]);
    assert!(
        table.contains(&format!("test accuracy {:.2} %", 100.0 * acc)),
        "{table}"
    );
    assert!(
        table.contains("Ankle boot") && table.contains("confusion matrix"),
        "{table}"
    );

    // predict: test images as 28×28 PNGs, and as larger dark-on-light RGB "photos".
    let data = test_set();
    let mut files = Vec::new();
    for i in 0..20 {
        let (plain, photo) = (format!("t{i}.png"), format!("p{i}.png"));
        save_png(&data, i, &sb.path(&plain), false);
        save_png(&data, i, &sb.path(&photo), true);
        files.push((plain, photo, data.test.labels[i] as u64));
    }
    let mut args = vec!["predict", "m.safetensors", "--json", "--top", "3"];
    args.extend(files.iter().map(|(p, _, _)| p.as_str()));
    args.extend(files.iter().map(|(_, q, _)| q.as_str()));
    let lines: Vec<serde_json::Value> = sb
        .ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 40);
    let mut right = 0;
    for (i, (plain, _, label)) in files.iter().enumerate() {
        let (p, q) = (&lines[i], &lines[i + 20]);
        assert_eq!(p["file"], plain.as_str());
        assert_eq!(p["top"].as_array().unwrap().len(), 3);
        assert_eq!(p["top"][0]["label"], p["label"]);
        let prob = p["probability"].as_f64().unwrap();
        assert!(prob > 0.0 && prob <= 1.0);
        right += usize::from(p["label"].as_u64() == Some(*label));
        // The photo-like version is inverted and scaled back to the same input.
        assert_eq!(p["label"], q["label"], "{plain}");
    }
    assert!(right >= 15, "{right}/20 right");

    // The same images as the library sees them, through the preprocessing path.
    let img = fmnist::predict::load_image(&sb.path("p0.png")).unwrap();
    let px = fmnist::predict::preprocess(&img);
    assert_eq!(px.len(), PIXELS);
    let diff: f64 = px
        .iter()
        .zip(data.test.image(0))
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .sum();
    assert!(
        diff / (PIXELS as f64) < 8.0,
        "mean absolute difference {}",
        diff / PIXELS as f64
    );

    let text = sb.ok(&["predict", "m.safetensors", "t0.png"]);
    assert!(
        text.starts_with("t0.png: ") && text.lines().count() == 4,
        "{text}"
    );

    // A pair of dark shoes seen from above, side by side and touching, on a tiled floor:
    // one of them is cut out and the answer is footwear, whatever the model makes of it.
    let pair = image::RgbImage::from_fn(192, 144, |x, y| {
        let shoe =
            |cx: f32| ((x as f32 - cx) / 20.0).powi(2) + ((y as f32 - 72.0) / 54.0).powi(2) <= 1.0;
        if shoe(76.0) || shoe(114.0) {
            return image::Rgb([30, 30, 35]);
        }
        let shade = 0.75 + 0.25 * x as f32 / 192.0;
        let (x, y) = (x + 14, y + 14);
        let base: [f32; 3] = if (x / 48 + y / 48) % 2 == 0 {
            [190.0, 178.0, 160.0]
        } else {
            [160.0, 150.0, 128.0]
        };
        let grout = x % 48 < 4 || y % 48 < 4;
        image::Rgb(base.map(|c| ((if grout { c * 0.45 } else { c }) * shade) as u8))
    });
    pair.save(sb.path("pair.png")).unwrap();
    let answers: Vec<serde_json::Value> = sb
        .ok(&["predict", "m.safetensors", "--json", "pair.png", "p0.png"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers[0]["pair"], true, "{}", answers[0]);
    assert!(
        [5, 7, 9].contains(&answers[0]["label"].as_u64().unwrap()),
        "{}",
        answers[0]
    );
    assert_eq!(answers[1]["pair"], false);
    assert_eq!(answers[0]["narrow"], false, "a pair is never narrowed");
    let text = sb.ok(&["predict", "m.safetensors", "pair.png"]);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .ends_with(", one of a pair: footwear only"),
        "{text}"
    );
}

#[test]
fn fused_inference_classifies_the_test_set_as_the_plain_layers_do() {
    // The `simple` network infers through fused convolution stages (Winograd's algorithm,
    // only the outputs pooling keeps); they must agree with its plain layers on real data.
    let sb = Sandbox::new();
    sb.quick_model(6000, 1000);
    let data = test_set();
    let mut model = fmnist::Classifier::load(&sb.path("m.safetensors")).unwrap();
    let fused = model.probabilities(&data.test.images);
    let mut plain = model.spec.build_with(&mut nn::Rng::new(0), false).unwrap();
    assert!(
        plain.layers_len() > model.net.layers_len(),
        "nothing was fused"
    );
    plain.copy_tensors_from(&model.net);
    model.net = plain;
    let reference = model.probabilities(&data.test.images);
    let worst = largest_difference(&fused, &reference);
    assert!(worst < 1e-4, "probabilities differ by up to {worst}");
    let class = |p: &[f32]| (0..10).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
    let differ = fused
        .chunks(10)
        .zip(reference.chunks(10))
        .filter(|(a, b)| class(a) != class(b))
        .count();
    // A class flips only where two probabilities tie to within rounding.
    assert!(differ <= 1, "{differ} of 10,000 images change class");
}

#[test]
fn bf16_inference_classifies_the_test_set_as_fp32_does() {
    let sb = Sandbox::new();
    sb.quick_model(6000, 1000);
    let args = |p: &'static str| {
        [
            "eval",
            "m.safetensors",
            "--json",
            "--offline",
            "--precision",
            p,
        ]
    };
    let Some(isa) = nn::Bf16Isa::detect() else {
        // Without bf16 instructions: one clear error line, and fp32 still works.
        sb.fails(&args("bf16"), "needs a CPU with AVX512-BF16 or AMX-BF16");
        sb.ok(&args("fp32"));
        return;
    };
    let data = test_set();
    let mut model = fmnist::Classifier::load(&sb.path("m.safetensors")).unwrap();
    let fp32 = model.probabilities(&data.test.images);
    model.net.set_precision(nn::Precision::Bf16(isa));
    let bf16 = model.probabilities(&data.test.images);
    let worst = largest_difference(&fp32, &bf16);
    // bf16 operands carry 8 significant bits: probabilities move, by a few per cent at most.
    assert!(worst > 0.0, "bf16 inference computed in fp32");
    assert!(worst < 0.1, "probabilities differ by up to {worst}");
    let accuracy = |p: &[f32]| {
        let right = p
            .chunks(10)
            .zip(&data.test.labels)
            .filter(|(p, l)| nn::loss::argmax(p) == **l as usize)
            .count();
        right as f64 / data.test.len() as f64
    };
    let (a32, a16) = (accuracy(&fp32), accuracy(&bf16));
    assert!((a32 - a16).abs() <= 0.003, "fp32 {a32}, bf16 {a16}");
    // The command line's bf16 is the library's.
    let eval = |p: &'static str| -> (f64, String) {
        let json: serde_json::Value = serde_json::from_str(&sb.ok(&args(p))).unwrap();
        let precision = json["precision"].as_str().unwrap_or_default().to_string();
        (json["accuracy"].as_f64().unwrap(), precision)
    };
    assert_eq!(eval("fp32"), (a32, "fp32".to_string()));
    assert_eq!(eval("bf16"), (a16, nn::Precision::Bf16(isa).name()));
    let table = sb.ok(&["eval", "m.safetensors", "--offline", "--precision", "bf16"]);
    let named = format!(", inference in {})", nn::Precision::Bf16(isa).name());
    assert!(
        table.lines().next().unwrap_or_default().ends_with(&named),
        "{table}"
    );
}

#[test]
fn same_seed_and_threads_give_the_same_model_bit_for_bit() {
    let sb = Sandbox::new();
    let args = |out: &'static str, seed: &'static str| {
        vec![
            "train",
            "--epochs",
            "1",
            "--limit",
            "3000",
            "--val-size",
            "1000",
            "--seed",
            seed,
            "--out",
            out,
            "--offline",
            "--threads",
            "2",
        ]
    };
    sb.ok(&args("a.safetensors", "7"));
    sb.ok(&args("b.safetensors", "7"));
    sb.ok(&args("c.safetensors", "8"));
    let weights = |f: &str| {
        let m = fmnist::Classifier::load(&sb.path(f)).unwrap();
        m.net
            .tensors()
            .iter()
            .flat_map(|(_, t)| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            .collect::<Vec<u32>>()
    };
    assert_eq!(weights("a.safetensors"), weights("b.safetensors"));
    assert_ne!(weights("a.safetensors"), weights("c.safetensors"));
}

#[test]
fn the_test_set_is_never_used_for_model_selection() {
    // Training reports validation figures computed on held-out training images; replacing
    // the test set with garbage must leave training (and the chosen epoch) unchanged.
    let sb = Sandbox::new();
    let dir = sb.data_copy("data");
    let args = |d: &str, out: &'static str| {
        vec![
            "train",
            "--epochs",
            "2",
            "--limit",
            "3000",
            "--val-size",
            "1000",
            "--out",
            out,
            "--data-dir",
            d.to_string().leak(),
            "--threads",
            "2",
            "--offline",
        ]
    };
    let real = sb.ok(&args(dir.to_str().unwrap(), "a.safetensors"));
    // Shuffle the test labels but keep the files valid by writing raw IDX under a new dir
    // (checksums would reject them, so train from the library with the altered test set).
    let mut data = test_set();
    data.test.labels.rotate_left(1);
    let cfg = fmnist::TrainConfig {
        epochs: 2,
        limit: Some(3000),
        val_size: 1000,
        ..Default::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let outcome = pool
        .install(|| {
            fmnist::train(
                &data,
                fmnist::model::simple(),
                &cfg,
                &mut fmnist::train::Silent,
            )
        })
        .unwrap();
    let cli_model = fmnist::Classifier::load(&sb.path("a.safetensors")).unwrap();
    assert_eq!(
        outcome.model.summary.best_epoch,
        cli_model.summary.best_epoch
    );
    assert_eq!(
        outcome.model.summary.val_accuracy,
        cli_model.summary.val_accuracy
    );
    let same = outcome
        .model
        .net
        .tensors()
        .iter()
        .zip(cli_model.net.tensors())
        .all(|((_, a), (_, b))| *a == b);
    assert!(same, "weights must not depend on the test set");
    assert_ne!(
        outcome.model.summary.test_accuracy,
        cli_model.summary.test_accuracy
    );
    assert!(real.contains("val loss"));
}
