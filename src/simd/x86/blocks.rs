//! Readers of Q8_0 / Q4_0 blocks into SSE registers, shared by the dequantization and both
//! GEMVs: the raw quant bytes, the 32 signed values, the binary16 scale.

use std::arch::x86_64::*;

/// The raw quant bytes of a Q8_0 (`BYTES` = 34) block as two vectors (values 0..16 and
/// 16..32), or of a Q4_0 (18) block as one (its 16 bytes of nibble pairs; the second vector
/// is zero).
#[inline]
#[target_feature(enable = "sse2")]
pub(super) fn block_bytes<const BYTES: usize>(blk: &[u8]) -> (__m128i, __m128i) {
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
pub(super) fn block_i8<const BYTES: usize>(blk: &[u8]) -> (__m128i, __m128i) {
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
pub(super) fn block_scale(blk: &[u8]) -> f32 {
    let b: &[u8; 8] = match blk[..8].try_into() {
        Ok(b) => b,
        Err(_) => unreachable!(),
    };
    // SAFETY: `b` is 8 readable bytes; the scale is the first two.
    _mm_cvtss_f32(_mm_cvtph_ps(unsafe { _mm_loadl_epi64(b.as_ptr().cast()) }))
}
