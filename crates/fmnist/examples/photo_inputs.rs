//! What the model sees of photo-like scenes, before and after segmentation: test garments
//! laid as coloured cloth on generated floors and beds (tiles, a striped bedspread, wood
//! with a shadow, carpet), each sent through the plain path and through `preprocess`.
//! Writes the contact sheet of README's `predict` section:
//! `cargo run --release --example photo_inputs [OUT.png]` (default `photo-inputs.png`).

use fmnist::{DataOptions, data, predict};
use image::{DynamicImage, Rgb, RgbImage};

/// Scene size, and how many times the 28×28 garment is enlarged in it.
const W: u32 = 240;
const H: u32 = 240;
const SCALE: f32 = 7.0;

/// The floor or bed at `(x, y)` for background `kind`.
fn background(kind: usize, x: u32, y: u32) -> [f32; 3] {
    let (xf, yf) = (x as f32, y as f32);
    let light = 0.75 + 0.25 * xf / W as f32;
    let c = match kind {
        // Beige tiles with grey grout.
        0 => {
            let grout = (x + 11) % 48 < 3 || (y + 5) % 48 < 3;
            let odd = !((x + 11) / 48 + (y + 5) / 48).is_multiple_of(2);
            match (grout, odd) {
                (true, _) => [120.0, 115.0, 105.0],
                (false, true) => [200.0, 190.0, 170.0],
                (false, false) => [215.0, 205.0, 188.0],
            }
        }
        // A striped bedspread.
        1 => {
            if (((xf + 0.4 * yf) / 14.0) as u32).is_multiple_of(2) {
                [200.0, 80.0, 70.0]
            } else {
                [235.0, 225.0, 210.0]
            }
        }
        // Wood planks with grain, a shadow over the left third.
        2 => {
            let grain = 12.0 * ((yf * 0.9 + 6.0 * (xf * 0.05).sin()) * 0.5).sin();
            let plank = if (y / 40).is_multiple_of(2) {
                0.0
            } else {
                -18.0
            };
            let shade = if x < 80 { 0.65 } else { 1.0 };
            [
                (160.0 + grain + plank) * shade,
                (110.0 + grain + plank) * shade,
                (70.0 + grain + plank) * shade,
            ]
        }
        // Speckled grey carpet.
        _ => {
            let n = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)) % 41;
            let v = 150.0 + n as f32 - 20.0;
            [v, v * 0.97, v * 0.92]
        }
    };
    c.map(|v| v * light)
}

/// Test image `pixels` as cloth of `colour` on background `kind`, off centre, with a
/// soft shadow to its lower right.
fn scene(pixels: &[u8], colour: [f32; 3], kind: usize) -> DynamicImage {
    let coverage = |x: f32, y: f32| -> f32 {
        // The garment's own grey decides its shading; its silhouette, its coverage.
        let (u, v) = ((x - 30.0) / SCALE, (y - 20.0) / SCALE);
        if u < 0.0 || v < 0.0 || u >= 27.0 || v >= 27.0 {
            return 0.0;
        }
        let (u0, v0) = (u as usize, v as usize);
        let (fu, fv) = (u - u0 as f32, v - v0 as f32);
        let at = |a: usize, b: usize| pixels[b * 28 + a] as f32 / 255.0;
        (at(u0, v0) * (1.0 - fu) + at(u0 + 1, v0) * fu) * (1.0 - fv)
            + (at(u0, v0 + 1) * (1.0 - fu) + at(u0 + 1, v0 + 1) * fu) * fv
    };
    DynamicImage::ImageRgb8(RgbImage::from_fn(W, H, |x, y| {
        let (xf, yf) = (x as f32, y as f32);
        let shadow = 1.0 - 0.35 * (coverage(xf - 6.0, yf - 6.0) * 3.0).min(1.0);
        let bg = background(kind, x, y).map(|v| v * shadow);
        let g = coverage(xf, yf);
        // Dataset greys are light-on-black: bright means dark cloth.
        let cloth = colour.map(|c| c * (1.15 - 0.6 * g));
        let a = (g * 4.0).min(1.0);
        let px: [f32; 3] = std::array::from_fn(|i| bg[i] * (1.0 - a) + cloth[i] * a);
        Rgb(px.map(|v| v.clamp(0.0, 255.0) as u8))
    }))
}

/// Pastes `input` (28×28) enlarged `k` times at `(x, y)` of `sheet`.
fn paste_input(sheet: &mut RgbImage, input: &[u8], k: u32, x: u32, y: u32) {
    for (i, &v) in input.iter().enumerate() {
        let (u, w) = (i as u32 % 28, i as u32 / 28);
        for dy in 0..k {
            for dx in 0..k {
                sheet.put_pixel(x + u * k + dx, y + w * k + dy, Rgb([v, v, v]));
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "photo-inputs.png".to_string());
    let data = data::load(&DataOptions::default())?;
    let colours = [
        [40.0, 70.0, 160.0],
        [60.0, 60.0, 65.0],
        [150.0, 40.0, 50.0],
        [70.0, 110.0, 60.0],
    ];
    // The first test image of each class.
    let picks: Vec<usize> = (0..10u8)
        .filter_map(|c| data.test.labels.iter().position(|&l| l == c))
        .collect();
    let (thumb, k, gap) = (96u32, 3u32, 8u32);
    let cell = thumb.max(28 * k);
    let mut sheet = RgbImage::from_pixel(
        gap + picks.len() as u32 * (cell + gap),
        gap + 3 * (cell + gap),
        Rgb([255, 255, 255]),
    );
    for (n, &i) in picks.iter().enumerate() {
        let photo = scene(data.test.image(i), colours[n % 4], n % 4);
        let x = gap + n as u32 * (cell + gap);
        let small = image::imageops::thumbnail(&photo.to_rgb8(), thumb, thumb);
        image::imageops::overlay(&mut sheet, &small, x.into(), gap.into());
        let before = predict::preprocess::preprocess_plain(&photo);
        let after = predict::preprocess(&photo);
        paste_input(&mut sheet, &before, k, x, 2 * gap + cell);
        paste_input(&mut sheet, &after, k, x, 3 * gap + 2 * cell);
    }
    sheet.save(&out)?;
    println!("wrote {out}: scenes, then the plain path's inputs, then preprocess's");
    Ok(())
}
