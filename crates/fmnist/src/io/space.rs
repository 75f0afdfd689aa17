//! Free disk space, checked before long work so that a full disk fails at once rather than
//! after an hour of training.

use std::path::{Path, PathBuf};

/// Fails when a directory has less room than the files to be written there need.
/// `needs` lists each file with its expected size; files on one file system add up.
/// Where the free space cannot be read (not Unix, or the call fails) nothing is checked:
/// the writes themselves still fail cleanly.
pub fn ensure_room(needs: &[(&Path, u64)]) -> anyhow::Result<()> {
    let mut by_fs: Vec<(u64, PathBuf, u64, u64)> = Vec::new(); // device, dir, free, needed
    for &(file, bytes) in needs {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let Some((device, free)) = device_and_free(dir) else {
            continue;
        };
        match by_fs.iter_mut().find(|e| e.0 == device) {
            Some(entry) => entry.3 += bytes,
            None => by_fs.push((device, dir.to_path_buf(), free, bytes)),
        }
    }
    for (_, dir, free, needed) in by_fs {
        if needed > free {
            anyhow::bail!(
                "not enough space in {}: this run writes about {} and {} are free",
                dir.display(),
                megabytes(needed),
                megabytes(free)
            );
        }
    }
    Ok(())
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(unix)]
fn device_and_free(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(dir).ok()?.dev();
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some((device, stat.f_bavail.saturating_mul(stat.f_frsize)))
}

#[cfg(not(unix))]
fn device_and_free(_dir: &Path) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_summed_per_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        ensure_room(&[(&a, 1), (&b, 1)]).unwrap();
        let (_, free) = device_and_free(dir.path()).unwrap();
        // Each alone fits; together they do not (with margins, as other work writes too).
        let share = free / 4 * 3;
        ensure_room(&[(&a, share)]).unwrap();
        let err = ensure_room(&[(&a, share), (&b, share)]).unwrap_err();
        assert!(err.to_string().starts_with("not enough space in "), "{err}");
    }
}
