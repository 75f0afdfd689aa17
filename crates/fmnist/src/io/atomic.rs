//! Writing outputs safely: a temporary file beside the target, renamed over it only once
//! complete, so that a good file is never replaced by a partial or bad one.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tempfile::NamedTempFile;

/// A file being written: reserve it before long work (so an unwritable destination fails
/// at once), then [`PendingFile::commit`] the bytes.
pub struct PendingFile {
    tmp: NamedTempFile,
    path: PathBuf,
}

impl PendingFile {
    /// Reserves a temporary file in `path`'s directory.
    pub fn reserve(path: &Path) -> anyhow::Result<Self> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if path.is_dir() {
            anyhow::bail!("cannot write {}: it is a directory", path.display());
        }
        let mut builder = tempfile::Builder::new();
        builder.prefix(".fmnist-").suffix(".tmp");
        // Temporary files are private (0600); the finished file is an ordinary output,
        // readable like any other the user creates (0644 less the umask).
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let tmp = builder
            .tempfile_in(dir)
            .map_err(without_temporary_name)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self {
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// The final destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` to the temporary file without finishing it: only for fault-injection
    /// tests that kill the process in the middle of a write.
    pub fn write_unfinished(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.tmp.write_all(bytes)?;
        self.tmp.as_file().sync_all()?;
        Ok(())
    }

    /// Writes `bytes`, flushes them to disk and renames the file into place.
    pub fn commit(mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let what = || format!("cannot write {}", self.path.display());
        self.tmp
            .write_all(bytes)
            .map_err(without_temporary_name)
            .with_context(what)?;
        self.tmp.as_file().sync_all().with_context(what)?;
        let path = self.path.clone();
        self.tmp
            .persist(&path)
            .map_err(|e| without_temporary_name(e.error))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
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
