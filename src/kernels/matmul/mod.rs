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
//!
//! Where each part lives: this file holds the matrix view, the precisions, the scratch
//! sizing every path shares, and the entry points that pick a path (with the tests that
//! hold all paths to one contract); `exact` the f32 panel and few-token paths, `int8` the
//! fast paths, `generic` the plain path for other float types.

use super::num::Real;
use super::scratch::ScratchNeed;
use crate::error::QuantError;
use crate::quant::GgmlType;
use crate::simd::{self, Kernels};

mod exact;
mod generic;
mod int8;

use exact::{backward_panels, forward_gemv, forward_panels};
use generic::{backward_generic, forward_generic};
use int8::{backward_int8, forward_int8};

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
/// Rows per call of the block-reading GEMV (its output is staged in scratch).
const GEMV_ROWS: usize = 64;

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

/// Splits `n` items into tasks of `chunk` (a multiple of `align`) so that every thread gets
/// work: at most `max_chunk`, at least `align`.
fn task_chunk(n: usize, max_chunk: usize, align: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let per_thread = n.div_ceil(threads).div_ceil(align) * align;
    per_thread.min(max_chunk / align * align).max(align)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize;
    use crate::simd::Level;

    pub(super) fn fill(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0
                    - 1.0
            })
            .collect()
    }

    pub(super) fn dense(w: &QMatrix<'_>) -> Vec<f64> {
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
    pub(super) fn check_forward(
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
