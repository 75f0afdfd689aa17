//! `nn`: a small, exact training engine for convolutional networks on f32 tensors.
//!
//! What it is: layers with explicit forward and backward passes ([`layers`]), a sequential
//! [`Network`] built from a JSON-serialisable [`ModelSpec`], softmax cross-entropy
//! ([`loss`]), optimizers and schedules ([`optim`]). Matrix products go through the `gemm`
//! crate and threads through `rayon`: run inside a rayon pool of N threads to use N cores.
//! What it is not: a general tensor library; it knows nothing of any dataset.
//!
//! Determinism: the same seed and thread count give bit-identical results.

mod copy;
pub mod ema;
pub mod init;
pub mod layers;
pub mod loss;
pub mod matmul;
pub mod network;
pub mod optim;
pub mod precision;
pub mod rng;
pub mod spec;
pub mod tensor;

pub use ema::Ema;
pub use init::Init;
pub use layers::{Mode, Param, ParamKind, Role, TensorKey};
pub use network::Network;
pub use optim::{Optimizer, OptimizerConfig, OptimizerKind, Schedule};
pub use precision::{Bf16Isa, Precision};
pub use rng::Rng;
pub use spec::{
    LayerSpec, MAX_ACTIVATIONS, MAX_DEPTH, MAX_LAYERS, MAX_PARAMS, MAX_VALUES_PER_EXAMPLE,
    ModelSpec,
};
pub use tensor::Tensor;

/// What can go wrong when describing or building a network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The architecture is inconsistent (a shape that does not fit, a bad setting).
    #[error("invalid architecture: {0}")]
    Spec(String),
    /// A tensor has the wrong number of values.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The architecture JSON does not parse.
    #[error("invalid architecture JSON: {0}")]
    Json(String),
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        // The text only: as a source too, it would be printed twice in a chain.
        Error::Json(e.to_string())
    }
}

impl Error {
    /// The message without its category prefix (for nesting).
    pub fn detail(&self) -> String {
        match self {
            Error::Spec(s) | Error::Shape(s) | Error::Json(s) => s.clone(),
        }
    }
}
