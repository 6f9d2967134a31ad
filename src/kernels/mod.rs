//! Ops as pairs of free functions over slices with explicit sizes (llm.c style): a
//! `*_forward` and, for training, a `*_backward`. Shapes are written `(rows, cols)` in each
//! function's doc. Every op is generic over [`Real`] (f32 in the engine, f64 in the
//! gradient checks). The matmul over frozen W0 keeps the weights in their GGUF encoding and
//! dequantizes cache-sized panels for the gemm crate.
//!
//! # The accumulation rule
//!
//! `*_backward` *adds* into its gradient outputs (`dx += …`): the contributions of an input
//! used twice (a residual, several projections of one activation) sum without a copy, and
//! a gradient buffer is cleared once by its owner. A function that overwrites says so in
//! its name (`*_overwrite`) or its first doc line; a function that works in place says
//! `in place`. The exceptions:
//! - [`glu_backward_overwrite`] overwrites `dgate` and `dup`;
//! - [`loss::cross_entropy_backward`] works in place: it overwrites the logits with their
//!   gradient;
//! - [`rope_backward`] works in place: it turns the output gradient into the input gradient;
//! - scratch outputs that are not gradients are overwritten: `delta` of
//!   [`attention_backward`], `du` of [`lora_backward`].

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
