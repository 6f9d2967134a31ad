//! Support for `pocketlora bench`: the shapes of real models written as random-weight GGUF
//! files (complete with a vocabulary, so llama.cpp and transformers load the very same file),
//! the fp32 FMA peak microbenchmark, FLOP counts of the passes, and memory readings.
//!
//! One file per concern: `shapes` (the model shapes), `random_model` (writing them),
//! `speed` (the FMA peak and FLOP counts), `machine` (memory and CPU readings); their items
//! are all used as `bench::…`.

mod machine;
mod random_model;
mod shapes;
mod speed;

pub use machine::{
    available_memory_bytes, cpu_model, peak_heap_bytes, peak_rss_bytes, reset_peak_heap,
    reset_peak_rss, rss_bytes,
};
pub use random_model::{tensor_type, write_random_model};
pub use shapes::{shape, Shape, SHAPES};
pub use speed::{flops, fp32_peak_gflops, Flops, PeakBurst};
