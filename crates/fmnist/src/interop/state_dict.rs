//! PyTorch weights in: a `state_dict` from a safetensors file or a `torch.save` file
//! (`.pt`/`.pth`, read by `pytorch-reader`, which rebuilds data and never runs pickle
//! code), placed into an fmnist architecture.
//!
//! A state dict names modules, not layers, and neither file keeps their order, so the
//! modules are told apart by what they hold (running statistics: batch norm; a 4-D
//! weight: convolution; a 2-D weight: dense) and put in order within each kind by name,
//! numbers compared as numbers (`features.3` before `features.10`, `conv1` before
//! `conv2`). The k-th convolution of the architecture gets the k-th convolution module,
//! and so on; every shape is checked. Layouts are converted: OIHW convolution weights
//! to fmnist's `[oc, k, k, c]`, and the dense layer after a flatten gets its columns
//! reordered from PyTorch's NCHW flatten to fmnist's NHWC one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use nn::{LayerSpec, ModelSpec};

use super::{Imported, InputScaling, Item, layout};
use crate::io::bounded;

/// Weight files larger than this are refused before reading.
const MAX_FILE_BYTES: u64 = 256 << 20;
/// Most values one tensor may hold ([`nn::MAX_PARAMS`]).
const MAX_TENSOR_VALUES: usize = nn::MAX_PARAMS;

/// A named tensor from a weight file, as f32.
#[derive(Clone, Debug)]
pub struct Named {
    /// Its key in the state dict (`"features.0.weight"`).
    pub name: String,
    /// Its shape.
    pub dims: Vec<usize>,
    /// Its values, row-major.
    pub values: Vec<f32>,
}

/// Reads every tensor of a safetensors file (f32, f64, f16 or bf16).
pub fn read_safetensors(path: &Path) -> anyhow::Result<Vec<Named>> {
    let bytes = bounded::read(path, MAX_FILE_BYTES, "larger than any model fmnist imports")?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("not a safetensors file ({e})"))?;
    if let Ok((_, header)) = safetensors::SafeTensors::read_metadata(&bytes)
        && header.metadata().as_ref().is_some_and(|m| {
            m.get("format")
                .is_some_and(|f| f.starts_with("fmnist-model"))
        })
    {
        bail!("this is already an fmnist model: use it as it is");
    }
    let mut out = Vec::new();
    for (name, view) in file.tensors() {
        use safetensors::Dtype as D;
        let dtype = match view.dtype() {
            D::F32 => Float::F32,
            D::F64 => Float::F64,
            D::F16 => Float::F16,
            D::BF16 => Float::BF16,
            other => {
                // Integer buffers (`num_batches_tracked`) carry nothing fmnist keeps.
                if name.ends_with("num_batches_tracked") {
                    continue;
                }
                bail!("tensor {name} is {other:?}; fmnist reads floating-point weights");
            }
        };
        out.push(Named {
            values: convert(view.data(), dtype, &name)?,
            dims: view.shape().to_vec(),
            name,
        });
    }
    Ok(out)
}

/// Reads every tensor of a `torch.save` file without executing it. A checkpoint that
/// nests its weights under `state_dict` or `model` (with other entries beside them) is
/// read from there.
pub fn read_torch(path: &Path) -> anyhow::Result<Vec<Named>> {
    use pytorch_reader::{DType as D, PytorchReader};
    let size = bounded::open_regular(path)?
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_FILE_BYTES {
        bail!(
            "{} is {size} bytes, larger than any model fmnist imports",
            path.display()
        );
    }
    let reader =
        PytorchReader::new(path).map_err(|e| anyhow!("not a readable PyTorch file ({e})"))?;
    let reader = match ["state_dict", "model"].into_iter().find(|key| {
        reader
            .keys()
            .iter()
            .all(|k| k.starts_with(&format!("{key}.")))
    }) {
        Some(key) if !reader.is_empty() => PytorchReader::with_top_level_key(path, key)
            .map_err(|e| anyhow!("not a readable PyTorch file ({e})"))?,
        _ => reader,
    };
    let mut out = Vec::new();
    for (name, t) in reader.tensors() {
        let dtype = match t.dtype() {
            D::F32 => Float::F32,
            D::F64 => Float::F64,
            D::F16 => Float::F16,
            D::BF16 => Float::BF16,
            _ if name.ends_with("num_batches_tracked") => continue,
            other => bail!("tensor {name} is {other:?}; fmnist reads floating-point weights"),
        };
        if t.num_elements() > MAX_TENSOR_VALUES {
            bail!(
                "tensor {name} has {} values, more than any fmnist layer",
                t.num_elements()
            );
        }
        let bytes = t.read().with_context(|| format!("tensor {name}"))?;
        out.push(Named {
            values: convert(&bytes, dtype, name)?,
            dims: t.shape().to_vec(),
            name: name.clone(),
        });
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Float {
    F32,
    F64,
    F16,
    BF16,
}

fn convert(bytes: &[u8], dtype: Float, name: &str) -> anyhow::Result<Vec<f32>> {
    let width = match dtype {
        Float::F32 => 4,
        Float::F64 => 8,
        Float::F16 | Float::BF16 => 2,
    };
    if !bytes.len().is_multiple_of(width) || bytes.len() / width > MAX_TENSOR_VALUES {
        bail!(
            "tensor {name} has {} bytes, not a usable tensor",
            bytes.len()
        );
    }
    Ok(bytes
        .chunks_exact(width)
        .map(|b| match dtype {
            Float::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Float::F64 => {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }
            Float::BF16 => f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16),
            Float::F16 => f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
        })
        .collect())
}

/// IEEE half precision to single.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: f · 2⁻²⁴.
            let v = f as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// What an architecture needs, layer by layer, in order.
#[derive(Clone, Debug)]
enum Slot {
    Conv {
        path: String,
        oc: usize,
        c: usize,
        k: usize,
        bias: bool,
    },
    Norm {
        path: String,
        c: usize,
        gather: Option<Vec<usize>>,
    },
    Dense {
        path: String,
        units: usize,
        inputs: usize,
        bias: bool,
        gather: Option<Vec<usize>>,
    },
}

impl Slot {
    fn kind(&self) -> Kind {
        match self {
            Slot::Conv { .. } => Kind::Conv,
            Slot::Norm { .. } => Kind::Norm,
            Slot::Dense { .. } => Kind::Dense,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Conv,
    Norm,
    Dense,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Conv => "convolutions",
            Kind::Norm => "batch norms",
            Kind::Dense => "dense layers",
        }
    }
}

/// Lists the slots of `layers` on inputs of `shape`; returns the output shape.
/// `gather` is the NCHW-to-NHWC reordering a flatten leaves for the next layer that has
/// per-feature weights.
fn slots(
    layers: &[LayerSpec],
    prefix: &str,
    mut shape: Vec<usize>,
    gather: &mut Option<Vec<usize>>,
    out: &mut Vec<Slot>,
) -> anyhow::Result<Vec<usize>> {
    for (i, layer) in layers.iter().enumerate() {
        let path = format!("{prefix}{i}");
        shape = match (layer, shape.as_slice()) {
            (
                &LayerSpec::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                    bias,
                },
                &[h, w, c],
            ) => {
                out.push(Slot::Conv {
                    path,
                    oc: filters,
                    c,
                    k: kernel,
                    bias,
                });
                let o = |n: usize| (n + 2 * padding).saturating_sub(kernel) / stride.max(1) + 1;
                vec![o(h), o(w), filters]
            }
            (
                &LayerSpec::MaxPool2d { size, stride } | &LayerSpec::AvgPool2d { size, stride },
                &[h, w, c],
            ) => {
                let s = stride.unwrap_or(size).max(1);
                vec![
                    h.saturating_sub(size) / s + 1,
                    w.saturating_sub(size) / s + 1,
                    c,
                ]
            }
            (LayerSpec::GlobalAvgPool | LayerSpec::GlobalMaxPool, &[_, _, c]) => vec![c],
            (LayerSpec::BatchNorm { .. }, s) => {
                let c = s.last().copied().unwrap_or(0);
                out.push(Slot::Norm {
                    path,
                    c,
                    gather: if s.len() == 1 { gather.clone() } else { None },
                });
                shape
            }
            (&LayerSpec::Linear { units, bias }, &[inputs]) => {
                out.push(Slot::Dense {
                    path,
                    units,
                    inputs,
                    bias,
                    gather: gather.take(),
                });
                vec![units]
            }
            (LayerSpec::Flatten, &[h, w, c]) => {
                if h * w > 1 && c > 1 {
                    *gather = Some(layout::nchw_positions(h, w, c));
                }
                vec![h * w * c]
            }
            (LayerSpec::Residual { body }, _) => {
                slots(
                    body,
                    &format!("{path}.body."),
                    shape.clone(),
                    &mut None,
                    out,
                )?;
                shape
            }
            (
                LayerSpec::Relu | LayerSpec::Gelu | LayerSpec::Dropout { .. } | LayerSpec::Flatten,
                _,
            ) => shape,
            (layer, s) => bail!(
                "layer {path} ({}) does not fit its input {s:?}",
                layer.kind()
            ),
        };
    }
    Ok(shape)
}

/// Sort key: the name's dot-separated parts, numbers compared as numbers.
fn natural(name: &str) -> Vec<(u8, u64, String)> {
    name.split('.')
        .flat_map(|part| {
            // `conv10` after `conv9`: split letters from trailing digits.
            let digits = part.len() - part.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            let (head, tail) = part.split_at(part.len() - digits);
            let mut keys = Vec::new();
            if !head.is_empty() {
                keys.push((1, 0, head.to_string()));
            }
            if !tail.is_empty() {
                keys.push((0, tail.parse().unwrap_or(u64::MAX), String::new()));
            }
            keys
        })
        .collect()
}

/// A module of the state dict: its tensors by their last name part.
struct Module {
    name: String,
    kind: Kind,
    tensors: HashMap<String, Named>,
}

fn modules(tensors: Vec<Named>) -> anyhow::Result<Vec<Module>> {
    let mut by_module: BTreeMap<String, HashMap<String, Named>> = BTreeMap::new();
    for t in tensors {
        let (module, part) = t.name.rsplit_once('.').unwrap_or(("", t.name.as_str()));
        let (module, part) = (module.to_string(), part.to_string());
        if !matches!(
            part.as_str(),
            "weight" | "bias" | "running_mean" | "running_var"
        ) {
            bail!(
                "tensor {} is not a weight, bias or running statistic of a layer fmnist has",
                t.name
            );
        }
        by_module.entry(module).or_default().insert(part, t);
    }
    by_module
        .into_iter()
        .map(|(name, tensors)| {
            let weight_dims = tensors.get("weight").map(|t| t.dims.len());
            let kind = if tensors.contains_key("running_mean") {
                Kind::Norm
            } else {
                match weight_dims {
                    Some(4) => Kind::Conv,
                    Some(2) => Kind::Dense,
                    _ => bail!(
                        "module {name} is not a convolution, dense or batch-norm layer \
                         (its tensors: {})",
                        tensors.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                }
            };
            Ok(Module {
                name,
                kind,
                tensors,
            })
        })
        .collect()
}

/// Places a state dict's `tensors` into `spec`; `scaling` says what input the source
/// model took.
pub fn import(
    spec: &ModelSpec,
    tensors: Vec<Named>,
    scaling: InputScaling,
) -> anyhow::Result<Imported> {
    let mut needed = Vec::new();
    slots(&spec.layers, "", spec.input.clone(), &mut None, &mut needed)?;
    let mut found = modules(tensors)?;
    found.sort_by_cached_key(|m| (m.kind, natural(&m.name)));
    let mut placed: HashMap<String, Tensors> = HashMap::new();
    for kind in [Kind::Conv, Kind::Norm, Kind::Dense] {
        let want: Vec<&Slot> = needed.iter().filter(|s| s.kind() == kind).collect();
        let have: Vec<&mut Module> = found.iter_mut().filter(|m| m.kind == kind).collect();
        if want.len() != have.len() {
            bail!(
                "the architecture has {} {}, the file {}{}",
                want.len(),
                kind.name(),
                have.len(),
                if have.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        have.iter()
                            .map(|m| m.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
        }
        for (slot, module) in want.into_iter().zip(have) {
            let (path, tensors) = place(slot, module)?;
            placed.insert(path, tensors);
        }
    }
    let items = items(&spec.layers, "", &mut placed);
    Ok(Imported {
        name: spec.name.clone(),
        input: spec.input.clone(),
        items,
        mean: (scaling.mean / scaling.scale) as f32,
        std: (scaling.std / scaling.scale) as f32,
        flip_tta: false,
        temperature: 1.0,
        classes: None,
        training: None,
        exact_normalization: None,
    })
}

type Tensors = Vec<(&'static str, Vec<usize>, Vec<f32>)>;

fn take(
    module: &mut Module,
    part: &str,
    want: &[usize],
    layer: &str,
) -> anyhow::Result<Option<Vec<f32>>> {
    let Some(t) = module.tensors.remove(part) else {
        return Ok(None);
    };
    if t.dims != want {
        bail!(
            "tensor {} has shape {:?}, the architecture's layer {layer} needs {want:?}",
            t.name,
            t.dims
        );
    }
    Ok(Some(t.values))
}

/// The tensors of one slot from its module, in fmnist's layouts.
fn place(slot: &Slot, module: &mut Module) -> anyhow::Result<(String, Tensors)> {
    let name = module.name.clone();
    let missing = |part: &str| anyhow!("module {name} has no {part}");
    Ok(match slot {
        Slot::Conv {
            path,
            oc,
            c,
            k,
            bias,
        } => {
            let layer = format!("{path} (conv2d)");
            let w = take(module, "weight", &[*oc, *c, *k, *k], &layer)?
                .ok_or_else(|| missing("weight"))?;
            let b = take(module, "bias", &[*oc], &layer)?;
            let mut t = vec![(
                "weight",
                vec![*oc, *k, *k, *c],
                layout::ohwi_from_oihw(&w, *oc, *k, *c),
            )];
            match (b, bias) {
                (Some(b), true) => t.push(("bias", vec![*oc], b)),
                (None, false) => {}
                (Some(_), false) => {
                    bail!("module {name} has a bias; layer {layer} has none (\"bias\": false)")
                }
                (None, true) => bail!("layer {layer} has a bias; module {name} has none"),
            }
            (path.clone(), t)
        }
        Slot::Norm { path, c, gather } => {
            let layer = format!("{path} (batch_norm)");
            let mut t = Vec::new();
            for role in ["weight", "bias", "running_mean", "running_var"] {
                let v = match take(module, role, &[*c], &layer)? {
                    Some(v) => v,
                    // A norm without affine parameters scales by 1 and shifts by 0.
                    None if role == "weight" => vec![1.0; *c],
                    None if role == "bias" => vec![0.0; *c],
                    None => return Err(missing(role)),
                };
                let v = match gather {
                    Some(g) => layout::gather(&v, g),
                    None => v,
                };
                t.push((role, vec![*c], v));
            }
            (path.clone(), t)
        }
        Slot::Dense {
            path,
            units,
            inputs,
            bias,
            gather,
        } => {
            let layer = format!("{path} (linear)");
            let w = take(module, "weight", &[*units, *inputs], &layer)?
                .ok_or_else(|| missing("weight"))?;
            let w = match gather {
                Some(g) => layout::gather_columns(&w, g),
                None => w,
            };
            let mut t = vec![("weight", vec![*units, *inputs], w)];
            match (take(module, "bias", &[*units], &layer)?, bias) {
                (Some(b), true) => t.push(("bias", vec![*units], b)),
                (None, false) => {}
                (Some(_), false) => {
                    bail!("module {name} has a bias; layer {layer} has none (\"bias\": false)")
                }
                (None, true) => bail!("layer {layer} has a bias; module {name} has none"),
            }
            (path.clone(), t)
        }
    })
}

fn items(layers: &[LayerSpec], prefix: &str, placed: &mut HashMap<String, Tensors>) -> Vec<Item> {
    layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let path = format!("{prefix}{i}");
            match layer {
                LayerSpec::Residual { body } => {
                    Item::Residual(items(body, &format!("{path}.body."), placed))
                }
                other => Item::Layer(other.clone(), placed.remove(&path).unwrap_or_default()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_compares_numbers_as_numbers() {
        let mut names = ["features.10", "features.3", "conv10", "conv2", "fc1"];
        names.sort_by_key(|n| natural(n));
        assert_eq!(
            names,
            ["conv2", "conv10", "fc1", "features.3", "features.10"]
        );
    }

    #[test]
    fn half_precision_values_convert_exactly() {
        for (h, want) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x0001, 5.960_464_5e-8),
            (0x0000, 0.0),
        ] {
            assert_eq!(f16_to_f32(h), want, "{h:#x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    }
}
