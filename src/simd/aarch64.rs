//! ARM64 kernels: NEON f32 micro-gemm, and the int8 kernel in three forms — plain NEON
//! (`smull` + pairwise adds), the dot-product extension (`sdot`, indexed form) and the int8
//! matrix multiply (`smmla`). All `unsafe` of the ARM64 vector code is in this file.
//!
//! On stable Rust the `sdot`/`smmla` intrinsics (`vdotq_s32`, `vmmlaq_s32`) are unstable, so
//! those two instructions are written with `asm!` inside functions compiled with
//! `#[target_feature(enable = "dotprod")]` / `"i8mm"`. NEON is part of the ARM64 baseline,
//! so the element-wise bodies of [`super::ew`] are already vectorized as compiled.
//!
//! Every `#[target_feature]` function here is private and reached only through a table built
//! by [`kernels`] after [`supported`] saw its features; slice bounds are checked by the
//! callers in `simd/mod.rs` before any pointer is formed.

// Register tiles are indexed by row and lane vector together: index loops read clearer.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;
use std::arch::asm;

use super::gemv_i8::QuantTokens;
use super::{I8Lanes, I8Rows, Int8Layout, Kernels, Level, Out, Sgemm};
use crate::quant::GgmlType;

/// Whether the CPU has the features of `level`.
pub(super) fn supported(level: Level) -> bool {
    let neon = std::arch::is_aarch64_feature_detected!("neon");
    let dot = neon && std::arch::is_aarch64_feature_detected!("dotprod");
    match level {
        Level::Neon => neon,
        Level::NeonDotprod => dot,
        Level::NeonI8mm => dot && std::arch::is_aarch64_feature_detected!("i8mm"),
        _ => false,
    }
}

/// The table of `level`.
pub(super) fn kernels(level: Level) -> Option<Kernels> {
    if !supported(level) {
        return None;
    }
    let (int8, i8gemm): (Int8Layout, super::I8GemmFn) = match level {
        Level::Neon => (
            Int8Layout {
                nt: 16,
                group: 4,
                unsigned_weights: false,
            },
            i8gemm_neon,
        ),
        Level::NeonDotprod => (
            Int8Layout {
                nt: 16,
                group: 4,
                unsigned_weights: false,
            },
            i8gemm_sdot,
        ),
        Level::NeonI8mm => (
            Int8Layout {
                nt: 16,
                group: 8,
                unsigned_weights: false,
            },
            i8gemm_smmla,
        ),
        _ => return None,
    };
    Some(Kernels {
        level,
        int8,
        f32_tile: (MR, 16),
        sgemm: sgemm_neon,
        i8gemm,
        dot: super::scalar::dot,
        dequant: |_, _, _| false,
        pack_cols: super::pack_cols_body,
        interleave: super::scalar::interleave_rows,
        gemv: gemv_neon,
        // Without the dot-product extension, `fast` generation takes the f32 block GEMV.
        gemv_i8: if level == Level::Neon {
            |_, _, _, _, _, _| false
        } else {
            gemv_i8_sdot
        },
        peak: (peak_neon, 12 * 4 * 2),
        ew: super::Ew::plain(),
    })
}

/// Hints that the cache line holding `p` will be read soon (`prfm`, ARM64 baseline).
#[inline(always)]
pub(super) fn prefetch(p: *const u8) {
    // SAFETY: `prfm` only hints the cache; it never faults, whatever the address, and
    // touches no register but its address operand.
    unsafe {
        std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags))
    }
}

// ------------------------------------------------------------------------------------------
// Safe entry points (placed only in tables whose features were detected).

fn sgemm_neon(g: &Sgemm<'_>, out: &mut Out<'_>) {
    // SAFETY: NEON is detected (and baseline on ARM64); bounds checked by `Kernels::sgemm`.
    unsafe { sgemm_body(g, out) }
}

fn gemv_neon(ty: GgmlType, w: &[u8], cols: usize, x: &[f32], t: usize, y: &mut [f32]) -> bool {
    // SAFETY: NEON detected (baseline on ARM64); sizes checked by `Kernels::gemv`.
    unsafe { by_block_and_tokens!(ty, t, gemv_rows(w, cols, x, y)) }
}

fn i8gemm_neon(r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
    assert!(
        !r.unsigned && !l.unsigned,
        "the NEON int8 kernel takes i8 operands"
    );
    // SAFETY: NEON detected; bounds checked by `Kernels::i8gemm` (16-lane block, group 4).
    unsafe { i8_groups4(r, l, n, out) }
}

fn i8gemm_sdot(r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
    assert!(!r.unsigned && !l.unsigned, "sdot takes i8 operands");
    // SAFETY: table built after dotprod was detected; bounds checked by `Kernels::i8gemm`.
    unsafe { i8_sdot(r, l, n, out) }
}

fn i8gemm_smmla(r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
    assert!(!r.unsigned && !l.unsigned, "smmla takes i8 operands");
    // SAFETY: table built after i8mm was detected; bounds checked by `Kernels::i8gemm`
    // (16-lane block, group 8).
    unsafe { i8_smmla(r, l, n, out) }
}

fn peak_neon(iters: usize) -> f32 {
    // SAFETY: NEON detected.
    unsafe { peak_body(iters) }
}

// ------------------------------------------------------------------------------------------
// f32 micro-gemm: tiles of up to 8 rows × 16 lanes (4 q-registers per row).

const MR: usize = 8;

#[target_feature(enable = "neon")]
unsafe fn sgemm_body(g: &Sgemm<'_>, out: &mut Out<'_>) {
    let mut j0 = 0;
    while j0 < g.n {
        let nn = (g.n - j0).min(16);
        let mut i0 = 0;
        while i0 < g.m {
            let mr = (g.m - i0).min(MR);
            // SAFETY: the (mr × nn) tile at (i0, j0) lies inside the checked views.
            unsafe { tile(g, out, i0, j0, mr, nn) };
            i0 += mr;
        }
        j0 += 16;
    }
}

/// # Safety
/// NEON available; the tile lies inside the views checked by `Kernels::sgemm`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile(g: &Sgemm<'_>, out: &mut Out<'_>, i0: usize, j0: usize, mr: usize, nn: usize) {
    let (r, l) = (g.r.as_ptr(), g.l.as_ptr());
    let full = nn / 4;
    let mut acc = [[vdupq_n_f32(0.0); 4]; MR];
    let mut tail = [[0f32; 4]; MR];
    for p in 0..g.k {
        let mut lv = [vdupq_n_f32(0.0); 4];
        for (v, x) in lv.iter_mut().enumerate().take(full) {
            // SAFETY: lanes j0 + 4v .. j0 + 4v + 4 ≤ n lie inside row p of the lane operand.
            *x = unsafe { vld1q_f32(l.add(p * g.ldb + j0 + 4 * v)) };
        }
        for i in 0..mr {
            // SAFETY: row i0 + i < m and p < k: inside the row operand.
            let a = unsafe { *r.add((i0 + i) * g.rs + p * g.cs) };
            for v in 0..full {
                acc[i][v] = vfmaq_n_f32(acc[i][v], lv[v], a);
            }
            for j in 4 * full..nn {
                // SAFETY: lane j0 + j < n.
                tail[i][j - 4 * full] += a * unsafe { *l.add(p * g.ldb + j0 + j) };
            }
        }
    }
    let c = out.ptr();
    for i in 0..mr {
        let mut row = [0f32; 16];
        for v in 0..full {
            // SAFETY: `row` holds 16 floats and 4v + 4 ≤ 16.
            unsafe { vst1q_f32(row.as_mut_ptr().add(4 * v), acc[i][v]) };
        }
        row[4 * full..nn].copy_from_slice(&tail[i][..nn - 4 * full]);
        for (j, &x) in row[..nn].iter().enumerate() {
            let at = (i0 + i) * out.rs + (j0 + j) * out.cs;
            // SAFETY: (i0 + i, j0 + j) is inside the checked output view.
            let o = unsafe { &mut *c.add(at) };
            *o = if out.accumulate {
                *o + g.alpha * x
            } else {
                g.alpha * x
            };
        }
    }
}

// ------------------------------------------------------------------------------------------
// int8 kernels. Shared epilogue: per block, integer sums (+ corrections) → f32, scaled by
// d_row · d_lane, minus min_row · sum_lane.

/// Adds one block's integer sums `s` (rows × 16 lanes) into the f32 accumulators.
#[inline(always)]
fn fold_block(
    r: &I8Rows<'_>,
    l: &I8Lanes<'_>,
    i0: usize,
    rows: usize,
    b: usize,
    s: &mut [[i32; 16]; 4],
    acc: &mut [[f32; 16]; 4],
) {
    const NT: usize = 16;
    for i in 0..rows {
        let ri = (i0 + i) * r.d_stride + b;
        let rc = r.corr.map_or(0, |c| c[ri]);
        let (rd, rm) = (r.d[ri], r.min.map_or(0.0, |m| m[ri]));
        for j in 0..NT {
            let si = s[i][j] + rc + l.corr.map_or(0, |c| c[b * NT + j]);
            acc[i][j] += si as f32 * (rd * l.d[b * NT + j]);
            if r.min.is_some() {
                acc[i][j] -= rm * l.sum[b * NT + j];
            }
        }
    }
}

/// Writes rows `i0 .. i0 + rows`, lanes `< n` of the accumulators.
#[inline(always)]
fn store(acc: &[[f32; 16]; 4], i0: usize, rows: usize, n: usize, out: &mut Out<'_>) {
    for (i, row) in acc.iter().enumerate().take(rows) {
        for (j, &x) in row.iter().enumerate().take(n) {
            let idx = (i0 + i) * out.rs + j * out.cs;
            out.put(idx, x);
        }
    }
}

/// Plain NEON: per 16 bytes (4 lanes × 4 bytes) `smull`/`smull2` by the row's broadcast
/// 4-byte group, then pairwise adds down to one i32 per lane.
///
/// # Safety
/// NEON available; views checked by `Kernels::i8gemm` for a 16-lane, group-4 block.
#[target_feature(enable = "neon")]
unsafe fn i8_groups4(r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
    const NT: usize = 16;
    let (rv, lv) = (r.vals.as_ptr(), l.vals.as_ptr());
    let mut i0 = 0;
    while i0 < r.rows {
        let rows = (r.rows - i0).min(4);
        let mut acc = [[0f32; 16]; 4];
        for b in 0..r.blocks {
            let mut s = [[0i32; 16]; 4];
            for q in 0..8 {
                for v in 0..4 {
                    // SAFETY: 16 bytes at b·512 + (q·16 + 4v)·4 inside the lane block.
                    let x = unsafe { vld1q_s8(lv.add(b * 32 * NT + (q * NT + 4 * v) * 4).cast()) };
                    for i in 0..rows {
                        // SAFETY: 4 bytes of row i0 + i, block b, group q.
                        let w = unsafe {
                            std::ptr::read_unaligned(
                                rv.add((i0 + i) * r.stride + 32 * b + 4 * q).cast::<i32>(),
                            )
                        };
                        let wv = vreinterpretq_s8_s32(vdupq_n_s32(w));
                        let lo = vmull_s8(vget_low_s8(x), vget_low_s8(wv));
                        let hi = vmull_high_s8(x, wv);
                        let sums = vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi));
                        let mut t = [0i32; 4];
                        // SAFETY: `t` holds 4 i32.
                        unsafe { vst1q_s32(t.as_mut_ptr(), sums) };
                        for (u, &x) in t.iter().enumerate() {
                            s[i][4 * v + u] += x;
                        }
                    }
                }
            }
            fold_block(r, l, i0, rows, b, &mut s, &mut acc);
        }
        store(&acc, i0, rows, n, out);
        i0 += rows;
    }
}

/// `sdot acc.4s, x.16b, w.4b[lane]`: four lanes' 4-byte dot products with one 4-byte group
/// of `w` (the lane index is part of the instruction, hence one function per lane).
macro_rules! sdot_lane {
    ($name:ident, $lane:literal) => {
        /// # Safety
        /// dotprod available.
        #[inline]
        #[target_feature(enable = "neon,dotprod")]
        unsafe fn $name(acc: int32x4_t, x: int8x16_t, w: int8x16_t) -> int32x4_t {
            let mut acc = acc;
            // SAFETY: a register-only instruction of the dotprod extension, which is enabled.
            unsafe {
                asm!(
                    concat!("sdot {acc:v}.4s, {x:v}.16b, {w:v}.4b[", $lane, "]"),
                    acc = inout(vreg) acc,
                    x = in(vreg) x,
                    w = in(vreg) w,
                    options(pure, nomem, nostack),
                );
            }
            acc
        }
    };
}
sdot_lane!(sdot0, "0");
sdot_lane!(sdot1, "1");
sdot_lane!(sdot2, "2");
sdot_lane!(sdot3, "3");

/// Dot-product extension: each row's block is loaded 16 bytes (four 4-byte groups) at a
/// time and multiplied into four lane vectors with indexed `sdot`.
///
/// # Safety
/// dotprod available; views checked for a 16-lane, group-4 block.
#[target_feature(enable = "neon,dotprod")]
unsafe fn i8_sdot(r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
    const NT: usize = 16;
    let (rv, lv) = (r.vals.as_ptr(), l.vals.as_ptr());
    let mut i0 = 0;
    while i0 < r.rows {
        let rows = (r.rows - i0).min(4);
        let mut acc = [[0f32; 16]; 4];
        for b in 0..r.blocks {
            let mut sv = [[vdupq_n_s32(0); 4]; 4];
            for h in 0..2 {
                let mut w = [vdupq_n_s8(0); 4];
                for (i, x) in w.iter_mut().enumerate().take(rows) {
                    // SAFETY: 16 bytes of row i0 + i at block b, groups 4h .. 4h + 4.
                    *x = unsafe { vld1q_s8(rv.add((i0 + i) * r.stride + 32 * b + 16 * h).cast()) };
                }
                for qq in 0..4 {
                    let q = 4 * h + qq;
                    for v in 0..4 {
                        // SAFETY: 16 bytes at b·512 + (q·16 + 4v)·4 inside the lane block.
                        let x =
                            unsafe { vld1q_s8(lv.add(b * 32 * NT + (q * NT + 4 * v) * 4).cast()) };
                        for i in 0..rows {
                            // SAFETY: dotprod is enabled in this function.
                            sv[i][v] = unsafe {
                                match qq {
                                    0 => sdot0(sv[i][v], x, w[i]),
                                    1 => sdot1(sv[i][v], x, w[i]),
                                    2 => sdot2(sv[i][v], x, w[i]),
                                    _ => sdot3(sv[i][v], x, w[i]),
                                }
                            };
                        }
                    }
                }
            }
            let mut s = [[0i32; 16]; 4];
            for i in 0..rows {
                for v in 0..4 {
                    // SAFETY: `s[i]` holds 16 i32 and 4v + 4 ≤ 16.
                    unsafe { vst1q_s32(s[i].as_mut_ptr().add(4 * v), sv[i][v]) };
                }
            }
            fold_block(r, l, i0, rows, b, &mut s, &mut acc);
        }
        store(&acc, i0, rows, n, out);
        i0 += rows;
    }
}

/// `smmla acc.4s, x.16b, w.16b`: the 2×2 products of two lanes' and two rows' 8-byte groups.
///
/// # Safety
/// i8mm available.
#[inline]
#[target_feature(enable = "neon,i8mm")]
unsafe fn smmla(acc: int32x4_t, x: int8x16_t, w: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction of the i8mm extension, which is enabled.
    unsafe {
        asm!(
            "smmla {acc:v}.4s, {x:v}.16b, {w:v}.16b",
            acc = inout(vreg) acc,
            x = in(vreg) x,
            w = in(vreg) w,
            options(pure, nomem, nostack),
        );
    }
    acc
}

/// Int8 matrix multiply: per 8-byte group, a 16-byte load holds two lanes (the layout's
/// group is 8), two rows' groups are joined into one register, and `smmla` accumulates the
/// 2 × 2 block `[x_j·w_i, x_j·w_{i+1}, x_{j+1}·w_i, x_{j+1}·w_{i+1}]`.
///
/// # Safety
/// i8mm available; views checked for a 16-lane, group-8 block.
#[target_feature(enable = "neon,dotprod,i8mm")]
unsafe fn i8_smmla(r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
    const NT: usize = 16;
    let (rv, lv) = (r.vals.as_ptr(), l.vals.as_ptr());
    let mut i0 = 0;
    while i0 < r.rows {
        let rows = (r.rows - i0).min(4);
        let mut acc = [[0f32; 16]; 4];
        for b in 0..r.blocks {
            // sv[pair of rows][pair of lanes]
            let mut sv = [[vdupq_n_s32(0); 8]; 2];
            for o in 0..4 {
                let mut w = [vdupq_n_s8(0); 2];
                for (p, x) in w.iter_mut().enumerate() {
                    let ra = i0 + 2 * p;
                    let load = |i: usize| -> int8x8_t {
                        if i < i0 + rows {
                            // SAFETY: 8 bytes of row i (< rows), block b, group o.
                            unsafe { vld1_s8(rv.add(i * r.stride + 32 * b + 8 * o).cast()) }
                        } else {
                            vdup_n_s8(0)
                        }
                    };
                    *x = vcombine_s8(load(ra), load(ra + 1));
                }
                for jp in 0..8 {
                    // SAFETY: 16 bytes (lanes 2jp, 2jp+1) of group o inside the lane block.
                    let x = unsafe { vld1q_s8(lv.add(b * 32 * NT + (o * NT + 2 * jp) * 8).cast()) };
                    for (p, wp) in w.iter().enumerate() {
                        // SAFETY: i8mm is enabled in this function.
                        sv[p][jp] = unsafe { smmla(sv[p][jp], x, *wp) };
                    }
                }
            }
            let mut s = [[0i32; 16]; 4];
            for p in 0..2 {
                for jp in 0..8 {
                    let mut t = [0i32; 4];
                    // SAFETY: `t` holds 4 i32.
                    unsafe { vst1q_s32(t.as_mut_ptr(), sv[p][jp]) };
                    // t = [x_j·w_a, x_j·w_b, x_{j+1}·w_a, x_{j+1}·w_b], rows a = 2p, b = 2p + 1.
                    s[2 * p][2 * jp] = t[0];
                    s[2 * p + 1][2 * jp] = t[1];
                    s[2 * p][2 * jp + 1] = t[2];
                    s[2 * p + 1][2 * jp + 1] = t[3];
                }
            }
            fold_block(r, l, i0, rows, b, &mut s, &mut acc);
        }
        store(&acc, i0, rows, n, out);
        i0 += rows;
    }
}

// ------------------------------------------------------------------------------------------
// FMA peak: twelve independent chains of 4-lane FMAs.

#[target_feature(enable = "neon")]
unsafe fn peak_body(iters: usize) -> f32 {
    let b = vdupq_n_f32(std::hint::black_box(0.999_999));
    let c = vdupq_n_f32(std::hint::black_box(1e-7));
    let mut a = [vdupq_n_f32(1.0); 12];
    for _ in 0..iters {
        for x in a.iter_mut() {
            *x = vfmaq_f32(c, *x, b);
        }
    }
    let mut s = vdupq_n_f32(0.0);
    for x in a {
        s = vaddq_f32(s, x);
    }
    vaddvq_f32(s)
}

fn gemv_i8_sdot(
    ty: GgmlType,
    w: &[u8],
    cols: usize,
    x: &QuantTokens<'_>,
    t: usize,
    y: &mut [f32],
) -> bool {
    // SAFETY: placed only in the tables of levels with the dot-product extension; sizes
    // checked by `Kernels::gemv_i8`.
    unsafe { by_block_and_tokens!(ty, t, gemv_i8_rows(w, cols, x, y)) }
}

/// `sdot acc.4s, a.16b, b.16b`: lane `j` += the dot product of bytes `4j .. 4j+4`.
///
/// # Safety
/// dotprod available.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot_vec(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction of the dotprod extension, which is enabled.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack),
        );
    }
    acc
}

/// [`super::gemv_i8`]'s arithmetic with `sdot`: the same integer lanes (Q8_0: signed bytes
/// directly; Q4_0: the unsigned nibbles, which are valid i8, and −8·Σx in lane 0), then
/// the same float steps as the scalar twin, so the same bits.
///
/// # Safety
/// dotprod available; sizes as checked by `Kernels::gemv_i8`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn gemv_i8_rows<const BYTES: usize, const T: usize>(
    w: &[u8],
    cols: usize,
    x: &QuantTokens<'_>,
    y: &mut [f32],
) {
    let zero = [vdupq_n_f32(0.0); 2];
    super::gemv_i8::rows_with::<[float32x4_t; 2], T>(
        w,
        BYTES,
        cols,
        x,
        y,
        zero,
        |blk| crate::quant::reference::f16_to_f32(u16::from_le_bytes([blk[0], blk[1]])),
        |a, blk, dw, (xq, dx, sum)| {
            // SAFETY: 16 bytes at 2 (and, for Q8_0, at 18) inside the block; `xq` is 32
            // readable bytes; dotprod is enabled (this function's features).
            unsafe {
                let (w0, w1) = if BYTES == 34 {
                    (
                        vld1q_s8(blk.as_ptr().add(2).cast()),
                        vld1q_s8(blk.as_ptr().add(18).cast()),
                    )
                } else {
                    let q = vld1q_u8(blk.as_ptr().add(2));
                    (
                        vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(15))),
                        vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)),
                    )
                };
                let (x0, x1) = (
                    vld1q_s8(xq.as_ptr().cast()),
                    vld1q_s8(xq.as_ptr().add(16).cast()),
                );
                let init = if BYTES == 34 {
                    vdupq_n_s32(0)
                } else {
                    vsetq_lane_s32::<0>(-8 * sum, vdupq_n_s32(0))
                };
                let (l0, l1) = (sdot_vec(init, w0, x0), sdot_vec(vdupq_n_s32(0), w1, x1));
                let s = dw * dx;
                [
                    vaddq_f32(a[0], vmulq_n_f32(vcvtq_f32_s32(l0), s)),
                    vaddq_f32(a[1], vmulq_n_f32(vcvtq_f32_s32(l1), s)),
                ]
            }
        },
        |even, odd| {
            // even + odd, then `gemv_i8::fold8`: halves, quarters, the last pair.
            let m4 = vaddq_f32(vaddq_f32(even[0], odd[0]), vaddq_f32(even[1], odd[1]));
            let m2 = vadd_f32(vget_low_f32(m4), vget_high_f32(m4));
            vget_lane_f32::<0>(m2) + vget_lane_f32::<1>(m2)
        },
    )
}

// ------------------------------------------------------------------------------------------
// Few-token products straight from Q8_0 / Q4_0 blocks.

/// [`super::gemv`]'s arithmetic in NEON registers, operation for operation (multiply, then
/// add; each 16-lane accumulator of the scalar twin as four 4-lane quarters; the same lane
/// folds), so its results equal the scalar twin's bits. `BYTES`: 34 = Q8_0, 18 = Q4_0.
///
/// # Safety
/// NEON available; `w` holds `y.len() / T` rows of `cols / 32` blocks, `x` `T` rows of
/// `cols` (checked by `Kernels::gemv`).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn gemv_rows<const BYTES: usize, const T: usize>(
    w: &[u8],
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) {
    let nb = cols / 32;
    let rb = nb * BYTES;
    let n = y.len() / T;
    for i in 0..n {
        // acc[tok][h][e]: lanes 4e .. 4e + 4 of the half h of a block.
        let mut acc = [[[vdupq_n_f32(0.0); 4]; 2]; T];
        for b in 0..nb {
            let at = i * rb + b * BYTES;
            let blk = &w[at..at + BYTES];
            super::prefetch(w, at + super::gemv::PREFETCH_AHEAD);
            let d = crate::quant::reference::f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            // SAFETY: 16 bytes at 2 (and, for Q8_0, at 18) inside the block.
            let (q0, q1) = unsafe {
                if BYTES == 34 {
                    (
                        vld1q_s8(blk.as_ptr().add(2).cast()),
                        vld1q_s8(blk.as_ptr().add(18).cast()),
                    )
                } else {
                    let q = vld1q_u8(blk.as_ptr().add(2));
                    let eight = vdupq_n_s8(8);
                    (
                        vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(15))), eight),
                        vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)), eight),
                    )
                }
            };
            let widen = |v: int8x16_t| {
                let (lo, hi) = (vmovl_s8(vget_low_s8(v)), vmovl_high_s8(v));
                [
                    vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), d),
                    vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(lo)), d),
                    vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), d),
                    vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(hi)), d),
                ]
            };
            let q = [widen(q0), widen(q1)];
            for (tok, a) in acc.iter_mut().enumerate() {
                for h in 0..2 {
                    for e in 0..4 {
                        // SAFETY: 4 floats at tok·cols + 32b + 16h + 4e < T·cols.
                        let xv = unsafe {
                            vld1q_f32(x.as_ptr().add(tok * cols + 32 * b + 16 * h + 4 * e))
                        };
                        a[h][e] = vaddq_f32(a[h][e], vmulq_f32(q[h][e], xv));
                    }
                }
            }
        }
        for (tok, a) in acc.iter().enumerate() {
            // m = a0 + a1; m[l] += m[l + 8]; m[l] += m[l + 4]; (m0 + m2) + (m1 + m3).
            let m: [float32x4_t; 4] = std::array::from_fn(|e| vaddq_f32(a[0][e], a[1][e]));
            let m8 = [vaddq_f32(m[0], m[2]), vaddq_f32(m[1], m[3])];
            let m4 = vaddq_f32(m8[0], m8[1]);
            let m2 = vadd_f32(vget_low_f32(m4), vget_high_f32(m4));
            y[tok * n + i] = vget_lane_f32::<0>(m2) + vget_lane_f32::<1>(m2);
        }
    }
}
