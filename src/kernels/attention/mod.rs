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
//! - any other [`Real`] (the f64 gradient checks): the scalar twin (`twin`), one query row and
//!   head at a time, in two sweeps (query rows for `dq`, key rows for `dk`, `dv`).
//!
//! Where each part lives: this file holds the contract (geometry, checks, the entry points
//! that pick a path) and its tests against independent references; `twin` the scalar twin
//! ([`forward_twin`], [`backward_twin`]); `tiles` the f32 path's tile primitives
//! (transpose, mask, score tiles, per-head scratch); `flash` the f32 forward and backward
//! over them, with their test against the twin.

use super::matmul::Precision;
use super::num::Real;
use super::scratch::ScratchNeed;
use crate::simd;

mod flash;
mod tiles;
mod twin;

use flash::{backward_f32, forward_f32};
use tiles::HeadScratch;
pub use twin::{backward_twin, forward_twin};

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

    pub(super) fn gen(seed: usize, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104729) % 1000) as f32 / 500.0 - 1.0) * 2.0)
            .collect()
    }

    /// Packed documents: query i starts at the first position of its document.
    pub(super) fn doc_starts(t: usize, lens: &[usize]) -> Vec<usize> {
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

    pub(super) fn assert_near(what: &str, a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}: element {i}: {x} vs {y}"
            );
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
