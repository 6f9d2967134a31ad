//! Causal grouped-query attention, computed flash-style: keys are visited in small tiles
//! with a running maximum and sum, so no (T × T) score matrix is ever stored and the kernel
//! needs no scratch beyond a tile on the stack. The forward pass can keep each row's
//! log-sum-exp; the backward pass recomputes the probabilities from it.
//!
//! The backward pass runs in two sweeps so that every gradient element is reduced by one
//! thread in a fixed order (deterministic, no atomics): query rows in parallel for `dq`
//! (and `Δ_i = dO_i · O_i`), then key rows in parallel for `dk` and `dv`.

use rayon::prelude::*;

use super::num::{axpy, dot, Real};

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

impl AttnShape {
    fn q_width(&self) -> usize {
        self.n_head * self.head_dim
    }

    fn kv_width(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    fn group(&self) -> usize {
        self.n_head / self.n_head_kv
    }

    fn scale<F: Real>(&self) -> F {
        F::ONE / F::from_f64(self.head_dim as f64).sqrt()
    }
}

/// Keys visited per tile.
const TILE: usize = 32;

/// `out` (T, n_head·head_dim) ← softmax(q·kᵀ/√head_dim)·v for queries at positions
/// `pos0 .. pos0+T`, each attending to key positions `0 ..= its own`. With `lse`
/// (T, n_head), each row's log-sum-exp of scaled scores is kept for the backward pass.
///
/// `k`, `v`: (≥ pos0+T, n_head_kv·head_dim), e.g. a layer's cache rows. Rows run in
/// parallel on the current rayon pool.
pub fn attention_forward<F: Real>(
    out: &mut [F],
    lse: Option<&mut [F]>,
    q: &[F],
    k: &[F],
    v: &[F],
    pos0: usize,
    s: AttnShape,
) {
    let (width, kv_width, d) = (s.q_width(), s.kv_width(), s.head_dim);
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
        k.len() >= (pos0 + t) * kv_width && v.len() >= (pos0 + t) * kv_width,
        "attention: cache too short"
    );
    let group = s.group();
    let scale = s.scale::<F>();
    let row = |i: usize, orow: &mut [F], qrow: &[F], mut lrow: Option<&mut [F]>| {
        for h in 0..s.n_head {
            let kv_off = (h / group) * d;
            let oh = &mut orow[h * d..(h + 1) * d];
            let l = attend_one(
                oh,
                &qrow[h * d..(h + 1) * d],
                k,
                v,
                kv_width,
                kv_off,
                pos0 + i + 1,
                scale,
            );
            if let Some(lr) = lrow.as_deref_mut() {
                lr[h] = l;
            }
        }
    };
    match lse {
        Some(lse) => {
            assert_eq!(lse.len(), t * s.n_head, "attention: lse size");
            out.par_chunks_mut(width)
                .zip(q.par_chunks(width))
                .zip(lse.par_chunks_mut(s.n_head))
                .enumerate()
                .for_each(|(i, ((o, qr), l))| row(i, o, qr, Some(l)));
        }
        None => out
            .par_chunks_mut(width)
            .zip(q.par_chunks(width))
            .enumerate()
            .for_each(|(i, (o, qr))| row(i, o, qr, None)),
    }
}

/// One query head against `n_keys` keys with the online softmax; returns the log-sum-exp.
#[allow(clippy::too_many_arguments)]
fn attend_one<F: Real>(
    out: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    stride: usize,
    off: usize,
    n_keys: usize,
    scale: F,
) -> F {
    let d = q.len();
    out.fill(F::ZERO);
    let mut running_max = F::NEG_INFINITY;
    let mut running_sum = F::ZERO;
    let mut scores = [F::ZERO; TILE];
    let mut j0 = 0;
    while j0 < n_keys {
        let n = TILE.min(n_keys - j0);
        let mut tile_max = F::NEG_INFINITY;
        for (jj, sc) in scores[..n].iter_mut().enumerate() {
            *sc = dot(q, &k[(j0 + jj) * stride + off..][..d]) * scale;
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
            axpy(out, p, &v[(j0 + jj) * stride + off..][..d]);
        }
        running_max = new_max;
        j0 += n;
    }
    let inv = F::ONE / running_sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
    running_max + running_sum.ln()
}

/// Gradients of [`attention_forward`] at `pos0 = 0` (a whole sequence): `dq += …`,
/// `dk += …`, `dv += …` from `dout`, given the forward's `out` and `lse`.
///
/// `delta` (T, n_head) is scratch for `Δ_i = dout_i · out_i`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<F: Real>(
    dq: &mut [F],
    dk: &mut [F],
    dv: &mut [F],
    delta: &mut [F],
    dout: &[F],
    q: &[F],
    k: &[F],
    v: &[F],
    out: &[F],
    lse: &[F],
    s: AttnShape,
) {
    let (width, kv_width, d, group) = (s.q_width(), s.kv_width(), s.head_dim, s.group());
    let t = q.len() / width;
    assert!(
        dq.len() == t * width
            && dout.len() == t * width
            && out.len() == t * width
            && lse.len() == t * s.n_head,
        "attention backward: query-side sizes"
    );
    assert!(
        dk.len() == t * kv_width
            && dv.len() == t * kv_width
            && k.len() == t * kv_width
            && v.len() == t * kv_width,
        "attention backward: key-side sizes"
    );
    assert_eq!(delta.len(), t * s.n_head, "attention backward: delta size");
    let scale = s.scale::<F>();
    // P_ij and dS_ij = P_ij (dO_i·v_j − Δ_i) for query head h at row i, key row j.
    let prob = |i: usize, h: usize, j: usize| -> F {
        let kv = (h / group) * d;
        let sc = dot(&q[i * width + h * d..][..d], &k[j * kv_width + kv..][..d]) * scale;
        (sc - lse[i * s.n_head + h]).exp()
    };
    // Sweep 1: Δ and dq, query rows in parallel.
    dq.par_chunks_mut(width)
        .zip(delta.par_chunks_mut(s.n_head))
        .enumerate()
        .for_each(|(i, (dqr, dr))| {
            for h in 0..s.n_head {
                let kv = (h / group) * d;
                let dout_h = &dout[i * width + h * d..][..d];
                let di = dot(dout_h, &out[i * width + h * d..][..d]);
                dr[h] = di;
                let dq_h = &mut dqr[h * d..(h + 1) * d];
                for j in 0..=i {
                    let p = prob(i, h, j);
                    let ds = p * (dot(dout_h, &v[j * kv_width + kv..][..d]) - di);
                    axpy(dq_h, ds * scale, &k[j * kv_width + kv..][..d]);
                }
            }
        });
    let delta = &*delta;
    // Sweep 2: dk and dv, key rows in parallel.
    dk.par_chunks_mut(kv_width)
        .zip(dv.par_chunks_mut(kv_width))
        .enumerate()
        .for_each(|(j, (dkr, dvr))| {
            for h in 0..s.n_head {
                let kv = (h / group) * d;
                let (dk_h, dv_h) = (&mut dkr[kv..kv + d], &mut dvr[kv..kv + d]);
                for i in j..t {
                    let p = prob(i, h, j);
                    let dout_h = &dout[i * width + h * d..][..d];
                    let ds =
                        p * (dot(dout_h, &v[j * kv_width + kv..][..d]) - delta[i * s.n_head + h]);
                    axpy(dk_h, ds * scale, &q[i * width + h * d..][..d]);
                    axpy(dv_h, p, dout_h);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{assert_close, numeric, values, weighted};
    use super::*;

    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        pos0: usize,
        s: AttnShape,
    ) -> (Vec<f64>, Vec<f64>) {
        let width = s.n_head * s.head_dim;
        let kvw = s.n_head_kv * s.head_dim;
        let t = q.len() / width;
        let mut out = vec![0f64; q.len()];
        let mut lse = vec![0f64; t * s.n_head];
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
                lse[i * s.n_head + h] = m + z.ln();
                for d in 0..s.head_dim {
                    out[i * width + h * s.head_dim + d] = (0..n)
                        .map(|j| (sc[j] - m).exp() / z * v[j * kvw + kh * s.head_dim + d] as f64)
                        .sum();
                }
            }
        }
        (out, lse)
    }

    #[test]
    fn forward_matches_f64_softmax_reference_with_gqa_cache_offsets_and_long_rows() {
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
            let mut lse = vec![0.0; t * 4];
            attention_forward(&mut out, Some(&mut lse), &q, &k, &v, pos0, s);
            let (want, want_lse) = reference(&q, &k, &v, pos0, s);
            for (i, (&g, &w)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (g as f64 - w).abs() < 2e-5,
                    "pos0 {pos0} t {t} i {i}: {g} vs {w}"
                );
            }
            for (&g, &w) in lse.iter().zip(&want_lse) {
                assert!((g as f64 - w).abs() < 2e-5 * w.abs().max(1.0));
            }
            let mut out2 = vec![0.0; t * 24];
            attention_forward(&mut out2, None, &q, &k, &v, pos0, s);
            assert_eq!(out, out2);
        }
    }

    #[test]
    fn backward_matches_central_differences_for_mha_and_gqa() {
        for (s, t) in [
            (
                AttnShape {
                    n_head: 2,
                    n_head_kv: 2,
                    head_dim: 3,
                },
                5usize,
            ),
            (
                AttnShape {
                    n_head: 4,
                    n_head_kv: 2,
                    head_dim: 4,
                },
                7,
            ),
            (
                AttnShape {
                    n_head: 3,
                    n_head_kv: 1,
                    head_dim: 5,
                },
                40,
            ),
        ] {
            let (qw, kw) = (s.n_head * s.head_dim, s.n_head_kv * s.head_dim);
            let x: Vec<f64> = values(t * (qw + 2 * kw), 21)
                .iter()
                .map(|v| v * 1.5)
                .collect();
            let w = values(t * qw, 22);
            let split = |x: &[f64]| -> (Vec<f64>, Vec<f64>, Vec<f64>) {
                (
                    x[..t * qw].to_vec(),
                    x[t * qw..t * (qw + kw)].to_vec(),
                    x[t * (qw + kw)..].to_vec(),
                )
            };
            let loss = |x: &[f64]| {
                let (q, k, v) = split(x);
                let mut out = vec![0.0; t * qw];
                attention_forward(&mut out, None, &q, &k, &v, 0, s);
                weighted(&out, &w)
            };
            let (q, k, v) = split(&x);
            let mut out = vec![0.0; t * qw];
            let mut lse = vec![0.0; t * s.n_head];
            attention_forward(&mut out, Some(&mut lse), &q, &k, &v, 0, s);
            let mut grads = vec![0.0; x.len()];
            let (dq, rest) = grads.split_at_mut(t * qw);
            let (dk, dv) = rest.split_at_mut(t * kw);
            let mut delta = vec![0.0; t * s.n_head];
            attention_backward(dq, dk, dv, &mut delta, &w, &q, &k, &v, &out, &lse, s);
            assert_close(
                &format!("attention {s:?} t {t}"),
                &grads,
                &numeric(&x, loss),
            );
        }
    }
}
