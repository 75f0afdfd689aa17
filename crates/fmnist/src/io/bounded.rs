//! Reading a user's file whole, safely: only regular files (a FIFO would block for ever,
//! a device such as `/dev/zero` never ends), with the size checked before a byte is read
//! and the read itself stopped at the limit, so that a huge or hostile file is refused
//! instead of filling memory.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};

/// Opens `path` for reading if it is a regular file (symbolic links followed); anything
/// else is refused with one line naming what it is. Never blocks: a FIFO is refused
/// from its metadata, and is opened non-blocking in case one replaces the file between
/// the check and the open.
pub fn open_regular(path: &Path) -> anyhow::Result<File> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    refuse_unless_regular(path, &meta)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    let file = options
        .open(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    refuse_unless_regular(path, &meta)?;
    Ok(file)
}

/// What a non-regular file is, in words.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

fn refuse_unless_regular(path: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    if !meta.is_file() {
        bail!(
            "cannot read {}: it is {}, not a regular file",
            path.display(),
            kind(meta)
        );
    }
    Ok(())
}

/// The bytes of `path`, refused when it holds more than `max` bytes; `limit` says what
/// the limit is in the message ("larger than any fmnist model").
pub fn read(path: &Path, max: u64, limit: &str) -> anyhow::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > max {
        bail!("{} is {len} bytes, {limit}", path.display());
    }
    read_at_most(file, max, len)
        .with_context(|| format!("cannot read {}", path.display()))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} grew past {max} bytes while read, {limit}",
                path.display()
            )
        })
}

/// Reads `reader` to its end, expecting about `hint` bytes; `None` when it holds more
/// than `max` (a file that grows while it is read stops there too).
pub fn read_at_most(reader: impl Read, max: u64, hint: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::with_capacity(hint.min(max) as usize);
    reader.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// Fails with one line unless `path`, if it exists, is a regular file: an output must
/// never replace a device, FIFO, socket or directory (as root, renaming over
/// `/dev/null` would turn it into a file).
pub fn ensure_replaceable(path: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => match std::fs::metadata(path) {
            Ok(target) if !target.is_file() => bail!(
                "cannot write {}: it links to {}, not a regular file",
                path.display(),
                kind(&target)
            ),
            _ => Ok(()),
        },
        Ok(meta) if !meta.is_file() => bail!(
            "cannot write {}: it is {}, not a regular file",
            path.display(),
            kind(&meta)
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_above_the_limit_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read(&path, 5, "too big").unwrap(), b"12345");
        let err = read(&path, 4, "too big").unwrap_err().to_string();
        assert!(err.ends_with("f is 5 bytes, too big"), "{err}");
        let err = read(&dir.path().join("nope"), 4, "x").unwrap_err();
        assert!(err.to_string().starts_with("cannot read "), "{err}");
        let err = read(dir.path(), 4, "x").unwrap_err().to_string();
        assert!(
            err.ends_with("it is a directory, not a regular file"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_fifos_are_refused_without_reading_or_blocking() {
        let err = read(Path::new("/dev/zero"), 1 << 30, "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("it is a device"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("model.safetensors");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let err = read(&link, 1 << 30, "x").unwrap_err().to_string();
        assert!(err.contains("it is a device"), "{err}");
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let err = read(&fifo, 1 << 30, "x").unwrap_err().to_string();
        assert!(err.contains("FIFO"), "{err}");
        // Outputs: a device, a FIFO and a link to a device are never replaced.
        for p in [Path::new("/dev/null"), &fifo, &link] {
            let err = ensure_replaceable(p).unwrap_err().to_string();
            assert!(err.starts_with("cannot write "), "{err}");
        }
        ensure_replaceable(&dir.path().join("new")).unwrap();
    }

    #[test]
    fn a_stream_is_cut_at_the_limit() {
        let long = std::io::repeat(7).take(100);
        assert_eq!(read_at_most(long, 99, 0).unwrap(), None);
        let short = std::io::repeat(7).take(99);
        assert_eq!(read_at_most(short, 99, 0).unwrap().unwrap().len(), 99);
    }
}
