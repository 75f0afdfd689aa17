//! Files, safely: bounded reads of users' files, atomic writes of outputs, the free-space
//! check, and the one safetensors writer that model files and checkpoints share.

pub mod atomic;
pub mod bounded;
pub mod space;
pub mod tensor_file;
