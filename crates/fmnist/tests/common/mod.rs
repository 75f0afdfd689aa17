//! Running the real `fmnist` binary in an isolated environment.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Where CI installs the real data (Debian package `dataset-fashion-mnist`).
pub const SYSTEM_DATA: &str = "/usr/share/datasets/fashion-mnist";

/// A scratch directory that is also the tool's `$HOME` (so no user cache is touched).
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        assert!(
            Path::new(SYSTEM_DATA)
                .join("t10k-labels-idx1-ubyte.gz")
                .is_file(),
            "the tests need the real data: apt-get install dataset-fashion-mnist"
        );
        Self {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `fmnist args...` with no network mirror reachable and a private cache.
    pub fn run(&self, args: &[&str]) -> Output {
        // Port 9 (discard) on loopback: any download attempt fails at once.
        self.run_with_mirror(args, "http://127.0.0.1:9/")
    }

    /// Runs `fmnist args...` downloading from `mirror`.
    pub fn run_with_mirror(&self, args: &[&str], mirror: &str) -> Output {
        self.run_with_mirror_env(args, mirror, &[])
    }

    /// [`Sandbox::run_with_mirror`] with `env` added.
    pub fn run_with_mirror_env(&self, args: &[&str], mirror: &str, env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fmnist"))
            .envs(env.iter().copied())
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env_remove("FMNIST_DATA")
            .env("FMNIST_MIRROR", mirror)
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run fmnist")
    }

    /// Starts `fmnist args...` like [`Sandbox::run`] with `env` added, standard error piped.
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
        self.command(args)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start fmnist")
    }

    /// Runs a command that must succeed; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "fmnist {args:?} failed: {stderr}");
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Runs a command that must fail with exactly one error line containing `needle`
    /// (the last line on standard error; notices such as "downloading ..." may precede
    /// it), no panic and no backtrace. Returns the line.
    pub fn fails(&self, args: &[&str], needle: &str) -> String {
        let out = self.run(args);
        let all = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "fmnist {args:?} should fail");
        assert_ne!(
            out.status.code(),
            Some(101),
            "fmnist {args:?} panicked: {all}"
        );
        let errors = all.lines().filter(|l| l.contains("error")).count();
        assert_eq!(
            errors, 1,
            "fmnist {args:?}: want one error line, got:\n{all}"
        );
        let stderr = all.lines().last().unwrap_or_default().to_string();
        assert!(stderr.starts_with("error: "), "{all}");
        assert!(
            stderr.contains(needle),
            "fmnist {args:?}: {stderr:?} lacks {needle:?}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
        stderr
    }

    /// Trains a one-epoch model on the first `limit` training images (`val` of them for
    /// validation) to `m.safetensors`, for tests where its quality does not matter.
    pub fn quick_model(&self, limit: usize, val: usize) {
        self.ok(&[
            "train",
            "--epochs",
            "1",
            "--limit",
            &limit.to_string(),
            "--val-size",
            &val.to_string(),
            "--out",
            "m.safetensors",
            "--offline",
        ]);
    }

    /// A data directory holding copies of the four real files.
    pub fn data_copy(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in std::fs::read_dir(SYSTEM_DATA).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
        }
        dir
    }
}

/// `fmnist serve m.safetensors` on a free loopback port, killed when dropped.
pub struct Server {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base: String,
}

impl Server {
    /// Starts the server with `extra` arguments and waits until it listens.
    pub fn start(sb: &Sandbox, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fmnist"))
            .args([
                "serve",
                "m.safetensors",
                "--addr",
                "127.0.0.1:0",
                "--data-dir",
                SYSTEM_DATA,
            ])
            .args(extra)
            .current_dir(sb.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("fmnist serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim_end_matches('/')
            .to_string();
        Server { child, base }
    }

    /// SIGINT (Ctrl-C), then the exit status and the rest of stdout.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        interrupt(&self.child);
        let status = self.child.wait().unwrap();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(self.child.stdout.as_mut().unwrap(), &mut rest);
        (status, rest)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Sends SIGINT, what Ctrl-C sends, to a child process.
pub fn interrupt(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -INT {}", child.id());
}

/// Files in `dir` whose names start with a dot (temporaries that should not remain).
pub fn hidden_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect()
}

impl Sandbox {
    /// `fmnist args...` in the sandbox, with a private cache and no reachable mirror.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fmnist"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env_remove("FMNIST_DATA")
            .env("FMNIST_MIRROR", "http://127.0.0.1:9/");
        command
    }

    /// [`Sandbox::run`], killed and failed if it has not ended after `secs` seconds (for
    /// inputs that used to hang, such as FIFOs).
    pub fn run_within(&self, args: &[&str], secs: u64) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fmnist");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while child.try_wait().expect("wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("fmnist {args:?} still running after {secs} s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.wait_with_output().expect("output")
    }

    /// Like [`Sandbox::fails`], for a command that must end within `secs` seconds.
    pub fn fails_within(&self, args: &[&str], needle: &str, secs: u64) -> String {
        let out = self.run_within(args, secs);
        let all = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "fmnist {args:?} should fail");
        let lines: Vec<&str> = all.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(
            lines.len(),
            1,
            "fmnist {args:?}: want one error line:\n{all}"
        );
        assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
        lines[0].to_string()
    }
}

/// Rewrites a safetensors file's header with `edit`, leaving its data as it is (for
/// damaged and hostile model files and checkpoints).
pub fn edit_header(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    edit(&mut header);
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend_from_slice(&bytes[8 + len..]);
    std::fs::write(path, out).unwrap();
}

/// Edits the JSON held as a string in metadata entry `key` of a safetensors file.
pub fn edit_metadata_json(path: &Path, key: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    edit_header(path, |h| {
        let entry = &mut h["__metadata__"][key];
        let mut value: serde_json::Value =
            serde_json::from_str(entry.as_str().expect("a string entry")).unwrap();
        edit(&mut value);
        *entry = value.to_string().into();
    });
}

/// Makes a FIFO (named pipe) at `path`.
pub fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
}
