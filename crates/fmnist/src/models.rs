//! Built-in architectures (presets) and user-defined ones from JSON files.

use std::path::Path;

use anyhow::{Context, bail};
use nn::{Init, LayerSpec as L, ModelSpec};

use crate::data::{CLASS_NAMES, SIDE};

/// Names of the built-in architectures.
pub const PRESETS: [&str; 1] = ["simple"];

/// The built-in architecture `name`, if there is one.
pub fn preset(name: &str) -> Option<ModelSpec> {
    match name {
        "simple" => Some(simple()),
        _ => None,
    }
}

/// The seed assignment's Keras CNN: Conv 32 3×3 ReLU, MaxPool 2, Conv 64 3×3 ReLU,
/// MaxPool 2, Flatten, Dense 128 ReLU, Dropout 0.5, Dense 10; Glorot-uniform weights.
pub fn simple() -> ModelSpec {
    ModelSpec {
        name: "simple".into(),
        input: vec![SIDE, SIDE, 1],
        init: Init::GlorotUniform,
        layers: vec![
            L::Conv2d {
                filters: 32,
                kernel: 3,
                stride: 1,
                padding: 0,
                bias: true,
            },
            L::Relu,
            L::MaxPool2d {
                size: 2,
                stride: None,
            },
            L::Conv2d {
                filters: 64,
                kernel: 3,
                stride: 1,
                padding: 0,
                bias: true,
            },
            L::Relu,
            L::MaxPool2d {
                size: 2,
                stride: None,
            },
            L::Flatten,
            L::Linear {
                units: 128,
                bias: true,
            },
            L::Relu,
            L::Dropout { rate: 0.5 },
            L::Linear {
                units: CLASS_NAMES.len(),
                bias: true,
            },
        ],
    }
}

/// Checks that `spec` builds and fits Fashion-MNIST: 28×28×1 in, 10 scores out.
pub fn check_fits(spec: &ModelSpec) -> anyhow::Result<()> {
    if spec.input != [SIDE, SIDE, 1] {
        bail!(
            "the architecture's input is {:?}; Fashion-MNIST needs [28, 28, 1]",
            spec.input
        );
    }
    let net = spec.build(&mut nn::Rng::new(0))?;
    if net.output_shape() != [CLASS_NAMES.len()] {
        bail!(
            "the architecture outputs {:?}; Fashion-MNIST needs [10] (one score per class)",
            net.output_shape()
        );
    }
    Ok(())
}

/// Reads and checks a user-defined architecture from a JSON file.
pub fn load_arch(path: &Path) -> anyhow::Result<ModelSpec> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > 1 << 20 {
        bail!(
            "{} is larger than 1 MiB; an architecture file is a short JSON document",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let spec = ModelSpec::from_json(&text).with_context(|| format!("{}", path.display()))?;
    check_fits(&spec).with_context(|| format!("{}", path.display()))?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_has_the_keras_parameter_count() {
        // Keras' model.summary() for the seed network: 225,034 parameters.
        let net = simple().build(&mut nn::Rng::new(0)).unwrap();
        assert_eq!(net.num_params(), 225_034);
        check_fits(&simple()).unwrap();
        assert!(PRESETS.iter().all(|p| preset(p).is_some()));
    }
}
