//! Property tests: the preprocessing gives a well-formed, centred 28×28 input for any
//! image size, aspect and background; IDX files round-trip and damaged ones are errors;
//! images above the pixel limit are refused from their header.

use fmnist::data::idx;
use fmnist::predict::{self, DecodeError};
use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage};
use proptest::prelude::*;

/// Centre of mass of the pixels' brightness, (x, y).
fn centroid(px: &[u8]) -> (f64, f64) {
    let (mut sx, mut sy, mut s) = (0.0, 0.0, 0.0);
    for (i, &v) in px.iter().enumerate() {
        let v = v as f64;
        sx += v * (i % 28) as f64;
        sy += v * (i / 28) as f64;
        s += v;
    }
    (sx / s, sy / s)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any size, aspect and content (noise included) gives 784 pixels, without panicking.
    #[test]
    fn any_image_gives_a_28_by_28_input(
        w in 1u32..400, h in 1u32..400, seed in any::<u64>(), rgb in any::<bool>(),
    ) {
        let mut state = seed | 1;
        let mut next = move || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state as u8 };
        let img = if rgb {
            DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |_, _| Rgb([next(), next(), next()])))
        } else {
            DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |_, _| Luma([next()])))
        };
        prop_assert_eq!(predict::preprocess(&img).len(), 784);
    }

    /// An object on a plain background (a black or white one: grey levels below 32 or
    /// above 223), anywhere and of any size, comes out light on black, centred, with its
    /// brightest pixel white. (Failures found here are kept in
    /// properties.proptest-regressions: a square object whose corners fill the frame,
    /// and a light object so near the edge that the border reads as not plain, which was
    /// segmented, inverted as a garment on a floor is, and then left nearly black.)
    #[test]
    fn an_object_is_found_centred_and_stretched(
        w in 40u32..300, h in 40u32..300,
        fx in 0.0f64..1.0, fy in 0.0f64..1.0, fw in 0.15f64..0.6, fh in 0.15f64..0.6,
        dark_on_light in any::<bool>(), bg in 0u8..32, fg in 150u8..=255,
    ) {
        let (ow, oh) = (((w as f64 * fw) as u32).max(4), ((h as f64 * fh) as u32).max(4));
        let (ox, oy) = (1 + ((w - ow - 2) as f64 * fx) as u32, 1 + ((h - oh - 2) as f64 * fy) as u32);
        let (b, f) = if dark_on_light { (255 - bg, 255 - fg) } else { (bg, fg) };
        let img = GrayImage::from_fn(w, h, |x, y| {
            let inside = x >= ox && x < ox + ow && y >= oy && y < oy + oh;
            Luma([if inside { f } else { b }])
        });
        let px = predict::preprocess(&DynamicImage::ImageLuma8(img));
        prop_assert_eq!(px.len(), 784);
        prop_assert_eq!(px.iter().copied().max(), Some(255));
        // The longest side fills the frame, so only an object that is not (nearly) square
        // leaves background in the corners.
        if ow.max(oh) as f64 > 1.1 * ow.min(oh) as f64 {
            prop_assert_eq!(px[0], 0, "corners are background, black");
        }
        let (cx, cy) = centroid(&px);
        prop_assert!((cx - 13.5).abs() < 1.5 && (cy - 13.5).abs() < 1.5, "centroid ({}, {})", cx, cy);
    }

    /// Encoding then parsing gives back the dimensions and the bytes.
    #[test]
    fn idx_files_round_trip(dims in prop::collection::vec(1usize..12, 1..=4), seed in any::<u8>()) {
        let n: usize = dims.iter().product();
        let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let bytes = idx::encode(&dims, &data);
        let parsed = idx::parse(&bytes).unwrap();
        prop_assert_eq!(&parsed.dims, &dims);
        prop_assert_eq!(&parsed.data, &data);
        // Every truncation, and any extra byte, is an error.
        let cut = (seed as usize) % bytes.len();
        prop_assert!(idx::parse(&bytes[..cut]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(idx::parse(&longer).is_err());
    }

    /// Arbitrary bytes are parsed or refused, never a panic, and never an allocation
    /// larger than the declared-size limit.
    #[test]
    fn arbitrary_idx_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = idx::parse(&bytes);
    }
}

/// A PNG whose header declares `w`×`h` (its data is a 1×1 image: decoding would fail, but
/// the size must be refused first).
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut png = Vec::new();
    GrayImage::new(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    // Signature (8), IHDR length (4) and type (4), then width and height.
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    png
}

#[test]
fn images_above_the_pixel_limit_are_refused_from_their_header() {
    match predict::decode_bytes(&png_declaring(10_000, 10_000)) {
        Err(DecodeError::Invalid(m)) => {
            assert_eq!(
                m,
                "the image is 10000×10000 pixels, more than the 40 megapixels fmnist accepts"
            )
        }
        other => panic!("{other:?}"),
    }
    match predict::decode_bytes(&png_declaring(100_000, 10)) {
        Err(DecodeError::Invalid(_)) => {}
        other => panic!("{other:?}"),
    }
}
