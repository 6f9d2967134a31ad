//! Run-time ISA dispatch for the hot kernels, and their scalar twins.
//!
//! Why a module of its own (DESIGN.md suggested `quant/x86.rs`): the SIMD kernels are not
//! only quant kernels — the f32 micro-gemm serves the matmul, attention and LoRA, and the
//! element-wise ops (exp, RMSNorm, SwiGLU, AdamW, …) are compiled per ISA too. So all
//! `unsafe` for vector code lives here, in one file (or directory) per architecture:
//!
//! - [`scalar`]: the scalar twin of every kernel (safe code; the truth the others are tested
//!   against, and the fallback on CPUs without the features below);
//! - `x86/`: AVX2 + FMA, AVX-512 (F/BW/VL/DQ) and AVX-512 VNNI (`vpdpbusd`) kernels, one
//!   file per kernel family;
//! - `aarch64.rs`: NEON kernels, `sdot` (dotprod) and `smmla` (i8mm) through `asm!`.
//!
//! Detection runs once ([`kernels`] caches a [`Kernels`] table of function pointers in a
//! `OnceLock`). `POCKETLORA_DISABLE=avx512,vnni,avx2,dotprod,i8mm,neon` (comma-separated,
//! or `all`) switches features off so the fallbacks can be compared on the same machine;
//! [`Kernels::for_level`] builds any table the CPU supports, which is how the tests run every
//! available path against [`scalar`].
//!
//! # The two kernel families
//!
//! Both compute `C[i][j] = Σ_p R(i, p) · L(p, j)` with the "row" operand `R` broadcast one
//! element (f32) or one 4-byte group (int8) at a time and the "lane" operand `L` loaded as
//! vectors across `j`, register-tiled over several rows and several lane vectors:
//!
//! - [`Sgemm`] (f32): `R` strided (`rs`, `cs`), `L` row-major (`ldb`), `C` strided, with
//!   masked tails, so it serves the dequantized-panel matmul (`R` = a panel of W, `L` =
//!   tokens packed transposed), its input gradient (`R` = dY, `L` = W rows), attention tiles
//!   and the LoRA products.
//! - [`Kernels::i8gemm`] (int8): per 32-element block, integer dot products (`vpdpbusd`,
//!   `vpmaddubsw`/`vpmaddwd`, `sdot`, `smmla`) scaled into f32 accumulators. `R` is
//!   row-major blocks ([`I8Rows`]), `L` is packed lane-interleaved ([`I8Lanes`], layout
//!   chosen by the table: [`Int8Layout`]).
//!
//! A third product serves generation: [`gemv`] reads Q8_0 / Q4_0 blocks straight into one or
//! two tokens' f32 dot products, and [`gemv_i8`] (`--precision fast`) into integer dot
//! products with the tokens quantized to int8; each is bit-identical on every level.
//!
//! Kernels never allocate; all bounds are checked here, once per call, so the per-ISA code
//! only sees in-bounds addresses.
//!
//! # Files
//!
//! - `isa.rs`: [`Level`], its detection and `POCKETLORA_DISABLE`;
//! - `table.rs`: the kernel table [`Kernels`] (bounds checked once per call) and [`kernels`];
//! - `out.rs`: kernel outputs, [`Out`] and the column-split [`SharedColumns`];
//! - `int8.rs`: the int8 operands ([`Int8Layout`], [`I8Rows`], [`I8Lanes`]) and the packing
//!   of W's columns ([`ColSource`], [`PackTarget`]);
//! - [`ew`], [`gemv`], [`gemv_i8`]: the element-wise and matrix–vector bodies, compiled
//!   per level; [`scalar`], `x86/`, `aarch64.rs`: the tables of each level.

#[macro_use]
mod macros;

pub mod ew;
pub mod gemv;
pub mod gemv_i8;
pub mod scalar;

mod int8;
mod isa;
mod out;
mod table;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use ew::quantize_block;
pub use int8::{ColSource, I8Lanes, I8Rows, Int8Layout, PackTarget, QuantCols};
pub use isa::Level;
pub use out::{ColumnPart, Out, SharedColumns};
pub use table::{kernels, Ew, Kernels, Sgemm};

pub(crate) use int8::pack_cols_body;
pub(crate) use isa::prefetch;
#[cfg(target_arch = "aarch64")]
pub(crate) use table::I8GemmFn;

/// Test data shared by the simd tests.
#[cfg(test)]
mod tests {
    pub(super) fn vals(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::util::rng::XorShift64::new(seed);
        (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }
}
