//! The command line: argument definitions and one function per subcommand.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use nn::{OptimizerKind, Schedule};

use fmnist::data::{self, DataOptions};
use fmnist::eval::{self, photos};
use fmnist::io::atomic::PendingFile;
use fmnist::model::{self as models, Classifier};
use fmnist::report::{self, plots};
use fmnist::train::{self, EpochRecord, Progress, TrainConfig, recipes};
use fmnist::{bench, predict, serve};

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
    /// Serve a web page and a JSON API that classify uploaded images
    Serve(ServeArgs),
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
    /// Also draw the first training images with their class names into this PNG
    #[arg(long, value_name = "FILE.png")]
    preview: Option<PathBuf>,
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
///
/// Settings come from the `--preset` recipe when one is given, else from the seed
/// assignment's recipe (the defaults shown); any flag given explicitly overrides either.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A whole recipe: architecture, epochs, optimizer, schedule, augmentation, averaging
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(recipes::NAMES))]
    preset: Option<String>,
    /// Built-in architecture [default: simple]
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(models::PRESETS))]
    model: Option<String>,
    /// Architecture from a JSON file instead of a built-in one
    #[arg(long, value_name = "FILE.json", conflicts_with = "model")]
    arch: Option<PathBuf>,
    /// Passes over the training set [default: 20]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    epochs: Option<u32>,
    /// Images per step [default: 128]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    batch_size: Option<u32>,
    /// Base learning rate [default: 0.001]
    #[arg(long, value_parser = positive_f32, allow_negative_numbers = true)]
    lr: Option<f32>,
    /// Seed for initialisation, shuffling, validation split, augmentation and dropout
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where to save the model (history, pictures and, while training, a checkpoint are
    /// written beside it) [default: fmnist-model.safetensors, or the resumed run's]
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Continue an interrupted run from its checkpoint (MODEL.checkpoint.safetensors),
    /// with the recipe it was started with
    #[arg(long, value_name = "CHECKPOINT", conflicts_with_all = [
        "preset", "model", "arch", "epochs", "batch_size", "lr", "seed", "val_size", "limit",
        "optimizer", "schedule", "weight_decay", "label_smoothing", "shift", "flip", "erase",
        "ema", "patience", "tta",
    ])]
    resume: Option<PathBuf>,
    /// Training images held out for validation (model selection)
    #[arg(long, default_value_t = 5000, value_name = "N")]
    val_size: usize,
    /// Train on only the first N (non-validation) images
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Update rule [default: adam]
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerArg>,
    /// Learning-rate schedule [default: cosine]
    #[arg(long, value_enum)]
    schedule: Option<ScheduleArg>,
    /// Weight decay, not applied to biases and normalisation parameters [default: 0]
    #[arg(long, value_parser = non_negative_f32, allow_negative_numbers = true)]
    weight_decay: Option<f32>,
    /// Label smoothing in [0, 1) [default: 0]
    #[arg(long, value_parser = below_one, allow_negative_numbers = true)]
    label_smoothing: Option<f32>,
    /// Augmentation: shift images by up to N pixels each way (random crop) [default: 0]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..28))]
    shift: Option<u8>,
    /// Augmentation: mirror half of the images left-right [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    flip: Option<bool>,
    /// Augmentation: random-erasing probability [default: 0]
    #[arg(long, value_name = "P", value_parser = probability)]
    erase: Option<f32>,
    /// Keep an exponential moving average of the weights with this decay, e.g. 0.999 (0: off) [default: 0]
    #[arg(long, value_name = "DECAY", value_parser = below_one)]
    ema: Option<f32>,
    /// Stop after N epochs without better validation accuracy (0: never) [default: 0]
    #[arg(long, value_name = "N")]
    patience: Option<u32>,
    /// Classify by averaging each image with its mirror image (test-time augmentation) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    tta: Option<bool>,
    #[command(flatten)]
    source: DataSource,
}

impl TrainArgs {
    /// The architecture and recipe: the preset's (or the default), then explicit flags.
    fn recipe(&self) -> anyhow::Result<(nn::ModelSpec, TrainConfig)> {
        let base = match &self.preset {
            Some(name) => {
                recipes::recipe(name).with_context(|| format!("unknown preset {name}"))?
            }
            None => recipes::Recipe::default(),
        };
        let spec = architecture(
            self.model.as_deref().unwrap_or(base.model),
            self.arch.as_deref(),
        )?;
        let mut c = base.config;
        c.seed = self.seed;
        c.val_size = self.val_size;
        c.limit = self.limit.map(|l| l as usize);
        if let Some(v) = self.epochs {
            c.epochs = v as usize;
        }
        if let Some(v) = self.batch_size {
            c.batch_size = v as usize;
        }
        if let Some(v) = self.lr {
            c.lr = v;
        }
        if let Some(v) = self.optimizer {
            c.optimizer.kind = match v {
                OptimizerArg::Adam => OptimizerKind::adam(),
                OptimizerArg::Adamw => OptimizerKind::adamw(),
                OptimizerArg::Sgd => OptimizerKind::nesterov(),
            };
        }
        if let Some(v) = self.weight_decay {
            c.optimizer.weight_decay = v;
        }
        if let Some(v) = self.schedule {
            c.schedule = match v {
                ScheduleArg::Constant => Schedule::Constant,
                ScheduleArg::Cosine => train::COSINE,
                ScheduleArg::OneCycle => Schedule::one_cycle(),
            };
        }
        if let Some(v) = self.label_smoothing {
            c.label_smoothing = v;
        }
        if let Some(v) = self.shift {
            c.augment.shift = v as usize;
        }
        if let Some(v) = self.flip {
            c.augment.flip = v;
        }
        if let Some(v) = self.erase {
            c.augment.erase = v;
        }
        if let Some(v) = self.ema {
            c.ema = (v > 0.0).then_some(v);
        }
        if let Some(v) = self.patience {
            c.patience = (v > 0).then_some(v as usize);
        }
        if let Some(v) = self.tta {
            c.flip_tta = v;
        }
        Ok((spec, c))
    }
}

/// `fmnist eval`
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model file (.safetensors); several make an ensemble that averages their probabilities
    #[arg(required = true, value_name = "MODEL")]
    models: Vec<PathBuf>,
    /// Print one JSON object instead of tables
    #[arg(long)]
    json: bool,
    /// Also draw the confusion matrix, per-class precision / recall and the most confident
    /// mistakes as PNG files into this directory (created if missing)
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Also classify the first N test images rendered as photos (larger, off-centre, dark
    /// on white, in colour) through predict's preprocessing, and report the accuracy of each
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    photos: Option<u32>,
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
    /// Write the 28×28 input the model saw for each image into this directory
    /// (as IMAGE-NAME.input.png; created if missing)
    #[arg(long, value_name = "DIR")]
    show_input: Option<PathBuf>,
}

/// `fmnist serve`
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Model file (.safetensors)
    model: PathBuf,
    /// Address to listen on. The default answers this machine only; another address
    /// (e.g. 0.0.0.0:8080) exposes the model to the network
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "IP:PORT")]
    addr: std::net::SocketAddr,
    /// Largest accepted upload, in MiB
    #[arg(long, default_value_t = 8, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=256))]
    max_upload_mib: u32,
    /// Requests decoded and classified at once (more wait their turn), on --threads workers
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    #[command(flatten)]
    source: DataSource,
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

fn probability(s: &str) -> Result<f32, String> {
    let v = parse_f32(s)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("must be between 0 and 1, got {v}"));
    }
    Ok(v)
}

/// In [0, 1): a decay, label smoothing.
fn below_one(s: &str) -> Result<f32, String> {
    let v = parse_f32(s)?;
    if !(0.0..1.0).contains(&v) {
        return Err(format!("must be at least 0 and below 1, got {v}"));
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
        Command::Serve(a) => run_serve(&a),
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
    let preview = a.preview.as_deref().map(PendingFile::reserve).transpose()?;
    let data = data::load(&a.source.options())?;
    out(&report::data_summary(&data))?;
    if let Some(file) = preview {
        let classes: Vec<String> = data::CLASS_NAMES.iter().map(|s| s.to_string()).collect();
        let shown = file.path().display().to_string();
        file.commit(&plots::samples(&data.train, &classes, 40)?)?;
        out(&format!("\nwrote {shown}\n"))?;
    }
    Ok(())
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
    let run = match &a.resume {
        Some(checkpoint) => train::Run::resume(checkpoint, a.out.as_deref())?,
        None => {
            let (spec, cfg) = a.recipe()?;
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| "fmnist-model.safetensors".into());
            train::Run::new(spec, cfg, &out)?
        }
    };
    let data = data::load(&a.source.options())?;
    let (spec, cfg) = (run.spec(), run.config());
    out(&format!(
        "training {} ({} parameters){} on {} threads\n{}\n",
        if spec.name.is_empty() {
            "custom"
        } else {
            &spec.name
        },
        report::thousands(run.params()),
        a.preset
            .as_deref()
            .map(|p| format!(", preset {p},"))
            .unwrap_or_default(),
        rayon::current_num_threads(),
        report::recipe(cfg),
    ))?;
    if let Some((done, threads)) = run.resumed() {
        out(&format!(
            "resuming after epoch {done} of {} from {}\n",
            cfg.epochs,
            run.outputs().checkpoint.display()
        ))?;
        if threads != rayon::current_num_threads() {
            eprintln!(
                "warning: the run started on {threads} threads and continues on {}; the model \
                 will differ in its last bits from an uninterrupted run (use --threads {threads})",
                rayon::current_num_threads(),
            );
        }
    }
    let mut bar = Bar {
        bar: None,
        epochs: cfg.epochs,
    };
    let done = run.stop_when(interrupt_flag()).execute(&data, &mut bar)?;
    let s = &done.model.summary;
    if s.epochs < s.planned_epochs {
        out(&format!(
            "stopped after epoch {}: no better validation accuracy for {} epochs\n",
            s.epochs,
            s.epochs - s.best_epoch
        ))?;
    }
    let o = &done.outputs;
    out(&format!(
        "best epoch {}: val acc {:.2} %\ntest accuracy {:.2} % ({} images)\n\
         saved {} in {}; beside it: {}, {}, {}\n",
        s.best_epoch,
        100.0 * s.val_accuracy,
        100.0 * s.test_accuracy,
        report::thousands(data.test.len()),
        o.model.display(),
        report::duration(started.elapsed().as_secs_f64()),
        o.history.display(),
        o.curves.display(),
        o.confusion.display(),
    ))
}

/// A flag that Ctrl-C sets, so that training stops between two steps and says how to
/// resume; a second Ctrl-C ends the process at once.
fn interrupt_flag() -> &'static AtomicBool {
    static STOP: AtomicBool = AtomicBool::new(false);
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after this step (Ctrl-C again to quit at once)");
        });
    });
    &STOP
}

/// `fmnist eval`
pub fn run_eval(a: &EvalArgs) -> anyhow::Result<()> {
    let mut models = a
        .models
        .iter()
        .map(|p| Classifier::load(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if a.photos.is_some() && models.len() > 1 {
        anyhow::bail!("--photos measures one model at a time");
    }
    let data = data::load(&a.source.options())?;
    let evaluation = eval::evaluate_ensemble(&mut models, &data.test)?;
    let photos = a
        .photos
        .map(|n| photos::robustness(&mut models[0], &data.test, n as usize, 0));
    let metrics = eval::metrics(&evaluation, &data.test.labels, &models[0].classes);
    let pictures = match &a.report {
        Some(dir) => write_report(dir, &data.test, &evaluation, &metrics)?,
        None => Vec::new(),
    };
    if a.json {
        let mut json = serde_json::to_value(&metrics)?;
        if let Some(rows) = &photos {
            json["photos"] = rows
                .iter()
                .map(|(style, acc)| serde_json::json!({"style": style.describe(), "accuracy": acc}))
                .collect();
        }
        return out(&format!("{json}\n"));
    }
    let mut text = String::new();
    for (path, model) in a.models.iter().zip(&models) {
        let name = if model.spec.name.is_empty() {
            "custom"
        } else {
            &model.spec.name
        };
        text.push_str(&format!(
            "model {} ({name}, {} parameters, trained {} epochs{})\n",
            path.display(),
            report::thousands(model.net.num_params()),
            model.summary.epochs,
            if model.inference.flip_tta {
                ", flip TTA"
            } else {
                ""
            }
        ));
    }
    if models.len() > 1 {
        text.push_str(&format!(
            "ensemble of {} models (average of their probabilities)\n",
            models.len()
        ));
    }
    text.push_str(&report::metrics_table(&metrics));
    if let Some(rows) = &photos {
        text.push_str(&format!(
            "\nthe first {} test images as photos, through predict's preprocessing\n",
            report::thousands(a.photos.unwrap_or(0) as usize)
        ));
        for (style, acc) in rows {
            text.push_str(&format!(
                "  {:<52} {:6.2} %\n",
                style.describe(),
                100.0 * acc
            ));
        }
    }
    for p in pictures {
        text.push_str(&format!("wrote {}\n", p.display()));
    }
    out(&text)
}

/// Writes `eval --report`'s pictures into `dir`; returns their paths.
fn write_report(
    dir: &std::path::Path,
    test: &data::Dataset,
    evaluation: &eval::Evaluation,
    metrics: &eval::Metrics,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pictures = [
        (
            "confusion.png",
            plots::confusion_matrix(
                &metrics.confusion,
                &metrics.classes,
                &format!(
                    "Confusion matrix on the test set (accuracy {:.2} %)",
                    100.0 * metrics.accuracy
                ),
            )?,
        ),
        ("per_class.png", plots::class_scores(metrics)?),
        (
            "mistakes.png",
            plots::mistakes(test, evaluation, &metrics.classes, 36)?,
        ),
    ];
    let mut written = Vec::new();
    for (name, bytes) in pictures {
        let path = dir.join(name);
        plots::save(&path, &bytes)?;
        written.push(path);
    }
    Ok(written)
}

/// `fmnist predict`
pub fn run_predict(a: &PredictArgs) -> anyhow::Result<()> {
    let mut model = Classifier::load(&a.model)?;
    let inputs = predict::preprocess_files(&a.images)?;
    let names: Vec<String> = a.images.iter().map(|p| p.display().to_string()).collect();
    let predictions = predict::rank(&mut model, &names, &inputs, a.top as usize);
    if let Some(dir) = &a.show_input {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for ((image, (name, renamed)), pixels) in a
            .images
            .iter()
            .zip(predict::input_names(&a.images))
            .zip(inputs.chunks_exact(data::PIXELS))
        {
            let path = dir.join(name);
            plots::save(&path, &predict::input_png(pixels)?)?;
            if renamed {
                eprintln!(
                    "note: an earlier image has the name of {}: its input is {}",
                    image.display(),
                    path.display()
                );
            }
        }
    }
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

/// `fmnist serve`
pub fn run_serve(a: &ServeArgs) -> anyhow::Result<()> {
    let model = Classifier::load(&a.model)?;
    // Test images for the page's "random test image"; the server works without them.
    let mut options = a.source.options();
    options.offline = true;
    options.verbose = false;
    let samples = data::load(&options).ok().map(|d| d.test);
    let cfg = serve::ServeConfig {
        addr: a.addr,
        max_body: a.max_upload_mib as usize * 1024 * 1024,
        concurrency: a.concurrency as usize,
        threads: rayon::current_num_threads(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the server's runtime")?;
    let has_samples = samples.is_some();
    let name = a.model.display().to_string();
    runtime.block_on(serve::serve(model, samples, cfg, |addr| {
        let _ = out(&format!(
            "serving {name} on http://{addr}/{} (Ctrl-C to stop)\n",
            if has_samples {
                ""
            } else {
                " without test images (dataset not found)"
            }
        ));
    }))?;
    out("stopped\n")
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
