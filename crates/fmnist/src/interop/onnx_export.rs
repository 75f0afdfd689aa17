//! ONNX export: a classifier as one ONNX graph (opset [`OPSET`]) that takes pixels
//! scaled to 0–1 and returns the probabilities `fmnist eval` gives, input normalisation
//! and flip test-time augmentation included.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, anyhow};
use nn::{LayerSpec, Tensor};
use prost::Message;
use tract_onnx::pb::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TypeProto, ValueInfoProto, attribute_proto, tensor_proto,
    tensor_shape_proto, type_proto,
};

use super::layout;
use crate::io::atomic;
use crate::model::Classifier;

/// The ONNX operator set the export uses (every operator it writes has had its current
/// form since 13, so every runtime of the last years loads it).
pub const OPSET: i64 = 13;
/// ONNX IR version 7 is the one that goes with opset 13.
const IR_VERSION: i64 = 7;
/// The graph's input: `[N, channels, height, width]` pixels / 255.
pub const INPUT: &str = "pixels";
/// The graph's output: `[N, classes]` probabilities.
pub const OUTPUT: &str = "probabilities";
/// √(2/π), as the engine's GELU uses it.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh GELU.
const GELU_C: f32 = 0.044_715;

/// Writes `model` to `path` as ONNX, atomically.
pub fn export(model: &Classifier, path: &Path) -> anyhow::Result<()> {
    atomic::write(path, &to_onnx(model)?)
}

/// The ONNX file's bytes for `model`.
pub fn to_onnx(model: &Classifier) -> anyhow::Result<Vec<u8>> {
    Ok(model_proto(model)?.encode_to_vec())
}

/// The ONNX model for `model` (see the module documentation). An ensemble's networks
/// are side by side in the graph, each on its own normalisation and mirror images, and
/// their probabilities averaged (`Mean`).
pub fn model_proto(model: &Classifier) -> anyhow::Result<ModelProto> {
    let [h, w, c] = *model.spec.input.as_slice() else {
        return Err(anyhow!(
            "ONNX export needs a [height, width, channels] input, not {:?}",
            model.spec.input
        ));
    };
    let classes = model.classes.len();
    let mut g = Builder::default();
    let mut members = Vec::new();
    for (i, network) in model.each_network().enumerate() {
        if network.spec.input != model.spec.input {
            return Err(anyhow!(
                "the ensemble's networks take different inputs ({:?} and {:?})",
                model.spec.input,
                network.spec.input
            ));
        }
        g.tensors = network.net.tensors().into_iter().collect();
        g.prefix = if i == 0 {
            String::new()
        } else {
            format!("member{i}/")
        };
        let probs = g
            .network_probabilities(network, [h, w, c], classes)
            .with_context(|| format!("network {} of the model", i + 1))?;
        members.push(probs);
    }
    let probs = if members.len() == 1 {
        g.node_named("Identity", members, vec![], OUTPUT)
    } else {
        g.node_named("Mean", members, vec![], OUTPUT)
    };
    let metadata = metadata(model)?;
    let graph = GraphProto {
        name: if model.spec.name.is_empty() {
            "fmnist".into()
        } else {
            model.spec.name.clone()
        },
        node: g.nodes,
        initializer: g.inits,
        input: vec![value_info(INPUT, &[None, Some(c), Some(h), Some(w)])],
        output: vec![value_info(&probs, &[None, Some(classes)])],
        doc_string: format!(
            "{INPUT}: float [N, {c}, {h}, {w}], pixel / 255 (0 to 1, light on black as in \
             Fashion-MNIST); {OUTPUT}: float [N, {classes}]"
        ),
        ..GraphProto::default()
    };
    Ok(ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "fmnist".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: "A Fashion-MNIST classifier exported by fmnist".into(),
        graph: Some(graph),
        metadata_props: metadata,
        ..ModelProto::default()
    })
}

/// What travels beside the graph: class names, the training summary, and fmnist's own
/// description of the model (architecture, normalisation, inference settings).
fn metadata(model: &Classifier) -> anyhow::Result<Vec<StringStringEntryProto>> {
    let mut entries = vec![
        ("classes", serde_json::to_string(&model.classes)?),
        ("training", serde_json::to_string(&model.summary)?),
        ("fmnist.architecture", serde_json::to_string(&model.spec)?),
        (
            "fmnist.normalization",
            serde_json::to_string(&model.normalization)?,
        ),
        ("fmnist.inference", serde_json::to_string(&model.inference)?),
        (
            "input",
            "pixels / 255 in [0, 1], shape [N, 1, 28, 28], light garment on black".into(),
        ),
    ];
    if model.networks() > 1 {
        // The description above is the first network's; the graph averages them all.
        entries.push(("fmnist.networks", model.networks().to_string()));
    }
    Ok(entries
        .into_iter()
        .map(|(key, value)| StringStringEntryProto {
            key: key.into(),
            value,
        })
        .collect())
}

/// A graph under construction.
#[derive(Default)]
struct Builder<'a> {
    /// The tensors of the network being emitted.
    tensors: HashMap<String, &'a Tensor>,
    /// Put before their initializers' names (an ensemble's members').
    prefix: String,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    counter: usize,
}

impl Builder<'_> {
    /// Emits one network on the graph's input: its normalisation, the mirror images when
    /// it averages them, its layers, its temperature and softmax. Returns its `[N,
    /// classes]` probabilities.
    fn network_probabilities(
        &mut self,
        network: &Classifier,
        [h, w, c]: [usize; 3],
        classes: usize,
    ) -> anyhow::Result<String> {
        let norm = network.normalization;
        let mean = self.scalar("mean", norm.mean);
        let std = self.scalar("std", norm.std);
        let centred = self.node("Sub", vec![INPUT.into(), mean], vec![]);
        let mut x = self.node("Div", vec![centred, std], vec![]);
        let flip = network.inference.flip_tta;
        if flip {
            // The mirror images go after the originals in one batch: one pass of the network.
            let starts = self.ints("flip_starts", &[-1]);
            let ends = self.ints("flip_ends", &[i64::MIN]);
            let axes = self.ints("flip_axes", &[3]);
            let steps = self.ints("flip_steps", &[-1]);
            let mirrored = self.node("Slice", vec![x.clone(), starts, ends, axes, steps], vec![]);
            x = self.node("Concat", vec![x, mirrored], vec![int("axis", 0)]);
        }
        let (mut logits, shape) = self.layers(&network.spec.layers, &[], x, vec![h, w, c])?;
        if shape != [classes] {
            return Err(anyhow!(
                "the network's output {shape:?} is not one score per class ({classes})"
            ));
        }
        // fmnist divides the scores by the temperature fitted after training; at 1 the
        // division would change nothing.
        let temperature = network.inference.temperature;
        if temperature != 1.0 {
            let t = self.scalar("temperature", temperature);
            logits = self.node("Div", vec![logits, t], vec![]);
        }
        let probs = self.node("Softmax", vec![logits], vec![int("axis", 1)]);
        Ok(if flip {
            let split = self.ints("tta_shape", &[2, -1, classes as i64]);
            let pairs = self.node("Reshape", vec![probs, split], vec![]);
            self.node(
                "ReduceMean",
                vec![pairs],
                vec![ints("axes", &[0]), int("keepdims", 0)],
            )
        } else {
            probs
        })
    }

    fn fresh(&mut self, base: &str) -> String {
        self.counter += 1;
        format!("{base}_{}", self.counter)
    }

    /// Adds a node with one output, named after its operator; returns the output.
    fn node(&mut self, op: &str, inputs: Vec<String>, attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_named(op, inputs, attrs, &out)
    }

    fn node_named(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        attrs: Vec<AttributeProto>,
        out: &str,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![out.into()],
            name: format!("{op}_{}", self.nodes.len()),
            op_type: op.into(),
            attribute: attrs,
            ..NodeProto::default()
        });
        out.into()
    }

    fn init(&mut self, name: String, dims: &[usize], data: &[f32]) -> String {
        self.inits.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: tensor_proto::DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            name: name.clone(),
            ..TensorProto::default()
        });
        name
    }

    fn scalar(&mut self, base: &str, v: f32) -> String {
        let name = self.fresh(base);
        self.init(name, &[], &[v])
    }

    fn ints(&mut self, base: &str, v: &[i64]) -> String {
        let name = self.fresh(base);
        self.inits.push(TensorProto {
            dims: vec![v.len() as i64],
            data_type: tensor_proto::DataType::Int64 as i32,
            raw_data: v.iter().flat_map(|v| v.to_le_bytes()).collect(),
            name: name.clone(),
            ..TensorProto::default()
        });
        name
    }

    /// The network's tensor `key` (`"3.weight"`), added as an initializer.
    fn weight(
        &mut self,
        key: &str,
        dims: &[usize],
        data: Option<Vec<f32>>,
    ) -> anyhow::Result<String> {
        let t = self
            .tensors
            .get(key)
            .ok_or_else(|| anyhow!("the network has no tensor {key}"))?;
        let data = data.unwrap_or_else(|| t.data().to_vec());
        let name = format!("{}{}", self.prefix, key.replace(".body.", "/"));
        Ok(self.init(name, dims, &data))
    }

    /// Emits `layers` (spec path `path`) on `x` of fmnist shape `shape`; returns the
    /// output and its fmnist shape.
    fn layers(
        &mut self,
        layers: &[LayerSpec],
        path: &[usize],
        mut x: String,
        mut shape: Vec<usize>,
    ) -> anyhow::Result<(String, Vec<usize>)> {
        for (i, layer) in layers.iter().enumerate() {
            let mut at = path.to_vec();
            at.push(i);
            let key = |role: &str| {
                let mut s = at
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(".body.");
                s.push('.');
                s.push_str(role);
                s
            };
            (x, shape) = self.layer(layer, &at, key, x, shape).with_context(|| {
                format!("layer {} ({})", key("").trim_end_matches('.'), layer.kind())
            })?;
        }
        Ok((x, shape))
    }

    fn layer(
        &mut self,
        layer: &LayerSpec,
        at: &[usize],
        key: impl Fn(&str) -> String,
        x: String,
        shape: Vec<usize>,
    ) -> anyhow::Result<(String, Vec<usize>)> {
        let spatial = |shape: &[usize]| match *shape {
            [h, w, c] => Ok((h, w, c)),
            _ => Err(anyhow!(
                "needs a [height, width, channels] input, got {shape:?}"
            )),
        };
        Ok(match layer {
            &LayerSpec::Conv2d {
                filters,
                kernel,
                stride,
                padding,
                bias,
            } => {
                let (h, w, c) = spatial(&shape)?;
                let t = self.tensors[&key("weight")];
                let oihw = layout::oihw_from_ohwi(t.data(), filters, kernel, c);
                let mut inputs = vec![
                    x,
                    self.weight(&key("weight"), &[filters, c, kernel, kernel], Some(oihw))?,
                ];
                if bias {
                    inputs.push(self.weight(&key("bias"), &[filters], None)?);
                }
                let p = padding as i64;
                let y = self.node(
                    "Conv",
                    inputs,
                    vec![
                        ints("kernel_shape", &[kernel as i64; 2]),
                        ints("strides", &[stride as i64; 2]),
                        ints("pads", &[p; 4]),
                    ],
                );
                let out = |n: usize| (n + 2 * padding - kernel) / stride + 1;
                (y, vec![out(h), out(w), filters])
            }
            &LayerSpec::MaxPool2d { size, stride } | &LayerSpec::AvgPool2d { size, stride } => {
                let (h, w, c) = spatial(&shape)?;
                let stride = stride.unwrap_or(size);
                let op = if matches!(layer, LayerSpec::MaxPool2d { .. }) {
                    "MaxPool"
                } else {
                    "AveragePool"
                };
                let y = self.node(
                    op,
                    vec![x],
                    vec![
                        ints("kernel_shape", &[size as i64; 2]),
                        ints("strides", &[stride as i64; 2]),
                    ],
                );
                let out = |n: usize| (n - size) / stride + 1;
                (y, vec![out(h), out(w), c])
            }
            LayerSpec::GlobalAvgPool | LayerSpec::GlobalMaxPool => {
                let (_, _, c) = spatial(&shape)?;
                let op = if matches!(layer, LayerSpec::GlobalAvgPool) {
                    "GlobalAveragePool"
                } else {
                    "GlobalMaxPool"
                };
                let pooled = self.node(op, vec![x], vec![]);
                (
                    self.node("Flatten", vec![pooled], vec![int("axis", 1)]),
                    vec![c],
                )
            }
            &LayerSpec::BatchNorm { momentum, eps } => {
                let c = *shape.last().ok_or_else(|| anyhow!("empty shape"))?;
                let mut inputs = vec![x];
                for role in ["weight", "bias", "running_mean", "running_var"] {
                    inputs.push(self.weight(&key(role), &[c], None)?);
                }
                let y = self.node(
                    "BatchNormalization",
                    inputs,
                    vec![
                        float("epsilon", eps),
                        // ONNX's momentum weighs the old running value (PyTorch's complement).
                        float("momentum", 1.0 - momentum),
                    ],
                );
                (y, shape)
            }
            LayerSpec::Relu => (self.node("Relu", vec![x], vec![]), shape),
            LayerSpec::Gelu => (self.gelu(x), shape),
            LayerSpec::Dropout { .. } => (x, shape),
            &LayerSpec::Linear { units, bias } => {
                let [inputs] = *shape.as_slice() else {
                    return Err(anyhow!("needs a flat input, got {shape:?}"));
                };
                let mut args = vec![x, self.weight(&key("weight"), &[units, inputs], None)?];
                if bias {
                    args.push(self.weight(&key("bias"), &[units], None)?);
                }
                let y = self.node("Gemm", args, vec![int("transB", 1)]);
                (y, vec![units])
            }
            LayerSpec::Flatten => match *shape.as_slice() {
                [h, w, c] => {
                    // fmnist flattens NHWC: channels last, as the dense weights expect.
                    let nhwc = if h * w > 1 && c > 1 {
                        self.node("Transpose", vec![x], vec![ints("perm", &[0, 2, 3, 1])])
                    } else {
                        x
                    };
                    let flat = self.node("Flatten", vec![nhwc], vec![int("axis", 1)]);
                    (flat, vec![h * w * c])
                }
                _ => (x, shape),
            },
            LayerSpec::Residual { body } => {
                let (y, out) = self.layers(body, at, x.clone(), shape.clone())?;
                if out != shape {
                    return Err(anyhow!(
                        "residual body changes the shape {shape:?} to {out:?}"
                    ));
                }
                (self.node("Add", vec![x, y], vec![]), shape)
            }
        })
    }

    /// `x/2 · (1 + tanh(√(2/π)(x + 0.044715 x³)))` from elementary operators (ONNX has
    /// a Gelu operator only from opset 20).
    fn gelu(&mut self, x: String) -> String {
        let c = self.scalar("gelu_c", GELU_C);
        let k = self.scalar("gelu_k", SQRT_2_OVER_PI);
        let one = self.scalar("gelu_one", 1.0);
        let half = self.scalar("gelu_half", 0.5);
        let x2 = self.node("Mul", vec![x.clone(), x.clone()], vec![]);
        let x3 = self.node("Mul", vec![x2, x.clone()], vec![]);
        let cx3 = self.node("Mul", vec![x3, c], vec![]);
        let inner = self.node("Add", vec![x.clone(), cx3], vec![]);
        let u = self.node("Mul", vec![inner, k], vec![]);
        let t = self.node("Tanh", vec![u], vec![]);
        let t1 = self.node("Add", vec![t, one], vec![]);
        let xt = self.node("Mul", vec![x, t1], vec![]);
        self.node("Mul", vec![xt, half], vec![])
    }
}

fn value_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Some(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                None => tensor_shape_proto::dimension::Value::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_proto::AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}
