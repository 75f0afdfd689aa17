//! A sequential network: layers in order, with every activation kept for backward.

use crate::layers::{Context, Layer, Mode, Param, TensorKey};
use crate::{Precision, Rng, Tensor};

/// Layers applied in order. Activations and their gradients live here, allocated on the
/// first batch and reused afterwards.
pub struct Network {
    input_shape: Vec<usize>,
    layers: Vec<Box<dyn Layer>>,
    /// Each built layer's index in the spec (a fused layer has its first one's), which
    /// names its tensors: fusing never changes a model file.
    ids: Vec<usize>,
    /// `acts[i]` is layer `i`'s output.
    acts: Vec<Tensor>,
    /// `grads[i]` is dLoss/d`acts[i]` (the last one is supplied by the caller).
    grads: Vec<Tensor>,
    /// The arithmetic of matrix products in every pass.
    precision: Precision,
}

impl Network {
    /// A network from built layers; use [`crate::ModelSpec::build`] to get one.
    pub(crate) fn from_layers(
        input_shape: Vec<usize>,
        layers: Vec<(usize, Box<dyn Layer>)>,
    ) -> Self {
        let n = layers.len();
        let (ids, layers) = layers.into_iter().unzip();
        Self {
            input_shape,
            layers,
            ids,
            acts: (0..n).map(|_| Tensor::default()).collect(),
            grads: (0..n).map(|_| Tensor::default()).collect(),
            precision: Precision::F32,
        }
    }

    /// How many layers were built (a fused pair counts once).
    pub fn layers_len(&self) -> usize {
        self.layers.len()
    }

    /// One example's input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// One example's output shape.
    pub fn output_shape(&self) -> &[usize] {
        self.layers
            .last()
            .map_or(&self.input_shape, |l| l.output_shape())
    }

    /// Runs the network on a batch `x` (`[n, input_shape...]`) and returns the output.
    /// `rng` drives dropout in [`Mode::Train`].
    pub fn forward(&mut self, x: &Tensor, mode: Mode, rng: &mut Rng) -> &Tensor {
        let precision = self.precision;
        self.forward_ctx(
            x,
            &mut Context {
                mode,
                rng,
                precision,
            },
        )
    }

    /// Sets the arithmetic of the matrix products of later passes (fp32 by default).
    /// bf16 changes only how products are computed: parameters, gradients and model
    /// files stay fp32.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// The arithmetic of the matrix products.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub(crate) fn forward_ctx(&mut self, x: &Tensor, ctx: &mut Context<'_>) -> &Tensor {
        assert_eq!(&x.shape()[1..], self.input_shape.as_slice(), "input shape");
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let (done, rest) = self.acts.split_at_mut(i);
            let input = if i == 0 { x } else { &done[i - 1] };
            layer.forward(input, &mut rest[0], ctx);
        }
        &self.acts[self.acts.len() - 1]
    }

    /// Back-propagates `dy` (dLoss/doutput) through the last forward pass on `x`:
    /// fills every parameter gradient and, if given, `dx` = dLoss/dx.
    pub fn backward(&mut self, x: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>) {
        let mut dx = dx;
        let last = self.layers.len() - 1;
        for i in (0..self.layers.len()).rev() {
            let input = if i == 0 { x } else { &self.acts[i - 1] };
            let (before, from_i) = self.grads.split_at_mut(i);
            let dyi = if i == last { dy } else { &from_i[0] };
            let dxi = if i == 0 {
                dx.take()
            } else {
                Some(&mut before[i - 1])
            };
            self.layers[i].backward(input, &self.acts[i], dyi, dxi);
        }
    }

    /// Floating-point operations of one example's forward pass in matrix products.
    pub fn forward_flops(&self) -> u64 {
        self.layers.iter().map(|l| l.flops()).sum()
    }

    /// Values (f32) per example that a training step keeps: every layer's output and its
    /// gradient, and each layer's own buffers ([`Layer::scratch_per_example`]). Times
    /// the batch size and four bytes, it bounds the activation memory of a step.
    pub fn values_per_example(&self) -> usize {
        self.layers.iter().fold(0usize, |sum, l| {
            let out: usize = l.output_shape().iter().product();
            sum.saturating_add(out.saturating_mul(2))
                .saturating_add(l.scratch_per_example())
        })
    }

    /// Floating-point operations one example's inference pass performs in matrix
    /// products and convolutions: fewer than [`Network::forward_flops`] where fused
    /// layers compute only what pooling keeps, or use Winograd's algorithm.
    pub fn inference_flops(&self) -> u64 {
        self.layers.iter().map(|l| l.inference_flops()).sum()
    }

    /// Floating-point operations of one example's training step: the forward pass, the
    /// weight gradients (as many again) and the input gradients (as many again, except
    /// for the first layer, whose input gradient is never computed).
    pub fn training_flops(&self) -> u64 {
        let first = self.layers.first().map_or(0, |l| l.flops());
        3 * self.forward_flops() - first
    }

    /// The trainable parameters in a fixed order (the optimizer's state follows it).
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.layers
            .iter_mut()
            .flat_map(|l| l.params_mut())
            .collect()
    }

    /// The number of trainable values.
    pub fn num_params(&self) -> usize {
        // Statistics (running means and variances) are saved too; count what trains.
        self.tensor_keys()
            .iter()
            .filter(|(k, _)| k.role.is_trained())
            .map(|(_, t)| t.len())
            .sum()
    }

    /// One row per built layer, in order: the index of its (first) spec layer, one
    /// example's output shape, and its trained values. Built unfused
    /// ([`crate::ModelSpec::build_with`]), every spec layer has its own row.
    pub fn layer_table(&self) -> Vec<(usize, Vec<usize>, usize)> {
        self.ids
            .iter()
            .zip(&self.layers)
            .map(|(&id, l)| {
                let trained = l
                    .tensors()
                    .iter()
                    .filter(|(k, _)| k.role.is_trained())
                    .map(|(_, t)| t.len())
                    .sum();
                (id, l.output_shape().to_vec(), trained)
            })
            .collect()
    }

    /// Every tensor that defines the network, with its key (spec path and role).
    pub fn tensor_keys(&self) -> Vec<(TensorKey, &Tensor)> {
        let mut out = Vec::new();
        for (&i, l) in self.ids.iter().zip(&self.layers) {
            out.extend(l.tensors().into_iter().map(|(k, v)| (absolute(i, k), v)));
        }
        out
    }

    /// Mutable access to the same tensors, for loading.
    pub fn tensor_keys_mut(&mut self) -> Vec<(TensorKey, &mut Tensor)> {
        let mut out = Vec::new();
        for (&i, l) in self.ids.iter().zip(&mut self.layers) {
            out.extend(
                l.tensors_mut()
                    .into_iter()
                    .map(|(k, v)| (absolute(i, k), v)),
            );
        }
        out
    }

    /// Every tensor that defines the network, named as in model files (`"3.weight"`,
    /// `"4.body.0.running_mean"`: see [`TensorKey`]).
    pub fn tensors(&self) -> Vec<(String, &Tensor)> {
        self.tensor_keys()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// Mutable access to the same tensors, for loading.
    pub fn tensors_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        self.tensor_keys_mut()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// A copy of every tensor, in [`Network::tensors`] order.
    pub fn snapshot(&self) -> Vec<Tensor> {
        self.tensors().into_iter().map(|(_, t)| t.clone()).collect()
    }

    /// Puts back tensors taken by [`Network::snapshot`] of the same architecture.
    pub fn load_snapshot(&mut self, tensors: &[Tensor]) {
        for ((_, dst), src) in self.tensors_mut().into_iter().zip(tensors) {
            dst.copy_from(src);
        }
    }

    /// Copies every tensor from `other`, which must have the same architecture.
    pub fn copy_tensors_from(&mut self, other: &Network) {
        for ((_, dst), (_, src)) in self.tensors_mut().into_iter().zip(other.tensors()) {
            dst.copy_from(src);
        }
    }
}

/// A layer's key made absolute: the layer built from spec `id` lists its tensors
/// relative to it (a fused layer's later specs at 1, 2, ...), so fusing never changes a
/// model file.
fn absolute(id: usize, mut key: TensorKey) -> TensorKey {
    key.path[0] += id;
    key
}
