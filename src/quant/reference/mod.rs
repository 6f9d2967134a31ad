//! The scalar reference: dequantization, quantization and dot products, one row at a time.
//!
//! This is the truth every faster kernel (the per-ISA SIMD files) is tested against, so it is
//! never deleted and never "optimised" at the cost of clarity. It is still written for speed
//! where that costs nothing: block by block, allocation-free, with fixed-size loops the
//! compiler can vectorize, because until a SIMD twin exists this *is* the hot path.
//! The per-block dequantizers are `#[inline(never)]` on purpose: inlined into the row loop,
//! LLVM vectorizes *across* blocks with byte-by-byte gathers (2–3× slower on x86-64 SSE2);
//! kept out of line, each block's own 16/32-wide loops vectorize.
//!
//! - [`float`]: F32, F16, BF16 rows (and the scalar f16/bf16 conversions).
//! - [`legacy`]: the 32-element formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//! - [`kquants`]: dequantization of the 256-element K-quants Q2_K … Q6_K.
//! - [`kquantize`]: the K-quant quantizers Q4_K and Q6_K (llama.cpp's reference algorithms).
//! - [`dot`]: quantized row · f32 vector.
//!
//! Numerics follow ggml's C reference (`ggml-quants.c`) and the Python `gguf` package
//! operation by operation (same order of f32 operations, no fused multiply-add), so the
//! dequantizers and the Q8_0/Q4_0/F16/BF16 quantizers are bit-exact with `gguf.quants`.
//!
//! Row functions share one contract: `src` and `dst` hold the same whole number of blocks (the
//! checked wrappers in [`crate::quant`] guarantee it). Given anything else they process the
//! whole blocks both sides have and leave the rest untouched — they never panic.

pub mod dot;
pub mod float;
pub mod kquantize;
pub mod kquants;
pub mod legacy;

pub use float::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};

use super::GgmlType;

/// Dequantizes a row of packed blocks into f32.
pub type DequantizeRowFn = fn(src: &[u8], dst: &mut [f32]);
/// Quantizes f32 values into packed blocks.
pub type QuantizeRowFn = fn(src: &[f32], dst: &mut [u8]);
/// Dot product of a packed row with an f32 vector of the same element count.
pub type DotRowFn = fn(row: &[u8], x: &[f32]) -> f32;

/// The reference dequantizer for `ty`, or `None` if the type holds no weights we can read.
pub fn dequantize_fn(ty: GgmlType) -> Option<DequantizeRowFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => float::dequantize_row_f32,
        F16 => float::dequantize_row_f16,
        BF16 => float::dequantize_row_bf16,
        Q4_0 => legacy::dequantize_row_q4_0,
        Q4_1 => legacy::dequantize_row_q4_1,
        Q5_0 => legacy::dequantize_row_q5_0,
        Q5_1 => legacy::dequantize_row_q5_1,
        Q8_0 => legacy::dequantize_row_q8_0,
        Q2_K => kquants::dequantize_row_q2_k,
        Q3_K => kquants::dequantize_row_q3_k,
        Q4_K => kquants::dequantize_row_q4_k,
        Q5_K => kquants::dequantize_row_q5_k,
        Q6_K => kquants::dequantize_row_q6_k,
        Q8_1 | Q8_K | I8 | I16 | I32 | I64 | F64 => return None,
    })
}

/// The reference quantizer for `ty`, or `None` if this crate cannot produce the type.
pub fn quantize_fn(ty: GgmlType) -> Option<QuantizeRowFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => float::quantize_row_f32,
        F16 => float::quantize_row_f16,
        BF16 => float::quantize_row_bf16,
        Q8_0 => legacy::quantize_row_q8_0,
        Q4_0 => legacy::quantize_row_q4_0,
        Q5_0 => legacy::quantize_row_q5_0,
        Q4_K => kquantize::quantize_row_q4_k,
        Q6_K => kquantize::quantize_row_q6_k,
        _ => return None,
    })
}

/// The reference dot product for `ty`; defined exactly where [`dequantize_fn`] is.
pub fn dot_fn(ty: GgmlType) -> Option<DotRowFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => dot::vec_dot_f32,
        F16 => dot::vec_dot_f16,
        BF16 => dot::vec_dot_bf16,
        Q4_0 => dot::vec_dot_q4_0,
        Q4_1 => dot::vec_dot_q4_1,
        Q5_0 => dot::vec_dot_q5_0,
        Q5_1 => dot::vec_dot_q5_1,
        Q8_0 => dot::vec_dot_q8_0,
        Q2_K => dot::vec_dot_q2_k,
        Q3_K => dot::vec_dot_q3_k,
        Q4_K => dot::vec_dot_q4_k,
        Q5_K => dot::vec_dot_q5_k,
        Q6_K => dot::vec_dot_q6_k,
        Q8_1 | Q8_K | I8 | I16 | I32 | I64 | F64 => return None,
    })
}

/// Calls `f` on each pair of a `BS`-byte block of `src` and the `QK` outputs it decodes to,
/// over the whole blocks both slices hold.
#[inline(always)]
pub(crate) fn for_each_block<const BS: usize, const QK: usize>(
    src: &[u8],
    dst: &mut [f32],
    mut f: impl FnMut(&[u8; BS], &mut [f32; QK]),
) {
    for (b, y) in src.chunks_exact(BS).zip(dst.chunks_exact_mut(QK)) {
        // Both conversions always succeed: chunks_exact yields exactly BS / QK items.
        if let (Ok(b), Ok(y)) = (b.try_into(), y.try_into()) {
            f(b, y);
        }
    }
}

/// The encoding direction of [`for_each_block`]: `QK` inputs into one `BS`-byte block.
#[inline(always)]
pub(crate) fn for_each_block_mut<const QK: usize, const BS: usize>(
    src: &[f32],
    dst: &mut [u8],
    mut f: impl FnMut(&[f32; QK], &mut [u8; BS]),
) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BS)) {
        if let (Ok(x), Ok(b)) = (x.try_into(), b.try_into()) {
            f(x, b);
        }
    }
}

/// Round to nearest, ties to even, as llama.cpp's `nearest_int`: adding 1.5·2²³ leaves the
/// rounded integer in the low mantissa bits. Exact for |v| ≤ 2²²; garbage (but no panic)
/// beyond, as in C.
#[inline(always)]
pub fn nearest_int(v: f32) -> i32 {
    let t = (v + 12_582_912.0f32).to_bits() as i32;
    (t & 0x007f_ffff) - 0x0040_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        for (v, want) in [
            (0.0f32, 0),
            (-0.0, 0),
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.49, -2),
            (3.7, 4),
            (-3.7, -4),
            (4_194_303.0, 4_194_303),
            (-4_194_303.0, -4_194_303),
        ] {
            assert_eq!(nearest_int(v), want, "{v}");
        }
    }

    #[test]
    fn tables_agree() {
        for ty in GgmlType::ALL {
            assert_eq!(
                dequantize_fn(ty).is_some(),
                ty.is_float_convertible(),
                "{ty}"
            );
            assert_eq!(dot_fn(ty).is_some(), dequantize_fn(ty).is_some(), "{ty}");
            if quantize_fn(ty).is_some() {
                assert!(dequantize_fn(ty).is_some(), "{ty}");
            }
        }
    }
}
