//! ONNX import: any bytes as an ONNX model; what imports must build, load and classify.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scaling = fmnist::interop::InputScaling::default();
    let Ok(imported) = fmnist::interop::onnx_import::from_bytes(data, scaling) else {
        return;
    };
    if let Ok(mut model) = imported.into_classifier("fuzz") {
        let _ = model.probabilities(&[128u8; fmnist::data::PIXELS]);
    }
});
