//! AVX-512 register helpers shared by the f32 micro-gemm, the int8 VNNI kernel, the row
//! interleave and the dot product: lane masks, the 16 × 16 transpose, lane-wise tile stores.

use std::arch::x86_64::*;

#[inline(always)]
pub(super) fn mask16(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// `out[j]` lane `i` = `rows[i]` lane `j`, for up to 16 rows of 16 lanes (rows past `MR`
/// read as zero): in-lane unpacks of pairs of floats, then of pairs of pairs, then two
/// rounds of 128-bit block shuffles.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn transpose16<const MR: usize>(rows: &[__m512; MR]) -> [__m512; 16] {
    let r: [__m512; 16] =
        std::array::from_fn(|i| rows.get(i).copied().unwrap_or(_mm512_setzero_ps()));
    // t[4g + 2h + e]: rows 4g + 2h, 4g + 2h + 1 interleaved, low (e = 0) or high halves.
    let mut t = [_mm512_setzero_ps(); 16];
    for p in 0..8 {
        t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
    // u[4g + c]: rows 4g .. 4g + 4 of lanes c, c + 4, c + 8, c + 12 (one per 128-bit block).
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (a, b) = (4 * g, 4 * g + 2);
        let pd = |x: __m512| _mm512_castps_pd(x);
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[a]), pd(t[b])));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[a]), pd(t[b])));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[a + 1]), pd(t[b + 1])));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[a + 1]), pd(t[b + 1])));
    }
    // v[c + 4k] (k = 0 even blocks, 1 odd): rows 0-3 and 4-7 (or 8-11 and 12-15, at +8) of
    // lanes c + 4k and c + 4k + 8.
    let mut v = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        for (half, base) in [(0, 0), (8, 8)] {
            v[half + c] = _mm512_shuffle_f32x4::<0x88>(u[base + c], u[base + 4 + c]);
            v[half + c + 4] = _mm512_shuffle_f32x4::<0xdd>(u[base + c], u[base + 4 + c]);
        }
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..8 {
        out[c] = _mm512_shuffle_f32x4::<0x88>(v[c], v[8 + c]);
        out[c + 8] = _mm512_shuffle_f32x4::<0xdd>(v[c], v[8 + c]);
    }
    out
}

/// Writes a tile lane by lane where its rows are adjacent in memory: lane `j < n`'s `MR`
/// values (row `i` of `acc[i]`, vector `j / 16`) go to `c + j·cs ..`, added to what is there
/// when `accumulate`. One transposition and one masked store per 16 lanes instead of a
/// scalar store per value.
///
/// # Safety
/// AVX-512 available; `c + j·cs + i` is writable for every `i < MR`, `j < n`; `MR ≤ 16`,
/// `n ≤ 16·NV`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
pub(super) unsafe fn store_lanes512<const MR: usize, const NV: usize>(
    acc: &[[__m512; NV]; MR],
    c: *mut f32,
    n: usize,
    cs: usize,
    accumulate: bool,
) {
    let mask = ((1u32 << MR) - 1) as __mmask16;
    let by_vector: [[__m512; MR]; NV] = std::array::from_fn(|v| std::array::from_fn(|i| acc[i][v]));
    for (v, rows) in by_vector.iter().enumerate() {
        let cols = transpose16(rows);
        for (j, &x) in cols.iter().enumerate().take(n.saturating_sub(16 * v)) {
            // SAFETY: lane 16v + j < n: its MR values are writable (the caller's contract);
            // masked lanes are not touched.
            unsafe {
                let p = c.add((16 * v + j) * cs);
                let x = if accumulate {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(mask, p), x)
                } else {
                    x
                };
                _mm512_mask_storeu_ps(p, mask, x);
            }
        }
    }
}
