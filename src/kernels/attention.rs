//! Causal grouped-query attention, computed flash-style: keys are visited in small tiles
//! with a running maximum and sum, so no (T × T) score matrix is ever stored and the kernel
//! needs no scratch beyond a tile on the stack.

use rayon::prelude::*;

/// Head geometry of an attention layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads; `n_head` is a multiple of it (grouped-query attention).
    pub n_head_kv: usize,
    /// Dimensions per head.
    pub head_dim: usize,
}

/// Keys visited per tile.
const TILE: usize = 32;

/// `out` (T, n_head·head_dim) ← softmax(q·kᵀ/√head_dim)·v for queries at positions
/// `pos0 .. pos0+T`, each attending to key positions `0 ..= its own`.
///
/// `k`, `v`: (≥ pos0+T, n_head_kv·head_dim), the layer's cache rows. Rows run in parallel on
/// the current rayon pool.
pub fn attention_forward(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos0: usize,
    s: AttnShape,
) {
    let width = s.n_head * s.head_dim;
    let kv_width = s.n_head_kv * s.head_dim;
    assert!(
        s.n_head_kv > 0 && s.n_head % s.n_head_kv == 0,
        "attention: heads"
    );
    assert!(
        q.len() == out.len() && out.len() % width == 0,
        "attention: q/out sizes"
    );
    let t = out.len() / width;
    assert!(
        k.len() >= (pos0 + t) * kv_width && v.len() == k.len(),
        "attention: cache too short"
    );
    let group = s.n_head / s.n_head_kv;
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    out.par_chunks_mut(width)
        .zip(q.par_chunks(width))
        .enumerate()
        .for_each(|(i, (orow, qrow))| {
            let n_keys = pos0 + i + 1;
            for h in 0..s.n_head {
                let kv_off = (h / group) * s.head_dim;
                let qh = &qrow[h * s.head_dim..(h + 1) * s.head_dim];
                let oh = &mut orow[h * s.head_dim..(h + 1) * s.head_dim];
                attend_one(oh, qh, k, v, kv_width, kv_off, n_keys, scale);
            }
        });
}

/// One query head against `n_keys` cached keys, with the online softmax.
#[allow(clippy::too_many_arguments)]
fn attend_one(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    off: usize,
    n_keys: usize,
    scale: f32,
) {
    let d = q.len();
    out.fill(0.0);
    let mut running_max = f32::NEG_INFINITY;
    let mut running_sum = 0.0f32;
    let mut scores = [0f32; TILE];
    let mut j0 = 0;
    while j0 < n_keys {
        let n = TILE.min(n_keys - j0);
        let mut tile_max = f32::NEG_INFINITY;
        for (jj, sc) in scores[..n].iter_mut().enumerate() {
            let kr = &k[(j0 + jj) * stride + off..][..d];
            *sc = dot(q, kr) * scale;
            tile_max = tile_max.max(*sc);
        }
        let new_max = running_max.max(tile_max);
        let correction = (running_max - new_max).exp();
        running_sum *= correction;
        for o in out.iter_mut() {
            *o *= correction;
        }
        for (jj, &sc) in scores[..n].iter().enumerate() {
            let p = (sc - new_max).exp();
            running_sum += p;
            let vr = &v[(j0 + jj) * stride + off..][..d];
            for (o, &vv) in out.iter_mut().zip(vr) {
                *o += p * vv;
            }
        }
        running_max = new_max;
        j0 += n;
    }
    let inv = 1.0 / running_sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// Dot product in eight lanes (vectorisable).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(q: &[f32], k: &[f32], v: &[f32], pos0: usize, s: AttnShape) -> Vec<f64> {
        let width = s.n_head * s.head_dim;
        let kvw = s.n_head_kv * s.head_dim;
        let t = q.len() / width;
        let mut out = vec![0f64; q.len()];
        for i in 0..t {
            for h in 0..s.n_head {
                let kh = h / (s.n_head / s.n_head_kv);
                let n = pos0 + i + 1;
                let sc: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..s.head_dim)
                            .map(|d| {
                                q[i * width + h * s.head_dim + d] as f64
                                    * k[j * kvw + kh * s.head_dim + d] as f64
                            })
                            .sum::<f64>()
                            / (s.head_dim as f64).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                for d in 0..s.head_dim {
                    out[i * width + h * s.head_dim + d] = (0..n)
                        .map(|j| (sc[j] - m).exp() / z * v[j * kvw + kh * s.head_dim + d] as f64)
                        .sum();
                }
            }
        }
        out
    }

    #[test]
    fn matches_f64_softmax_reference_with_gqa_cache_offsets_and_long_rows() {
        let s = AttnShape {
            n_head: 4,
            n_head_kv: 2,
            head_dim: 6,
        };
        for (pos0, t) in [(0usize, 1usize), (0, 5), (3, 2), (0, 70), (40, 33)] {
            let n = pos0 + t;
            let gen = |seed: usize, len: usize| -> Vec<f32> {
                (0..len)
                    .map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 / 500.0 - 1.0) * 2.0)
                    .collect()
            };
            let q = gen(1, t * 24);
            let k = gen(2, n * 12);
            let v = gen(3, n * 12);
            let mut out = vec![0.0; t * 24];
            attention_forward(&mut out, &q, &k, &v, pos0, s);
            let want = reference(&q, &k, &v, pos0, s);
            for (i, (&g, &w)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (g as f64 - w).abs() < 2e-5,
                    "pos0 {pos0} t {t} i {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn dot_handles_remainders() {
        for n in [0usize, 1, 7, 8, 9, 31, 33] {
            let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 - i as f32 * 0.5).collect();
            let want: f64 = (0..n).map(|i| i as f64 * (1.0 - i as f64 * 0.5)).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-3);
        }
    }
}
