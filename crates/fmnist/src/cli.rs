//! The command line: argument definitions and one function per subcommand.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use nn::{OptimizerConfig, OptimizerKind, Schedule};

use crate::atomic::PendingFile;
use crate::classifier::Classifier;
use crate::data::{self, DataOptions};
use crate::train::{EpochRecord, Progress, TrainConfig};
use crate::{bench, eval, models, predict, report, train};

/// Train, evaluate and use Fashion-MNIST classifiers on a plain CPU.
#[derive(Parser, Debug)]
#[command(name = "fmnist", version, propagate_version = true)]
pub struct Cli {
    /// Worker threads [default: all cores]
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Find (or download) and verify the dataset; show counts per split and class
    Data(DataArgs),
    /// Train a model and save it
    Train(TrainArgs),
    /// Evaluate a saved model on the test set
    Eval(EvalArgs),
    /// Classify your own images
    Predict(PredictArgs),
    /// Measure training and inference speed, latency and memory on the real data
    Bench(BenchArgs),
}

/// Where the data is.
#[derive(Args, Debug, Clone)]
pub struct DataSource {
    /// Directory with the four IDX files (.gz or raw) [default: search $FMNIST_DATA,
    /// the cache, /usr/share/datasets/fashion-mnist]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Never download
    #[arg(long)]
    pub offline: bool,
}

impl DataSource {
    fn options(&self) -> DataOptions {
        DataOptions {
            data_dir: self.data_dir.clone(),
            offline: self.offline,
            verbose: true,
        }
    }
}

/// `fmnist data`
#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(flatten)]
    source: DataSource,
}

/// Update rules for `--optimizer`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum OptimizerArg {
    /// Adam (weight decay as L2)
    Adam,
    /// AdamW (decoupled weight decay)
    Adamw,
    /// SGD with Nesterov momentum 0.9
    Sgd,
}

/// Schedules for `--schedule`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ScheduleArg {
    /// The same rate throughout
    Constant,
    /// 5 % linear warm-up, then cosine decay
    Cosine,
    /// One-cycle: rise over 25 %, then decay
    OneCycle,
}

/// `fmnist train`
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Built-in architecture
    #[arg(long, default_value = "simple", value_parser = clap::builder::PossibleValuesParser::new(models::PRESETS))]
    model: String,
    /// Architecture from a JSON file instead of a built-in one
    #[arg(long, value_name = "FILE.json", conflicts_with = "model")]
    arch: Option<PathBuf>,
    /// Passes over the training set
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    epochs: u32,
    /// Images per step
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    batch_size: u32,
    /// Learning rate
    #[arg(long, default_value_t = 1e-3, value_parser = positive_f32, allow_negative_numbers = true)]
    lr: f32,
    /// Seed for initialisation, shuffling, validation split and dropout
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to save the model (a history CSV is written beside it)
    #[arg(long, default_value = "fmnist-model.safetensors", value_name = "FILE")]
    out: PathBuf,
    /// Training images held out for validation (model selection)
    #[arg(long, default_value_t = 5000, value_name = "N")]
    val_size: usize,
    /// Train on only the first N (non-validation) images
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Update rule
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adam)]
    optimizer: OptimizerArg,
    /// Learning-rate schedule
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    schedule: ScheduleArg,
    /// Weight decay (not applied to biases and normalisation parameters)
    #[arg(long, default_value_t = 0.0, value_parser = non_negative_f32, allow_negative_numbers = true)]
    weight_decay: f32,
    /// Label smoothing in [0, 1)
    #[arg(long, default_value_t = 0.0, value_parser = non_negative_f32, allow_negative_numbers = true)]
    label_smoothing: f32,
    #[command(flatten)]
    source: DataSource,
}

/// `fmnist eval`
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model file (.safetensors)
    model: PathBuf,
    /// Print one JSON object instead of tables
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    source: DataSource,
}

/// `fmnist predict`
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Model file (.safetensors)
    model: PathBuf,
    /// Image files (PNG, JPEG, GIF, BMP, WebP; any size and colour)
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// How many classes to show per image
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=10))]
    top: u8,
    /// Print one JSON object per image (one per line)
    #[arg(long)]
    json: bool,
}

/// `fmnist bench`
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Built-in architecture
    #[arg(long, default_value = "simple", value_parser = clap::builder::PossibleValuesParser::new(models::PRESETS))]
    model: String,
    /// Architecture from a JSON file instead of a built-in one
    #[arg(long, value_name = "FILE.json", conflicts_with = "model")]
    arch: Option<PathBuf>,
    /// Timed training steps (after 5 untimed ones)
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batches: u32,
    /// Images per training step
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    batch_size: u32,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    source: DataSource,
}

fn parse_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !v.is_finite() {
        return Err(format!("'{s}' is not a finite number"));
    }
    Ok(v)
}

fn positive_f32(s: &str) -> Result<f32, String> {
    let v = parse_f32(s)?;
    if v <= 0.0 {
        return Err(format!("must be greater than 0, got {v}"));
    }
    Ok(v)
}

fn non_negative_f32(s: &str) -> Result<f32, String> {
    let v = parse_f32(s)?;
    if v < 0.0 {
        return Err(format!("must not be negative, got {v}"));
    }
    Ok(v)
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Data(a) => run_data(&a),
        Command::Train(a) => run_train(&a),
        Command::Eval(a) => run_eval(&a),
        Command::Predict(a) => run_predict(&a),
        Command::Bench(a) => run_bench(&a),
    }
}

fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A closed pipe (`fmnist eval | head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to standard output"),
    }
}

/// `fmnist data`
pub fn run_data(a: &DataArgs) -> anyhow::Result<()> {
    let data = data::load(&a.source.options())?;
    out(&report::data_summary(&data))
}

/// Draws a progress bar per epoch and prints one line when it ends.
struct Bar {
    bar: Option<ProgressBar>,
    epochs: usize,
}

impl Progress for Bar {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        let bar = ProgressBar::new(batches as u64);
        let style =
            ProgressStyle::with_template("epoch {prefix} [{bar:28}] {pos}/{len} {msg} ETA {eta}")
                .map(|s| s.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar.set_prefix(format!("{epoch}/{epochs}"));
        self.bar = Some(bar);
    }

    fn step(&mut self, done: usize, loss: f64, accuracy: f64, images_per_s: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
            bar.set_message(format!(
                "loss {loss:.4} acc {:.2} % {images_per_s:.0} img/s",
                100.0 * accuracy
            ));
        }
    }

    fn epoch_end(&mut self, record: &EpochRecord) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let _ = out(&format!("{}\n", report::epoch_line(record, self.epochs)));
    }
}

/// The architecture chosen by `--arch FILE` or else `--model NAME`.
fn architecture(model: &str, arch: Option<&std::path::Path>) -> anyhow::Result<nn::ModelSpec> {
    match arch {
        Some(path) => models::load_arch(path),
        None => models::preset(model).with_context(|| format!("unknown model {model}")),
    }
}

/// `fmnist train`
pub fn run_train(a: &TrainArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let spec = architecture(&a.model, a.arch.as_deref())?;
    let kind = match a.optimizer {
        OptimizerArg::Adam => OptimizerKind::adam(),
        OptimizerArg::Adamw => OptimizerKind::adamw(),
        OptimizerArg::Sgd => OptimizerKind::nesterov(),
    };
    let cfg = TrainConfig {
        epochs: a.epochs as usize,
        batch_size: a.batch_size as usize,
        lr: a.lr,
        seed: a.seed,
        optimizer: OptimizerConfig {
            kind,
            weight_decay: a.weight_decay,
            decay_bias_and_norm: false,
        },
        schedule: match a.schedule {
            ScheduleArg::Constant => Schedule::Constant,
            ScheduleArg::Cosine => train::COSINE,
            ScheduleArg::OneCycle => Schedule::one_cycle(),
        },
        label_smoothing: a.label_smoothing,
        val_size: a.val_size,
        limit: a.limit.map(|l| l as usize),
    };
    cfg.validate()?;
    // Reserve the outputs first: an unwritable destination fails now, not after training.
    let model_file = PendingFile::reserve(&a.out)?;
    let history_file = PendingFile::reserve(&history_path(&a.out))?;
    let data = data::load(&a.source.options())?;
    let params = spec.build(&mut nn::Rng::new(0))?.num_params();
    out(&format!(
        "training {} ({} parameters) for {} epochs, batch {}, lr {:e}, on {} threads\n",
        if spec.name.is_empty() {
            "custom"
        } else {
            &spec.name
        },
        report::thousands(params),
        cfg.epochs,
        cfg.batch_size,
        cfg.lr,
        rayon::current_num_threads()
    ))?;
    let mut bar = Bar {
        bar: None,
        epochs: cfg.epochs,
    };
    let outcome = train::train(&data, spec, &cfg, &mut bar)?;
    let s = &outcome.model.summary;
    model_file.commit(&outcome.model.to_bytes()?)?;
    history_file.commit(train::history_csv(&outcome.history).as_bytes())?;
    out(&format!(
        "best epoch {}: val acc {:.2} %\ntest accuracy {:.2} % ({} images)\nsaved {} and {} in {}\n",
        s.best_epoch,
        100.0 * s.val_accuracy,
        100.0 * s.test_accuracy,
        report::thousands(data.test.len()),
        a.out.display(),
        history_path(&a.out).display(),
        report::duration(started.elapsed().as_secs_f64())
    ))
}

/// The history file beside a model: `model.safetensors` → `model.history.csv`.
pub fn history_path(model: &std::path::Path) -> PathBuf {
    model.with_extension("history.csv")
}

/// `fmnist eval`
pub fn run_eval(a: &EvalArgs) -> anyhow::Result<()> {
    let mut model = Classifier::load(&a.model)?;
    let data = data::load(&a.source.options())?;
    let evaluation = eval::evaluate(&mut model, &data.test);
    let metrics = eval::metrics(&evaluation, &data.test.labels, &model.classes);
    if a.json {
        out(&format!("{}\n", serde_json::to_string(&metrics)?))
    } else {
        let name = if model.spec.name.is_empty() {
            "custom"
        } else {
            &model.spec.name
        };
        out(&format!(
            "model {} ({name}, {} parameters, trained {} epochs)\n{}",
            a.model.display(),
            report::thousands(model.net.num_params()),
            model.summary.epochs,
            report::metrics_table(&metrics)
        ))
    }
}

/// `fmnist predict`
pub fn run_predict(a: &PredictArgs) -> anyhow::Result<()> {
    let mut model = Classifier::load(&a.model)?;
    let predictions = predict::predict_files(&mut model, &a.images, a.top as usize)?;
    let mut text = String::new();
    for p in &predictions {
        if a.json {
            text.push_str(&serde_json::to_string(p)?);
            text.push('\n');
        } else {
            text.push_str(&report::prediction(p));
        }
    }
    if a.json || predictions.len() == 1 {
        out(&text)
    } else {
        out(&text.replace("\n\n", "\n"))
    }
}

/// `fmnist bench`
pub fn run_bench(a: &BenchArgs) -> anyhow::Result<()> {
    let spec = architecture(&a.model, a.arch.as_deref())?;
    let data = data::load(&a.source.options())?;
    let cfg = bench::BenchConfig {
        batches: a.batches as usize,
        batch_size: a.batch_size as usize,
        ..Default::default()
    };
    let r = bench::run(&data, spec, &cfg)?;
    if a.json {
        out(&format!("{}\n", serde_json::to_string(&r)?))
    } else {
        out(&bench::table(&r))
    }
}

/// Runs the command on a pool of `--threads` workers (default: all cores). The command
/// itself runs on a worker, so each parallel region starts where it is called instead of
/// waking the pool from outside and sleeping until it is done.
pub fn run_in_pool(cli: Cli) -> anyhow::Result<()> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = cli.threads {
        builder = builder.num_threads(n as usize);
    }
    let pool = builder.build().context("cannot start worker threads")?;
    pool.install(|| run(cli))
}
