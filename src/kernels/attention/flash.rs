//! The f32 attention path (the engine): flash-style tiles of [`BQ`] queries × [`BK`] keys
//! through the dispatched micro-gemm and element-wise kernels. The forward runs query
//! blocks in parallel (or one block's heads); the backward runs one task per query head and
//! sums each group's heads in a fixed order. Tested here against the scalar twin on every
//! ISA level.

use rayon::prelude::*;

use super::tiles::{key_scores, mask_tile, tile_needs_mask, transpose_block, HeadScratch};
use super::{AttnShape, BK, BQ};
use crate::kernels::matmul::Precision;
use crate::kernels::scratch::with_f32;
use crate::simd::{ColumnPart, Kernels, Out, Sgemm, SharedColumns};

#[allow(clippy::too_many_arguments)]
/// The f32 forward (see the module docs): query blocks in parallel, or one block's heads.
pub(super) fn forward_f32(
    k: &Kernels,
    out: &mut [f32],
    lse: Option<&mut [f32]>,
    q: &[f32],
    kc: &[f32],
    vc: &[f32],
    pos0: usize,
    s: AttnShape,
    starts: Option<&[usize]>,
) {
    let (width, kvw, d, group) = (s.q_width(), s.kv_width(), s.head_dim, s.group());
    let t = out.len() / width;
    let scale = s.scale::<f32>();
    let fast = s.precision == Precision::Fast;
    let nh = s.n_head;
    let scratch = HeadScratch::len(d);
    // Head `h` of the queries `i0 .. i0 + nq`: leaves the unnormalized output in `sc.o`
    // (nq × d) and the softmax statistics in `sc.m`, `sc.l`.
    let head = |h: usize, i0: usize, nq: usize, sc: &mut HeadScratch<'_>| {
        let HeadScratch {
            qt,
            o,
            st,
            m,
            l,
            corr,
        } = sc;
        let kmin = starts.map_or(0, |st| st[i0..i0 + nq].iter().copied().min().unwrap_or(0));
        let kend = pos0 + i0 + nq;
        let koff = (h / group) * d;
        transpose_block(k, qt, q, width, h * d, i0, nq, d, scale);
        o[..nq * d].fill(0.0);
        m.fill(f32::NEG_INFINITY);
        l.fill(0.0);
        let mut j0 = kmin;
        while j0 < kend {
            let nk = BK.min(kend - j0);
            key_scores(k, st, &kc[j0 * kvw + koff..], kvw, nk, (qt, BQ, nq), d);
            if tile_needs_mask(j0, j0 + nk, i0, i0 + nq, pos0, starts) {
                mask_tile(st, BQ, nk, nq, j0, i0, pos0, starts);
            }
            (k.ew.softmax_tile)(st, nk, nq, BQ, m, l, corr, fast);
            (k.ew.scale_rows)(o, nq, d, d, corr);
            let mut oo = Out::new(o, d, 1, true);
            k.sgemm(
                &Sgemm {
                    m: nq,
                    n: d,
                    k: nk,
                    r: st,
                    rs: 1,
                    cs: BQ,
                    l: &vc[j0 * kvw + koff..],
                    ldb: kvw,
                    alpha: 1.0,
                },
                &mut oo,
            );
            j0 += nk;
        }
    };
    let block = |ib: usize, ob: &mut [f32], mut lb: Option<&mut [f32]>| {
        let i0 = ib * BQ;
        let nq = ob.len() / width;
        with_f32(1, scratch, |buf| {
            let mut sc = HeadScratch::split(buf, d);
            for h in 0..nh {
                head(h, i0, nq, &mut sc);
                let (o, m, l) = (&*sc.o, &*sc.m, &*sc.l);
                for i in 0..nq {
                    let inv = 1.0 / l[i];
                    for (dst, &x) in ob[i * width + h * d..][..d]
                        .iter_mut()
                        .zip(&o[i * d..(i + 1) * d])
                    {
                        *dst = x * inv;
                    }
                    if let Some(lb) = lb.as_deref_mut() {
                        lb[i * nh + h] = m[i] + l[i].ln();
                    }
                }
            }
        });
    };
    match lse {
        Some(lse) => out
            .par_chunks_mut(BQ * width)
            .zip(lse.par_chunks_mut(BQ * nh))
            .enumerate()
            .for_each(|(ib, (ob, lb))| block(ib, ob, Some(lb))),
        // One query block (generation, short prompts) without statistics to keep: the heads
        // in parallel instead (on the spinning team during a generation step). Each head's
        // values are computed as above, so the result does not change.
        None if t <= BQ && nh > 1 => {
            SharedColumns::new(out, width).par_parts(width, d, |h, mut part| {
                with_f32(1, scratch, |buf| {
                    let mut sc = HeadScratch::split(buf, d);
                    head(h, 0, t, &mut sc);
                    let mut dst = part.out(0, h * d, width, 1, false);
                    for (i, row) in sc.o.chunks_exact_mut(d).take(t).enumerate() {
                        let inv = 1.0 / sc.l[i];
                        row.iter_mut().for_each(|x| *x *= inv);
                        dst.put_run(i * width, row);
                    }
                });
            });
        }
        None => out
            .par_chunks_mut(BQ * width)
            .enumerate()
            .for_each(|(ib, ob)| block(ib, ob, None)),
    }
    debug_assert!(t * width == out.len());
}

/// What every task of one f32 backward call reads: the kernels, the inputs, the geometry.
struct BackwardCall<'a> {
    k: &'a Kernels,
    /// (T, n_head·d): the output gradient, the queries, the forward's output.
    dout: &'a [f32],
    q: &'a [f32],
    out: &'a [f32],
    /// (T, n_head_kv·d): keys and values.
    kc: &'a [f32],
    vc: &'a [f32],
    /// (T, n_head): the forward's log-sum-exp.
    lse: &'a [f32],
    starts: Option<&'a [usize]>,
    t: usize,
    nh: usize,
    width: usize,
    kvw: usize,
    d: usize,
    group: usize,
    scale: f32,
    fast: bool,
}

/// The f32 backward: one task per query head (see the module docs).
pub(super) fn backward_f32(
    k: &Kernels,
    outs: [&mut [f32]; 4],
    ins: [&[f32]; 6],
    s: AttnShape,
    starts: Option<&[usize]>,
) {
    let [dq, dk, dv, delta] = outs;
    let [dout, q, kc, vc, out, lse] = ins;
    let (width, kvw, d, group) = (s.q_width(), s.kv_width(), s.head_dim, s.group());
    let nh = s.n_head;
    let t = q.len() / width;
    let c = BackwardCall {
        k,
        dout,
        q,
        out,
        kc,
        vc,
        lse,
        starts,
        t,
        nh,
        width,
        kvw,
        d,
        group,
        scale: s.scale::<f32>(),
        fast: s.precision == Precision::Fast,
    };
    // Per head: dk_h, dv_h (T × d each), Δ_h, lse_h (T each).
    let per = 2 * t * d + 2 * t;
    with_f32(3, nh * per, |partial| {
        let mut dqs = SharedColumns::new(dq, width);
        let heads = partial.par_chunks_mut(per);
        dqs.par_parts_zip(nh * d, d, heads, |h, mut dq_part, ph| {
            head_backward(&c, h, &mut dq_part, ph);
        });
        sum_heads(&c, dk, dv, delta, partial);
    });
}

/// One query head's task: adds its `dq` columns into `dq_part` and leaves its `dk`, `dv`
/// contributions and its Δ in `ph` (dk_h, dv_h: T × d each; Δ_h, lse_h: T each).
fn head_backward(c: &BackwardCall<'_>, h: usize, dq_part: &mut ColumnPart<'_>, ph: &mut [f32]) {
    let (k, t, d, width) = (c.k, c.t, c.d, c.width);
    let tq = t.next_multiple_of(BQ);
    let (dkh, rest) = ph.split_at_mut(t * d);
    let (dvh, rest) = rest.split_at_mut(t * d);
    let (dh, lh) = rest.split_at_mut(t);
    for i in 0..t {
        let o = &c.out[i * width + h * d..][..d];
        let g = &c.dout[i * width + h * d..][..d];
        dh[i] = k.dot(o, g);
        lh[i] = c.lse[i * c.nh + h];
    }
    dkh.fill(0.0);
    dvh.fill(0.0);
    let mut grads = HeadGrads {
        dk: dkh,
        dv: dvh,
        delta: dh,
        lse: lh,
    };
    // Scratch: Qᵀ·scale and dOᵀ (d × BQ per query block), P and dS tiles (BK × BQ).
    with_f32(1, 2 * d * tq + 2 * BK * BQ, |buf| {
        let (qt, rest) = buf.split_at_mut(d * tq);
        let (dot_, rest) = rest.split_at_mut(d * tq);
        let (p, ds) = rest.split_at_mut(BK * BQ);
        // Block `ib` of queries at `ib·d·BQ`, BQ columns per row of d.
        for i0 in (0..t).step_by(BQ) {
            let (nq, at) = (BQ.min(t - i0), i0 * d);
            transpose_block(k, &mut qt[at..], c.q, width, h * d, i0, nq, d, c.scale);
            transpose_block(k, &mut dot_[at..], c.dout, width, h * d, i0, nq, d, 1.0);
        }
        let mut j0 = 0;
        while j0 < t {
            let nk = BK.min(t - j0);
            let j1 = j0 + nk;
            let mut i0 = j0 / BQ * BQ;
            while i0 < t {
                let nq = BQ.min(t - i0);
                let i1 = i0 + nq;
                if c.starts
                    .is_some_and(|st| st[i0..i1].iter().all(|&x| x >= j1))
                {
                    i0 += nq;
                    continue;
                }
                let tile = Tile { h, j0, nk, i0, nq };
                tile_backward(c, tile, (qt, dot_), (p, ds), &mut grads, dq_part);
                i0 += nq;
            }
            j0 += nk;
        }
    });
}

/// One head's gradient buffers (T × d each) and its per-query Δ and log-sum-exp (T each).
struct HeadGrads<'a> {
    dk: &'a mut [f32],
    dv: &'a mut [f32],
    delta: &'a mut [f32],
    lse: &'a mut [f32],
}

/// A tile of one query head: keys `j0 .. j0 + nk` × queries `i0 .. i0 + nq`.
#[derive(Clone, Copy)]
struct Tile {
    h: usize,
    j0: usize,
    nk: usize,
    i0: usize,
    nq: usize,
}

/// One tile's share of the gradients: recomputes its probabilities P from the log-sum-exp,
/// then adds dV_j += Pᵀ·dO_i, dK_j += dSᵀ·Q_i·scale and dQ_i += dS·K_j·scale with
/// dS = P ⊙ (dP − Δ). `qt`, `dot_`: the head's Qᵀ·scale and dOᵀ; `p`, `ds`: BK × BQ tiles.
fn tile_backward(
    c: &BackwardCall<'_>,
    tile: Tile,
    (qt, dot_): (&[f32], &[f32]),
    (p, ds): (&mut [f32], &mut [f32]),
    g: &mut HeadGrads<'_>,
    dq_part: &mut ColumnPart<'_>,
) {
    let Tile { h, j0, nk, i0, nq } = tile;
    let (k, d, width, kvw) = (c.k, c.d, c.width, c.kvw);
    let (j1, i1) = (j0 + nk, i0 + nq);
    let koff = (h / c.group) * d;
    // Sᵀ = K_j · (Q_i·scale)ᵀ, then P = exp(S − lse).
    let qb = (&qt[i0 * d..], BQ, nq);
    key_scores(k, p, &c.kc[j0 * kvw + koff..], kvw, nk, qb, d);
    if tile_needs_mask(j0, j1, i0, i1, 0, c.starts) {
        mask_tile(p, BQ, nk, nq, j0, i0, 0, c.starts);
    }
    (k.ew.probs_tile)(p, nk, nq, BQ, &g.lse[i0..i1], c.fast);
    // dV_j += Pᵀ_tile · dO_i.
    let mut dvo = Out::new(&mut g.dv[j0 * d..], d, 1, true);
    k.sgemm(
        &Sgemm {
            m: nk,
            n: d,
            k: nq,
            r: p,
            rs: BQ,
            cs: 1,
            l: &c.dout[i0 * width + h * d..],
            ldb: width,
            alpha: 1.0,
        },
        &mut dvo,
    );
    // dPᵀ = V_j · dO_iᵀ, then dS = P ⊙ (dP − Δ).
    let mut dso = Out::new(ds, BQ, 1, false);
    k.sgemm(
        &Sgemm {
            m: nk,
            n: nq,
            k: d,
            r: &c.vc[j0 * kvw + koff..],
            rs: kvw,
            cs: 1,
            l: &dot_[i0 * d..],
            ldb: BQ,
            alpha: 1.0,
        },
        &mut dso,
    );
    (k.ew.dsoftmax_tile)(ds, p, nk, nq, BQ, &g.delta[i0..i1]);
    // dK_j += dSᵀ_tile · Q_i · scale.
    let mut dko = Out::new(&mut g.dk[j0 * d..], d, 1, true);
    k.sgemm(
        &Sgemm {
            m: nk,
            n: d,
            k: nq,
            r: ds,
            rs: BQ,
            cs: 1,
            l: &c.q[i0 * width + h * d..],
            ldb: width,
            alpha: c.scale,
        },
        &mut dko,
    );
    // dQ_i += dS · K_j · scale.
    let mut dqo = dq_part.out(i0, h * d, width, 1, true);
    k.sgemm(
        &Sgemm {
            m: nq,
            n: d,
            k: nk,
            r: ds,
            rs: 1,
            cs: BQ,
            l: &c.kc[j0 * kvw + koff..],
            ldb: kvw,
            alpha: c.scale,
        },
        &mut dqo,
    );
}

/// Sums the heads of each group into `dk`/`dv` (in a fixed order: deterministic) and hands
/// out Δ, from the per-head buffers `partial` of [`head_backward`].
fn sum_heads(
    c: &BackwardCall<'_>,
    dk: &mut [f32],
    dv: &mut [f32],
    delta: &mut [f32],
    partial: &[f32],
) {
    let (t, d, nh, kvw) = (c.t, c.d, c.nh, c.kvw);
    let per = 2 * t * d + 2 * t;
    dk.par_chunks_mut(kvw)
        .zip(dv.par_chunks_mut(kvw))
        .zip(delta.par_chunks_mut(nh))
        .enumerate()
        .for_each(|(j, ((dkr, dvr), dr))| {
            for h in 0..nh {
                let ph = &partial[h * per..(h + 1) * per];
                let koff = (h / c.group) * d;
                for (a, &b) in dkr[koff..koff + d].iter_mut().zip(&ph[j * d..(j + 1) * d]) {
                    *a += b;
                }
                for (a, &b) in dvr[koff..koff + d]
                    .iter_mut()
                    .zip(&ph[t * d + j * d..t * d + (j + 1) * d])
                {
                    *a += b;
                }
                dr[h] = ph[2 * t * d + j];
            }
        });
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_near, doc_starts, gen};
    use super::super::twin::{backward_twin, forward_twin};
    use super::*;

    const SHAPES: [AttnShape; 3] = [
        AttnShape {
            n_head: 9,
            n_head_kv: 3,
            head_dim: 64,
            scale: 0.125,
            precision: Precision::Exact,
        },
        AttnShape {
            n_head: 2,
            n_head_kv: 2,
            head_dim: 5,
            // Not 1/√5: the scale is the model's (Gemma's query_pre_attn_scalar).
            scale: 0.37,
            precision: Precision::Exact,
        },
        AttnShape {
            n_head: 4,
            n_head_kv: 1,
            head_dim: 33,
            scale: 0.174_077_66,
            precision: Precision::Exact,
        },
    ];

    #[test]
    fn f32_tiles_match_the_scalar_twin_on_every_level_over_odd_shapes_and_masks() {
        for level in crate::simd::Level::available() {
            let kern = Kernels::for_level(level).unwrap();
            for s in SHAPES {
                let (qw, kw) = (s.n_head * s.head_dim, s.n_head_kv * s.head_dim);
                for (pos0, t) in [
                    (0usize, 1usize),
                    (0, 31),
                    (0, 33),
                    (0, 97),
                    (5, 1),
                    (40, 33),
                    (3, 70),
                ] {
                    let n = pos0 + t;
                    let (q, k, v) = (gen(1, t * qw), gen(2, n * kw), gen(3, n * kw));
                    let docs = doc_starts(n, &[7, 30, 2, 64]);
                    let starts_abs: Vec<usize> = docs[pos0..].to_vec();
                    for starts in [None, Some(&starts_abs[..])] {
                        let mut want = vec![0f32; t * qw];
                        let mut want_l = vec![0f32; t * s.n_head];
                        forward_twin(&mut want, Some(&mut want_l), &q, &k, &v, pos0, s, starts);
                        let mut got = vec![f32::NAN; t * qw];
                        let mut got_l = vec![f32::NAN; t * s.n_head];
                        forward_f32(
                            &kern,
                            &mut got,
                            Some(&mut got_l),
                            &q,
                            &k,
                            &v,
                            pos0,
                            s,
                            starts,
                        );
                        let what = format!(
                            "{level:?} {s:?} pos0 {pos0} t {t} starts {}",
                            starts.is_some()
                        );
                        assert_near(&format!("fwd {what}"), &got, &want, 2e-5);
                        assert_near(&format!("lse {what}"), &got_l, &want_l, 2e-5);
                        if pos0 != 0 {
                            continue;
                        }
                        let dout = gen(4, t * qw);
                        let mut want_g = [
                            vec![0.5f32; t * qw],
                            vec![0.25f32; t * kw],
                            vec![-0.5f32; t * kw],
                        ];
                        let mut want_d = vec![0f32; t * s.n_head];
                        let [wq, wk, wv] = &mut want_g;
                        backward_twin(
                            wq,
                            wk,
                            wv,
                            &mut want_d,
                            &dout,
                            &q,
                            &k,
                            &v,
                            &want,
                            &want_l,
                            s,
                            starts,
                        );
                        let mut got_g = [
                            vec![0.5f32; t * qw],
                            vec![0.25f32; t * kw],
                            vec![-0.5f32; t * kw],
                        ];
                        let mut got_d = vec![0f32; t * s.n_head];
                        let [gq, gk, gv] = &mut got_g;
                        backward_f32(
                            &kern,
                            [gq, gk, gv, &mut got_d],
                            [&dout, &q, &k, &v, &want, &want_l],
                            s,
                            starts,
                        );
                        for (name, g, w) in [
                            ("dq", &got_g[0], &want_g[0]),
                            ("dk", &got_g[1], &want_g[1]),
                            ("dv", &got_g[2], &want_g[2]),
                        ] {
                            assert_near(&format!("{name} {what}"), g, w, 1e-4);
                        }
                        assert_near(&format!("delta {what}"), &got_d, &want_d, 1e-5);
                    }
                }
            }
        }
    }
}
