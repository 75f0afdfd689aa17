//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use nn::{LayerSpec, ModelSpec, Network, Rng, Tensor};

/// A network of `layers` on examples of `input` shape, Torch-initialised (non-zero biases).
pub fn net(input: &[usize], layers: Vec<LayerSpec>, seed: u64) -> Network {
    let spec = ModelSpec {
        name: "t".into(),
        input: input.to_vec(),
        init: nn::Init::Torch,
        layers,
    };
    spec.build(&mut Rng::new(seed))
        .expect("valid test architecture")
}

/// A tensor of standard normal values.
pub fn normal(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| rng.normal()).collect()).unwrap()
}

/// Distinct values `0.05` apart, shuffled: no two within 2·eps of each other or of zero,
/// so max and ReLU kinks are never crossed by a finite-difference step of 1e-2.
pub fn spaced(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n)
        .map(|i| (i as f32 - n as f32 / 2.0 + 0.5) * 0.05)
        .collect();
    Rng::new(seed).shuffle(&mut v);
    Tensor::from_vec(shape, v).unwrap()
}
