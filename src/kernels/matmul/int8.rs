//! The fast (int8) products with W0: activations quantized per 32 values times integer
//! weights. The forward repacks Q8_0 / Q4_0 blocks as they are, keeps Q4_K's sub-block
//! scales and minimums, and re-quantizes any other type per 32; the backward re-quantizes
//! panels of W *transposed* on the fly against dY quantized along its rows.

use rayon::prelude::*;

use super::{task_chunk, QMatrix, INT8_PANEL_BYTES};
use crate::kernels::scratch::{with_f32, with_i32, with_u8};
use crate::quant::reference::f16_to_f32;
use crate::quant::GgmlType;
use crate::simd::{
    self, ColSource, I8Lanes, I8Rows, Kernels, PackTarget, QuantCols, SharedColumns,
};

// ------------------------------------------------------------------------------------------
// Fast forward: int8 activations × integer weights.

/// The packed int8 lane operand of one call: `blocks` lane blocks of `nb` 32-blocks.
struct PackedLanes<'a> {
    nt: usize,
    nb: usize,
    vals: &'a [u8],
    d: &'a [f32],
    sum: &'a [f32],
    corr: &'a [i32],
}

impl PackedLanes<'_> {
    fn block(&self, tb: usize, corr: bool, unsigned: bool) -> I8Lanes<'_> {
        let (nt, nb) = (self.nt, self.nb);
        I8Lanes {
            blocks: nb,
            vals: &self.vals[tb * nb * 32 * nt..(tb + 1) * nb * 32 * nt],
            unsigned,
            d: &self.d[tb * nb * nt..(tb + 1) * nb * nt],
            sum: &self.sum[tb * nb * nt..(tb + 1) * nb * nt],
            corr: corr.then(|| &self.corr[tb * nb * nt..(tb + 1) * nb * nt]),
        }
    }
}

/// Offset that makes `ty`'s integer weights unsigned (when the kernel needs u8 weights):
/// Q4_0's nibbles are `q − 8`, Q4_K's `q` (with a separate minimum), the rest i8.
fn weight_offset(k: &Kernels, ty: GgmlType) -> i32 {
    if !k.int8.unsigned_weights {
        0
    } else {
        match ty {
            GgmlType::Q4_0 => 8,
            GgmlType::Q4_K => 0,
            _ => 128,
        }
    }
}

pub(super) fn forward_int8(k: &Kernels, y: &mut [f32], x: &[f32], t: usize, w: &QMatrix<'_>) {
    let (rows, cols) = (w.rows, w.cols);
    let lay = k.int8;
    let nt = lay.nt;
    let nb = cols / 32;
    let blocks = t.div_ceil(nt);
    let offset = weight_offset(k, w.ty);
    let per = nb * nt;
    with_u8(0, blocks * per * 32, |vals| {
        with_f32(0, 2 * blocks * per, |fs| {
            with_i32(0, blocks * per, |corr| {
                let (d, sum) = fs.split_at_mut(blocks * per);
                vals.par_chunks_mut(per * 32)
                    .zip(d.par_chunks_mut(per))
                    .zip(sum.par_chunks_mut(per))
                    .zip(corr.par_chunks_mut(per))
                    .enumerate()
                    .for_each(|(tb, (((v, d), s), c))| {
                        let t0 = tb * nt;
                        let tn = nt.min(t - t0);
                        k.pack_lanes(&x[t0 * cols..], tn, cols, offset, v, d, s, c);
                    });
                let lanes = PackedLanes {
                    nt,
                    nb,
                    vals,
                    d,
                    sum,
                    corr,
                };
                let chunk = task_chunk(rows, (4 * INT8_PANEL_BYTES / cols).max(16), 16);
                SharedColumns::new(y, rows).par_parts(rows, chunk, |_, mut part| {
                    let (r0, r1) = part.columns();
                    let n = r1 - r0;
                    with_u8(1, n * cols, |pv| {
                        with_f32(1, 2 * n * nb + cols, |pf| {
                            let (pd, rest) = pf.split_at_mut(n * nb);
                            let (pm, tmp) = rest.split_at_mut(n * nb);
                            let has_min = decode_rows(k, w, r0, n, offset, pv, pd, pm, tmp);
                            let rows_op = I8Rows {
                                rows: n,
                                blocks: nb,
                                vals: pv,
                                stride: cols,
                                unsigned: lay.unsigned_weights,
                                d: pd,
                                d_stride: nb,
                                corr: None,
                                min: has_min.then_some(&*pm),
                            };
                            for tb in 0..blocks {
                                let t0 = tb * nt;
                                let tn = nt.min(t - t0);
                                let mut out = part.out(t0, r0, 1, rows, false);
                                let l = lanes.block(tb, lay.unsigned_weights, false);
                                k.i8gemm(&rows_op, &l, tn, &mut out);
                            }
                        });
                    });
                });
            });
        });
    });
}

/// Decodes rows `r0 .. r0 + n` of W into the int8 row operand: values (+ `offset`) in
/// `vals` (n × cols), scales in `d` and, for Q4_K, minimums in `min` (n × cols/32 each).
/// `tmp` (≥ cols floats) is scratch. Returns whether minimums apply.
#[allow(clippy::too_many_arguments)]
fn decode_rows(
    k: &Kernels,
    w: &QMatrix<'_>,
    r0: usize,
    n: usize,
    offset: i32,
    vals: &mut [u8],
    d: &mut [f32],
    min: &mut [f32],
    tmp: &mut [f32],
) -> bool {
    let cols = w.cols;
    let nb = cols / 32;
    for i in 0..n {
        let src = w.row(r0 + i);
        let (v, dr) = (
            &mut vals[i * cols..(i + 1) * cols],
            &mut d[i * nb..(i + 1) * nb],
        );
        match w.ty {
            GgmlType::Q8_0 => (k.ew.decode_q8_0)(src, v, dr, offset),
            GgmlType::Q4_0 => (k.ew.decode_q4_0)(src, v, dr, offset),
            GgmlType::Q4_K => {
                let mr = &mut min[i * nb..(i + 1) * nb];
                for (s, blk) in src.chunks_exact(144).enumerate() {
                    let dall = f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
                    let dmin = f16_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
                    let scales: &[u8; 12] = blk[4..16].try_into().unwrap_or(&[0; 12]);
                    for c in 0..4 {
                        let qs = &blk[16 + 32 * c..16 + 32 * (c + 1)];
                        for h in 0..2 {
                            let j = 2 * c + h;
                            let (sc, m) =
                                crate::quant::reference::kquants::get_scale_min_k4(j, scales);
                            dr[8 * s + j] = dall * sc as f32;
                            mr[8 * s + j] = dmin * m as f32;
                            let out = &mut v[256 * s + 32 * j..256 * s + 32 * (j + 1)];
                            for (o, &q) in out.iter_mut().zip(qs) {
                                *o = if h == 0 { q & 15 } else { q >> 4 };
                            }
                        }
                    }
                }
            }
            _ => {
                let row = &mut tmp[..cols];
                k.dequantize_row(w.ty, src, row);
                let mut q = [0i8; 32];
                for ((x, out), dd) in row
                    .chunks_exact(32)
                    .zip(v.chunks_exact_mut(32))
                    .zip(dr.iter_mut())
                {
                    let (scale, _) = simd::quantize_block(x, &mut q);
                    *dd = scale;
                    for (o, &qq) in out.iter_mut().zip(&q) {
                        *o = (qq as i32 + offset) as u8;
                    }
                }
            }
        }
    }
    w.ty == GgmlType::Q4_K
}

// ------------------------------------------------------------------------------------------
// Fast backward: quantized dY rows × W panels re-quantized transposed.

pub(super) fn backward_int8(k: &Kernels, dx: &mut [f32], dy: &[f32], t: usize, w: &QMatrix<'_>) {
    let (rows, cols) = (w.rows, w.cols);
    let lay = k.int8;
    let nt = lay.nt;
    let nbr = rows.div_ceil(32);
    let rp = nbr * 32;
    // With VNNI, dY is the unsigned operand (+128); the panels' lane corrections remove it.
    let unsigned = lay.unsigned_weights;
    let offset = if unsigned { 128 } else { 0 };
    // Q8_0 and Q4_0 blocks are re-quantized straight from W; other types via an f32 panel.
    let direct = matches!(w.ty, GgmlType::Q8_0 | GgmlType::Q4_0);
    // dY quantized per 32 along its rows (zero-padded to whole blocks).
    with_u8(0, t * rp, |qv| {
        with_f32(0, t * nbr, |qd| {
            qv.par_chunks_mut(rp)
                .zip(qd.par_chunks_mut(nbr))
                .enumerate()
                .for_each(|(i, (v, d))| {
                    (k.ew.quantize_row)(&dy[i * rows..(i + 1) * rows], v, d, offset)
                });
            let (qv, qd) = (&*qv, &*qd);
            let bs = w.ty.block_size();
            let align = nt.max(bs).div_ceil(bs) * bs;
            let width = task_chunk(cols, 512.max(align), align).min(cols.div_ceil(bs) * bs);
            // Up to `pb` 32-row blocks of W (the reduction) are packed per pass, so that each
            // dx element is written once per pass.
            SharedColumns::new(dx, cols).par_parts(cols, width, |_, mut part| {
                let (c0, c1) = part.columns();
                let cw = c1 - c0;
                // Panels are zero-padded to whole lane blocks and whole 32-row blocks.
                let lb = cw.div_ceil(nt);
                let ld = lb * nt;
                let pb = ((2 << 20) / (32 * ld).max(1)).clamp(1, nbr);
                let panel_len = if direct { 0 } else { 32 * ld };
                with_f32(1, panel_len, |panel| {
                    with_u8(1, pb * 32 * ld, |lv| {
                        with_f32(2, pb * ld, |ldv| {
                            with_i32(1, pb * ld, |lc| {
                                let mut nb0 = 0;
                                while nb0 < nbr {
                                    let nbp = pb.min(nbr - nb0);
                                    for b in 0..nbp {
                                        let r0 = 32 * (nb0 + b);
                                        let src = if direct {
                                            ColSource::Quant(QuantCols {
                                                ty: w.ty,
                                                data: &w.data[r0 * w.row_bytes..],
                                                row_bytes: w.row_bytes,
                                                rows: rows - r0,
                                                c0,
                                                cw,
                                            })
                                        } else {
                                            fill_panel(k, w, panel, (r0, c0, cw), ld);
                                            ColSource::Panel(panel)
                                        };
                                        let dst = PackTarget {
                                            blocks: 1,
                                            ld,
                                            total: nbp,
                                            b0: b,
                                            vals: lv,
                                            d: ldv,
                                            corr: lc,
                                        };
                                        k.pack_cols(src, dst);
                                    }
                                    let rows_op = I8Rows {
                                        rows: t,
                                        blocks: nbp,
                                        vals: &qv[32 * nb0..],
                                        stride: rp,
                                        unsigned,
                                        d: &qd[nb0..],
                                        d_stride: nbr,
                                        corr: None,
                                        min: None,
                                    };
                                    for b in 0..lb {
                                        let j0 = b * nt;
                                        let lanes = I8Lanes {
                                            blocks: nbp,
                                            vals: &lv[b * nbp * 32 * nt..][..nbp * 32 * nt],
                                            unsigned: false,
                                            d: &ldv[b * nbp * nt..][..nbp * nt],
                                            // Lane sums are read only against row
                                            // minimums, which dY has none of.
                                            sum: &ldv[b * nbp * nt..][..nbp * nt],
                                            corr: unsigned.then(|| &lc[b * nbp * nt..][..nbp * nt]),
                                        };
                                        let mut out = part.out(0, c0 + j0, cols, 1, true);
                                        k.i8gemm(&rows_op, &lanes, nt.min(cw - j0), &mut out);
                                    }
                                    nb0 += nbp;
                                }
                            });
                        });
                    });
                });
            });
        });
    });
}

/// Dequantizes rows `r0 .. r0 + 32` (zero past W's last row) of columns `c0 .. c0 + cw` into a
/// 32 × `ld` panel, zero-padded on the right.
fn fill_panel(
    k: &Kernels,
    w: &QMatrix<'_>,
    panel: &mut [f32],
    (r0, c0, cw): (usize, usize, usize),
    ld: usize,
) {
    for (e, dst) in panel.chunks_exact_mut(ld).enumerate() {
        if r0 + e < w.rows {
            let (row, pad) = dst.split_at_mut(cw);
            w.dequantize_cols(k, r0 + e, 1, c0, cw, row);
            pad.fill(0.0);
        } else {
            dst.fill(0.0);
        }
    }
}
