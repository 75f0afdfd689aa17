//! ONNX export checked by running it in tract (pure Rust) on real test images, export and
//! import round trips, PyTorch-style state dicts, and the commands' errors.

mod common;

use common::{SYSTEM_DATA, Sandbox, mkfifo};
use fmnist::data::{DataOptions, PIXELS};
use fmnist::interop::{self, InputScaling, layout, onnx_export, onnx_import};
use fmnist::model::{self as models, Classifier};
use nn::{Init, LayerSpec as L, ModelSpec, Rng};

/// The first `n` real test images.
fn test_images(n: usize) -> Vec<u8> {
    let opts = DataOptions {
        data_dir: Some(SYSTEM_DATA.into()),
        offline: true,
        verbose: false,
    };
    let data = fmnist::data::load(&opts).expect("real data");
    data.test.images[..n * PIXELS].to_vec()
}

/// A freshly initialised model whose batch-norm statistics are not the identity, so
/// that exporting them is tested too.
fn model(spec: ModelSpec, seed: u64) -> Classifier {
    let mut m = Classifier::new(spec, seed).expect("model");
    let mut rng = Rng::new(seed + 1);
    for (name, t) in m.net.tensors_mut() {
        if name.ends_with("running_mean") {
            t.data_mut()
                .iter_mut()
                .for_each(|v| *v = 0.2 * (rng.uniform() - 0.5));
        } else if name.ends_with("running_var") {
            t.data_mut()
                .iter_mut()
                .for_each(|v| *v = 0.5 + rng.uniform());
        } else if name.ends_with("bias") {
            t.data_mut()
                .iter_mut()
                .for_each(|v| *v = 0.1 * (rng.uniform() - 0.5));
        }
    }
    m
}

fn tract_probabilities(bytes: &[u8], images: &[u8]) -> Vec<f32> {
    use tract_onnx::prelude::*;
    let n = images.len() / PIXELS;
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .expect("tract reads the export")
        .with_input_fact(0, f32::fact([n, 1, 28, 28]).into())
        .expect("input fact")
        .into_optimized()
        .expect("tract optimises the export")
        .into_runnable()
        .expect("runnable");
    let x: Vec<f32> = images.iter().map(|&p| p as f32 / 255.0).collect();
    let input = tract_ndarray::Array4::from_shape_vec((n, 1, 28, 28), x).expect("input");
    let out = plan
        .run(tvec!(Tensor::from(input).into()))
        .expect("tract runs the export");
    out[0]
        .to_plain_array_view::<f32>()
        .expect("f32 output")
        .iter()
        .copied()
        .collect()
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}

/// Checks that another runtime's (or framework's) probabilities are within 1e-5 of
/// fmnist's and pick the same class wherever fmnist's top two are not tied within that
/// tolerance.
fn assert_agrees(name: &str, fmnist: &[f32], tract: &[f32]) {
    assert_eq!(fmnist.len(), tract.len(), "{name}: output size");
    let worst = fmnist
        .iter()
        .zip(tract)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("{name}: largest probability difference {worst:e}");
    assert!(
        worst <= 1e-5,
        "{name}: largest probability difference {worst}"
    );
    for (i, (a, b)) in fmnist.chunks(10).zip(tract.chunks(10)).enumerate() {
        let mut sorted = a.to_vec();
        sorted.sort_by(|x, y| y.total_cmp(x));
        if sorted[0] - sorted[1] > 1e-5 {
            assert_eq!(argmax(a), argmax(b), "{name}: image {i}");
        }
    }
}

/// The committed fixtures (`bench/torch_reference.py`, `bench/keras_reference.py`).
fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The `probabilities` tensor of fixture `name`: what the framework that wrote the
/// model computed on the first 32 test images.
fn fixture_probabilities(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixtures().join(name)).expect("fixture");
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let view = file.tensor("probabilities").expect("probabilities");
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// An architecture with every layer the export writes beyond the built-in ones: strided
/// padded convolution, GELU, average pooling, batch norm after a dense layer, a residual
/// block, global pooling and dense layers without bias.
fn every_layer(global_max: bool) -> ModelSpec {
    ModelSpec {
        name: "every-layer".into(),
        input: vec![28, 28, 1],
        init: Init::HeUniform,
        layers: vec![
            L::Conv2d {
                filters: 8,
                kernel: 3,
                stride: 2,
                padding: 1,
                bias: true,
            },
            L::Gelu,
            L::AvgPool2d {
                size: 2,
                stride: None,
            },
            L::Residual {
                body: vec![
                    L::Conv2d {
                        filters: 8,
                        kernel: 3,
                        stride: 1,
                        padding: 1,
                        bias: false,
                    },
                    L::BatchNorm {
                        momentum: 0.1,
                        eps: 1e-5,
                    },
                    L::Relu,
                ],
            },
            L::Conv2d {
                filters: 16,
                kernel: 1,
                stride: 1,
                padding: 0,
                bias: true,
            },
            if global_max {
                L::GlobalMaxPool
            } else {
                L::GlobalAvgPool
            },
            L::Linear {
                units: 12,
                bias: false,
            },
            L::BatchNorm {
                momentum: 0.1,
                eps: 1e-3,
            },
            L::Gelu,
            L::Dropout { rate: 0.3 },
            L::Linear {
                units: 10,
                bias: true,
            },
        ],
    }
}

/// Every built-in architecture and the two above, with and without flip TTA.
fn cases() -> Vec<(String, Classifier)> {
    let mut out = Vec::new();
    for (i, name) in models::PRESETS.iter().enumerate() {
        let mut m = model(models::preset(name).expect("preset"), 10 + i as u64);
        // Every other one averages with the mirror image, as models trained with flips do.
        m.inference.flip_tta = i % 2 == 1;
        // Trained models divide their scores by a fitted temperature (`standard`'s is
        // about 0.6); the others keep 1, as files from before calibration do.
        if i % 3 == 0 {
            m.inference.temperature = 0.6 + 0.1 * i as f32;
        }
        out.push((name.to_string(), m));
    }
    for global_max in [false, true] {
        let mut m = model(every_layer(global_max), 3);
        m.inference.flip_tta = global_max;
        m.normalization = fmnist::data::Normalization {
            mean: 0.1,
            std: 0.7,
        };
        out.push((format!("every-layer (global max {global_max})"), m));
    }
    out
}

#[test]
fn exported_models_run_in_tract_with_fmnist_probabilities() {
    let images = test_images(64);
    for (name, mut m) in cases() {
        let onnx = onnx_export::to_onnx(&m).expect("export");
        let ours = m.probabilities(&images);
        let theirs = tract_probabilities(&onnx, &images);
        assert_agrees(&name, &ours, &theirs);
    }
}

#[test]
fn an_exported_ensemble_runs_in_tract_with_fmnist_probabilities() {
    let images = test_images(64);
    let mut networks = cases().into_iter();
    let (_, mut ensemble) = networks.next().unwrap();
    // Networks with other architectures, normalisations, temperatures and TTA settings.
    ensemble
        .members
        .extend(networks.skip(1).step_by(2).map(|(_, m)| m));
    assert!(ensemble.networks() >= 3);
    let onnx = onnx_export::to_onnx(&ensemble).expect("export");
    let ours = ensemble.probabilities(&images);
    assert_agrees("ensemble", &ours, &tract_probabilities(&onnx, &images));
    // The members' averaging matters: the first network alone answers otherwise.
    let (_, mut first) = cases().into_iter().next().unwrap();
    assert_ne!(first.probabilities(&images), ours);
    // Import reads one network, and says so.
    let e = format!(
        "{:#}",
        onnx_import::from_bytes(&onnx, InputScaling::default())
            .expect_err("an ensemble is not one network")
    );
    assert!(e.contains("Mean"), "{e}");
}

#[test]
fn export_then_import_evaluates_identically() {
    let images = test_images(200);
    for (name, mut m) in cases() {
        let onnx = onnx_export::to_onnx(&m).expect("export");
        let imported = onnx_import::from_bytes(&onnx, InputScaling::default())
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let mut back = imported.into_classifier("test").expect("classifier");
        assert_eq!(back.normalization, m.normalization, "{name}");
        assert_eq!(back.inference, m.inference, "{name}");
        assert_eq!(back.classes, m.classes, "{name}");
        // Dropout is not part of an inference graph; everything else comes back.
        let mut want = m.spec.clone();
        fn drop_dropout(layers: &mut Vec<L>) {
            layers.retain(|l| !matches!(l, L::Dropout { .. }));
            for l in layers {
                if let L::Residual { body } = l {
                    drop_dropout(body);
                }
            }
        }
        drop_dropout(&mut want.layers);
        assert_eq!(back.spec.layers, want.layers, "{name}");
        assert_eq!(
            m.probabilities(&images),
            back.probabilities(&images),
            "{name}"
        );
    }
}

/// `m`'s tensors as PyTorch would save them: OIHW convolutions, NCHW-flatten dense
/// columns, modules named `net.<path>`.
fn as_state_dict(m: &Classifier) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    // Built unfused, the network has one row per spec layer: its output shape.
    let table = m
        .spec
        .build_with(&mut Rng::new(0), false)
        .expect("build")
        .layer_table();
    // The NCHW reordering a flatten leaves for the first dense layer after it.
    let mut gathers = std::collections::HashMap::new();
    let mut pending = None;
    for (i, l) in m.spec.layers.iter().enumerate() {
        let input = if i == 0 {
            m.spec.input.clone()
        } else {
            table[i - 1].1.clone()
        };
        match (l, input.as_slice()) {
            (L::Flatten, &[h, w, c]) if h * w > 1 && c > 1 => {
                pending = Some(layout::nchw_positions(h, w, c));
            }
            (L::Linear { .. }, _) => {
                if let Some(p) = pending.take() {
                    gathers.insert(i, p);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (name, t) in m.net.tensors() {
        let (module, role) = name.rsplit_once('.').expect("role");
        let top: usize = module.split('.').next().unwrap().parse().unwrap();
        let torch_name = format!("net.{module}.{role}");
        let dims = t.shape().to_vec();
        let values = t.data().to_vec();
        let (dims, values) = match (role, dims.as_slice()) {
            ("weight", &[oc, k, _, c]) => {
                (vec![oc, c, k, k], layout::oihw_from_ohwi(&values, oc, k, c))
            }
            ("weight", &[units, inputs]) => match gathers.get(&top) {
                Some(p) => {
                    let mut torch = vec![0.0; values.len()];
                    for o in 0..units {
                        for (j, &q) in p.iter().enumerate() {
                            torch[o * inputs + q] = values[o * inputs + j];
                        }
                    }
                    (dims, torch)
                }
                None => (dims, values),
            },
            _ => (dims, values),
        };
        out.push((torch_name, dims, values));
    }
    out
}

fn write_safetensors(path: &std::path::Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, dims, _), b)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, dims.clone(), b)
                    .expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("write");
}

#[test]
fn pytorch_style_state_dicts_import_into_each_builtin_architecture() {
    let dir = tempfile::tempdir().expect("dir");
    let images = test_images(100);
    for (i, name) in models::PRESETS.iter().enumerate() {
        let spec = models::preset(name).expect("preset");
        let mut m = model(spec.clone(), 40 + i as u64);
        let path = dir.path().join(format!("{name}.safetensors"));
        write_safetensors(&path, &as_state_dict(&m));
        let scaling = InputScaling {
            scale: 1.0,
            mean: 0.2860,
            std: 0.3530,
        };
        let (mut back, format) = interop::import(&path, Some(&spec), scaling)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(format, interop::SourceFormat::Safetensors);
        assert_eq!(back.normalization, m.normalization, "{name}");
        assert_eq!(
            m.probabilities(&images),
            back.probabilities(&images),
            "{name}"
        );
    }
}

#[test]
fn export_import_and_their_errors_on_the_command_line() {
    let sb = Sandbox::new();
    sb.quick_model(2000, 500);
    let out = sb.ok(&["export", "m.safetensors", "--onnx", "m.onnx"]);
    assert!(
        out.contains("opset 13") && out.contains("probabilities"),
        "{out}"
    );
    let out = sb.ok(&["import", "m.onnx", "--out", "back.safetensors"]);
    assert!(out.contains("imported ONNX m.onnx"), "{out}");
    let a = sb.ok(&["eval", "m.safetensors", "--json", "--offline"]);
    let b = sb.ok(&["eval", "back.safetensors", "--json", "--offline"]);
    let acc = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["accuracy"].clone();
    assert_eq!(acc(&a), acc(&b));

    // An imported model can be fine-tuned: it starts from its weights, keeps its input
    // normalisation, and at a negligible rate stays what it was.
    sb.ok(&[
        "import",
        "m.onnx",
        "--out",
        "scaled.safetensors",
        "--input-mean",
        "0.1",
    ]);
    let scaled = Classifier::load(&sb.path("scaled.safetensors")).unwrap();
    sb.ok(&[
        "train",
        "--init",
        "scaled.safetensors",
        "--epochs",
        "1",
        "--limit",
        "500",
        "--val-size",
        "200",
        "--lr",
        "1e-9",
        "--schedule",
        "constant",
        "--out",
        "tuned.safetensors",
        "--offline",
    ]);
    let tuned = Classifier::load(&sb.path("tuned.safetensors")).unwrap();
    assert_eq!(tuned.normalization, scaled.normalization);
    assert_eq!(tuned.spec.layers, scaled.spec.layers);
    let c = sb.ok(&["eval", "scaled.safetensors", "--json", "--offline"]);
    let d = sb.ok(&["eval", "tuned.safetensors", "--json", "--offline"]);
    let (c, d) = (acc(&c).as_f64().unwrap(), acc(&d).as_f64().unwrap());
    assert!(
        (c - d).abs() < 0.005 && d > 0.5,
        "imported {c}, fine-tuned at 1e-9 {d}"
    );
    sb.fails(
        &["train", "--init", "missing.safetensors", "--offline"],
        "missing.safetensors",
    );
    // Its architecture is benchmarked like any other.
    let bench = sb.ok(&[
        "bench",
        "--arch",
        "scaled.safetensors",
        "--batches",
        "3",
        "--offline",
    ]);
    assert!(
        bench.contains("training") && bench.contains("images/s"),
        "{bench}"
    );

    // PyTorch weights need their architecture; ONNX brings its own.
    std::fs::write(sb.path("w.safetensors"), b"").unwrap();
    let m = Classifier::load(&sb.path("m.safetensors")).unwrap();
    write_safetensors(&sb.path("w.safetensors"), &as_state_dict(&m));
    sb.fails(
        &["import", "w.safetensors", "--out", "x.safetensors"],
        "--model or --arch",
    );
    sb.fails(
        &[
            "import",
            "m.onnx",
            "--model",
            "simple",
            "--out",
            "x.safetensors",
        ],
        "brings its own architecture",
    );
    // The default model's weights do not fit cnn-bn: the counts are named.
    sb.fails(
        &[
            "import",
            "w.safetensors",
            "--model",
            "cnn-bn",
            "--out",
            "x.safetensors",
        ],
        "the architecture has 3 convolutions, the file 2",
    );
    sb.ok(&[
        "import",
        "w.safetensors",
        "--model",
        "simple",
        "--out",
        "w-in.safetensors",
    ]);
    // An fmnist model is not imported again.
    sb.fails(
        &[
            "import",
            "m.safetensors",
            "--model",
            "simple",
            "--out",
            "x.safetensors",
        ],
        "already an fmnist model",
    );
    // Garbage, an empty file, a truncated export.
    std::fs::write(sb.path("junk.onnx"), b"\xff\xfe not protobuf at all").unwrap();
    sb.fails(
        &["import", "junk.onnx", "--out", "x.safetensors"],
        "not an ONNX model",
    );
    std::fs::write(sb.path("empty.onnx"), b"").unwrap();
    sb.fails(
        &["import", "empty.onnx", "--out", "x.safetensors"],
        "cannot be imported",
    );
    let bytes = std::fs::read(sb.path("m.onnx")).unwrap();
    std::fs::write(sb.path("cut.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    sb.fails(
        &["import", "cut.onnx", "--out", "x.safetensors"],
        "not an ONNX model",
    );
    sb.fails(
        &[
            "import",
            "missing.pt",
            "--model",
            "simple",
            "--out",
            "x.safetensors",
        ],
        "missing.pt",
    );
    sb.fails(
        &["export", "missing.safetensors", "--onnx", "x.onnx"],
        "missing.safetensors",
    );
    // A FIFO or a device as the file to import, or as the export's destination: one
    // error at once, never a read without end.
    mkfifo(&sb.path("fifo.onnx"));
    sb.fails_within(
        &["import", "fifo.onnx", "--out", "x.safetensors"],
        "it is a FIFO",
        60,
    );
    sb.fails_within(
        &[
            "import",
            "fifo.onnx",
            "--model",
            "simple",
            "--out",
            "x.safetensors",
        ],
        "it is a FIFO",
        60,
    );
    std::os::unix::fs::symlink("/dev/zero", sb.path("zero.pt")).unwrap();
    sb.fails_within(
        &[
            "import",
            "zero.pt",
            "--model",
            "simple",
            "--out",
            "x.safetensors",
        ],
        "device",
        60,
    );
    sb.fails_within(
        &["export", "m.safetensors", "--onnx", "fifo.onnx"],
        "it is a FIFO",
        60,
    );
    // A bad scale is refused before anything is read.
    sb.fails(
        &[
            "import",
            "m.onnx",
            "--out",
            "x.safetensors",
            "--input-std",
            "0",
        ],
        "must be positive",
    );
    // Nothing was written by the failures, and a good file is never replaced by a bad one.
    assert!(!sb.path("x.safetensors").exists() && !sb.path("x.onnx").exists());
    let before = std::fs::read(sb.path("back.safetensors")).unwrap();
    sb.fails(
        &["import", "junk.onnx", "--out", "back.safetensors"],
        "not an ONNX model",
    );
    assert_eq!(std::fs::read(sb.path("back.safetensors")).unwrap(), before);
}

#[test]
fn unsupported_operators_are_named_in_one_line() {
    use prost::Message;
    let m = model(models::preset("simple").unwrap(), 1);
    let mut proto = onnx_export::model_proto(&m).expect("export");
    let graph = proto.graph.as_mut().unwrap();
    graph.node[3].op_type = "LSTM".into();
    graph.node[5].op_type = "Elu".into();
    let e = onnx_import::from_bytes(&proto.encode_to_vec(), InputScaling::default())
        .expect_err("refused")
        .to_string();
    assert!(
        e.starts_with("unsupported ONNX operators: Elu, LSTM ("),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}

/// The small CNN of `bench/torch_reference.py`'s import fixtures, as an fmnist architecture.
fn torch_tiny() -> ModelSpec {
    ModelSpec {
        name: "torch-tiny".into(),
        input: vec![28, 28, 1],
        init: Init::HeUniform,
        layers: vec![
            L::Conv2d {
                filters: 4,
                kernel: 3,
                stride: 1,
                padding: 1,
                bias: false,
            },
            L::BatchNorm {
                momentum: 0.1,
                eps: 1e-5,
            },
            L::Relu,
            L::MaxPool2d {
                size: 2,
                stride: None,
            },
            L::Conv2d {
                filters: 8,
                kernel: 3,
                stride: 1,
                padding: 0,
                bias: true,
            },
            L::Relu,
            L::MaxPool2d {
                size: 2,
                stride: None,
            },
            L::Flatten,
            L::Linear {
                units: 16,
                bias: true,
            },
            L::Relu,
            L::Dropout { rate: 0.5 },
            L::Linear {
                units: 10,
                bias: true,
            },
        ],
    }
}

#[test]
fn files_saved_by_pytorch_import_with_pytorchs_probabilities() {
    let data = fixtures();
    let want = fixture_probabilities("torch_tiny_probabilities.safetensors");
    let images = test_images(32);
    // The fixture model was trained on transforms.Normalize((0.2860,), (0.3530,)) inputs.
    let scaling = InputScaling {
        scale: 1.0,
        mean: 0.2860,
        std: 0.3530,
    };
    let spec = torch_tiny();
    for (file, arch, format) in [
        (
            "torch_tiny.safetensors",
            Some(&spec),
            interop::SourceFormat::Safetensors,
        ),
        ("torch_tiny.pt", Some(&spec), interop::SourceFormat::Torch),
        ("torch_tiny.onnx", None, interop::SourceFormat::Onnx),
        ("torch_tiny_legacy.onnx", None, interop::SourceFormat::Onnx),
    ] {
        let (mut m, found) = interop::import(&data.join(file), arch, scaling)
            .unwrap_or_else(|e| panic!("{file}: {e:#}"));
        assert_eq!(found, format, "{file}");
        assert_agrees(
            &format!("{file} against PyTorch"),
            &m.probabilities(&images),
            &want,
        );
    }
}

#[test]
fn a_keras_model_converted_by_tf2onnx_imports_with_keras_probabilities() {
    // Channels-last input, batch norm, a flatten whose size the graph computes from its
    // shape, MatMul + Add dense layers and a softmax: what tf2onnx writes for Keras 3.
    let want = fixture_probabilities("keras_tiny_probabilities.safetensors");
    let path = fixtures().join("keras_tiny.onnx");
    let (mut m, _) =
        interop::import(&path, None, InputScaling::default()).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(m.spec.input, [28, 28, 1]);
    assert_agrees(
        "keras_tiny.onnx against Keras",
        &m.probabilities(&test_images(32)),
        &want,
    );
}

#[test]
fn hostile_onnx_files_are_refused_without_reading_outside_or_allocating() {
    use prost::Message;
    use tract_onnx::pb;
    let m = model(models::preset("simple").unwrap(), 2);
    let base = onnx_export::model_proto(&m).expect("export");
    let refused = |proto: &pb::ModelProto, needle: &str| {
        let e = format!(
            "{:#}",
            onnx_import::from_bytes(&proto.encode_to_vec(), InputScaling::default())
                .expect_err("refused")
        );
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    };
    // A tensor that declares far more values than any layer.
    let mut p = base.clone();
    p.graph.as_mut().unwrap().initializer[0].dims = vec![1 << 20, 1 << 20];
    refused(&p, "larger than any fmnist layer");
    // Dimensions that disagree with the data.
    let mut p = base.clone();
    p.graph.as_mut().unwrap().initializer[2].dims.push(2);
    refused(&p, "bytes, its shape needs");
    // External data is never read from a path that leaves the model's directory, and
    // not at all from bytes alone.
    let mut p = base.clone();
    let t = &mut p.graph.as_mut().unwrap().initializer[2];
    t.raw_data.clear();
    t.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
    t.external_data = vec![pb::StringStringEntryProto {
        key: "location".into(),
        value: "../../../etc/passwd".into(),
    }];
    refused(&p, "external file");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("escape.onnx");
    std::fs::write(&path, p.encode_to_vec()).unwrap();
    let e = format!(
        "{:#}",
        onnx_import::read(&path, InputScaling::default()).expect_err("refused")
    );
    assert!(e.contains("only files beside the model"), "{e}");
    // A graph whose output is not the end of the chain.
    let mut p = base.clone();
    p.graph.as_mut().unwrap().output[0].name = "sub_1".into();
    refused(&p, "not the end of the chain");
    // No graph at all.
    refused(&pb::ModelProto::default(), "without a graph");
}

#[test]
fn damaged_exports_never_panic() {
    // Random byte changes and truncations of a real export (with batch norm and flip
    // TTA): each must import and classify or be refused, never panic.
    let mut m = model(models::preset("simple-bn").unwrap(), 5);
    m.inference.flip_tta = true;
    let bytes = onnx_export::to_onnx(&m).expect("export");
    let image = test_images(1);
    let mut rng = Rng::new(99);
    let (mut imported, mut refused) = (0, 0);
    for round in 0..2000 {
        let mut damaged = bytes.clone();
        if round % 4 == 0 {
            damaged.truncate(rng.below(bytes.len()));
        } else {
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(damaged.len());
                damaged[at] = rng.next_u32() as u8;
            }
        }
        match onnx_import::from_bytes(&damaged, InputScaling::default())
            .and_then(|i| i.into_classifier("damaged"))
        {
            Ok(mut back) => {
                let p = back.probabilities(&image);
                assert_eq!(p.len(), 10);
                imported += 1;
            }
            Err(e) => {
                assert!(!format!("{e:#}").is_empty());
                refused += 1;
            }
        }
    }
    eprintln!("damaged exports: {imported} imported, {refused} refused");
    assert!(
        refused > 0 && imported > 0,
        "{imported} imported, {refused} refused"
    );
}
