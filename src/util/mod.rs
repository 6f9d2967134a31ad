//! The bottom layer: primitives that every other module may use and that use nothing of the
//! crate themselves (only `std`), so that [`crate::simd`] and [`crate::kernels`] above them
//! can share one copy instead of `simd` reaching up into `kernels`.
//!
//! - [`team`]: the spinning team of threads that runs the many small parallel loops of a
//!   generation step (the simd matrix–vector products and the attention heads);
//! - [`num`]: the eight-lane dot product, generic over f32 and f64 (the scalar twin of the
//!   SIMD dot and the kernels' inner product);
//! - [`rng`]: the crate's deterministic pseudo-random generators (SplitMix64 for LoRA
//!   init, data order, dropout and sampling; xorshift64 for test and benchmark data).

pub mod num;
pub mod rng;
pub mod team;
