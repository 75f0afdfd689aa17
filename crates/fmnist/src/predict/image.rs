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
    let format = image::guess_format(bytes).map_err(|_| DecodeError::NotAnImage)?;
    use image::ImageFormat::*;
    if !matches!(format, Png | Jpeg | Gif | Bmp | WebP) {
        return Err(DecodeError::NotAnImage);
    }
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
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
    let img =
        DynamicImage::from_decoder(decoder).map_err(|e| DecodeError::Invalid(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(DecodeError::Invalid("the image is empty".into()));
    }
    Ok(img)
}
