//! Image decoding (PNG, JPEG, GIF, BMP, WebP, with limits) and the preprocessing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = fmnist::predict::decode_bytes(data) {
        assert_eq!(fmnist::predict::preprocess(&img).len(), 784);
    }
});
