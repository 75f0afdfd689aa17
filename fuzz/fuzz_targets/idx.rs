//! The IDX reader, on raw and gzip-compressed bytes.
#![no_main]

use fmnist::data::idx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = idx::parse(data);
    if let Ok(raw) = idx::read_maybe_gz_bytes(data) {
        let _ = idx::parse(&raw);
    }
});
