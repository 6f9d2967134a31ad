//! The scalar twin of attention, for any [`Real`] (the f64 gradient checks, and the truth
//! the f32 path is tested against): one query row and head at a time with an online
//! softmax over tiles of keys; the backward in two sweeps (query rows for `dq`, key rows
//! for `dk`, `dv`).

use rayon::prelude::*;

use super::AttnShape;
use crate::kernels::num::{axpy, Real};
use crate::util::num::dot;

/// Keys visited per tile of the scalar twin.
const TILE: usize = 32;

/// The scalar twin of the forward (any float type).
#[allow(clippy::too_many_arguments)]
pub fn forward_twin<F: Real>(
    out: &mut [F],
    lse: Option<&mut [F]>,
    q: &[F],
    k: &[F],
    v: &[F],
    pos0: usize,
    s: AttnShape,
    starts: Option<&[usize]>,
) {
    let (width, kv_width, d) = (s.q_width(), s.kv_width(), s.head_dim);
    let t = out.len() / width;
    let group = s.group();
    let scale = s.scale::<F>();
    let row = |i: usize, orow: &mut [F], qrow: &[F], mut lrow: Option<&mut [F]>| {
        let first = starts.map_or(0, |st| st[i]);
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
                first,
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
    debug_assert_eq!(t * width, out.len());
}

/// One query head against keys `first .. end` with the online softmax; returns the
/// log-sum-exp.
#[allow(clippy::too_many_arguments)]
fn attend_one<F: Real>(
    out: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    stride: usize,
    off: usize,
    first: usize,
    end: usize,
    scale: F,
) -> F {
    let d = q.len();
    out.fill(F::ZERO);
    let mut running_max = F::NEG_INFINITY;
    let mut running_sum = F::ZERO;
    let mut scores = [F::ZERO; TILE];
    let mut j0 = first;
    while j0 < end {
        let n = TILE.min(end - j0);
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

/// The scalar twin of the backward (any float type), adding into `dq`, `dk`, `dv` and
/// overwriting `delta` as [`super::attention_backward`] does: query rows in parallel for `dq` and
/// `Δ`, then key rows in parallel for `dk` and `dv`.
#[allow(clippy::too_many_arguments)]
pub fn backward_twin<F: Real>(
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
    starts: Option<&[usize]>,
) {
    let (width, kv_width, d, group) = (s.q_width(), s.kv_width(), s.head_dim, s.group());
    let t = q.len() / width;
    let scale = s.scale::<F>();
    let first = |i: usize| starts.map_or(0, |st| st[i]);
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
                for j in first(i)..=i {
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
                    if first(i) > j {
                        continue;
                    }
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
