//! The few-token f32 GEMV over Q8_0 / Q4_0 blocks read in place ([`crate::simd::gemv`]'s
//! arithmetic in AVX-512 and AVX2 registers, bit-identical to its scalar twin).

use std::arch::x86_64::*;

use super::blocks::{block_i8, block_scale};
use crate::quant::GgmlType;

pub(super) fn gemv_avx512(
    ty: GgmlType,
    w: &[u8],
    cols: usize,
    x: &[f32],
    t: usize,
    y: &mut [f32],
) -> bool {
    // SAFETY: table built after AVX-512 was detected; sizes checked by `Kernels::gemv`.
    unsafe { gemv512(ty, w, cols, x, t, y) }
}

pub(super) fn gemv_avx2(
    ty: GgmlType,
    w: &[u8],
    cols: usize,
    x: &[f32],
    t: usize,
    y: &mut [f32],
) -> bool {
    // SAFETY: table built after AVX2 was detected; sizes checked by `Kernels::gemv`.
    unsafe { gemv256(ty, w, cols, x, t, y) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn gemv512(ty: GgmlType, w: &[u8], cols: usize, x: &[f32], t: usize, y: &mut [f32]) -> bool {
    // SAFETY: AVX-512 available (caller); sizes checked by `Kernels::gemv`.
    unsafe { by_block_and_tokens!(ty, t, gemv_rows512(w, cols, x, y)) }
}

/// [`crate::simd::gemv`]'s arithmetic in AVX-512 registers, operation for operation (multiply,
/// then add; the same lane folds), so its results equal the scalar twin's bits. `BYTES`
/// picks the block: 34 = Q8_0, 18 = Q4_0.
///
/// # Safety
/// AVX-512 available; `w` holds `y.len() / T` rows of `cols / 32` blocks, `x` `T` rows of
/// `cols` (checked by `Kernels::gemv`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn gemv_rows512<const BYTES: usize, const T: usize>(
    w: &[u8],
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) {
    let nb = cols / 32;
    let rb = nb * BYTES;
    let n = y.len() / T;
    for i in 0..n {
        let mut acc = [[_mm512_setzero_ps(); 2]; T];
        for b in 0..nb {
            let at = i * rb + b * BYTES;
            let blk = &w[at..at + BYTES];
            crate::simd::prefetch(w, at + crate::simd::gemv::PREFETCH_AHEAD);
            let d = _mm512_set1_ps(block_scale(blk));
            let (q0, q1) = block_i8::<BYTES>(blk);
            let q = [
                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)), d),
                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)), d),
            ];
            for (tok, a) in acc.iter_mut().enumerate() {
                for h in 0..2 {
                    // SAFETY: 16 floats at tok·cols + 32b + 16h < T·cols.
                    let xv =
                        unsafe { _mm512_loadu_ps(x.as_ptr().add(tok * cols + 32 * b + 16 * h)) };
                    a[h] = _mm512_add_ps(a[h], _mm512_mul_ps(q[h], xv));
                }
            }
        }
        for (tok, a) in acc.iter().enumerate() {
            // m[l] = a0 + a1; then m[l] += m[l + 8], m[l] += m[l + 4]; (m0 + m2) + (m1 + m3).
            let m = _mm512_add_ps(a[0], a[1]);
            let m8 = _mm256_add_ps(_mm512_castps512_ps256(m), _mm512_extractf32x8_ps::<1>(m));
            let m4 = _mm_add_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps::<1>(m8));
            let m2 = _mm_add_ps(m4, _mm_movehl_ps(m4, m4));
            let v = _mm_add_ss(m2, _mm_shuffle_ps::<0b01>(m2, m2));
            y[tok * n + i] = _mm_cvtss_f32(v);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv256(ty: GgmlType, w: &[u8], cols: usize, x: &[f32], t: usize, y: &mut [f32]) -> bool {
    // SAFETY: AVX2 available (caller); sizes checked by `Kernels::gemv`.
    unsafe { by_block_and_tokens!(ty, t, gemv_rows256(w, cols, x, y)) }
}

/// [`gemv_rows512`] in AVX2 registers: each 16-lane accumulator of the scalar twin is a pair
/// of 8-lane halves, so the results again equal its bits.
///
/// # Safety
/// AVX2 and F16C available; sizes as [`gemv_rows512`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv_rows256<const BYTES: usize, const T: usize>(
    w: &[u8],
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) {
    let nb = cols / 32;
    let rb = nb * BYTES;
    let n = y.len() / T;
    for i in 0..n {
        // acc[tok][h][e]: lanes 8e .. 8e + 8 of the half h of a block.
        let mut acc = [[[_mm256_setzero_ps(); 2]; 2]; T];
        for b in 0..nb {
            let at = i * rb + b * BYTES;
            let blk = &w[at..at + BYTES];
            crate::simd::prefetch(w, at + crate::simd::gemv::PREFETCH_AHEAD);
            let d = _mm256_set1_ps(block_scale(blk));
            let (q0, q1) = block_i8::<BYTES>(blk);
            let widen = |v: __m128i| {
                [
                    _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), d),
                    _mm256_mul_ps(
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(v))),
                        d,
                    ),
                ]
            };
            let q = [widen(q0), widen(q1)];
            for (tok, a) in acc.iter_mut().enumerate() {
                for h in 0..2 {
                    for e in 0..2 {
                        // SAFETY: 8 floats at tok·cols + 32b + 16h + 8e < T·cols.
                        let xv = unsafe {
                            _mm256_loadu_ps(x.as_ptr().add(tok * cols + 32 * b + 16 * h + 8 * e))
                        };
                        a[h][e] = _mm256_add_ps(a[h][e], _mm256_mul_ps(q[h][e], xv));
                    }
                }
            }
        }
        for (tok, a) in acc.iter().enumerate() {
            // m = a0 + a1 (as two halves); m[l] += m[l + 8]; then as gemv_rows512.
            let m8 = _mm256_add_ps(
                _mm256_add_ps(a[0][0], a[1][0]),
                _mm256_add_ps(a[0][1], a[1][1]),
            );
            let m4 = _mm_add_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps::<1>(m8));
            let m2 = _mm_add_ps(m4, _mm_movehl_ps(m4, m4));
            let v = _mm_add_ss(m2, _mm_shuffle_ps::<0b01>(m2, m2));
            y[tok * n + i] = _mm_cvtss_f32(v);
        }
    }
}
