//! A frozen base model: configuration from GGUF metadata, validated weight views, one
//! transformer block's forward and backward, inference over the KV cache, and the whole
//! sequence's training pass.

pub mod backward;
pub mod block;
pub mod block_backward;
pub mod config;
pub mod forward;
pub mod head;
pub mod weights;
pub mod workspace;

pub use config::{
    Arch, ModelConfig, MAX_CONTEXT, MAX_HEADS, MAX_LAYERS, MAX_VOCAB, MAX_WIDTH,
    SUPPORTED_ARCHITECTURES,
};
pub use forward::{Activations, KvCache, Model};
pub use weights::{LayerWeights, MatrixRef, Weights};
