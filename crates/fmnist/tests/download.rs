//! Downloads from a mirror on loopback: verified files land under their final names,
//! bad ones never do.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

use common::{SYSTEM_DATA, Sandbox};

/// What the test mirror does with one request.
#[derive(Clone)]
enum Reply {
    /// 200 with the body.
    Body(Vec<u8>),
    /// An error status with no body.
    Status(u16),
    /// Announces the whole body, sends the first `cut` bytes, closes the connection.
    Truncated(Vec<u8>, usize),
    /// Announces the whole body, sends the first `cut` bytes, then nothing for 30 s.
    Stall(Vec<u8>, usize),
}

/// Serves `files` (name → body) over HTTP/1.1 on a loopback port until the test ends;
/// unknown names get 404. Returns the base address.
fn serve(files: HashMap<String, Vec<u8>>) -> String {
    serve_script(
        files
            .into_iter()
            .map(|(k, v)| (k, vec![Reply::Body(v)]))
            .collect(),
    )
}

/// Like [`serve`], but each name answers its successive requests with the replies in
/// order (the last one repeats).
fn serve_script(script: HashMap<String, Vec<Reply>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut served: HashMap<String, usize> = HashMap::new();
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Skip the request headers.
            let mut header = String::new();
            while reader
                .read_line(&mut header)
                .map(|n| n > 2)
                .unwrap_or(false)
            {
                header.clear();
            }
            let name = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            let reply = script.get(&name).map(|replies| {
                let n = served.entry(name.clone()).or_default();
                let r = replies[(*n).min(replies.len() - 1)].clone();
                *n += 1;
                r
            });
            let head = |len: usize| {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
            };
            let _ = match reply.unwrap_or(Reply::Status(404)) {
                Reply::Body(body) => stream
                    .write_all(head(body.len()).as_bytes())
                    .and_then(|()| stream.write_all(&body)),
                Reply::Status(code) => stream.write_all(
                    format!(
                        "HTTP/1.1 {code} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                Reply::Truncated(body, cut) => stream
                    .write_all(head(body.len()).as_bytes())
                    .and_then(|()| stream.write_all(&body[..cut])),
                Reply::Stall(body, cut) => {
                    let r = stream
                        .write_all(head(body.len()).as_bytes())
                        .and_then(|()| stream.write_all(&body[..cut]));
                    // Hold the connection open without sending, off this thread.
                    std::thread::spawn(move || {
                        std::thread::sleep(std::time::Duration::from_secs(30));
                        drop(stream);
                    });
                    r
                }
            };
        }
    });
    format!("http://{addr}/")
}

fn real_files() -> HashMap<String, Vec<u8>> {
    std::fs::read_dir(SYSTEM_DATA)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn a_good_mirror_fills_the_directory_and_later_runs_use_it() {
    let sb = Sandbox::new();
    let mirror = serve(real_files());
    let dir = sb.path("d");
    let d = dir.to_str().unwrap();
    let out = sb.run_with_mirror(&["data", "--data-dir", d], &mirror);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("(downloaded)") && stdout.contains("train: 60,000 images"),
        "{stdout}"
    );
    assert_eq!(names(&dir).len(), 4);
    // Downloads are ordinary files, readable by others like any the user makes (not
    // the 0600 of a temporary file).
    #[cfg(unix)]
    for name in names(&dir) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o644, 0o644, "{name}: {mode:o}");
    }
    // Now found there, without any mirror.
    let again = sb.ok(&["data", "--data-dir", d, "--offline"]);
    assert!(again.contains("(--data-dir)"), "{again}");
}

#[test]
fn a_failed_download_removes_the_folders_it_made() {
    let sb = Sandbox::new();
    let kept = sb.path("kept");
    std::fs::create_dir(&kept).unwrap();
    let dir = kept.join("x/y");
    // No mirror answers (`Sandbox::run` points at a closed port).
    sb.fails(
        &["data", "--data-dir", dir.to_str().unwrap()],
        "cannot download",
    );
    assert!(!kept.join("x").exists(), "the folders made for it remain");
    assert!(kept.is_dir(), "a folder that was there before is kept");
}

#[test]
fn the_cache_comes_before_the_system_package() {
    let sb = Sandbox::new();
    assert!(sb.ok(&["data", "--offline"]).contains("(Debian package"));
    sb.data_copy("cache/fmnist");
    let out = sb.ok(&["data", "--offline"]);
    assert!(out.contains("cache/fmnist (cache)"), "{out}");
}

/// The real files, with the test labels altered (a valid gzip of a valid IDX file, but
/// not the published bytes).
fn files_with_bad_test_labels() -> HashMap<String, Vec<u8>> {
    let mut files = real_files();
    let labels = files.get_mut("t10k-labels-idx1-ubyte.gz").unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(labels.as_slice()),
        &mut raw,
    )
    .unwrap();
    raw[50] = (raw[50] + 1) % 10;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&raw).unwrap();
    *labels = enc.finish().unwrap();
    files
}

#[test]
fn a_wrong_checksum_leaves_nothing_under_the_final_name() {
    let sb = Sandbox::new();
    let mirror = serve(files_with_bad_test_labels());
    let dir = sb.path("d");
    let out = sb.run_with_mirror(&["data", "--data-dir", dir.to_str().unwrap()], &mirror);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot download t10k-labels-idx1-ubyte.gz")
            && err.contains("checksum mismatch"),
        "{err}"
    );
    // The three good files were kept under their names; the bad one exists nowhere.
    assert_eq!(
        names(&dir),
        vec![
            "t10k-images-idx3-ubyte.gz",
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz"
        ]
    );
}

#[test]
fn a_missing_file_is_reported_with_its_status() {
    let sb = Sandbox::new();
    let mut files = real_files();
    files.remove("train-labels-idx1-ubyte.gz");
    let mirror = serve(files);
    let dir = sb.path("d");
    let out = sb.run_with_mirror(&["data", "--data-dir", dir.to_str().unwrap()], &mirror);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot download train-labels-idx1-ubyte.gz") && err.contains("HTTP 404"),
        "{err}"
    );
    assert_eq!(names(&dir), vec!["train-images-idx3-ubyte.gz"]);
}

/// The real files, with `name` answered by `replies` instead.
fn script_for(name: &str, replies: Vec<Reply>) -> HashMap<String, Vec<Reply>> {
    let mut script: HashMap<String, Vec<Reply>> = real_files()
        .into_iter()
        .map(|(k, v)| (k, vec![Reply::Body(v)]))
        .collect();
    script.insert(name.to_string(), replies);
    script
}

#[test]
fn a_server_error_is_retried_with_back_off_then_succeeds() {
    let sb = Sandbox::new();
    let labels = real_files()["train-labels-idx1-ubyte.gz"].clone();
    let mirror = serve_script(script_for(
        "train-labels-idx1-ubyte.gz",
        vec![Reply::Status(500), Reply::Status(503), Reply::Body(labels)],
    ));
    let dir = sb.path("d");
    let started = std::time::Instant::now();
    let out = sb.run_with_mirror(&["data", "--data-dir", dir.to_str().unwrap()], &mirror);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Waits of 1 s and 2 s between the three attempts.
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    assert_eq!(names(&dir).len(), 4);
}

#[test]
fn a_truncated_body_is_retried_and_reported() {
    let sb = Sandbox::new();
    let labels = real_files()["t10k-labels-idx1-ubyte.gz"].clone();
    let cut = labels.len() / 2;
    let mirror = serve_script(script_for(
        "t10k-labels-idx1-ubyte.gz",
        vec![Reply::Truncated(labels, cut)],
    ));
    let dir = sb.path("d");
    let out = sb.run_with_mirror(&["data", "--data-dir", dir.to_str().unwrap()], &mirror);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot download t10k-labels-idx1-ubyte.gz")
            && last.contains("download interrupted"),
        "{err}"
    );
    assert!(!names(&dir).contains(&"t10k-labels-idx1-ubyte.gz".to_string()));
    assert!(
        common::hidden_files(&dir).is_empty(),
        "no temporary file left behind"
    );
}

#[test]
fn a_stalled_connection_times_out() {
    let sb = Sandbox::new();
    let images = real_files()["t10k-images-idx3-ubyte.gz"].clone();
    let mirror = serve_script(script_for(
        "t10k-images-idx3-ubyte.gz",
        vec![Reply::Stall(images, 1000)],
    ));
    let dir = sb.path("d");
    let started = std::time::Instant::now();
    let out = sb.run_with_mirror_env(
        &["data", "--data-dir", dir.to_str().unwrap()],
        &mirror,
        &[("FMNIST_DOWNLOAD_TIMEOUT", "1")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot download t10k-images-idx3-ubyte.gz")
            && last.contains("timeout"),
        "{err}"
    );
    // Three attempts of about 1 s with waits of 1 s and 2 s, not 30 s of stalling.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(!names(&dir).contains(&"t10k-images-idx3-ubyte.gz".to_string()));
    assert!(common::hidden_files(&dir).is_empty());
}
