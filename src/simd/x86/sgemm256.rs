//! The f32 micro-gemm in AVX2: tiles of up to 6 rows × 16 lanes (12 ymm accumulators).

use std::arch::x86_64::*;

use crate::simd::{Out, Sgemm};

pub(super) fn sgemm_avx2(g: &Sgemm<'_>, out: &mut Out<'_>) {
    // SAFETY: table built after AVX2/FMA were detected; bounds checked by `Kernels::sgemm`.
    unsafe { sgemm256(g, out) }
}

const MR256: usize = 6;

#[target_feature(enable = "avx2,fma")]
unsafe fn sgemm256(g: &Sgemm<'_>, out: &mut Out<'_>) {
    let mut j0 = 0;
    while j0 < g.n {
        let nn = (g.n - j0).min(16);
        let masks = [mask8(nn), mask8(nn.saturating_sub(8))];
        let mut i0 = 0;
        while i0 < g.m {
            let mr = (g.m - i0).min(MR256);
            // SAFETY: the tile lies inside the checked views.
            unsafe {
                if nn > 8 {
                    dispatch_mr!(tile256, NV2, mr, (g, out, i0, j0, nn, masks), [1 2 3 4 5 6])
                } else {
                    dispatch_mr!(tile256, NV1, mr, (g, out, i0, j0, nn, masks), [1 2 3 4 5 6])
                }
            }
            i0 += mr;
        }
        j0 += 16;
    }
}

const NV1: usize = 1;
const NV2: usize = 2;

#[inline]
#[target_feature(enable = "avx2,fma")]
fn mask8(n: usize) -> __m256i {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), idx)
}

/// # Safety
/// AVX2/FMA available; the (MR × nn) tile at (i0, j0) lies inside the checked views;
/// `NV == nn.div_ceil(8)`.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile256<const MR: usize, const NV: usize>(
    g: &Sgemm<'_>,
    out: &mut Out<'_>,
    i0: usize,
    j0: usize,
    nn: usize,
    masks: [__m256i; 2],
) {
    let r = g.r.as_ptr();
    let l = g.l.as_ptr();
    let (rs, cs, ldb) = (g.rs, g.cs, g.ldb);
    let mut acc = [[_mm256_setzero_ps(); NV]; MR];
    // Whole vectors take plain loads (a masked load is slower on Intel cores).
    let whole = nn == 8 * NV;
    for p in 0..g.k {
        let mut bv = [_mm256_setzero_ps(); NV];
        for (v, b) in bv.iter_mut().enumerate() {
            let at = p * ldb + j0 + 8 * v;
            *b = if whole {
                // SAFETY: lanes j0 + 8v .. + 8 are all < n.
                unsafe { _mm256_loadu_ps(l.add(at)) }
            } else {
                // SAFETY: the base lane is < n; masked lanes are not read.
                unsafe { _mm256_maskload_ps(l.add(at), masks[v]) }
            };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: row and p inside the row operand.
            let a = _mm256_set1_ps(unsafe { *r.add((i0 + i) * rs + p * cs) });
            for (v, c) in row.iter_mut().enumerate() {
                *c = _mm256_fmadd_ps(a, bv[v], *c);
            }
        }
    }
    let alpha = _mm256_set1_ps(g.alpha);
    let c = out.ptr();
    if out.cs == 1 {
        for (i, row) in acc.iter().enumerate() {
            for (v, &a) in row.iter().enumerate() {
                // SAFETY: inside the output view; masked lanes untouched.
                unsafe {
                    let p = c.add((i0 + i) * out.rs + j0 + 8 * v);
                    let mut x = _mm256_mul_ps(a, alpha);
                    if out.accumulate {
                        x = _mm256_add_ps(x, _mm256_maskload_ps(p, masks[v]));
                    }
                    _mm256_maskstore_ps(p, masks[v], x);
                }
            }
        }
    } else {
        let mut buf = [0f32; 16];
        for (i, row) in acc.iter().enumerate() {
            for (v, &a) in row.iter().enumerate() {
                // SAFETY: `buf` holds 16 floats, v < 2.
                unsafe { _mm256_storeu_ps(buf.as_mut_ptr().add(8 * v), _mm256_mul_ps(a, alpha)) };
            }
            for (j, &x) in buf[..nn].iter().enumerate() {
                let at = (i0 + i) * out.rs + (j0 + j) * out.cs;
                // SAFETY: inside the checked output view.
                let o = unsafe { &mut *c.add(at) };
                *o = if out.accumulate { *o + x } else { x };
            }
        }
    }
}
