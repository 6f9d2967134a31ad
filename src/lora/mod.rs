//! LoRA: configuration, adapter weights, and adapter files (PEFT).

pub mod adapter;
pub mod config;
pub mod peft;

pub use adapter::{target_shape, Adapter, LayerAdapter, LoraPair};
pub use config::{LayerSelection, LoraConfig, LoraInit, Target};
