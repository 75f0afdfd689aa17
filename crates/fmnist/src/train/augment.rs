//! Training-time data augmentation on raw 28×28 images: random translation (random crop
//! from a zero-padded image), horizontal flip and random erasing.
//!
//! Every draw comes from the caller's [`Rng`] in a fixed order, so a seed reproduces the
//! same augmented batches.

use nn::Rng;
use serde::{Deserialize, Serialize};

use crate::data::{PIXELS, SIDE};

/// Which augmentations to apply to each training image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Largest shift in pixels along each axis (0: none); uncovered pixels are black, the
    /// dataset's background. The same as a random 28×28 crop of the image padded by `shift`.
    pub shift: usize,
    /// Mirror left–right with probability ½ (garments are nearly symmetric; shoes face
    /// either way once flipped, which the test set does not contain but does not hurt).
    pub flip: bool,
    /// Probability of erasing a random rectangle (2–33 % of the image, aspect 0.3–3.3)
    /// with random pixels, as in Zhong et al., "Random Erasing Data Augmentation" (2017).
    pub erase: f32,
    /// Probability of photographing the image: the views, light, cloth texture, imperfect
    /// masks, blur and noise of a phone photo cut out by `predict` (see
    /// [`super::photo_augment`]). Absent in files written before it existed.
    #[serde(default)]
    pub photo: f32,
}

/// Rectangle area bounds for random erasing, as fractions of the image.
const ERASE_AREA: (f32, f32) = (0.02, 0.33);
/// Aspect-ratio bound for random erasing (and its inverse).
const ERASE_ASPECT: f32 = 3.3;
/// Tries to find a rectangle that fits before giving up on erasing this image.
const ERASE_TRIES: usize = 10;

impl Augment {
    /// No augmentation.
    pub const NONE: Augment = Augment {
        shift: 0,
        flip: false,
        erase: 0.0,
        photo: 0.0,
    };

    /// Whether any augmentation is enabled.
    pub fn is_active(&self) -> bool {
        self.shift > 0 || self.flip || self.erase > 0.0 || self.photo > 0.0
    }

    /// Checks the settings.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.shift >= SIDE {
            anyhow::bail!("--shift must be below {SIDE} pixels, got {}", self.shift);
        }
        if !(0.0..=1.0).contains(&self.erase) {
            anyhow::bail!(
                "--erase must be a probability in [0, 1], got {}",
                self.erase
            );
        }
        if !(0.0..=1.0).contains(&self.photo) {
            anyhow::bail!(
                "--photo-augment must be a probability in [0, 1], got {}",
                self.photo
            );
        }
        Ok(())
    }

    /// Writes an augmented copy of the 28×28 image `src` into `dst`; `paired` says
    /// whether its class comes in pairs (footwear), which a photo may show together.
    pub fn apply(&self, src: &[u8], paired: bool, dst: &mut [u8], rng: &mut Rng) {
        assert!(src.len() == PIXELS && dst.len() == PIXELS);
        let s = self.shift as isize;
        let (dx, dy) = if s > 0 {
            let span = 2 * self.shift + 1;
            (rng.below(span) as isize - s, rng.below(span) as isize - s)
        } else {
            (0, 0)
        };
        let flip = self.flip && rng.uniform() < 0.5;
        translate(src, dst, dx, dy, flip);
        if self.photo > 0.0 && rng.uniform() < self.photo {
            let shifted = dst.to_vec();
            super::photo_augment::photograph(&shifted, paired, dst, rng);
        }
        if self.erase > 0.0 && rng.uniform() < self.erase {
            erase(dst, rng);
        }
    }
}

/// `dst(x, y) = src'(x − dx, y − dy)`, where `src'` is `src` mirrored when `flip`; black
/// outside the source.
fn translate(src: &[u8], dst: &mut [u8], dx: isize, dy: isize, flip: bool) {
    let side = SIDE as isize;
    for (y, row) in dst.chunks_exact_mut(SIDE).enumerate() {
        let sy = y as isize - dy;
        if !(0..side).contains(&sy) {
            row.fill(0);
            continue;
        }
        let src_row = &src[sy as usize * SIDE..][..SIDE];
        for (x, out) in row.iter_mut().enumerate() {
            let sx = x as isize - dx;
            *out = if (0..side).contains(&sx) {
                src_row[if flip {
                    SIDE - 1 - sx as usize
                } else {
                    sx as usize
                }]
            } else {
                0
            };
        }
    }
}

/// Fills one random rectangle of `img` with uniform random pixels.
fn erase(img: &mut [u8], rng: &mut Rng) {
    for _ in 0..ERASE_TRIES {
        let area = rng.uniform_range(ERASE_AREA.0, ERASE_AREA.1) * PIXELS as f32;
        let aspect = rng
            .uniform_range(-ERASE_ASPECT.ln(), ERASE_ASPECT.ln())
            .exp();
        let h = (area * aspect).sqrt().round() as usize;
        let w = (area / aspect).sqrt().round() as usize;
        if h == 0 || w == 0 || h >= SIDE || w >= SIDE {
            continue;
        }
        let (top, left) = (rng.below(SIDE - h + 1), rng.below(SIDE - w + 1));
        for row in img.chunks_exact_mut(SIDE).skip(top).take(h) {
            for px in &mut row[left..left + w] {
                *px = (rng.next_u32() >> 24) as u8;
            }
        }
        return;
    }
}

/// Mirrors each 28×28 image of `images` (u8, image after image) left–right in place.
pub fn flip_images(images: &mut [u8]) {
    for row in images.chunks_exact_mut(SIDE) {
        row.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Vec<u8> {
        (0..PIXELS).map(|i| (i % 251) as u8 + 1).collect()
    }

    #[test]
    fn none_is_the_identity() {
        let src = ramp();
        let mut dst = vec![0; PIXELS];
        Augment::NONE.apply(&src, false, &mut dst, &mut Rng::new(1));
        assert_eq!(src, dst);
        assert!(!Augment::NONE.is_active());
    }

    #[test]
    fn translation_moves_pixels_and_fills_black() {
        let src = ramp();
        let mut dst = vec![0; PIXELS];
        translate(&src, &mut dst, 2, -1, false);
        // dst(x, y) = src(x − 2, y + 1)
        assert_eq!(dst[5 * SIDE + 7], src[6 * SIDE + 5]);
        assert_eq!(dst[5 * SIDE + 1], 0, "left columns uncovered");
        assert_eq!(dst[27 * SIDE + 10], 0, "bottom row uncovered");
        translate(&src, &mut dst, 0, 0, true);
        assert_eq!(dst[3 * SIDE], src[3 * SIDE + 27]);
        let mut twice = dst.clone();
        flip_images(&mut twice);
        assert_eq!(twice, src);
    }

    #[test]
    fn shifts_stay_within_bounds_and_cover_all_offsets() {
        // A single bright pixel in the middle lands within ±shift of where it was.
        let mut src = vec![0u8; PIXELS];
        src[14 * SIDE + 14] = 255;
        let aug = Augment {
            shift: 2,
            ..Augment::NONE
        };
        let mut rng = Rng::new(7);
        let mut seen = std::collections::HashSet::new();
        let mut dst = vec![0; PIXELS];
        for _ in 0..500 {
            aug.apply(&src, false, &mut dst, &mut rng);
            let at = dst.iter().position(|&p| p == 255).unwrap();
            let (y, x) = (at / SIDE, at % SIDE);
            assert!((12..=16).contains(&y) && (12..=16).contains(&x));
            seen.insert((y, x));
        }
        assert_eq!(seen.len(), 25, "all 5×5 offsets occur");
    }

    #[test]
    fn erasing_changes_a_rectangle_only() {
        let src = vec![0u8; PIXELS];
        let aug = Augment {
            erase: 1.0,
            ..Augment::NONE
        };
        let mut dst = vec![0; PIXELS];
        let mut rng = Rng::new(3);
        let mut erased = 0;
        for _ in 0..100 {
            aug.apply(&src, false, &mut dst, &mut rng);
            let changed: Vec<usize> = (0..PIXELS).filter(|&i| dst[i] != 0).collect();
            if changed.is_empty() {
                continue;
            }
            erased += 1;
            let ys: Vec<usize> = changed.iter().map(|i| i / SIDE).collect();
            let xs: Vec<usize> = changed.iter().map(|i| i % SIDE).collect();
            let (h, w) = (
                ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1,
                xs.iter().max().unwrap() - xs.iter().min().unwrap() + 1,
            );
            // At most the rectangle's pixels change (a random pixel may draw 0).
            assert!(changed.len() <= h * w);
            assert!(h * w <= (0.4 * PIXELS as f32) as usize, "{h}×{w}");
        }
        assert!(erased > 90, "p = 1 erases nearly always ({erased}/100)");
    }

    #[test]
    fn same_seed_same_augmentation() {
        let aug = Augment {
            shift: 3,
            flip: true,
            erase: 0.5,
            photo: 0.5,
        };
        let src = ramp();
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut out = vec![0; PIXELS * 20];
            for d in out.chunks_exact_mut(PIXELS) {
                aug.apply(&src, false, d, &mut rng);
            }
            out
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn invalid_settings_are_refused() {
        let bad = Augment {
            shift: 28,
            ..Augment::NONE
        };
        assert!(bad.validate().is_err());
        let bad = Augment {
            erase: 1.5,
            ..Augment::NONE
        };
        assert!(bad.validate().is_err());
    }
}
