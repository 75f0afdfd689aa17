//! fmnist: train convolutional networks on Fashion-MNIST, evaluate them, classify your
//! own images — from the `fmnist` command or from this library.
//!
//! The steps of the classic Keras workflow, one folder each: [`data`] (load),
//! [`model`] (define: architectures, the trained classifier and its file), [`train`]
//! (compile and fit: the loop, recipes, augmentation, checkpoints, and [`train::Run`],
//! which owns a whole run's outputs), [`eval`] (evaluate), [`predict`] (predict on
//! your own images), [`report`] (text and pictures), [`serve`] (the web page and API),
//! [`bench`], and [`interop`] (ONNX export and import, PyTorch weights in). [`io`]
//! holds the file handling they share. The engine is the `nn`
//! crate; the command line lives in the binary, not here.

pub mod bench;
pub mod data;
pub mod eval;
pub mod interop;
pub mod io;
pub mod model;
pub mod predict;
pub mod report;
pub mod serve;
pub mod train;

pub use data::{CLASS_NAMES, DataOptions, Dataset, FashionMnist};
pub use model::Classifier;
pub use train::{TrainConfig, train};

// The README's Rust example must keep compiling.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
