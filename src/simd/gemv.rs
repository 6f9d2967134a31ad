//! Few-token products straight from Q8_0 / Q4_0 blocks: `y[tok][i] = Σ_c W[i][c] · x[tok][c]`
//! for one or two tokens (generation), without a dequantized row in memory.
//!
//! Each weight is the dequantized value `q · d` exactly as [`crate::quant::dequantize_row`]
//! computes it; products are summed in f32, per lane of 16 (one accumulator for each half of
//! a block), and the 32 lanes are added in a fixed order at the end. The arithmetic is
//! written out in source order (Rust neither reassociates nor contracts float operations),
//! so every level computes the same bits as the scalar twin; only the speed differs.
//!
//! The rows are one contiguous stream, so the body also hints the lines a few blocks ahead
//! into the cache: one token's work per block is too short to hide the memory latency
//! otherwise.

use crate::quant::reference::f16_to_f32;
use crate::quant::GgmlType;

/// Bytes ahead of the block being read whose line is fetched.
pub(super) const PREFETCH_AHEAD: usize = 1024;

/// The quant types [`gemv_body`] reads.
pub fn gemv_supports(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0)
}

/// The body of [`super::Kernels::gemv`] (sizes checked there): `w` holds `n` rows of `cols`
/// (`n = y.len() / t`), `x` `t` rows of `cols`, `y[tok · n + i]` is written. Returns false
/// for a type it does not read.
#[inline(always)]
pub fn gemv_body(ty: GgmlType, w: &[u8], cols: usize, x: &[f32], t: usize, y: &mut [f32]) -> bool {
    match (ty, t) {
        (GgmlType::Q8_0, 1) => rows::<Q8, 1>(w, cols, x, y),
        (GgmlType::Q8_0, 2) => rows::<Q8, 2>(w, cols, x, y),
        (GgmlType::Q4_0, 1) => rows::<Q4, 1>(w, cols, x, y),
        (GgmlType::Q4_0, 2) => rows::<Q4, 2>(w, cols, x, y),
        _ => return false,
    }
    true
}

/// One block type: its size and its 32 dequantized weights.
trait Block {
    const BYTES: usize;
    fn weights(blk: &[u8], out: &mut [[f32; 16]; 2]);
}

struct Q8;
struct Q4;

impl Block for Q8 {
    const BYTES: usize = 34;
    #[inline(always)]
    fn weights(blk: &[u8], out: &mut [[f32; 16]; 2]) {
        let d = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
        for (h, o) in out.iter_mut().enumerate() {
            let qs = fixed::<_, 16>(&blk[2 + 16 * h..]);
            for l in 0..16 {
                o[l] = (qs[l] as i8 as f32) * d;
            }
        }
    }
}

impl Block for Q4 {
    const BYTES: usize = 18;
    #[inline(always)]
    fn weights(blk: &[u8], out: &mut [[f32; 16]; 2]) {
        let d = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
        let qs = fixed::<_, 16>(&blk[2..]);
        for l in 0..16 {
            out[0][l] = ((qs[l] & 15) as i32 - 8) as f32 * d;
            out[1][l] = ((qs[l] >> 4) as i32 - 8) as f32 * d;
        }
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

/// `acc[l] += q[l] · x[l]` over 16 lanes.
#[inline(always)]
fn mac16(acc: &mut [f32; 16], q: &[f32; 16], x: &[f32; 16]) {
    for l in 0..16 {
        acc[l] += q[l] * x[l];
    }
}

#[inline(always)]
fn rows<B: Block, const T: usize>(w: &[u8], cols: usize, x: &[f32], y: &mut [f32]) {
    let nb = cols / 32;
    let rb = nb * B::BYTES;
    let n = y.len() / T;
    for i in 0..n {
        let row = &w[i * rb..(i + 1) * rb];
        let mut acc = [[[0f32; 16]; 2]; T];
        let mut q = [[0f32; 16]; 2];
        for b in 0..nb {
            super::prefetch(w, i * rb + b * B::BYTES + PREFETCH_AHEAD);
            B::weights(&row[b * B::BYTES..], &mut q);
            for (tok, a) in acc.iter_mut().enumerate() {
                for h in 0..2 {
                    mac16(&mut a[h], &q[h], fixed(&x[tok * cols + 32 * b + 16 * h..]));
                }
            }
        }
        for (tok, a) in acc.iter().enumerate() {
            // Lanes folded in halves, a fixed order on every level.
            let mut m = [0f32; 16];
            for l in 0..16 {
                m[l] = a[0][l] + a[1][l];
            }
            for l in 0..8 {
                m[l] += m[l + 8];
            }
            for l in 0..4 {
                m[l] += m[l + 4];
            }
            y[tok * n + i] = (m[0] + m[2]) + (m[1] + m[3]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::vals;
    use super::super::{Kernels, Level};
    use crate::quant::{dequantize_row, quantize, GgmlType};

    #[test]
    fn every_level_equals_the_scalar_twin_bit_for_bit_and_the_f64_product() {
        let scalar = Kernels::for_level(Level::Scalar).unwrap();
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0] {
            for (n, cols) in [(1usize, 32usize), (3, 96), (37, 160), (70, 2048)] {
                let w = vals(n * cols, 3 + n as u64);
                let bytes = quantize(ty, &w, cols).unwrap();
                let mut deq = vec![0f32; n * cols];
                dequantize_row(ty, &bytes, &mut deq).unwrap();
                for t in 1..=2 {
                    let x = vals(t * cols, 11 + cols as u64);
                    let mut want = vec![0f32; t * n];
                    assert!(scalar.gemv(ty, &bytes, cols, &x, t, &mut want));
                    for tok in 0..t {
                        for i in 0..n {
                            let (mut s, mut mag) = (0f64, 0f64);
                            for c in 0..cols {
                                let p = deq[i * cols + c] as f64 * x[tok * cols + c] as f64;
                                s += p;
                                mag += p.abs();
                            }
                            let got = want[tok * n + i] as f64;
                            assert!(
                                (got - s).abs() <= 1e-6 * mag + 1e-30,
                                "{ty} {n}x{cols} t{t}: {got} vs {s}"
                            );
                        }
                    }
                    for level in Level::available() {
                        let k = Kernels::for_level(level).unwrap();
                        let mut got = vec![f32::NAN; t * n];
                        assert!(k.gemv(ty, &bytes, cols, &x, t, &mut got));
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "{level:?} {ty} {n}x{cols} t{t} differs from the scalar twin"
                        );
                    }
                }
            }
        }
        // Other types and token counts are declined, nothing written.
        let mut y = [7f32; 3];
        assert!(!scalar.gemv(GgmlType::F32, &[0; 12], 1, &[1.0], 1, &mut y[..1]));
        assert!(!scalar.gemv(GgmlType::Q8_0, &[0; 34], 32, &[0.0; 96], 3, &mut y));
        assert_eq!(y, [7.0; 3]);
    }
}
