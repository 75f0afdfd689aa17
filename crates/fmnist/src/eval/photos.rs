//! Photo-like renderings of dataset images, to measure how well `predict` copes with the
//! pictures users bring: larger, off-centre, with margins, dark on light or in colour.
//! Each rendering goes through the same preprocessing as a user's file.

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, Rgb, RgbImage};
use nn::Rng;

use crate::data::{Dataset, SIDE};
use crate::model::classifier::Classifier;
use crate::predict;

/// How a 28×28 image is turned into a photo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// The 28×28 image as training sees it, without preprocessing (the baseline).
    Unprocessed,
    /// The 28×28 image itself, through the preprocessing.
    Dataset,
    /// Light on black as in the dataset, 3–6× larger, off-centre in a wider canvas.
    LightOnBlack,
    /// Dark on white (a product shot), 3–6× larger, off-centre.
    DarkOnWhite,
    /// A coloured garment on a cream background, 3–6× larger, off-centre, slightly noisy.
    ColourOnCream,
}

impl Style {
    /// Every style, the dataset first.
    pub const ALL: [Style; 5] = [
        Style::Unprocessed,
        Style::Dataset,
        Style::LightOnBlack,
        Style::DarkOnWhite,
        Style::ColourOnCream,
    ];

    /// A short description for reports.
    pub fn describe(&self) -> &'static str {
        match self {
            Style::Unprocessed => "28×28 test images as they are (no preprocessing)",
            Style::Dataset => "28×28 as in the dataset",
            Style::LightOnBlack => "light on black, 3–6× larger, off-centre",
            Style::DarkOnWhite => "dark on white, 3–6× larger, off-centre",
            Style::ColourOnCream => "coloured on cream, 3–6× larger, off-centre, noisy",
        }
    }
}

/// Renders dataset image `pixels` (784 bytes) as a photo in `style`.
pub fn render(pixels: &[u8], style: Style, rng: &mut Rng) -> DynamicImage {
    let gray = GrayImage::from_raw(SIDE as u32, SIDE as u32, pixels.to_vec())
        .unwrap_or_else(|| GrayImage::new(SIDE as u32, SIDE as u32));
    if matches!(style, Style::Dataset | Style::Unprocessed) {
        return DynamicImage::ImageLuma8(gray);
    }
    let side = (SIDE * (3 + rng.below(4))) as u32;
    let big = image::imageops::resize(&gray, side, side, FilterType::Triangle);
    let (w, h) = (
        side + (side as f32 * rng.uniform_range(0.2, 0.8)) as u32,
        side + (side as f32 * rng.uniform_range(0.2, 0.6)) as u32,
    );
    let (left, top) = (
        rng.below((w - side) as usize + 1) as u32,
        rng.below((h - side) as usize + 1) as u32,
    );
    let garment = [
        40.0 + rng.below(200) as f32,
        40.0 + rng.below(200) as f32,
        40.0 + rng.below(200) as f32,
    ];
    let mut photo = RgbImage::new(w, h);
    for (x, y, out) in photo.enumerate_pixels_mut() {
        let inside = x >= left && y >= top && x < left + side && y < top + side;
        let v = if inside {
            big.get_pixel(x - left, y - top).0[0]
        } else {
            0
        };
        let a = v as f32 / 255.0;
        *out = match style {
            Style::LightOnBlack => Rgb([v, v, v]),
            Style::DarkOnWhite => Rgb([255 - v; 3]),
            _ => {
                let cream = [245.0, 240.0, 228.0];
                let noise = rng.uniform_range(-6.0, 6.0);
                Rgb(std::array::from_fn(|c| {
                    (cream[c] * (1.0 - a) + garment[c] * a + noise).clamp(0.0, 255.0) as u8
                }))
            }
        };
    }
    DynamicImage::ImageRgb8(photo)
}

/// Accuracy of `model` on the first `count` images of `data` rendered in each style
/// (the same seed gives the same photos).
pub fn robustness(
    model: &mut Classifier,
    data: &Dataset,
    count: usize,
    seed: u64,
) -> Vec<(Style, f64)> {
    let n = count.min(data.len());
    Style::ALL
        .iter()
        .map(|&style| {
            let mut rng = Rng::new(seed);
            let inputs: Vec<predict::Input> = (0..n)
                .map(|i| {
                    if style == Style::Unprocessed {
                        predict::Input {
                            pixels: data.image(i).to_vec(),
                            pair: false,
                            narrow: Vec::new(),
                            half: None,
                        }
                    } else {
                        predict::prepare(&render(data.image(i), style, &mut rng))
                    }
                })
                .collect();
            let c = model.classes.len();
            // Ranked as `predict` ranks them.
            let classes = model.classes.clone();
            let (probs, _) =
                predict::input_probabilities(&classes, &inputs, |px| model.probabilities(px));
            let right = probs
                .chunks_exact(c)
                .zip(&data.labels)
                .filter(|(row, label)| nn::loss::argmax(row) == **label as usize)
                .count();
            (style, right as f64 / n.max(1) as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::PIXELS;

    #[test]
    fn renderings_go_back_to_nearly_the_dataset_image() {
        // A garment-like white bar as tall as the image (as dataset images are on their
        // longer side): every style should come back as nearly the same 28×28 input.
        let mut px = vec![0u8; PIXELS];
        for y in 0..SIDE {
            for x in 9..19 {
                px[y * SIDE + x] = 255;
            }
        }
        let mut rng = Rng::new(1);
        for style in &Style::ALL[1..] {
            let style = *style;
            for _ in 0..5 {
                let photo = render(&px, style, &mut rng);
                if style != Style::Dataset {
                    assert!(photo.width() > 84 && photo.height() > 84);
                }
                let back = predict::preprocess(&photo);
                let diff = back
                    .iter()
                    .zip(&px)
                    .map(|(&a, &b)| (a as f64 - b as f64).abs())
                    .sum::<f64>()
                    / PIXELS as f64;
                assert!(diff < 16.0, "{style:?}: mean difference {diff}");
            }
        }
    }
}
