//! Element-wise activations.

use rayon::prelude::*;

use super::{Context, Layer};
use crate::Tensor;

/// Values per parallel work item (element-wise work is identical on any thread count).
const CHUNK: usize = 1 << 15;

/// Rectified linear unit: `y = max(x, 0)`. Any shape.
pub struct Relu {
    shape: Vec<usize>,
}

impl Relu {
    /// A ReLU for inputs of `shape` (without batch).
    pub fn new(shape: &[usize]) -> Self {
        Self {
            shape: shape.to_vec(),
        }
    }
}

impl Layer for Relu {
    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, _: &mut Context<'_>) {
        y.resize(x.shape());
        y.data_mut()
            .par_chunks_mut(CHUNK)
            .zip(x.data().par_chunks(CHUNK))
            .for_each(|(y, x)| {
                for (o, &i) in y.iter_mut().zip(x) {
                    // Not `i.max(0.0)`: that turns NaN into 0 and would hide a diverging run.
                    *o = if i < 0.0 { 0.0 } else { i };
                }
            });
    }

    // y = max(x, 0)  =>  dx = dy where y > 0
    fn backward(&mut self, _x: &Tensor, y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let Some(dx) = dx else { return };
        dx.resize(y.shape());
        let chunks = dx
            .data_mut()
            .par_chunks_mut(CHUNK)
            .zip(dy.data().par_chunks(CHUNK));
        chunks
            .zip(y.data().par_chunks(CHUNK))
            .for_each(|((dx, dy), y)| {
                for ((d, &g), &o) in dx.iter_mut().zip(dy).zip(y) {
                    *d = if o > 0.0 { g } else { 0.0 };
                }
            });
    }
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// Gaussian error linear unit, tanh form (PyTorch's `GELU(approximate="tanh")`):
/// `y = x/2 · (1 + tanh(√(2/π)(x + 0.044715 x³)))`. Any shape.
pub struct Gelu {
    shape: Vec<usize>,
}

impl Gelu {
    /// A GELU for inputs of `shape` (without batch).
    pub fn new(shape: &[usize]) -> Self {
        Self {
            shape: shape.to_vec(),
        }
    }
}

impl Layer for Gelu {
    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, _: &mut Context<'_>) {
        y.resize(x.shape());
        for (o, &v) in y.data_mut().iter_mut().zip(x.data()) {
            let t = (SQRT_2_OVER_PI * (v + GELU_C * v * v * v)).tanh();
            *o = 0.5 * v * (1.0 + t);
        }
    }

    // d/dx [x/2 (1 + tanh u)] = (1 + tanh u)/2 + x/2 (1 - tanh² u) u',  u' = √(2/π)(1 + 3c x²)
    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let Some(dx) = dx else { return };
        dx.resize(x.shape());
        for ((d, &g), &v) in dx.data_mut().iter_mut().zip(dy.data()).zip(x.data()) {
            let t = (SQRT_2_OVER_PI * (v + GELU_C * v * v * v)).tanh();
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * v * v);
            *d = g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du);
        }
    }
}
