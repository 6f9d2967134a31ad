//! The f32 micro-gemm in AVX-512: tiles of up to 12 rows × 32 lanes (24 zmm accumulators).

use std::arch::x86_64::*;

use super::zmm::{mask16, store_lanes512};
use crate::simd::{Out, Sgemm};

pub(super) fn sgemm_avx512(g: &Sgemm<'_>, out: &mut Out<'_>) {
    // SAFETY: only reachable through a table built after `supported` saw AVX-512 F/BW/VL/DQ,
    // AVX2, FMA; bounds were checked by `Kernels::sgemm`.
    unsafe { sgemm512(g, out) }
}

const MR512: usize = 12;

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn sgemm512(g: &Sgemm<'_>, out: &mut Out<'_>) {
    let mut j0 = 0;
    while j0 < g.n {
        let nn = (g.n - j0).min(32);
        let masks = [mask16(nn), mask16(nn.saturating_sub(16))];
        let mut i0 = 0;
        while i0 < g.m {
            let mr = (g.m - i0).min(MR512);
            // SAFETY: rows i0..i0+mr and lanes j0..j0+nn are inside the checked views.
            unsafe {
                if nn > 16 {
                    tile512_dispatch::<2>(g, out, i0, j0, mr, nn, masks);
                } else {
                    tile512_dispatch::<1>(g, out, i0, j0, mr, nn, masks);
                }
            }
            i0 += mr;
        }
        j0 += 32;
    }
}

/// # Safety
/// AVX-512 available; the (mr × nn) tile at (i0, j0) lies inside the views checked by
/// `Kernels::sgemm`; `NV == nn.div_ceil(16)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn tile512_dispatch<const NV: usize>(
    g: &Sgemm<'_>,
    out: &mut Out<'_>,
    i0: usize,
    j0: usize,
    mr: usize,
    nn: usize,
    masks: [__mmask16; 2],
) {
    // SAFETY: forwarded contract.
    unsafe {
        dispatch_mr!(
            tile512,
            NV,
            mr,
            (g, out, i0, j0, nn, masks),
            [1 2 3 4 5 6 7 8 9 10 11 12]
        )
    }
}

/// # Safety
/// As [`tile512_dispatch`] with `MR` rows.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn tile512<const MR: usize, const NV: usize>(
    g: &Sgemm<'_>,
    out: &mut Out<'_>,
    i0: usize,
    j0: usize,
    nn: usize,
    masks: [__mmask16; 2],
) {
    // SAFETY: forwarded contract.
    let acc = unsafe { tile512_acc::<MR, NV>(g, i0, j0, masks) };
    let alpha = _mm512_set1_ps(g.alpha);
    let c = out.ptr();
    if out.cs == 1 {
        for (i, row) in acc.iter().enumerate() {
            for (v, &a) in row.iter().enumerate() {
                // SAFETY: (i0 + i, j0 + 16v) is inside the output view; masked lanes are not
                // touched.
                unsafe {
                    let p = c.add((i0 + i) * out.rs + j0 + 16 * v);
                    let mut x = _mm512_mul_ps(a, alpha);
                    if out.accumulate {
                        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(masks[v], p));
                    }
                    _mm512_mask_storeu_ps(p, masks[v], x);
                }
            }
        }
    } else if out.rs == 1 {
        // Lane-major output with the rows adjacent: each lane's MR values are one masked
        // vector store.
        let mut scaled = acc;
        for x in scaled.iter_mut().flatten() {
            *x = _mm512_mul_ps(*x, alpha);
        }
        // SAFETY: rows i0..i0+MR of lanes j0..j0+nn are inside the output view, and with
        // rs = 1 row i0 + i of lane j is `c + i0 + i + j·cs`.
        unsafe { store_lanes512(&scaled, c.add(i0 + j0 * out.cs), nn, out.cs, out.accumulate) }
    } else {
        // Lane-major writes with strided rows: for each lane, the MR rows' values.
        let mut buf = [[0f32; 32]; MR];
        for (row, b) in acc.iter().zip(buf.iter_mut()) {
            for (v, &a) in row.iter().enumerate() {
                // SAFETY: each `buf` row holds 32 floats, v < 2.
                unsafe { _mm512_storeu_ps(b.as_mut_ptr().add(16 * v), _mm512_mul_ps(a, alpha)) };
            }
        }
        for j in 0..nn {
            for (i, b) in buf.iter().enumerate() {
                let at = (i0 + i) * out.rs + (j0 + j) * out.cs;
                // SAFETY: (i0 + i, j0 + j) is inside the checked output view.
                let o = unsafe { &mut *c.add(at) };
                *o = if out.accumulate { *o + b[j] } else { b[j] };
            }
        }
    }
}

/// How many reduction steps ahead the f32 tiles prefetch their vector operand `L`. In the
/// exact forward a 32-token block of `L` (256 KiB at 2048 columns) comes from L3 for the
/// first tile that reads it, and the hardware prefetchers, which stop at every 4 KiB page,
/// did not keep ahead of the FMAs: prefetching 16 steps (2 KiB) ahead made the forward at
/// 2048x2048, T 512, Q8_0 9-11% faster on a Xeon (1 and 2 threads, interleaved A/B) and the
/// backward ~6%; 8 and 32 steps did as well, and on AVX2 it changed nothing either way.
const L_PREFETCH_STEPS: usize = 16;

/// The accumulation loop of the f32 tiles, with one named register per accumulator (arrays
/// of vectors get spilled by LLVM here): rows `$a` (first vector) and `$b` (second, when
/// `$two`).
macro_rules! acc_loop {
    ($g:ident, $i0:ident, $j0:ident, $masks:ident, $load:ident, $set1:ident, $fma:ident,
     $zero:ident, $w:literal, $two:expr, [$($a:ident $b:ident),*]) => {{
        let r = $g.r.as_ptr();
        let l = $g.l.as_ptr();
        let (rs, cs, ldb) = ($g.rs, $g.cs, $g.ldb);
        let rows = <[&str]>::len(&[$(stringify!($a)),*]);
        let mut rp = [r; 12];
        for (i, x) in rp.iter_mut().enumerate().take(rows) {
            // SAFETY: row i0 + i < m starts inside the row operand.
            *x = unsafe { r.add(($i0 + i) * rs) };
        }
        $(let mut $a = $zero(); let mut $b = $zero();)*
        for p in 0..$g.k {
            // A prefetch never faults, wherever it points (past the operand's end near the
            // last steps: `wrapping_add` computes the address without claiming it is valid).
            let ahead = l.wrapping_add((p + L_PREFETCH_STEPS) * ldb + $j0);
            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            if $two {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add($w) as *const i8);
            }
            // SAFETY: lane j0 < n; masked lanes are not read.
            let l0 = unsafe { $load($masks[0], l.add(p * ldb + $j0)) };
            let l1 = if $two {
                // SAFETY: with two vectors, lane j0 + W < n.
                unsafe { $load($masks[1], l.add(p * ldb + $j0 + $w)) }
            } else {
                $zero()
            };
            let mut i = 0usize;
            $(
                // SAFETY: row i0 + i < m and p < k: inside the row operand.
                let x = $set1(unsafe { *rp[i].add(p * cs) });
                $a = $fma(x, l0, $a);
                if $two {
                    $b = $fma(x, l1, $b);
                }
                i += 1;
            )*
            let _ = i;
        }
        ([$($a),*], [$($b),*])
    }};
}

/// An unmasked load with the signature of `_mm512_maskz_loadu_ps`, for whole tiles.
///
/// # Safety
/// `p` points to 16 readable floats.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn full_loadu(_mask: __mmask16, p: *const f32) -> __m512 {
    // SAFETY: forwarded contract.
    unsafe { _mm512_loadu_ps(p) }
}

/// # Safety
/// As [`tile512_dispatch`] with `MR` rows and `NV` vectors.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn tile512_acc<const MR: usize, const NV: usize>(
    g: &Sgemm<'_>,
    i0: usize,
    j0: usize,
    masks: [__mmask16; 2],
) -> [[__m512; NV]; MR] {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    macro_rules! run {
        ($($a:ident $b:ident),*) => {{
            // Whole vectors take plain loads (a masked load is slower on Intel cores).
            if masks == [u16::MAX; 2] {
                // Every lane of both vectors is < n, so nothing past the operand is read.
                run!(@ full_loadu; $($a $b),*)
            } else {
                run!(@ _mm512_maskz_loadu_ps; $($a $b),*)
            }
        }};
        (@ $load:ident; $($a:ident $b:ident),*) => {{
            let (a, b) = acc_loop!(g, i0, j0, masks, $load, _mm512_set1_ps,
                _mm512_fmadd_ps, _mm512_setzero_ps, 16, NV == 2, [$($a $b),*]);
            for i in 0..MR {
                acc[i][0] = a[i];
                acc[i][NV - 1] = if NV == 2 { b[i] } else { a[i] };
            }
        }};
    }
    match MR {
        1 => run!(a0 b0),
        2 => run!(a0 b0, a1 b1),
        3 => run!(a0 b0, a1 b1, a2 b2),
        4 => run!(a0 b0, a1 b1, a2 b2, a3 b3),
        5 => run!(a0 b0, a1 b1, a2 b2, a3 b3, a4 b4),
        6 => run!(a0 b0, a1 b1, a2 b2, a3 b3, a4 b4, a5 b5),
        7 => run!(a0 b0, a1 b1, a2 b2, a3 b3, a4 b4, a5 b5, a6 b6),
        8 => run!(a0 b0, a1 b1, a2 b2, a3 b3, a4 b4, a5 b5, a6 b6, a7 b7),
        9 => run!(a0 b0, a1 b1, a2 b2, a3 b3, a4 b4, a5 b5, a6 b6, a7 b7, a8 b8),
        10 => run!(a0 b0, a1 b1, a2 b2, a3 b3, a4 b4, a5 b5, a6 b6, a7 b7, a8 b8, a9 b9),
        11 => run!(a0 b0, a1 b1, a2 b2, a3 b3, a4 b4, a5 b5, a6 b6, a7 b7, a8 b8, a9 b9, a10 b10),
        12 => {
            run!(a0 b0, a1 b1, a2 b2, a3 b3, a4 b4, a5 b5, a6 b6, a7 b7, a8 b8, a9 b9, a10 b10, a11 b11)
        }
        _ => unreachable!(),
    }
    acc
}
