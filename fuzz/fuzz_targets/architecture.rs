//! Architecture JSON: parsing, shape checking, building and one forward pass.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = nn::ModelSpec::from_json(text) else {
        return;
    };
    if let Ok(mut net) = spec.build(&mut nn::Rng::new(0)) {
        let n: usize = spec.input.iter().product();
        if let Ok(x) = nn::Tensor::from_vec(&[[1].as_slice(), &spec.input].concat(), vec![0.5; n]) {
            let _ = net.forward(&x, nn::Mode::Eval, &mut nn::Rng::new(1));
        }
    }
});
