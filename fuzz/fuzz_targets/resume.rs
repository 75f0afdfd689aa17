//! `fmnist train --resume` on arbitrary checkpoint bytes: loading, validating the
//! recipe and architecture like flags, and reserving the outputs beside it, never
//! panics, and a refused file leaves nothing behind.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("m.checkpoint.safetensors");
    std::fs::write(&path, data).expect("write the input");
    if let Ok(run) = fmnist::train::Run::resume(&path, None) {
        // Outputs go beside the checkpoint, whatever it says.
        assert_eq!(run.outputs().model, dir.path().join("m.safetensors"));
        assert!(run.config().validate().is_ok());
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
});
