//! fmnist: train convolutional networks on Fashion-MNIST, evaluate them, classify your
//! own images — from the `fmnist` command or from this library.
//!
//! The steps of the classic Keras workflow, one module each: [`data`] (load),
//! [`models`] (define), [`train`] (compile and fit), [`eval`] (evaluate),
//! [`predict`] (predict), [`classifier`] (a trained model and its file), [`report`]
//! (text output) and [`cli`] (the command line). The engine is the `nn` crate.

pub mod atomic;
pub mod augment;
pub mod bench;
pub mod bounded;
pub mod checkpoint;
pub mod classifier;
pub mod cli;
pub mod data;
pub mod eval;
pub mod models;
pub mod photos;
pub mod plots;
pub mod predict;
pub mod recipes;
pub mod report;
pub mod serve;
pub mod space;
pub mod train;

pub use classifier::Classifier;
pub use data::{CLASS_NAMES, DataOptions, Dataset, FashionMnist};
pub use train::{TrainConfig, train};

// The README's Rust example must keep compiling.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
