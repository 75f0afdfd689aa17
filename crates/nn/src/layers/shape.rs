//! Shape-only layers.

use super::{Context, Layer};
use crate::Tensor;

/// Flattens `[n, d1, d2, ...]` to `[n, d1·d2·...]` (NHWC order).
pub struct Flatten {
    out_shape: Vec<usize>,
}

impl Flatten {
    /// A flatten for inputs of `shape` (without batch).
    pub fn new(shape: &[usize]) -> Self {
        Self {
            out_shape: vec![shape.iter().product()],
        }
    }
}

impl Layer for Flatten {
    fn output_shape(&self) -> &[usize] {
        &self.out_shape
    }

    fn forward(&mut self, x: &Tensor, y: &mut Tensor, _: &mut Context<'_>) {
        y.resize_batch(x.batch(), &self.out_shape);
        y.data_mut().copy_from_slice(x.data());
    }

    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        if let Some(dx) = dx {
            dx.resize(x.shape());
            dx.data_mut().copy_from_slice(dy.data());
        }
    }
}
