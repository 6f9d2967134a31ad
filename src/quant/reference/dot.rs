//! Dot products of one packed row with an f32 vector: the generation (T = 1) path.
//!
//! Each block is dequantized into a stack buffer by the same block function as
//! [`super::dequantize_fn`] and multiplied into 16 independent f32 accumulators (for
//! instruction-level parallelism), so the products are exactly those of dequantize-then-dot
//! and only the summation order differs. Nothing allocates. Float rows (F32/F16/BF16) go through the same path in 32-element
//! chunks, plus a scalar tail.

use super::super::blocks::{
    BlockQ2_K, BlockQ3_K, BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1, BlockQ5_K,
    BlockQ6_K, BlockQ8_0,
};
use super::super::types::QK_K;
use super::{float, kquants, legacy};

const LANES: usize = 16;

/// acc[k] += Σᵢ a[LANES·i + k] · b[LANES·i + k].
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
    let a: [f32; 8] = std::array::from_fn(|i| acc[i] + acc[i + 8]);
    let b: [f32; 4] = std::array::from_fn(|i| a[i] + a[i + 4]);
    (b[0] + b[2]) + (b[1] + b[3])
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

/// Float rows (`ES` bytes per element): 32-element chunks decoded by the row dequantizer
/// `deq` into a stack buffer, then the tail.
#[inline(always)]
fn dot_elements<const ES: usize>(row: &[u8], x: &[f32], deq: fn(&[u8], &mut [f32])) -> f32 {
    const CHUNK: usize = 32;
    let mut acc = [0.0f32; LANES];
    let mut buf = [0.0f32; CHUNK];
    let mut tail = 0.0f32;
    for (b, xs) in row.chunks(CHUNK * ES).zip(x.chunks(CHUNK)) {
        let n = xs.len().min(b.len() / ES);
        deq(&b[..n * ES], &mut buf[..n]);
        if n == CHUNK {
            accumulate(&mut acc, &buf, xs);
        } else {
            for (&y, &xv) in buf[..n].iter().zip(xs) {
                tail += y * xv;
            }
        }
    }
    reduce(acc) + tail
}

/// F32 row · x.
pub fn vec_dot_f32(row: &[u8], x: &[f32]) -> f32 {
    dot_elements::<4>(row, x, float::dequantize_row_f32)
}

/// F16 row · x.
pub fn vec_dot_f16(row: &[u8], x: &[f32]) -> f32 {
    dot_elements::<2>(row, x, float::dequantize_row_f16)
}

/// BF16 row · x.
pub fn vec_dot_bf16(row: &[u8], x: &[f32]) -> f32 {
    dot_elements::<2>(row, x, float::dequantize_row_bf16)
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
