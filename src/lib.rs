//! pocketlora: fine-tune language models on the device that uses them.
//!
//! A frozen, quantized base model is read straight from a GGUF file (memory-mapped, weights
//! kept quantized) and run by a dependency-light CPU engine; LoRA adapters (fp32 A and B) are
//! the only thing that trains, inside a fixed memory budget when one is given.
//!
//! # The front
//!
//! Everything an app needs is re-exported here: open a [`Model`], [`Tokenizer`] and
//! [`ChatTemplate`]; describe a run with a [`TrainSpec`]; give a [`Session`] records
//! ([`TokenRecord`], or text through an [`Encoder`] or [`Session::load_file`]); read its
//! memory [`Plan`]; [`Session::start`] a [`Run`] and drive it ([`Run::run`], or
//! [`Run::run_until`] in slices with [`Event`]s); [`evaluate_with`] and [`generate_with`]
//! with the adapter; save, load, export and merge adapters ([`peft`], [`lora_load`],
//! [`gguf_adapter`], [`merge_file`]).
//!
//! ```
//! use std::sync::Arc;
//! use pocketlora::{
//!     evaluate_with, AdapterInit, Encoder, EncodeOptions, Length, LoraConfig, Model,
//!     RawRecord, Resume, Session, Tokenizer, TrainSpec,
//! };
//!
//! # fn main() -> pocketlora::Result<()> {
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/aidreams260K-q8_0.gguf");
//! let model = Arc::new(Model::open(path, 1)?);
//! let tok = Tokenizer::from_gguf(model.weights.file())?;
//! let enc = Encoder { tok: &tok, chat: None, opts: EncodeOptions::default() };
//! let text = RawRecord::Text("Our wifi password is orange tiger seven.".into());
//! let record = enc.encode(&text).map_err(pocketlora::Error::InvalidArgument)?;
//!
//! let spec = TrainSpec {
//!     adapter: AdapterInit::New(LoraConfig { r: 8, alpha: 16.0, ..LoraConfig::default() }),
//!     lr: 5e-3,
//!     length: Length::Steps(30),
//!     budget: Some(64 << 20),
//!     ..TrainSpec::default()
//! };
//! let mut session = Session::new(model.clone(), spec)?;
//! session.add(vec![record.clone()], false)?;
//! let plan = session.plan()?.cloned().expect("a budget gives a plan");
//! assert!(plan.total <= 64 << 20);
//!
//! let mut run = session.start(Resume::No)?.run;
//! let before = evaluate_with(&model, None, &[record.clone()])?.loss;
//! let summary = run.run(|_event| true)?;
//! let after = evaluate_with(&model, Some(run.result_adapter()), &[record])?.loss;
//! assert_eq!(summary.steps, 30);
//! assert!(after < before / 2.0);
//! # Ok(())
//! # }
//! ```
//!
//! A process that wants its heap measured (peak heap against the budget, progress
//! displays) installs [`CountingAlloc`] as its global allocator.
//!
//! # Modules
//!
//! The modules below are the implementation, reachable for the crate's own tests, benches,
//! fuzz targets and front ends (the `pocketlora` command line, the C ABI); they are hidden
//! from these docs and their paths are not part of the stable front.
//! - `gguf`: the GGUF v2/v3 reader (validated, zero-copy over an mmap) and writer.
//! - `quant`: ggml tensor types, block layouts, reference (de)quantization.
//! - `kernels`: ops as `*_forward` / `*_backward` pairs over slices.
//! - `simd`: run-time ISA dispatch (AVX2, AVX-512, VNNI, NEON, dotprod, i8mm) of the hot
//!   kernels, with their scalar twins.
//! - `model`: architecture recipes, configuration from GGUF metadata, weights, the forward
//!   and training passes.
//! - `infer`: sampling and generation. `tokenizer`: SentencePiece and byte-level BPE from
//!   GGUF metadata, streaming decoding, chat templates.
//! - `data`: records in every supported format; `eval`: per-record and mean cross-entropy.
//! - `lora`: adapters and their files (PEFT, llama.cpp GGUF), several at once, merging.
//! - `memory`: the counting allocator, the memory plan, the one size list per workspace.
//! - `train`: AdamW, schedules, record order, the trainer, runs, the session.
//! - `bench`: model shapes as random-weight GGUF files, FMA peak, FLOP counts.
//! - `util`: the bottom layer, below `simd` and `kernels`: the spinning thread team, the dot
//!   primitive and the deterministic random generators.

#![deny(unsafe_op_in_unsafe_fn)]

#[doc(hidden)]
pub mod internals;

// The crate's own short paths (`crate::model`); `bench` and `fuzzing` only its tests use.
#[allow(unused_imports)]
pub(crate) use internals::{
    bench, data, error, eval, fsutil, fuzzing, gguf, infer, kernels, lora, memory, model, quant,
    safetensors, simd, tokenizer, train, util,
};

// Errors.
pub use error::{Error, GgufError, ModelError, QuantError, Result, TokenizerError};

// Models and their files.
pub use gguf::GgufFile;
pub use kernels::Precision;
pub use model::{Arch, KvCache, LayerRope, Model, ModelConfig};
pub use quant::GgmlType;

// Text.
pub use tokenizer::chat::{ChatTemplate, Message, Role};
pub use tokenizer::{Decoder, Tokenizer};

// Data and evaluation.
pub use data::{
    load_dataset, load_for_model, read_ids_jsonl, DataFormat, Dataset, EncodeOptions, Encoder,
    LoadOptions, RawRecord, TokenRecord,
};
pub use eval::{evaluate, evaluate_with, EvalReport};

// Generation.
pub use infer::{
    end_of_generation_ids, generate, generate_limited, generate_with, GenerateLimits,
    GenerateParams, SamplerConfig, StopReason,
};
pub use memory::plan::{plan_generation, GeneratePlan, GenerateRequest};

// Adapters: configuration, files, merging.
pub use lora::load as lora_load;
pub use lora::merge::{merge_file, MergeOptions, MergeReport};
pub use lora::{combine, Adapter, AdapterSet, LayerSelection, LoraConfig, LoraInit, Target};
pub use lora::{gguf_adapter, peft};
pub use safetensors::Dtype;

// Training.
pub use memory::heap::CountingAlloc;
pub use memory::plan::human as human_bytes;
pub use memory::plan::Plan;
pub use memory::{account, heap};
pub use model::backward::SavedDtype;
pub use train::checkpoint;
pub use train::history;
pub use train::run::{Event, Finish, Run, Steps, Summary};
pub use train::spec::{DATA_SETTINGS, INVOCATION};
pub use train::{
    AdamWConfig, AdapterInit, Counts, Length, Resume, Schedule, Session, Started, StepStats,
    TrainSpec, Truncation,
};
