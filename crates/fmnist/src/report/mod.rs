//! What a run shows people: text for the terminal ([`text`]) and pictures ([`plots`]).

pub mod plots;
pub mod text;

pub use text::*;
