//! Weight initialisation as Keras and PyTorch do it.

use serde::{Deserialize, Serialize};

use crate::{Rng, Tensor};

/// How weights and biases start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Keras' default: weights `U(±√(6/(fan_in+fan_out)))`, biases zero.
    #[default]
    GlorotUniform,
    /// Keras' `he_uniform`: weights `U(±√(6/fan_in))`, biases zero.
    HeUniform,
    /// PyTorch's default for `Conv2d`/`Linear`: weights and biases `U(±1/√fan_in)`.
    Torch,
}

impl Init {
    /// A weight tensor of `shape`; for convolutions `fan_in = k²·c_in`, `fan_out = k²·c_out`.
    pub fn weight(self, shape: &[usize], fan_in: usize, fan_out: usize, rng: &mut Rng) -> Tensor {
        let limit = match self {
            Init::GlorotUniform => (6.0 / (fan_in + fan_out) as f32).sqrt(),
            Init::HeUniform => (6.0 / fan_in as f32).sqrt(),
            Init::Torch => 1.0 / (fan_in as f32).sqrt(),
        };
        uniform(shape, limit, rng)
    }

    /// A bias vector of `n` values.
    pub fn bias(self, n: usize, fan_in: usize, rng: &mut Rng) -> Tensor {
        match self {
            Init::GlorotUniform | Init::HeUniform => Tensor::zeros(&[n]),
            Init::Torch => uniform(&[n], 1.0 / (fan_in as f32).sqrt(), rng),
        }
    }
}

fn uniform(shape: &[usize], limit: f32, rng: &mut Rng) -> Tensor {
    let mut t = Tensor::zeros(shape);
    for v in t.data_mut() {
        *v = rng.uniform_range(-limit, limit);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_formulas() {
        let mut rng = Rng::new(0);
        let w = Init::GlorotUniform.weight(&[64, 3, 3, 32], 288, 576, &mut rng);
        let limit = (6.0f32 / 864.0).sqrt();
        let max = w.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(max <= limit && max > 0.95 * limit, "{max} vs {limit}");
        assert!(
            Init::HeUniform
                .bias(5, 10, &mut rng)
                .data()
                .iter()
                .all(|&b| b == 0.0)
        );
        let b = Init::Torch.bias(1000, 100, &mut rng);
        assert!(b.data().iter().all(|v| v.abs() <= 0.1) && b.data().iter().any(|v| v.abs() > 0.09));
    }
}
