//! `fmnist eval --photos-dir`: class folders of photos, scored against what `predict`
//! says of each file, with and without a label map, and its errors. The photos are made
//! here from test images (the real ones stay outside the project).

mod common;

use std::path::Path;

use common::{SYSTEM_DATA, Sandbox, mkfifo};
use fmnist::data::{DataOptions, SIDE};
use serde_json::Value;

fn test_set() -> fmnist::FashionMnist {
    let opts = DataOptions {
        data_dir: Some(SYSTEM_DATA.into()),
        offline: true,
        verbose: false,
    };
    fmnist::data::load(&opts).expect("real data")
}

/// Writes the first `count` test images of class `label` into `dir` as photos would
/// come: larger, dark on a light background, as JPEG.
fn photos(data: &fmnist::FashionMnist, label: u8, count: usize, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut written = 0;
    for i in 0..data.test.len() {
        if data.test.labels[i] != label || written == count {
            continue;
        }
        let px: Vec<u8> = data.test.image(i).iter().map(|&v| 255 - v).collect();
        let img = image::GrayImage::from_raw(SIDE as u32, SIDE as u32, px).unwrap();
        let big = image::imageops::resize(&img, 112, 112, image::imageops::FilterType::Triangle);
        image::DynamicImage::ImageLuma8(big)
            .to_rgb8()
            .save(dir.join(format!("{i}.jpg")))
            .unwrap();
        written += 1;
    }
}

/// `predict --json`'s top class for each photo in `dir`.
fn predicted(sb: &Sandbox, dir: &Path) -> Vec<u64> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".jpg"))
        .collect();
    files.sort();
    let mut args = vec!["predict", "m.safetensors", "--json"];
    args.extend(files.iter().map(String::as_str));
    sb.ok(&args)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["label"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn photo_folders_are_scored_as_predict_classifies_each_photo() {
    let sb = Sandbox::new();
    sb.quick_model(3000, 500);
    let data = test_set();
    // Folders named after classes, no label map.
    let named = sb.path("named");
    photos(&data, 1, 12, &named.join("Trouser"));
    photos(&data, 8, 9, &named.join("bag"));
    let out = sb.ok(&[
        "eval",
        "m.safetensors",
        "--photos-dir",
        "named",
        "--json",
        "--offline",
    ]);
    let json: Value = serde_json::from_str(&out).unwrap();
    let report = &json["photos_dir"];
    assert_eq!(report["scored"], 21);
    assert_eq!(report["unscored"], 0);
    let mut right = 0;
    for (folder, label) in [("Trouser", 1u64), ("bag", 8)] {
        let f = report["folders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["folder"] == folder)
            .expect("folder reported");
        let said = predicted(&sb, &named.join(folder));
        let want = said.iter().filter(|&&p| p == label).count();
        assert_eq!(f["right"], want as u64, "{folder}");
        assert_eq!(f["photos"], said.len() as u64);
        let counts: Vec<u64> = f["predicted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        for (class, &n) in counts.iter().enumerate() {
            assert_eq!(
                n,
                said.iter().filter(|&&p| p == class as u64).count() as u64
            );
        }
        right += want;
    }
    let accuracy = report["accuracy"].as_f64().unwrap();
    assert!((accuracy - right as f64 / 21.0).abs() < 1e-12);
    // The model classifies these photo-like renderings well above chance.
    assert!(accuracy > 0.5, "{accuracy}");

    // A label map: several labels may count, and a folder of none is reported apart.
    let mapped = sb.path("mapped");
    for (label, n) in [(5, 4), (7, 4), (9, 4)] {
        photos(&data, label, n, &mapped.join("shoes"));
    }
    photos(&data, 6, 5, &mapped.join("hat"));
    std::fs::write(
        mapped.join("labels.json"),
        r#"{"shoes": [5, 7, 9], "hat": []}"#,
    )
    .unwrap();
    let out = sb.ok(&[
        "eval",
        "m.safetensors",
        "--photos-dir",
        "mapped",
        "--report",
        "rep",
        "--offline",
    ]);
    assert!(
        out.contains("12 in folders of a class, 5 in folders of none"),
        "{out}"
    );
    assert!(
        out.contains("(none of the ten)") && out.contains("Sandal, Sneaker, Ankle boot"),
        "{out}"
    );
    let sheet = std::fs::read(sb.path("rep/photos.png")).expect("contact sheet");
    assert!(sheet.starts_with(b"\x89PNG"));
    let json: Value = serde_json::from_str(&sb.ok(&[
        "eval",
        "m.safetensors",
        "--photos-dir",
        "mapped",
        "--json",
        "--offline",
    ]))
    .unwrap();
    let said = predicted(&sb, &mapped.join("shoes"));
    let shoes = said.iter().filter(|p| [5, 7, 9].contains(*p)).count() as u64;
    let folders = json["photos_dir"]["folders"].as_array().unwrap().clone();
    let by_name = |n: &str| folders.iter().find(|f| f["folder"] == n).unwrap().clone();
    assert_eq!(by_name("shoes")["right"], shoes);
    assert!(by_name("hat")["recall"].is_null());
    assert_eq!(json["photos_dir"]["unscored"], 5);

    // A different map given explicitly overrides labels.json.
    std::fs::write(sb.path("only-shoes.json"), r#"{"shoes": [7], "hat": []}"#).unwrap();
    let json: Value = serde_json::from_str(&sb.ok(&[
        "eval",
        "m.safetensors",
        "--photos-dir",
        "mapped",
        "--labels",
        "only-shoes.json",
        "--json",
        "--offline",
    ]))
    .unwrap();
    let sneakers = said.iter().filter(|&&p| p == 7).count() as u64;
    let folders = json["photos_dir"]["folders"].as_array().unwrap();
    assert_eq!(
        folders.iter().find(|f| f["folder"] == "shoes").unwrap()["right"],
        sneakers
    );
}

#[test]
fn bad_photo_folders_are_one_error_line() {
    let sb = Sandbox::new();
    sb.quick_model(1000, 200);
    let data = test_set();
    let dir = sb.path("p");
    photos(&data, 0, 2, &dir.join("tops"));
    // A folder that is no class name, without a label map.
    sb.fails(
        &["eval", "m.safetensors", "--photos-dir", "p", "--offline"],
        "not named after a class",
    );
    // A map that leaves a folder out, or names a label that does not exist.
    std::fs::write(sb.path("p/labels.json"), r#"{"other": [1]}"#).unwrap();
    sb.fails(
        &["eval", "m.safetensors", "--photos-dir", "p", "--offline"],
        "\"tops\" is not in the label map",
    );
    std::fs::write(sb.path("p/labels.json"), r#"{"tops": [12]}"#).unwrap();
    sb.fails(
        &["eval", "m.safetensors", "--photos-dir", "p", "--offline"],
        "not 0-9",
    );
    std::fs::write(sb.path("p/labels.json"), "not json").unwrap();
    sb.fails(
        &["eval", "m.safetensors", "--photos-dir", "p", "--offline"],
        "not a label map",
    );
    // A damaged photo is named.
    std::fs::write(sb.path("p/labels.json"), r#"{"tops": [0]}"#).unwrap();
    std::fs::write(sb.path("p/tops/broken.jpg"), b"\xff\xd8\xff not really").unwrap();
    sb.fails(
        &["eval", "m.safetensors", "--photos-dir", "p", "--offline"],
        "broken.jpg",
    );
    // A FIFO as the label map: one error at once. A FIFO or a link to a device among
    // the photos is not a photo, and is passed over.
    mkfifo(&sb.path("fifo.json"));
    sb.fails_within(
        &[
            "eval",
            "m.safetensors",
            "--photos-dir",
            "p",
            "--labels",
            "fifo.json",
            "--offline",
        ],
        "it is a FIFO",
        60,
    );
    std::fs::remove_file(sb.path("p/tops/broken.jpg")).unwrap();
    mkfifo(&sb.path("p/tops/fifo.jpg"));
    std::os::unix::fs::symlink("/dev/zero", sb.path("p/tops/zero.jpg")).unwrap();
    let out = sb.ok(&[
        "eval",
        "m.safetensors",
        "--photos-dir",
        "p",
        "--json",
        "--offline",
    ]);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["photos_dir"]["scored"], 2);
    // No folders, no photos, no directory.
    std::fs::create_dir_all(sb.path("empty")).unwrap();
    sb.fails(
        &[
            "eval",
            "m.safetensors",
            "--photos-dir",
            "empty",
            "--offline",
        ],
        "no class folders",
    );
    std::fs::create_dir_all(sb.path("hollow/Bag")).unwrap();
    sb.fails(
        &[
            "eval",
            "m.safetensors",
            "--photos-dir",
            "hollow",
            "--offline",
        ],
        "has no photos",
    );
    sb.fails(
        &[
            "eval",
            "m.safetensors",
            "--photos-dir",
            "nowhere",
            "--offline",
        ],
        "nowhere",
    );
}
