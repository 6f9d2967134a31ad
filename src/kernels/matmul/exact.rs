//! The exact (f32) products with W0: rows of W dequantized into cache-sized panels for the
//! f32 micro-gemm (forward: the panel broadcast against tokens packed transposed; backward:
//! dY broadcast against the panel's rows), and the few-token forward, which reads Q8_0 /
//! Q4_0 blocks straight into dot products (int8 tokens under `fast` where a level has an
//! int8 block GEMV).

use rayon::prelude::*;

use super::{
    forward_depth, int8_ok, panel_rows, panel_stride, task_chunk, QMatrix, BACKWARD_PANEL,
    GEMV_ROWS, GEMV_TOKENS, MAX_TILE_ROWS, NT,
};
use crate::kernels::scratch::{with_f32, with_i32, with_u8};
use crate::simd::gemv_i8::QuantTokens;
use crate::simd::{self, Kernels, Sgemm, SharedColumns};

// ------------------------------------------------------------------------------------------
// Exact forward: dequantized panels × tokens packed transposed.

pub(super) fn forward_panels(k: &Kernels, y: &mut [f32], x: &[f32], t: usize, w: &QMatrix<'_>) {
    let (rows, cols) = (w.rows, w.cols);
    let blocks = t.div_ceil(NT);
    let kw = forward_depth(cols);
    with_f32(0, blocks * NT * cols, |xt| {
        // xt[tb][c][j] = x[tb·NT + j][c], zero past t.
        xt.par_chunks_mut(NT * cols)
            .enumerate()
            .for_each(|(tb, blk)| pack_transposed(k, blk, x, (tb * NT, t), cols, NT));
        let xt = &*xt;
        let chunk = task_chunk(rows, panel_rows(kw), 12);
        let ld = panel_stride(kw);
        SharedColumns::new(y, rows).par_parts(rows, chunk, |_, mut part| {
            let (r0, r1) = part.columns();
            let n = r1 - r0;
            with_f32(1, n * ld, |panel| {
                // Reduction passes of at most `kw` columns, so that a panel holds enough rows
                // to reuse each token block of `xt` over several register tiles.
                for c0 in (0..cols).step_by(kw) {
                    let cw = kw.min(cols - c0);
                    for (i, dst) in panel.chunks_mut(ld).enumerate() {
                        w.dequantize_cols(k, r0 + i, 1, c0, cw, &mut dst[..cw]);
                    }
                    for tb in 0..blocks {
                        let t0 = tb * NT;
                        let tn = NT.min(t - t0);
                        let mut out = part.out(t0, r0, 1, rows, c0 > 0);
                        let at = tb * NT * cols + c0 * NT;
                        k.sgemm(
                            &Sgemm {
                                m: n,
                                n: tn,
                                k: cw,
                                r: panel,
                                rs: ld,
                                cs: 1,
                                l: &xt[at..at + cw * NT],
                                ldb: NT,
                                alpha: 1.0,
                            },
                            &mut out,
                        );
                    }
                }
            });
        });
    });
}

/// `blk[c][j] = x[t0 + j][c]` for `j < width` (zero past `t`): `width` rows of `x` (t × cols)
/// interleaved.
fn pack_transposed(
    k: &Kernels,
    blk: &mut [f32],
    x: &[f32],
    (t0, t): (usize, usize),
    cols: usize,
    width: usize,
) {
    let tn = width.min(t - t0);
    k.interleave_rows(&x[t0 * cols..], tn, cols, &mut blk[..cols * width], width);
}

/// Few tokens: groups of weight rows in parallel, read straight from their blocks (Q8_0,
/// Q4_0) or one dequantized row at a time.
pub(super) fn forward_gemv(k: &Kernels, y: &mut [f32], x: &[f32], t: usize, w: &QMatrix<'_>) {
    if !(int8_ok(w) && simd::gemv_i8::gemv_i8_supports(w.ty)) {
        return forward_gemv_with(k, y, x, t, w, None);
    }
    // `fast`: the tokens quantized per 32 values once, for the int8 block GEMV.
    let nb = w.cols / 32;
    with_u8(0, t * w.cols, |q| {
        with_f32(0, t * nb, |d| {
            with_i32(0, t * nb, |sum| {
                for tok in 0..t {
                    let at = tok * nb;
                    let (qt, xt) = (&mut q[tok * w.cols..], &x[tok * w.cols..]);
                    (k.ew.quantize_row)(&xt[..w.cols], &mut qt[..w.cols], &mut d[at..at + nb], 0);
                    for (s, qb) in sum[at..at + nb].iter_mut().zip(qt.chunks_exact(32)) {
                        *s = qb.iter().map(|&v| v as i8 as i32).sum();
                    }
                }
                let xq = QuantTokens { q, d, sum };
                forward_gemv_with(k, y, x, t, w, Some(&xq))
            })
        })
    })
}

/// [`forward_gemv`] with the tokens also quantized (`xq`, for the int8 block GEMV of levels
/// that have one).
fn forward_gemv_with(
    k: &Kernels,
    y: &mut [f32],
    x: &[f32],
    t: usize,
    w: &QMatrix<'_>,
    xq: Option<&QuantTokens<'_>>,
) {
    let (rows, cols) = (w.rows, w.cols);
    let group = task_chunk(rows, 4096, 8);
    SharedColumns::new(y, rows).par_parts(rows, group, |_, mut part| {
        let (r0, r1) = part.columns();
        let mut out = part.out(0, r0, 1, rows, false);
        if simd::gemv::gemv_supports(w.ty) {
            with_f32(1, GEMV_TOKENS * GEMV_ROWS, |buf| {
                for c0 in (r0..r1).step_by(GEMV_ROWS) {
                    let n = GEMV_ROWS.min(r1 - c0);
                    let wb = &w.data[c0 * w.row_bytes..(c0 + n) * w.row_bytes];
                    let yb = &mut buf[..t * n];
                    let done = xq.is_some_and(|xq| k.gemv_i8(w.ty, wb, cols, xq, t, yb))
                        || k.gemv(w.ty, wb, cols, x, t, yb);
                    assert!(done, "gemv takes {} with {t} tokens", w.ty);
                    for tok in 0..t {
                        out.put_run(tok * rows + c0 - r0, &buf[tok * n..(tok + 1) * n]);
                    }
                }
            });
            return;
        }
        with_f32(1, cols, |row| {
            for r in r0..r1 {
                w.dequantize_cols(k, r, 1, 0, cols, row);
                for tok in 0..t {
                    let v = k.dot(row, &x[tok * cols..(tok + 1) * cols]);
                    out.put(tok * rows + r - r0, v);
                }
            }
        });
    });
}

// ------------------------------------------------------------------------------------------
// Exact backward: dY (broadcast) × dequantized panels of W (vectors), column tasks.

pub(super) fn backward_panels(k: &Kernels, dx: &mut [f32], dy: &[f32], t: usize, w: &QMatrix<'_>) {
    let (rows, cols) = (w.rows, w.cols);
    let bs = w.ty.block_size();
    let align = bs.max(16).div_ceil(bs) * bs;
    let width = task_chunk(cols, 512.max(align), align).min(cols.div_ceil(bs) * bs);
    let mr = k.f32_tile.0;
    assert!(
        mr <= MAX_TILE_ROWS,
        "backward: register tile taller than its scratch bound"
    );
    let tiles = t.div_ceil(mr);
    with_f32(0, tiles * mr * rows, |dyt| {
        // dyt[ti][p][i] = dy[ti·mr + i][p], zero past t: each k-step of a register tile
        // reads one contiguous line. Packed once here for every column task.
        dyt.par_chunks_mut(mr * rows)
            .enumerate()
            .for_each(|(ti, blk)| pack_transposed(k, blk, dy, (ti * mr, t), rows, mr));
        let dyt = &*dyt;
        SharedColumns::new(dx, cols).par_parts(cols, width, |_, mut part| {
            let (c0, c1) = part.columns();
            let cw = c1 - c0;
            let lane_blocks = cw.div_ceil(NT);
            with_f32(1, BACKWARD_PANEL * lane_blocks * NT, |panel| {
                let mut n0 = 0;
                while n0 < rows {
                    let n = BACKWARD_PANEL.min(rows - n0);
                    // panel[jb][i][j] = W[n0 + i][c0 + jb·NT + j]: each lane block contiguous.
                    with_f32(2, cw, |row| {
                        for i in 0..n {
                            w.dequantize_cols(k, n0 + i, 1, c0, cw, row);
                            for (jb, src) in row.chunks(NT).enumerate() {
                                let at = (jb * n + i) * NT;
                                panel[at..at + src.len()].copy_from_slice(src);
                            }
                        }
                    });
                    // dx[:, c0..c1] += dy[:, n0..n0+n] · panel, one tile of mr tokens at a time.
                    for ti in 0..tiles {
                        let i0 = ti * mr;
                        let tile = &dyt[(ti * rows + n0) * mr..(ti * rows + n0 + n) * mr];
                        for jb in 0..lane_blocks {
                            let j0 = jb * NT;
                            let mut out = part.out(i0, c0 + j0, cols, 1, true);
                            k.sgemm(
                                &Sgemm {
                                    m: mr.min(t - i0),
                                    n: NT.min(cw - j0),
                                    k: n,
                                    r: tile,
                                    rs: 1,
                                    cs: mr,
                                    l: &panel[jb * n * NT..],
                                    ldb: NT,
                                    alpha: 1.0,
                                },
                                &mut out,
                            );
                        }
                    }
                    n0 += n;
                }
            });
        });
    });
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check_forward, dense, fill};
    use super::super::{forward_f32, scratch_need, Precision};
    use super::*;
    use crate::kernels::scratch::ScratchNeed;
    use crate::quant::{quantize, GgmlType};
    use crate::simd::Level;

    #[test]
    fn exact_forward_over_several_reduction_passes_matches_and_stays_within_its_scratch() {
        // Rows wider than FORWARD_DEPTH are reduced in passes that accumulate into y; the
        // widths leave a short last pass (Q8_0 2336 = 1280 + 1056, Q4_K 4352 = 3 passes,
        // F32 2049 = 1280 + 769).
        for (ty, cols) in [
            (GgmlType::Q8_0, 2336usize),
            (GgmlType::Q4_K, 4352),
            (GgmlType::F32, 2049),
        ] {
            assert!(forward_depth(cols) < cols, "{ty} {cols}: one pass");
            for level in Level::available() {
                let k = Kernels::for_level(level).unwrap();
                for rows in [13usize, 100] {
                    let t = 35;
                    let wdata = quantize(ty, &fill(rows * cols, 7), cols).unwrap();
                    let w = QMatrix::new(ty, rows, cols, &wdata).unwrap();
                    let d = dense(&w);
                    let x = fill(t * cols, 3);
                    let mut y = vec![f32::NAN; t * rows];
                    // A fresh thread, so its scratch holds this call's buffers only.
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .unwrap();
                    let reached = pool.install(|| {
                        forward_f32(&k, &mut y, &x, t, &w);
                        ScratchNeed::current()
                    });
                    let need = scratch_need(t, rows, cols, Precision::Exact, false);
                    for (slot, (&got, &planned)) in reached.f32.iter().zip(&need.f32).enumerate() {
                        assert!(
                            got <= planned,
                            "{ty} {cols}: f32 slot {slot} reached {got} > {planned}"
                        );
                    }
                    check_forward(
                        (&y, &x, &d),
                        (rows, cols),
                        false,
                        &format!("{level:?} {ty} rows {rows} cols {cols}"),
                    );
                }
            }
        }
    }
}
