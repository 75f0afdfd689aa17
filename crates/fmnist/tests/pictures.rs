//! The pictures the commands draw: training curves and confusion matrix beside a trained
//! model, `eval --report`, `data --preview` and `predict --show-input`.

mod common;

use common::Sandbox;
use fmnist::data::{PIXELS, SIDE};

fn open(path: &std::path::Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// Distinct colours: a blank or single-colour picture has one or two.
fn colours(img: &image::RgbImage) -> usize {
    img.pixels()
        .map(|p| p.0)
        .collect::<std::collections::HashSet<_>>()
        .len()
}

#[test]
fn train_eval_data_and_predict_draw_their_pictures() {
    let sb = Sandbox::new();
    let out = sb.ok(&[
        "train",
        "--epochs",
        "2",
        "--limit",
        "3000",
        "--val-size",
        "1000",
        "--out",
        "m.safetensors",
        "--offline",
    ]);
    assert!(
        out.contains("m.curves.png") && out.contains("m.confusion.png"),
        "{out}"
    );
    let curves = open(&sb.path("m.curves.png"));
    assert_eq!(curves.dimensions(), (1200, 480));
    assert!(colours(&curves) > 50);
    let confusion = open(&sb.path("m.confusion.png"));
    assert_eq!(confusion.dimensions(), (1040, 900));
    assert!(colours(&confusion) > 50);

    let report = sb.ok(&["eval", "m.safetensors", "--report", "rep/sub", "--offline"]);
    for name in ["confusion.png", "per_class.png", "mistakes.png"] {
        let path = sb.path("rep/sub").join(name);
        assert!(
            report.contains(&format!("wrote rep/sub/{name}")),
            "{report}"
        );
        assert!(colours(&open(&path)) > 50, "{name}");
    }
    // 36 mistakes in rows of 6 cells of 170 × (84 + 12 + 2·17 + 10) under a 44-pixel title.
    assert_eq!(
        open(&sb.path("rep/sub/mistakes.png")).dimensions(),
        (6 * 170, 44 + 6 * 140)
    );
    // The same confusion matrix as training drew (same model, same test set).
    assert_eq!(open(&sb.path("rep/sub/confusion.png")), confusion);

    // The test images as photos: same accuracy dark on white as light on black (the
    // inversion is exact), and not far below the images as they are.
    let json: serde_json::Value = serde_json::from_str(&sb.ok(&[
        "eval",
        "m.safetensors",
        "--photos",
        "400",
        "--json",
        "--offline",
    ]))
    .unwrap();
    let rows = json["photos"].as_array().unwrap();
    let acc: Vec<f64> = rows
        .iter()
        .map(|r| r["accuracy"].as_f64().unwrap())
        .collect();
    assert_eq!(acc.len(), 5, "{json}");
    assert!(
        rows[0]["style"]
            .as_str()
            .unwrap()
            .contains("no preprocessing")
    );
    assert_eq!(acc[2], acc[3], "{json}");
    for a in &acc[1..] {
        assert!(*a > acc[0] - 0.08, "{json}");
    }

    let data = sb.ok(&["data", "--preview", "preview.png", "--offline"]);
    assert!(data.contains("wrote preview.png"), "{data}");
    let preview = open(&sb.path("preview.png"));
    assert_eq!(
        preview.dimensions(),
        (8 * 170, 44 + 5 * (84 + 12 + 17 + 10))
    );

    // predict --show-input writes exactly the 28×28 input the model classified.
    let boot = image::RgbImage::from_fn(120, 90, |x, y| {
        let inside = (30..50).contains(&x) && (20..60).contains(&y);
        image::Rgb(if inside {
            [40, 30, 20]
        } else {
            [250, 250, 245]
        })
    });
    boot.save(sb.path("photo.jpg")).unwrap();
    sb.ok(&[
        "predict",
        "m.safetensors",
        "photo.jpg",
        "--show-input",
        "seen",
    ]);
    let seen = image::open(sb.path("seen/photo.input.png"))
        .unwrap()
        .to_luma8();
    assert_eq!(seen.dimensions(), (SIDE as u32, SIDE as u32));
    let expected =
        fmnist::predict::preprocess(&fmnist::predict::load_image(&sb.path("photo.jpg")).unwrap());
    assert_eq!(seen.as_raw().len(), PIXELS);
    assert_eq!(seen.as_raw(), &expected);
    // Light background inverted, the tall object centred: bright middle, black sides.
    assert_eq!(seen.get_pixel(0, 14).0, [0]);
    assert_eq!(seen.get_pixel(27, 14).0, [0]);
    assert!(seen.get_pixel(14, 14).0[0] > 150);
}

#[test]
fn an_unwritable_picture_destination_fails_before_any_work() {
    let sb = Sandbox::new();
    sb.fails(
        &["data", "--preview", "missing-dir/p.png", "--offline"],
        "missing-dir",
    );
}
