//! A frozen base model: configuration from GGUF metadata, validated weight views, and the
//! f32 forward pass over quantized W0.

pub mod config;
pub mod forward;
pub mod weights;

pub use config::{Arch, ModelConfig, SUPPORTED_ARCHITECTURES};
pub use forward::{Activations, KvCache, Model};
pub use weights::{LayerWeights, MatrixRef, Weights};
