//! Residual connection around a sub-network.

use super::{Context, Layer, Param, TensorKey};
use crate::{Network, Tensor};

/// Residual block `y = x + f(x)`, where `f` is a sub-network whose output shape equals
/// its input shape.
pub struct Residual {
    body: Network,
    /// Workspace for `df/dx` before the skip path's `dy` is added.
    dbody: Tensor,
}

impl Residual {
    /// Wraps `body`; errors unless it preserves shape.
    pub fn new(body: Network) -> Result<Self, crate::Error> {
        if body.input_shape() != body.output_shape() {
            return Err(crate::Error::Spec(format!(
                "residual body maps {:?} to {:?}; it must keep the shape",
                body.input_shape(),
                body.output_shape()
            )));
        }
        Ok(Self {
            body,
            dbody: Tensor::default(),
        })
    }
}

impl Layer for Residual {
    fn output_shape(&self) -> &[usize] {
        self.body.output_shape()
    }

    // The body's own activations and gradients, and `df/dx`.
    fn scratch_per_example(&self) -> usize {
        let input: usize = self.body.input_shape().iter().product();
        self.body.values_per_example().saturating_add(input)
    }

    // y = x + f(x)
    fn forward(&mut self, x: &Tensor, y: &mut Tensor, ctx: &mut Context<'_>) {
        let fx = self.body.forward_ctx(x, ctx);
        y.resize(x.shape());
        for ((o, &a), &b) in y.data_mut().iter_mut().zip(x.data()).zip(fx.data()) {
            *o = a + b;
        }
    }

    // dx = dy + f'(x)ᵀ dy
    fn backward(&mut self, x: &Tensor, _y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        match dx {
            Some(dx) => {
                self.body.backward(x, dy, Some(&mut self.dbody));
                dx.resize(x.shape());
                for ((d, &a), &b) in dx
                    .data_mut()
                    .iter_mut()
                    .zip(dy.data())
                    .zip(self.dbody.data())
                {
                    *d = a + b;
                }
            }
            None => self.body.backward(x, dy, None),
        }
    }

    fn flops(&self) -> u64 {
        self.body.forward_flops()
    }

    fn inference_flops(&self) -> u64 {
        self.body.inference_flops()
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        self.body.params_mut()
    }

    fn tensors(&self) -> Vec<(TensorKey, &Tensor)> {
        self.body
            .tensor_keys()
            .into_iter()
            .map(|(k, v)| (inside(k), v))
            .collect()
    }

    fn tensors_mut(&mut self) -> Vec<(TensorKey, &mut Tensor)> {
        self.body
            .tensor_keys_mut()
            .into_iter()
            .map(|(k, v)| (inside(k), v))
            .collect()
    }
}

/// A body tensor's key as this layer lists it: under its own spec, then the body's path.
fn inside(mut key: TensorKey) -> TensorKey {
    key.path.insert(0, 0);
    key
}
