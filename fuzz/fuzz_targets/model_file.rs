//! The model-file and checkpoint loaders: safetensors header, metadata JSON, tensors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut model) = fmnist::Classifier::from_bytes(data) {
        // A model that loads must also classify.
        let _ = model.probabilities(&[0u8; 784]);
    }
    let _ = fmnist::train::checkpoint::Checkpoint::from_bytes(data);
});
