//! LoRA: configuration, adapter weights, adapter files (PEFT, llama.cpp GGUF), several
//! adapters at once, and merging an adapter into the quantized base.

pub mod adapter;
pub mod config;
pub mod gguf_adapter;
pub mod merge;
pub mod peft;
pub mod stack;

pub use adapter::{target_shape, Adapter, LayerAdapter, LoraPair, NonFinite};
pub use config::{LayerSelection, LoraConfig, LoraInit, Target, MAX_RANK};
pub use stack::{combine, AdapterSet};

use std::path::Path;

use crate::error::Result;
use crate::model::ModelConfig;

/// Loads an adapter for `model` from a PEFT directory or a llama.cpp GGUF adapter file
/// (told apart by whether `path` is a directory).
pub fn load(path: &Path, model: &ModelConfig) -> Result<Adapter> {
    if path.is_dir() {
        peft::load(path, model)
    } else {
        gguf_adapter::load(path, model)
    }
}
