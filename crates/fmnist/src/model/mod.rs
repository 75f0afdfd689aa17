//! Models: the built-in and user-defined architectures, and a trained classifier with
//! its file format.

pub mod architectures;
pub mod classifier;
pub mod summary;

pub use architectures::{PRESETS, build_checked, check_fits, load_arch, preset, simple};
pub use classifier::{Classifier, FORMAT, Inference, MAX_MEMBERS, TrainingSummary};
