//! The implementation behind the front in `lib.rs`: every module, reachable for the
//! crate's own tests, benches, fuzz targets and front ends (`pocketlora::internals::…`),
//! hidden from the docs; its paths are not part of the stable API. Inside the crate the
//! modules keep their short paths (`crate::model`), re-exported at the root.

#[path = "bench/mod.rs"]
pub mod bench;
#[path = "data/mod.rs"]
pub mod data;
#[path = "error.rs"]
pub mod error;
#[path = "eval.rs"]
pub mod eval;
#[path = "fsutil.rs"]
pub mod fsutil;
#[path = "fuzzing.rs"]
pub mod fuzzing;
#[path = "gguf/mod.rs"]
pub mod gguf;
#[path = "infer/mod.rs"]
pub mod infer;
#[path = "kernels/mod.rs"]
pub mod kernels;
#[path = "lora/mod.rs"]
pub mod lora;
#[path = "memory/mod.rs"]
pub mod memory;
#[path = "model/mod.rs"]
pub mod model;
#[path = "quant/mod.rs"]
pub mod quant;
#[path = "safetensors.rs"]
pub mod safetensors;
#[path = "simd/mod.rs"]
pub mod simd;
#[path = "tokenizer/mod.rs"]
pub mod tokenizer;
#[path = "train/mod.rs"]
pub mod train;
#[path = "util/mod.rs"]
pub mod util;
