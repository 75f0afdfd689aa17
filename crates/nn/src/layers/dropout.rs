//! Inverted dropout.

use super::{Context, Layer, Mode};
use crate::Tensor;

/// Inverted dropout: in training each value is zeroed with probability `rate` and the
/// survivors scaled by `1/(1-rate)`; inference is the identity. Any shape.
pub struct Dropout {
    shape: Vec<usize>,
    rate: f32,
    /// The last forward's multipliers (0 or `1/(1-rate)`).
    mask: Vec<f32>,
    last_mode: Mode,
}

impl Dropout {
    /// Dropout with drop probability `rate` in `[0, 1)`.
    pub fn new(shape: &[usize], rate: f32) -> Result<Self, crate::Error> {
        if !(0.0..1.0).contains(&rate) {
            return Err(crate::Error::Spec(format!(
                "dropout rate must be in [0, 1), got {rate}"
            )));
        }
        Ok(Self {
            shape: shape.to_vec(),
            rate,
            mask: Vec::new(),
            last_mode: Mode::Eval,
        })
    }
}

impl Layer for Dropout {
    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn scratch_per_example(&self) -> usize {
        self.shape.iter().product()
    }

    // y = x · mask
    fn forward(&mut self, x: &Tensor, y: &mut Tensor, ctx: &mut Context<'_>) {
        self.last_mode = ctx.mode;
        y.copy_from(x);
        if ctx.mode == Mode::Eval || self.rate == 0.0 {
            return;
        }
        let keep = 1.0 / (1.0 - self.rate);
        self.mask.resize(x.len(), 0.0);
        for m in &mut self.mask {
            *m = if ctx.rng.uniform() < self.rate {
                0.0
            } else {
                keep
            };
        }
        for (o, &m) in y.data_mut().iter_mut().zip(&self.mask) {
            *o *= m;
        }
    }

    // dx = dy · mask
    fn backward(&mut self, _x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let Some(dx) = dx else { return };
        dx.copy_from(dy);
        if self.last_mode == Mode::Train && self.rate > 0.0 {
            for (d, &m) in dx.data_mut().iter_mut().zip(&self.mask) {
                *d *= m;
            }
        }
    }
}
