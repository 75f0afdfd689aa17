//! Architectures as data: layer specs that serialise to JSON and build a [`Network`].

use serde::{Deserialize, Serialize};

use crate::layers::{
    AvgPool2d, BatchNorm, Conv2d, ConvBlock, Dropout, Flatten, Gelu, GlobalAvgPool, GlobalMaxPool,
    Layer, Linear, MaxPool2d, Relu, ReluMaxPool2d, Residual, WINOGRAD_FROM_CHANNELS,
};
use crate::{Error, Init, Network, Rng};

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn bn_momentum() -> f32 {
    0.1
}
fn bn_eps() -> f32 {
    1e-5
}

/// One layer of an architecture. In JSON: `{"type": "conv2d", "filters": 32, "kernel": 3}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// [`Conv2d`]: `filters` outputs, `kernel × kernel`, `stride` (1), zero `padding` (0), `bias` (true).
    Conv2d {
        /// Output channels.
        filters: usize,
        /// Kernel side.
        kernel: usize,
        /// Step between windows.
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding on each side.
        #[serde(default)]
        padding: usize,
        /// Whether to add a bias.
        #[serde(default = "yes")]
        bias: bool,
    },
    /// [`MaxPool2d`] over `size × size` windows; `stride` defaults to `size`.
    MaxPool2d {
        /// Window side.
        size: usize,
        /// Step between windows (default: `size`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<usize>,
    },
    /// [`AvgPool2d`] over `size × size` windows; `stride` defaults to `size`.
    AvgPool2d {
        /// Window side.
        size: usize,
        /// Step between windows (default: `size`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<usize>,
    },
    /// [`GlobalAvgPool`]: `[h, w, c]` to `[c]`.
    GlobalAvgPool,
    /// [`GlobalMaxPool`]: `[h, w, c]` to `[c]`.
    GlobalMaxPool,
    /// [`BatchNorm`] over the channel axis.
    BatchNorm {
        /// Running-statistics update rate.
        #[serde(default = "bn_momentum")]
        momentum: f32,
        /// Variance epsilon.
        #[serde(default = "bn_eps")]
        eps: f32,
    },
    /// [`Relu`].
    Relu,
    /// [`Gelu`] (tanh form).
    Gelu,
    /// [`Linear`] with `units` outputs.
    Linear {
        /// Output features.
        units: usize,
        /// Whether to add a bias.
        #[serde(default = "yes")]
        bias: bool,
    },
    /// [`Dropout`] with drop probability `rate`.
    Dropout {
        /// Probability of zeroing a value.
        rate: f32,
    },
    /// [`Flatten`].
    Flatten,
    /// [`Residual`]: `x + body(x)`.
    Residual {
        /// The layers of `f`.
        body: Vec<LayerSpec>,
    },
}

/// A whole architecture: input shape `[height, width, channels]`, initialisation and layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A short name (for reports).
    #[serde(default)]
    pub name: String,
    /// One example's shape, `[height, width, channels]`.
    pub input: Vec<usize>,
    /// Weight initialisation.
    #[serde(default)]
    pub init: Init,
    /// The layers, in order.
    pub layers: Vec<LayerSpec>,
}

/// Layers deeper than this are refused, so hostile JSON cannot exhaust the stack.
pub const MAX_DEPTH: usize = 16;
/// Most layers an architecture may have, residual bodies included (the built-in ones
/// have at most 25), counted before anything is built.
pub const MAX_LAYERS: usize = 1024;
/// Most weights a whole network may have (128 MiB of f32; the largest built-in network
/// has 2.1 M), counted before they are allocated, so a hostile file cannot exhaust memory.
pub const MAX_PARAMS: usize = 1 << 25;
/// Refuse layers whose output for one example exceeds this many values (64 MiB of f32).
pub const MAX_ACTIVATIONS: usize = 1 << 24;
/// Refuse networks whose training step keeps more than this many values per example
/// ([`Network::values_per_example`]: outputs, gradients, im2col matrices with their
/// padding; 64 MiB of f32). The built-in networks keep at most about 0.96 M (`resnet9`).
pub const MAX_VALUES_PER_EXAMPLE: usize = 1 << 24;

/// Fails on a field beside `type` in a layer that has no settings (`relu`, `flatten`,
/// ...), in `layers` and every residual body; `at` names the enclosing layers.
fn refuse_extra_fields(layers: &[serde_json::Value], at: &str) -> Result<(), Error> {
    const NO_SETTINGS: [&str; 5] = [
        "relu",
        "gelu",
        "flatten",
        "global_avg_pool",
        "global_max_pool",
    ];
    for (i, layer) in layers.iter().enumerate() {
        let Some(object) = layer.as_object() else {
            continue; // serde reports what is wrong with it
        };
        let kind = object.get("type").and_then(|t| t.as_str()).unwrap_or("");
        if NO_SETTINGS.contains(&kind)
            && let Some(field) = object.keys().find(|k| *k != "type")
        {
            return Err(Error::Json(format!(
                "{at}layer {i} ({kind}) has an unknown field `{field}`; it takes none"
            )));
        }
        if let Some(body) = object.get("body").and_then(|b| b.as_array()) {
            refuse_extra_fields(body, &format!("{at}layer {i} (residual), "))?;
        }
    }
    Ok(())
}

/// Layers in `specs`, residual bodies included (saturating: the count is a bound).
fn count_layers(specs: &[LayerSpec]) -> usize {
    specs.iter().fold(0usize, |n, s| {
        let inner = match s {
            LayerSpec::Residual { body } => count_layers(body),
            _ => 0,
        };
        n.saturating_add(1).saturating_add(inner)
    })
}

impl ModelSpec {
    /// Parses an architecture from JSON.
    /// Every field must be known: a misspelt or invented one (`"bogus": 1`) is refused,
    /// naming it, on layers without settings too (serde would ignore it there).
    pub fn from_json(text: &str) -> Result<Self, Error> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        if let Some(layers) = value.get("layers").and_then(|l| l.as_array()) {
            refuse_extra_fields(layers, "")?;
        }
        Ok(serde_json::from_value(value)?)
    }

    /// The architecture as pretty JSON.
    pub fn to_json(&self) -> String {
        // A ModelSpec holds only strings, numbers and enums: serialisation cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Builds the network with fresh weights drawn from `rng`; validates every shape.
    /// Adjacent layers with a fused fast path (ReLU then max pool) are built as one layer.
    pub fn build(&self, rng: &mut Rng) -> Result<Network, Error> {
        self.build_with(rng, true)
    }

    /// [`ModelSpec::build`], choosing whether to fuse layers (unfused: the test oracle).
    pub fn build_with(&self, rng: &mut Rng, fuse: bool) -> Result<Network, Error> {
        if self.input.is_empty() || self.input.contains(&0) {
            return Err(Error::Spec(format!(
                "input shape {:?} must be non-empty",
                self.input
            )));
        }
        if self
            .input
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .is_none_or(|n| n > MAX_ACTIVATIONS)
        {
            return Err(Error::Spec(format!(
                "input shape {:?} is too large",
                self.input
            )));
        }
        let layers = count_layers(&self.layers);
        if layers > MAX_LAYERS {
            return Err(Error::Spec(format!(
                "{layers} layers is too many (at most {MAX_LAYERS})"
            )));
        }
        let mut budget = MAX_PARAMS;
        let net = build_layers(
            &self.layers,
            &self.input,
            self.init,
            rng,
            0,
            fuse,
            &mut budget,
        )?;
        if net.num_params() > MAX_PARAMS {
            return Err(Error::Spec(format!(
                "{} parameters is too many",
                net.num_params()
            )));
        }
        let values = net.values_per_example();
        if values > MAX_VALUES_PER_EXAMPLE {
            return Err(Error::Spec(format!(
                "a training step would keep {values} values per image (outputs, gradients \
                 and convolution buffers, padding included); at most \
                 {MAX_VALUES_PER_EXAMPLE} are allowed"
            )));
        }
        Ok(net)
    }
}

/// A layer built for several specs, and how many it stands for.
type Fused = (Box<dyn Layer>, usize);

/// A fused layer for `specs[i]` and the layers after it, when one exists, and how many
/// specs it stands for.
fn fused_run(
    specs: &[LayerSpec],
    i: usize,
    shape: &[usize],
    init: Init,
    rng: &mut Rng,
    budget: &mut usize,
) -> Option<Result<Fused, Error>> {
    if let Some(fused) = fused_conv_block(specs, i, shape, init, rng, budget) {
        return Some(Ok(fused));
    }
    match (&specs[i], specs.get(i + 1), specs.get(i + 2)) {
        (LayerSpec::Relu, Some(&LayerSpec::MaxPool2d { size, stride }), _) => Some(
            ReluMaxPool2d::new(shape, size, stride.unwrap_or(size))
                .map(|l| (Box::new(l) as Box<dyn Layer>, 2)),
        ),
        (&LayerSpec::BatchNorm { momentum, eps }, Some(LayerSpec::Relu), _) => Some(
            BatchNorm::with_relu(shape, momentum, eps).map(|l| (Box::new(l) as Box<dyn Layer>, 2)),
        ),
        _ => None,
    }
}

/// A [`ConvBlock`] for a 3×3 stride-1 `specs[i]` and what follows it (ReLU and 2×2 max
/// pool; batch norm, ReLU and 2×2 max pool; batch norm and ReLU), when they match one.
/// Built as the plain convolution first, drawing the same weights from `rng`; where
/// anything does not fit, nothing is fused and nothing is drawn, so that building the
/// layers one by one reports it.
fn fused_conv_block(
    specs: &[LayerSpec],
    i: usize,
    shape: &[usize],
    init: Init,
    rng: &mut Rng,
    budget: &mut usize,
) -> Option<Fused> {
    let &LayerSpec::Conv2d {
        kernel: 3,
        stride: 1,
        ..
    } = &specs[i]
    else {
        return None;
    };
    let pool2 = |s: Option<&LayerSpec>| {
        matches!(
            s,
            Some(LayerSpec::MaxPool2d {
                size: 2,
                stride: None | Some(2)
            })
        )
    };
    // The convolution's output must hold at least one pooling window to pool.
    let poolable = conv_output(shape, &specs[i]).is_some_and(|(oh, ow)| oh >= 2 && ow >= 2);
    let channels = shape.last().copied().unwrap_or(0);
    // (batch norm settings, pool, specs consumed)
    let plan = match (specs.get(i + 1), specs.get(i + 2), specs.get(i + 3)) {
        (Some(LayerSpec::Relu), next, _) if pool2(next) && poolable => (None, true, 3),
        (Some(&LayerSpec::BatchNorm { momentum, eps }), Some(LayerSpec::Relu), next)
            if pool2(next) && poolable =>
        {
            (Some((momentum, eps)), true, 4)
        }
        (Some(&LayerSpec::BatchNorm { momentum, eps }), Some(LayerSpec::Relu), _)
            if channels >= WINOGRAD_FROM_CHANNELS =>
        {
            (Some((momentum, eps)), false, 3)
        }
        _ => return None,
    };
    let (saved_budget, saved_rng) = (*budget, rng.clone());
    let block = build_conv(&specs[i], shape, init, rng, budget).and_then(|conv| match plan {
        (None, _, _) => ConvBlock::relu_pool(conv),
        (Some((momentum, eps)), pool, _) => ConvBlock::norm_relu(conv, momentum, eps, pool),
    });
    match block {
        Ok(block) => Some((Box::new(block), plan.2)),
        Err(_) => {
            (*budget, *rng) = (saved_budget, saved_rng);
            None
        }
    }
}

/// The output height and width of a convolution spec on `shape`, if it fits.
fn conv_output(shape: &[usize], spec: &LayerSpec) -> Option<(usize, usize)> {
    let (
        &[h, w, _],
        &LayerSpec::Conv2d {
            kernel,
            stride,
            padding,
            ..
        },
    ) = (shape, spec)
    else {
        return None;
    };
    // Checked: the numbers come from a file.
    let out = |n: usize| {
        let span = padding
            .checked_mul(2)?
            .checked_add(n)?
            .checked_sub(kernel)?;
        Some(span / stride.max(1) + 1)
    };
    Some((out(h)?, out(w)?))
}

/// A [`Conv2d`] for a conv2d spec, its weights counted against `budget`.
fn build_conv(
    spec: &LayerSpec,
    shape: &[usize],
    init: Init,
    rng: &mut Rng,
    budget: &mut usize,
) -> Result<Conv2d, Error> {
    let &LayerSpec::Conv2d {
        filters,
        kernel,
        stride,
        padding,
        bias,
    } = spec
    else {
        return Err(Error::Spec(format!("{} is not a convolution", spec.kind())));
    };
    let c = shape.last().copied().unwrap_or(0);
    spend(
        budget,
        filters
            .saturating_mul(kernel.saturating_mul(kernel))
            .saturating_mul(c),
    )?;
    Conv2d::new(shape, filters, kernel, stride, padding, bias, init, rng)
}

/// Takes `n` weights from the whole network's `budget`, checked before they are allocated.
fn spend(budget: &mut usize, n: usize) -> Result<(), Error> {
    if n > *budget {
        Err(Error::Spec(format!(
            "{n} weights is too many (the whole network may have {MAX_PARAMS})"
        )))
    } else {
        *budget -= n;
        Ok(())
    }
}

fn build_layers(
    specs: &[LayerSpec],
    input: &[usize],
    init: Init,
    rng: &mut Rng,
    depth: usize,
    fuse: bool,
    budget: &mut usize,
) -> Result<Network, Error> {
    if depth > MAX_DEPTH {
        return Err(Error::Spec(format!(
            "residual blocks nested deeper than {MAX_DEPTH}"
        )));
    }
    if specs.is_empty() {
        return Err(Error::Spec(
            "a network (or residual body) needs at least one layer".into(),
        ));
    }
    let mut layers: Vec<(usize, Box<dyn Layer>)> = Vec::with_capacity(specs.len());
    let mut shape = input.to_vec();
    let mut i = 0;
    while i < specs.len() {
        let fused = match fuse {
            true => fused_run(specs, i, &shape, init, rng, budget),
            false => None,
        };
        let (layer, consumed) = match fused {
            Some(Ok((layer, n))) => (Ok(layer), n),
            Some(Err(e)) => (Err(e), 1),
            None => (
                build_layer(&specs[i], &shape, init, rng, depth, fuse, budget),
                1,
            ),
        };
        let (at, kind) = (i + consumed - 1, specs[i + consumed - 1].kind());
        let layer =
            layer.map_err(|e| Error::Spec(format!("layer {at} ({kind}): {}", e.detail())))?;
        shape = layer.output_shape().to_vec();
        let values = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if values.is_none_or(|v| v == 0 || v > MAX_ACTIVATIONS) {
            return Err(Error::Spec(format!(
                "layer {at} ({kind}) gives shape {shape:?}"
            )));
        }
        layers.push((i, layer));
        i += consumed;
    }
    Ok(Network::from_layers(input.to_vec(), layers))
}

fn build_layer(
    spec: &LayerSpec,
    shape: &[usize],
    init: Init,
    rng: &mut Rng,
    depth: usize,
    fuse: bool,
    budget: &mut usize,
) -> Result<Box<dyn Layer>, Error> {
    Ok(match *spec {
        LayerSpec::Conv2d { .. } => Box::new(build_conv(spec, shape, init, rng, budget)?),
        LayerSpec::MaxPool2d { size, stride } => {
            Box::new(MaxPool2d::new(shape, size, stride.unwrap_or(size))?)
        }
        LayerSpec::AvgPool2d { size, stride } => {
            Box::new(AvgPool2d::new(shape, size, stride.unwrap_or(size))?)
        }
        LayerSpec::GlobalAvgPool => Box::new(GlobalAvgPool::new(shape)?),
        LayerSpec::GlobalMaxPool => Box::new(GlobalMaxPool::new(shape)?),
        LayerSpec::BatchNorm { momentum, eps } => Box::new(BatchNorm::new(shape, momentum, eps)?),
        LayerSpec::Relu => Box::new(Relu::new(shape)),
        LayerSpec::Gelu => Box::new(Gelu::new(shape)),
        LayerSpec::Linear { units, bias } => {
            spend(budget, units.saturating_mul(shape.iter().product()))?;
            Box::new(Linear::new(shape, units, bias, init, rng)?)
        }
        LayerSpec::Dropout { rate } => Box::new(Dropout::new(shape, rate)?),
        LayerSpec::Flatten => Box::new(Flatten::new(shape)),
        LayerSpec::Residual { ref body } => Box::new(Residual::new(build_layers(
            body,
            shape,
            init,
            rng,
            depth + 1,
            fuse,
            budget,
        )?)?),
    })
}

impl LayerSpec {
    /// The JSON `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::MaxPool2d { .. } => "max_pool2d",
            LayerSpec::AvgPool2d { .. } => "avg_pool2d",
            LayerSpec::GlobalAvgPool => "global_avg_pool",
            LayerSpec::GlobalMaxPool => "global_max_pool",
            LayerSpec::BatchNorm { .. } => "batch_norm",
            LayerSpec::Relu => "relu",
            LayerSpec::Gelu => "gelu",
            LayerSpec::Linear { .. } => "linear",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::Flatten => "flatten",
            LayerSpec::Residual { .. } => "residual",
        }
    }
}
