//! F32, F16 and BF16 rows, and the scalar half-precision conversions used by every block
//! format's scale fields.
//!
//! f16 → f32 is written branch-free (selects, no lookup table) so row loops vectorize; it is
//! exact for every input and keeps NaN payloads (no quieting), like numpy's software path.
//! f32 → f16 rounds to nearest even (the `half` crate, as numpy's `astype(float16)`);
//! f32 → bf16 is ggml's `ggml_compute_fp32_to_bf16` (NaN forced quiet, else round to nearest
//! even), bit-exact with `gguf.quants.BF16`.

use super::{for_each_block, for_each_block_mut};

/// Exact IEEE binary16 (raw bits) → f32.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff; // exponent and mantissa
    let exp = em & 0x7c00;
    // Normal: move into place and re-bias the exponent from 15 to 127.
    let normal = (em << 13) + ((127 - 15) << 23);
    // Infinity / NaN: exponent all ones, mantissa (payload) kept.
    let inf_nan = (em << 13) | 0x7f80_0000;
    // Zero / subnormal: mantissa · 2⁻²⁴, exact in f32.
    let sub = ((em as f32) * f32::from_bits(0x3380_0000)).to_bits();
    let bits = if exp == 0x7c00 {
        inf_nan
    } else if exp == 0 {
        sub
    } else {
        normal
    };
    f32::from_bits(sign | bits)
}

/// f32 → IEEE binary16 bits, round to nearest even; overflow gives ±infinity.
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// Exact bfloat16 (raw bits) → f32.
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// f32 → bfloat16 bits as ggml: NaN becomes a quiet NaN, everything else rounds to nearest
/// even (overflow gives ±infinity).
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    // Cannot overflow: the largest non-NaN input is 0xff80_0000.
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

/// F32 row: little-endian bytes → f32.
pub fn dequantize_row_f32(src: &[u8], dst: &mut [f32]) {
    for_each_block::<4, 1>(src, dst, |b, y| y[0] = f32::from_le_bytes(*b));
}

/// F16 row → f32.
pub fn dequantize_row_f16(src: &[u8], dst: &mut [f32]) {
    // 16 elements at a time: gather the halves as u16 first, so both steps vectorize.
    for_each_block::<32, 16>(src, dst, |b, y| {
        let h: [u16; 16] = std::array::from_fn(|i| u16::from_le_bytes([b[2 * i], b[2 * i + 1]]));
        for (y, h) in y.iter_mut().zip(h) {
            *y = f16_to_f32(h);
        }
    });
    let done = (src.len() / 32).min(dst.len() / 16) * 16;
    for (y, b) in dst[done..].iter_mut().zip(src[2 * done..].chunks_exact(2)) {
        *y = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

/// BF16 row → f32.
pub fn dequantize_row_bf16(src: &[u8], dst: &mut [f32]) {
    for_each_block::<2, 1>(src, dst, |b, y| y[0] = bf16_to_f32(u16::from_le_bytes(*b)));
}

/// f32 → F32 row (little-endian bytes).
pub fn quantize_row_f32(src: &[f32], dst: &mut [u8]) {
    for_each_block_mut::<1, 4>(src, dst, |x, b| *b = x[0].to_le_bytes());
}

/// f32 → F16 row.
pub fn quantize_row_f16(src: &[f32], dst: &mut [u8]) {
    for_each_block_mut::<1, 2>(src, dst, |x, b| *b = f32_to_f16(x[0]).to_le_bytes());
}

/// f32 → BF16 row.
pub fn quantize_row_bf16(src: &[f32], dst: &mut [u8]) {
    for_each_block_mut::<1, 2>(src, dst, |x, b| *b = f32_to_bf16(x[0]).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_is_exact_for_all_inputs() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            let got = f16_to_f32(h);
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
                // Payload kept verbatim (no quiet bit forced).
                assert_eq!(
                    got.to_bits() & 0x807f_ffff,
                    ((h as u32 & 0x8000) << 16) | ((h as u32 & 0x3ff) << 13)
                );
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}");
            }
        }
    }

    #[test]
    fn f16_round_trip_is_identity_on_non_nan() {
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if !f.is_nan() {
                assert_eq!(f32_to_f16(f), h, "{h:#06x}");
            }
        }
    }

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // Ties to even: 0x3f80_8000 is halfway between 0x3f80 and 0x3f81 → even 0x3f80.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80); // overflow → inf
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0); // sNaN → qNaN
        for h in 0..=u16::MAX {
            let f = bf16_to_f32(h);
            if !f.is_nan() {
                assert_eq!(f32_to_bf16(f), h);
            }
        }
    }
}
