//! Layers: each a forward and a backward pass side by side, shapes in the doc comments.
//!
//! A layer never stores its input: the [`crate::Network`] keeps every activation and hands
//! each layer its input `x`, its own output `y` and the gradient `dy` in `backward`.
//! Backward passes overwrite parameter gradients (each parameter is used once per forward).

mod activation;
mod conv;
#[cfg(target_arch = "x86_64")]
mod conv_amx;
mod conv_block;
mod dropout;
mod linear;
mod norm;
mod pool;
mod residual;
mod shape;

pub use activation::{Gelu, Relu};
pub use conv::{Conv2d, conv2d_reference};
pub use conv_block::ConvBlock;
pub(crate) use conv_block::WINOGRAD_FROM_CHANNELS;
pub use dropout::Dropout;
pub use linear::Linear;
pub use norm::BatchNorm;
pub use pool::{AvgPool2d, GlobalAvgPool, GlobalMaxPool, MaxPool2d, ReluMaxPool2d};
pub use residual::Residual;
pub use shape::Flatten;

use crate::{Precision, Rng, Tensor};

/// Whether a pass trains (batch statistics, dropout) or infers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training: dropout active, batch norm uses and updates batch statistics.
    Train,
    /// Inference: deterministic, running statistics.
    Eval,
}

/// What a pass needs besides tensors.
pub struct Context<'a> {
    /// Train or eval.
    pub mode: Mode,
    /// Randomness for dropout.
    pub rng: &'a mut Rng,
    /// The arithmetic of matrix products (a layer's backward uses its forward's).
    pub precision: Precision,
}

/// How an optimizer should treat a parameter (weight decay skips biases and norms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Convolution or dense weights.
    Weight,
    /// Additive biases.
    Bias,
    /// Normalisation scales and shifts.
    Norm,
}

/// What a saved tensor is to its layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Weights (a batch norm's scale γ too).
    Weight,
    /// Biases (a batch norm's shift β too).
    Bias,
    /// A batch norm's running mean: a statistic, not trained.
    RunningMean,
    /// A batch norm's running variance: a statistic, not trained.
    RunningVar,
}

impl Role {
    /// The name in model files.
    pub fn name(self) -> &'static str {
        match self {
            Role::Weight => "weight",
            Role::Bias => "bias",
            Role::RunningMean => "running_mean",
            Role::RunningVar => "running_var",
        }
    }

    /// Whether the tensor is trained (statistics are not).
    pub fn is_trained(self) -> bool {
        matches!(self, Role::Weight | Role::Bias)
    }
}

/// Where a saved tensor sits: the path of spec indices down to its layer (one index,
/// or more through residual bodies) and its role. A layer lists its tensors with paths
/// relative to its own spec (a fused layer's later specs have 1, 2, ...); the network
/// makes them absolute. Written `3.weight`, `4.body.0.running_mean`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorKey {
    /// Spec indices, outermost first.
    pub path: Vec<usize>,
    /// What the tensor holds.
    pub role: Role,
}

impl TensorKey {
    /// A tensor of the spec `offset` after the listing layer's own.
    pub fn at(offset: usize, role: Role) -> Self {
        Self {
            path: vec![offset],
            role,
        }
    }
}

impl std::fmt::Display for TensorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (depth, i) in self.path.iter().enumerate() {
            if depth > 0 {
                f.write_str(".body.")?;
            }
            write!(f, "{i}")?;
        }
        write!(f, ".{}", self.role.name())
    }
}

/// A trainable tensor and its gradient.
#[derive(Clone, Debug)]
pub struct Param {
    /// The values.
    pub value: Tensor,
    /// dLoss/dvalue from the last backward pass.
    pub grad: Tensor,
    /// What the parameter is, for weight-decay rules.
    pub kind: ParamKind,
}

impl Param {
    /// A parameter with the given values and a zero gradient.
    pub fn new(value: Tensor, kind: ParamKind) -> Self {
        let grad = Tensor::zeros(value.shape());
        Self { value, grad, kind }
    }
}

/// One layer of a network.
pub trait Layer: Send {
    /// The output shape for one example (without the batch dimension).
    fn output_shape(&self) -> &[usize];

    /// Computes `y` from `x` (`x` is `[batch, input_shape...]`); resizes `y` as needed.
    fn forward(&mut self, x: &Tensor, y: &mut Tensor, ctx: &mut Context<'_>);

    /// Given `dy = dLoss/dy`, writes parameter gradients and, when `dx` is given,
    /// `dLoss/dx` into it (resized as needed). `x` and `y` are the last forward's.
    fn backward(&mut self, x: &Tensor, y: &Tensor, dy: &Tensor, dx: Option<&mut Tensor>);

    /// Multiply-adds ×2 of one example's forward pass in matrix products (convolution and
    /// dense layers; element-wise work is not counted).
    fn flops(&self) -> u64 {
        0
    }

    /// Multiply-adds ×2 that one example's inference pass actually performs (fewer than
    /// [`Layer::flops`] where inference takes a shortcut such as Winograd's algorithm).
    fn inference_flops(&self) -> u64 {
        self.flops()
    }

    /// Values (f32) per example that the layer keeps between passes beyond its output:
    /// im2col matrices, masks, intermediate outputs of fused layers. With the outputs and
    /// their gradients it bounds a batch's memory before anything is allocated.
    fn scratch_per_example(&self) -> usize {
        0
    }

    /// The trainable parameters, in a fixed order.
    fn params_mut(&mut self) -> Vec<&mut Param> {
        Vec::new()
    }

    /// Every tensor that defines the layer (parameters and buffers such as running
    /// statistics), by name, for saving.
    fn tensors(&self) -> Vec<(TensorKey, &Tensor)> {
        Vec::new()
    }

    /// Mutable access to the same tensors, for loading.
    fn tensors_mut(&mut self) -> Vec<(TensorKey, &mut Tensor)> {
        Vec::new()
    }
}

/// A weight and an optional bias, as convolution and dense layers hold them.
pub(crate) struct WeightBias {
    /// The weights.
    pub weight: Param,
    /// The bias, if the layer has one.
    pub bias: Option<Param>,
}

impl WeightBias {
    pub(crate) fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = vec![&mut self.weight];
        v.extend(self.bias.as_mut());
        v
    }

    pub(crate) fn tensors(&self) -> Vec<(TensorKey, &Tensor)> {
        let mut v = vec![(TensorKey::at(0, Role::Weight), &self.weight.value)];
        v.extend(
            self.bias
                .as_ref()
                .map(|b| (TensorKey::at(0, Role::Bias), &b.value)),
        );
        v
    }

    pub(crate) fn tensors_mut(&mut self) -> Vec<(TensorKey, &mut Tensor)> {
        let mut v = vec![(TensorKey::at(0, Role::Weight), &mut self.weight.value)];
        v.extend(
            self.bias
                .as_mut()
                .map(|b| (TensorKey::at(0, Role::Bias), &mut b.value)),
        );
        v
    }
}

/// The batch dimension and the product of the others.
pub(crate) fn batch_and_rest(t: &Tensor) -> (usize, usize) {
    let n = t.batch();
    (n, t.len().checked_div(n).unwrap_or(0))
}
