//! Downloads from a mirror on loopback: verified files land under their final names,
//! bad ones never do.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

use common::{SYSTEM_DATA, Sandbox};

/// Serves `files` (name → body) over HTTP/1.1 on a loopback port until the test ends;
/// unknown names get 404. Returns the base address.
fn serve(files: HashMap<String, Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
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
            let _ = match files.get(&name) {
                Some(body) => stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(body)),
                None => stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
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
    // Now found there, without any mirror.
    let again = sb.ok(&["data", "--data-dir", d, "--offline"]);
    assert!(again.contains("(--data-dir)"), "{again}");
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
