//! `fmnist bench`: training and inference speed on the real data, in-process latency of one
//! prediction, peak memory, and the achieved GFLOP/s against the network's FLOP count.

use std::time::Instant;

use serde::Serialize;

use crate::data::{FashionMnist, PIXELS};
use crate::model::classifier::Classifier;
use crate::train::{Stepper, TrainConfig};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Timed training steps (after the warm-up).
    pub batches: usize,
    /// Images per training step.
    pub batch_size: usize,
    /// Untimed steps first (buffers, caches, thread start-up).
    pub warmup: usize,
    /// Single-image predictions timed for the latency percentiles.
    pub latency_samples: usize,
    /// The arithmetic of the training steps and of inference.
    pub precision: nn::Precision,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            batches: 100,
            batch_size: 128,
            warmup: 5,
            latency_samples: 2000,
            precision: nn::Precision::F32,
        }
    }
}

/// The measurements (`--json` prints this object).
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Architecture name.
    pub model: String,
    /// Worker threads.
    pub threads: usize,
    /// Images per training step.
    pub batch_size: usize,
    /// The arithmetic (and instruction set) of training and inference: `fp32`, `bf16-amx` or
    /// `bf16-avx512bf16`.
    pub precision: String,
    /// Training throughput.
    pub train_images_per_s: f64,
    /// Mean time of one training step.
    pub train_step_ms: f64,
    /// Matrix-product GFLOP/s achieved in training.
    pub train_gflops: f64,
    /// Inference throughput over the test set (batches of 1,000).
    pub eval_images_per_s: f64,
    /// Matrix-product GFLOP/s achieved in inference, counting the operations inference
    /// performs ([`BenchReport::inference_flops_per_image`]).
    pub eval_gflops: f64,
    /// Median latency of classifying one image in-process.
    pub predict_p50_ms: f64,
    /// 99th-percentile latency of classifying one image in-process.
    pub predict_p99_ms: f64,
    /// Peak resident memory once training has run (data, model, optimizer, buffers).
    pub train_peak_rss_mb: f64,
    /// Peak resident memory at the end (inference buffers included).
    pub peak_rss_mb: f64,
    /// Forward FLOPs per image (matrix products).
    pub forward_flops_per_image: u64,
    /// Training FLOPs per image per step (matrix products).
    pub train_flops_per_image: u64,
    /// FLOPs per image that inference performs: fewer than the forward pass's, as fused
    /// convolution stages compute only the outputs pooling keeps, by Winograd's algorithm.
    pub inference_flops_per_image: u64,
}

/// Peak resident set size in MiB (Linux `VmHWM`), or 0 where unknown.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs the benchmark for `spec` on the real data.
pub fn run(
    data: &FashionMnist,
    spec: nn::ModelSpec,
    cfg: &BenchConfig,
) -> anyhow::Result<BenchReport> {
    let name = spec.name.clone();
    let train_cfg = TrainConfig {
        batch_size: cfg.batch_size,
        precision: cfg.precision,
        ..TrainConfig::default()
    };
    train_cfg.validate()?;
    let mut model = Classifier::new(spec, train_cfg.seed)?;
    crate::train::check_memory(&model.net, cfg.batch_size)?;
    let mut stepper = Stepper::new(&train_cfg);
    let mut order: Vec<usize> = (0..data.train.len()).collect();
    nn::Rng::new(1).shuffle(&mut order);
    let batch = |i: usize| {
        let start = (i * cfg.batch_size) % (order.len() - cfg.batch_size + 1);
        &order[start..start + cfg.batch_size]
    };
    for i in 0..cfg.warmup {
        stepper.step(&mut model, &data.train, batch(i), train_cfg.lr);
    }
    let start = Instant::now();
    for i in 0..cfg.batches {
        stepper.step(&mut model, &data.train, batch(cfg.warmup + i), train_cfg.lr);
    }
    let train_s = start.elapsed().as_secs_f64();
    let train_peak_rss_mb = peak_rss_mb();
    let train_images_per_s = (cfg.batches * cfg.batch_size) as f64 / train_s;

    // Inference in the same arithmetic as training: bf16 benches bf16 inference.
    model.net.set_precision(cfg.precision);
    model.probabilities(&data.test.images[..1000.min(data.test.len()) * PIXELS]);
    let start = Instant::now();
    let probs = model.probabilities(&data.test.images);
    let eval_s = start.elapsed().as_secs_f64();
    std::hint::black_box(probs);
    let eval_images_per_s = data.test.len() as f64 / eval_s;

    let mut latencies = Vec::with_capacity(cfg.latency_samples);
    for i in 0..cfg.latency_samples + 50 {
        let image = data.test.image(i % data.test.len());
        let start = Instant::now();
        std::hint::black_box(model.probabilities(image));
        if i >= 50 {
            latencies.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];

    let (fwd, trn) = (model.net.forward_flops(), model.net.training_flops());
    let inf = model.net.inference_flops();
    Ok(BenchReport {
        model: name,
        threads: rayon::current_num_threads(),
        batch_size: cfg.batch_size,
        precision: cfg.precision.name(),
        train_images_per_s,
        train_step_ms: 1e3 * train_s / cfg.batches as f64,
        train_gflops: train_images_per_s * trn as f64 / 1e9,
        eval_images_per_s,
        eval_gflops: eval_images_per_s * inf as f64 / 1e9,
        predict_p50_ms: pct(0.5),
        predict_p99_ms: pct(0.99),
        train_peak_rss_mb,
        peak_rss_mb: peak_rss_mb(),
        forward_flops_per_image: fwd,
        train_flops_per_image: trn,
        inference_flops_per_image: inf,
    })
}

/// The report as a table.
pub fn table(r: &BenchReport) -> String {
    format!(
        "model {} on {} threads, batch {}, training and inference in {}\n\
         training      {:>9.0} images/s  ({:.2} ms/step, {:.1} GFLOP/s at {:.1} MFLOP/image)\n\
         inference     {:>9.0} images/s  ({:.1} GFLOP/s at {:.2} MFLOP/image, {:.2} as plain layers)\n\
         predict 1     p50 {:.3} ms, p99 {:.3} ms\n\
         peak memory   {:.0} MB after training, {:.0} MB in all\n",
        r.model,
        r.threads,
        r.batch_size,
        r.precision,
        r.train_images_per_s,
        r.train_step_ms,
        r.train_gflops,
        r.train_flops_per_image as f64 / 1e6,
        r.eval_images_per_s,
        r.eval_gflops,
        r.inference_flops_per_image as f64 / 1e6,
        r.forward_flops_per_image as f64 / 1e6,
        r.predict_p50_ms,
        r.predict_p99_ms,
        r.train_peak_rss_mb,
        r.peak_rss_mb
    )
}
