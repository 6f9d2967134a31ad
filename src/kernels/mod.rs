//! Forward ops as free functions over slices with explicit sizes (llm.c style). Shapes are
//! written `(rows, cols)` in each function's doc. The matmul over frozen W0 keeps the
//! weights in their GGUF encoding and dequantizes cache-sized panels for the gemm crate.

pub mod attention;
pub mod gemm_f32;
pub mod loss;
pub mod matmul;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;

pub use attention::{attention_forward, AttnShape};
pub use matmul::{matmul_forward, QMatrix};
pub use rmsnorm::rmsnorm_forward;
pub use rope::{inverse_frequencies, rope_forward, rope_table, RopeStyle};
pub use swiglu::swiglu_forward;
