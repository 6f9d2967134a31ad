//! The int8 kernel in AVX-512 VNNI: rows × 32 lanes, `vpdpbusd` over 4-byte groups.

use std::arch::x86_64::*;

use super::zmm::{mask16, store_lanes512};
use crate::simd::{I8Lanes, I8Rows, Out};

pub(super) fn i8gemm_vnni(r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
    assert!(
        r.unsigned != l.unsigned,
        "vpdpbusd needs one unsigned and one signed operand"
    );
    // SAFETY: table built after AVX-512 VNNI was detected; bounds checked by
    // `Kernels::i8gemm` (lane block of 32 lanes).
    unsafe {
        if r.unsigned {
            i8vnni::<true>(r, l, n, out)
        } else {
            i8vnni::<false>(r, l, n, out)
        }
    }
}

const MR_VNNI: usize = 6;

/// # Safety
/// AVX-512 VNNI available; views checked by `Kernels::i8gemm` for a 32-lane block.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")]
unsafe fn i8vnni<const RU: bool>(r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
    let mut i0 = 0;
    while i0 < r.rows {
        // Row minimums take four more registers: tiles of 4 rows then keep clear of spills.
        let tall = if r.min.is_some() { 4 } else { MR_VNNI };
        let mr = (r.rows - i0).min(tall);
        // SAFETY: rows i0..i0+mr inside the checked views.
        unsafe {
            match (mr, n > 16) {
                (6, true) => i8tile_vnni::<6, 2, RU>(r, l, i0, n, out),
                (5, true) => i8tile_vnni::<5, 2, RU>(r, l, i0, n, out),
                (6, false) => i8tile_vnni::<6, 1, RU>(r, l, i0, n, out),
                (5, false) => i8tile_vnni::<5, 1, RU>(r, l, i0, n, out),
                (4, true) => i8tile_vnni::<4, 2, RU>(r, l, i0, n, out),
                (3, true) => i8tile_vnni::<3, 2, RU>(r, l, i0, n, out),
                (2, true) => i8tile_vnni::<2, 2, RU>(r, l, i0, n, out),
                (1, true) => i8tile_vnni::<1, 2, RU>(r, l, i0, n, out),
                (4, false) => i8tile_vnni::<4, 1, RU>(r, l, i0, n, out),
                (3, false) => i8tile_vnni::<3, 1, RU>(r, l, i0, n, out),
                (2, false) => i8tile_vnni::<2, 1, RU>(r, l, i0, n, out),
                _ => i8tile_vnni::<1, 1, RU>(r, l, i0, n, out),
            }
        }
        i0 += mr;
    }
}

/// # Safety
/// As [`i8vnni`]; rows i0..i0+MR exist; `NV` vectors cover the `n` lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")]
unsafe fn i8tile_vnni<const MR: usize, const NV: usize, const RU: bool>(
    r: &I8Rows<'_>,
    l: &I8Lanes<'_>,
    i0: usize,
    n: usize,
    out: &mut Out<'_>,
) {
    const NT: usize = 32;
    let nb = r.blocks;
    let rv = r.vals.as_ptr();
    let lv = l.vals.as_ptr();
    let mut facc = [[_mm512_setzero_ps(); NV]; MR];
    for b in 0..nb {
        let mut iacc = [[_mm512_setzero_si512(); NV]; MR];
        if let Some(lc) = l.corr {
            for v in 0..NV {
                // SAFETY: b·32 + 16v + 16 ≤ nb·32 (checked lane corrections).
                let c = unsafe { _mm512_loadu_si512(lc.as_ptr().add(b * NT + 16 * v).cast()) };
                for row in iacc.iter_mut() {
                    row[v] = c;
                }
            }
        }
        if let Some(rc) = r.corr {
            for (i, row) in iacc.iter_mut().enumerate() {
                let c = _mm512_set1_epi32(rc[(i0 + i) * r.d_stride + b]);
                for x in row.iter_mut() {
                    *x = _mm512_add_epi32(*x, c);
                }
            }
        }
        for q in 0..8 {
            let mut lvec = [_mm512_setzero_si512(); NV];
            for (v, x) in lvec.iter_mut().enumerate() {
                // SAFETY: 64 bytes at b·1024 + (q·32 + 16v)·4 lie inside the lane block.
                *x = unsafe {
                    _mm512_loadu_si512(lv.add(b * 32 * NT + (q * NT + 16 * v) * 4).cast())
                };
            }
            for (i, row) in iacc.iter_mut().enumerate() {
                // SAFETY: 4 bytes of row i0 + i, block b, group q: inside the row values.
                let w = unsafe {
                    std::ptr::read_unaligned(
                        rv.add((i0 + i) * r.stride + 32 * b + 4 * q).cast::<i32>(),
                    )
                };
                let w = _mm512_set1_epi32(w);
                for (v, x) in row.iter_mut().enumerate() {
                    *x = if RU {
                        _mm512_dpbusd_epi32(*x, w, lvec[v])
                    } else {
                        _mm512_dpbusd_epi32(*x, lvec[v], w)
                    };
                }
            }
        }
        let mut ld = [_mm512_setzero_ps(); NV];
        let mut ls = [_mm512_setzero_ps(); NV];
        for v in 0..NV {
            // SAFETY: lane scales/sums hold nb·32 floats (checked).
            unsafe {
                ld[v] = _mm512_loadu_ps(l.d.as_ptr().add(b * NT + 16 * v));
                if r.min.is_some() {
                    ls[v] = _mm512_loadu_ps(l.sum.as_ptr().add(b * NT + 16 * v));
                }
            }
        }
        for (i, (frow, irow)) in facc.iter_mut().zip(&iacc).enumerate() {
            let rd = _mm512_set1_ps(r.d[(i0 + i) * r.d_stride + b]);
            for v in 0..NV {
                let s = _mm512_mul_ps(ld[v], rd);
                frow[v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(irow[v]), s, frow[v]);
            }
            if let Some(m) = r.min {
                let mv = _mm512_set1_ps(m[(i0 + i) * r.d_stride + b]);
                for v in 0..NV {
                    frow[v] = _mm512_fnmadd_ps(mv, ls[v], frow[v]);
                }
            }
        }
    }
    // SAFETY: rows i0..i0+MR and lanes < n are inside the checked output view.
    unsafe { store_tile512(&facc, i0, n, out) }
}

/// Writes an (MR × NV·16) tile's first `n` lanes at row `i0` of `out`.
///
/// # Safety
/// AVX-512 available; rows i0..i0+MR and lanes < n inside `out` (checked by the caller).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn store_tile512<const MR: usize, const NV: usize>(
    acc: &[[__m512; NV]; MR],
    i0: usize,
    n: usize,
    out: &mut Out<'_>,
) {
    let c = out.ptr();
    if out.cs == 1 {
        for (i, row) in acc.iter().enumerate() {
            for (v, &a) in row.iter().enumerate() {
                let m = mask16(n.saturating_sub(16 * v));
                if m == 0 {
                    continue;
                }
                // SAFETY: lane 16v < n is in bounds; masked lanes untouched (a whole vector,
                // m = 0xFFFF, takes the plain load and store).
                unsafe {
                    let p = c.add((i0 + i) * out.rs + 16 * v);
                    let whole = m == u16::MAX;
                    let x = match (out.accumulate, whole) {
                        (false, _) => a,
                        (true, true) => _mm512_add_ps(a, _mm512_loadu_ps(p)),
                        (true, false) => _mm512_add_ps(a, _mm512_maskz_loadu_ps(m, p)),
                    };
                    if whole {
                        _mm512_storeu_ps(p, x);
                    } else {
                        _mm512_mask_storeu_ps(p, m, x);
                    }
                }
            }
        }
    } else if out.rs == 1 {
        // SAFETY: rows i0..i0+MR of lanes < n are inside the output view, and with rs = 1
        // row i0 + i of lane j is `c + i0 + i + j·cs`.
        unsafe { store_lanes512(acc, c.add(i0), n, out.cs, out.accumulate) }
    } else {
        // Lane-major writes with strided rows: for each lane, the MR rows' values.
        let mut buf = [[0f32; 32]; MR];
        for (row, b) in acc.iter().zip(buf.iter_mut()) {
            for (v, &a) in row.iter().enumerate() {
                // SAFETY: each `buf` row holds 32 floats and v < 2.
                unsafe { _mm512_storeu_ps(b.as_mut_ptr().add(16 * v), a) };
            }
        }
        for j in 0..n {
            for (i, b) in buf.iter().enumerate() {
                // SAFETY: (i0 + i, j) inside the checked output view.
                let o = unsafe { &mut *c.add((i0 + i) * out.rs + j * out.cs) };
                *o = if out.accumulate { *o + b[j] } else { b[j] };
            }
        }
    }
}
