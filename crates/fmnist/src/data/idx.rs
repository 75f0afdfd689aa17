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
    let (dims, header, want) = parse_header(&bytes)?;
    let got = bytes.len() - header;
    if got != want {
        return Err(IdxError::Length { dims, want, got });
    }
    bytes.drain(..header);
    Ok(Idx { dims, data: bytes })
}

/// The dimensions, the header's length and the data bytes the dimensions declare, from
/// the first bytes of a file (at most [`MAX_HEADER`] are looked at).
pub fn parse_header(bytes: &[u8]) -> Result<(Vec<usize>, usize, usize), IdxError> {
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
    Ok((dims, header, want))
}

/// The longest IDX header: the magic number and four dimensions.
pub const MAX_HEADER: usize = 4 + 4 * 4;

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
/// not the name), refusing more than [`MAX_IDX_BYTES`] decompressed. Only regular files
/// are read; a raw file's header is checked against its length before the rest is read,
/// so a huge or mislabelled file costs nothing.
pub fn read_maybe_gz(path: &Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let what = || format!("cannot read {}", path.display());
    let mut file = crate::io::bounded::open_regular(path)?;
    let len = file.metadata().with_context(what)?.len();
    let mut start = [0u8; MAX_HEADER];
    let seen = read_up_to(&mut file, &mut start).with_context(what)?;
    let start = &start[..seen];
    let rest = file.take(MAX_IDX_BYTES);
    if start.starts_with(&[0x1f, 0x8b]) {
        let out = crate::io::bounded::read_at_most(
            GzDecoder::new(std::io::Cursor::new(start).chain(rest)),
            MAX_IDX_BYTES,
            0,
        )
        .with_context(what)?;
        return out.ok_or_else(|| {
            anyhow::anyhow!("{} decompresses to more than 128 MiB", path.display())
        });
    }
    let (dims, header, want) = parse_header(start)
        .with_context(|| format!("{} is not a valid IDX file", path.display()))?;
    let got = len.saturating_sub(header as u64);
    if got != want as u64 {
        anyhow::bail!(
            "{} is not a valid IDX file: {}",
            path.display(),
            IdxError::Length {
                dims,
                want,
                got: got as usize
            }
        );
    }
    let mut bytes = start.to_vec();
    bytes.reserve(len as usize - bytes.len());
    rest.take(len - seen as u64)
        .read_to_end(&mut bytes)
        .with_context(what)?;
    Ok(bytes)
}

/// Fills `buf` from `reader` until it is full or the reader ends; returns the count.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
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

    #[test]
    fn a_huge_raw_file_is_refused_from_its_header_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train-images-idx3-ubyte");
        // 1 GiB, sparse: the header says 60,000 images of 28×28, the length disagrees.
        let file = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut &file, &encode(&[60000, 28, 28], &[])).unwrap();
        file.set_len(1 << 30).unwrap();
        let err = read_maybe_gz(&path).unwrap_err().to_string();
        assert!(err.contains("need 47040000 data bytes"), "{err}");
        // The same bytes with a header that declares them all: too large to be data.
        let file = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut &file, &encode(&[1 << 30], &[])).unwrap();
        file.set_len(8 + (1 << 30)).unwrap();
        let err = format!("{:#}", read_maybe_gz(&path).unwrap_err());
        assert!(err.contains("too large"), "{err}");
        // A good raw file and its gzip form read back the same.
        let good = encode(&[2, 2], &[1, 2, 3, 4]);
        std::fs::write(&path, &good).unwrap();
        assert_eq!(read_maybe_gz(&path).unwrap(), good);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &good).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        assert_eq!(read_maybe_gz(&path).unwrap(), good);
    }
}
