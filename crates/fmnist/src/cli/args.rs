//! The arguments: what each subcommand takes, parsed and range-checked by clap, and
//! turned into the library's recipe ([`TrainArgs::recipe`]).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use fmnist::data::DataOptions;
use fmnist::model::{self as models, Classifier};
use fmnist::train::{TrainConfig, recipes};

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
    /// Export a model to ONNX (probabilities out, normalisation and flip TTA inside)
    Export(ExportArgs),
    /// Make an fmnist model from an ONNX model, or from PyTorch weights and an architecture
    Import(ImportArgs),
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
    pub fn options(&self) -> DataOptions {
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
    pub preview: Option<PathBuf>,
    #[command(flatten)]
    pub source: DataSource,
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

/// The name clap shows for a value, which is the name the library knows it by.
trait ValueEnumName {
    fn name(&self) -> String;
}

impl<T: ValueEnum> ValueEnumName for T {
    fn name(&self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
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
    pub preset: Option<String>,
    /// Built-in architecture [default: simple]
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(models::PRESETS))]
    pub model: Option<String>,
    /// Architecture from a JSON file instead of a built-in one (or a model file's)
    #[arg(long, value_name = "FILE.json", conflicts_with = "model")]
    pub arch: Option<PathBuf>,
    /// Fine-tune this model (an imported one, say): start from its weights, with its
    /// architecture and input normalisation, instead of a fresh initialisation
    #[arg(long, value_name = "MODEL", conflicts_with_all = ["model", "arch", "resume"])]
    pub init: Option<PathBuf>,
    /// Passes over the training set [default: 20]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub epochs: Option<u32>,
    /// Images per step [default: 128]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub batch_size: Option<u32>,
    /// Base learning rate [default: 0.001]
    #[arg(long, value_parser = positive_f32, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Seed for initialisation, shuffling, validation split, augmentation and dropout
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where to save the model (history, pictures and, while training, a checkpoint are
    /// written beside it) [default: fmnist-model.safetensors, or the resumed run's]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run from its checkpoint (MODEL.checkpoint.safetensors),
    /// with the recipe it was started with
    #[arg(long, value_name = "CHECKPOINT", conflicts_with_all = [
        "preset", "model", "arch", "epochs", "batch_size", "lr", "seed", "val_size", "limit",
        "optimizer", "schedule", "weight_decay", "label_smoothing", "shift", "flip", "erase",
        "photo_augment", "ema", "patience", "tta", "precision", "members",
    ])]
    pub resume: Option<PathBuf>,
    /// Training images held out for validation (model selection)
    #[arg(long, default_value_t = 5000, value_name = "N")]
    pub val_size: usize,
    /// Train on only the first N (non-validation) images
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Update rule [default: adam]
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// Learning-rate schedule [default: cosine]
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Weight decay, not applied to biases and normalisation parameters [default: 0]
    #[arg(long, value_parser = non_negative_f32, allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// Label smoothing in [0, 1) [default: 0]
    #[arg(long, value_parser = below_one, allow_negative_numbers = true)]
    pub label_smoothing: Option<f32>,
    /// Augmentation: shift images by up to N pixels each way (random crop) [default: 0]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..28))]
    pub shift: Option<u8>,
    /// Augmentation: mirror half of the images left-right [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub flip: Option<bool>,
    /// Augmentation: random-erasing probability [default: 0]
    #[arg(long, value_name = "P", value_parser = probability)]
    pub erase: Option<f32>,
    /// Augmentation: probability of turning an image into what a phone photo of the
    /// garment looks like after `predict` cuts it out (tilt, perspective, light, folds,
    /// imperfect mask, blur, noise; a shoe sometimes with its pair) [default: 0]
    #[arg(long, value_name = "P", value_parser = probability)]
    pub photo_augment: Option<f32>,
    /// Keep an exponential moving average of the weights with this decay, e.g. 0.999 (0: off) [default: 0]
    #[arg(long, value_name = "DECAY", value_parser = below_one)]
    pub ema: Option<f32>,
    /// Stop after N epochs without better validation accuracy (0: never) [default: 0]
    #[arg(long, value_name = "N")]
    pub patience: Option<u32>,
    /// Classify by averaging each image with its mirror image (test-time augmentation) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tta: Option<bool>,
    /// Arithmetic of the training passes: fp32, or bf16 mixed precision (bf16 operands,
    /// fp32 sums, weights and model file) on the fastest bf16 instructions this CPU has,
    /// or on the ones named [default: fp32]
    #[arg(long, value_parser = PRECISIONS)]
    pub precision: Option<String>,
    /// Train N networks, each with the next seed (--seed, --seed + 1, ...), and save them
    /// as one ensemble that averages their probabilities (N times the training time)
    /// [default: 1; preset photo: 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8))]
    pub members: Option<u32>,
    #[command(flatten)]
    pub source: DataSource,
}

/// `--precision` of the commands that only infer (`eval`, `predict`, `serve`).
#[derive(Args, Debug)]
pub struct InferencePrecision {
    /// Arithmetic of inference: fp32, or bf16 (bf16 operands, fp32 sums; its convolutions
    /// run on AMX tiles where the CPU has them), on the instructions named or the fastest
    #[arg(long, default_value = "fp32", value_parser = PRECISIONS)]
    pub precision: String,
}

/// The `--precision` names ([`nn::Precision::parse`]).
const PRECISIONS: [&str; 4] = ["fp32", "bf16", "bf16-amx", "bf16-avx512bf16"];

impl TrainArgs {
    /// The architecture and recipe: the preset's (or the default), then explicit flags.
    pub fn recipe(&self) -> anyhow::Result<(nn::ModelSpec, TrainConfig, Option<Classifier>)> {
        let base = match &self.preset {
            Some(name) => {
                recipes::recipe(name).with_context(|| format!("unknown preset {name}"))?
            }
            None => recipes::Recipe::default(),
        };
        let start = self.init.as_deref().map(Classifier::load).transpose()?;
        let spec = match &start {
            Some(model) => model.spec.clone(),
            None => architecture(
                self.model.as_deref().unwrap_or(base.model),
                self.arch.as_deref(),
            )?,
        };
        let name = |v: &dyn ValueEnumName| v.name();
        let overrides = recipes::Overrides {
            epochs: self.epochs.map(|v| v as usize),
            batch_size: self.batch_size.map(|v| v as usize),
            lr: self.lr,
            optimizer: self.optimizer.as_ref().map(|v| name(v)),
            weight_decay: self.weight_decay,
            schedule: self.schedule.as_ref().map(|v| name(v)),
            label_smoothing: self.label_smoothing,
            shift: self.shift.map(usize::from),
            flip: self.flip,
            erase: self.erase,
            photo: self.photo_augment,
            ema: self.ema,
            patience: self.patience.map(|v| v as usize),
            flip_tta: self.tta,
            precision: self.precision.clone(),
            members: self.members.map(|v| v as usize),
        };
        let mut c = overrides.apply(&base.config)?;
        if let Some(model) = &start {
            c.normalization = model.normalization;
        }
        c.seed = self.seed;
        c.val_size = self.val_size;
        c.limit = self.limit.map(|l| l as usize);
        Ok((spec, c, start))
    }
}

/// `fmnist eval`
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model file (.safetensors); several make an ensemble that averages their probabilities
    #[arg(required = true, value_name = "MODEL")]
    pub models: Vec<PathBuf>,
    /// Print one JSON object instead of tables
    #[arg(long)]
    pub json: bool,
    /// Also draw the confusion matrix, per-class precision / recall and the most confident
    /// mistakes as PNG files into this directory (created if missing)
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Also classify the first N test images rendered as photos (larger, off-centre, dark
    /// on white, in colour) through predict's preprocessing, and report the accuracy of each
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub photos: Option<u32>,
    /// Also classify real photos in class folders (DIR/<folder>/<photo>) and report the
    /// accuracy, each folder's recall and where its photos went; with --report, a contact
    /// sheet (photos.png)
    #[arg(long, value_name = "DIR")]
    pub photos_dir: Option<PathBuf>,
    /// Which Fashion-MNIST labels count as right for each folder, as JSON
    /// ({"shoes": [5, 7, 9], "hat": []}) [default: DIR/labels.json, else folders named
    /// after the classes]
    #[arg(long, value_name = "FILE.json", requires = "photos_dir")]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub inference: InferencePrecision,
    #[command(flatten)]
    pub source: DataSource,
}

/// `fmnist predict`
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Model file (.safetensors)
    pub model: PathBuf,
    /// Image files (PNG, JPEG, GIF, BMP, WebP; any size and colour)
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// How many classes to show per image
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub top: u8,
    /// Print one JSON object per image (one per line)
    #[arg(long)]
    pub json: bool,
    /// Write the 28×28 input the model saw for each image into this directory
    /// (as IMAGE-NAME.input.png; created if missing)
    #[arg(long, value_name = "DIR")]
    pub show_input: Option<PathBuf>,
    #[command(flatten)]
    pub inference: InferencePrecision,
}

/// `fmnist serve`
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Model file (.safetensors)
    pub model: PathBuf,
    /// Address to listen on. The default answers this machine only; another address
    /// (e.g. 0.0.0.0:8080) exposes the model to the network
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "IP:PORT")]
    pub addr: std::net::SocketAddr,
    /// Largest accepted upload, in MiB
    #[arg(long, default_value_t = 8, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_upload_mib: u32,
    /// Requests decoded and classified at once (more wait their turn), on --threads workers
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    #[command(flatten)]
    pub inference: InferencePrecision,
    #[command(flatten)]
    pub source: DataSource,
}

/// `fmnist bench`
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Built-in architecture
    #[arg(long, default_value = "simple", value_parser = clap::builder::PossibleValuesParser::new(models::PRESETS))]
    pub model: String,
    /// Architecture from a JSON file instead of a built-in one (or a model file's)
    #[arg(long, value_name = "FILE.json", conflicts_with = "model")]
    pub arch: Option<PathBuf>,
    /// Timed training steps (after 5 untimed ones)
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batches: u32,
    /// Images per training step
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub batch_size: u32,
    /// Arithmetic of the training steps and of inference (as `train --precision`)
    #[arg(long, default_value = "fp32", value_parser = PRECISIONS)]
    pub precision: String,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub source: DataSource,
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

/// The architecture chosen by `--arch FILE` or else `--model NAME`.
pub fn architecture(model: &str, arch: Option<&std::path::Path>) -> anyhow::Result<nn::ModelSpec> {
    match arch {
        Some(path) => models::load_arch(path),
        None => models::preset(model).with_context(|| format!("unknown model {model}")),
    }
}

/// `fmnist export`
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Model file (.safetensors)
    pub model: PathBuf,
    /// Where to write the ONNX model (input: [N, 1, 28, 28] pixels / 255; output:
    /// [N, 10] probabilities)
    #[arg(long, value_name = "OUT.onnx")]
    pub onnx: PathBuf,
}

/// `fmnist import`
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// An ONNX model (.onnx), or PyTorch weights: a state_dict saved with safetensors, or a
    /// torch.save file (.pt, .pth; read without running any of its code)
    pub file: PathBuf,
    /// Where to save the fmnist model
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The architecture of PyTorch weights: a built-in one
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(models::PRESETS))]
    pub model: Option<String>,
    /// The architecture of PyTorch weights, from a JSON file
    #[arg(long, value_name = "FILE.json", conflicts_with = "model")]
    pub arch: Option<PathBuf>,
    /// The source model takes pixel/255 times this (255: raw 0-255 pixels)
    #[arg(long, default_value_t = 1.0, value_name = "SCALE")]
    pub input_scale: f64,
    /// ... minus this (a transforms.Normalize mean)
    #[arg(long, default_value_t = 0.0, value_name = "MEAN")]
    pub input_mean: f64,
    /// ... divided by this (a transforms.Normalize std)
    #[arg(long, default_value_t = 1.0, value_name = "STD")]
    pub input_std: f64,
}

impl ImportArgs {
    /// The architecture named by --model or --arch, if any.
    pub fn architecture(&self) -> anyhow::Result<Option<nn::ModelSpec>> {
        Ok(match (&self.model, &self.arch) {
            (Some(name), _) => {
                Some(models::preset(name).ok_or_else(|| anyhow::anyhow!("unknown model {name}"))?)
            }
            (None, Some(path)) => Some(models::load_arch(path)?),
            (None, None) => None,
        })
    }
}
