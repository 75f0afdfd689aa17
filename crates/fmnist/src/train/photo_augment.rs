//! What photographing a garment and cutting it out again does to a Fashion-MNIST image,
//! applied to training images so a model learns to read `predict`'s inputs from phone
//! photos: a tilted, foreshortened view (rotation, anisotropic scale, shear, keystone),
//! light that falls off across the garment and a different exposure (gradient, gamma),
//! folds and cloth texture (smooth multiplicative noise), printed or woven patterns
//! (stripes and checks, which the dataset's product shots rarely show), a dark garment
//! whose detail the exposure lost (flattened shading), an imperfect mask (background
//! leaking in at one side, a bite taken out of the edge), the softness of a small photo
//! (blur) and sensor noise. A shoe is sometimes shown with its pair, from the side or
//! from above, as phone photos show footwear and as `predict` renders a pair it cannot
//! part. The result is re-cropped, scaled and level-stretched exactly as
//! `predict::preprocess` renders a photo. JPEG artefacts are left out: at the 28-pixel
//! scale a phone photo is reduced to, they average away.
//!
//! Every draw comes from the caller's [`Rng`] in a fixed order.

use nn::Rng;

use crate::data::{PIXELS, SIDE};

const S: usize = SIDE;
/// Largest rotation, in radians (±20°).
const ROTATION: f32 = 0.35;
/// Largest keystone, as a share of the side: a phone held at an angle shows the near
/// end of a garment up to (1 + 0.15) / (1 − 0.15) ≈ 1.35 times as large as the far one.
const PERSPECTIVE: f32 = 0.3;
/// Largest shear.
const SHEAR: f32 = 0.15;
/// Range of the overall scale, and of the extra scale along one axis.
const SCALE: (f32, f32) = (0.8, 1.1);
const ASPECT: f32 = 0.12;
/// Largest light fall-off across the image (fraction of the brightness).
const GRADIENT: f32 = 0.5;
/// Largest |ln γ| of the exposure change.
const GAMMA: f32 = 0.5;
/// Largest amplitude of the cloth-texture noise.
const TEXTURE: f32 = 0.35;
/// Largest sensor-noise standard deviation, in levels.
const NOISE: f32 = 10.0;
/// How often a garment gets a printed pattern, and the pattern's period (pixels at the
/// 28-pixel scale) and largest depth.
const PATTERN: (f32, f32, f32, f32) = (0.3, 1.5, 6.0, 0.7);
/// How often a garment's shading is flattened, and the least contrast kept.
const FLATTEN: (f32, f32) = (0.25, 0.15);

/// How often a photographed image of a class that comes in pairs shows the pair.
const PAIR: f32 = 0.3;

/// Writes a photographed copy of the 28×28 image `src` into `dst`; one of a class that
/// comes in pairs (`paired`) is sometimes shown with its pair ([`pair`]).
pub fn photograph(src: &[u8], paired: bool, dst: &mut [u8], rng: &mut Rng) {
    assert!(src.len() == PIXELS && dst.len() == PIXELS);
    let mut img: Vec<f32> = src.iter().map(|&p| p as f32 / 255.0).collect();
    if paired && rng.uniform() < PAIR {
        img = pair(&img, rng);
    }
    let mut out = warp(&img, rng);
    light(&mut out, rng);
    texture(&mut out, rng);
    if rng.uniform() < PATTERN.0 {
        pattern(&mut out, rng);
    }
    if rng.uniform() < FLATTEN.0 {
        flatten(&mut out, rng.uniform_range(FLATTEN.1, 1.0));
    }
    if rng.uniform() < 0.5 {
        leak(&mut out, rng);
    }
    if rng.uniform() < 0.3 {
        bite(&mut out, rng);
    }
    if rng.uniform() < 0.3 {
        blur(&mut out, rng.uniform_range(0.3, 0.7));
    }
    let sigma = rng.uniform_range(0.0, NOISE) / 255.0;
    for v in out.iter_mut().filter(|v| **v > 0.0) {
        *v = (*v + sigma * rng.normal()).max(0.0);
    }
    refit(&out, dst);
}

/// Bilinear sample of `img` at `(x, y)`, black outside.
fn sample(img: &[f32], x: f32, y: f32) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |xi: f32, yi: f32| -> f32 {
        if xi < 0.0 || yi < 0.0 || xi >= S as f32 || yi >= S as f32 {
            0.0
        } else {
            img[yi as usize * S + xi as usize]
        }
    };
    let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1.0, y0) * fx;
    let bottom = at(x0, y0 + 1.0) * (1.0 - fx) + at(x0 + 1.0, y0 + 1.0) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// The shoe `img` shown with its pair ([`Pairing`]), as phone photos show footwear and
/// as `predict` renders a pair it cannot part.
fn pair(img: &[f32], rng: &mut Rng) -> Vec<f32> {
    Pairing::draw(rng).compose(img)
}

/// How the two shoes of a pair lie in a photo.
#[derive(Clone, Copy, Debug)]
struct Pairing {
    /// Seen from above: both turned a quarter turn (`turn`, +1 or −1: toes up or down),
    /// side by side, the second mirrored (a left and a right shoe). Otherwise seen from
    /// the side as the dataset shows one shoe, the far one partly hidden behind the near.
    above: bool,
    turn: f32,
    /// Where the second shoe's centre lies from the first's, as a share of one shoe's
    /// width and height as placed.
    gap: (f32, f32),
}

impl Pairing {
    /// A random pairing: from above, the second shoe touches the first or nearly, a
    /// little ahead or behind; from the side, the far one is higher and to either side.
    fn draw(rng: &mut Rng) -> Self {
        let above = rng.uniform() < 0.5;
        let turn = if rng.uniform() < 0.5 { 1.0 } else { -1.0 };
        let gap = if above {
            (rng.uniform_range(0.8, 1.05), rng.uniform_range(-0.15, 0.15))
        } else {
            (rng.uniform_range(-0.25, 0.25), -rng.uniform_range(0.3, 0.7))
        };
        Self { above, turn, gap }
    }

    /// The pair made of the shoe `img`, scaled down to fit the frame and centred.
    fn compose(&self, img: &[f32]) -> Vec<f32> {
        let Some((x0, y0, x1, y1)) = lit_bounds(img) else {
            return img.to_vec();
        };
        let (w, h) = ((x1 - x0 + 1) as f32, (y1 - y0 + 1) as f32);
        let middle = ((x0 + x1) as f32 / 2.0, (y0 + y1) as f32 / 2.0);
        let (sw, sh) = if self.above { (h, w) } else { (w, h) };
        let (gx, gy) = (self.gap.0 * sw, self.gap.1 * sh);
        let k = ((S as f32 - 2.0) / (sw + gx.abs()).max(sh + gy.abs())).min(1.0);
        let centre = (S as f32 - 1.0) / 2.0;
        let near = (centre - k * gx / 2.0, centre - k * gy / 2.0, false);
        let far = (centre + k * gx / 2.0, centre + k * gy / 2.0, self.above);
        // The source pixel under (x, y) of a shoe centred at (px, py): the scale, the
        // mirror and the quarter turn undone.
        let seen = |x: f32, y: f32, (px, py, mirrored): (f32, f32, bool)| -> f32 {
            let (dx, dy) = ((x - px) / k, (y - py) / k);
            let dx = if mirrored { -dx } else { dx };
            let (u, v) = if self.above {
                (self.turn * dy, -self.turn * dx)
            } else {
                (dx, dy)
            };
            sample(img, u + middle.0, v + middle.1)
        };
        let mut out = vec![0.0; PIXELS];
        for y in 0..S {
            for x in 0..S {
                let (fx, fy) = (x as f32, y as f32);
                let front = seen(fx, fy, near);
                // The near shoe hides the far one wherever it is.
                out[y * S + x] = if front > DARK {
                    front
                } else {
                    front.max(seen(fx, fy, far))
                };
            }
        }
        out
    }
}

/// Below this level a pixel is background.
const DARK: f32 = 0.03;

/// The bounding box `(x0, y0, x1, y1)` of what in `img` is not black.
fn lit_bounds(img: &[f32]) -> Option<(usize, usize, usize, usize)> {
    let (mut x0, mut y0, mut x1, mut y1) = (S, S, 0, 0);
    for (i, &v) in img.iter().enumerate() {
        if v > DARK {
            let (x, y) = (i % S, i / S);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    (x0 <= x1).then_some((x0, y0, x1, y1))
}

/// A random view of `img` ([`Camera`]).
fn warp(img: &[f32], rng: &mut Rng) -> Vec<f32> {
    Camera::draw(rng).shoot(img)
}

/// How a phone saw the garment, about the image's centre: turned, scaled (more along
/// one axis), sheared, and with one end nearer the lens than the other (a keystone).
#[derive(Clone, Copy, Debug)]
struct Camera {
    /// The inverse of the turn, scale and shear: from where a pixel of the photo came.
    inv: [[f32; 2]; 2],
    /// The keystone along x and y, per pixel from the centre: a photo pixel at `d` from
    /// the centre shows the garment `1 + keystone · d` times as large.
    keystone: (f32, f32),
}

impl Camera {
    /// A random camera: a turn within ±[`ROTATION`], a scale in [`SCALE`] and
    /// ±[`ASPECT`] (log) more along one axis, a shear within ±[`SHEAR`] and keystones
    /// within ±[`PERSPECTIVE`].
    fn draw(rng: &mut Rng) -> Self {
        let angle = rng.uniform_range(-ROTATION, ROTATION);
        let scale = rng.uniform_range(SCALE.0, SCALE.1);
        let aspect = rng.uniform_range(-ASPECT, ASPECT).exp();
        let shear = rng.uniform_range(-SHEAR, SHEAR);
        let keystone = (
            rng.uniform_range(-PERSPECTIVE, PERSPECTIVE) / S as f32,
            rng.uniform_range(-PERSPECTIVE, PERSPECTIVE) / S as f32,
        );
        let (sx, sy) = (scale * aspect, scale / aspect);
        let (c, s) = (angle.cos(), angle.sin());
        // Forward map: p' = R · Shear · Scale · p; sampled through its inverse.
        let m = [
            [c * sx, (c * shear - s) * sy],
            [s * sx, (s * shear + c) * sy],
        ];
        let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
        let inv = [
            [m[1][1] / det, -m[0][1] / det],
            [-m[1][0] / det, m[0][0] / det],
        ];
        Self { inv, keystone }
    }

    /// The photo of `img` this camera takes.
    fn shoot(&self, img: &[f32]) -> Vec<f32> {
        let centre = (S as f32 - 1.0) / 2.0;
        let inv = self.inv;
        let mut out = vec![0.0; PIXELS];
        for y in 0..S {
            for x in 0..S {
                let (dx, dy) = (x as f32 - centre, y as f32 - centre);
                let near = 1.0 + self.keystone.0 * dx + self.keystone.1 * dy;
                let u = (inv[0][0] * dx + inv[0][1] * dy) / near + centre;
                let v = (inv[1][0] * dx + inv[1][1] * dy) / near + centre;
                out[y * S + x] = sample(img, u, v);
            }
        }
        out
    }
}

/// Light falling off along a random direction, and a random exposure (gamma).
fn light(img: &mut [f32], rng: &mut Rng) {
    let phi = rng.uniform_range(0.0, std::f32::consts::TAU);
    let g = rng.uniform_range(0.0, GRADIENT);
    let gamma = rng.uniform_range(-GAMMA, GAMMA).exp();
    let (c, s) = (phi.cos(), phi.sin());
    let half = S as f32 / 2.0;
    for y in 0..S {
        for x in 0..S {
            let t = ((x as f32 - half) * c + (y as f32 - half) * s) / (2.0 * half) + 0.5;
            let v = &mut img[y * S + x];
            *v = v.clamp(0.0, 1.0).powf(gamma) * (1.0 - g * t.clamp(0.0, 1.0));
        }
    }
}

/// Smooth multiplicative noise: folds, creases and the weave of real cloth.
fn texture(img: &mut [f32], rng: &mut Rng) {
    let amp = rng.uniform_range(0.0, TEXTURE);
    // A coarse 8×8 grid of random values, upsampled bilinearly.
    const G: usize = 8;
    let grid: Vec<f32> = (0..G * G).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
    let step = (G - 1) as f32 / (S - 1) as f32;
    for y in 0..S {
        for x in 0..S {
            let (gx, gy) = (x as f32 * step, y as f32 * step);
            let (x0, y0) = (gx.floor() as usize, gy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(G - 1), (y0 + 1).min(G - 1));
            let (fx, fy) = (gx - x0 as f32, gy - y0 as f32);
            let n = (grid[y0 * G + x0] * (1.0 - fx) + grid[y0 * G + x1] * fx) * (1.0 - fy)
                + (grid[y1 * G + x0] * (1.0 - fx) + grid[y1 * G + x1] * fx) * fy;
            img[y * S + x] *= 1.0 + amp * n;
        }
    }
}

/// A print or weave: stripes along a random direction, or checks (stripes both ways),
/// darkening the garment periodically.
fn pattern(img: &mut [f32], rng: &mut Rng) {
    let phi = rng.uniform_range(0.0, std::f32::consts::PI);
    let period = rng.uniform_range(PATTERN.1, PATTERN.2);
    let depth = rng.uniform_range(0.2, PATTERN.3);
    let checks = rng.uniform() < 0.3;
    let phase = rng.uniform_range(0.0, std::f32::consts::TAU);
    let (c, s) = (phi.cos(), phi.sin());
    let k = std::f32::consts::TAU / period;
    let wave = |t: f32| 0.5 + 0.5 * (k * t + phase).sin();
    for y in 0..S {
        for x in 0..S {
            let (xf, yf) = (x as f32, y as f32);
            let mut w = wave(xf * c + yf * s);
            if checks {
                w = w.max(wave(-xf * s + yf * c));
            }
            img[y * S + x] *= 1.0 - depth * w;
        }
    }
}

/// Shading flattened towards the garment's mean level, keeping `keep` of its contrast:
/// a dark garment whose folds the exposure lost, or a plain one in flat light.
fn flatten(img: &mut [f32], keep: f32) {
    let on: Vec<f32> = img.iter().copied().filter(|&v| v > 0.02).collect();
    if on.is_empty() {
        return;
    }
    let mean = on.iter().sum::<f32>() / on.len() as f32;
    for v in img.iter_mut().filter(|v| **v > 0.02) {
        *v = mean + (*v - mean) * keep;
    }
}

/// Background kept at one side of the object, as a segmentation that cut too wide
/// leaves it: a band of dim, noisy pixels next to the object's edge.
fn leak(img: &mut [f32], rng: &mut Rng) {
    let phi = rng.uniform_range(0.0, std::f32::consts::TAU);
    let (c, s) = (phi.cos(), phi.sin());
    let width = 1 + rng.below(2) as isize;
    let level = rng.uniform_range(0.05, 0.35);
    let on: Vec<bool> = img.iter().map(|&v| v > 0.02).collect();
    let half = S as f32 / 2.0;
    for y in 0..S as isize {
        for x in 0..S as isize {
            let i = y as usize * S + x as usize;
            if on[i] || (x as f32 - half) * c + (y as f32 - half) * s < 0.0 {
                continue;
            }
            let near = (-width..=width).any(|dy| {
                (-width..=width).any(|dx| {
                    let (nx, ny) = (x + dx, y + dy);
                    nx >= 0
                        && ny >= 0
                        && nx < S as isize
                        && ny < S as isize
                        && on[ny as usize * S + nx as usize]
                })
            });
            if near {
                img[i] = level * rng.uniform_range(0.5, 1.5);
            }
        }
    }
}

/// A round piece of the object cut away at its edge, as a segmentation that cut too
/// tight leaves it.
fn bite(img: &mut [f32], rng: &mut Rng) {
    let edge: Vec<usize> = (0..PIXELS)
        .filter(|&i| {
            let (x, y) = (i % S, i / S);
            img[i] > 0.02
                && (x == 0
                    || y == 0
                    || x + 1 == S
                    || y + 1 == S
                    || img[i - 1] <= 0.02
                    || img[i + 1] <= 0.02
                    || img[i - S] <= 0.02
                    || img[i + S] <= 0.02)
        })
        .collect();
    if edge.is_empty() {
        return;
    }
    let centre = edge[rng.below(edge.len())];
    let (cx, cy) = ((centre % S) as f32, (centre / S) as f32);
    let r = rng.uniform_range(1.5, 4.0);
    for (i, v) in img.iter_mut().enumerate() {
        let (dx, dy) = ((i % S) as f32 - cx, (i / S) as f32 - cy);
        if dx * dx + dy * dy <= r * r {
            *v = 0.0;
        }
    }
}

/// A separable Gaussian blur of standard deviation `sigma` pixels (radius 2).
fn blur(img: &mut [f32], sigma: f32) {
    let k: Vec<f32> = (-2i32..=2)
        .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| v / total).collect();
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        (0..PIXELS)
            .map(|i| {
                let (x, y) = ((i % S) as isize, (i / S) as isize);
                (-2isize..=2)
                    .map(|d| {
                        let (nx, ny) = if horizontal { (x + d, y) } else { (x, y + d) };
                        if nx < 0 || ny < 0 || nx >= S as isize || ny >= S as isize {
                            0.0
                        } else {
                            src[ny as usize * S + nx as usize] * k[(d + 2) as usize]
                        }
                    })
                    .sum()
            })
            .collect()
    };
    let rows = pass(img, true);
    img.copy_from_slice(&pass(&rows, false));
}

/// Crops `img` to what is not black, scales its longest side to 28 pixels, centres it
/// and stretches its levels to 0–255: what `predict::preprocess` does to a photo.
fn refit(img: &[f32], dst: &mut [u8]) {
    let Some((x0, y0, x1, y1)) = lit_bounds(img) else {
        dst.fill(0);
        return;
    };
    let (w, h) = ((x1 - x0 + 1) as f32, (y1 - y0 + 1) as f32);
    let scale = w.max(h) / S as f32;
    let (nw, nh) = (
        ((w / scale).round() as usize).clamp(1, S),
        ((h / scale).round() as usize).clamp(1, S),
    );
    let (left, top) = ((S - nw).div_ceil(2), (S - nh).div_ceil(2));
    let mut out = vec![0f32; PIXELS];
    for y in 0..nh {
        for x in 0..nw {
            // The centre of each output pixel, in source coordinates.
            let u = x0 as f32 + (x as f32 + 0.5) * scale - 0.5;
            let v = y0 as f32 + (y as f32 + 0.5) * scale - 0.5;
            out[(top + y) * S + left + x] = sample(img, u, v).max(0.0);
        }
    }
    let max = out.iter().copied().fold(0.0, f32::max);
    let k = if max > 0.0 { 255.0 / max } else { 0.0 };
    for (d, v) in dst.iter_mut().zip(&out) {
        *d = (v * k).round().clamp(0.0, 255.0) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 10×20 bright block, off centre.
    fn block() -> Vec<u8> {
        let mut img = vec![0u8; PIXELS];
        for y in 3..23 {
            for x in 2..12 {
                img[y * S + x] = 180;
            }
        }
        img
    }

    #[test]
    fn a_keystone_shows_the_near_end_larger_than_the_far_one() {
        // An upright 10-pixel-wide block, seen head on and with its bottom nearer.
        let src: Vec<f32> = block().iter().map(|&p| p as f32 / 255.0).collect();
        let straight = Camera {
            inv: [[1.0, 0.0], [0.0, 1.0]],
            keystone: (0.0, 0.0),
        };
        let tilted = Camera {
            keystone: (0.0, PERSPECTIVE / S as f32),
            ..straight
        };
        let width = |img: &[f32], y: usize| img[y * S..][..S].iter().filter(|&&v| v > 0.5).count();
        let flat = straight.shoot(&src);
        assert_eq!(flat, src);
        let near = tilted.shoot(&src);
        // Near its top (row 3 of the source) it shows narrower than its 10 pixels,
        // near its bottom (row 22) wider, and it reaches lower: the near end grew.
        let rows: Vec<usize> = (0..S).filter(|&y| width(&near, y) > 0).collect();
        let (top, bottom) = (rows[0], rows[rows.len() - 1]);
        assert!(top >= 3 && bottom > 22, "rows {top}..{bottom}");
        let (upper, lower) = (width(&near, top + 1), width(&near, bottom - 1));
        assert!(
            upper < 10 && lower > 10,
            "{upper} at the top, {lower} at the bottom"
        );
    }

    #[test]
    fn photographs_are_centred_fitted_stretched_and_reproducible() {
        let src = block();
        let mut rng = Rng::new(7);
        let mut a = vec![0u8; PIXELS];
        for _ in 0..50 {
            photograph(&src, false, &mut a, &mut rng);
            assert_eq!(*a.iter().max().unwrap(), 255);
            // Refitted: the object reaches two opposite edges and is centred.
            let rows: Vec<usize> = (0..S)
                .filter(|&y| a[y * S..][..S].iter().any(|&v| v > 8))
                .collect();
            let cols: Vec<usize> = (0..S)
                .filter(|&x| (0..S).any(|y| a[y * S + x] > 8))
                .collect();
            let (r0, r1, c0, c1) = (rows[0], rows[rows.len() - 1], cols[0], cols[cols.len() - 1]);
            assert!(r1 - r0 >= 24 || c1 - c0 >= 24, "{r0}..{r1} {c0}..{c1}");
            assert!(
                (r0 as isize - (S - 1 - r1) as isize).abs() <= 3,
                "{r0}..{r1}"
            );
            assert!(
                (c0 as isize - (S - 1 - c1) as isize).abs() <= 3,
                "{c0}..{c1}"
            );
        }
        let (mut b, mut c) = (vec![0u8; PIXELS], vec![0u8; PIXELS]);
        photograph(&src, false, &mut b, &mut Rng::new(3));
        photograph(&src, false, &mut c, &mut Rng::new(3));
        assert_eq!(b, c);
        photograph(&src, false, &mut c, &mut Rng::new(4));
        assert_ne!(b, c);
    }

    #[test]
    fn patterns_stripe_a_garment_and_flattening_evens_it() {
        let mut rng = Rng::new(5);
        for _ in 0..20 {
            let mut img = vec![0.8f32; PIXELS];
            pattern(&mut img, &mut rng);
            let (lo, hi) = img
                .iter()
                .fold((1.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
            // Periods of at most 6 pixels: every 28×28 image sees dark and light bands.
            assert!(hi <= 0.8 + 1e-6 && hi - lo > 0.8 * 0.15, "{lo}..{hi}");
        }
        let mut img: Vec<f32> = (0..PIXELS)
            .map(|i| {
                if i % 3 == 0 {
                    0.0
                } else {
                    (i % 7) as f32 / 7.0 + 0.1
                }
            })
            .collect();
        let before = img.clone();
        flatten(&mut img, 0.0);
        let on: Vec<f32> = img.iter().copied().filter(|&v| v > 0.02).collect();
        assert!(
            on.windows(2).all(|w| (w[0] - w[1]).abs() < 1e-6),
            "not flat"
        );
        for (a, b) in img.iter().zip(&before) {
            assert_eq!(*b == 0.0, *a == 0.0, "background changed");
        }
    }

    /// A shoe from the side, toe left: a 20×6 sole (0.8) and a dimmer 6×6 ankle (0.4) at
    /// the heel (right), in the middle of the frame.
    fn shoe() -> Vec<f32> {
        let mut img = vec![0f32; PIXELS];
        for y in 8..20 {
            for x in 4..24 {
                if y >= 14 {
                    img[y * S + x] = 0.8;
                } else if x >= 18 {
                    img[y * S + x] = 0.4;
                }
            }
        }
        img
    }

    /// The number of lit pixels of `img` and their bounding box's width and height.
    fn lit(img: &[f32]) -> (usize, usize, usize) {
        let (x0, y0, x1, y1) = lit_bounds(img).expect("something lit");
        let n = img.iter().filter(|&&v| v > DARK).count();
        (n, x1 - x0 + 1, y1 - y0 + 1)
    }

    #[test]
    fn a_pair_from_above_is_a_shoe_and_its_mirror_image_side_by_side() {
        for turn in [1.0, -1.0] {
            let pairing = Pairing {
                above: true,
                turn,
                gap: (1.0, 0.0),
            };
            let out = pairing.compose(&shoe());
            for y in 0..S {
                for x in 0..S {
                    let (a, b) = (out[y * S + x], out[y * S + S - 1 - x]);
                    assert!((a - b).abs() < 0.05, "({x}, {y}): {a} against {b}");
                }
            }
            // Each shoe (20×12 from the side) is turned to stand upright, 12×20.
            let left: Vec<f32> = (0..PIXELS)
                .map(|i| if i % S < S / 2 { out[i] } else { 0.0 })
                .collect();
            let (_, w, h) = lit(&left);
            assert!(w.abs_diff(12) <= 1 && h.abs_diff(20) <= 1, "{w}×{h}");
            // Side by side, touching: 24×20, which fits the frame unscaled.
            let (_, w, h) = lit(&out);
            assert!(w.abs_diff(24) <= 1 && h.abs_diff(20) <= 1, "{w}×{h}");
        }
    }

    #[test]
    fn a_pair_from_the_side_hides_part_of_the_far_shoe_behind_the_near() {
        let pairing = Pairing {
            above: false,
            turn: 1.0,
            gap: (0.0, -0.5),
        };
        let out = pairing.compose(&shoe());
        let (one, w1, h1) = lit(&shoe());
        let (two, w2, h2) = lit(&out);
        // Unscaled (the pair fits the frame): the far shoe rises half a shoe (6 rows)
        // above the near one, each 3 rows from the middle.
        assert_eq!(w2, w1);
        assert!(h2.abs_diff(h1 * 3 / 2) <= 1, "{h1} -> {h2}");
        assert!(two > one && two < 2 * one, "{one} -> {two}");
        // Where the near shoe's ankle covers the far one's sole, the ankle shows.
        let (near_ankle, far_sole) = (out[14 * S + 20], out[14 * S + 10]);
        assert!((near_ankle - 0.4).abs() < 0.01, "{near_ankle}");
        assert!((far_sole - 0.8).abs() < 0.01, "{far_sole}");
    }

    #[test]
    fn black_stays_black() {
        let mut out = vec![1u8; PIXELS];
        photograph(&[0u8; PIXELS], false, &mut out, &mut Rng::new(1));
        assert!(out.iter().all(|&v| v == 0));
    }
}
