//! Few-token products for `--precision fast`: one or two tokens quantized to int8 per 32
//! values (scale max|x|/127, as the int8 matmul quantizes activations) times Q8_0 / Q4_0
//! blocks by integer dot products, as llama.cpp generates. Per block this is a load, one
//! integer dot instruction, a conversion and a multiply-add, where the f32 path
//! ([`super::gemv`]) widens and converts all 32 weights to floats first.
//!
//! The integer lanes are canonical, so every level computes the same bits as this scalar
//! twin: for each block, lane `j` (of 8) holds the exact sum of the products of values
//! `4j .. 4j+3`: `w·x` for Q8_0; for Q4_0 the unsigned nibble `w + 8` times `x`, lane 0 also
//! holding `−8·Σx`, so that the lanes add up to `Σ w·x`. Then, in f32, `acc[j] += lane[j] ·
//! (d_w · d_x)` (multiply, then add) into one accumulator for the even and one for the odd
//! blocks, which are added and their 8 lanes folded in a fixed order. The only error
//! beyond the weights' own is the activations' rounding to int8.

use crate::quant::reference::f16_to_f32;
use crate::quant::GgmlType;

use super::gemv::PREFETCH_AHEAD;

/// Tokens quantized per 32 values: token `tok`'s values (i8, stored as their bytes) at
/// `q[tok·cols ..]`, the scale of its block `b` at `d[tok·nb + b]` and the sum of that
/// block's values at `sum[tok·nb + b]` (`nb = cols / 32`).
#[derive(Clone, Copy, Debug)]
pub struct QuantTokens<'a> {
    pub q: &'a [u8],
    pub d: &'a [f32],
    pub sum: &'a [i32],
}

/// The quant types [`gemv_i8_body`] reads.
pub fn gemv_i8_supports(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0)
}

/// The body of [`super::Kernels::gemv_i8`] (sizes checked there): `w` holds `n` rows of
/// `cols` (`n = y.len() / t`), `y[tok · n + i]` is written. Returns false for a type it
/// does not read.
#[inline(always)]
pub fn gemv_i8_body(
    ty: GgmlType,
    w: &[u8],
    cols: usize,
    x: &QuantTokens<'_>,
    t: usize,
    y: &mut [f32],
) -> bool {
    match (ty, t) {
        (GgmlType::Q8_0, 1) => rows::<Q8, 1>(w, cols, x, y),
        (GgmlType::Q8_0, 2) => rows::<Q8, 2>(w, cols, x, y),
        (GgmlType::Q4_0, 1) => rows::<Q4, 1>(w, cols, x, y),
        (GgmlType::Q4_0, 2) => rows::<Q4, 2>(w, cols, x, y),
        _ => return false,
    }
    true
}

/// One block type: its size and its 8 integer lanes against 32 int8 values.
trait Block {
    const BYTES: usize;
    fn lanes(blk: &[u8], x: &[u8; 32], sum: i32) -> [i32; 8];
}

struct Q8;
struct Q4;

impl Block for Q8 {
    const BYTES: usize = 34;
    #[inline(always)]
    fn lanes(blk: &[u8], x: &[u8; 32], _sum: i32) -> [i32; 8] {
        let q = fixed::<_, 32>(&blk[2..]);
        let mut l = [0i32; 8];
        for (k, (&w, &v)) in q.iter().zip(x).enumerate() {
            l[k / 4] += (w as i8 as i32) * (v as i8 as i32);
        }
        l
    }
}

impl Block for Q4 {
    const BYTES: usize = 18;
    #[inline(always)]
    fn lanes(blk: &[u8], x: &[u8; 32], sum: i32) -> [i32; 8] {
        let q = fixed::<_, 16>(&blk[2..]);
        let mut l = [0i32; 8];
        for k in 0..16 {
            l[k / 4] += (q[k] & 15) as i32 * (x[k] as i8 as i32);
            l[4 + k / 4] += (q[k] >> 4) as i32 * (x[16 + k] as i8 as i32);
        }
        l[0] -= 8 * sum;
        l
    }
}

/// The first `N` elements of `s` as an array (panics when shorter).
#[inline(always)]
fn fixed<T, const N: usize>(s: &[T]) -> &[T; N] {
    match s[..N].try_into() {
        Ok(a) => a,
        Err(_) => unreachable!(),
    }
}

/// The fixed fold of the 8 f32 lanes: halves, then quarters, then the last pair.
#[inline(always)]
fn fold8(a: &[f32; 8]) -> f32 {
    let m = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    let m = [m[0] + m[2], m[1] + m[3]];
    m[0] + m[1]
}

/// The tokens' blocks in step with a row's blocks: per token, its values, scales and sums
/// as 32-value chunks (the iterators spare the hot loop its bounds checks).
#[inline(always)]
fn token_blocks<'a, const T: usize>(
    x: &QuantTokens<'a>,
    cols: usize,
) -> [impl Iterator<Item = (&'a [u8; 32], f32, i32)> + 'a; T] {
    let nb = cols / 32;
    std::array::from_fn(|tok| {
        let q = &x.q[tok * cols..(tok + 1) * cols];
        let (d, s) = (
            &x.d[tok * nb..(tok + 1) * nb],
            &x.sum[tok * nb..(tok + 1) * nb],
        );
        q.chunks_exact(32)
            .map(fixed::<_, 32>)
            .zip(d.iter().copied())
            .zip(s.iter().copied())
            .map(|((q, d), s)| (q, d, s))
    })
}

/// The loop every level runs, with its own accumulator type `A`: for each of the `y.len() /
/// T` rows of `w` (blocks of `bytes`), `acc = block(acc, blk, d_w, (x values, d_x, Σx))`
/// per token and block into one accumulator for the even and one for the odd blocks (two
/// addition chains; the blocks go in pairs so that each stays in a register), then
/// `y[tok·n + i] = fold(even, odd)`. `scale` reads a block's binary16 scale.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn rows_with<A: Copy, const T: usize>(
    w: &[u8],
    bytes: usize,
    cols: usize,
    x: &QuantTokens<'_>,
    y: &mut [f32],
    zero: A,
    scale: impl Fn(&[u8]) -> f32,
    block: impl Fn(A, &[u8], f32, (&[u8; 32], f32, i32)) -> A,
    fold: impl Fn(A, A) -> f32,
) {
    let rb = cols / 32 * bytes;
    let n = y.len() / T;
    for (i, row) in w.chunks_exact(rb).take(n).enumerate() {
        let mut acc = [[zero; 2]; T];
        let mut xs = token_blocks::<T>(x, cols);
        let mut step = |acc: &mut [[A; 2]; T], e: usize, blk: &[u8]| {
            let dw = scale(blk);
            for (a, xt) in acc.iter_mut().zip(xs.iter_mut()) {
                let Some(xb) = xt.next() else {
                    unreachable!("one token block per weight block")
                };
                a[e] = block(a[e], blk, dw, xb);
            }
        };
        let mut pairs = row.chunks_exact(2 * bytes);
        for (p, pair) in (&mut pairs).enumerate() {
            super::prefetch(w, i * rb + 2 * p * bytes + PREFETCH_AHEAD);
            step(&mut acc, 0, &pair[..bytes]);
            step(&mut acc, 1, &pair[bytes..]);
        }
        if !pairs.remainder().is_empty() {
            step(&mut acc, 0, pairs.remainder());
        }
        for (tok, a) in acc.iter().enumerate() {
            y[tok * n + i] = fold(a[0], a[1]);
        }
    }
}

#[inline(always)]
fn rows<B: Block, const T: usize>(w: &[u8], cols: usize, x: &QuantTokens<'_>, y: &mut [f32]) {
    rows_with::<[f32; 8], T>(
        w,
        B::BYTES,
        cols,
        x,
        y,
        [0f32; 8],
        |blk| f16_to_f32(u16::from_le_bytes([blk[0], blk[1]])),
        |mut a, blk, dw, (xq, dx, sum)| {
            let l = B::lanes(blk, xq, sum);
            let s = dw * dx;
            for j in 0..8 {
                a[j] += l[j] as f32 * s;
            }
            a
        },
        |even, odd| fold8(&std::array::from_fn(|j| even[j] + odd[j])),
    )
}

#[cfg(test)]
mod tests {
    use super::super::{tests::vals, Kernels, Level};
    use super::*;
    use crate::quant::{dequantize_row, quantize};
    use crate::simd::ew::quantize_block;

    /// Quantizes `t` rows of `x` per 32 values as the fast generation does.
    fn quantized(x: &[f32]) -> (Vec<u8>, Vec<f32>, Vec<i32>) {
        let (mut q, mut d, mut s) = (Vec::new(), Vec::new(), Vec::new());
        for xb in x.chunks_exact(32) {
            let mut qb = [0i8; 32];
            let (scale, sum) = quantize_block(xb, &mut qb);
            q.extend(qb.iter().map(|&v| v as u8));
            d.push(scale);
            s.push(sum);
        }
        (q, d, s)
    }

    #[test]
    fn every_level_equals_the_scalar_twin_bit_for_bit_and_the_integer_product() {
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0] {
            for (rows, cols) in [(1usize, 32usize), (7, 96), (67, 256), (130, 2048)] {
                let wf = vals(rows * cols, 21);
                let mut w = quantize(ty, &wf, cols).unwrap();
                if ty == GgmlType::Q8_0 {
                    // −128 (which quantizing never writes but a file may hold) and 127.
                    for row in w.chunks_exact_mut(cols / 32 * 34) {
                        row[2] = 0x80;
                        row[3] = 0x7f;
                    }
                }
                let mut deq = vec![0f32; rows * cols];
                dequantize_row(ty, &w, &mut deq).unwrap();
                for t in [1usize, 2] {
                    let x = vals(t * cols, 22 + t as u64);
                    let (q, d, sum) = quantized(&x);
                    let xq = QuantTokens {
                        q: &q,
                        d: &d,
                        sum: &sum,
                    };
                    let mut want = vec![0f32; t * rows];
                    assert!(gemv_i8_body(ty, &w, cols, &xq, t, &mut want));
                    // The product of the dequantized weights with the dequantized int8
                    // tokens, in f64: only f32 rounding separates the twin from it.
                    let nb = cols / 32;
                    for tok in 0..t {
                        for i in 0..rows {
                            let (mut p, mut mag) = (0f64, 0f64);
                            for c in 0..cols {
                                let xv =
                                    q[tok * cols + c] as i8 as f64 * d[tok * nb + c / 32] as f64;
                                p += deq[i * cols + c] as f64 * xv;
                                mag += (deq[i * cols + c] as f64 * xv).abs();
                            }
                            let got = want[tok * rows + i] as f64;
                            assert!(
                                (got - p).abs() <= 1e-6 * mag + 1e-30,
                                "{ty} {rows}x{cols} t{t}: {got} vs {p}"
                            );
                        }
                    }
                    for level in Level::available() {
                        let k = Kernels::for_level(level).unwrap();
                        let mut got = vec![f32::NAN; t * rows];
                        if !k.gemv_i8(ty, &w, cols, &xq, t, &mut got) {
                            continue; // this level has no int8 GEMV (the f32 one serves)
                        }
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{ty} {rows}x{cols} t{t} on {level:?}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod perf_probe {
    use super::super::tests::vals;
    use super::*;
    use crate::quant::quantize;

    /// Not a check: time per block of the int8 and f32 GEMVs on one L2-resident group of
    /// rows. `cargo test --release --lib gemv_i8::perf_probe -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn gemv_speed() {
        let k = super::super::kernels();
        let (rows, cols) = (64usize, 2048usize);
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
            let w = quantize(ty, &vals(rows * cols, 3), cols).unwrap();
            let x = vals(cols, 4);
            let mut q = vec![0u8; cols];
            let mut d = vec![0f32; cols / 32];
            super::super::ew::quantize_row(&x, &mut q, &mut d, 0);
            let sum: Vec<i32> = q
                .chunks_exact(32)
                .map(|b| b.iter().map(|&v| v as i8 as i32).sum())
                .collect();
            let xq = QuantTokens {
                q: &q,
                d: &d,
                sum: &sum,
            };
            let mut y = vec![0f32; rows];
            let reps = 20000;
            for _ in 0..3 {
                let t0 = std::time::Instant::now();
                for _ in 0..reps {
                    k.gemv_i8(ty, &w, cols, &xq, 1, &mut y);
                }
                let ti8 = t0.elapsed().as_secs_f64() / (reps * rows * cols / 32) as f64;
                let t0 = std::time::Instant::now();
                for _ in 0..reps {
                    k.gemv(ty, &w, cols, &x, 1, &mut y);
                }
                let tf = t0.elapsed().as_secs_f64() / (reps * rows * cols / 32) as f64;
                println!(
                    "{ty}: int8 {:.2} ns/block, f32 {:.2} ns/block",
                    ti8 * 1e9,
                    tf * 1e9
                );
            }
        }
    }
}
