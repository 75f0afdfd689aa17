//! Models that travel: ONNX export ([`onnx_export`]), ONNX import ([`onnx_import`]) and
//! PyTorch weights in ([`state_dict`]: safetensors and `.pt`/`.pth` files). Every import
//! ends in an ordinary fmnist [`Classifier`] (see [`Imported::into_classifier`]).

pub mod layout;
pub mod onnx_export;
pub mod onnx_import;
pub mod state_dict;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use nn::{LayerSpec, ModelSpec};

use crate::data::{CLASS_NAMES, Normalization};
use crate::model::Classifier;
use crate::model::classifier::TrainingSummary;

/// What the source model takes as input: `(pixel/255 · scale − mean) / std`. PyTorch's
/// `ToTensor()` and Keras' `x / 255` are the default (scale 1, mean 0, std 1); a model
/// trained on raw 0–255 pixels has scale 255; `Normalize((m,), (s,))` gives mean `m`
/// and std `s`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InputScaling {
    /// What pixel/255 is multiplied by.
    pub scale: f64,
    /// What is then subtracted.
    pub mean: f64,
    /// What that is divided by.
    pub std: f64,
}

impl Default for InputScaling {
    fn default() -> Self {
        Self {
            scale: 1.0,
            mean: 0.0,
            std: 1.0,
        }
    }
}

/// One imported layer and its tensors by role, or a residual block of them.
#[derive(Clone, Debug)]
pub enum Item {
    /// A layer with its tensors (`"weight"`, `"bias"`, `"running_mean"`, ...) in fmnist's
    /// layouts.
    Layer(LayerSpec, Vec<(&'static str, Vec<usize>, Vec<f32>)>),
    /// `x + body(x)`.
    Residual(Vec<Item>),
}

/// A model read from another framework's file, before it becomes a [`Classifier`].
#[derive(Clone, Debug)]
pub struct Imported {
    /// The architecture's name.
    pub name: String,
    /// One example's shape, `[height, width, channels]`.
    pub input: Vec<usize>,
    /// The layers with their tensors.
    pub items: Vec<Item>,
    /// Input normalisation: the network sees `(pixel/255 − mean) / std`.
    pub mean: f32,
    /// See `mean`.
    pub std: f32,
    /// Whether probabilities average each image and its mirror image.
    pub flip_tta: bool,
    /// What the class scores are divided by before the softmax (1: nothing).
    pub temperature: f32,
    /// Class names the file carries, if any.
    pub classes: Option<Vec<String>>,
    /// The training summary the file carries (an fmnist export), if any.
    pub training: Option<TrainingSummary>,
    /// The exact normalisation the file records beside its graph (an fmnist export).
    pub exact_normalization: Option<Normalization>,
}

impl Imported {
    /// The architecture.
    pub fn spec(&self) -> ModelSpec {
        fn layers(items: &[Item]) -> Vec<LayerSpec> {
            items
                .iter()
                .map(|item| match item {
                    Item::Layer(spec, _) => spec.clone(),
                    Item::Residual(body) => LayerSpec::Residual { body: layers(body) },
                })
                .collect()
        }
        ModelSpec {
            name: self.name.clone(),
            input: self.input.clone(),
            init: nn::Init::default(),
            layers: layers(&self.items),
        }
    }

    /// Every tensor by its name in fmnist model files (`"3.weight"`, `"4.body.0.bias"`).
    fn tensors(&self) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
        fn walk(items: &[Item], prefix: &str, out: &mut HashMap<String, (Vec<usize>, Vec<f32>)>) {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Item::Layer(_, tensors) => {
                        for (role, dims, values) in tensors {
                            out.insert(
                                format!("{prefix}{i}.{role}"),
                                (dims.clone(), values.clone()),
                            );
                        }
                    }
                    Item::Residual(body) => walk(body, &format!("{prefix}{i}.body."), out),
                }
            }
        }
        let mut out = HashMap::new();
        walk(&self.items, "", &mut out);
        out
    }

    /// The fmnist classifier: the architecture built and checked (28×28×1 in, 10 scores
    /// out), every weight placed and checked, normalisation and class names set.
    pub fn into_classifier(self, source: &str) -> anyhow::Result<Classifier> {
        let spec = self.spec();
        let mut model = Classifier::new(spec, 0).context("the imported architecture")?;
        let mut tensors = self.tensors();
        for (name, dst) in model.net.tensors_mut() {
            let (dims, values) = tensors
                .remove(&name)
                .ok_or_else(|| anyhow!("the import has no tensor for {name}"))?;
            if dims != dst.shape() {
                bail!(
                    "tensor {name} has shape {dims:?}, the architecture needs {:?}",
                    dst.shape()
                );
            }
            if values.iter().any(|v| !v.is_finite()) {
                bail!("tensor {name} holds a value that is not finite");
            }
            dst.data_mut().copy_from_slice(&values);
        }
        if let Some(name) = tensors.keys().next() {
            bail!("tensor {name} has no place in the architecture");
        }
        let computed = Normalization {
            mean: self.mean,
            std: self.std,
        };
        // An fmnist export records its exact statistics; the graph's arithmetic gives
        // them back only to rounding.
        model.normalization = match self.exact_normalization {
            Some(exact)
                if (exact.mean - computed.mean).abs() <= 1e-5 * computed.std
                    && ((exact.std - computed.std) / computed.std).abs() <= 1e-5 =>
            {
                exact
            }
            _ => computed,
        };
        model.normalization.validate()?;
        model.inference.flip_tta = self.flip_tta;
        model.inference.temperature = self.temperature;
        if let Some(classes) = self.classes
            && classes.len() == CLASS_NAMES.len()
            && classes.iter().all(|c| {
                !c.trim().is_empty() && c.chars().count() <= 64 && !c.chars().any(char::is_control)
            })
        {
            model.classes = classes;
        }
        model.summary = self.training.unwrap_or_else(|| TrainingSummary {
            test_accuracy: f64::NAN,
            val_accuracy: f64::NAN,
            version: env!("CARGO_PKG_VERSION").into(),
            ..TrainingSummary::default()
        });
        model.summary.imported_from = Some(source.to_string());
        Ok(model)
    }
}

/// The kinds of file `fmnist import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    /// An ONNX model (architecture and weights).
    Onnx,
    /// A PyTorch `state_dict` saved with safetensors.
    Safetensors,
    /// A PyTorch `torch.save` file (`.pt`, `.pth`).
    Torch,
}

impl SourceFormat {
    /// The format of `path`, from its first bytes (ZIP or pickle: PyTorch; a safetensors
    /// header; otherwise ONNX's protobuf) and, where they could be either, its extension.
    pub fn detect(path: &Path) -> anyhow::Result<Self> {
        use std::io::Read;
        let mut head = [0u8; 16];
        let mut f = crate::io::bounded::open_regular(path)?;
        let n = f
            .read(&mut head)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let head = &head[..n];
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        Ok(if head.starts_with(b"PK") || head.first() == Some(&0x80) {
            SourceFormat::Torch
        } else if head.len() >= 9 && head[8] == b'{' {
            // safetensors: an 8-byte little-endian header length, then a JSON object.
            SourceFormat::Safetensors
        } else if ext == "onnx" || head.first().is_some_and(|b| b & 7 <= 5 && b >> 3 > 0) {
            SourceFormat::Onnx
        } else {
            bail!(
                "{} is neither ONNX, safetensors nor a PyTorch file",
                path.display()
            );
        })
    }
}

/// Reads a model from another framework's file: an ONNX graph (which brings its
/// architecture; `arch` must be `None`), or PyTorch weights (safetensors or `torch.save`)
/// for the architecture `arch`. `scaling` says what input the source model takes.
pub fn import(
    path: &Path,
    arch: Option<&ModelSpec>,
    scaling: InputScaling,
) -> anyhow::Result<(Classifier, SourceFormat)> {
    let finite = scaling.scale.is_finite() && scaling.std.is_finite() && scaling.mean.is_finite();
    if !(finite && scaling.scale > 0.0 && scaling.std > 0.0) {
        bail!("the input scale and std must be positive and the mean finite");
    }
    let format = SourceFormat::detect(path)?;
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let shown = path.display();
    let model = match (format, arch) {
        (SourceFormat::Onnx, None) => onnx_import::read(path, scaling)
            .with_context(|| format!("{shown} cannot be imported"))?
            .into_classifier(&format!("ONNX {file}"))?,
        (SourceFormat::Onnx, Some(_)) => {
            bail!(
                "{shown} is an ONNX model, which brings its own architecture: leave out --model and --arch"
            )
        }
        (_, None) => bail!(
            "{shown} holds PyTorch weights without their architecture: name it with --model or --arch"
        ),
        (SourceFormat::Safetensors | SourceFormat::Torch, Some(spec)) => {
            let (tensors, kind) = if format == SourceFormat::Safetensors {
                (state_dict::read_safetensors(path), "safetensors")
            } else {
                (state_dict::read_torch(path), "torch.save")
            };
            let tensors = tensors.with_context(|| format!("{shown} cannot be imported"))?;
            state_dict::import(spec, tensors, scaling)
                .with_context(|| format!("{shown} does not fit the architecture"))?
                .into_classifier(&format!("PyTorch state_dict ({kind}) {file}"))?
        }
    };
    Ok((model, format))
}
