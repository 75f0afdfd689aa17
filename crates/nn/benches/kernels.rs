//! Micro-benchmarks of the kernels that dominate training the `simple` network
//! (batch 128): each layer's forward and backward on its real shapes, each convolution
//! stage's inference pass and training step (fused and as plain layers), and an Adam
//! step.
//! Run: `cargo bench -p nn` (threads: `RAYON_NUM_THREADS`, default all cores).

use criterion::{Criterion, criterion_group, criterion_main};
use nn::{
    LayerSpec as L, Mode, ModelSpec, Network, Optimizer, OptimizerConfig, OptimizerKind, Precision,
    Rng, Tensor,
};

const BATCH: usize = 128;

fn layer(input: &[usize], layers: Vec<L>) -> Network {
    spec(input, layers)
        .build(&mut Rng::new(0))
        .expect("benchmark layer")
}

/// `layers` on `input`, Glorot-initialised.
fn spec(input: &[usize], layers: Vec<L>) -> ModelSpec {
    ModelSpec {
        name: String::new(),
        input: input.to_vec(),
        init: nn::Init::GlorotUniform,
        layers,
    }
}

/// A batch of random inputs of shape `input`, and the fused and plain builds of `spec`.
fn batch_and_builds(spec: &ModelSpec, input: &[usize]) -> (Tensor, [(Network, &'static str); 2]) {
    let mut shape = vec![BATCH];
    shape.extend_from_slice(input);
    let build = |fused| {
        spec.build_with(&mut Rng::new(0), fused)
            .expect("benchmark layers")
    };
    (
        random(&shape),
        [(build(true), "fused"), (build(false), "plain layers")],
    )
}

fn random(shape: &[usize]) -> Tensor {
    let mut rng = Rng::new(1);
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| rng.normal()).collect()).expect("shape")
}

/// Benchmarks `layers` on `input`: forward, and backward with or without the input gradient.
fn bench_layer(c: &mut Criterion, name: &str, input: &[usize], layers: Vec<L>, need_dx: bool) {
    bench_layer_in(c, name, input, layers, need_dx, Precision::F32);
}

/// [`bench_layer`] in fp32 and in bf16 on every bf16 instruction set this CPU has.
fn bench_layer_each(c: &mut Criterion, name: &str, input: &[usize], layers: Vec<L>, need_dx: bool) {
    bench_layer(c, name, input, layers.clone(), need_dx);
    for isa in nn::Bf16Isa::available() {
        let p = Precision::Bf16(isa);
        bench_layer_in(
            c,
            &format!("{name} {}", p.name()),
            input,
            layers.clone(),
            need_dx,
            p,
        );
    }
}

/// [`bench_layer`] with the matrix products in `precision`.
fn bench_layer_in(
    c: &mut Criterion,
    name: &str,
    input: &[usize],
    layers: Vec<L>,
    need_dx: bool,
    precision: Precision,
) {
    let mut net = layer(input, layers);
    net.set_precision(precision);
    let mut shape = vec![BATCH];
    shape.extend_from_slice(input);
    let x = random(&shape);
    let mut rng = Rng::new(2);
    let y = net.forward(&x, Mode::Train, &mut rng).clone();
    let dy = random(y.shape());
    let mut dx = Tensor::default();
    c.bench_function(&format!("{name}/forward"), |b| {
        b.iter(|| net.forward(&x, Mode::Train, &mut rng).len())
    });
    c.bench_function(&format!("{name}/backward"), |b| {
        b.iter(|| net.backward(&x, &dy, need_dx.then_some(&mut dx)))
    });
}

/// Benchmarks inference through `layers` on `input`, built fused and as plain layers, in
/// `precision` (named after "inference" unless fp32).
fn bench_inference(
    c: &mut Criterion,
    name: &str,
    input: &[usize],
    layers: Vec<L>,
    precision: Precision,
) {
    let (x, builds) = batch_and_builds(&spec(input, layers), input);
    let mut rng = Rng::new(2);
    let arithmetic = match precision {
        Precision::F32 => String::new(),
        p => format!(" {}", p.name()),
    };
    for (mut net, how) in builds {
        net.set_precision(precision);
        c.bench_function(&format!("{name}/inference{arithmetic} ({how})"), |b| {
            b.iter(|| net.forward(&x, Mode::Eval, &mut rng).len())
        });
    }
}

/// Benchmarks one training step's passes (forward, then backward with the input
/// gradient when `need_dx`) through `layers` on `input`, built fused (a convolution block
/// as one layer, with its training kernels) and as plain layers, in `precision`.
fn bench_training(
    c: &mut Criterion,
    name: &str,
    input: &[usize],
    layers: Vec<L>,
    need_dx: bool,
    precision: Precision,
) {
    let (x, builds) = batch_and_builds(&spec(input, layers), input);
    let mut rng = Rng::new(2);
    for (mut net, how) in builds {
        net.set_precision(precision);
        let dy = random(net.forward(&x, Mode::Train, &mut rng).shape());
        let mut dx = Tensor::default();
        c.bench_function(
            &format!("{name}/training {} ({how})", precision.name()),
            |b| {
                b.iter(|| {
                    net.forward(&x, Mode::Train, &mut rng);
                    net.backward(&x, &dy, need_dx.then_some(&mut dx));
                })
            },
        );
    }
}

/// The machine's practical fp32 peak: a large square product (2·1024³ FLOP).
fn peak(c: &mut Criterion) {
    let n = 1024;
    let a = random(&[n, n]);
    let b = random(&[n, n]);
    let mut out = vec![0.0; n * n];
    let mut group = c.benchmark_group("gemm");
    group.throughput(criterion::Throughput::Elements(2 * (n * n * n) as u64));
    group.bench_function("1024^3 (elements = FLOP)", |bench| {
        bench.iter(|| {
            nn::matmul::matmul(
                &mut out,
                nn::matmul::Mat::new(a.data(), n, n),
                nn::matmul::Mat::new(b.data(), n, n),
                false,
            )
        })
    });
    group.finish();
}

fn kernels(c: &mut Criterion) {
    let conv = |filters| {
        vec![L::Conv2d {
            filters,
            kernel: 3,
            stride: 1,
            padding: 0,
            bias: true,
        }]
    };
    let pool = L::MaxPool2d {
        size: 2,
        stride: None,
    };
    // conv1 is the first layer: only weight gradients are ever needed. For conv2,
    // backward-data costs the difference between the two backward figures.
    bench_layer_each(
        c,
        "conv1 28x28x1->32 (weights)",
        &[28, 28, 1],
        conv(32),
        false,
    );
    bench_layer_each(
        c,
        "conv2 13x13x32->64 (weights)",
        &[13, 13, 32],
        conv(64),
        false,
    );
    bench_layer_each(
        c,
        "conv2 13x13x32->64 (weights+data)",
        &[13, 13, 32],
        conv(64),
        true,
    );
    // Built fused (one pass), as in the simple network, and each layer alone.
    bench_layer(
        c,
        "relu+maxpool 26x26x32 (fused)",
        &[26, 26, 32],
        vec![L::Relu, pool.clone()],
        true,
    );
    bench_layer(
        c,
        "maxpool 26x26x32",
        &[26, 26, 32],
        vec![pool.clone()],
        true,
    );
    // Inference: each convolution stage as one layer (direct for the 1-channel input,
    // Winograd for 32 channels) against its three plain layers.
    let stage = |filters| {
        let mut layers = conv(filters);
        layers.extend([L::Relu, pool.clone()]);
        layers
    };
    // Both stages also in every bf16 instruction set (on AMX, the second stage's implicit
    // product with ReLU and the pool on each image's tiles; on AVX512-BF16, the first
    // stage's direct kernel in bf16).
    let precisions = std::iter::once(Precision::F32)
        .chain(nn::Bf16Isa::available().into_iter().map(Precision::Bf16))
        .collect::<Vec<_>>();
    let (stage1, stage2) = ("stage1 28x28x1->32->13x13", "stage2 13x13x32->64->5x5");
    for &p in &precisions {
        bench_inference(c, stage1, &[28, 28, 1], stage(32), p);
        bench_inference(c, stage2, &[13, 13, 32], stage(64), p);
    }
    // Training: the first stage's direct kernels against its plain layers (weight
    // gradients only: a first layer); the second stage in every precision (in bf16 on
    // AMX its convolution is the implicit product, fused or not).
    bench_training(
        c,
        "stage1 28x28x1->32->13x13",
        &[28, 28, 1],
        stage(32),
        false,
        Precision::F32,
    );
    for &p in &precisions {
        bench_training(
            c,
            "stage2 13x13x32->64->5x5",
            &[13, 13, 32],
            stage(64),
            true,
            p,
        );
    }
    // A batch-norm block (`cnn-bn`'s second layer: padding 1, no bias, batch norm, ReLU,
    // pool): its convolution by Winograd's kernels, or as plain layers.
    let norm_stage = vec![
        L::Conv2d {
            filters: 64,
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
        pool.clone(),
    ];
    for &p in &precisions {
        bench_training(
            c,
            "norm-stage 14x14x32->64->7x7",
            &[14, 14, 32],
            norm_stage.clone(),
            true,
            p,
        );
    }
    bench_layer(c, "relu 26x26x32", &[26, 26, 32], vec![L::Relu], true);
    bench_layer_each(
        c,
        "dense 1600->128",
        &[1600],
        vec![L::Linear {
            units: 128,
            bias: true,
        }],
        true,
    );

    let spec = ModelSpec {
        name: String::new(),
        input: vec![1600],
        init: nn::Init::GlorotUniform,
        layers: vec![L::Linear {
            units: 140,
            bias: true,
        }],
    };
    let mut net = spec.build(&mut Rng::new(0)).expect("params");
    let mut opt = Optimizer::new(OptimizerConfig::new(OptimizerKind::adam()));
    c.bench_function("adam step 224k params", |b| {
        b.iter(|| opt.step(&mut net.params_mut(), 1e-3))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = peak, kernels
}
criterion_main!(benches);
