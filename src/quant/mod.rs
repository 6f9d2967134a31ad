//! ggml tensor types and their block formats: layouts, scalar reference (de)quantization.

pub mod types;

pub use types::{GgmlType, QK_K};
