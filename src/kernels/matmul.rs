//! Products with a frozen weight matrix W0 kept in its GGUF encoding:
//! forward `Y = X · W0ᵀ` and, for training, the gradient to the input `dX += dY · W0`
//! (W0 never gets a gradient).
//!
//! W0 is never dequantized whole. Two precisions ([`Precision`]):
//!
//! - **exact** (f32): rows of W are dequantized into a cache-sized panel and multiplied by
//!   the dispatched f32 micro-gemm ([`crate::simd::Sgemm`]). Forward: the panel is the
//!   broadcast operand and the tokens, packed transposed once per call in blocks of 32, are
//!   the vector operand, so each panel is dequantized once and reused by every token.
//!   Backward: dY is the broadcast operand, packed per register tile of tokens so each
//!   step reads one contiguous line, and the panel's rows are the vectors, stored per lane
//!   block of 32 columns so a block stays in L1 while the token tiles sweep it.
//! - **fast** (int8): activations are quantized per 32 values (Q8_0-style: scale
//!   max|x|/127) and multiplied by integer weights with integer dot products
//!   ([`crate::simd::I8Rows`] × [`crate::simd::I8Lanes`]). Forward: Q8_0 and Q4_0 blocks are
//!   repacked as they are (no new error beyond the activations' rounding), Q4_K keeps its
//!   sub-block scales and minimums, any other type is dequantized and re-quantized per 32
//!   (8-bit, like Q8_0). Backward (`dY · W`, whose reduction runs across W's blocks): dY is
//!   quantized per 32 along its rows and each panel of W is dequantized and re-quantized
//!   *transposed* (per 32 rows of each column) on the fly, amortized over all tokens. The
//!   error this adds is measured by the tests below and reported in the README.
//!
//! Work is split on the current rayon pool over *output columns*: the forward splits W's
//! rows, the backward W's columns. Each task dequantizes only its own part of W, every
//! output element is reduced in one fixed order whatever the split (panel boundaries do not
//! depend on the thread count), so results do not depend on scheduling. Few tokens
//! (generation) take a dot-product path over groups of rows, reading Q8_0 / Q4_0 blocks
//! directly (f32 in `exact`, int8 tokens in `fast`; see [`crate::simd::gemv_i8`]).
//!
//! Scratch lives in grow-only per-thread buffers, so steady-state calls do not allocate
//! once each thread has seen the largest shape.
//!
//! Other float types than f32 (the f64 gradient checks) take a plain path through the
//! `gemm` crate.

use rayon::prelude::*;

use super::gemm::{gemm, MatRef};
use super::num::Real;
use super::scratch::{with_f32, with_i32, with_u8, ScratchNeed};
use crate::error::QuantError;
use crate::quant::reference::f16_to_f32;
use crate::quant::GgmlType;
use crate::simd::gemv_i8::QuantTokens;
use crate::simd::{
    self, ColSource, I8Lanes, I8Rows, Kernels, PackTarget, QuantCols, Sgemm, SharedColumns,
};
use crate::util::num::dot;

/// Which arithmetic the matmuls over W0 use (`--precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 activations times dequantized f32 weights (the default; what the oracle tests
    /// compare).
    #[default]
    Exact,
    /// int8 activations (quantized per 32 values) times integer weights.
    Fast,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Exact => "exact",
            Precision::Fast => "fast",
        }
    }

    /// Parses `exact` or `fast`.
    pub fn parse(s: &str) -> Option<Precision> {
        match s.to_ascii_lowercase().as_str() {
            "exact" => Some(Precision::Exact),
            "fast" => Some(Precision::Fast),
            _ => None,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A weight matrix of `rows` output features × `cols` input features, each row stored as
/// `cols` elements of `ty` (GGUF `ne = [cols, rows]`), and the precision its products use.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub precision: Precision,
    data: &'a [u8],
    row_bytes: usize,
}

impl<'a> QMatrix<'a> {
    /// Checks that `data` holds exactly `rows` rows of `cols` elements of a type this engine
    /// can convert to f32.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self, QuantError> {
        if !ty.is_float_convertible() {
            return Err(QuantError::Unsupported {
                ty,
                op: "matrix multiplication",
            });
        }
        let row_bytes = ty.bytes_for(cols as u64).ok_or(QuantError::RowLength {
            ty,
            n: cols,
            block: ty.block_size(),
        })? as usize;
        let expected = row_bytes.saturating_mul(rows);
        if data.len() != expected {
            return Err(QuantError::BufferSize {
                what: "weight matrix",
                expected,
                found: data.len(),
            });
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            precision: Precision::Exact,
            data,
            row_bytes,
        })
    }

    /// The same matrix, multiplied with `precision`.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Rows `r0 .. r1` as a matrix of their own.
    pub fn rows_range(&self, r0: usize, r1: usize) -> QMatrix<'a> {
        assert!(
            r0 <= r1 && r1 <= self.rows,
            "QMatrix::rows_range: out of range"
        );
        QMatrix {
            rows: r1 - r0,
            data: &self.data[r0 * self.row_bytes..r1 * self.row_bytes],
            ..*self
        }
    }

    /// The encoded bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Dequantizes rows `r0 .. r0 + out.len()/cols` into `out`.
    pub fn dequantize_rows<F: Real>(&self, r0: usize, out: &mut [F]) {
        for (i, dst) in out.chunks_exact_mut(self.cols).enumerate() {
            if let Err(e) = F::dequantize(self.ty, self.row(r0 + i), dst) {
                unreachable!("row geometry was validated by QMatrix::new: {e}");
            }
        }
    }

    /// Dequantizes columns `c0 .. c0 + width` (block-aligned) of rows `r0 .. r0 + n` into
    /// `out` (n × width, row-major) with the dispatched kernels.
    fn dequantize_cols(
        &self,
        k: &Kernels,
        r0: usize,
        n: usize,
        c0: usize,
        width: usize,
        out: &mut [f32],
    ) {
        let bs = self.ty.block_size();
        debug_assert!(c0 % bs == 0 && (width % bs == 0 || c0 + width == self.cols));
        let (b0, b1) = (
            c0 / bs * self.ty.type_size(),
            (c0 + width) / bs * self.ty.type_size(),
        );
        for (i, dst) in out[..n * width].chunks_exact_mut(width).enumerate() {
            k.dequantize_row(self.ty, &self.row(r0 + i)[b0..b1], dst);
        }
    }
}

/// Target bytes of one f32 panel of W: half of a core's L2 (so the tokens' block fits
/// beside it), from 512 KiB (also where the L2 size is unknown) to 1 MiB (a 2 MiB L2:
/// measured on a Xeon, two single-thread forwards at once ran 3% faster than with 512 KiB;
/// 1.5 MiB gained nothing more).
fn panel_bytes() -> usize {
    const MIN: usize = 512 << 10;
    super::cache_size::l2_per_core().map_or(MIN, |l2| (l2 / 2).clamp(MIN, 1 << 20))
}
/// A quarter of the target bytes of the fast forward's int8 panel of W (whose rows are a
/// quarter of the f32 size): tuned on 1 MiB L2s, not measured larger.
const INT8_PANEL_BYTES: usize = 512 << 10;
/// Up to this many tokens, the forward takes the dot-product path.
pub(crate) const GEMV_TOKENS: usize = 2;
/// Tokens per packed block of the exact forward's vector operand (and columns per lane
/// block of the exact backward's).
const NT: usize = 32;
/// Deepest reduction pass of the exact forward: a panel of this width still holds 60 rows.
const FORWARD_DEPTH: usize = 2048;
/// Rows of W per dequantized panel of the exact backward.
const BACKWARD_PANEL: usize = 256;
/// Largest register tile height of any kernel table (`Kernels::f32_tile.0`): bounds the
/// exact backward's packed dY.
const MAX_TILE_ROWS: usize = 12;

/// Row stride (in f32) of the exact forward's dequantized panel: at least `cols`, a whole
/// number of 64-byte lines, and an odd number of them, so that the register tile's rows
/// (read in step) fall into different L1 sets instead of one (a 2048-wide row is 8 KiB, a
/// multiple of the 4 KiB set span).
fn panel_stride(cols: usize) -> usize {
    (cols.div_ceil(16) | 1) * 16
}

/// Reduction depth (columns of W) of one pass of the exact forward: all of `cols` up to
/// [`FORWARD_DEPTH`], else `cols` split evenly into passes of whole 256-column groups
/// (whole blocks of every type).
fn forward_depth(cols: usize) -> usize {
    if cols <= FORWARD_DEPTH {
        return cols;
    }
    let passes = cols.div_ceil(FORWARD_DEPTH);
    cols.div_ceil(passes).div_ceil(256) * 256
}

/// Rows per dequantized panel for a given row width (shape-only, so results do not depend
/// on the thread count).
pub fn panel_rows(cols: usize) -> usize {
    (panel_bytes() / (4 * cols.max(1))).clamp(12, 480) / 12 * 12
}

/// Largest task width (columns of W) of the backward passes, for any block size.
fn max_backward_width(cols: usize) -> usize {
    512.min(cols.div_ceil(256) * 256).max(1)
}

/// Per-thread scratch f32 calls with up to `t` tokens and a `rows × cols` matrix need: the
/// forward ([`matmul_forward`]) or the input gradient ([`matmul_backward_input`]), in
/// `precision`. An upper bound for every weight type (the memory plan sums it). Few tokens
/// take other paths, so the need is the larger of `t`'s and the few-token path's.
pub fn scratch_need(
    t: usize,
    rows: usize,
    cols: usize,
    precision: Precision,
    backward: bool,
) -> ScratchNeed {
    let few = t.min(GEMV_TOKENS);
    scratch_need_exactly(t, rows, cols, precision, backward)
        .max(scratch_need_exactly(few, rows, cols, precision, backward))
}

fn scratch_need_exactly(
    t: usize,
    rows: usize,
    cols: usize,
    precision: Precision,
    backward: bool,
) -> ScratchNeed {
    let mut n = ScratchNeed::default();
    if t == 0 || rows == 0 || cols == 0 {
        return n;
    }
    let lay = simd::kernels().int8;
    let nt = lay.nt.max(1);
    let fast = precision == Precision::Fast;
    if !backward {
        if t <= GEMV_TOKENS {
            // A dequantized row, or the block-reading GEMV's staged outputs.
            n.f32[1] = cols.max(GEMV_TOKENS * GEMV_ROWS);
            if fast && cols % 32 == 0 {
                // The int8 GEMV's quantized tokens.
                n.u8[0] = t * cols;
                n.f32[0] = t * (cols / 32);
                n.i32[0] = t * (cols / 32);
            }
        } else if fast && cols % 32 == 0 {
            let (nb, blocks) = (cols / 32, t.div_ceil(nt));
            let per = nb * nt;
            n.u8[0] = blocks * per * 32;
            n.f32[0] = 2 * blocks * per;
            n.i32[0] = blocks * per;
            let chunk = ((4 * INT8_PANEL_BYTES / cols).max(16) / 16 * 16)
                .max(16)
                .min(rows);
            n.u8[1] = chunk * cols;
            n.f32[1] = 2 * chunk * nb + cols;
        } else {
            n.f32[0] = t.div_ceil(NT) * NT * cols;
            let kw = forward_depth(cols);
            let chunk = panel_rows(kw).min(rows);
            n.f32[1] = chunk * panel_stride(kw);
        }
    } else if fast && t > GEMV_TOKENS {
        let nbr = rows.div_ceil(32);
        n.u8[0] = t * nbr * 32;
        n.f32[0] = t * nbr;
        let ld = max_backward_width(cols).max(nt).div_ceil(nt) * nt;
        n.f32[1] = 32 * ld;
        let pb = ((2 << 20) / (32 * ld)).clamp(1, nbr);
        n.u8[1] = pb * 32 * ld;
        n.f32[2] = pb * ld;
        n.i32[1] = pb * ld;
    } else {
        let width = max_backward_width(cols);
        // dY packed per register tile (at most MAX_TILE_ROWS tokens, the last zero-padded).
        n.f32[0] = (t + MAX_TILE_ROWS - 1) * rows;
        n.f32[1] = BACKWARD_PANEL * width.div_ceil(NT) * NT;
        n.f32[2] = width;
    }
    n
}

// ------------------------------------------------------------------------------------------
// Entry points.

/// `y (t, w.rows) ← x (t, w.cols) · Wᵀ`.
pub fn matmul_forward<F: Real>(y: &mut [F], x: &[F], w: &QMatrix<'_>) {
    let (rows, cols) = (w.rows, w.cols);
    assert!(
        cols > 0 && x.len() % cols == 0,
        "matmul: x is not a whole number of rows"
    );
    let t = x.len() / cols;
    assert_eq!(y.len(), t * rows, "matmul: y size");
    if t == 0 || rows == 0 {
        return;
    }
    match (F::as_f32(x), F::as_f32_mut(y)) {
        (Some(x), Some(y)) => forward_f32(simd::kernels(), y, x, t, w),
        _ => forward_generic(y, x, t, w),
    }
}

/// `dx (t, w.cols) += dy (t, w.rows) · W`: the gradient of [`matmul_forward`] with respect
/// to its input.
pub fn matmul_backward_input<F: Real>(dx: &mut [F], dy: &[F], w: &QMatrix<'_>) {
    let (rows, cols) = (w.rows, w.cols);
    assert!(
        rows > 0 && dy.len() % rows == 0,
        "matmul backward: dy is not a whole number of rows"
    );
    let t = dy.len() / rows;
    assert_eq!(dx.len(), t * cols, "matmul backward: dx size");
    if t == 0 || cols == 0 {
        return;
    }
    match (F::as_f32(dy), F::as_f32_mut(dx)) {
        (Some(dy), Some(dx)) => backward_f32(simd::kernels(), dx, dy, t, w),
        _ => backward_generic(dx, dy, t, w),
    }
}

/// Whether the int8 path takes this matrix (whole 32-blocks along the reduction).
fn int8_ok(w: &QMatrix<'_>) -> bool {
    w.precision == Precision::Fast && w.cols % 32 == 0
}

/// The f32 forward with the kernels of `k` (public to the crate for the tests and `bench`).
pub(crate) fn forward_f32(k: &Kernels, y: &mut [f32], x: &[f32], t: usize, w: &QMatrix<'_>) {
    if t <= GEMV_TOKENS {
        forward_gemv(k, y, x, t, w)
    } else if int8_ok(w) {
        forward_int8(k, y, x, t, w)
    } else {
        forward_panels(k, y, x, t, w)
    }
}

/// The f32 input gradient with the kernels of `k`: `dx += dy · W`.
pub(crate) fn backward_f32(k: &Kernels, dx: &mut [f32], dy: &[f32], t: usize, w: &QMatrix<'_>) {
    if w.precision == Precision::Fast && t > GEMV_TOKENS {
        backward_int8(k, dx, dy, t, w)
    } else {
        backward_panels(k, dx, dy, t, w)
    }
}

// ------------------------------------------------------------------------------------------
// Exact forward: dequantized panels × tokens packed transposed.

/// Splits `n` items into tasks of `chunk` (a multiple of `align`) so that every thread gets
/// work: at most `max_chunk`, at least `align`.
fn task_chunk(n: usize, max_chunk: usize, align: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let per_thread = n.div_ceil(threads).div_ceil(align) * align;
    per_thread.min(max_chunk / align * align).max(align)
}

fn forward_panels(k: &Kernels, y: &mut [f32], x: &[f32], t: usize, w: &QMatrix<'_>) {
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

/// Rows per call of the block-reading GEMV (its output is staged in scratch).
const GEMV_ROWS: usize = 64;

/// Few tokens: groups of weight rows in parallel, read straight from their blocks (Q8_0,
/// Q4_0) or one dequantized row at a time.
fn forward_gemv(k: &Kernels, y: &mut [f32], x: &[f32], t: usize, w: &QMatrix<'_>) {
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

fn backward_panels(k: &Kernels, dx: &mut [f32], dy: &[f32], t: usize, w: &QMatrix<'_>) {
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

fn forward_int8(k: &Kernels, y: &mut [f32], x: &[f32], t: usize, w: &QMatrix<'_>) {
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

fn backward_int8(k: &Kernels, dx: &mut [f32], dy: &[f32], t: usize, w: &QMatrix<'_>) {
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

// ------------------------------------------------------------------------------------------
// Generic float types (f64 gradient checks): the gemm crate on dequantized panels.

fn forward_generic<F: Real>(y: &mut [F], x: &[F], t: usize, w: &QMatrix<'_>) {
    let (rows, cols) = (w.rows, w.cols);
    if t <= GEMV_TOKENS {
        for r in 0..rows {
            F::with_scratch(0, cols, |row| {
                w.dequantize_rows(r, row);
                for tok in 0..t {
                    y[tok * rows + r] = dot(row, &x[tok * cols..(tok + 1) * cols]);
                }
            });
        }
        return;
    }
    let p = panel_rows(cols).min(rows);
    F::with_scratch(0, p * cols, |panel| {
        let mut r0 = 0;
        while r0 < rows {
            let n = p.min(rows - r0);
            let panel = &mut panel[..n * cols];
            w.dequantize_rows(r0, panel);
            gemm(
                &mut y[r0..],
                rows,
                MatRef::rows(x, cols),
                MatRef::transposed(panel, cols),
                t,
                n,
                cols,
                false,
            );
            r0 += n;
        }
    });
}

fn backward_generic<F: Real>(dx: &mut [F], dy: &[F], t: usize, w: &QMatrix<'_>) {
    let (rows, cols) = (w.rows, w.cols);
    let p = panel_rows(cols).min(rows);
    F::with_scratch(0, p * cols, |panel| {
        let mut r0 = 0;
        while r0 < rows {
            let n = p.min(rows - r0);
            let panel = &mut panel[..n * cols];
            w.dequantize_rows(r0, panel);
            gemm(
                dx,
                cols,
                MatRef::rows(&dy[r0..], rows),
                MatRef::rows(panel, cols),
                t,
                cols,
                n,
                true,
            );
            r0 += n;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize;
    use crate::simd::Level;

    fn fill(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0
                    - 1.0
            })
            .collect()
    }

    fn dense(w: &QMatrix<'_>) -> Vec<f64> {
        let mut d = vec![0f64; w.rows * w.cols];
        w.dequantize_rows(0, &mut d);
        d
    }

    const TYPES: [GgmlType; 8] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q5_0,
    ];

    /// Tolerance of a product against the f64 product of the dequantized weights: f32
    /// rounding for `exact`; for `fast`, the int8 rounding of activations (and of re-quantized
    /// weights), relative to the sum of |terms|.
    fn check(got: f32, want: f64, mag: f64, fast: bool, what: &str) {
        let tol = if fast { 0.02 * mag } else { 1e-4 * (1.0 + mag) };
        assert!(
            (got as f64 - want).abs() <= tol,
            "{what}: {got} vs {want} (|terms| {mag})"
        );
    }

    /// Checks `y = x · Dᵀ` against the dense f64 weights `d` (rows × cols) with [`check`].
    fn check_forward(
        (y, x, d): (&[f32], &[f32], &[f64]),
        (rows, cols): (usize, usize),
        fast: bool,
        what: &str,
    ) {
        for i in 0..y.len() / rows {
            for r in 0..rows {
                let terms = (0..cols).map(|c| x[i * cols + c] as f64 * d[r * cols + c]);
                let want: f64 = terms.clone().sum();
                let mag: f64 = terms.map(f64::abs).sum();
                check(
                    y[i * rows + r],
                    want,
                    mag,
                    fast,
                    &format!("{what} token {i} row {r}"),
                );
            }
        }
    }

    fn quantizable(ty: GgmlType) -> bool {
        crate::quant::can_quantize(ty)
    }

    #[test]
    fn every_level_matches_the_dequantized_product_for_every_type_split_and_precision() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for level in Level::available() {
            let k = Kernels::for_level(level).unwrap();
            for ty in TYPES.into_iter().filter(|&t| quantizable(t)) {
                let col_set: &[usize] = if ty.block_size() == 256 {
                    &[256, 512]
                } else if ty.block_size() == 32 {
                    &[32, 96]
                } else {
                    &[1, 33, 96]
                };
                for &cols in col_set {
                    for rows in [1usize, 7, 33, 300] {
                        let wdata = quantize(ty, &fill(rows * cols, 7), cols).unwrap();
                        for precision in [Precision::Exact, Precision::Fast] {
                            let w = QMatrix::new(ty, rows, cols, &wdata)
                                .unwrap()
                                .with_precision(precision);
                            let d = dense(&w);
                            let fast = precision == Precision::Fast && cols % 32 == 0;
                            for t in [1usize, 2, 3, 5, 31, 33, 47] {
                                let x = fill(t * cols, 11 + t as u32);
                                let mut y = vec![f32::NAN; t * rows];
                                pool.install(|| forward_f32(&k, &mut y, &x, t, &w));
                                check_forward(
                                    (&y, &x, &d),
                                    (rows, cols),
                                    // Few tokens over Q8_0/Q4_0 take the int8 GEMV.
                                    fast && (t > GEMV_TOKENS
                                        || simd::gemv_i8::gemv_i8_supports(ty)),
                                    &format!("fwd {level:?} {ty} {precision} rows {rows} cols {cols} t {t}"),
                                );
                                let dy = fill(t * rows, 5 + t as u32);
                                let mut dx = vec![0.25f32; t * cols];
                                pool.install(|| backward_f32(&k, &mut dx, &dy, t, &w));
                                for i in 0..t {
                                    for c in 0..cols {
                                        let terms = (0..rows)
                                            .map(|r| dy[i * rows + r] as f64 * d[r * cols + c]);
                                        let want: f64 = 0.25 + terms.clone().sum::<f64>();
                                        let mag: f64 = terms.map(f64::abs).sum();
                                        check(
                                            dx[i * cols + c],
                                            want,
                                            mag,
                                            precision == Precision::Fast && t > GEMV_TOKENS,
                                            &format!("bwd {level:?} {ty} {precision} rows {rows} cols {cols} t {t}"),
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

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

    #[test]
    fn f64_backward_is_the_exact_transpose_of_forward() {
        // <dy, x·Wᵀ> = <dy·W, x> in f64, to rounding.
        let (rows, cols, t) = (37usize, 64usize, 9usize);
        let wdata = quantize(GgmlType::Q8_0, &fill(rows * cols, 3), cols).unwrap();
        let w = QMatrix::new(GgmlType::Q8_0, rows, cols, &wdata).unwrap();
        let x: Vec<f64> = fill(t * cols, 1).iter().map(|&v| v as f64).collect();
        let dy: Vec<f64> = fill(t * rows, 2).iter().map(|&v| v as f64).collect();
        let mut y = vec![0f64; t * rows];
        matmul_forward(&mut y, &x, &w);
        let mut dx = vec![0f64; t * cols];
        matmul_backward_input(&mut dx, &dy, &w);
        let lhs: f64 = y.iter().zip(&dy).map(|(a, b)| a * b).sum();
        let rhs: f64 = dx.iter().zip(&x).map(|(a, b)| a * b).sum();
        assert!(
            (lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
    }

    #[test]
    fn deterministic_for_a_given_thread_count_in_both_precisions() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (rows, cols, t) = (300usize, 96usize, 200usize);
        let wdata = quantize(GgmlType::Q4_0, &fill(rows * cols, 3), cols).unwrap();
        for precision in [Precision::Exact, Precision::Fast] {
            let w = QMatrix::new(GgmlType::Q4_0, rows, cols, &wdata)
                .unwrap()
                .with_precision(precision);
            let dy = fill(t * rows, 2);
            let x = fill(t * cols, 4);
            let run = || {
                let mut dx = vec![0f32; t * cols];
                let mut y = vec![0f32; t * rows];
                pool.install(|| {
                    matmul_backward_input(&mut dx, &dy, &w);
                    matmul_forward(&mut y, &x, &w);
                });
                (dx, y)
            };
            let first = run();
            for _ in 0..3 {
                let again = run();
                assert!(again
                    .0
                    .iter()
                    .zip(&first.0)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
                assert!(again
                    .1
                    .iter()
                    .zip(&first.1)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }

    #[test]
    fn qmatrix_rejects_wrong_sizes_and_types() {
        let data = vec![0u8; 34 * 2];
        assert!(QMatrix::new(GgmlType::Q8_0, 2, 32, &data).is_ok());
        assert!(matches!(
            QMatrix::new(GgmlType::Q8_0, 3, 32, &data),
            Err(QuantError::BufferSize { .. })
        ));
        assert!(matches!(
            QMatrix::new(GgmlType::Q8_0, 2, 33, &data),
            Err(QuantError::RowLength { .. })
        ));
        assert!(matches!(
            QMatrix::new(GgmlType::I32, 2, 1, &data),
            Err(QuantError::Unsupported { .. })
        ));
    }
}
