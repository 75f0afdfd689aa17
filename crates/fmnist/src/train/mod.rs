//! Training: the recipe and its checks ([`config`]), the loop ([`fit`]), what each
//! epoch measured ([`history`]), whole recipes ([`recipes`]), augmentation
//! ([`augment`], with [`photo_augment`] for phone photos), the saved state of an unfinished run ([`checkpoint`], which the loop
//! writes and reads but which knows nothing of the loop), and [`Run`], which
//! owns a run's outputs (reserved before work, written atomically, checkpointed, resumed).

pub mod augment;
pub mod checkpoint;
pub mod config;
pub mod fit;
pub mod history;
pub mod photo_augment;
pub mod recipes;
pub mod run;

pub use config::{
    COSINE, InvalidSetting, MAX_BATCH, MAX_EPOCHS, TRAIN_MEMORY_BUDGET, TrainConfig, check_memory,
};
pub use fit::{
    Interrupted, Progress, RunControl, Silent, Stepper, TrainOutcome, train, train_with,
};
pub use history::{EpochRecord, history_csv};
pub use run::{Finished, Outputs, Run};
