//! Dot products of one packed row with an f32 vector: the generation (T = 1) path.
//!
//! Each block is dequantized into a stack buffer by the same block function as
//! [`super::dequantize_fn`] and multiplied into eight independent f32 accumulators, so the
//! products are exactly those of dequantize-then-dot and only the summation order differs.
//! Nothing allocates. Float rows (F32/F16/BF16) go through the same path in 32-element
//! chunks, plus a scalar tail.

use super::super::blocks::{
    BlockQ2_K, BlockQ3_K, BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1, BlockQ5_K,
    BlockQ6_K, BlockQ8_0,
};
use super::super::types::QK_K;
use super::{bf16_to_f32, f16_to_f32, kquants, legacy};

const LANES: usize = 8;

/// acc[k] += Σ a[8i + k] · b[8i + k].
#[inline(always)]
fn accumulate(acc: &mut [f32; LANES], a: &[f32], b: &[f32]) {
    for (a, b) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for k in 0..LANES {
            acc[k] += a[k] * b[k];
        }
    }
}

/// Pairwise sum of the lanes.
#[inline(always)]
fn reduce(acc: [f32; LANES]) -> f32 {
    let a: [f32; 4] = std::array::from_fn(|i| acc[i] + acc[i + 4]);
    (a[0] + a[2]) + (a[1] + a[3])
}

/// Σ over whole blocks of dequantize(block) · x.
#[inline(always)]
fn dot_blocks<const BS: usize, const QK: usize>(
    row: &[u8],
    x: &[f32],
    deq: impl Fn(&[u8; BS], &mut [f32; QK]),
) -> [f32; LANES] {
    let mut acc = [0.0f32; LANES];
    let mut buf = [0.0f32; QK];
    for (b, xs) in row.chunks_exact(BS).zip(x.chunks_exact(QK)) {
        if let Ok(b) = b.try_into() {
            deq(b, &mut buf);
            accumulate(&mut acc, &buf, xs);
        }
    }
    acc
}

/// Float rows: 32-element chunks through [`dot_blocks`], then the tail one by one.
#[inline(always)]
fn dot_elements<const ES: usize>(row: &[u8], x: &[f32], conv: impl Fn([u8; ES]) -> f32) -> f32 {
    const CHUNK: usize = 32;
    let mut acc = [0.0f32; LANES];
    let n = (row.len() / ES).min(x.len());
    let whole = n / CHUNK * CHUNK;
    let mut buf = [0.0f32; CHUNK];
    for (b, xs) in row[..whole * ES]
        .chunks_exact(CHUNK * ES)
        .zip(x[..whole].chunks_exact(CHUNK))
    {
        for (y, e) in buf.iter_mut().zip(b.chunks_exact(ES)) {
            if let Ok(e) = e.try_into() {
                *y = conv(e);
            }
        }
        accumulate(&mut acc, &buf, xs);
    }
    let mut tail = 0.0f32;
    for (e, &xv) in row[whole * ES..n * ES].chunks_exact(ES).zip(&x[whole..n]) {
        if let Ok(e) = e.try_into() {
            tail += conv(e) * xv;
        }
    }
    reduce(acc) + tail
}

/// F32 row · x.
pub fn vec_dot_f32(row: &[u8], x: &[f32]) -> f32 {
    dot_elements::<4>(row, x, f32::from_le_bytes)
}

/// F16 row · x.
pub fn vec_dot_f16(row: &[u8], x: &[f32]) -> f32 {
    dot_elements::<2>(row, x, |b| f16_to_f32(u16::from_le_bytes(b)))
}

/// BF16 row · x.
pub fn vec_dot_bf16(row: &[u8], x: &[f32]) -> f32 {
    dot_elements::<2>(row, x, |b| bf16_to_f32(u16::from_le_bytes(b)))
}

macro_rules! dot_fn {
    ($(#[$doc:meta])* $name:ident, $block:ident, $f:path) => {
        $(#[$doc])*
        pub fn $name(row: &[u8], x: &[f32]) -> f32 {
            reduce(dot_blocks::<{ $block::SIZE }, { $block::QK }>(row, x, |b, y| {
                $f(&$block::from_bytes(b), y)
            }))
        }
    };
}

dot_fn!(/// Q4_0 row · x.
    vec_dot_q4_0, BlockQ4_0, legacy::dequantize_block_q4_0);
dot_fn!(/// Q4_1 row · x.
    vec_dot_q4_1, BlockQ4_1, legacy::dequantize_block_q4_1);
dot_fn!(/// Q5_0 row · x.
    vec_dot_q5_0, BlockQ5_0, legacy::dequantize_block_q5_0);
dot_fn!(/// Q5_1 row · x.
    vec_dot_q5_1, BlockQ5_1, legacy::dequantize_block_q5_1);
dot_fn!(/// Q8_0 row · x.
    vec_dot_q8_0, BlockQ8_0, legacy::dequantize_block_q8_0);
dot_fn!(/// Q2_K row · x.
    vec_dot_q2_k, BlockQ2_K, kquants::dequantize_block_q2_k);
dot_fn!(/// Q3_K row · x.
    vec_dot_q3_k, BlockQ3_K, kquants::dequantize_block_q3_k);
dot_fn!(/// Q4_K row · x.
    vec_dot_q4_k, BlockQ4_K, kquants::dequantize_block_q4_k);
dot_fn!(/// Q5_K row · x.
    vec_dot_q5_k, BlockQ5_K, kquants::dequantize_block_q5_k);
dot_fn!(/// Q6_K row · x.
    vec_dot_q6_k, BlockQ6_K, kquants::dequantize_block_q6_k);

const _: () = assert!(QK_K % LANES == 0);
