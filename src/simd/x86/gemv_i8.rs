//! The few-token int8 GEMV ([`crate::simd::gemv_i8`]'s arithmetic in AVX2 registers, with
//! the integer dot of AVX-512 VNNI or of AVX2), bit-identical to its scalar twin.

use std::arch::x86_64::*;

use super::blocks::{block_bytes, block_scale};
use crate::quant::GgmlType;
use crate::simd::gemv_i8::QuantTokens;

pub(super) fn gemv_i8_vnni(
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

pub(super) fn gemv_i8_avx2(
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

/// The unsigned and signed operands of one block's integer dot (see [`crate::simd::gemv_i8`]):
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

/// The 8-lane fold of [`crate::simd::gemv_i8::fold8`].
#[inline]
#[target_feature(enable = "avx2")]
fn fold8_256(a: __m256) -> f32 {
    let m4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let m2 = _mm_add_ps(m4, _mm_movehl_ps(m4, m4));
    _mm_cvtss_f32(_mm_add_ss(m2, _mm_shuffle_ps::<0b01>(m2, m2)))
}

macro_rules! gemv_i8_rows {
    ($name:ident, $features:literal, $dot:expr) => {
        /// [`crate::simd::gemv_i8`]'s arithmetic in AVX2 registers with this level's integer dot;
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
            crate::simd::gemv_i8::rows_with::<__m256, T>(
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
