//! The tile primitives of the f32 attention path, shared by its forward and backward: a
//! query block transposed into columns, the causal and document mask of a score tile, a
//! transposed score tile through the micro-gemm, and the forward's per-head scratch.

use super::{BK, BQ};
use crate::simd::{Kernels, Out, Sgemm};

/// One query block of a head transposed into columns: `dst[p·BQ + i] = src[(i0 + i)·stride +
/// off + p] · a` for `p < d`, `i < n ≤ BQ` (columns `n .. BQ` zero), through the dispatched
/// row interleave.
#[allow(clippy::too_many_arguments)]
pub(super) fn transpose_block(
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
pub(super) fn mask_tile(
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
pub(super) fn tile_needs_mask(
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
pub(super) fn key_scores(
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
pub(super) struct HeadScratch<'a> {
    pub(super) qt: &'a mut [f32],
    pub(super) o: &'a mut [f32],
    pub(super) st: &'a mut [f32],
    pub(super) m: &'a mut [f32],
    pub(super) l: &'a mut [f32],
    pub(super) corr: &'a mut [f32],
}

impl<'a> HeadScratch<'a> {
    /// Floats it takes for heads of `d` dimensions.
    pub(super) fn len(d: usize) -> usize {
        d * BQ + BQ * d + BK * BQ + 3 * BQ
    }

    /// Carves it from `buf` (at least [`HeadScratch::len`] floats).
    pub(super) fn split(buf: &'a mut [f32], d: usize) -> Self {
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
