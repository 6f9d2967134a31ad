//! Causal grouped-query attention, computed flash-style: keys are visited in tiles with a
//! running maximum and sum, so no (T × T) score matrix is ever stored. The forward pass can
//! keep each row's log-sum-exp; the backward pass recomputes the probabilities from it.
//!
//! An optional per-query lower bound `starts` (document masking: several records packed in
//! one sequence) restricts query row `i` to keys `starts[i] ..= pos0 + i`; `None` is the
//! plain causal mask (`starts[i] = 0`).
//!
//! Two implementations with one contract:
//! - f32 (the engine): tiles of [`BQ`] queries × [`BK`] keys through the dispatched f32
//!   micro-gemm and element-wise kernels. Score tiles are kept transposed (keys × queries) so
//!   the per-query softmax statistics are vectors. The forward runs query blocks in
//!   parallel (all heads per block); a single block without statistics to keep (a
//!   generation step) runs its heads in parallel instead, on the spinning team when one is
//!   active. The backward (FlashAttention-2 style: key blocks outer,
//!   query blocks inner, probabilities recomputed from the log-sum-exp) runs one task per
//!   query head: each task owns that head's `dq` columns and writes its `dk`/`dv`
//!   contributions to a per-head buffer, summed over the heads of a group in a fixed order
//!   afterwards — deterministic, no atomics.
//! - any other [`Real`] (the f64 gradient checks): the scalar twin below, one query row and
//!   head at a time, in two sweeps (query rows for `dq`, key rows for `dk`, `dv`).

use rayon::prelude::*;

use super::matmul::Precision;
use super::num::{axpy, Real};
use super::scratch::{with_f32, ScratchNeed};
use crate::simd::{self, Kernels, Out, Sgemm, SharedColumns};
use crate::util::num::dot;

/// Head geometry of an attention layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads; `n_head` is a multiple of it (grouped-query attention).
    pub n_head_kv: usize,
    /// Dimensions per head.
    pub head_dim: usize,
    /// Scale of the scores `q·k` (1/√head_dim for most models; [`AttnShape::default_scale`]).
    pub scale: f32,
    /// `Fast` takes the softmax's exponentials from the f32 [`crate::simd::ew::exp_fast`]
    /// (about one ulp) instead of the correctly rounded one.
    pub precision: Precision,
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
        F::from_f32(self.scale)
    }

    /// 1/√head_dim.
    pub fn default_scale(head_dim: usize) -> f32 {
        1.0 / (head_dim as f32).sqrt()
    }
}

/// Keys visited per tile of the scalar twin.
const TILE: usize = 32;
/// Queries per block of the f32 path.
pub const BQ: usize = 32;
/// Keys per tile of the f32 path.
pub const BK: usize = 64;

/// Per-thread scratch one f32 attention call over `t` queries needs (forward, or forward
/// and backward).
pub fn scratch_need(t: usize, s: AttnShape, backward: bool) -> ScratchNeed {
    let d = s.head_dim;
    let mut n = ScratchNeed::default();
    n.f32[1] = HeadScratch::len(d);
    if backward {
        n.f32[1] = n.f32[1].max(2 * d * t.next_multiple_of(BQ) + 2 * BK * BQ);
        n.f32[3] = s.n_head * (2 * t * d + 2 * t);
    }
    n
}

/// Checks `starts` against `t` queries at `pos0`.
fn check_starts(starts: Option<&[usize]>, t: usize, pos0: usize) {
    if let Some(st) = starts {
        assert_eq!(
            st.len(),
            t,
            "attention: starts must have one entry per query"
        );
        assert!(
            st.iter().enumerate().all(|(i, &s)| s <= pos0 + i),
            "attention: starts[i] must not exceed the query's position"
        );
    }
}

/// `out` (T, n_head·head_dim) ← softmax(q·kᵀ/√head_dim)·v for queries at positions
/// `pos0 .. pos0+T`, query `i` attending to key positions `starts[i] ..= pos0 + i`
/// (`starts = None`: from 0). With `lse` (T, n_head), each row's log-sum-exp of scaled scores
/// is kept for the backward pass.
///
/// `k`, `v`: (≥ pos0+T, n_head_kv·head_dim), e.g. a layer's cache rows. Runs in parallel on
/// the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward<F: Real>(
    out: &mut [F],
    lse: Option<&mut [F]>,
    q: &[F],
    k: &[F],
    v: &[F],
    pos0: usize,
    s: AttnShape,
    starts: Option<&[usize]>,
) {
    let (width, kv_width) = (s.q_width(), s.kv_width());
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
    if let Some(l) = &lse {
        assert_eq!(l.len(), t * s.n_head, "attention: lse size");
    }
    check_starts(starts, t, pos0);
    let n = k.len() / kv_width;
    let (k, v) = (&k[..n * kv_width], &v[..n * kv_width]);
    if !is_f32::<F>() {
        forward_twin(out, lse, q, k, v, pos0, s, starts);
        return;
    }
    let (Some(q), Some(k), Some(v), Some(out)) =
        (F::as_f32(q), F::as_f32(k), F::as_f32(v), F::as_f32_mut(out))
    else {
        unreachable!("F is f32");
    };
    let lse = lse.and_then(|l| F::as_f32_mut(l));
    forward_f32(simd::kernels(), out, lse, q, k, v, pos0, s, starts);
}

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

/// Gradients of [`attention_forward`] at `pos0 = 0` (a whole sequence): `dq += …`,
/// `dk += …`, `dv += …` from `dout`, given the forward's `out` and `lse` and the same
/// `starts`.
///
/// `delta` (T, n_head), a scratch, is overwritten with `Δ_i = dout_i · out_i`.
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
    starts: Option<&[usize]>,
) {
    let (width, kv_width) = (s.q_width(), s.kv_width());
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
    check_starts(starts, t, 0);
    if !is_f32::<F>() {
        backward_twin(dq, dk, dv, delta, dout, q, k, v, out, lse, s, starts);
        return;
    }
    let ins = (
        F::as_f32(dout),
        F::as_f32(q),
        F::as_f32(k),
        F::as_f32(v),
        F::as_f32(out),
        F::as_f32(lse),
    );
    let outs = (
        F::as_f32_mut(dq),
        F::as_f32_mut(dk),
        F::as_f32_mut(dv),
        F::as_f32_mut(delta),
    );
    let (
        (Some(dout), Some(q), Some(k), Some(v), Some(out), Some(lse)),
        (Some(dq), Some(dk), Some(dv), Some(delta)),
    ) = (ins, outs)
    else {
        unreachable!("F is f32");
    };
    backward_f32(
        simd::kernels(),
        [dq, dk, dv, delta],
        [dout, q, k, v, out, lse],
        s,
        starts,
    );
}

fn is_f32<F: Real>() -> bool {
    F::as_f32(&[]).is_some()
}

/// The scalar twin of the backward (any float type), adding into `dq`, `dk`, `dv` and
/// overwriting `delta` as [`attention_backward`] does: query rows in parallel for `dq` and
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

// ------------------------------------------------------------------------------------------
// The f32 path.

/// One query block of a head transposed into columns: `dst[p·BQ + i] = src[(i0 + i)·stride +
/// off + p] · a` for `p < d`, `i < n ≤ BQ` (columns `n .. BQ` zero), through the dispatched
/// row interleave.
#[allow(clippy::too_many_arguments)]
fn transpose_block(
    k: &Kernels,
    dst: &mut [f32],
    src: &[f32],
    stride: usize,
    off: usize,
    i0: usize,
    n: usize,
    d: usize,
    a: f32,
) {
    let dst = &mut dst[..d * BQ];
    k.interleave_rows(&src[i0 * stride + off..], n, stride, dst, BQ);
    if a != 1.0 {
        dst.iter_mut().for_each(|x| *x *= a);
    }
}

/// Sets the scores of a transposed tile (keys `j0 ..` × queries `i0 ..`, rows `ld` apart)
/// that query `i` may not see (key past `pos0 + i`, or before `starts[i]`) to −∞.
#[allow(clippy::too_many_arguments)]
fn mask_tile(
    st: &mut [f32],
    ld: usize,
    nk: usize,
    nq: usize,
    j0: usize,
    i0: usize,
    pos0: usize,
    starts: Option<&[usize]>,
) {
    for jj in 0..nk {
        let j = j0 + jj;
        let row = &mut st[jj * ld..jj * ld + nq];
        for (ii, x) in row.iter_mut().enumerate() {
            let i = i0 + ii;
            let lo = starts.map_or(0, |st| st[i]);
            if j > pos0 + i || j < lo {
                *x = f32::NEG_INFINITY;
            }
        }
    }
}

/// Whether a tile (keys `j0..j1`, queries `i0..i1`) needs masking.
fn tile_needs_mask(
    j0: usize,
    j1: usize,
    i0: usize,
    i1: usize,
    pos0: usize,
    starts: Option<&[usize]>,
) -> bool {
    j1 > pos0 + i0 + 1 || starts.is_some_and(|st| st[i0..i1].iter().any(|&s| s > j0))
}

/// A transposed score tile: `st[jj·BQ + i] = K[jj] · Qt[:, i]` for `nk` keys (rows `kvw`
/// apart from `keys`) and the `nq` queries of `qt` (d × `ldq`, already scaled).
fn key_scores(
    k: &Kernels,
    st: &mut [f32],
    keys: &[f32],
    kvw: usize,
    nk: usize,
    (qt, ldq, nq): (&[f32], usize, usize),
    d: usize,
) {
    k.sgemm(
        &Sgemm {
            m: nk,
            n: nq,
            k: d,
            r: keys,
            rs: kvw,
            cs: 1,
            l: qt,
            ldb: ldq,
            alpha: 1.0,
        },
        &mut Out::new(st, BQ, 1, false),
    );
}

/// The f32 forward's scratch for one head of one query block: Qᵀ (d × BQ), O (BQ × d),
/// scores (BK × BQ), and the running max, sum and correction (BQ each).
struct HeadScratch<'a> {
    qt: &'a mut [f32],
    o: &'a mut [f32],
    st: &'a mut [f32],
    m: &'a mut [f32],
    l: &'a mut [f32],
    corr: &'a mut [f32],
}

impl<'a> HeadScratch<'a> {
    /// Floats it takes for heads of `d` dimensions.
    fn len(d: usize) -> usize {
        d * BQ + BQ * d + BK * BQ + 3 * BQ
    }

    /// Carves it from `buf` (at least [`HeadScratch::len`] floats).
    fn split(buf: &'a mut [f32], d: usize) -> Self {
        let (qt, rest) = buf.split_at_mut(d * BQ);
        let (o, rest) = rest.split_at_mut(BQ * d);
        let (st, rest) = rest.split_at_mut(BK * BQ);
        let (m, rest) = rest.split_at_mut(BQ);
        let (l, rest) = rest.split_at_mut(BQ);
        HeadScratch {
            qt,
            o,
            st,
            m,
            l,
            corr: &mut rest[..BQ],
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn forward_f32(
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

/// The f32 backward: one task per query head (see the module docs).
fn backward_f32(
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
    let tq = t.next_multiple_of(BQ);
    let scale = s.scale::<f32>();
    let fast = s.precision == Precision::Fast;
    // Per head: dk_h, dv_h (T × d each), Δ_h, lse_h (T each).
    let per = 2 * t * d + 2 * t;
    with_f32(3, nh * per, |partial| {
        let mut dqs = SharedColumns::new(dq, width);
        let heads = partial.par_chunks_mut(per);
        dqs.par_parts_zip(nh * d, d, heads, |h, mut dq_part, ph| {
            let (dkh, rest) = ph.split_at_mut(t * d);
            let (dvh, rest) = rest.split_at_mut(t * d);
            let (dh, lh) = rest.split_at_mut(t);
            let koff = (h / group) * d;
            for i in 0..t {
                let o = &out[i * width + h * d..][..d];
                let g = &dout[i * width + h * d..][..d];
                dh[i] = k.dot(o, g);
                lh[i] = lse[i * nh + h];
            }
            dkh.fill(0.0);
            dvh.fill(0.0);
            // Scratch: Qᵀ·scale and dOᵀ (d × BQ per query block), P and dS tiles (BK × BQ).
            with_f32(1, 2 * d * tq + 2 * BK * BQ, |buf| {
                let (qt, rest) = buf.split_at_mut(d * tq);
                let (dot_, rest) = rest.split_at_mut(d * tq);
                let (p, ds) = rest.split_at_mut(BK * BQ);
                // Block `ib` of queries at `ib·d·BQ`, BQ columns per row of d.
                for i0 in (0..t).step_by(BQ) {
                    let (nq, at) = (BQ.min(t - i0), i0 * d);
                    transpose_block(k, &mut qt[at..], q, width, h * d, i0, nq, d, scale);
                    transpose_block(k, &mut dot_[at..], dout, width, h * d, i0, nq, d, 1.0);
                }
                let mut j0 = 0;
                while j0 < t {
                    let nk = BK.min(t - j0);
                    let j1 = j0 + nk;
                    let mut i0 = j0 / BQ * BQ;
                    while i0 < t {
                        let nq = BQ.min(t - i0);
                        let i1 = i0 + nq;
                        if starts.is_some_and(|st| st[i0..i1].iter().all(|&x| x >= j1)) {
                            i0 += nq;
                            continue;
                        }
                        // Sᵀ = K_j · (Q_i·scale)ᵀ, then P = exp(S − lse).
                        let qb = (&qt[i0 * d..], BQ, nq);
                        key_scores(k, p, &kc[j0 * kvw + koff..], kvw, nk, qb, d);
                        if tile_needs_mask(j0, j1, i0, i1, 0, starts) {
                            mask_tile(p, BQ, nk, nq, j0, i0, 0, starts);
                        }
                        (k.ew.probs_tile)(p, nk, nq, BQ, &lh[i0..i1], fast);
                        // dV_j += Pᵀ_tile · dO_i.
                        let mut dvo = Out::new(&mut dvh[j0 * d..], d, 1, true);
                        k.sgemm(
                            &Sgemm {
                                m: nk,
                                n: d,
                                k: nq,
                                r: p,
                                rs: BQ,
                                cs: 1,
                                l: &dout[i0 * width + h * d..],
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
                                r: &vc[j0 * kvw + koff..],
                                rs: kvw,
                                cs: 1,
                                l: &dot_[i0 * d..],
                                ldb: BQ,
                                alpha: 1.0,
                            },
                            &mut dso,
                        );
                        (k.ew.dsoftmax_tile)(ds, p, nk, nq, BQ, &dh[i0..i1]);
                        // dK_j += dSᵀ_tile · Q_i · scale.
                        let mut dko = Out::new(&mut dkh[j0 * d..], d, 1, true);
                        k.sgemm(
                            &Sgemm {
                                m: nk,
                                n: d,
                                k: nq,
                                r: ds,
                                rs: BQ,
                                cs: 1,
                                l: &q[i0 * width + h * d..],
                                ldb: width,
                                alpha: scale,
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
                                l: &kc[j0 * kvw + koff..],
                                ldb: kvw,
                                alpha: scale,
                            },
                            &mut dqo,
                        );
                        i0 += nq;
                    }
                    j0 += nk;
                }
            });
        });
        // Sum the group's heads into dk/dv (fixed order), and hand out Δ.
        let partial = &*partial;
        dk.par_chunks_mut(kvw)
            .zip(dv.par_chunks_mut(kvw))
            .zip(delta.par_chunks_mut(nh))
            .enumerate()
            .for_each(|(j, ((dkr, dvr), dr))| {
                for h in 0..nh {
                    let ph = &partial[h * per..(h + 1) * per];
                    let koff = (h / group) * d;
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
            scale: AttnShape::default_scale(6),
            precision: Precision::Exact,
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
            attention_forward(&mut out, Some(&mut lse), &q, &k, &v, pos0, s, None);
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
            attention_forward(&mut out2, None, &q, &k, &v, pos0, s, None);
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
                    scale: AttnShape::default_scale(3),
                    precision: Precision::Exact,
                },
                5usize,
            ),
            (
                AttnShape {
                    n_head: 4,
                    n_head_kv: 2,
                    head_dim: 4,
                    scale: AttnShape::default_scale(4),
                    precision: Precision::Exact,
                },
                7,
            ),
            (
                AttnShape {
                    n_head: 3,
                    n_head_kv: 1,
                    head_dim: 5,
                    scale: AttnShape::default_scale(5),
                    precision: Precision::Exact,
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
                attention_forward(&mut out, None, &q, &k, &v, 0, s, None);
                weighted(&out, &w)
            };
            let (q, k, v) = split(&x);
            let mut out = vec![0.0; t * qw];
            let mut lse = vec![0.0; t * s.n_head];
            attention_forward(&mut out, Some(&mut lse), &q, &k, &v, 0, s, None);
            let mut grads = vec![0.0; x.len()];
            let (dq, rest) = grads.split_at_mut(t * qw);
            let (dk, dv) = rest.split_at_mut(t * kw);
            let mut delta = vec![0.0; t * s.n_head];
            attention_backward(dq, dk, dv, &mut delta, &w, &q, &k, &v, &out, &lse, s, None);
            assert_close(
                &format!("attention {s:?} t {t}"),
                &grads,
                &numeric(&x, loss),
            );
        }
    }

    fn gen(seed: usize, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 / 500.0 - 1.0) * 2.0)
            .collect()
    }

    /// Packed documents: query i starts at the first position of its document.
    fn doc_starts(t: usize, lens: &[usize]) -> Vec<usize> {
        let mut st = Vec::with_capacity(t);
        let mut at = 0;
        for &l in lens.iter().cycle() {
            for _ in 0..l {
                if st.len() == t {
                    return st;
                }
                st.push(at);
            }
            at += l;
        }
        st
    }

    fn assert_near(what: &str, a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}: element {i}: {x} vs {y}"
            );
        }
    }

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

    #[test]
    fn document_starts_equal_running_each_document_alone() {
        let s = AttnShape {
            n_head: 4,
            n_head_kv: 2,
            head_dim: 8,
            scale: AttnShape::default_scale(8),
            precision: Precision::Exact,
        };
        let (qw, kw) = (32, 16);
        let lens = [5usize, 40, 1, 20];
        let t: usize = lens.iter().sum();
        let (q, k, v) = (gen(5, t * qw), gen(6, t * kw), gen(7, t * kw));
        let starts = doc_starts(t, &lens);
        let mut packed = vec![0f32; t * qw];
        attention_forward(&mut packed, None, &q, &k, &v, 0, s, Some(&starts));
        let mut at = 0;
        for &l in &lens {
            let mut alone = vec![0f32; l * qw];
            attention_forward(
                &mut alone,
                None,
                &q[at * qw..(at + l) * qw],
                &k[at * kw..(at + l) * kw],
                &v[at * kw..(at + l) * kw],
                0,
                s,
                None,
            );
            assert_near("doc", &packed[at * qw..(at + l) * qw], &alone, 1e-5);
            at += l;
        }
    }

    #[test]
    fn backward_with_starts_matches_central_differences() {
        let s = AttnShape {
            n_head: 4,
            n_head_kv: 2,
            head_dim: 4,
            scale: AttnShape::default_scale(4),
            precision: Precision::Exact,
        };
        let t = 23;
        let starts = doc_starts(t, &[6, 1, 9, 40]);
        let (qw, kw) = (s.n_head * s.head_dim, s.n_head_kv * s.head_dim);
        let x: Vec<f64> = values(t * (qw + 2 * kw), 31)
            .iter()
            .map(|v| v * 1.5)
            .collect();
        let w = values(t * qw, 32);
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
            attention_forward(&mut out, None, &q, &k, &v, 0, s, Some(&starts));
            weighted(&out, &w)
        };
        let (q, k, v) = split(&x);
        let mut out = vec![0.0; t * qw];
        let mut lse = vec![0.0; t * s.n_head];
        attention_forward(&mut out, Some(&mut lse), &q, &k, &v, 0, s, Some(&starts));
        let mut grads = vec![0.0; x.len()];
        let (dq, rest) = grads.split_at_mut(t * qw);
        let (dk, dv) = rest.split_at_mut(t * kw);
        let mut delta = vec![0.0; t * s.n_head];
        attention_backward(
            dq,
            dk,
            dv,
            &mut delta,
            &w,
            &q,
            &k,
            &v,
            &out,
            &lse,
            s,
            Some(&starts),
        );
        assert_close("attention with starts", &grads, &numeric(&x, loss));
    }
}
