//! Ops as pairs of free functions over slices with explicit sizes (llm.c style): a
//! `*_forward` and, for training, a `*_backward` that *adds* into gradient buffers. Shapes
//! are written `(rows, cols)` in each function's doc. Every op is generic over [`Real`]
//! (f32 in the engine, f64 in the gradient checks). The matmul over frozen W0 keeps the
//! weights in their GGUF encoding and dequantizes cache-sized panels for the gemm crate.

pub mod attention;
pub mod cache_size;
pub mod gemm;
pub mod glu;
#[cfg(test)]
pub(crate) mod gradcheck;
pub mod lora;
pub mod loss;
pub mod matmul;
pub mod num;
pub mod rmsnorm;
pub mod rope;
pub mod scratch;
pub mod shortconv;

pub use attention::{attention_backward, attention_forward, AttnShape};
pub use glu::{glu_backward_overwrite, glu_forward, Glu};
pub use lora::{lora_backward, lora_forward, LoraRef};
pub use matmul::{matmul_backward_input, matmul_forward, Precision, QMatrix};
pub use num::Real;
pub use rmsnorm::{rmsnorm_backward, rmsnorm_forward};
pub use rope::{
    inverse_frequencies, rope_backward, rope_forward, rope_table, scale_rope_table, RopeStyle,
};
pub use shortconv::{shortconv_backward, shortconv_forward};
