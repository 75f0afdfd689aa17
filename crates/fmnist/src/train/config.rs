//! A training recipe and the one check every recipe passes, from flags, a checkpoint or
//! a library caller alike; and the memory budget a run is held to.

use nn::{OptimizerConfig, OptimizerKind, Schedule};
use serde::{Deserialize, Serialize};

use super::augment::Augment;

/// A training recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training images.
    pub epochs: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f32,
    /// Seed for initialisation, shuffling, the validation split and dropout.
    pub seed: u64,
    /// Update rule and weight decay.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Label smoothing (0 for none).
    pub label_smoothing: f32,
    /// Training images held out for model selection.
    pub val_size: usize,
    /// Train on only the first this-many remaining training images (quick runs).
    pub limit: Option<usize>,
    /// Augmentation of training images.
    pub augment: Augment,
    /// Decay of an exponential moving average of the weights, validated and kept instead
    /// of the raw weights (`None`: no average).
    pub ema: Option<f32>,
    /// Stop after this many epochs without a better validation accuracy (`None`: never).
    pub patience: Option<usize>,
    /// Classify with flip test-time augmentation (validation, test and the saved model).
    pub flip_tta: bool,
    /// How pixels become inputs: Fashion-MNIST's statistics, or those of the model a
    /// fine-tuning run starts from (whose weights expect them).
    #[serde(default)]
    pub normalization: crate::data::Normalization,
    /// The arithmetic of the training passes' matrix products: fp32, or bf16 with fp32
    /// accumulation (mixed precision). Validation and the test during training, and the
    /// saved model, are fp32.
    #[serde(default)]
    pub precision: nn::Precision,
    /// Networks trained one after another, each as this recipe with the next seed
    /// (`seed`, `seed + 1`, …), and kept in one model file as an ensemble that averages
    /// their probabilities (1: one network).
    #[serde(default = "one_network")]
    pub members: usize,
}

fn one_network() -> usize {
    1
}

/// The cosine schedule of the default recipe: 5 % linear warm-up, then decay to zero.
pub const COSINE: Schedule = Schedule::Cosine { warmup: 0.05 };

impl Default for TrainConfig {
    /// The seed assignment's recipe (Adam 1e-3, batch 128) for 20 epochs with the rate
    /// decayed along a cosine: with a constant rate the `simple` network ends between
    /// 90.8 and 91.5 % depending on the seed; decayed, it ends near 91.9 %.
    fn default() -> Self {
        Self {
            epochs: 20,
            batch_size: 128,
            lr: 1e-3,
            seed: 42,
            optimizer: OptimizerConfig::new(OptimizerKind::adam()),
            schedule: COSINE,
            label_smoothing: 0.0,
            val_size: 5000,
            limit: None,
            augment: Augment::NONE,
            ema: None,
            patience: None,
            flip_tta: false,
            normalization: crate::data::Normalization::default(),
            precision: nn::Precision::F32,
            members: 1,
        }
    }
}

/// Most epochs a recipe may ask for.
pub const MAX_EPOCHS: usize = 100_000;
/// Largest batch a recipe may ask for (the whole training set); the memory budget
/// ([`TRAIN_MEMORY_BUDGET`]) usually allows less.
pub const MAX_BATCH: usize = 60_000;
/// Most memory a training run may plan to hold: weights with their gradients,
/// optimizer moments, average and best copies, and a batch's activations and buffers.
pub const TRAIN_MEMORY_BUDGET: u64 = 4 << 30;

/// A setting that training cannot accept, from flags, a checkpoint or a library caller
/// alike (the command line exits with status 2 for it, as for any bad argument).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSetting(pub String);

macro_rules! refuse {
    ($($arg:tt)*) => { return Err(InvalidSetting(format!($($arg)*)).into()) };
}

impl TrainConfig {
    /// The recipe of network `index` (0-based) of the ensemble: this one with the seed
    /// moved on by `index`, alone. Network 0 of a one-network recipe is the recipe.
    pub fn member(&self, index: usize) -> Self {
        Self {
            seed: self.seed.wrapping_add(index as u64),
            members: 1,
            ..self.clone()
        }
    }

    /// Rejects settings that cannot train: the one check for every way a recipe arrives.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.normalization.validate()?;
        if !(1..=MAX_EPOCHS).contains(&self.epochs) {
            refuse!(
                "--epochs must be between 1 and {MAX_EPOCHS}, got {}",
                self.epochs
            );
        }
        if !(1..=MAX_BATCH).contains(&self.batch_size) {
            refuse!(
                "--batch-size must be between 1 and {MAX_BATCH}, got {}",
                self.batch_size
            );
        }
        if !self.lr.is_finite() || self.lr <= 0.0 {
            refuse!("--lr must be a positive number, got {}", self.lr);
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            refuse!(
                "--label-smoothing must be in [0, 1), got {}",
                self.label_smoothing
            );
        }
        if !self.optimizer.weight_decay.is_finite() || self.optimizer.weight_decay < 0.0 {
            refuse!(
                "--weight-decay must be zero or positive, got {}",
                self.optimizer.weight_decay
            );
        }
        if let Some(d) = self.ema
            && !(0.0..1.0).contains(&d)
        {
            refuse!("--ema must be a decay in [0, 1), got {d}");
        }
        if self.patience == Some(0) {
            refuse!("--patience must be at least 1 epoch");
        }
        if !self.precision.is_available() {
            refuse!(
                "--precision {} is not available on this CPU (a recipe from another \
                 machine?): use --precision bf16 or fp32",
                self.precision.name()
            );
        }
        if !(1..=crate::model::MAX_MEMBERS).contains(&self.members) {
            refuse!(
                "--members must be between 1 and {}, got {}",
                crate::model::MAX_MEMBERS,
                self.members
            );
        }
        if self.limit == Some(0) {
            refuse!("--limit must be at least 1 image");
        }
        if self.val_size >= MAX_BATCH {
            refuse!(
                "--val-size {} leaves no training images (of {MAX_BATCH})",
                self.val_size
            );
        }
        self.augment
            .validate()
            .map_err(|e| InvalidSetting(e.to_string()).into())
    }
}

/// Refuses a batch whose training step would take more than [`TRAIN_MEMORY_BUDGET`] for
/// `net`, counted before anything is allocated, naming the largest batch that fits.
pub fn check_memory(net: &nn::Network, batch_size: usize) -> anyhow::Result<()> {
    // Weights, gradients, two optimizer moments, the average, the best epoch's copy and
    // a checkpoint's snapshot; the dataset's 55 MB; then per image its activations.
    let fixed = 4 * 7 * net.num_params() as u64 + (64 << 20);
    let per_image = 4 * net.values_per_example() as u64;
    let needed = fixed.saturating_add(per_image.saturating_mul(batch_size as u64));
    if needed > TRAIN_MEMORY_BUDGET {
        let fits = TRAIN_MEMORY_BUDGET.saturating_sub(fixed) / per_image.max(1);
        let advice = if fits == 0 {
            "the network does not fit even one image".to_string()
        } else {
            format!("use --batch-size {fits} or less")
        };
        refuse!(
            "a batch of {batch_size} images needs about {:.1} GB for this network, more than \
             the {} GiB training budget; {advice}",
            needed as f64 / 1e9,
            TRAIN_MEMORY_BUDGET >> 30
        );
    }
    Ok(())
}
