//! Finding the data: `--data-dir`, `$FMNIST_DATA`, the user's cache, the Debian package,
//! and otherwise a verified download from the official mirrors.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use super::{DataFile, Dataset, FILES, FashionMnist, idx, read_verified, verify};

/// Where the Debian/Ubuntu package `dataset-fashion-mnist` installs the files.
pub const SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The official mirrors, tried in order: Zalando's, then Keras'. `$FMNIST_MIRROR`
/// (comma-separated base addresses) replaces them, for tests and private mirrors.
const MIRRORS: [&str; 2] = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
];

/// Compressed downloads larger than this are refused (the largest file is 26 MB).
const MAX_DOWNLOAD: u64 = 64 << 20;

/// How to find the data.
#[derive(Clone, Debug, Default)]
pub struct DataOptions {
    /// An explicit directory (`--data-dir`); it wins over every other place.
    pub data_dir: Option<PathBuf>,
    /// Never download.
    pub offline: bool,
    /// Print download progress on standard error.
    pub verbose: bool,
}

/// Which place the data came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `--data-dir`.
    DataDir,
    /// `$FMNIST_DATA`.
    Env,
    /// The user's cache directory.
    Cache,
    /// The Debian package.
    System,
    /// Downloaded just now.
    Downloaded,
    /// Arrays a library caller gave (Python's `fit`): no directory.
    Memory,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::DataDir => "--data-dir",
            Origin::Env => "$FMNIST_DATA",
            Origin::Cache => "cache",
            Origin::System => "Debian package dataset-fashion-mnist",
            Origin::Downloaded => "downloaded",
            Origin::Memory => "arrays in memory",
        })
    }
}

/// The user's cache directory for fmnist: `$XDG_CACHE_HOME/fmnist` or `~/.cache/fmnist`.
pub fn cache_dir() -> Option<PathBuf> {
    let nonempty = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    nonempty("XDG_CACHE_HOME")
        .or_else(|| nonempty("HOME").map(|h| h.join(".cache")))
        .map(|c| c.join("fmnist"))
}

/// The file for `stem` in `dir`, compressed or not.
fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// The places to look, in order. A directory the user named (`--data-dir`, else
/// `$FMNIST_DATA`) is the only place looked at: silently using other data would hide a
/// mistake.
fn candidates(opts: &DataOptions) -> Vec<(PathBuf, Origin)> {
    if let Some(d) = &opts.data_dir {
        return vec![(d.clone(), Origin::DataDir)];
    }
    if let Some(d) = std::env::var_os("FMNIST_DATA").filter(|v| !v.is_empty()) {
        return vec![(PathBuf::from(d), Origin::Env)];
    }
    let mut out = Vec::new();
    if let Some(c) = cache_dir() {
        out.push((c, Origin::Cache));
    }
    out.push((PathBuf::from(SYSTEM_DIR), Origin::System));
    out
}

/// Finds (or downloads), reads and verifies the four files.
pub fn load(opts: &DataOptions) -> anyhow::Result<FashionMnist> {
    let places = candidates(opts);
    for (dir, origin) in &places {
        let found: Vec<Option<PathBuf>> = FILES.iter().map(|f| find_file(dir, f.stem)).collect();
        if found.iter().all(Option::is_some) {
            let paths: Vec<PathBuf> = found.into_iter().flatten().collect();
            return read_dir(&paths, dir, *origin);
        }
        // An explicitly named directory with only some of the files is a mistake to report.
        let explicit = matches!(origin, Origin::DataDir | Origin::Env);
        if explicit && found.iter().any(Option::is_some) {
            let missing = FILES
                .iter()
                .zip(&found)
                .find(|(_, p)| p.is_none())
                .map(|(f, _)| f.stem);
            bail!(
                "{} has some Fashion-MNIST files but not {}(.gz)",
                dir.display(),
                missing.unwrap_or("?")
            );
        }
    }
    let looked: Vec<String> = places
        .iter()
        .map(|(d, _)| d.display().to_string())
        .collect();
    if opts.offline {
        bail!(
            "Fashion-MNIST not found (looked in {}); install the Debian package dataset-fashion-mnist, \
             pass --data-dir, or run without --offline to download it",
            looked.join(", ")
        );
    }
    let target = match (places.first(), cache_dir()) {
        (Some((d, Origin::DataDir | Origin::Env)), _) => d.clone(),
        (_, Some(c)) => c,
        _ => bail!("Fashion-MNIST not found and no cache directory ($HOME unset); pass --data-dir"),
    };
    download_all(&target, opts.verbose)?;
    let paths: Vec<PathBuf> = FILES
        .iter()
        .map(|f| target.join(format!("{}.gz", f.stem)))
        .collect();
    read_dir(&paths, &target, Origin::Downloaded)
}

fn read_dir(paths: &[PathBuf], dir: &Path, origin: Origin) -> anyhow::Result<FashionMnist> {
    // Decompressing and hashing 55 MB: one file per thread.
    let parsed: Vec<anyhow::Result<idx::Idx>> = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .iter()
            .zip(&FILES)
            .map(|(p, f)| s.spawn(move || read_verified(p, f)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("reader thread failed")))
            })
            .collect()
    });
    let mut parsed = parsed
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter();
    let mut next = || parsed.next().ok_or_else(|| anyhow!("missing file"));
    let train = Dataset::from_idx(next()?, next()?)
        .with_context(|| format!("training set in {}", dir.display()))?;
    let test = Dataset::from_idx(next()?, next()?)
        .with_context(|| format!("test set in {}", dir.display()))?;
    Ok(FashionMnist {
        train,
        test,
        dir: dir.to_path_buf(),
        origin,
    })
}

fn mirrors() -> Vec<String> {
    match std::env::var("FMNIST_MIRROR") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
            .map(|m| {
                if m.ends_with('/') {
                    m.to_string()
                } else {
                    format!("{m}/")
                }
            })
            .collect(),
        _ => MIRRORS.iter().map(|m| m.to_string()).collect(),
    }
}

/// Downloads the four files into `dir`: each is written under a temporary name and renamed
/// to its final name only after its decompressed checksum matches.
pub fn download_all(dir: &Path, verbose: bool) -> anyhow::Result<()> {
    // Folders made for a download that then fails are removed again, deepest first
    // (`remove_dir` leaves any that something else has filled meanwhile).
    let created = missing_ancestors(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = download_into(dir, verbose);
    if result.is_err() {
        for d in &created {
            let _ = std::fs::remove_dir(d);
        }
    }
    result
}

/// `dir` and those of its ancestors that do not exist yet, deepest first.
fn missing_ancestors(dir: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect()
}

fn download_into(dir: &Path, verbose: bool) -> anyhow::Result<()> {
    // `FMNIST_DOWNLOAD_TIMEOUT` (seconds) replaces every limit: longer for slow links,
    // shorter for tests of a stalled server.
    let limit = std::env::var("FMNIST_DOWNLOAD_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64);
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(limit.unwrap_or(Duration::from_secs(15))))
            .timeout_recv_response(Some(limit.unwrap_or(Duration::from_secs(30))))
            .timeout_recv_body(Some(limit.unwrap_or(Duration::from_secs(300))))
            .build(),
    );
    for file in &FILES {
        let final_path = dir.join(format!("{}.gz", file.stem));
        if final_path.is_file() && read_verified(&final_path, file).is_ok() {
            continue;
        }
        let mut errors = Vec::new();
        let mut done = false;
        for base in mirrors() {
            let url = format!("{base}{}.gz", file.stem);
            if verbose {
                eprintln!("downloading {url}");
            }
            match fetch_verified(&agent, &url, file, &final_path) {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(e) => errors.push(format!("{url}: {e:#}")),
            }
        }
        if !done {
            bail!("cannot download {}.gz: {}", file.stem, errors.join("; "));
        }
    }
    Ok(())
}

/// One file from one address, with up to three attempts on server errors and
/// connection failures, waiting 1 s then 2 s between them.
fn fetch_verified(
    agent: &ureq::Agent,
    url: &str,
    file: &DataFile,
    final_path: &Path,
) -> anyhow::Result<()> {
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(1 << (attempt - 1)));
        }
        match fetch_once(agent, url, file, final_path) {
            Ok(()) => return Ok(()),
            Err(Fetch::Retry(e)) => last = Some(e),
            Err(Fetch::Fatal(e)) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no attempt made")))
}

enum Fetch {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

fn fetch_once(
    agent: &ureq::Agent,
    url: &str,
    file: &DataFile,
    final_path: &Path,
) -> Result<(), Fetch> {
    let mut response = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::StatusCode(code)) if code >= 500 => {
            return Err(Fetch::Retry(anyhow!("server error HTTP {code}")));
        }
        Err(ureq::Error::StatusCode(code)) => return Err(Fetch::Fatal(anyhow!("HTTP {code}"))),
        Err(e) => return Err(Fetch::Retry(anyhow!("{e}"))),
    };
    let mut body = Vec::new();
    response
        .body_mut()
        .with_config()
        .limit(MAX_DOWNLOAD)
        .reader()
        .read_to_end(&mut body)
        .map_err(|e| Fetch::Retry(anyhow!("download interrupted: {e}")))?;
    let check = || -> anyhow::Result<()> {
        let bytes = idx::read_maybe_gz_bytes(&body).context("not a gzip file")?;
        idx::parse(&bytes).context("not a valid IDX file")?;
        verify(file, &bytes)
    };
    check().map_err(Fetch::Fatal)?;
    // Atomic, and an ordinary 0644 file like every output.
    crate::io::atomic::write(final_path, &body).map_err(Fetch::Fatal)?;
    Ok(())
}
