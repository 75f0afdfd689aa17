//! Built-in architectures (presets) and user-defined ones from JSON files.

use std::path::Path;

use anyhow::{Context, bail};
use nn::{Init, LayerSpec as L, ModelSpec};

use crate::data::{CLASS_NAMES, SIDE};

/// Names of the built-in architectures.
pub const PRESETS: [&str; 5] = ["simple", "simple-bn", "cnn-bn", "resnet-small", "resnet9"];

/// The built-in architecture `name`, if there is one.
pub fn preset(name: &str) -> Option<ModelSpec> {
    match name {
        "simple" => Some(simple()),
        "simple-bn" => Some(simple_bn()),
        "cnn-bn" => Some(cnn_bn()),
        "resnet-small" => Some(resnet_small()),
        "resnet9" => Some(resnet9()),
        _ => None,
    }
}

fn conv3(filters: usize, padding: usize, bias: bool) -> L {
    L::Conv2d {
        filters,
        kernel: 3,
        stride: 1,
        padding,
        bias,
    }
}

fn batch_norm() -> L {
    L::BatchNorm {
        momentum: 0.1,
        eps: 1e-5,
    }
}

fn pool() -> L {
    L::MaxPool2d {
        size: 2,
        stride: None,
    }
}

/// 3×3 convolution with same padding and no bias (the norm's shift replaces it), batch
/// norm, ReLU.
fn conv_bn_relu(filters: usize) -> [L; 3] {
    [conv3(filters, 1, false), batch_norm(), L::Relu]
}

/// The first layer of the batch-norm networks: a 3×3 convolution of the 28×28 image
/// with ReLU and a 2×2 max pool, without batch norm (on the largest map it cost a third
/// of the training time and gained nothing measurable).
fn stem(filters: usize, padding: usize) -> [L; 3] {
    [conv3(filters, padding, true), L::Relu, pool()]
}

/// `x + f(x)` where `f` is two conv–BN–ReLUs of `width` channels.
fn residual_block(width: usize) -> L {
    L::Residual {
        body: [conv_bn_relu(width), conv_bn_relu(width)].concat(),
    }
}

/// A 28×28 grey-image network with He initialisation, as all the batch-norm ones are.
fn bn_network(name: &str, layers: Vec<L>) -> ModelSpec {
    ModelSpec {
        name: name.into(),
        input: vec![SIDE, SIDE, 1],
        init: Init::HeUniform,
        layers,
    }
}

/// Flatten, dense `units` with batch norm and ReLU, dense 10.
fn dense_head(units: usize) -> [L; 5] {
    [
        L::Flatten,
        L::Linear { units, bias: false },
        batch_norm(),
        L::Relu,
        L::Linear {
            units: CLASS_NAMES.len(),
            bias: true,
        },
    ]
}

/// The seed network with batch norm after the second convolution and the hidden dense
/// layer instead of dropout: it trains at 3e-3 and converges in five epochs
/// (the `fast` preset). 225 k parameters, 5.3 MFLOP per image.
pub fn simple_bn() -> ModelSpec {
    let mut layers = stem(32, 0).to_vec();
    layers.extend([conv3(64, 0, false), batch_norm(), L::Relu, pool()]);
    layers.extend(dense_head(128));
    bn_network("simple-bn", layers)
}

/// Three convolutions (32 at 28×28, 64 at 14×14, 128 at 7×7) with batch norm and a
/// 256-unit dense layer (the `standard` preset). 1.7 M parameters, 18 MFLOP per image.
pub fn cnn_bn() -> ModelSpec {
    let mut layers = stem(32, 1).to_vec();
    layers.extend(conv_bn_relu(64));
    layers.push(pool());
    layers.extend(conv_bn_relu(128));
    layers.extend(dense_head(256));
    bn_network("cnn-bn", layers)
}

/// The smallest residual network worth having: the stem, a conv–BN–ReLU of 64 at 14×14,
/// then at 7×7 a residual block of two 64-wide conv–BN–ReLUs, and the dense head. The
/// same compute as `cnn-bn` (0.9 M parameters, 16 MFLOP per image).
pub fn resnet_small() -> ModelSpec {
    let mut layers = stem(32, 1).to_vec();
    layers.extend(conv_bn_relu(64));
    layers.push(pool());
    layers.push(residual_block(64));
    layers.extend(dense_head(256));
    bn_network("resnet-small", layers)
}

/// A ResNet-9 in the style of Page's fast CIFAR-10 network, sized for 28×28: the stem,
/// then at 14×14 and at 7×7 a widening conv–BN–ReLU followed by a residual block of two,
/// then the dense head (the `best` preset). 2.1 M parameters, 76 MFLOP per image.
pub fn resnet9() -> ModelSpec {
    let mut layers = stem(32, 1).to_vec();
    for (stage, width) in [64, 128].into_iter().enumerate() {
        if stage > 0 {
            layers.push(pool());
        }
        layers.extend(conv_bn_relu(width));
        layers.push(residual_block(width));
    }
    layers.extend(dense_head(256));
    bn_network("resnet9", layers)
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
    build_checked(spec, &mut nn::Rng::new(0)).map(drop)
}

/// Builds `spec` with weights drawn from `rng`, checking that it fits Fashion-MNIST
/// (see [`check_fits`]), so that callers who need the network build it once.
pub fn build_checked(spec: &ModelSpec, rng: &mut nn::Rng) -> anyhow::Result<nn::Network> {
    if spec.input != [SIDE, SIDE, 1] {
        bail!(
            "the architecture's input is {:?}; Fashion-MNIST needs [28, 28, 1]",
            spec.input
        );
    }
    let net = spec.build(rng)?;
    if net.output_shape() != [CLASS_NAMES.len()] {
        bail!(
            "the architecture outputs {:?}; Fashion-MNIST needs [10] (one score per class)",
            net.output_shape()
        );
    }
    Ok(net)
}

/// Reads and checks a user-defined architecture from a JSON file, or takes a model
/// file's (`.safetensors`: an imported model, say, to benchmark or train afresh).
pub fn load_arch(path: &Path) -> anyhow::Result<ModelSpec> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
    {
        return Ok(crate::model::Classifier::load(path)?.spec);
    }
    let bytes = crate::io::bounded::read(
        path,
        1 << 20,
        "over 1 MiB; an architecture file is a short JSON document",
    )?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not text (UTF-8)", path.display()))?;
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

    #[test]
    fn preset_architectures_have_the_documented_sizes() {
        // Counted by hand from the layer lists (weights, biases, batch-norm γ and β).
        for (name, params, mflop) in [
            ("simple-bn", 225_226, 5.3),
            ("cnn-bn", 1_701_578, 18.1),
            ("resnet-small", 898_762, 16.5),
            ("resnet9", 2_070_986, 75.9),
        ] {
            let spec = preset(name).unwrap();
            check_fits(&spec).unwrap();
            let net = spec.build(&mut nn::Rng::new(0)).unwrap();
            assert_eq!(net.num_params(), params, "{name}");
            let got = net.forward_flops() as f64 / 1e6;
            assert!((got - mflop).abs() < 0.1, "{name}: {got} MFLOP");
        }
    }
}
