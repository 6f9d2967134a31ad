//! Dequantization of Q8_0 and Q4_0 rows in AVX-512 and AVX2 registers (other types: the
//! reference kernels).

use std::arch::x86_64::*;

use super::blocks::{block_i8, block_scale};
use crate::quant::GgmlType;

pub(super) fn dequant_avx512(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    // SAFETY: table built after AVX-512 was detected; `Kernels::dequantize_row` checked that
    // `src` holds exactly the blocks of `dst`.
    unsafe { dequant512(ty, src, dst) }
}

pub(super) fn dequant_avx2(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    // SAFETY: table built after AVX2/F16C were detected; row geometry checked by the caller.
    unsafe { dequant256(ty, src, dst) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn dequant512(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    match ty {
        GgmlType::Q8_0 => {
            for (blk, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(32)) {
                let d = _mm512_set1_ps(block_scale(blk));
                for h in 0..2 {
                    // SAFETY: 16 bytes at 2 + 16h inside the 34-byte block; 16 floats at 16h
                    // inside the 32-float output chunk.
                    unsafe {
                        let q = _mm_loadu_si128(blk.as_ptr().add(2 + 16 * h).cast());
                        let f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
                        _mm512_storeu_ps(y.as_mut_ptr().add(16 * h), _mm512_mul_ps(f, d));
                    }
                }
            }
            true
        }
        GgmlType::Q4_0 => {
            for (blk, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(32)) {
                let d = _mm512_set1_ps(block_scale(blk));
                let (lo, hi) = block_i8::<18>(blk);
                // SAFETY: 32 floats of output.
                unsafe {
                    let flo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo));
                    let fhi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi));
                    _mm512_storeu_ps(y.as_mut_ptr(), _mm512_mul_ps(flo, d));
                    _mm512_storeu_ps(y.as_mut_ptr().add(16), _mm512_mul_ps(fhi, d));
                }
            }
            true
        }
        _ => false,
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequant256(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    match ty {
        GgmlType::Q8_0 => {
            for (blk, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(32)) {
                let d = _mm256_set1_ps(block_scale(blk));
                for h in 0..4 {
                    // SAFETY: 8 bytes at 2 + 8h inside the block; 8 floats at 8h of output.
                    unsafe {
                        let q = _mm_loadl_epi64(blk.as_ptr().add(2 + 8 * h).cast());
                        let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                        _mm256_storeu_ps(y.as_mut_ptr().add(8 * h), _mm256_mul_ps(f, d));
                    }
                }
            }
            true
        }
        GgmlType::Q4_0 => {
            for (blk, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(32)) {
                let d = _mm256_set1_ps(block_scale(blk));
                let (lo, hi) = block_i8::<18>(blk);
                // SAFETY: 32 floats of output.
                unsafe {
                    for (h, v) in [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)]
                        .into_iter()
                        .enumerate()
                    {
                        let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
                        _mm256_storeu_ps(y.as_mut_ptr().add(8 * h), _mm256_mul_ps(f, d));
                    }
                }
            }
            true
        }
        _ => false,
    }
}
