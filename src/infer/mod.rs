//! Inference: sampling and autoregressive generation over the KV cache.

pub mod generate;
pub mod sampler;

pub use generate::{
    end_of_generation_ids, generate, generate_limited, generate_with, GenerateLimits,
    GenerateParams, StopReason,
};
pub use sampler::{Sampler, SamplerConfig};
