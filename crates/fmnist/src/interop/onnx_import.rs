//! ONNX import: a graph of the operators fmnist's layers express (from `torch.onnx.export`,
//! tf2onnx or fmnist's own export) becomes an fmnist architecture with its weights.
//!
//! The graph is read as a chain from its input: each node must take the chain's current
//! tensor, except `Add`, whose second operand may be an earlier tensor (a residual block).
//! Constant arithmetic before the first layer is folded into the input normalisation; a
//! trailing softmax, and the mirror-image batch of a flip test-time augmentation, are
//! recognised and become the model's inference settings.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use nn::LayerSpec;
use prost::Message;
use tract_onnx::pb::{self, AttributeProto, NodeProto, TensorProto, tensor_proto};

use super::{Imported, InputScaling, Item, layout};
use crate::io::bounded;

/// ONNX files larger than this are refused before reading (twice the largest model fmnist
/// builds, as protobuf adds little).
const MAX_ONNX_BYTES: u64 = 256 << 20;
/// Most values one tensor of the file may declare ([`nn::MAX_PARAMS`]).
const MAX_TENSOR_VALUES: usize = nn::MAX_PARAMS;

/// Operators the importer understands.
const SUPPORTED: [&str; 31] = [
    "Conv",
    "BatchNormalization",
    "Relu",
    "Gelu",
    "Tanh",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Flatten",
    "Reshape",
    "Transpose",
    "Dropout",
    "Identity",
    "Softmax",
    "LogSoftmax",
    "Constant",
    "Slice",
    "Concat",
    "ReduceMean",
    // Shape arithmetic, as exporters write a flatten whose size they compute.
    "Shape",
    "Gather",
    "Cast",
    "Unsqueeze",
    "Squeeze",
];

/// Operators that may compute a shape from `Shape`'s output.
const SHAPE_OPS: [&str; 6] = ["Gather", "Cast", "Slice", "Concat", "Unsqueeze", "Squeeze"];

/// Reads the ONNX model at `path`, and the external data files beside it that its
/// tensors name (as `torch.onnx.export` writes them).
pub fn read(path: &Path, scaling: InputScaling) -> anyhow::Result<Imported> {
    let bytes = bounded::read(path, MAX_ONNX_BYTES, "larger than any model fmnist imports")?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&bytes, Some(dir), scaling)
}

/// Parses an ONNX model's bytes (whose tensors must all be inside them).
pub fn from_bytes(bytes: &[u8], scaling: InputScaling) -> anyhow::Result<Imported> {
    parse(bytes, None, scaling)
}

fn parse(bytes: &[u8], dir: Option<&Path>, scaling: InputScaling) -> anyhow::Result<Imported> {
    let model = pb::ModelProto::decode(bytes).map_err(|e| anyhow!("not an ONNX model ({e})"))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| anyhow!("an ONNX file without a graph"))?;
    let mut unsupported = BTreeSet::new();
    for node in &graph.node {
        let known = SUPPORTED.contains(&node.op_type.as_str())
            && matches!(node.domain.as_str(), "" | "ai.onnx");
        if !known {
            unsupported.insert(if node.domain.is_empty() {
                node.op_type.clone()
            } else {
                format!("{}.{}", node.domain, node.op_type)
            });
        }
    }
    if !unsupported.is_empty() {
        bail!(
            "unsupported ONNX operators: {} (fmnist imports {})",
            unsupported.into_iter().collect::<Vec<_>>().join(", "),
            SUPPORTED.join(", ")
        );
    }
    let meta: HashMap<&str, &str> = model
        .metadata_props
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    let mut external = External {
        dir: dir.map(Path::to_path_buf),
        budget: MAX_ONNX_BYTES,
    };
    let mut w = Walk::new(graph, scaling, &mut external)?;
    let mut i = 0;
    while i < graph.node.len() {
        let node = &graph.node[i];
        if let Some(consumed) = w.gelu_pattern(&graph.node[i..]) {
            i += consumed;
            continue;
        }
        w.node(node, &mut external)
            .with_context(|| format!("ONNX node {} ({})", node_name(node, i), node.op_type))?;
        i += 1;
    }
    let output = graph
        .output
        .first()
        .ok_or_else(|| anyhow!("the graph has no output"))?;
    if w.resolve(&output.name) != w.cur {
        bail!(
            "the graph's output {} is not the end of the chain of layers from its input",
            output.name
        );
    }
    if w.flipped.is_some() && !w.flip {
        bail!("the graph mirrors its input but never uses the mirror images");
    }
    let temperature = match w.temperature {
        Some((t, layers)) if layers == w.items.len() && w.softmax => t,
        Some(_) => bail!(
            "the graph scales the scores between layers or without a softmax; fmnist divides \
             only the last layer's scores, before the softmax"
        ),
        None => 1.0,
    };
    if w.flip && !w.tta_averaged {
        bail!("the graph batches its input with the mirror images but never averages them");
    }
    let (a, b) = w.affine;
    if !(a.is_finite() && b.is_finite() && a > 0.0) {
        bail!(
            "the graph's input arithmetic scales the pixels by {a}: fmnist needs a positive scale"
        );
    }
    let name = if graph.name.is_empty() {
        "imported".to_string()
    } else {
        graph.name.clone()
    };
    Ok(Imported {
        name,
        input: w.input,
        items: w.items,
        mean: (-b / a) as f32,
        std: (1.0 / a) as f32,
        flip_tta: w.flip,
        temperature,
        classes: meta
            .get("classes")
            .and_then(|c| serde_json::from_str::<Vec<String>>(c).ok()),
        training: meta
            .get("training")
            .and_then(|t| serde_json::from_str(t).ok()),
        exact_normalization: meta
            .get("fmnist.normalization")
            .and_then(|n| serde_json::from_str(n).ok()),
    })
}

fn node_name(node: &NodeProto, i: usize) -> String {
    if node.name.is_empty() {
        format!("#{i}")
    } else {
        node.name.clone()
    }
}

/// A constant of the graph: an initializer or a `Constant` node's value.
#[derive(Clone, Debug)]
struct Const {
    dims: Vec<usize>,
    values: Vec<f64>,
}

impl Const {
    fn f32s(&self) -> Vec<f32> {
        self.values.iter().map(|&v| v as f32).collect()
    }

    fn ints(&self) -> Vec<i64> {
        self.values.iter().map(|&v| v as i64).collect()
    }

    /// The value if the constant holds exactly one.
    fn scalar(&self) -> Option<f64> {
        (self.values.len() == 1).then(|| self.values[0])
    }
}

/// Where external tensor data may be read from, and how many bytes more.
struct External {
    /// The model file's directory (`None`: external data is refused).
    dir: Option<std::path::PathBuf>,
    budget: u64,
}

impl External {
    /// The bytes an external tensor names: a file beside the model (a plain name, never
    /// a path that leaves its directory), from `offset`, `length` bytes (default: all).
    fn read(&mut self, t: &TensorProto) -> anyhow::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let name = &t.name;
        let Some(dir) = &self.dir else {
            bail!("tensor {name} keeps its data in an external file");
        };
        let get = |key: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == key)
                .map(|e| e.value.as_str())
        };
        let location = get("location")
            .ok_or_else(|| anyhow!("tensor {name} has external data without a location"))?;
        let file_name = Path::new(location);
        let plain = file_name.components().count() == 1
            && matches!(
                file_name.components().next(),
                Some(std::path::Component::Normal(_))
            );
        if !plain {
            bail!(
                "tensor {name} names the data file {location:?}; fmnist reads only files beside the model"
            );
        }
        let number = |key: &str| -> anyhow::Result<Option<u64>> {
            get(key)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| anyhow!("tensor {name} has a bad external {key} {v:?}"))
                })
                .transpose()
        };
        let path = dir.join(file_name);
        let mut f = bounded::open_regular(&path)?;
        let size = f
            .metadata()
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        let offset = number("offset")?.unwrap_or(0);
        let length = number("length")?.unwrap_or(size.saturating_sub(offset));
        if offset.checked_add(length).is_none_or(|end| end > size) {
            bail!(
                "tensor {name}: {} is shorter than its external data says",
                path.display()
            );
        }
        if length > self.budget {
            bail!("the external data is larger than any model fmnist imports");
        }
        self.budget -= length;
        f.seek(SeekFrom::Start(offset))
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut bytes = Vec::new();
        f.take(length)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(bytes)
    }
}

/// Decodes a tensor's numbers (float, double, int32 or int64), checking its size.
fn decode(t: &TensorProto, external: &mut External) -> anyhow::Result<Const> {
    let name = &t.name;
    let outside;
    let raw = if t.data_location == Some(tensor_proto::DataLocation::External as i32) {
        outside = external.read(t)?;
        if outside.is_empty() {
            bail!("tensor {name} has no external data");
        }
        &outside
    } else {
        &t.raw_data
    };
    let mut count = 1usize;
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        let d =
            usize::try_from(d).map_err(|_| anyhow!("tensor {name} has a negative dimension"))?;
        count = count
            .checked_mul(d)
            .filter(|&n| n <= MAX_TENSOR_VALUES)
            .ok_or_else(|| anyhow!("tensor {name} is larger than any fmnist layer"))?;
        dims.push(d);
    }
    use tensor_proto::DataType as D;
    let values: Vec<f64> = match D::try_from(t.data_type) {
        Ok(D::Float) if !raw.is_empty() => raw_values(raw, 4, count, name, |b| {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64
        })?,
        Ok(D::Float) => t.float_data.iter().map(|&v| v as f64).collect(),
        Ok(D::Double) if !raw.is_empty() => raw_values(raw, 8, count, name, |b| {
            f64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
        })?,
        Ok(D::Double) => t.double_data.clone(),
        Ok(D::Int64) if !raw.is_empty() => raw_values(raw, 8, count, name, |b| {
            i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f64
        })?,
        Ok(D::Int64) => t.int64_data.iter().map(|&v| v as f64).collect(),
        Ok(D::Int32) if !raw.is_empty() => raw_values(raw, 4, count, name, |b| {
            i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64
        })?,
        Ok(D::Int32) => t.int32_data.iter().map(|&v| v as f64).collect(),
        _ => bail!(
            "tensor {name} has ONNX data type {}, fmnist reads float, double, int32 and int64",
            t.data_type
        ),
    };
    if values.len() != count {
        bail!(
            "tensor {name} declares {dims:?} ({count} values) but holds {}",
            values.len()
        );
    }
    Ok(Const { dims, values })
}

fn raw_values(
    raw: &[u8],
    width: usize,
    count: usize,
    name: &str,
    f: impl Fn(&[u8]) -> f64,
) -> anyhow::Result<Vec<f64>> {
    if raw.len() != count * width {
        bail!(
            "tensor {name} holds {} bytes, its shape needs {}",
            raw.len(),
            count * width
        );
    }
    Ok(raw.chunks_exact(width).map(f).collect())
}

/// The walk along the graph's chain of layers.
struct Walk {
    consts: HashMap<String, Const>,
    /// The chain's current tensor.
    cur: String,
    /// Its shape for fmnist: `[h, w, c]` or `[features]`.
    shape: Vec<usize>,
    /// The map is NHWC after `Transpose(0, 2, 3, 1)`: only a flatten may follow.
    nhwc: bool,
    /// After an NCHW flatten, where fmnist's flattened (NHWC) features sit among the
    /// graph's: the next layer with per-feature weights gathers them through it.
    pending: Option<Vec<usize>>,
    /// The layers so far.
    items: Vec<Item>,
    /// Tensors of the chain: how many items came before each and its shape.
    produced: HashMap<String, (usize, Vec<usize>)>,
    /// Names that stand for another tensor (Dropout, Identity).
    aliases: HashMap<String, String>,
    /// The model's input, `[h, w, c]` as fmnist takes it.
    input: Vec<usize>,
    /// The graph input's dimensions after the batch, as declared (NCHW, or NHWC as
    /// Keras' exporters write it, until a transpose or reshape says which).
    declared: [usize; 3],
    /// Tensors computed from shapes (a flatten's target size), not from data.
    shape_derived: std::collections::HashSet<String>,
    /// The graph's first layer sees `a · pixel/255 + b`.
    affine: (f64, f64),
    /// The mirror-image tensor, once a `Slice` has made it.
    flipped: Option<String>,
    /// Whether the batch holds the mirror images after the originals.
    flip: bool,
    /// Whether the scores have been turned into probabilities.
    softmax: bool,
    /// What the class scores are divided by before the softmax (fmnist's calibration),
    /// with the count of layers at that point: it must come after the last.
    temperature: Option<(f32, usize)>,
    /// Whether the probabilities of mirror images have been split off, and averaged.
    tta_split: bool,
    tta_averaged: bool,
}

impl Walk {
    fn new(
        graph: &pb::GraphProto,
        scaling: InputScaling,
        external: &mut External,
    ) -> anyhow::Result<Self> {
        let mut consts = HashMap::new();
        for t in &graph.initializer {
            consts.insert(t.name.clone(), decode(t, external)?);
        }
        // Old exporters list the initializers among the inputs too.
        let input = graph
            .input
            .iter()
            .find(|i| !consts.contains_key(&i.name))
            .ok_or_else(|| anyhow!("the graph has no input"))?;
        let dims = tensor_dims(input)?;
        let [_, c, h, w] = dims.as_slice() else {
            bail!(
                "the graph's input {} has {} dimensions; fmnist needs [N, channels, height, width]",
                input.name,
                dims.len()
            );
        };
        let (Some(c), Some(h), Some(w)) = (*c, *h, *w) else {
            bail!(
                "the graph's input {} has no fixed channels, height and width",
                input.name
            );
        };
        let shape = vec![h, w, c];
        let mut produced = HashMap::new();
        produced.insert(input.name.clone(), (0, shape.clone()));
        Ok(Self {
            consts,
            cur: input.name.clone(),
            shape: shape.clone(),
            nhwc: false,
            pending: None,
            items: Vec::new(),
            produced,
            aliases: HashMap::new(),
            input: shape,
            declared: [c, h, w],
            shape_derived: Default::default(),
            affine: (scaling.scale / scaling.std, -scaling.mean / scaling.std),
            flipped: None,
            flip: false,
            softmax: false,
            temperature: None,
            tta_split: false,
            tta_averaged: false,
        })
    }

    fn resolve(&self, name: &str) -> String {
        let mut name = name;
        while let Some(next) = self.aliases.get(name) {
            name = next;
        }
        name.to_string()
    }

    fn constant(&self, name: &str) -> Option<&Const> {
        self.consts.get(name)
    }

    fn need_const(&self, node: &NodeProto, i: usize, what: &str) -> anyhow::Result<Const> {
        let name = node
            .input
            .get(i)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| anyhow!("has no {what}"))?;
        self.constant(name)
            .cloned()
            .ok_or_else(|| anyhow!("its {what} ({name}) is computed, not a constant"))
    }

    /// Checks that the node's first input is the chain's current tensor.
    fn takes_current(&self, node: &NodeProto) -> anyhow::Result<()> {
        match node.input.first() {
            Some(x) if self.resolve(x) == self.cur => Ok(()),
            Some(x) => bail!(
                "takes {x}, not the chain's current tensor {}: fmnist imports a chain of \
                 layers with residual additions",
                self.cur
            ),
            None => bail!("has no input"),
        }
    }

    fn advance(&mut self, node: &NodeProto) -> anyhow::Result<()> {
        let out = node
            .output
            .first()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| anyhow!("has no output"))?;
        self.cur = out.clone();
        self.produced
            .insert(out.clone(), (self.items.len(), self.shape.clone()));
        Ok(())
    }

    fn push(&mut self, spec: LayerSpec, tensors: Vec<(&'static str, Vec<usize>, Vec<f32>)>) {
        self.items.push(Item::Layer(spec, tensors));
    }

    fn spatial(&self) -> anyhow::Result<(usize, usize, usize)> {
        if self.nhwc {
            bail!("follows a transpose to NHWC, which only a flatten may follow");
        }
        match *self.shape.as_slice() {
            [h, w, c] => Ok((h, w, c)),
            _ => bail!("needs an image-shaped input, got {:?}", self.shape),
        }
    }

    fn before_layers(&self) -> bool {
        self.items.is_empty()
    }

    fn ending(&self) -> anyhow::Result<()> {
        if self.softmax {
            bail!("comes after the softmax: fmnist models end with their scores");
        }
        Ok(())
    }

    /// The nodes of fmnist's own tanh GELU ([`super::onnx_export`]), if `nodes` starts
    /// with them on the current tensor; how many it took.
    fn gelu_pattern(&mut self, nodes: &[NodeProto]) -> Option<usize> {
        const OPS: [&str; 9] = [
            "Mul", "Mul", "Mul", "Add", "Mul", "Tanh", "Add", "Mul", "Mul",
        ];
        if nodes.len() < OPS.len() || nodes.iter().zip(OPS).any(|(n, op)| n.op_type != op) {
            return None;
        }
        let x = self.cur.clone();
        let out = |i: usize| nodes[i].output.first().cloned().unwrap_or_default();
        let is = |name: &String, want: f32| {
            self.constant(name)
                .and_then(Const::scalar)
                .is_some_and(|v| (v as f32 - want).abs() < 1e-6)
        };
        let input = |i: usize, j: usize| nodes[i].input.get(j).map(|n| self.resolve(n));
        let fits = input(0, 0).as_ref() == Some(&x)
            && input(0, 1).as_ref() == Some(&x)
            && input(1, 0) == Some(out(0))
            && input(1, 1).as_ref() == Some(&x)
            && input(2, 0) == Some(out(1))
            && nodes[2].input.get(1).is_some_and(|c| is(c, 0.044_715))
            && input(3, 0).as_ref() == Some(&x)
            && input(3, 1) == Some(out(2))
            && input(4, 0) == Some(out(3))
            && nodes[4].input.get(1).is_some_and(|c| is(c, 0.797_884_6))
            && input(5, 0) == Some(out(4))
            && input(6, 0) == Some(out(5))
            && nodes[6].input.get(1).is_some_and(|c| is(c, 1.0))
            && input(7, 0).as_ref() == Some(&x)
            && input(7, 1) == Some(out(6))
            && input(8, 0) == Some(out(7))
            && nodes[8].input.get(1).is_some_and(|c| is(c, 0.5));
        if !fits || self.softmax {
            return None;
        }
        self.push(LayerSpec::Gelu, vec![]);
        self.advance(&nodes[8]).ok()?;
        Some(OPS.len())
    }

    fn node(&mut self, node: &NodeProto, external: &mut External) -> anyhow::Result<()> {
        let op = node.op_type.as_str();
        if op == "Constant" {
            let t = attr(node, "value")
                .and_then(|a| a.t.as_ref())
                .ok_or_else(|| anyhow!("a Constant without a tensor value"))?;
            let out = node
                .output
                .first()
                .ok_or_else(|| anyhow!("has no output"))?;
            self.consts.insert(out.clone(), decode(t, external)?);
            return Ok(());
        }
        if self.shape_computation(node)? {
            return Ok(());
        }
        // Arithmetic with a constant, and the residual addition.
        if matches!(op, "Add" | "Sub" | "Mul" | "Div") {
            return self.arithmetic(node);
        }
        if op == "Concat" {
            return self.concat(node);
        }
        self.takes_current(node)?;
        if op == "Slice" {
            // The mirror images are a side branch: the chain goes on from the originals.
            return self.slice(node);
        }
        match op {
            "Dropout" | "Identity" => {
                let out = node
                    .output
                    .first()
                    .ok_or_else(|| anyhow!("has no output"))?;
                self.aliases.insert(out.clone(), self.cur.clone());
                return Ok(());
            }
            "Conv" => self.conv(node)?,
            "BatchNormalization" => self.batch_norm(node)?,
            "Relu" => {
                self.ending()?;
                self.push(LayerSpec::Relu, vec![]);
            }
            "Gelu" => {
                self.ending()?;
                match attr(node, "approximate").map(|a| a.s.as_slice()) {
                    Some(b"tanh") => self.push(LayerSpec::Gelu, vec![]),
                    _ => bail!(
                        "exact (erf) GELU; fmnist's GELU is the tanh form \
                         (PyTorch's GELU(approximate=\"tanh\"))"
                    ),
                }
            }
            "MaxPool" | "AveragePool" => self.pool(node)?,
            "GlobalAveragePool" | "GlobalMaxPool" => {
                self.ending()?;
                let (_, _, c) = self.spatial()?;
                self.push(
                    if op == "GlobalMaxPool" {
                        LayerSpec::GlobalMaxPool
                    } else {
                        LayerSpec::GlobalAvgPool
                    },
                    vec![],
                );
                self.shape = vec![c];
            }
            "Transpose" => {
                let perm = attr(node, "perm")
                    .map(|a| a.ints.clone())
                    .unwrap_or_default();
                if perm != [0, 2, 3, 1] || self.shape.len() != 3 || self.nhwc {
                    bail!(
                        "only the transpose of an image to channels-last (perm 0,2,3,1) before a flatten is supported"
                    );
                }
                self.nhwc = true;
            }
            "Flatten" => {
                let axis = attr(node, "axis").map_or(1, |a| a.i);
                if axis != 1 {
                    bail!("flattens from axis {axis}; fmnist flattens everything but the batch");
                }
                self.flatten();
            }
            "Reshape" => self.reshape(node)?,
            "Gemm" => self.gemm(node)?,
            "MatMul" => {
                self.ending()?;
                let w = self.need_const(node, 1, "weight")?;
                let [inputs, units] = *w.dims.as_slice() else {
                    bail!(
                        "a MatMul weight of shape {:?}; fmnist needs [in, out]",
                        w.dims
                    );
                };
                let weight = layout::transpose(&w.f32s(), inputs, units);
                self.linear(weight, units, inputs, None)?;
            }
            "Softmax" | "LogSoftmax" => {
                let axis = attr(node, "axis").map_or(-1, |a| a.i);
                if self.shape.len() != 1 || !(axis == 1 || axis == -1) || self.softmax {
                    bail!(
                        "a softmax fmnist cannot place: only one over the class scores at the end"
                    );
                }
                self.softmax = true;
            }
            "ReduceMean" => {
                let axes = match attr(node, "axes") {
                    Some(a) => a.ints.clone(),
                    None => self.need_const(node, 1, "axes")?.ints(),
                };
                let keep = attr(node, "keepdims").map_or(1, |a| a.i);
                if !self.tta_split || axes != [0] || keep != 0 || self.tta_averaged {
                    bail!("only the average of the mirror images' probabilities is supported");
                }
                self.tta_averaged = true;
            }
            "Tanh" => bail!("tanh is supported only as part of a GELU"),
            other => bail!("{other} is not supported here"),
        }
        self.advance(node)
    }

    /// Records a node that computes a shape (`Shape` of a tensor of the chain, and
    /// arithmetic on its result): it takes no part in the chain.
    fn shape_computation(&mut self, node: &NodeProto) -> anyhow::Result<bool> {
        let op = node.op_type.as_str();
        let derived = |n: &String| self.shape_derived.contains(n);
        let is_shape = match op {
            "Shape" => {
                let x = node
                    .input
                    .first()
                    .map(|n| self.resolve(n))
                    .unwrap_or_default();
                if !self.produced.contains_key(&x) {
                    bail!("takes the shape of {x}, which is not a tensor of the chain");
                }
                true
            }
            _ if SHAPE_OPS.contains(&op) => {
                let inputs: Vec<&String> = node.input.iter().filter(|n| !n.is_empty()).collect();
                inputs.iter().any(|n| derived(n))
                    && inputs
                        .iter()
                        .all(|n| derived(n) || self.consts.contains_key(n.as_str()))
            }
            _ => false,
        };
        if is_shape {
            self.shape_derived.extend(node.output.iter().cloned());
        }
        Ok(is_shape)
    }

    /// Before the first layer, reads the input as NHWC `[N, h, w, c]` rather than NCHW:
    /// what a transpose to NCHW (or, with one channel, a reshape) says it is.
    fn input_is_nhwc(&mut self) {
        let [h, w, c] = self.declared;
        self.shape = vec![h, w, c];
        self.input = self.shape.clone();
    }

    fn arithmetic(&mut self, node: &NodeProto) -> anyhow::Result<()> {
        let op = node.op_type.as_str();
        let [a, b] = node.input.as_slice() else {
            bail!("needs two inputs");
        };
        let (a, b) = (self.resolve(a), self.resolve(b));
        let (ca, cb) = (self.constant(&a).cloned(), self.constant(&b).cloned());
        match (ca, cb) {
            (None, None) if op == "Add" => self.residual(node, &a, &b),
            (None, None) => bail!("{op} of two computed tensors is not a layer fmnist has"),
            (Some(_), Some(_)) => bail!("{op} of two constants is not folded by this importer"),
            (ca, cb) => {
                let (x, c, constant_first) = match (ca, cb) {
                    (Some(c), None) => (b, c, true),
                    (None, Some(c)) => (a, c, false),
                    _ => unreachable!("both-or-neither handled above"),
                };
                if x != self.cur {
                    bail!("takes {x}, not the chain's current tensor {}", self.cur);
                }
                self.ending()?;
                if op == "Add" && self.bias_slot() {
                    return self.add_bias(node, &c);
                }
                if let Some(t) = self.temperature_of(op, &c, constant_first) {
                    self.temperature = Some((t, self.items.len()));
                    return self.advance(node);
                }
                if !self.before_layers() {
                    bail!(
                        "{op} with a constant inside the network; fmnist folds constant \
                         arithmetic only on the input"
                    );
                }
                let v = c.scalar().ok_or_else(|| {
                    anyhow!(
                        "{op} with a non-scalar constant on the input ({:?})",
                        c.dims
                    )
                })?;
                let (sa, sb) = self.affine;
                self.affine = match (op, constant_first) {
                    ("Add", _) => (sa, sb + v),
                    ("Sub", false) => (sa, sb - v),
                    ("Mul", _) => (sa * v, sb * v),
                    ("Div", false) => (sa / v, sb / v),
                    _ => bail!("{op} with the constant first on the input is not supported"),
                };
                self.advance(node)
            }
        }
    }

    /// The temperature a division (or multiplication) of the class scores by a positive
    /// scalar stands for, before the softmax; `None` for any other arithmetic.
    fn temperature_of(&self, op: &str, c: &Const, constant_first: bool) -> Option<f32> {
        if self.before_layers()
            || self.shape.len() != 1
            || self.softmax
            || self.temperature.is_some()
            || constant_first
        {
            return None;
        }
        let v = c.scalar()?;
        let t = match op {
            "Div" => v,
            "Mul" => 1.0 / v,
            _ => return None,
        };
        (t.is_finite() && t > 0.0).then_some(t as f32)
    }

    /// Whether the last layer is a dense one without a bias (MatMul), which an `Add` of
    /// a vector completes.
    fn bias_slot(&self) -> bool {
        matches!(
            self.items.last(),
            Some(Item::Layer(LayerSpec::Linear { bias: false, .. }, _))
        ) && self
            .produced
            .get(&self.cur)
            .is_some_and(|(at, _)| *at == self.items.len())
    }

    fn add_bias(&mut self, node: &NodeProto, c: &Const) -> anyhow::Result<()> {
        let Some(Item::Layer(LayerSpec::Linear { units, bias }, tensors)) = self.items.last_mut()
        else {
            bail!("no dense layer to add a bias to");
        };
        if c.values.len() != *units {
            bail!("a bias of {} values for {units} units", c.values.len());
        }
        *bias = true;
        tensors.push(("bias", vec![*units], c.f32s()));
        self.advance(node)
    }

    fn residual(&mut self, node: &NodeProto, a: &str, b: &str) -> anyhow::Result<()> {
        self.ending()?;
        let other = if a == self.cur {
            b
        } else if b == self.cur {
            a
        } else {
            bail!("adds two tensors, neither of them the chain's current one");
        };
        let (at, shape) = self
            .produced
            .get(other)
            .cloned()
            .ok_or_else(|| anyhow!("adds {other}, which is not a tensor of the chain"))?;
        if at >= self.items.len() {
            bail!("adds {other}, which is not before the current tensor: no residual block");
        }
        if shape != self.shape || self.nhwc {
            bail!(
                "adds {other} of shape {shape:?} to the current {:?}: a residual block keeps its shape",
                self.shape
            );
        }
        let body = self.items.split_off(at);
        self.items.push(Item::Residual(body));
        self.advance(node)
    }

    fn concat(&mut self, node: &NodeProto) -> anyhow::Result<()> {
        let axis = attr(node, "axis").map_or(0, |a| a.i);
        let inputs: Vec<String> = node.input.iter().map(|n| self.resolve(n)).collect();
        match &self.flipped {
            Some(f) if axis == 0 && inputs == [self.cur.clone(), f.clone()] && !self.flip => {
                self.flip = true;
                self.advance(node)
            }
            _ => bail!("only the batch of images and their mirror images can be concatenated"),
        }
    }

    fn slice(&mut self, node: &NodeProto) -> anyhow::Result<()> {
        let get = |i: usize, what: &str| self.need_const(node, i, what).map(|c| c.ints());
        let (starts, ends) = (get(1, "starts")?, get(2, "ends")?);
        let axes = if node.input.len() > 3 {
            get(3, "axes")?
        } else {
            vec![0]
        };
        let steps = if node.input.len() > 4 {
            get(4, "steps")?
        } else {
            vec![1]
        };
        let (_, w, _) = self.spatial()?;
        let w = w as i64;
        let mirror = matches!(axes.as_slice(), [3] | [-1])
            && steps == [-1]
            && matches!(starts.as_slice(), [s] if *s == -1 || *s >= w - 1)
            && matches!(ends.as_slice(), [e] if *e < -w);
        if !mirror || !self.before_layers() || self.flipped.is_some() {
            bail!("only mirroring the input images (a flip test-time augmentation) is supported");
        }
        let out = node
            .output
            .first()
            .ok_or_else(|| anyhow!("has no output"))?;
        self.flipped = Some(out.clone());
        Ok(())
    }

    fn flatten(&mut self) {
        if let [h, w, c] = *self.shape.as_slice() {
            if !self.nhwc && h * w > 1 && c > 1 {
                self.pending = Some(layout::nchw_positions(h, w, c));
            }
            self.push(LayerSpec::Flatten, vec![]);
            self.shape = vec![h * w * c];
        }
        self.nhwc = false;
    }

    fn reshape(&mut self, node: &NodeProto) -> anyhow::Result<()> {
        if node
            .input
            .get(1)
            .is_some_and(|n| self.shape_derived.contains(n))
        {
            // A size computed from the shape (`x.view(x.size(0), -1)`): a flatten; the
            // dense layer after it checks the size.
            self.ending()?;
            self.flatten();
            return Ok(());
        }
        let target = self.need_const(node, 1, "shape")?.ints();
        if let ([_, c, h, w], true) = (target.as_slice(), self.before_layers()) {
            // One channel, channels-last, reshaped to channels-first: the same values.
            let [dh, dw, dc] = self.declared;
            if (*c, *h, *w) == (dc as i64, dh as i64, dw as i64) && dc == 1 {
                self.input_is_nhwc();
                return Ok(());
            }
        }
        let total: usize = self.shape.iter().product();
        if self.softmax && self.flip && !self.tta_split {
            let classes = total as i64;
            if target == [2, -1, classes] {
                self.tta_split = true;
                return Ok(());
            }
        }
        self.ending()?;
        let flat = match target.as_slice() {
            [_, f] => *f == -1 || *f == total as i64,
            _ => false,
        };
        if !flat {
            bail!("reshapes to {target:?}; fmnist supports only flattening each image");
        }
        self.flatten();
        Ok(())
    }

    fn conv(&mut self, node: &NodeProto) -> anyhow::Result<()> {
        self.ending()?;
        let (h, w, c) = self.spatial()?;
        let weight = self.need_const(node, 1, "weight")?;
        let [oc, wc, kh, kw] = *weight.dims.as_slice() else {
            bail!(
                "a convolution weight of shape {:?}; fmnist needs [out, in, k, k]",
                weight.dims
            );
        };
        if wc != c || kh != kw || kh == 0 {
            bail!(
                "a weight of shape {:?} on {c} channels: fmnist needs [out, {c}, k, k] with square kernels",
                weight.dims
            );
        }
        let k = kh;
        if attr(node, "group").is_some_and(|a| a.i != 1) {
            bail!("a grouped convolution; fmnist's convolutions are dense");
        }
        if attr(node, "dilations").is_some_and(|a| a.ints.iter().any(|&d| d != 1)) {
            bail!("a dilated convolution; fmnist has none");
        }
        let stride = square(attr(node, "strides"), "strides")?;
        let auto = attr(node, "auto_pad")
            .map(|a| a.s.clone())
            .unwrap_or_default();
        let padding = match auto.as_slice() {
            b"" | b"NOTSET" => {
                let pads = attr(node, "pads")
                    .map(|a| a.ints.clone())
                    .unwrap_or_default();
                match pads.as_slice() {
                    [] => 0,
                    [p, rest @ ..] if rest.iter().all(|q| q == p) && *p >= 0 => *p as usize,
                    _ => bail!("uneven padding {pads:?}; fmnist pads all sides alike"),
                }
            }
            b"VALID" => 0,
            b"SAME_UPPER" | b"SAME_LOWER" if stride == 1 && k % 2 == 1 => (k - 1) / 2,
            _ => bail!(
                "auto_pad {} with this kernel and stride",
                String::from_utf8_lossy(&auto)
            ),
        };
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(_) => Some(self.need_const(node, 2, "bias")?),
            None => None,
        };
        if let Some(b) = &bias
            && b.values.len() != oc
        {
            bail!("a bias of {} values for {oc} filters", b.values.len());
        }
        let (Some(oh), Some(ow)) = (
            (h + 2 * padding).checked_sub(k).map(|s| s / stride + 1),
            (w + 2 * padding).checked_sub(k).map(|s| s / stride + 1),
        ) else {
            bail!("a {k}×{k} kernel does not fit the {h}×{w} input");
        };
        let mut tensors = vec![(
            "weight",
            vec![oc, k, k, c],
            layout::ohwi_from_oihw(&weight.f32s(), oc, k, c),
        )];
        if let Some(b) = &bias {
            tensors.push(("bias", vec![oc], b.f32s()));
        }
        self.push(
            LayerSpec::Conv2d {
                filters: oc,
                kernel: k,
                stride,
                padding,
                bias: bias.is_some(),
            },
            tensors,
        );
        self.shape = vec![oh, ow, oc];
        Ok(())
    }

    fn batch_norm(&mut self, node: &NodeProto) -> anyhow::Result<()> {
        self.ending()?;
        if attr(node, "training_mode").is_some_and(|a| a.i != 0) {
            bail!("batch norm in training mode; export the model in eval mode");
        }
        let c = match *self.shape.as_slice() {
            [_, _, c] if !self.nhwc => c,
            [f] => f,
            _ => bail!("batch norm on {:?}", self.shape),
        };
        let mut tensors = Vec::new();
        for (i, role) in [
            (1, "weight"),
            (2, "bias"),
            (3, "running_mean"),
            (4, "running_var"),
        ] {
            let t = self.need_const(node, i, role)?;
            if t.values.len() != c {
                bail!("its {role} has {} values for {c} channels", t.values.len());
            }
            let mut values = t.f32s();
            if let Some(p) = &self.pending {
                values = layout::gather(&values, p);
            }
            tensors.push((role, vec![c], values));
        }
        let eps = attr(node, "epsilon").map_or(1e-5, |a| a.f);
        // ONNX's momentum weighs the old running value; fmnist's (PyTorch's) the new one.
        let onnx_momentum = attr(node, "momentum").map_or(0.9, |a| a.f);
        let momentum = ((1.0 - onnx_momentum) * 1e6).round() / 1e6;
        if eps.is_nan() || eps <= 0.0 || !(0.0..=1.0).contains(&momentum) {
            bail!("epsilon {eps} or momentum {onnx_momentum} out of range");
        }
        self.push(LayerSpec::BatchNorm { momentum, eps }, tensors);
        Ok(())
    }

    fn pool(&mut self, node: &NodeProto) -> anyhow::Result<()> {
        self.ending()?;
        let (h, w, c) = self.spatial()?;
        let size = square(attr(node, "kernel_shape"), "kernel_shape")?;
        let stride = square(attr(node, "strides"), "strides")?;
        if attr(node, "pads").is_some_and(|a| a.ints.iter().any(|&p| p != 0))
            || attr(node, "auto_pad")
                .is_some_and(|a| !matches!(a.s.as_slice(), b"" | b"NOTSET" | b"VALID"))
        {
            bail!("a padded pool; fmnist pools without padding");
        }
        if attr(node, "dilations").is_some_and(|a| a.ints.iter().any(|&d| d != 1)) {
            bail!("a dilated pool");
        }
        let (Some(oh), Some(ow)) = (
            h.checked_sub(size).map(|s| s / stride + 1),
            w.checked_sub(size).map(|s| s / stride + 1),
        ) else {
            bail!("a {size}×{size} window does not fit the {h}×{w} input");
        };
        if attr(node, "ceil_mode").is_some_and(|a| a.i != 0)
            && ((h - size) % stride != 0 || (w - size) % stride != 0)
        {
            bail!("ceil_mode pooling that adds a partial window; fmnist floors");
        }
        let stride = (stride != size).then_some(stride);
        self.push(
            if node.op_type == "MaxPool" {
                LayerSpec::MaxPool2d { size, stride }
            } else {
                LayerSpec::AvgPool2d { size, stride }
            },
            vec![],
        );
        self.shape = vec![oh, ow, c];
        Ok(())
    }

    fn gemm(&mut self, node: &NodeProto) -> anyhow::Result<()> {
        self.ending()?;
        let get = |name: &str, default: i64| attr(node, name).map_or(default, |a| a.i);
        if get("transA", 0) != 0 {
            bail!("a Gemm with transA; fmnist's dense layers take the batch as rows");
        }
        let alpha = attr(node, "alpha").map_or(1.0, |a| a.f);
        let beta = attr(node, "beta").map_or(1.0, |a| a.f);
        let b = self.need_const(node, 1, "weight")?;
        let [r, cols] = *b.dims.as_slice() else {
            bail!("a Gemm weight of shape {:?}", b.dims);
        };
        let mut weight = b.f32s();
        let (units, inputs) = if get("transB", 0) != 0 {
            (r, cols)
        } else {
            weight = layout::transpose(&weight, r, cols);
            (cols, r)
        };
        if alpha != 1.0 {
            weight.iter_mut().for_each(|v| *v *= alpha);
        }
        let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
            Some(_) => {
                let c = self.need_const(node, 2, "bias")?;
                if c.values.len() != units {
                    bail!("a bias of {} values for {units} units", c.values.len());
                }
                Some(c.f32s().into_iter().map(|v| v * beta).collect())
            }
            None => None,
        };
        self.linear(weight, units, inputs, bias)
    }

    fn linear(
        &mut self,
        weight: Vec<f32>,
        units: usize,
        inputs: usize,
        bias: Option<Vec<f32>>,
    ) -> anyhow::Result<()> {
        if self.shape != [inputs] {
            bail!(
                "a dense layer of {inputs} inputs on {:?}{}",
                self.shape,
                if self.shape.len() == 3 {
                    " (flatten first)"
                } else {
                    ""
                }
            );
        }
        let weight = match self.pending.take() {
            Some(p) => layout::gather_columns(&weight, &p),
            None => weight,
        };
        let mut tensors = vec![("weight", vec![units, inputs], weight)];
        let has_bias = bias.is_some();
        if let Some(b) = bias {
            tensors.push(("bias", vec![units], b));
        }
        self.push(
            LayerSpec::Linear {
                units,
                bias: has_bias,
            },
            tensors,
        );
        self.shape = vec![units];
        Ok(())
    }
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// The one value of a square attribute (`[3, 3]`), 1 when absent.
fn square(a: Option<&AttributeProto>, what: &str) -> anyhow::Result<usize> {
    let Some(a) = a else { return Ok(1) };
    match a.ints.as_slice() {
        [x, rest @ ..] if *x > 0 && rest.iter().all(|y| y == x) => Ok(*x as usize),
        v => bail!("{what} {v:?}: fmnist needs equal, positive values"),
    }
}

/// An input's dimensions (`None` where symbolic).
fn tensor_dims(input: &pb::ValueInfoProto) -> anyhow::Result<Vec<Option<usize>>> {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as T;
    let Some(T::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        bail!("the graph's input {} is not a tensor", input.name);
    };
    if t.elem_type != tensor_proto::DataType::Float as i32 {
        bail!("the graph's input {} is not float", input.name);
    }
    let shape = t
        .shape
        .as_ref()
        .ok_or_else(|| anyhow!("the graph's input {} has no shape", input.name))?;
    Ok(shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(Value::DimValue(v)) if v > 0 => usize::try_from(v).ok(),
            _ => None,
        })
        .collect())
}
