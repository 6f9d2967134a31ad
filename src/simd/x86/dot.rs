//! f32 dot products in AVX-512 and AVX2 registers.

use std::arch::x86_64::*;

use super::zmm::mask16;

pub(super) fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: table built after AVX-512 F was detected; equal lengths checked by the caller.
    unsafe { dot512(a, b) }
}

pub(super) fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: table built after AVX2/FMA were detected; equal lengths checked by the caller.
    unsafe { dot256(a, b) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn dot512(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (u, x) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16u + 16 ≤ n.
            unsafe {
                *x = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i + 16 * u)),
                    _mm512_loadu_ps(pb.add(i + 16 * u)),
                    *x,
                );
            }
        }
        i += 64;
    }
    while i < n {
        let m = mask16(n - i);
        // SAFETY: lane i < n; masked lanes untouched.
        unsafe {
            acc[0] = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
                acc[0],
            );
        }
        i += 16;
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot256(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (u, x) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8u + 8 ≤ n.
            unsafe {
                *x = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * u)),
                    _mm256_loadu_ps(pb.add(i + 8 * u)),
                    *x,
                );
            }
        }
        i += 32;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
    let mut t = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for j in i..n {
        t += a[j] * b[j];
    }
    t
}
