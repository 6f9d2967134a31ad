//! K-quant quantizers: Q4_K and Q6_K, following llama.cpp's reference (no importance matrix)
//! quantizers `quantize_row_q4_K_ref` and `quantize_row_q6_K_ref`.
//!
//! Both work per 256-element super-block in two passes: first fit a scale (and for Q4_K a min)
//! per sub-block with a small search that minimises a weighted squared error
//! ([`make_qkx2_quants`] for the asymmetric Q4_K, [`make_qx_quants`] for the symmetric Q6_K);
//! then quantize those sub-block scales themselves (6 bits under an f16 super-scale for Q4_K,
//! int8 for Q6_K) and requantize every value against the scale it will actually be decoded
//! with. Written from the algorithm's description in ggml-quants.c with the same f32
//! operation order; llama.cpp built with FMA contraction may differ in the last bit of a
//! search step, so only the error level (not the bytes) is compared against llama.cpp.

use super::super::blocks::{BlockQ4_K, BlockQ6_K};
use super::super::types::QK_K;
use super::kquants::get_scale_min_k4;
use super::{f16_to_f32, f32_to_f16, for_each_block_mut, nearest_int};

/// Below this magnitude a group counts as all zero (ggml's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// Fits `x ≈ scale · L − the_min` with `L ∈ 0..=nmax` (and `the_min ≥ 0`), minimising
/// Σ wᵢ·errᵢ² (or Σ wᵢ·|errᵢ| with `use_mad`). Starts from the min/max fit, then tries
/// `nstep + 1` candidate inverse scales `(nmax + rmin + rdelta·is) / (max − min)`, solving the
/// weighted least-squares scale and min for each rounding. Returns `(scale, the_min)`.
#[allow(clippy::too_many_arguments)]
pub fn make_qkx2_quants<const N: usize>(
    nmax: i32,
    x: &[f32; N],
    weights: &[f32; N],
    l_out: &mut [u8; N],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..N {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..N {
        let l = nearest_int(iscale * (x[i] - min)).min(nmax).max(0);
        l_out[i] = l as u8;
        best_error += weights[i] * err(scale * l as f32 + min - x[i]);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; N];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..N {
            let l = nearest_int(iscale * (x[i] - min)).min(nmax).max(0);
            laux[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..N {
                cur_error += weights[i] * err(this_scale * laux[i] as f32 + this_min - x[i]);
            }
            if cur_error < best_error {
                *l_out = laux;
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Fits `x ≈ scale · (L − nmax)` with `L ∈ 0..2·nmax`, weights `x²` (ggml's `make_qx_quants`
/// with `rmse_type = 1` and no importance weights): the max-magnitude fit, then 18 nearby
/// inverse scales, keeping the least-squares scale of the best rounding. Returns the scale
/// (negative when the largest-magnitude value is positive).
pub fn make_qx_quants<const N: usize>(nmax: i32, x: &[f32; N], l_out: &mut [u8; N]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).min(nmax - 1).max(-nmax);
    // Weighted sums Σ w·x·l and Σ w·l² for the rounding at `iscale`, w = x².
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = quant(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let mut store = |iscale: f32| {
        for (o, &v) in l_out.iter_mut().zip(x) {
            *o = (nmax + quant(iscale, v)) as u8;
        }
    };
    let iscale = -(nmax as f32) / max;
    store(iscale);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            store(iscale);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Quantizes one Q4_K super-block (8 sub-blocks of 32, 4-bit values, 6-bit scales and mins).
pub fn quantize_block_q4_k(x: &[f32; QK_K]) -> BlockQ4_K {
    let mut l_all = [0u8; QK_K];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut max_scale = 0.0f32; // scales are positive: the min is subtracted
    let mut max_min = 0.0f32;
    for (j, (xs, ls)) in x
        .chunks_exact(32)
        .zip(l_all.chunks_exact_mut(32))
        .enumerate()
    {
        let (Ok(xs), Ok(ls)) = (<&[f32; 32]>::try_from(xs), <&mut [u8; 32]>::try_from(ls)) else {
            continue; // unreachable: chunks_exact(32)
        };
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights = xs.map(|v| av_x + v.abs());
        let (s, m) = make_qkx2_quants(15, xs, &weights, ls, -1.0, 0.1, 20, false);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }

    // Quantize the sub-block scales and mins to 6 bits under the f16 super-scales.
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = f32_to_f16(max_scale / 63.0);
    let dmin = f32_to_f16(max_min / 63.0);

    // Requantize against the scales as they will be decoded.
    for (j, (xs, ls)) in x
        .chunks_exact(32)
        .zip(l_all.chunks_exact_mut(32))
        .enumerate()
    {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dj = f16_to_f32(d) * sc as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = f16_to_f32(dmin) * m as f32;
        for (l, &v) in ls.iter_mut().zip(xs) {
            *l = nearest_int((v + dm) / dj).clamp(0, 15) as u8;
        }
    }

    let mut qs = [0u8; QK_K / 2];
    for (q, l) in qs.chunks_exact_mut(32).zip(l_all.chunks_exact(64)) {
        for i in 0..32 {
            q[i] = l[i] | (l[i + 32] << 4);
        }
    }
    BlockQ4_K {
        d,
        dmin,
        scales: packed,
        qs,
    }
}

/// Quantizes one Q6_K super-block (16 sub-blocks of 16, 6-bit values, int8 scales).
pub fn quantize_block_q6_k(x: &[f32; QK_K]) -> BlockQ6_K {
    let mut l_all = [0u8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for (ib, (xs, ls)) in x
        .chunks_exact(16)
        .zip(l_all.chunks_exact_mut(16))
        .enumerate()
    {
        let (Ok(xs), Ok(ls)) = (<&[f32; 16]>::try_from(xs), <&mut [u8; 16]>::try_from(ls)) else {
            continue; // unreachable: chunks_exact(16)
        };
        let s = make_qx_quants(32, xs, ls);
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        return BlockQ6_K {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: [0; QK_K / 16],
            d: f32_to_f16(0.0),
        };
    }

    let iscale = -128.0 / max_scale;
    let d = f32_to_f16(1.0 / iscale);
    let sc: [i8; 16] = scales.map(|s| nearest_int(iscale * s).min(127) as i8);

    for (j, (xs, ls)) in x
        .chunks_exact(16)
        .zip(l_all.chunks_exact_mut(16))
        .enumerate()
    {
        let dj = f16_to_f32(d) * sc[j] as f32;
        if dj == 0.0 {
            continue;
        }
        for (l, &v) in ls.iter_mut().zip(xs) {
            *l = (nearest_int(v / dj).clamp(-32, 31) + 32) as u8;
        }
    }

    let mut ql = [0u8; QK_K / 2];
    let mut qh = [0u8; QK_K / 4];
    for c in 0..2 {
        let l = &l_all[128 * c..128 * c + 128];
        for i in 0..32 {
            let (q1, q2, q3, q4) = (l[i], l[i + 32], l[i + 64], l[i + 96]);
            ql[64 * c + i] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
            ql[64 * c + i + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
            qh[32 * c + i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    BlockQ6_K {
        ql,
        qh,
        scales: sc,
        d,
    }
}

/// f32 → Q4_K row (length a multiple of 256).
pub fn quantize_row_q4_k(src: &[f32], dst: &mut [u8]) {
    for_each_block_mut::<QK_K, { BlockQ4_K::SIZE }>(src, dst, |x, b| {
        *b = quantize_block_q4_k(x).to_bytes()
    });
}

/// f32 → Q6_K row (length a multiple of 256).
pub fn quantize_row_q6_k(src: &[f32], dst: &mut [u8]) {
    for_each_block_mut::<QK_K, { BlockQ6_K::SIZE }>(src, dst, |x, b| {
        *b = quantize_block_q6_k(x).to_bytes()
    });
}
