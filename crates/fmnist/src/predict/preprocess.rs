//! Turning a photo into a Fashion-MNIST-like 28×28 input: grey, light on black, cropped
//! to the object, scaled and centred the way the dataset's images were made.

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageBuffer, Pixel, RgbImage};

use super::segment;

use crate::data::{PIXELS, SIDE};

/// Grayscale with transparency composited over white (product shots on transparent
/// backgrounds are light-background photos).
fn to_gray(img: &DynamicImage) -> GrayImage {
    if !img.color().has_alpha() {
        return img.to_luma8();
    }
    let la = img.to_luma_alpha8();
    GrayImage::from_fn(la.width(), la.height(), |x, y| {
        let [v, a] = la.get_pixel(x, y).0;
        let (v, a) = (v as u32, a as u32);
        image::Luma([((v * a + 255 * (255 - a) + 127) / 255) as u8])
    })
}

/// Mean of the outermost pixels: the background's brightness.
fn border_mean(img: &GrayImage) -> f64 {
    let (w, h) = img.dimensions();
    let mut sum = 0u64;
    let mut n = 0u64;
    for (x, y, p) in img.enumerate_pixels() {
        if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
            sum += p.0[0] as u64;
            n += 1;
        }
    }
    sum as f64 / n.max(1) as f64
}

/// The darkest quarter's upper bound among the outermost pixels: the background level
/// even when the object touches two or three edges (as garments in the dataset do) or
/// the background is noisy.
fn border_low_quartile(img: &GrayImage) -> f64 {
    let border = sorted_border(img);
    border.get(border.len() / 4).copied().unwrap_or(0) as f64
}

/// The outermost pixels' grey levels, sorted.
fn sorted_border<P: Pixel<Subpixel = u8>>(img: &ImageBuffer<P, Vec<u8>>) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let mut border: Vec<u8> = img
        .enumerate_pixels()
        .filter(|(x, y, _)| *x == 0 || *y == 0 || x + 1 == w || y + 1 == h)
        .map(|(_, _, p)| p.to_luma().0[0])
        .collect();
    border.sort_unstable();
    border
}

/// Levels above the background that count as part of the object when cropping.
const FOREGROUND_CONTRAST: f64 = 24.0;

/// The bounding box `(x, y, w, h)` of the pixels brighter than `background` by more than
/// [`FOREGROUND_CONTRAST`], or `None` when there are none.
fn foreground_box(img: &GrayImage, background: f64) -> Option<(u32, u32, u32, u32)> {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if p.0[0] as f64 > background + FOREGROUND_CONTRAST {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    (x0 <= x1).then(|| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

/// Maps `background` to 0 and the brightest pixel to 255, as in the dataset (every
/// Fashion-MNIST image has a black background and a maximum of 250–255): a grey garment
/// on a cream background becomes a bright one on black. Images whose brightest pixel is
/// at most `min_contrast` above the background are left alone.
fn stretch_levels(img: &mut GrayImage, background: f64, min_contrast: f64) {
    let max = img.pixels().map(|p| p.0[0]).max().unwrap_or(0) as f64;
    if max - background <= min_contrast {
        return;
    }
    let scale = 255.0 / (max - background);
    for p in img.pixels_mut() {
        p.0[0] = ((p.0[0] as f64 - background).max(0.0) * scale)
            .round()
            .min(255.0) as u8;
    }
}

/// Turns any image into a Fashion-MNIST-style input the way the dataset was made: the
/// object found (on a plain background by its contrast with it, on any other by
/// [`segment`]), grey, light on black, its longest side scaled to 28 pixels keeping the
/// aspect ratio, levels stretched from black to white, and centred. Returns 784 pixels.
pub fn preprocess(img: &DynamicImage) -> Vec<u8> {
    prepare(img).pixels
}

/// A model input made from an image, and what finding the object learnt about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// The 28×28 pixels, row by row ([`preprocess`]).
    pub pixels: Vec<u8>,
    /// Whether the object was one of a pair (of shoes, say): see
    /// [`super::pair_prior`].
    pub pair: bool,
    /// The object of a photo made as narrow as the dataset's tops where it is wider
    /// than their median ([`TOP_ASPECT`]): a top laid flat spreads its sleeves, while
    /// the dataset's tops were shot hanging, in a 3:4 frame. One rendering for each of
    /// [`TOP_ASPECTS`] the object is wider than, the median's first. Empty for pairs,
    /// for narrower objects and on the plain path (product shots and scans, made as the
    /// dataset was). Whether these views are ranked: [`super::input_probabilities`].
    pub narrow: Vec<Vec<u8>>,
    /// One half of an object that may be a pair touching along its length (two shoes
    /// seen from above, their outline notched at one end only: see
    /// [`segment::Segmentation::half`]), turned sideways as a pair's shoe is. `None`
    /// for pairs found as such, for other objects and on the plain path. Whether it is
    /// ranked, as a pair: [`super::input_probabilities`].
    pub half: Option<Vec<u8>>,
}

/// Which rendering of a prepared image the model's answer came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum View {
    /// The object as found ([`Input::pixels`]).
    #[default]
    Whole,
    /// The object as found and as narrow as the dataset's tops ([`Input::narrow`]),
    /// ranked together.
    Narrow,
    /// One half of a pair that touched ([`Input::half`]).
    Half,
}

impl Input {
    /// The pixels of `view` (the narrow view at [`TOP_ASPECT`]), or of the whole object
    /// where the input has no such view.
    pub fn seen(&self, view: View) -> &[u8] {
        self.renderings(view)
            .first()
            .copied()
            .unwrap_or(&self.pixels)
    }

    /// Every rendering of `view` this input has: the pixels for the whole, each narrow
    /// view, or the half.
    pub(crate) fn renderings(&self, view: View) -> Vec<&[u8]> {
        match view {
            View::Whole => vec![&self.pixels[..]],
            View::Narrow => self.narrow.iter().map(Vec::as_slice).collect(),
            View::Half => self.half.iter().map(Vec::as_slice).collect(),
        }
    }
}

/// Width over height of the dataset's tops (T-shirt/top, Pullover, Coat, Shirt), from
/// the bounding boxes of the training set's 24,000 tops: the median, 21 × 28 pixels
/// (the 3:4 frame of the product shots they were cut from), then the lower and upper
/// quartiles, 20 and 23 × 28. A top laid flat can be squeezed to any of them.
pub const TOP_ASPECTS: [f64; 3] = [21.0 / 28.0, 20.0 / 28.0, 23.0 / 28.0];

/// The median width over height of the dataset's tops ([`TOP_ASPECTS`]).
pub const TOP_ASPECT: f64 = TOP_ASPECTS[0];

/// [`preprocess`], also saying whether the photo showed a pair.
pub fn prepare(img: &DynamicImage) -> Input {
    // Images near the model's own size are drawings, scans or dataset images, not
    // photos: too small to segment, and exact through the plain path.
    if img.width().max(img.height()) > SEGMENT_ABOVE {
        let work = segment::work_copy(img);
        let border = sorted_border(&work);
        if !plain_border(&border)
            && let Some(found) = segment::segment(&work)
        {
            let invert = border[border.len() / 2] >= BLACK_SURROUND;
            let (pixels, narrow, half) = render_masked(&work, &found, invert);
            return Input {
                pixels,
                pair: found.pair,
                narrow,
                half,
            };
        }
    }
    Input {
        pixels: preprocess_plain(img),
        pair: false,
        narrow: Vec::new(),
        half: None,
    }
}

/// Images whose longest side is at most this many pixels are never segmented.
const SEGMENT_ABOVE: u32 = 2 * SIDE as u32;

/// How many grey levels from the border's median a pixel of a plain border may be.
const PLAIN_SPREAD: u8 = 12;

/// A border whose median grey is below this is a black surround: the object is already
/// light on black, as in the dataset, and is not inverted.
const BLACK_SURROUND: u8 = 32;

/// Whether the outermost pixels (`border`, sorted) are a flat black or white (a product
/// shot, a scan, a dataset image, or its negative), where the object leaves them: then
/// contrast alone finds the object, exactly. A border of one flat mid-tone is a photo's
/// bedspread, floor or wall, not a studio's backdrop: there the object may be darker or
/// lighter than it, and is segmented.
fn plain_border(border: &[u8]) -> bool {
    let median = border[border.len() / 2];
    let near = border
        .iter()
        .filter(|&&v| v.abs_diff(median) <= PLAIN_SPREAD)
        .count();
    let share = near as f64 / border.len() as f64;
    // It stays plain where the object runs off the edge, so that a picture and its
    // negative take the same path.
    let flat = !(BLACK_SURROUND..=255 - BLACK_SURROUND).contains(&median);
    flat && share >= FLAT_SURROUND_SHARE
}

/// Share of the border within [`PLAIN_SPREAD`] of a black or white median that counts
/// as plain (the object covers the rest).
const FLAT_SURROUND_SHARE: f64 = 0.6;

/// Objects of a pair at least this many times longer than wide are turned to lie
/// sideways: a shoe seen from above, the way the dataset shows shoes from the side.
const SIDEWAYS_RATIO: f64 = 1.3;

/// The object `found` in the work copy, rendered as the dataset renders garments
/// ([`cut_out`]), scaled and centred; and, unless it is one of a pair, as narrow as the
/// dataset's tops where it is wider ([`Input::narrow`]); and the half of a possible
/// pair, if it has one ([`Input::half`]).
fn render_masked(
    work: &RgbImage,
    found: &segment::Segmentation,
    invert: bool,
) -> (Vec<u8>, Vec<Vec<u8>>, Option<Vec<u8>>) {
    let gray = DynamicImage::ImageRgb8(work.clone()).to_luma8();
    let object = cut_out(&gray, &found.mask, invert, found.pair);
    let narrow = if found.pair {
        Vec::new()
    } else {
        narrowed(&object)
            .iter()
            .map(|view| fit_and_centre(view, 0.0, 0.0))
            .collect()
    };
    let half = found
        .half
        .as_ref()
        .map(|m| fit_and_centre(&cut_out(&gray, m, invert, true), 0.0, 0.0));
    // The mask, not the contrast, says what the object is: a white shirt inverted is
    // dim, yet it is the object and is stretched to white as any other.
    (fit_and_centre(&object, 0.0, 0.0), narrow, half)
}

/// The pixels of `gray` under `mask`, inverted (dark cloth light) when `invert` (the
/// object does not sit in a black surround), everything else black; one of a `pair`
/// turned to lie sideways; cropped to what is lit.
fn cut_out(gray: &GrayImage, mask: &segment::Mask, invert: bool, pair: bool) -> GrayImage {
    let mut object = GrayImage::from_fn(gray.width(), gray.height(), |x, y| {
        if mask.on[(y * gray.width() + x) as usize] {
            let v = gray.get_pixel(x, y).0[0];
            image::Luma([if invert { 255 - v } else { v }])
        } else {
            image::Luma([0])
        }
    });
    if pair {
        let (angle, ratio) = mask.long_axis();
        if ratio >= SIDEWAYS_RATIO {
            object = rotated(&object, angle);
        }
    }
    if let Some((x, y, w, h)) = lit_bounds(&object) {
        object = image::imageops::crop_imm(&object, x, y, w, h).to_image();
    }
    object
}

/// `img` squeezed across to each of [`TOP_ASPECTS`] times its height that it is wider
/// than, or none where it is no wider than their median.
fn narrowed(img: &GrayImage) -> Vec<GrayImage> {
    let (w, h) = img.dimensions();
    let width = |aspect: f64| (aspect * h as f64).round().max(1.0) as u32;
    if w <= width(TOP_ASPECT) {
        return Vec::new();
    }
    TOP_ASPECTS
        .iter()
        .map(|&a| width(a))
        .filter(|&target| w > target)
        .map(|target| image::imageops::resize(img, target, h, FilterType::Triangle))
        .collect()
}

/// `img` turned by −`angle` radians about its centre (so a line at `angle` lies
/// level), on a canvas large enough for any turn, black where nothing maps.
fn rotated(img: &GrayImage, angle: f64) -> GrayImage {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let side = w.hypot(h).ceil() as u32;
    let (c, s) = (angle.cos(), angle.sin());
    let (cx, cy) = ((w - 1.0) / 2.0, (h - 1.0) / 2.0);
    let centre = (side as f64 - 1.0) / 2.0;
    GrayImage::from_fn(side, side, |u, v| {
        let (du, dv) = (u as f64 - centre, v as f64 - centre);
        let (x, y) = (c * du - s * dv + cx, s * du + c * dv + cy);
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let at = |xi: f64, yi: f64| -> f64 {
            if xi < 0.0 || yi < 0.0 || xi >= w || yi >= h {
                0.0
            } else {
                img.get_pixel(xi as u32, yi as u32).0[0] as f64
            }
        };
        let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1.0, y0) * fx;
        let bottom = at(x0, y0 + 1.0) * (1.0 - fx) + at(x0 + 1.0, y0 + 1.0) * fx;
        image::Luma([(top * (1.0 - fy) + bottom * fy).round() as u8])
    })
}

/// The bounding box of the pixels that are not black.
fn lit_bounds(img: &GrayImage) -> Option<(u32, u32, u32, u32)> {
    foreground_box(img, -FOREGROUND_CONTRAST)
}

/// The plain path alone, for plain backgrounds (and for comparing with [`preprocess`]):
/// grayscale, inverted when the background is light, cropped to what differs from the
/// background, scaled, centred and level-stretched.
pub fn preprocess_plain(img: &DynamicImage) -> Vec<u8> {
    let mut gray = to_gray(img);
    let mut background = border_mean(&gray);
    if background > 127.0 {
        image::imageops::invert(&mut gray);
        background = 255.0 - background;
    }
    let black = border_low_quartile(&gray);
    // Margins around the object would shrink it below the size the model learned.
    if let Some((x, y, w, h)) = foreground_box(&gray, background) {
        gray = image::imageops::crop_imm(&gray, x, y, w, h).to_image();
    }
    fit_and_centre(&gray, black, FOREGROUND_CONTRAST)
}

/// Scales `gray` so its longest side is 28 pixels, stretches its levels from `black`
/// (where it has more than `min_contrast` above it), and centres it on a black 28×28
/// canvas.
fn fit_and_centre(gray: &GrayImage, black: f64, min_contrast: f64) -> Vec<u8> {
    let (w, h) = gray.dimensions();
    let scale = SIDE as f64 / w.max(h) as f64;
    let nw = ((w as f64 * scale).round() as u32).clamp(1, SIDE as u32);
    let nh = ((h as f64 * scale).round() as u32).clamp(1, SIDE as u32);
    let mut small = image::imageops::resize(gray, nw, nh, FilterType::Lanczos3);
    stretch_levels(&mut small, black, min_contrast);
    let mut canvas = GrayImage::new(SIDE as u32, SIDE as u32);
    // An odd leftover pixel goes before the object, as in the dataset (a 15-pixel-tall
    // boot occupies rows 7–21).
    let (left, top) = (
        (SIDE as u32 - nw).div_ceil(2),
        (SIDE as u32 - nh).div_ceil(2),
    );
    image::imageops::overlay(&mut canvas, &small, left.into(), top.into());
    let out = canvas.into_raw();
    debug_assert_eq!(out.len(), PIXELS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgba, RgbaImage};

    /// A dark rectangle (the "garment") on a white 200×100 photo.
    fn photo() -> DynamicImage {
        let mut img = GrayImage::from_pixel(200, 100, Luma([255]));
        for y in 20..80 {
            for x in 80..120 {
                img.put_pixel(x, y, Luma([30]));
            }
        }
        DynamicImage::ImageLuma8(img)
    }

    #[test]
    fn light_backgrounds_are_inverted_cropped_and_aspect_kept() {
        let px = preprocess(&photo());
        assert_eq!(px.len(), PIXELS);
        let at = |x: usize, y: usize| px[y * SIDE + x];
        // The 40×60 garment is cut out of the 200×100 photo and scaled to 19×28, centred:
        // light (inverted) from top to bottom, black padding left and right.
        assert!(
            at(14, 0) > 200 && at(14, 27) > 200 && at(14, 14) > 200,
            "{}",
            at(14, 0)
        );
        assert_eq!(at(1, 14), 0);
        assert_eq!(at(26, 14), 0);
    }

    #[test]
    fn margins_do_not_change_the_input() {
        // The same object with and without a wide margin gives the same 28×28 input.
        let mut tight = GrayImage::from_pixel(40, 60, Luma([255]));
        for y in 5..55 {
            for x in 10..30 {
                tight.put_pixel(x, y, Luma([30]));
            }
        }
        let mut wide = GrayImage::from_pixel(400, 300, Luma([255]));
        image::imageops::overlay(&mut wide, &tight, 37, 150);
        let (a, b) = (
            preprocess(&DynamicImage::ImageLuma8(tight)),
            preprocess(&DynamicImage::ImageLuma8(wide)),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn dark_backgrounds_stay_and_transparency_counts_as_white() {
        // A light 4×16 bar on black: not inverted, cropped and scaled to 7×28.
        let mut dark = GrayImage::new(28, 28);
        for y in 6..22 {
            for x in 10..14 {
                dark.put_pixel(x, y, Luma([200]));
            }
        }
        let px = preprocess(&DynamicImage::ImageLuma8(dark));
        assert!(px[14 * SIDE + 14] > 150, "{}", px[14 * SIDE + 14]);
        assert_eq!(px[14 * SIDE + 1], 0);
        // A black 16×36 shape on a fully transparent (black, alpha 0) background: the
        // background counts as white, so the shape ends up light on black.
        let mut rgba = RgbaImage::from_pixel(56, 56, Rgba([0, 0, 0, 0]));
        for y in 10..46 {
            for x in 20..36 {
                rgba.put_pixel(x, y, Rgba([0, 0, 0, 255]));
            }
        }
        let px = preprocess(&DynamicImage::ImageRgba8(rgba));
        assert_eq!(px[14 * SIDE], 0);
        assert!(px[14 * SIDE + 14] > 240);
    }

    /// A dark 60×90 ellipse centred in a 160×120 photo whose background is `floor`.
    fn ellipse_on(floor: impl Fn(u32, u32) -> [u8; 3]) -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(160, 120, |x, y| {
            let (dx, dy) = ((x as f32 - 80.0) / 30.0, (y as f32 - 60.0) / 45.0);
            image::Rgb(if dx * dx + dy * dy <= 1.0 {
                [40, 45, 60]
            } else {
                floor(x, y)
            })
        }))
    }

    fn mean_difference(a: &[u8], b: &[u8]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y as f64).abs())
            .sum::<f64>()
            / a.len() as f64
    }

    /// The width and height of the lit pixels of a 28×28 input.
    fn lit_size(px: &[u8]) -> (u32, u32) {
        let img = GrayImage::from_raw(SIDE as u32, SIDE as u32, px.to_vec()).unwrap();
        lit_bounds(&img).map_or((0, 0), |(_, _, w, h)| (w, h))
    }

    /// A dark `w`×`h` rectangle centred in a 200×160 photo on a checked floor.
    fn rectangle_on_checks(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(200, 160, |x, y| {
            let inside = x.abs_diff(100) < w / 2 && y.abs_diff(80) < h / 2;
            image::Rgb(if inside {
                [40, 45, 60]
            } else if ((x / 10) + (y / 10)).is_multiple_of(2) {
                [200, 190, 170]
            } else {
                [160, 150, 130]
            })
        }))
    }

    #[test]
    fn a_photo_of_a_wide_object_also_gets_the_aspect_of_the_datasets_tops() {
        // 120×80 (3:2): the input keeps that; the narrow views are the tops' median 3:4
        // (21×28), then their quartiles (20×28 and 23×28).
        let wide = prepare(&rectangle_on_checks(120, 80));
        assert!(!wide.pair);
        let (w, h) = lit_size(&wide.pixels);
        assert!((27..=28).contains(&w) && (18..=19).contains(&h), "{w}×{h}");
        assert_eq!(wide.narrow.len(), 3);
        for (narrow, want) in wide.narrow.iter().zip([21, 20, 23]) {
            let (w, h) = lit_size(narrow);
            assert!(w.abs_diff(want) <= 1 && (27..=28).contains(&h), "{w}×{h}");
        }
        assert_eq!(wide.seen(View::Narrow), &wide.narrow[0][..]);
        assert_eq!(wide.renderings(View::Narrow).len(), 3);
        assert_eq!(wide.seen(View::Whole), &wide.pixels[..]);
        // 60×100 is narrower than 3:4 already: no second view.
        let tall = prepare(&rectangle_on_checks(60, 100));
        assert!(tall.narrow.is_empty());
        assert_eq!(tall.seen(View::Narrow), &tall.pixels[..]);
        // A product shot (plain background) is made as the dataset was: one view.
        let mut shot = GrayImage::from_pixel(200, 160, Luma([250]));
        for y in 40..120 {
            for x in 40..160 {
                shot.put_pixel(x, y, Luma([40]));
            }
        }
        assert!(prepare(&DynamicImage::ImageLuma8(shot)).narrow.is_empty());
    }

    #[test]
    fn an_object_is_squeezed_to_each_aspect_of_the_tops_it_is_wider_than() {
        let widths = |w: u32| -> Vec<(u32, u32)> {
            narrowed(&GrayImage::from_pixel(w, 280, Luma([200])))
                .iter()
                .map(GrayImage::dimensions)
                .collect()
        };
        // The median's view first, then the quartiles' the object is wider than.
        assert_eq!(widths(300), [(210, 280), (200, 280), (230, 280)]);
        assert_eq!(widths(220), [(210, 280), (200, 280)]);
        // No wider than the median: the object is as narrow as the tops already.
        assert!(widths(210).is_empty());
        assert!(widths(150).is_empty());
    }

    #[test]
    fn an_object_on_a_textured_floor_looks_as_it_does_on_white() {
        let on_white = preprocess(&ellipse_on(|_, _| [250, 250, 250]));
        // Stripes of two browns and a shadow across the left third.
        let floor = |x: u32, y: u32| {
            let c: [f32; 3] = if ((x + y / 3) / 9).is_multiple_of(2) {
                [170.0, 130.0, 95.0]
            } else {
                [140.0, 105.0, 75.0]
            };
            let shadow = if x < 55 { 0.7 } else { 1.0 };
            c.map(|v| (v * shadow) as u8)
        };
        let photo = ellipse_on(floor);
        let (segmented, plain) = (preprocess(&photo), preprocess_plain(&photo));
        let (near, far) = (
            mean_difference(&segmented, &on_white),
            mean_difference(&plain, &on_white),
        );
        assert!(
            near < 12.0 && near * 4.0 < far,
            "{near:.1} against {far:.1}"
        );
    }

    #[test]
    fn light_on_black_across_the_edge_is_not_inverted() {
        // An ellipse running off the left edge, so the border is not plain: light on
        // black (a dataset-style picture) and dark on white (a product shot) give one
        // input.
        let picture = |object: [u8; 3], surround: [u8; 3]| {
            DynamicImage::ImageRgb8(image::RgbImage::from_fn(160, 120, |x, y| {
                let (dx, dy) = ((x as f32 - 25.0) / 30.0, (y as f32 - 60.0) / 45.0);
                image::Rgb(if dx * dx + dy * dy <= 1.0 {
                    object
                } else {
                    surround
                })
            }))
        };
        let light = preprocess(&picture([215, 210, 195], [0, 0, 0]));
        let dark = preprocess(&picture([40, 45, 60], [255, 255, 255]));
        let d = mean_difference(&light, &dark);
        assert!(d < 8.0, "{d:.1}");
        assert!(light.iter().filter(|&&v| v > 128).count() > 200);
    }

    #[test]
    fn a_light_object_found_on_a_dark_grey_floor_is_stretched_to_white() {
        // A light 20×6 bar one pixel from the corner of a 134×40 image of grey 32 (the
        // case the property test found): the reduced work copy blends it into the border,
        // which is then not plain, so the bar is segmented, and inverted, as garments on
        // a floor are. Nearly black, it is still stretched to white.
        let mut img = GrayImage::from_pixel(134, 40, Luma([32]));
        for y in 1..7 {
            for x in 1..21 {
                img.put_pixel(x, y, Luma([231]));
            }
        }
        let img = DynamicImage::ImageLuma8(img);
        assert!(segment::segment(&segment::work_copy(&img)).is_some());
        let px = preprocess(&img);
        assert_eq!(px.iter().copied().max(), Some(255));
        // Scaled to 28×8 and centred: rows 10–17 lit, the rest black.
        assert!(px[14 * SIDE + 14] > 128 && px[3 * SIDE + 14] == 0);
    }

    #[test]
    fn a_dark_garment_on_a_plain_mid_tone_bedspread_is_segmented() {
        // A flat red bedspread (its border one grey level throughout, as a product
        // shot's is) with a dark 60×90 garment in the middle: the garment is darker
        // than the bedspread, not lighter, so contrast with a light background cannot
        // find it, and the segmentation does.
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(200, 150, |x, y| {
            let garment = (70..130).contains(&x) && (30..120).contains(&y);
            image::Rgb(if garment { [45, 45, 50] } else { [170, 60, 60] })
        }));
        let work = segment::work_copy(&img);
        assert!(!plain_border(&sorted_border(&work)));
        let input = prepare(&img);
        let lit = |x: usize, y: usize| input.pixels[y * SIDE + x];
        // 60×90 scaled to 19×28, centred, light on black.
        assert!(
            lit(14, 14) > 200 && lit(14, 1) > 200,
            "the garment is light"
        );
        assert_eq!((lit(2, 14), lit(25, 14)), (0, 0), "beside it is black");
    }

    #[test]
    fn images_of_the_models_size_take_the_plain_path() {
        // A dataset-like image whose light object touches three edges.
        let mut img = GrayImage::new(28, 28);
        for y in 3..28 {
            for x in 0..28 {
                img.put_pixel(x, y, Luma([120 + (x * 4) as u8]));
            }
        }
        let img = DynamicImage::ImageLuma8(img);
        assert_eq!(preprocess(&img), preprocess_plain(&img));
    }

    #[test]
    fn tiny_and_tall_images_fit() {
        for (w, h) in [(1, 1), (3, 500), (500, 3), (28, 28), (1000, 999)] {
            let img = DynamicImage::ImageLuma8(GrayImage::from_pixel(w, h, Luma([90])));
            assert_eq!(preprocess(&img).len(), PIXELS);
        }
    }
}
