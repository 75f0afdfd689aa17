//! Finding the garment in a photo: a GrabCut-style segmentation of a small copy. The
//! photo's border is taken as background; colour mixtures of the background and of the
//! object are fitted, a graph cut labels every pixel with the cheapest labelling that
//! also keeps neighbouring pixels of similar colour together, and the mixtures are
//! refitted to the labels a few times. A garment so large that it crosses the border
//! gives the border its colours too; when nothing is found, the cut starts again from
//! the middle of the photo. The mask is then cleaned: thin parts (hanger hooks,
//! strings) opened away, one piece kept (one shoe of a pair), holes filled.

mod flow;
mod gmm;
pub mod mask;

use image::{DynamicImage, RgbImage};

use self::gmm::{Colour, Mixture};
pub use self::mask::Mask;

/// The longest side of the copy that is segmented: enough for a garment's outline at
/// 28×28, small enough to cut in a few milliseconds.
pub const WORK_SIDE: u32 = 96;
/// Components of each colour mixture.
const COMPONENTS: usize = 5;
/// Refits of the mixtures to the cut's labels.
const ROUNDS: usize = 4;
/// Weight of keeping neighbours together against the colour costs (GrabCut's γ).
const SMOOTHNESS: f32 = 50.0;
/// Share of the border's pixels allowed to look less like the background than the
/// object's first pixels do (see [`segment`]).
const UNUSUAL_BORDER: f64 = 0.97;
/// The smallest share of the image those first pixels must make for there to be an
/// object.
const MIN_SEED: f64 = 0.005;
/// How much better, on average, the object's mixture must explain its pixels than the
/// background's (nats a pixel).
const MIN_GAIN: f64 = 1.0;
/// What labelling a pixel of a border colour object costs beyond its colour's cost
/// (nats).
const BORDER_LIKE_COST: f32 = 2.0;
/// Share of an object found from the middle of a photo whose colours must be less
/// usual in the border than the border's typical (median) colour.
const UNUSUAL_OBJECT: f64 = 0.75;
/// Costs are scaled to integers by this for the cut.
const COST_SCALE: f32 = 64.0;

/// The photo scaled down (by area averaging) so its longest side is at most
/// [`WORK_SIDE`], transparency composited over white.
pub fn work_copy(img: &DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let scale = (WORK_SIDE as f64 / w.max(h) as f64).min(1.0);
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
    );
    let small = image::imageops::thumbnail(img, nw, nh);
    RgbImage::from_fn(nw, nh, |x, y| {
        let [r, g, b, a] = small.get_pixel(x, y).0;
        let over = |c: u8| ((c as u32 * a as u32 + 255 * (255 - a as u32) + 127) / 255) as u8;
        image::Rgb([over(r), over(g), over(b)])
    })
}

/// The width of the border band taken as background, in pixels of the work copy.
fn band(w: u32, h: u32) -> u32 {
    (w.min(h) / 32).max(1)
}

/// What was found in a photo.
#[derive(Clone, Debug)]
pub struct Segmentation {
    /// The object's pixels in the work copy.
    pub mask: Mask,
    /// Whether it is one of a pair (of shoes, say): the mask was two alike pieces.
    pub pair: bool,
    /// When the object is not a pair but may be one whose two pieces touch along their
    /// length with the outline notched at one end only (heels or toes pressed
    /// together), the larger half ([`Mask::half_of_possible_pair`]). Trousers and a few
    /// garments have such a notch too, so only the model's reading of the half can
    /// confirm it.
    pub half: Option<Mask>,
}

/// The object in `img` (a work copy), or `None` when nothing stands out from the
/// border or the image is too small to segment.
pub fn segment(img: &RgbImage) -> Option<Segmentation> {
    let (w, h) = img.dimensions();
    if w < 8 || h < 8 {
        return None;
    }
    let photo = Photo::new(img)?;
    let mask = photo
        .seeded_by_border()
        .or_else(|| photo.seeded_by_middle())?;
    Some(
        match mask.one_of_pair().or_else(|| mask.half_of_touching_pair()) {
            Some(one) => Segmentation {
                mask: one,
                pair: true,
                half: None,
            },
            None => Segmentation {
                half: mask.half_of_possible_pair(),
                mask,
                pair: false,
            },
        },
    )
}

/// A work copy's colours, its border band, the band's colour mixture and the cut's
/// neighbour weights.
struct Photo {
    colours: Vec<Colour>,
    w: u32,
    h: u32,
    in_band: Vec<bool>,
    border: Mixture,
    smooth: Vec<[i32; 4]>,
}

impl Photo {
    /// `None` for an image without pixels.
    fn new(img: &RgbImage) -> Option<Self> {
        let (w, h) = img.dimensions();
        let b = band(w, h);
        let colours: Vec<Colour> = img.pixels().map(|p| p.0.map(|c| c as f32)).collect();
        let in_band: Vec<bool> = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                x < b || y < b || x + b >= w || y + b >= h
            })
            .collect();
        let band_colours: Vec<Colour> = colours
            .iter()
            .zip(&in_band)
            .filter(|(_, b)| **b)
            .map(|(c, _)| *c)
            .collect();
        Some(Self {
            border: Mixture::fit(&band_colours, COMPONENTS)?,
            smooth: neighbour_weights(&colours, w, h),
            colours,
            w,
            h,
            in_band,
        })
    }

    /// The costs of the band's pixels under the band's mixture, sorted.
    fn band_costs(&self) -> Vec<f32> {
        let mut costs: Vec<f32> = (0..self.colours.len())
            .filter(|&i| self.in_band[i])
            .map(|i| self.border.cost(&self.colours[i]))
            .collect();
        costs.sort_by(f32::total_cmp);
        costs
    }

    /// The object seeded by what the border's colours explain worst, never learning
    /// the border's colours ([`segment`]).
    fn seeded_by_border(&self) -> Option<Mask> {
        let (colours, in_band) = (&self.colours, &self.in_band);
        let n = colours.len();
        // The object starts as what the border's colours explain worst: pixels less
        // likely under the background mixture than all but the least likely few of the
        // border's own. Starting from a rectangle instead lets the floor inside it seed
        // the object's mixture, and the cut then keeps that floor.
        let bg_costs: Vec<f32> = colours.iter().map(|c| self.border.cost(c)).collect();
        let border_costs = self.band_costs();
        let unusual = border_costs[(border_costs.len() as f64 * UNUSUAL_BORDER) as usize];
        let fg: Vec<bool> = (0..n)
            .map(|i| !in_band[i] && bg_costs[i] > unusual)
            .collect();
        // Colours the border has are background unless the object's mixture is clearly
        // better at them, and the object's mixture is never fitted to them: otherwise
        // its spare components learn patches of floor next to the object, and the cut
        // keeps them. Such parts of the object join it by the smoothness of the cut or
        // as holes.
        let border_like: Vec<bool> = bg_costs.iter().map(|&c| c <= unusual).collect();
        self.grab_cut(fg, &border_like)
    }

    /// The object seeded by the middle of the photo (a quarter of its area), learning
    /// any colour: for a garment so large that it crosses the border, whose colours the
    /// border then has too.
    fn seeded_by_middle(&self) -> Option<Mask> {
        let (w, h) = (self.w, self.h);
        let n = self.colours.len();
        let fg: Vec<bool> = (0..n as u32)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                (w / 4..w - w / 4).contains(&x) && (h / 4..h - h / 4).contains(&y)
            })
            .collect();
        let mask = self.grab_cut(fg, &vec![false; n])?;
        // What the middle gives must still be mostly colours less usual than the
        // border's own typical one: a floor seeded in its middle is floor.
        let band_costs = self.band_costs();
        let typical = band_costs[band_costs.len() / 2];
        let (unusual, area) = (0..n).filter(|&i| mask.on[i]).fold((0, 0), |(u, a), i| {
            (
                u + usize::from(self.border.cost(&self.colours[i]) > typical),
                a + 1,
            )
        });
        (unusual as f64 >= UNUSUAL_OBJECT * area as f64).then_some(mask)
    }

    /// Rounds of cuts and refits from the object's pixels `fg` and the band's mixture,
    /// `border_like` pixels paying more to be object and never taught to its mixture;
    /// the cleaned mask, if it looks unlike the background.
    fn grab_cut(&self, mut fg: Vec<bool>, border_like: &[bool]) -> Option<Mask> {
        let mut bg_model = self.border.clone();
        let (colours, n) = (&self.colours, self.colours.len());
        let seeded = fg.iter().filter(|&&f| f).count();
        if (seeded as f64) < MIN_SEED * n as f64 {
            return None;
        }
        let fg_seed: Vec<Colour> = (0..n).filter(|&i| fg[i]).map(|i| colours[i]).collect();
        let mut fg_model = Mixture::fit(&fg_seed, COMPONENTS)?;
        for round in 0..ROUNDS {
            if round > 0 {
                let bg_now: Vec<Colour> = (0..n).filter(|&i| !fg[i]).map(|i| colours[i]).collect();
                let fg_now: Vec<Colour> = (0..n)
                    .filter(|&i| fg[i] && !border_like[i])
                    .map(|i| colours[i])
                    .collect();
                bg_model = bg_model.refit(&bg_now)?;
                fg_model = fg_model.refit(&fg_now)?;
            }
            fg = cut(
                colours,
                self.w,
                &self.in_band,
                (&fg_model, &bg_model),
                &self.smooth,
                border_like,
            );
        }
        let mask = Mask::new(self.w, self.h, fg).cleaned()?;
        // An object must look unlike the background, not be a patch of it the cut chose.
        let (mut gain, mut count) = (0f64, 0usize);
        for (c, _) in colours.iter().zip(&mask.on).filter(|(_, on)| **on) {
            gain += (bg_model.cost(c) - fg_model.cost(c)) as f64;
            count += 1;
        }
        (gain >= MIN_GAIN * count as f64).then_some(mask)
    }
}

/// Weights of the edges to the right, below, below-right and below-left of each pixel:
/// high between similar colours, falling with their distance scaled by its mean over
/// the image (GrabCut's β), diagonals weighted down by their length.
fn neighbour_weights(colours: &[Colour], w: u32, h: u32) -> Vec<[i32; 4]> {
    let (w, h) = (w as usize, h as usize);
    let d2 = |a: usize, b: usize| -> f32 {
        (0..3)
            .map(|i| (colours[a][i] - colours[b][i]).powi(2))
            .sum()
    };
    let offsets = |x: usize, y: usize| -> [Option<usize>; 4] {
        let i = y * w + x;
        [
            (x + 1 < w).then(|| i + 1),
            (y + 1 < h).then(|| i + w),
            (x + 1 < w && y + 1 < h).then(|| i + w + 1),
            (x > 0 && y + 1 < h).then(|| i + w - 1),
        ]
    };
    let (mut sum, mut n) = (0f64, 0usize);
    for y in 0..h {
        for x in 0..w {
            for j in offsets(x, y).into_iter().flatten() {
                sum += d2(y * w + x, j) as f64;
                n += 1;
            }
        }
    }
    let beta = if sum > 0.0 {
        (n as f64 / (2.0 * sum)) as f32
    } else {
        0.0
    };
    let mut out = vec![[0i32; 4]; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            for (k, j) in offsets(x, y).into_iter().enumerate() {
                if let Some(j) = j {
                    let length = if k < 2 { 1.0 } else { std::f32::consts::SQRT_2 };
                    out[i][k] =
                        (SMOOTHNESS / length * (-beta * d2(i, j)).exp() * COST_SCALE) as i32;
                }
            }
        }
    }
    out
}

/// One graph cut of an image `w` pixels wide: each pixel pays its cost under the mixture
/// of the side it is put on, each pair of neighbours split between the sides pays their
/// edge's weight, and the border band (`in_band`) is background; `border_like` pixels
/// pay [`BORDER_LIKE_COST`] more to be object. Returns the object's pixels.
fn cut(
    colours: &[Colour],
    w: u32,
    in_band: &[bool],
    (fg, bg): (&Mixture, &Mixture),
    smooth: &[[i32; 4]],
    border_like: &[bool],
) -> Vec<bool> {
    let n = colours.len();
    let mut net = flow::Network::new(n, 4 * n);
    let wu = w as usize;
    for (i, c) in colours.iter().enumerate() {
        // Source side = object: a pixel pays its background cost when cut from the
        // source, its object cost when cut from the sink; the band is background.
        if in_band[i] {
            net.terminals(i, 0, i64::from(i32::MAX));
        } else {
            let (mut f, b) = (fg.cost(c), bg.cost(c));
            if border_like[i] {
                f += BORDER_LIKE_COST;
            }
            let scaled = |v: f32| (v * COST_SCALE).min(1e9) as i64;
            net.terminals(i, scaled(b), scaled(f));
        }
        let offsets = [1, wu, wu + 1, wu.wrapping_sub(1)];
        for (k, &wt) in smooth[i].iter().enumerate() {
            if wt > 0 {
                net.edge(i, i.wrapping_add(offsets[k]), wt, wt);
            }
        }
    }
    net.min_cut()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A tiled floor: 24-pixel tiles of two beiges with dark grout, lit unevenly, the
    /// tiles 7 pixels off the edges (a photo's border is rarely all grout).
    fn floor(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let shade = 0.75 + 0.25 * x as f32 / w as f32;
            let (x, y) = (x + 7, y + 7);
            let base: [f32; 3] = if (x / 24 + y / 24) % 2 == 0 {
                [190.0, 178.0, 160.0]
            } else {
                [160.0, 150.0, 128.0]
            };
            let grout = x % 24 < 2 || y % 24 < 2;
            Rgb(base.map(|c| ((if grout { c * 0.45 } else { c }) * shade) as u8))
        })
    }

    fn inside_ellipse(x: u32, y: u32, (cx, cy, rx, ry): (f32, f32, f32, f32)) -> bool {
        let (dx, dy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
        dx * dx + dy * dy <= 1.0
    }

    /// Intersection over union of the mask with the ellipse `e` (in work-copy pixels).
    fn iou(mask: &Mask, e: (f32, f32, f32, f32)) -> f64 {
        let (mut both, mut either) = (0, 0);
        for y in 0..mask.h {
            for x in 0..mask.w {
                let (m, t) = (mask.on[(y * mask.w + x) as usize], inside_ellipse(x, y, e));
                both += usize::from(m && t);
                either += usize::from(m || t);
            }
        }
        both as f64 / either as f64
    }

    /// An ellipse: centre x, centre y, radius along x, radius along y.
    type Ellipse = (f32, f32, f32, f32);

    fn with_ellipses(mut img: RgbImage, ellipses: &[(Ellipse, [u8; 3])]) -> RgbImage {
        for (x, y, p) in img.enumerate_pixels_mut() {
            for (e, colour) in ellipses {
                if inside_ellipse(x, y, *e) {
                    *p = Rgb(*colour);
                }
            }
        }
        img
    }

    #[test]
    fn a_garment_is_cut_out_of_a_tiled_floor() {
        // 192×144 scales to the 96×72 work copy: the ellipse halves with it.
        let photo = with_ellipses(
            floor(192, 144),
            &[((96.0, 72.0, 40.0, 52.0), [40, 60, 150])],
        );
        let work = work_copy(&DynamicImage::ImageRgb8(photo));
        assert_eq!(work.dimensions(), (96, 72));
        let mask = segment(&work).expect("an object").mask;
        let score = iou(&mask, (47.75, 35.75, 20.0, 26.0));
        assert!(score > 0.85, "IoU {score:.3}");
    }

    #[test]
    fn a_garment_crossing_the_border_is_found_from_the_middle() {
        // A checked garment on a bedspread, running off the left and bottom edges (a
        // third of the border is garment): the border's mixture learns its colours, so
        // nothing in the photo looks unusual to it, and the middle seeds the object.
        let photo = RgbImage::from_fn(96, 72, |x, y| {
            let garment = inside_ellipse(x, y, (30.0, 50.0, 50.0, 40.0));
            let check = (x / 6 + y / 6) % 2 == 0;
            Rgb(match (garment, check) {
                (true, true) => [240, 240, 235],
                (true, false) => [25, 25, 30],
                (false, _) => [200, 60, 55 + (x % 3) as u8],
            })
        });
        assert!(Photo::new(&photo).unwrap().seeded_by_border().is_none());
        let mask = segment(&photo).expect("an object").mask;
        // No bedspread in it, and all of the garment but a margin along the edges it
        // runs off (the band is background, and the cut keeps the checks near it out).
        let garment = (30.0, 50.0, 50.0, 40.0);
        let (mut on, mut off, mut inner, mut missed) = (0, 0, 0, 0);
        for y in 0..72u32 {
            for x in 0..96u32 {
                let (m, g) = (
                    mask.on[(y * 96 + x) as usize],
                    inside_ellipse(x, y, garment),
                );
                on += usize::from(m);
                off += usize::from(m && !g);
                if g && x >= 12 && y + 12 < 72 {
                    inner += 1;
                    missed += usize::from(!m);
                }
            }
        }
        assert!(off * 50 < on, "{off} of {on} pixels are bedspread");
        assert!(
            missed * 10 < inner,
            "{missed} of {inner} inner pixels missed"
        );
        // A photo of bedspread alone still has no object.
        let bare = RgbImage::from_fn(96, 72, |x, _| Rgb([200, 60, 55 + (x % 3) as u8]));
        assert!(segment(&bare).is_none());
    }

    #[test]
    fn one_of_a_pair_is_kept_and_a_hanger_hook_is_dropped() {
        let mut photo = with_ellipses(
            floor(96, 72),
            &[
                ((30.0, 38.0, 12.0, 22.0), [30, 30, 35]),
                ((66.0, 36.0, 14.0, 25.0), [30, 30, 35]),
            ],
        );
        // A one-pixel wire from the top edge to the bigger shoe.
        for y in 0..12 {
            photo.put_pixel(66, y, Rgb([30, 30, 35]));
        }
        let found = segment(&photo).expect("an object");
        assert!(
            !found.pair,
            "the shoes do not touch: the smaller is dropped, not split off"
        );
        let mask = found.mask;
        let (x, y, w, h) = mask.bounds().unwrap();
        assert!(x >= 50 && x + w <= 82, "{x}+{w}: only the right-hand shoe");
        assert!(y >= 9, "the wire is gone: top {y}, height {h}");
        assert!(iou(&mask, (66.0, 36.0, 14.0, 25.0)) > 0.8);
    }

    #[test]
    fn a_pair_touching_along_its_length_is_cut_in_two() {
        // Two shoes seen from above, toes up, side by side and overlapping a little: one
        // blob, notched between the toes and between the heels.
        let photo = with_ellipses(
            floor(96, 72),
            &[
                ((38.0, 36.0, 10.0, 27.0), [30, 30, 35]),
                ((57.0, 36.0, 10.0, 27.0), [30, 30, 35]),
            ],
        );
        let found = segment(&photo).expect("an object");
        assert!(found.pair);
        let (x, _, w, h) = found.mask.bounds().unwrap();
        assert!(
            w * 2 < h && (x + w <= 49 || x >= 46),
            "one shoe: {x}+{w}, {h} tall"
        );
        // One wide ellipse of the pair's outline has no notches: one object.
        let one = with_ellipses(floor(96, 72), &[((48.0, 36.0, 20.0, 27.0), [30, 30, 35])]);
        assert!(!segment(&one).expect("an object").pair);
    }

    #[test]
    fn plain_or_tiny_images_give_no_mask() {
        assert!(segment(&floor(96, 72)).is_none(), "nothing but floor");
        assert!(segment(&RgbImage::from_pixel(5, 40, Rgb([9, 9, 9]))).is_none());
    }
}
