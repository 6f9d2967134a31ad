//! The integration tests, in one binary (one link instead of one per file): each file is a
//! module named after its subject. Tests that install their own global allocator or read
//! the process's heap counters stay binaries of their own (`tests/workspace_size.rs`,
//! `tests/steady_state.rs`, `tests/merge_heap.rs`).
//!
//! Run one group with a filter: `cargo test --release --test it -- budget::`.

#[path = "../common/mod.rs"]
mod common;

mod budget;
mod chat_template;
mod cli;
mod cli_bench;
mod cli_resume;
mod cli_tokenize;
mod cli_train;
mod concurrency;
mod data_formats;
mod demo;
mod faults;
mod fuzz_corpora;
mod generate_reference;
mod gguf_malformed;
mod gguf_roundtrip;
mod grad_check;
mod history;
mod jsonl_malformed;
mod kernel_scratch;
mod limits;
mod llama_cpp_adapter;
mod memory_paths;
mod merge;
mod model_config;
mod multi_adapter;
mod nonfinite;
mod oracle_eval;
mod oracle_train;
mod packing;
mod peft_interop;
mod peft_patterns;
mod precision;
mod quant_reference;
mod real_models;
mod safetensors_malformed;
mod tokenizer_api;
mod tokenizer_roundtrip;
mod tokenizer_vectors;
mod train_cancel;
mod train_memorize;
mod workflow;
