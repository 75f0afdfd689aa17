//! Classifying users' own images: decode any common format ([`image`]), turn it into a
//! Fashion-MNIST-like 28×28 input ([`preprocess`]), and rank the classes.

pub mod image;
pub mod preprocess;
pub mod segment;

use ::image::GrayImage;
use serde::Serialize;

pub use self::image::{
    DecodeError, MAX_PIXELS, MAX_SIDE, decode_bytes, decode_cost, decode_within, load_image,
};
pub use self::preprocess::preprocess;
use crate::data::{PIXELS, SIDE};
use crate::model::Classifier;

/// One ranked class.
#[derive(Clone, Debug, Serialize)]
pub struct Ranked {
    /// Class name.
    pub class: String,
    /// Label 0–9.
    pub label: usize,
    /// Probability 0–1.
    pub probability: f32,
}

/// A prediction for one image.
#[derive(Clone, Debug, Serialize)]
pub struct Prediction {
    /// The image file (as given).
    pub file: String,
    /// The most probable class.
    pub class: String,
    /// Its label 0–9.
    pub label: usize,
    /// Its probability.
    pub probability: f32,
    /// Whether the model is unsure: its best class is more likely wrong than right
    /// (calibrated probability below [`UNSURE_BELOW`]), as for a photo of something
    /// that is none of the classes, or one it cannot make out.
    pub unsure: bool,
    /// The `k` most probable classes, best first.
    pub top: Vec<Ranked>,
}

/// Below this probability of the best class a prediction is marked unsure. With the
/// temperature fitted on the validation split, a probability means how often such an
/// answer is right, so this says "more likely wrong than right"; it is not fitted to
/// any photos.
pub const UNSURE_BELOW: f32 = 0.5;

/// Ranks the classes of each preprocessed image (784 pixels each, in `inputs`).
pub fn rank(model: &mut Classifier, names: &[String], inputs: &[u8], k: usize) -> Vec<Prediction> {
    let c = model.classes.len();
    let probs = model.probabilities(inputs);
    probs
        .chunks_exact(c)
        .zip(names)
        .map(|(row, file)| {
            let mut order: Vec<usize> = (0..c).collect();
            // Stable: equal probabilities keep label order.
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let top: Vec<Ranked> = order
                .iter()
                .take(k.clamp(1, c))
                .map(|&l| Ranked {
                    class: model.classes[l].clone(),
                    label: l,
                    probability: row[l],
                })
                .collect();
            Prediction {
                file: file.clone(),
                class: top[0].class.clone(),
                label: top[0].label,
                probability: top[0].probability,
                unsure: top[0].probability < UNSURE_BELOW,
                top,
            }
        })
        .collect()
}

/// Loads, preprocesses and classifies image files; fails on the first unusable file.
pub fn predict_files(
    model: &mut Classifier,
    paths: &[std::path::PathBuf],
    k: usize,
) -> anyhow::Result<Vec<Prediction>> {
    let inputs = preprocess_files(paths)?;
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Ok(rank(model, &names, &inputs, k))
}

/// The 28×28 model inputs of image files, 784 bytes each, in order.
pub fn preprocess_files(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<u8>> {
    let mut inputs = Vec::with_capacity(paths.len() * PIXELS);
    for p in paths {
        inputs.extend(preprocess(&load_image(p)?));
    }
    Ok(inputs)
}

/// The file names `predict --show-input` gives the inputs of `images`:
/// `NAME.input.png`, and `NAME-2.input.png`, `NAME-3.input.png`, ... for later images
/// whose names would repeat one (`a/x.png` and `b/x.png`), so none is overwritten;
/// `true` marks a name so changed.
pub fn input_names(images: &[std::path::PathBuf]) -> Vec<(String, bool)> {
    let mut taken = std::collections::HashSet::new();
    images
        .iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .map_or_else(|| "image".to_string(), |s| s.to_string_lossy().into_owned());
            let plain = format!("{stem}.input.png");
            let name = std::iter::once(plain.clone())
                .chain((2..).map(|n| format!("{stem}-{n}.input.png")))
                .find(|name| !taken.contains(name))
                .unwrap_or_default();
            taken.insert(name.clone());
            let renamed = name != plain;
            (name, renamed)
        })
        .collect()
}

/// A 28×28 model input as PNG bytes (what `predict --show-input` writes).
pub fn input_png(pixels: &[u8]) -> anyhow::Result<Vec<u8>> {
    let img = GrayImage::from_raw(SIDE as u32, SIDE as u32, pixels.to_vec()).ok_or_else(|| {
        anyhow::anyhow!("a model input has {} pixels, not {PIXELS}", pixels.len())
    })?;
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        ::image::ImageFormat::Png,
    )?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn inputs_of_images_with_one_name_do_not_overwrite_each_other() {
        let images: Vec<std::path::PathBuf> = ["a/x.png", "b/x.png", "c/x.jpg", "x-2.png", "y.png"]
            .map(Into::into)
            .to_vec();
        let names = super::input_names(&images);
        let expect = [
            ("x.input.png", false),
            ("x-2.input.png", true),
            ("x-3.input.png", true),
            ("x-2-2.input.png", true),
            ("y.input.png", false),
        ];
        assert_eq!(names, expect.map(|(n, r)| (n.to_string(), r)));
    }
}
