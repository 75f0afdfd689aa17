//! Reading a user's file whole, with its size checked before a byte is read, so that a
//! huge or hostile file is refused instead of filling memory.

use std::path::Path;

use anyhow::{Context, bail};

/// The bytes of `path`, refused when it holds more than `max` bytes; `limit` says what
/// the limit is in the message ("larger than any fmnist model").
pub fn read(path: &Path, max: u64, limit: &str) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > max {
        bail!("{} is {len} bytes, {limit}", path.display());
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn refuses_above_the_limit_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(super::read(&path, 5, "too big").unwrap(), b"12345");
        let err = super::read(&path, 4, "too big").unwrap_err().to_string();
        assert!(err.ends_with("f is 5 bytes, too big"), "{err}");
        let err = super::read(&dir.path().join("nope"), 4, "x").unwrap_err();
        assert!(err.to_string().starts_with("cannot read "), "{err}");
    }
}
