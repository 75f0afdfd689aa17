//! Output directories that are read-only or full, on real file systems: small tmpfs mounts
//! made in a private mount namespace (`unshare`, no root needed where user namespaces are
//! enabled), so the test never fills or remounts anything of the machine's.

mod common;

use std::process::Command;

use common::{SYSTEM_DATA, Sandbox};
use fmnist::train::checkpoint::Checkpoint;

/// Runs the scenario in a namespace with its own mounts; each step leaves its exit code,
/// standard error and directory listing in the sandbox, outside the mounts, for the test
/// to read.
const SCENARIO: &str = r#"
set -u
cd "$T"
mkdir ro full mid
mount -t tmpfs -o size=1m,ro tmpfs ro
mount -t tmpfs -o size=4m tmpfs full
mount -t tmpfs -o size=16m tmpfs mid
printf good > full/m.safetensors
printf good > mid/m.safetensors
quick="--limit 2000 --val-size 200 --data-dir $DATA --offline"

"$FMNIST" train --epochs 2 $quick --out ro/m.safetensors 2> ro.err; echo $? > ro.code

"$FMNIST" train --epochs 2 $quick --out full/m.safetensors 2> full.err; echo $? > full.code
ls -A full > full.ls

# The disk fills up while training runs, right after its first checkpoint.
"$FMNIST" train --epochs 10 $quick --out mid/m.safetensors 2> mid.err &
pid=$!
for _ in $(seq 6000); do
  [ -f mid/m.checkpoint.safetensors ] && break
  kill -0 $pid 2> /dev/null || break
  sleep 0.01
done
cat /dev/zero > mid/fill 2> /dev/null
wait $pid; echo $? > mid.code
ls -A mid > mid.ls
cp mid/m.safetensors mid.model
cp mid/m.checkpoint.safetensors mid.checkpoint
rm mid/fill

# With room again, the kept checkpoint finishes the run.
"$FMNIST" train --resume mid/m.checkpoint.safetensors --data-dir "$DATA" --offline \
  > /dev/null 2> resume.err
echo $? > resume.code
ls -A mid > resume.ls
"#;

fn read(sb: &Sandbox, name: &str) -> String {
    std::fs::read_to_string(sb.path(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .trim()
        .to_string()
}

/// The only line on standard error of a step that must fail with exit status 1.
fn one_error(sb: &Sandbox, step: &str) -> String {
    assert_eq!(read(sb, &format!("{step}.code")), "1", "{step}");
    let err = read(sb, &format!("{step}.err"));
    assert_eq!(err.lines().count(), 1, "{step}: {err}");
    assert!(err.starts_with("error: "), "{step}: {err}");
    assert!(!err.contains(".fmnist-"), "names a temporary file: {err}");
    err
}

fn listing(sb: &Sandbox, step: &str) -> Vec<String> {
    let mut names: Vec<String> = read(sb, &format!("{step}.ls"))
        .lines()
        .map(String::from)
        .collect();
    names.sort();
    names
}

#[test]
fn read_only_and_full_output_directories() {
    let sb = Sandbox::new();
    let status = Command::new("unshare")
        .args(["--map-root-user", "--mount", "sh", "-c", SCENARIO])
        .env("T", sb.dir.path())
        .env("FMNIST", env!("CARGO_BIN_EXE_fmnist"))
        .env("DATA", SYSTEM_DATA)
        .env("HOME", sb.dir.path())
        .status()
        .expect("unshare (util-linux) runs the scenario in a private mount namespace");
    assert!(status.success(), "the scenario could not run");

    // Read-only: refused before training, by name.
    let err = one_error(&sb, "ro");
    assert!(
        err.contains("cannot write ro/m.safetensors") && err.contains("Read-only file system"),
        "{err}"
    );

    // Too small for what the run will write: refused before training, with the sizes,
    // and the good file in place.
    let err = one_error(&sb, "full");
    assert!(err.starts_with("error: not enough space in full: this run writes about "));
    assert!(err.ends_with(" are free"), "{err}");
    assert_eq!(listing(&sb, "full"), ["m.safetensors"]);

    // Full in the middle: a clear error naming the epoch and the kept checkpoint, which
    // is whole, the good model untouched, no temporary files.
    let err = one_error(&sb, "mid");
    assert!(err.contains("No space left on device"), "{err}");
    let epoch: usize = err
        .strip_prefix("error: cannot save the checkpoint of epoch ")
        .and_then(|r| r.split(';').next())
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        err.contains(&format!(
            "the last good state, after epoch {}, is kept in mid/m.checkpoint.safetensors",
            epoch - 1
        )),
        "{err}"
    );
    assert_eq!(
        listing(&sb, "mid"),
        ["fill", "m.checkpoint.safetensors", "m.safetensors"]
    );
    assert_eq!(read(&sb, "mid.model"), "good");
    let kept = Checkpoint::load(&sb.path("mid.checkpoint")).expect("the kept checkpoint loads");
    assert_eq!(kept.epochs_done, epoch - 1);

    assert_eq!(read(&sb, "resume.code"), "0", "{}", read(&sb, "resume.err"));
    assert_eq!(
        listing(&sb, "resume"),
        [
            "m.confusion.png",
            "m.curves.png",
            "m.history.csv",
            "m.safetensors"
        ]
    );
}
