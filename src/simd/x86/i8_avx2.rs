//! The int8 kernel in AVX2: rows × 16 lanes, i8·i8 through `vpsignb` + `vpmaddubsw` +
//! `vpmaddwd`.

use std::arch::x86_64::*;

use crate::simd::{I8Lanes, I8Rows, Out};

pub(super) fn i8gemm_avx2(r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
    assert!(
        !r.unsigned && !l.unsigned,
        "the AVX2 int8 kernel takes i8 operands"
    );
    // SAFETY: table built after AVX2 was detected; bounds checked by `Kernels::i8gemm`
    // (lane block of 16 lanes).
    unsafe { i8avx2(r, l, n, out) }
}

const MR_AVX2: usize = 2;

/// # Safety
/// AVX2 available; views checked for a 16-lane block; both operands i8 in −127..=127.
#[target_feature(enable = "avx2,fma")]
unsafe fn i8avx2(r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
    // SAFETY: forwarded contract.
    unsafe { i8avx2_body(r, l, n, out) }
}

/// # Safety
/// As [`i8avx2`].
#[inline(always)]
unsafe fn i8avx2_body(r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
    let mut i0 = 0;
    while i0 < r.rows {
        let mr = (r.rows - i0).min(MR_AVX2);
        // SAFETY: rows i0..i0+mr inside the checked views.
        unsafe {
            match (mr, n > 8) {
                (2, true) => i8tile_avx2::<2, 2>(r, l, i0, n, out),
                (1, true) => i8tile_avx2::<1, 2>(r, l, i0, n, out),
                (2, false) => i8tile_avx2::<2, 1>(r, l, i0, n, out),
                _ => i8tile_avx2::<1, 1>(r, l, i0, n, out),
            }
        }
        i0 += mr;
    }
}

/// # Safety
/// As [`i8avx2`]; rows i0..i0+MR exist.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn i8tile_avx2<const MR: usize, const NV: usize>(
    r: &I8Rows<'_>,
    l: &I8Lanes<'_>,
    i0: usize,
    n: usize,
    out: &mut Out<'_>,
) {
    const NT: usize = 16;
    let nb = r.blocks;
    let rv = r.vals.as_ptr();
    let lv = l.vals.as_ptr();
    let ones = _mm256_set1_epi16(1);
    let mut facc = [[_mm256_setzero_ps(); NV]; MR];
    for b in 0..nb {
        let mut iacc = [[_mm256_setzero_si256(); NV]; MR];
        for q in 0..8 {
            let mut lvec = [_mm256_setzero_si256(); NV];
            let mut labs = [_mm256_setzero_si256(); NV];
            for v in 0..NV {
                // SAFETY: 32 bytes at b·512 + (q·16 + 8v)·4 inside the lane block.
                lvec[v] = unsafe {
                    _mm256_loadu_si256(lv.add(b * 32 * NT + (q * NT + 8 * v) * 4).cast())
                };
                labs[v] = _mm256_sign_epi8(lvec[v], lvec[v]);
            }
            for (i, row) in iacc.iter_mut().enumerate() {
                // SAFETY: 4 bytes of row i0 + i, block b, group q.
                let w = unsafe {
                    std::ptr::read_unaligned(
                        rv.add((i0 + i) * r.stride + 32 * b + 4 * q).cast::<i32>(),
                    )
                };
                let w = _mm256_set1_epi32(w);
                for v in 0..NV {
                    // |l| · (w · sign l) = l · w; |l| ≤ 127 so pair sums fit in i16.
                    let p16 = _mm256_maddubs_epi16(labs[v], _mm256_sign_epi8(w, lvec[v]));
                    row[v] = _mm256_add_epi32(row[v], _mm256_madd_epi16(p16, ones));
                }
            }
        }
        for (i, (frow, irow)) in facc.iter_mut().zip(&iacc).enumerate() {
            let rd = _mm256_set1_ps(r.d[(i0 + i) * r.d_stride + b]);
            for v in 0..NV {
                // SAFETY: lane scales hold nb·16 floats (checked).
                let ld = unsafe { _mm256_loadu_ps(l.d.as_ptr().add(b * NT + 8 * v)) };
                frow[v] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(irow[v]), _mm256_mul_ps(ld, rd), frow[v]);
                if let Some(m) = r.min {
                    // SAFETY: lane sums hold nb·16 floats (checked).
                    let ls = unsafe { _mm256_loadu_ps(l.sum.as_ptr().add(b * NT + 8 * v)) };
                    frow[v] =
                        _mm256_fnmadd_ps(_mm256_set1_ps(m[(i0 + i) * r.d_stride + b]), ls, frow[v]);
                }
            }
        }
    }
    let c = out.ptr();
    let mut buf = [0f32; 16];
    for (i, row) in facc.iter().enumerate() {
        for (v, &a) in row.iter().enumerate() {
            // SAFETY: `buf` holds 16 floats, v < 2.
            unsafe { _mm256_storeu_ps(buf.as_mut_ptr().add(8 * v), a) };
        }
        for (j, &x) in buf[..n].iter().enumerate() {
            // SAFETY: (i0 + i, j) inside the checked output view.
            let o = unsafe { &mut *c.add((i0 + i) * out.rs + j * out.cs) };
            *o = if out.accumulate { *o + x } else { x };
        }
    }
}
