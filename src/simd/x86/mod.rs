//! x86-64 kernels: AVX2 + FMA, AVX-512 and AVX-512 VNNI. All `unsafe` of the x86 vector
//! code is in this directory: this file builds the tables, and each kernel family has a file
//! of its own — `sgemm512`, `sgemm256` (f32 micro-gemm), `i8_vnni`, `i8_avx2` (int8
//! kernel), `gemv`, `gemv_i8` (few-token GEMVs), `dot`, `dequant`, `pack` (int8 packing,
//! row interleave), `peak` (FMA peak), with the register helpers they share in `zmm`
//! (AVX-512 masks, transpose, tile stores) and `blocks` (Q8_0 / Q4_0 block readers).
//!
//! Every `#[target_feature]` function here is private to this directory and reached only
//! through a table built by [`kernels`], which returns a table only when [`supported`] saw
//! every feature the table's functions enable; the safe wrappers (next to their kernels)
//! rely on that (their `SAFETY` notes say so). Slice bounds are checked by the callers in
//! `simd/mod.rs` before any pointer is formed.

use std::arch::x86_64::*;

use super::{Int8Layout, Kernels, Level};

/// The element-wise kernels of [`super::ew`] compiled with `$feat`.
macro_rules! ew_table {
    ($feat:literal, $($name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {
        super::Ew {
            $($name: {
                #[target_feature(enable = $feat)]
                #[allow(clippy::too_many_arguments)]
                unsafe fn inner($($arg: $ty),*) $(-> $ret)? {
                    super::ew::$name($($arg),*)
                }
                #[allow(clippy::too_many_arguments)]
                fn outer($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: only placed in a table built after `supported` saw `$feat`.
                    unsafe { inner($($arg),*) }
                }
                outer
            },)*
        }
    };
}

macro_rules! dispatch_mr {
    ($f:ident, $nv:ident, $mr:expr, $args:tt, [$($n:literal)*]) => {
        match $mr {
            $($n => $f::<$n, $nv> $args,)*
            _ => unreachable!(),
        }
    };
}

mod blocks;
mod dequant;
mod dot;
mod gemv;
mod gemv_i8;
mod i8_avx2;
mod i8_vnni;
mod pack;
mod peak;
mod sgemm256;
mod sgemm512;
mod zmm;

use dequant::{dequant_avx2, dequant_avx512};
use dot::{dot_avx2, dot_avx512};
use gemv::{gemv_avx2, gemv_avx512};
use gemv_i8::{gemv_i8_avx2, gemv_i8_vnni};
use i8_avx2::i8gemm_avx2;
use i8_vnni::i8gemm_vnni;
use pack::{interleave_avx512, pack_cols_avx2, pack_cols_avx512};
use peak::{peak_avx2, peak_avx512};
use sgemm256::sgemm_avx2;
use sgemm512::sgemm_avx512;

/// Whether the CPU has the features of `level`.
pub(super) fn supported(level: Level) -> bool {
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    let avx512 = avx2
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512dq");
    match level {
        Level::Avx2 => avx2,
        Level::Avx512 => avx512,
        Level::Avx512Vnni => avx512 && is_x86_feature_detected!("avx512vnni"),
        _ => false,
    }
}

/// The table of `level` (the caller checked [`supported`]).
pub(super) fn kernels(level: Level) -> Option<Kernels> {
    if !supported(level) {
        return None;
    }
    let avx2_int8 = Int8Layout {
        nt: 16,
        group: 4,
        unsigned_weights: false,
    };
    Some(match level {
        Level::Avx2 => Kernels {
            level,
            int8: avx2_int8,
            f32_tile: (6, 16),
            sgemm: sgemm_avx2,
            i8gemm: i8gemm_avx2,
            dot: dot_avx2,
            dequant: dequant_avx2,
            pack_cols: pack_cols_avx2,
            interleave: super::scalar::interleave_rows,
            gemv: gemv_avx2,
            gemv_i8: gemv_i8_avx2,
            peak: (peak_avx2, 12 * 8 * 2),
            ew: ew_list!(ew_table, "avx2,fma"),
        },
        Level::Avx512 | Level::Avx512Vnni => Kernels {
            level,
            int8: if level == Level::Avx512Vnni {
                Int8Layout {
                    nt: 32,
                    group: 4,
                    unsigned_weights: true,
                }
            } else {
                avx2_int8
            },
            f32_tile: (12, 32),
            sgemm: sgemm_avx512,
            i8gemm: if level == Level::Avx512Vnni {
                i8gemm_vnni
            } else {
                i8gemm_avx2
            },
            dot: dot_avx512,
            dequant: dequant_avx512,
            pack_cols: pack_cols_avx512,
            interleave: interleave_avx512,
            gemv: gemv_avx512,
            gemv_i8: if level == Level::Avx512Vnni {
                gemv_i8_vnni
            } else {
                gemv_i8_avx2
            },
            peak: (peak_avx512, 12 * 16 * 2),
            ew: ew_list!(ew_table, "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"),
        },
        _ => return None,
    })
}

/// Hints that the cache line holding `p` will be read soon (baseline SSE on x86-64).
#[inline(always)]
pub(super) fn prefetch(p: *const u8) {
    // SAFETY: `prefetcht0` only hints the cache; it never faults or reads into a register,
    // whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
}
