//! The IDX file format of (Fashion-)MNIST: a big-endian header, then unsigned bytes.
//!
//! Layout: two zero bytes, a type byte (0x08 = u8), the number of dimensions, one
//! big-endian u32 per dimension, then exactly the product of the dimensions in bytes.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

/// The largest decompressed IDX file accepted (the training images are 47 MB); larger
/// declared or actual sizes are refused before allocating.
pub const MAX_IDX_BYTES: u64 = 128 << 20;

/// What is wrong with an IDX file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdxError {
    /// Fewer bytes than the header needs.
    #[error("truncated header ({0} bytes)")]
    ShortHeader(usize),
    /// The first bytes are not an IDX magic number.
    #[error("not an IDX file (magic number {0:02x?})")]
    BadMagic([u8; 4]),
    /// Only unsigned bytes (type 0x08) are used by the dataset.
    #[error("unsupported IDX element type 0x{0:02x} (expected 0x08, unsigned byte)")]
    BadType(u8),
    /// The dimensions declare more data than allowed.
    #[error("declared dimensions {0:?} are too large")]
    TooLarge(Vec<usize>),
    /// The body's length does not match the dimensions.
    #[error("dimensions {dims:?} need {want} data bytes, found {got}")]
    Length {
        /// The declared dimensions.
        dims: Vec<usize>,
        /// Bytes the dimensions need.
        want: usize,
        /// Bytes present.
        got: usize,
    },
}

/// A parsed IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions, outermost first (`[count, rows, cols]` for images).
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Parses an (uncompressed) IDX file, validating magic number, type, dimensions and length.
pub fn parse(bytes: &[u8]) -> Result<Idx, IdxError> {
    parse_owned(bytes.to_vec())
}

/// [`parse`] without copying the data: the header is removed from `bytes` in place.
pub fn parse_owned(mut bytes: Vec<u8>) -> Result<Idx, IdxError> {
    if bytes.len() < 4 {
        return Err(IdxError::ShortHeader(bytes.len()));
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic[0] != 0 || magic[1] != 0 || magic[3] == 0 || magic[3] > 4 {
        return Err(IdxError::BadMagic(magic));
    }
    if magic[2] != 0x08 {
        return Err(IdxError::BadType(magic[2]));
    }
    let ndims = magic[3] as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(IdxError::ShortHeader(bytes.len()));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let want = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n as u64 <= MAX_IDX_BYTES)
        .ok_or_else(|| IdxError::TooLarge(dims.clone()))?;
    let got = bytes.len() - header;
    if got != want {
        return Err(IdxError::Length { dims, want, got });
    }
    bytes.drain(..header);
    Ok(Idx { dims, data: bytes })
}

/// Serialises `data` with `dims` as an IDX file (for fixtures and round trips).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// Reads a file's bytes, transparently decompressing gzip (detected by its magic bytes,
/// not the name), refusing more than [`MAX_IDX_BYTES`] decompressed.
pub fn read_maybe_gz(path: &Path) -> std::io::Result<Vec<u8>> {
    read_maybe_gz_bytes(&std::fs::read(path)?)
}

/// Decompresses `raw` if it is gzip (by magic bytes), else copies it; refuses more than
/// [`MAX_IDX_BYTES`] decompressed.
pub fn read_maybe_gz_bytes(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(raw)
            .take(MAX_IDX_BYTES + 1)
            .read_to_end(&mut out)?;
        if out.len() as u64 > MAX_IDX_BYTES {
            return Err(std::io::Error::other("decompresses to more than 128 MiB"));
        }
        Ok(out)
    } else {
        Ok(raw.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let data: Vec<u8> = (0..24).collect();
        let idx = parse(&encode(&[2, 3, 4], &data)).unwrap();
        assert_eq!(
            idx,
            Idx {
                dims: vec![2, 3, 4],
                data
            }
        );
    }

    #[test]
    fn rejects_every_malformation() {
        let good = encode(&[2, 2], &[1, 2, 3, 4]);
        assert_eq!(parse(&good[..3]), Err(IdxError::ShortHeader(3)));
        assert_eq!(parse(&good[..7]), Err(IdxError::ShortHeader(7)));
        let mut bad = good.clone();
        bad[0] = 1;
        assert!(matches!(parse(&bad), Err(IdxError::BadMagic(_))));
        let mut float = good.clone();
        float[2] = 0x0d;
        assert_eq!(parse(&float), Err(IdxError::BadType(0x0d)));
        assert!(matches!(
            parse(&good[..good.len() - 1]),
            Err(IdxError::Length {
                want: 4,
                got: 3,
                ..
            })
        ));
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            parse(&long),
            Err(IdxError::Length {
                want: 4,
                got: 5,
                ..
            })
        ));
        // 2^32-1 cubed overflows; 60000×10000×10000 exceeds the limit: no allocation.
        let huge = encode(
            &[u32::MAX as usize, u32::MAX as usize, u32::MAX as usize],
            &[],
        );
        assert!(matches!(parse(&huge), Err(IdxError::TooLarge(_))));
        assert!(matches!(
            parse(&encode(&[60000, 10000, 10000], &[])),
            Err(IdxError::TooLarge(_))
        ));
    }
}
