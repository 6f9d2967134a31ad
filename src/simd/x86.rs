//! x86-64 kernels: AVX2 + FMA, AVX-512 and AVX-512 VNNI. All `unsafe` of the x86 vector
//! code is in this file.
//!
//! Every `#[target_feature]` function here is private and reached only through a table built
//! by [`kernels`], which returns a table only when [`supported`] saw every feature the
//! table's functions enable; the safe wrappers rely on that (their `SAFETY` notes say so).
//! Slice bounds are checked by the callers in `simd/mod.rs` before any pointer is formed.

use std::arch::x86_64::*;

use super::gemv_i8::QuantTokens;
use super::{ColSource, I8Lanes, I8Rows, Int8Layout, Kernels, Level, Out, PackTarget, Sgemm};
use crate::quant::GgmlType;

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

// ------------------------------------------------------------------------------------------
// Safe entry points (placed only in tables whose features were detected).

fn sgemm_avx512(g: &Sgemm<'_>, out: &mut Out<'_>) {
    // SAFETY: only reachable through a table built after `supported` saw AVX-512 F/BW/VL/DQ,
    // AVX2, FMA; bounds were checked by `Kernels::sgemm`.
    unsafe { sgemm512(g, out) }
}

fn sgemm_avx2(g: &Sgemm<'_>, out: &mut Out<'_>) {
    // SAFETY: table built after AVX2/FMA were detected; bounds checked by `Kernels::sgemm`.
    unsafe { sgemm256(g, out) }
}

fn i8gemm_vnni(r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
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

fn i8gemm_avx2(r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
    assert!(
        !r.unsigned && !l.unsigned,
        "the AVX2 int8 kernel takes i8 operands"
    );
    // SAFETY: table built after AVX2 was detected; bounds checked by `Kernels::i8gemm`
    // (lane block of 16 lanes).
    unsafe { i8avx2(r, l, n, out) }
}

fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: table built after AVX-512 F was detected; equal lengths checked by the caller.
    unsafe { dot512(a, b) }
}

fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: table built after AVX2/FMA were detected; equal lengths checked by the caller.
    unsafe { dot256(a, b) }
}

fn dequant_avx512(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    // SAFETY: table built after AVX-512 was detected; `Kernels::dequantize_row` checked that
    // `src` holds exactly the blocks of `dst`.
    unsafe { dequant512(ty, src, dst) }
}

fn dequant_avx2(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    // SAFETY: table built after AVX2/F16C were detected; row geometry checked by the caller.
    unsafe { dequant256(ty, src, dst) }
}

fn peak_avx512(iters: usize) -> f32 {
    // SAFETY: table built after AVX-512 F was detected.
    unsafe { peak512(iters) }
}

fn peak_avx2(iters: usize) -> f32 {
    // SAFETY: table built after AVX2/FMA were detected.
    unsafe { peak256(iters) }
}

/// Twelve independent FMA chains (two FMA ports × four cycles of latency need eight).
macro_rules! peak_body {
    ($t:ty, $set1:ident, $fma:ident, $add:ident, $iters:ident) => {{
        let b = $set1(std::hint::black_box(0.999_999));
        let c = $set1(std::hint::black_box(1e-7));
        let (mut a0, mut a1, mut a2, mut a3) = ($set1(1.0), $set1(1.1), $set1(1.2), $set1(1.3));
        let (mut a4, mut a5, mut a6, mut a7) = ($set1(1.4), $set1(1.5), $set1(1.6), $set1(1.7));
        let (mut a8, mut a9, mut a10, mut a11) = ($set1(1.8), $set1(1.9), $set1(2.0), $set1(2.1));
        for _ in 0..$iters {
            a0 = $fma(a0, b, c);
            a1 = $fma(a1, b, c);
            a2 = $fma(a2, b, c);
            a3 = $fma(a3, b, c);
            a4 = $fma(a4, b, c);
            a5 = $fma(a5, b, c);
            a6 = $fma(a6, b, c);
            a7 = $fma(a7, b, c);
            a8 = $fma(a8, b, c);
            a9 = $fma(a9, b, c);
            a10 = $fma(a10, b, c);
            a11 = $fma(a11, b, c);
        }
        let s = $add(
            $add($add(a0, a1), $add(a2, a3)),
            $add($add(a4, a5), $add(a6, a7)),
        );
        let s: $t = $add(s, $add($add(a8, a9), $add(a10, a11)));
        s
    }};
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn peak512(iters: usize) -> f32 {
    let s = peak_body!(
        __m512,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps,
        iters
    );
    _mm512_reduce_add_ps(s)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn peak256(iters: usize) -> f32 {
    let s = peak_body!(
        __m256,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        iters
    );
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
    lanes.iter().sum()
}

/// Hints that the cache line holding `p` will be read soon (baseline SSE on x86-64).
#[inline(always)]
pub(super) fn prefetch(p: *const u8) {
    // SAFETY: `prefetcht0` only hints the cache; it never faults or reads into a register,
    // whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
}

fn gemv_avx512(ty: GgmlType, w: &[u8], cols: usize, x: &[f32], t: usize, y: &mut [f32]) -> bool {
    // SAFETY: table built after AVX-512 was detected; sizes checked by `Kernels::gemv`.
    unsafe { gemv512(ty, w, cols, x, t, y) }
}

fn gemv_avx2(ty: GgmlType, w: &[u8], cols: usize, x: &[f32], t: usize, y: &mut [f32]) -> bool {
    // SAFETY: table built after AVX2 was detected; sizes checked by `Kernels::gemv`.
    unsafe { gemv256(ty, w, cols, x, t, y) }
}

fn gemv_i8_vnni(
    ty: GgmlType,
    w: &[u8],
    cols: usize,
    x: &QuantTokens<'_>,
    t: usize,
    y: &mut [f32],
) -> bool {
    // SAFETY: table built after AVX-512 VNNI was detected; sizes checked by
    // `Kernels::gemv_i8`.
    unsafe { by_block_and_tokens!(ty, t, gemv_i8_vnni_rows(w, cols, x, y)) }
}

fn gemv_i8_avx2(
    ty: GgmlType,
    w: &[u8],
    cols: usize,
    x: &QuantTokens<'_>,
    t: usize,
    y: &mut [f32],
) -> bool {
    // SAFETY: table built after AVX2 was detected; sizes checked by `Kernels::gemv_i8`.
    unsafe { by_block_and_tokens!(ty, t, gemv_i8_avx2_rows(w, cols, x, y)) }
}

/// The unsigned and signed operands of one block's integer dot (see [`super::gemv_i8`]):
/// Q8_0 (`BYTES` 34) gives (|w|, x with w's sign), Q4_0 (18) (the nibbles, x) and the lane
/// correction −8·Σx in lane 0.
#[inline]
#[target_feature(enable = "avx2")]
fn i8_block_operands<const BYTES: usize>(
    blk: &[u8],
    x: &[u8; 32],
    sum: i32,
) -> (__m256i, __m256i, __m256i) {
    // SAFETY: `x` is 32 readable bytes.
    let xv = unsafe { _mm256_loadu_si256(x.as_ptr().cast()) };
    let (lo, hi) = block_bytes::<BYTES>(blk);
    if BYTES == 34 {
        let wv = _mm256_set_m128i(hi, lo);
        (
            _mm256_abs_epi8(wv),
            _mm256_sign_epi8(xv, wv),
            _mm256_setzero_si256(),
        )
    } else {
        let low = _mm_set1_epi8(0x0f);
        let nib = _mm256_set_m128i(
            _mm_and_si128(_mm_srli_epi16(lo, 4), low),
            _mm_and_si128(lo, low),
        );
        (nib, xv, _mm256_zextsi128_si256(_mm_cvtsi32_si128(-8 * sum)))
    }
}

/// The f32 accumulation of one block's integer lanes: `acc += lanes · s` (multiply, then
/// add, as the scalar twin).
#[inline]
#[target_feature(enable = "avx2")]
fn i8_block_accumulate(acc: __m256, lanes: __m256i, s: f32) -> __m256 {
    _mm256_add_ps(
        acc,
        _mm256_mul_ps(_mm256_cvtepi32_ps(lanes), _mm256_set1_ps(s)),
    )
}

/// The 8-lane fold of [`super::gemv_i8::fold8`].
#[inline]
#[target_feature(enable = "avx2")]
fn fold8_256(a: __m256) -> f32 {
    let m4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let m2 = _mm_add_ps(m4, _mm_movehl_ps(m4, m4));
    _mm_cvtss_f32(_mm_add_ss(m2, _mm_shuffle_ps::<0b01>(m2, m2)))
}

macro_rules! gemv_i8_rows {
    ($name:ident, $features:literal, $dot:expr) => {
        /// [`super::gemv_i8`]'s arithmetic in AVX2 registers with this level's integer dot;
        /// the integer lanes and the float steps are the scalar twin's, so are its bits.
        ///
        /// # Safety
        /// The features available; sizes as checked by `Kernels::gemv_i8`.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<const BYTES: usize, const T: usize>(
            w: &[u8],
            cols: usize,
            x: &QuantTokens<'_>,
            y: &mut [f32],
        ) {
            super::gemv_i8::rows_with::<__m256, T>(
                w,
                BYTES,
                cols,
                x,
                y,
                _mm256_setzero_ps(),
                |blk| block_scale(blk),
                |a, blk, dw, (xq, dx, sum)| {
                    let (u, s, init) = i8_block_operands::<BYTES>(blk, xq, sum);
                    i8_block_accumulate(a, $dot(init, u, s), dw * dx)
                },
                |even, odd| fold8_256(_mm256_add_ps(even, odd)),
            )
        }
    };
}

gemv_i8_rows!(
    gemv_i8_vnni_rows,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    |init, u, s| _mm256_dpbusd_epi32(init, u, s)
);
gemv_i8_rows!(gemv_i8_avx2_rows, "avx2,fma,f16c", |init, u, s| {
    _mm256_add_epi32(
        init,
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)),
    )
});

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn gemv512(ty: GgmlType, w: &[u8], cols: usize, x: &[f32], t: usize, y: &mut [f32]) -> bool {
    // SAFETY: AVX-512 available (caller); sizes checked by `Kernels::gemv`.
    unsafe { by_block_and_tokens!(ty, t, gemv_rows512(w, cols, x, y)) }
}

/// [`super::gemv`]'s arithmetic in AVX-512 registers, operation for operation (multiply,
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
            super::prefetch(w, at + super::gemv::PREFETCH_AHEAD);
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
            super::prefetch(w, at + super::gemv::PREFETCH_AHEAD);
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

fn pack_cols_avx512(lay: Int8Layout, src: ColSource<'_>, dst: PackTarget<'_>) {
    // SAFETY: table built after AVX-512 was detected; sizes checked by `Kernels::pack_cols`.
    unsafe { pack_cols512(lay, src, dst) }
}

fn pack_cols_avx2(lay: Int8Layout, src: ColSource<'_>, dst: PackTarget<'_>) {
    // SAFETY: table built after AVX2 was detected; sizes checked by `Kernels::pack_cols`.
    unsafe { pack_cols256(lay, src, dst) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn pack_cols512(lay: Int8Layout, src: ColSource<'_>, dst: PackTarget<'_>) {
    super::pack_cols_body(lay, src, dst)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn pack_cols256(lay: Int8Layout, src: ColSource<'_>, dst: PackTarget<'_>) {
    super::pack_cols_body(lay, src, dst)
}

// ------------------------------------------------------------------------------------------
// Row interleave, AVX-512: 16 × 16 blocks through `transpose16`.

fn interleave_avx512(x: &[f32], rows: usize, ldx: usize, dst: &mut [f32], width: usize) {
    // SAFETY: table built after AVX-512 was detected; `Kernels::interleave_rows` checked the
    // shape and that every row j < rows holds the dst.len() / width columns.
    unsafe { interleave512(x, rows, ldx, dst, width) }
}

/// # Safety
/// AVX-512 available; `rows ≤ width`, `dst.len()` a multiple of `width`, and
/// `x[j·ldx .. j·ldx + dst.len() / width]` inside `x` for every `j < rows`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn interleave512(x: &[f32], rows: usize, ldx: usize, dst: &mut [f32], width: usize) {
    let cols = dst.len() / width;
    let (xp, dp) = (x.as_ptr(), dst.as_mut_ptr());
    for c0 in (0..cols).step_by(16) {
        let cw = (cols - c0).min(16);
        let mask = mask16(cw);
        for j0 in (0..width).step_by(16) {
            // A width that is not a multiple of 16 (the register tiles' packed rows) ends
            // with a part block.
            let store = mask16(width - j0);
            let r: [__m512; 16] = std::array::from_fn(|i| {
                let at = (j0 + i) * ldx + c0;
                if j0 + i >= rows {
                    _mm512_setzero_ps()
                } else if cw == 16 {
                    // SAFETY: row j0 + i < rows holds columns c0 .. c0 + 16.
                    unsafe { _mm512_loadu_ps(xp.add(at)) }
                } else {
                    // SAFETY: as above for the cw columns the mask lets through.
                    unsafe { _mm512_maskz_loadu_ps(mask, xp.add(at)) }
                }
            });
            for (cc, &v) in transpose16(&r).iter().enumerate().take(cw) {
                // SAFETY: column c0 + cc < cols; its values j0 .. min(j0 + 16, width) are in
                // dst, and the mask stores no others.
                unsafe { _mm512_mask_storeu_ps(dp.add((c0 + cc) * width + j0), store, v) }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// f32 micro-gemm, AVX-512: tiles of up to 12 rows × 32 lanes (24 zmm accumulators).

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

#[inline(always)]
fn mask16(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

macro_rules! dispatch_mr {
    ($f:ident, $nv:ident, $mr:expr, $args:tt, [$($n:literal)*]) => {
        match $mr {
            $($n => $f::<$n, $nv> $args,)*
            _ => unreachable!(),
        }
    };
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

/// `out[j]` lane `i` = `rows[i]` lane `j`, for up to 16 rows of 16 lanes (rows past `MR`
/// read as zero): in-lane unpacks of pairs of floats, then of pairs of pairs, then two
/// rounds of 128-bit block shuffles.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16<const MR: usize>(rows: &[__m512; MR]) -> [__m512; 16] {
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
unsafe fn store_lanes512<const MR: usize, const NV: usize>(
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

// ------------------------------------------------------------------------------------------
// f32 micro-gemm, AVX2: tiles of up to 6 rows × 16 lanes (12 ymm accumulators).

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

// ------------------------------------------------------------------------------------------
// int8 kernel, AVX-512 VNNI: rows × 32 lanes, `vpdpbusd` over 4-byte groups.

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

// ------------------------------------------------------------------------------------------
// int8 kernel, AVX2: rows × 16 lanes, i8·i8 through `vpsignb` + `vpmaddubsw` + `vpmaddwd`.

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

// ------------------------------------------------------------------------------------------
// Dot products.

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

// ------------------------------------------------------------------------------------------
// Dequantization of Q8_0 and Q4_0 rows (other types: the reference kernels).

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

/// The raw quant bytes of a Q8_0 (`BYTES` = 34) block as two vectors (values 0..16 and
/// 16..32), or of a Q4_0 (18) block as one (its 16 bytes of nibble pairs; the second vector
/// is zero).
#[inline]
#[target_feature(enable = "sse2")]
fn block_bytes<const BYTES: usize>(blk: &[u8]) -> (__m128i, __m128i) {
    let load = |at: usize| {
        let b: &[u8; 16] = match blk[at..at + 16].try_into() {
            Ok(b) => b,
            Err(_) => unreachable!(),
        };
        // SAFETY: `b` is 16 readable bytes.
        unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
    };
    if BYTES == 34 {
        (load(2), load(18))
    } else {
        (load(2), _mm_setzero_si128())
    }
}

/// The 32 signed values of a Q8_0 (`BYTES` = 34) or Q4_0 (18) block as i8 vectors of values
/// 0..16 and 16..32 (Q4_0: the low and the high nibbles, minus 8).
#[inline]
#[target_feature(enable = "sse2")]
fn block_i8<const BYTES: usize>(blk: &[u8]) -> (__m128i, __m128i) {
    let (q, q1) = block_bytes::<BYTES>(blk);
    if BYTES == 34 {
        (q, q1)
    } else {
        let (low, eight) = (_mm_set1_epi8(0x0f), _mm_set1_epi8(8));
        (
            _mm_sub_epi8(_mm_and_si128(q, low), eight),
            _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), low), eight),
        )
    }
}

/// The binary16 scale at the start of a block as f32, by F16C: exact, as the reference
/// conversion (a signalling NaN comes back quiet; its payload is kept). The conversion
/// reads its 8 bytes straight from memory: built from a register, LLVM inserts the 16 bits
/// into whatever register is at hand, and the merge made each block wait for the previous
/// block's accumulation (3× slower GEMVs).
#[inline]
#[target_feature(enable = "f16c")]
fn block_scale(blk: &[u8]) -> f32 {
    let b: &[u8; 8] = match blk[..8].try_into() {
        Ok(b) => b,
        Err(_) => unreachable!(),
    };
    // SAFETY: `b` is 8 readable bytes; the scale is the first two.
    _mm_cvtss_f32(_mm_cvtph_ps(unsafe { _mm_loadl_epi64(b.as_ptr().cast()) }))
}
