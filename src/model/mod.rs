//! A frozen base model: architecture recipes, configuration from GGUF metadata, validated weight views, one
//! transformer block's forward and backward, inference over the KV cache, and the whole
//! sequence's training pass.

pub mod arch;
pub mod backward;
pub mod block;
pub mod block_backward;
mod block_conv;
pub mod config;
pub mod forward;
pub mod head;
pub mod kv_cache;
pub mod weights;
pub mod workspace;

pub use config::{
    Arch, LayerRope, LayerSpec, ModelConfig, MAX_CONTEXT, MAX_HEADS, MAX_LAYERS, MAX_VOCAB,
    MAX_WIDTH,
};
pub use forward::{Activations, Model};
pub use kv_cache::KvCache;
pub use weights::{LayerWeights, MatrixRef, Weights};
