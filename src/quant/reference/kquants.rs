//! Dequantization of the K-quants (256-element super-blocks): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
//!
//! Each function mirrors ggml's `dequantize_row_*_K`: the same packing, the same f32 operation
//! order (sub-block scale = `d · sc` first, then `scale · q − min`), so the output is bit-exact
//! with ggml and `gguf.quants`. The scale unpackers are shared with the quantizers in
//! [`super::kquantize`].

use super::super::blocks::{BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, K_SCALE_SIZE};
use super::super::types::QK_K;
use super::{f16_to_f32, for_each_block};

/// The 16 signed 6-bit sub-block scales of a Q3_K block (already minus 32).
/// Low nibbles: scale j < 8 in `s[j]` bits 0..4, j ≥ 8 in `s[j − 8]` bits 4..8; high two bits
/// of scale j in `s[8 + j % 4]` at bit 2·(j / 4).
#[inline(always)]
pub fn unpack_q3_k_scales(s: &[u8; 12]) -> [i8; 16] {
    std::array::from_fn(|j| {
        let lo = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
        let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        (lo | (hi << 4)) as i8 - 32
    })
}

/// Scale and min (6 bits each) of sub-block `j` (0..8) of a Q4_K/Q5_K block: ggml's
/// `get_scale_min_k4`. Sub-blocks 0..4 sit in the low 6 bits of bytes 0..4 (scales) and 4..8
/// (mins); 4..8 keep their low 4 bits in bytes 8..12 and their top 2 bits in the spare top
/// bits of bytes 0..8.
#[inline(always)]
pub fn get_scale_min_k4(j: usize, s: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// One Q2_K super-block.
#[inline(never)]
pub fn dequantize_block_q2_k(b: &BlockQ2_K, y: &mut [f32; QK_K]) {
    let d = f16_to_f32(b.d);
    let min = f16_to_f32(b.dmin);
    // Per 128-element half c: element 32k + 16h + l comes from qs[32c + 16h + l] bits 2k..2k+2
    // with scale byte 8c + 2k + h (low nibble: scale, high nibble: min).
    for (c, (yc, qc)) in y
        .chunks_exact_mut(128)
        .zip(b.qs.chunks_exact(32))
        .enumerate()
    {
        for (k, yk) in yc.chunks_exact_mut(32).enumerate() {
            for (h, (yh, qh)) in yk.chunks_exact_mut(16).zip(qc.chunks_exact(16)).enumerate() {
                let sc = b.scales[8 * c + 2 * k + h];
                let dl = d * (sc & 0x0f) as f32;
                let ml = min * (sc >> 4) as f32;
                for (y, &q) in yh.iter_mut().zip(qh) {
                    *y = dl * ((q >> (2 * k)) & 3) as f32 - ml;
                }
            }
        }
    }
}

/// One Q3_K super-block.
#[inline(never)]
pub fn dequantize_block_q3_k(b: &BlockQ3_K, y: &mut [f32; QK_K]) {
    let d_all = f16_to_f32(b.d);
    let scales = unpack_q3_k_scales(&b.scales);
    // As Q2_K for the low two bits; the third bit of element 128c + 32k + 16h + l is bit
    // 4c + k of hmask[16h + l], and a *clear* bit subtracts 4.
    for (c, (yc, qc)) in y
        .chunks_exact_mut(128)
        .zip(b.qs.chunks_exact(32))
        .enumerate()
    {
        for (k, yk) in yc.chunks_exact_mut(32).enumerate() {
            let m = 1u8 << (4 * c + k);
            for (h, ((yh, qh), hm)) in yk
                .chunks_exact_mut(16)
                .zip(qc.chunks_exact(16))
                .zip(b.hmask.chunks_exact(16))
                .enumerate()
            {
                let dl = d_all * scales[8 * c + 2 * k + h] as f32;
                for ((y, &q), &hb) in yh.iter_mut().zip(qh).zip(hm) {
                    let low = ((q >> (2 * k)) & 3) as i32;
                    let sub = if hb & m != 0 { 0 } else { 4 };
                    *y = dl * (low - sub) as f32;
                }
            }
        }
    }
}

/// One Q4_K super-block.
#[inline(never)]
pub fn dequantize_block_q4_k(b: &BlockQ4_K, y: &mut [f32; QK_K]) {
    let d = f16_to_f32(b.d);
    let min = f16_to_f32(b.dmin);
    // 64-element chunk i: low nibbles of qs[32i..32i+32] use sub-block 2i, high nibbles 2i+1.
    for (i, (yi, qi)) in y
        .chunks_exact_mut(64)
        .zip(b.qs.chunks_exact(32))
        .enumerate()
    {
        let (sc1, m1) = get_scale_min_k4(2 * i, &b.scales);
        let (sc2, m2) = get_scale_min_k4(2 * i + 1, &b.scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        let (lo, hi) = yi.split_at_mut(32);
        for l in 0..32 {
            lo[l] = d1 * (qi[l] & 0x0f) as f32 - m1;
            hi[l] = d2 * (qi[l] >> 4) as f32 - m2;
        }
    }
}

/// One Q5_K super-block.
#[inline(never)]
pub fn dequantize_block_q5_k(b: &BlockQ5_K, y: &mut [f32; QK_K]) {
    let d = f16_to_f32(b.d);
    let min = f16_to_f32(b.dmin);
    // As Q4_K; the fifth bit of chunk i comes from qh[l] bit 2i (low half) / 2i+1 (high).
    for (i, (yi, qi)) in y
        .chunks_exact_mut(64)
        .zip(b.qs.chunks_exact(32))
        .enumerate()
    {
        let (sc1, m1) = get_scale_min_k4(2 * i, &b.scales);
        let (sc2, m2) = get_scale_min_k4(2 * i + 1, &b.scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        let (u1, u2) = (1u8 << (2 * i), 2u8 << (2 * i));
        let (lo, hi) = yi.split_at_mut(32);
        for l in 0..32 {
            let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
            lo[l] = d1 * ((qi[l] & 0x0f) + h1) as f32 - m1;
            hi[l] = d2 * ((qi[l] >> 4) + h2) as f32 - m2;
        }
    }
}

/// One Q6_K super-block.
#[inline(never)]
pub fn dequantize_block_q6_k(b: &BlockQ6_K, y: &mut [f32; QK_K]) {
    let d = f16_to_f32(b.d);
    // Per 128-element half c: ql[64c..64c+64], qh[32c..32c+32], scales[8c..8c+8].
    for c in 0..2 {
        let ql = &b.ql[64 * c..64 * c + 64];
        let qh = &b.qh[32 * c..32 * c + 32];
        let sc = &b.scales[8 * c..8 * c + 8];
        let yc = &mut y[128 * c..128 * c + 128];
        for l in 0..32 {
            let is = l / 16;
            let h = qh[l];
            let q1 = ((ql[l] & 0x0f) | ((h & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((h >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i32 - 32;
            yc[l] = d * sc[is] as f32 * q1 as f32;
            yc[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
            yc[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
            yc[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
        }
    }
}

macro_rules! row_fn {
    ($(#[$doc:meta])* $name:ident, $block:ident, $f:ident) => {
        $(#[$doc])*
        pub fn $name(src: &[u8], dst: &mut [f32]) {
            for_each_block::<{ $block::SIZE }, QK_K>(src, dst, |b, y| {
                $f(&$block::from_bytes(b), y)
            });
        }
    };
}

row_fn!(/// Q2_K row → f32.
    dequantize_row_q2_k, BlockQ2_K, dequantize_block_q2_k);
row_fn!(/// Q3_K row → f32.
    dequantize_row_q3_k, BlockQ3_K, dequantize_block_q3_k);
row_fn!(/// Q4_K row → f32.
    dequantize_row_q4_k, BlockQ4_K, dequantize_block_q4_k);
row_fn!(/// Q5_K row → f32.
    dequantize_row_q5_k, BlockQ5_K, dequantize_block_q5_k);
row_fn!(/// Q6_K row → f32.
    dequantize_row_q6_k, BlockQ6_K, dequantize_block_q6_k);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q3_k_scales_match_ggml_bit_shuffle() {
        // ggml unpacks with four u32 words and masks; check the per-index formula against it.
        let s: [u8; 12] = std::array::from_fn(|i| (i as u8).wrapping_mul(71).wrapping_add(5));
        let w = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
        let (a0, a1, tmp) = (w(0), w(1), w(2));
        let (k1, k2) = (0x0303_0303u32, 0x0f0f_0f0fu32);
        let aux = [
            (a0 & k2) | ((tmp & k1) << 4),
            (a1 & k2) | (((tmp >> 2) & k1) << 4),
            ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4),
            ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4),
        ];
        let want: Vec<i8> = aux
            .iter()
            .flat_map(|a| a.to_le_bytes())
            .map(|b| b as i8 - 32)
            .collect();
        assert_eq!(unpack_q3_k_scales(&s).to_vec(), want);
    }
}
