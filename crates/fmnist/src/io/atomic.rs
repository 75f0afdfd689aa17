//! Writing outputs safely: a temporary file beside the target, renamed over it only once
//! complete, so that a good file is never replaced by a partial or bad one.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tempfile::NamedTempFile;

/// A file to be written: reserve it before long work (so an unwritable destination fails
/// at once), then [`PendingFile::commit`] the bytes. Reserving writes a probe file and
/// removes it again, so a run that is killed (or aborts) before it commits leaves
/// nothing behind; committing writes a temporary file beside the target and renames it
/// over the target once complete.
pub struct PendingFile {
    path: PathBuf,
    dir: PathBuf,
    /// Only for fault injection: a temporary file written in part.
    unfinished: Option<NamedTempFile>,
}

impl PendingFile {
    /// Checks that `path` can be written: its directory exists and takes a new file, and
    /// `path` itself is absent or a regular file (never a directory, device or FIFO).
    pub fn reserve(path: &Path) -> anyhow::Result<Self> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        // A directory, device or FIFO is refused here, naming what it is.
        crate::io::bounded::ensure_replaceable(path)?;
        drop(temporary(dir).with_context(|| format!("cannot write {}", path.display()))?);
        Ok(Self {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            unfinished: None,
        })
    }

    /// The final destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` to a temporary file without finishing it: only for fault-injection
    /// tests that kill the process in the middle of a write.
    pub fn write_unfinished(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let mut tmp = temporary(&self.dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        self.unfinished = Some(tmp);
        Ok(())
    }

    /// Writes `bytes`, flushes them to disk and renames the file into place.
    pub fn commit(self, bytes: &[u8]) -> anyhow::Result<()> {
        let what = || format!("cannot write {}", self.path.display());
        // The target may have been replaced by something else since it was reserved.
        crate::io::bounded::ensure_replaceable(&self.path)?;
        let mut tmp = temporary(&self.dir).with_context(what)?;
        tmp.write_all(bytes)
            .map_err(without_temporary_name)
            .with_context(what)?;
        tmp.as_file().sync_all().with_context(what)?;
        tmp.persist(&self.path)
            .map_err(|e| without_temporary_name(e.error))
            .with_context(what)?;
        Ok(())
    }
}

/// A new temporary file in `dir`, readable like any output once renamed.
fn temporary(dir: &Path) -> std::io::Result<NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".fmnist-").suffix(".tmp");
    // Temporary files would be private (0600); the finished file is an ordinary output,
    // readable like any other the user creates (0644 less the umask).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    builder.tempfile_in(dir).map_err(without_temporary_name)
}

/// The system's reason alone: `tempfile` adds the temporary file's name, which means
/// nothing to the user (the message names the destination).
fn without_temporary_name(e: std::io::Error) -> std::io::Error {
    // tempfile's wrapper hides the OS error from `source()`; its text is "REASON at path P".
    let text = e.to_string();
    match text.split_once(" at path \"") {
        Some((reason, _)) => std::io::Error::new(e.kind(), reason.to_string()),
        None => e,
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    PendingFile::reserve(path)?.commit(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_on_commit_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write(&path, b"good").unwrap();
        let pending = PendingFile::reserve(&path).unwrap();
        drop(pending); // abandoned: e.g. training failed
        assert_eq!(std::fs::read(&path).unwrap(), b"good");
        PendingFile::reserve(&path)
            .unwrap()
            .commit(b"better")
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"better");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(PendingFile::reserve(&dir.path().join("missing/out.bin")).is_err());
        assert!(PendingFile::reserve(dir.path()).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn outputs_get_ordinary_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap(); // 0666 less the umask
        let ours = dir.path().join("ours");
        write(&ours, b"x").unwrap();
        assert_eq!(mode(&ours), mode(&plain) & 0o644);
        assert_ne!(mode(&ours) & 0o400, 0);
    }
}
