//! Reading users' image files: any common format, recognised by content, with its size
//! checked from the header before anything large is allocated.

use std::path::Path;

use anyhow::anyhow;
use image::{DynamicImage, ImageReader, Limits};

/// Images wider or taller than this are refused before decoding.
pub const MAX_SIDE: u32 = 16_384;
/// Decoders may allocate at most this much.
const MAX_ALLOC: u64 = 512 << 20;
/// Largest image accepted, in pixels (checked from the header, before decoding).
pub const MAX_PIXELS: u64 = 40_000_000;

/// Image files larger than this are refused before reading.
const MAX_FILE_BYTES: u64 = 256 << 20;

/// Decodes an image file (PNG, JPEG, GIF, BMP or WebP, recognised by content, not name),
/// with size limits.
pub fn load_image(path: &Path) -> anyhow::Result<DynamicImage> {
    let bytes =
        crate::io::bounded::read(path, MAX_FILE_BYTES, "over the 256 MiB limit for images")?;
    decode_bytes(&bytes).map_err(|e| match e {
        DecodeError::NotAnImage => anyhow!(
            "{} is not an image fmnist can read (PNG, JPEG, GIF, BMP or WebP)",
            path.display()
        ),
        DecodeError::Invalid(why) => anyhow!("cannot decode {}: {why}", path.display()),
    })
}

/// Why image bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not in a supported format.
    #[error("not an image fmnist can read (PNG, JPEG, GIF, BMP or WebP)")]
    NotAnImage,
    /// A supported format, but damaged, too large or empty.
    #[error("{0}")]
    Invalid(String),
}

/// Decodes in-memory image bytes with the same limits.
pub fn decode_bytes(bytes: &[u8]) -> Result<DynamicImage, DecodeError> {
    decode_within(bytes, MAX_ALLOC)
}

/// The memory that decoding and preprocessing an image take, from its header alone:
/// the decoded pixels in their own format and the grey copies made from them (one byte
/// a pixel, and the crop of it; with transparency, a grey-and-alpha copy before them).
/// Fails as decoding would on a foreign, damaged or oversized file.
pub fn decode_cost(bytes: &[u8]) -> Result<u64, DecodeError> {
    let decoder = header(bytes, MAX_ALLOC)?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    let pixels = u64::from(w) * u64::from(h);
    let copies = if image::ImageDecoder::color_type(&decoder).has_alpha() {
        4
    } else {
        2
    };
    Ok(image::ImageDecoder::total_bytes(&decoder).saturating_add(copies * pixels))
}

/// Decodes image bytes, letting the decoder allocate at most `max_alloc` bytes.
pub fn decode_within(bytes: &[u8], max_alloc: u64) -> Result<DynamicImage, DecodeError> {
    let decoder = header(bytes, max_alloc)?;
    let needed = image::ImageDecoder::total_bytes(&decoder);
    if needed > max_alloc {
        return Err(DecodeError::Invalid(format!(
            "the image needs {:.0} MB to decode, more than the {} MiB allowed",
            needed as f64 / 1e6,
            max_alloc >> 20
        )));
    }
    let img =
        DynamicImage::from_decoder(decoder).map_err(|e| DecodeError::Invalid(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(DecodeError::Invalid("the image is empty".into()));
    }
    Ok(img)
}

/// A decoder that has read the header and checked the format, completeness (JPEG) and
/// size limits.
fn header(bytes: &[u8], max_alloc: u64) -> Result<Box<dyn image::ImageDecoder + '_>, DecodeError> {
    let format = image::guess_format(bytes).map_err(|_| DecodeError::NotAnImage)?;
    use image::ImageFormat::*;
    if !matches!(format, Png | Jpeg | Gif | Bmp | WebP) {
        return Err(DecodeError::NotAnImage);
    }
    // The JPEG decoder fills a missing end with grey and reports success; PNG and WebP
    // decoders refuse a cut file, and so must we.
    if format == Jpeg && !jpeg_complete(bytes) {
        return Err(DecodeError::Invalid(
            "the JPEG file is truncated (it ends before its end-of-image marker)".into(),
        ));
    }
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(max_alloc);
    reader.limits(limits);
    // The image crate's errors repeat their cause in `source()`: keep the text only.
    let decoder = reader
        .into_decoder()
        .map_err(|e| DecodeError::Invalid(e.to_string()))?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(DecodeError::Invalid(format!(
            "the image is {w}×{h} pixels, more than the {} megapixels fmnist accepts",
            MAX_PIXELS / 1_000_000
        )));
    }
    Ok(Box::new(decoder))
}

/// Whether a JPEG's marker structure runs from its start to an end-of-image marker:
/// segments are skipped by their lengths (an embedded thumbnail, with its own markers,
/// lies inside one), and the entropy-coded data after each start-of-scan is skipped to
/// the next marker. A file cut anywhere ends first.
fn jpeg_complete(bytes: &[u8]) -> bool {
    const SOS: u8 = 0xda;
    const EOI: u8 = 0xd9;
    if !bytes.starts_with(&[0xff, 0xd8]) {
        return false;
    }
    let mut at = 2;
    loop {
        // Fill bytes (0xFF runs) may precede a marker.
        while bytes.get(at) == Some(&0xff) && bytes.get(at + 1) == Some(&0xff) {
            at += 1;
        }
        let (Some(&0xff), Some(&marker)) = (bytes.get(at), bytes.get(at + 1)) else {
            return false;
        };
        at += 2;
        match marker {
            EOI => return true,
            // Markers without a length: restart markers, TEM.
            0xd0..=0xd7 | 0x01 => continue,
            _ => {}
        }
        let Some(len) = bytes
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        else {
            return false;
        };
        if len < 2 {
            return false;
        }
        at += len;
        if marker == SOS {
            // Entropy-coded data: 0xFF is followed by 0x00 (a stuffed byte) or a
            // restart marker inside it; anything else is the next marker.
            loop {
                match (bytes.get(at), bytes.get(at + 1)) {
                    (Some(&0xff), Some(&next)) if next == 0x00 || (0xd0..=0xd7).contains(&next) => {
                        at += 2
                    }
                    (Some(&0xff), Some(_)) => break,
                    (Some(_), _) => at += 1,
                    (None, _) => return false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(progressive_size: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(progressive_size, progressive_size, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
        });
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&img)
            .unwrap();
        bytes
    }

    #[test]
    fn a_cut_jpeg_is_refused_and_a_whole_one_decodes() {
        let whole = jpeg(64);
        assert!(decode_bytes(&whole).is_ok());
        // Trailing bytes after the end marker (some cameras append data) are harmless.
        let mut trailing = whole.clone();
        trailing.extend_from_slice(b"appended by a camera");
        assert!(decode_bytes(&trailing).is_ok());
        for cut in [whole.len() / 2, whole.len() - 2, whole.len() - 1, 3, 200] {
            match decode_bytes(&whole[..cut]) {
                Err(DecodeError::Invalid(m)) => assert!(m.contains("truncated"), "{cut}: {m}"),
                other => panic!("a JPEG cut at {cut} of {}: {other:?}", whole.len()),
            }
        }
    }
}
