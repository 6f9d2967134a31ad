//! Inference: sampling and autoregressive generation over the KV cache.

pub mod generate;
pub mod sampler;

pub use generate::{end_of_generation_ids, generate, generate_with, GenerateParams, StopReason};
pub use sampler::{Sampler, SamplerConfig};
