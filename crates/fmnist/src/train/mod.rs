//! Training: the loop ([`fit`]), whole recipes ([`recipes`]), augmentation
//! ([`augment`]), the saved state of an unfinished run ([`checkpoint`]), and [`Run`], which
//! owns a run's outputs (reserved before work, written atomically, checkpointed, resumed).

pub mod augment;
pub mod checkpoint;
pub mod fit;
pub mod recipes;
pub mod run;

pub use fit::*;
pub use run::{Finished, Outputs, Run};
