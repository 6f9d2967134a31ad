//! pocketlora: fine-tune language models on the device that uses them.
//!
//! A frozen, quantized base model is read straight from a GGUF file (memory-mapped, weights
//! kept quantized) and run by a dependency-light CPU engine; LoRA adapters (fp32 A and B) are
//! the only thing that trains.
//!
//! Layout (one concern per module):
//! - [`gguf`]: the GGUF v2/v3 reader (validated, zero-copy over an mmap) and writer.
//! - [`quant`]: ggml tensor types, block layouts, reference (de)quantization.
//! - [`kernels`]: forward ops as free functions over slices (matmul over quantized panels,
//!   RMSNorm, RoPE, attention, SwiGLU).
//! - [`simd`]: run-time ISA dispatch (AVX2, AVX-512, VNNI, NEON, dotprod, i8mm) of the hot
//!   kernels, with their scalar twins.
//! - [`model`]: configuration from GGUF metadata, weights, the forward pass.
//! - [`infer`]: sampling and generation.
//! - [`tokenizer`]: the model's tokenizer from GGUF metadata (SentencePiece and byte-level
//!   BPE), streaming decoding, chat templates.
//! - [`data`]: token records (JSONL); [`eval`]: per-record and mean cross-entropy.
//! - [`lora`]: LoRA configuration and adapters; PEFT and llama.cpp GGUF adapter files;
//!   several adapters at once; merging into (and out of) the base file.
//! - [`train`]: AdamW, schedules, record order, the trainer.
//! - [`bench`]: model shapes as random-weight GGUF files, the FMA peak, FLOP counts and
//!   memory readings for `pocketlora bench`.
//! - `cli` (feature `cli`): the `pocketlora` command line.
//! - [`util`]: the bottom layer, below [`simd`] and [`kernels`]: the spinning thread team,
//!   the dot primitive and the deterministic random generators.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod bench;
#[cfg(feature = "cli")]
pub mod cli;
pub mod data;
pub mod error;
pub mod eval;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod gguf;
pub mod infer;
pub mod kernels;
pub mod lora;
pub mod memory;
pub mod model;
pub mod quant;
pub mod safetensors;
pub mod simd;
pub mod tokenizer;
pub mod train;
pub mod util;

pub use error::{Error, Result};
