//! The legacy 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
//!
//! Dequantization follows ggml's `dequantize_row_*` (and so `gguf.quants`) bit for bit.
//! Quantization exists for Q8_0 and Q4_0 only and follows `gguf.quants.Q8_0/Q4_0`, which in
//! turn mirror ggml's `quantize_row_*_ref`. One documented difference from the C code: for a
//! block whose values are all zero the Python (and this) Q4_0 takes the sign of its zero `d`
//! from the block's first value, C always stores −0.

use super::super::blocks::{
    BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK4_0, QK5_0, QK8_0,
};
use super::{f16_to_f32, f32_to_f16, for_each_block, for_each_block_mut};

/// One Q4_0 block: `y = d · (q − 8)`.
#[inline(never)]
pub fn dequantize_block_q4_0(b: &BlockQ4_0, y: &mut [f32; 32]) {
    let d = f16_to_f32(b.d);
    let (lo, hi) = y.split_at_mut(16);
    for j in 0..16 {
        let q = b.qs[j];
        lo[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
        hi[j] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// One Q4_1 block: `y = d · q + m`.
#[inline(never)]
pub fn dequantize_block_q4_1(b: &BlockQ4_1, y: &mut [f32; 32]) {
    let d = f16_to_f32(b.d);
    let m = f16_to_f32(b.m);
    let (lo, hi) = y.split_at_mut(16);
    for j in 0..16 {
        let q = b.qs[j];
        lo[j] = (q & 0x0f) as f32 * d + m;
        hi[j] = (q >> 4) as f32 * d + m;
    }
}

/// One Q5_0 block: `y = d · (q − 16)`, bit 4 of q from `qh`.
#[inline(never)]
pub fn dequantize_block_q5_0(b: &BlockQ5_0, y: &mut [f32; 32]) {
    let d = f16_to_f32(b.d);
    let qh = u32::from_le_bytes(b.qh);
    let (lo, hi) = y.split_at_mut(16);
    for j in 0..16 {
        let q = b.qs[j] as i32;
        // Bit j (j + 16) of qh is bit 4 of element j (j + 16). Masks, not variable shifts,
        // so the loop vectorizes without per-lane shift instructions.
        let h0 = if qh & (1 << j) != 0 { 16 } else { 0 };
        let h1 = if qh & (1 << (j + 16)) != 0 { 16 } else { 0 };
        lo[j] = (((q & 0x0f) | h0) - 16) as f32 * d;
        hi[j] = (((q >> 4) | h1) - 16) as f32 * d;
    }
}

/// One Q5_1 block: `y = d · q + m`, bit 4 of q from `qh`.
#[inline(never)]
pub fn dequantize_block_q5_1(b: &BlockQ5_1, y: &mut [f32; 32]) {
    let d = f16_to_f32(b.d);
    let m = f16_to_f32(b.m);
    let qh = u32::from_le_bytes(b.qh);
    let (lo, hi) = y.split_at_mut(16);
    for j in 0..16 {
        let q = b.qs[j] as i32;
        let h0 = if qh & (1 << j) != 0 { 16 } else { 0 };
        let h1 = if qh & (1 << (j + 16)) != 0 { 16 } else { 0 };
        lo[j] = ((q & 0x0f) | h0) as f32 * d + m;
        hi[j] = ((q >> 4) | h1) as f32 * d + m;
    }
}

/// One Q8_0 block: `y = d · q`.
#[inline(never)]
pub fn dequantize_block_q8_0(b: &BlockQ8_0, y: &mut [f32; 32]) {
    let d = f16_to_f32(b.d);
    for (y, &q) in y.iter_mut().zip(&b.qs) {
        *y = q as f32 * d;
    }
}

macro_rules! row_fn {
    ($(#[$doc:meta])* $name:ident, $block:ident, $f:ident) => {
        $(#[$doc])*
        pub fn $name(src: &[u8], dst: &mut [f32]) {
            for_each_block::<{ $block::SIZE }, { $block::QK }>(src, dst, |b, y| {
                $f(&$block::from_bytes(b), y)
            });
        }
    };
}

row_fn!(/// Q4_0 row → f32.
    dequantize_row_q4_0, BlockQ4_0, dequantize_block_q4_0);
row_fn!(/// Q4_1 row → f32.
    dequantize_row_q4_1, BlockQ4_1, dequantize_block_q4_1);
row_fn!(/// Q5_0 row → f32.
    dequantize_row_q5_0, BlockQ5_0, dequantize_block_q5_0);
row_fn!(/// Q5_1 row → f32.
    dequantize_row_q5_1, BlockQ5_1, dequantize_block_q5_1);
row_fn!(/// Q8_0 row → f32.
    dequantize_row_q8_0, BlockQ8_0, dequantize_block_q8_0);

/// Quantizes one Q8_0 block: `d = max|x| / 127`, `q = round(x / d)` (half away from zero).
pub fn quantize_block_q8_0(x: &[f32; QK8_0]) -> BlockQ8_0 {
    let amax = x
        .iter()
        .fold(0.0f32, |a, &v| if a > v.abs() { a } else { v.abs() });
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    BlockQ8_0 {
        d: f32_to_f16(d),
        qs: x.map(|v| {
            // x·id is non-finite only when 1/d overflowed (|max| < ~4e-37); numpy and C on
            // x86 then store 0, so do we (d rounds to 0 in f16 there anyway).
            let r = (v * id).round();
            if r.is_finite() {
                r as i8
            } else {
                0
            }
        }),
    }
}

/// Quantizes one Q4_0 block: the value of largest magnitude (first one on ties) maps to −8,
/// `q = min(15, trunc(x / d + 8.5))`.
pub fn quantize_block_q4_0(x: &[f32; QK4_0]) -> BlockQ4_0 {
    // numpy's argmax over |x|: the first index of the largest magnitude (index 0 if all zero).
    let mut amax = x[0].abs();
    let mut max = x[0];
    for &v in &x[1..] {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    // Non-finite (1/d overflowed, |max| < ~3e-38) → 0, as numpy and C on x86.
    let q = |v: f32| {
        let t = v * id + 8.5;
        if t.is_finite() {
            (t as u8).min(15)
        } else {
            0
        }
    };
    BlockQ4_0 {
        d: f32_to_f16(d),
        qs: std::array::from_fn(|j| q(x[j]) | (q(x[j + 16]) << 4)),
    }
}

/// Quantizes one Q5_0 block as ggml's `quantize_row_q5_0_ref`: `d = max / −16` (max = the
/// value of largest magnitude), `q = min(31, trunc(x/d + 16.5))`, bit 4 into `qh`.
pub fn quantize_block_q5_0(x: &[f32; QK5_0]) -> BlockQ5_0 {
    let mut amax = x[0].abs();
    let mut max = x[0];
    for &v in &x[1..] {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = |v: f32| {
        let t = v * id + 16.5;
        if t.is_finite() {
            (t as u8).min(31)
        } else {
            0
        }
    };
    let mut qh = 0u32;
    let mut qs = [0u8; 16];
    for j in 0..16 {
        let (a, b) = (q(x[j]), q(x[j + 16]));
        qs[j] = (a & 0x0f) | ((b & 0x0f) << 4);
        qh |= ((a as u32 & 0x10) >> 4) << j;
        qh |= ((b as u32 & 0x10) >> 4) << (j + 16);
    }
    BlockQ5_0 {
        d: f32_to_f16(d),
        qh: qh.to_le_bytes(),
        qs,
    }
}

/// f32 → Q5_0 row.
pub fn quantize_row_q5_0(src: &[f32], dst: &mut [u8]) {
    for_each_block_mut(src, dst, |x, b| *b = quantize_block_q5_0(x).to_bytes());
}

/// f32 → Q8_0 row.
pub fn quantize_row_q8_0(src: &[f32], dst: &mut [u8]) {
    for_each_block_mut(src, dst, |x, b| *b = quantize_block_q8_0(x).to_bytes());
}

/// f32 → Q4_0 row.
pub fn quantize_row_q4_0(src: &[f32], dst: &mut [u8]) {
    for_each_block_mut(src, dst, |x, b| *b = quantize_block_q4_0(x).to_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_hand_example() {
        let mut x = [0.0f32; 32];
        x[3] = -2.0; // largest magnitude: d = -2 / -8 = 0.25
        x[20] = 1.0;
        x[7] = 0.3;
        let b = quantize_block_q4_0(&x);
        assert_eq!(f16_to_f32(b.d), 0.25);
        let mut y = [0.0; 32];
        dequantize_block_q4_0(&b, &mut y);
        assert_eq!(y[3], -2.0);
        assert_eq!(y[20], 1.0);
        assert_eq!(y[7], 0.25);
        assert_eq!(y[0], 0.0);
    }

    #[test]
    fn q8_0_rounds_half_away_from_zero() {
        let mut x = [0.0f32; 32];
        x[0] = 127.0; // d = 1
        x[1] = 2.5;
        x[2] = -2.5;
        let b = quantize_block_q8_0(&x);
        assert_eq!((b.qs[0], b.qs[1], b.qs[2]), (127, 3, -3));
    }

    #[test]
    fn q5_0_round_trips_within_a_step() {
        // Half a step, except the far extreme (clipped to 15 steps, as in ggml).
        let x: [f32; 32] = std::array::from_fn(|i| ((i * 37 % 29) as f32 - 14.0) / 7.0);
        let b = quantize_block_q5_0(&x);
        let mut y = [0.0; 32];
        dequantize_block_q5_0(&b, &mut y);
        let d = f16_to_f32(b.d).abs();
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= d + 1e-6, "{a} vs {b}");
        }
    }
}
