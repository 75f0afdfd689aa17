//! Classifying users' own images: decode any common format ([`image`]), turn it into a
//! Fashion-MNIST-like 28×28 input ([`preprocess`]), and rank the classes.

pub mod image;
pub mod preprocess;

use ::image::GrayImage;
use serde::Serialize;

pub use self::image::{DecodeError, MAX_PIXELS, MAX_SIDE, decode_bytes, load_image};
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
    /// The `k` most probable classes, best first.
    pub top: Vec<Ranked>,
}

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
