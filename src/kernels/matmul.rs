//! `Y = X · W0ᵀ` against a frozen weight matrix kept in its GGUF encoding.
//!
//! W0 is never dequantized whole: rows are dequantized into a small, cache-sized panel that
//! is handed to the `gemm` crate's microkernels, panel after panel. Work is split on the
//! current rayon pool:
//! - many tokens (prompt processing, evaluation, training): each thread takes a contiguous
//!   chunk of tokens and walks all panels, so output rows are disjoint and the dequantization
//!   cost is amortised over the chunk;
//! - few tokens (generation): each thread takes a group of weight rows, dequantizes one row
//!   at a time and dots it with every token.
//!
//! Panel scratch lives in a grow-only per-thread buffer, so steady-state calls do not
//! allocate once each thread has seen the largest width.

use std::cell::RefCell;

use rayon::prelude::*;

use super::attention::dot;
use super::gemm_f32::gemm_abt;
use crate::error::QuantError;
use crate::quant::{dequantize_row, GgmlType};

/// A weight matrix of `rows` output features × `cols` input features, each row stored as
/// `cols` elements of `ty` (GGUF `ne = [cols, rows]`).
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
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
            data,
            row_bytes,
        })
    }

    /// The encoded bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Dequantizes rows `r0 .. r0 + out.len()/cols` into `out`.
    pub fn dequantize_rows(&self, r0: usize, out: &mut [f32]) {
        for (i, dst) in out.chunks_exact_mut(self.cols).enumerate() {
            if let Err(e) = dequantize_row(self.ty, self.row(r0 + i), dst) {
                unreachable!("row geometry was validated by QMatrix::new: {e}");
            }
        }
    }
}

/// Target size of one dequantized panel (bytes): about a quarter of a typical L2.
const PANEL_BYTES: usize = 256 * 1024;
/// Below this many tokens per thread, split the weight rows instead of the tokens.
const MIN_TOKENS_PER_THREAD: usize = 16;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch grown to at least `n` floats.
fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < n {
            buf.resize(n, 0.0);
        }
        f(&mut buf[..n])
    })
}

/// Rows per dequantized panel for a given row width.
pub fn panel_rows(cols: usize) -> usize {
    (PANEL_BYTES / (4 * cols.max(1))).clamp(8, 512) / 8 * 8
}

/// Bytes of per-thread scratch [`matmul_forward`] grows to for a matrix of this width.
pub fn matmul_scratch_bytes(cols: usize) -> usize {
    4 * panel_rows(cols) * cols
}

/// `y (t, w.rows) ← x (t, w.cols) · Wᵀ`.
pub fn matmul_forward(y: &mut [f32], x: &[f32], w: &QMatrix<'_>) {
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
    let threads = rayon::current_num_threads().max(1);
    if t >= threads * MIN_TOKENS_PER_THREAD {
        let chunk = t.div_ceil(threads);
        y.par_chunks_mut(chunk * rows)
            .zip(x.par_chunks(chunk * cols))
            .for_each(|(yc, xc)| forward_token_chunk(yc, xc, w));
    } else {
        forward_by_rows(y, x, t, w, threads);
    }
}

/// One thread's token chunk: every panel of W, dequantized once, through gemm.
fn forward_token_chunk(y: &mut [f32], x: &[f32], w: &QMatrix<'_>) {
    let (rows, cols) = (w.rows, w.cols);
    let t = x.len() / cols;
    let p = panel_rows(cols).min(rows);
    with_scratch(p * cols, |panel| {
        let mut r0 = 0;
        while r0 < rows {
            let n = p.min(rows - r0);
            let panel = &mut panel[..n * cols];
            w.dequantize_rows(r0, panel);
            gemm_abt(&mut y[r0..], rows, x, panel, t, n, cols, false);
            r0 += n;
        }
    });
}

/// Few tokens: groups of weight rows in parallel, one dequantized row at a time.
fn forward_by_rows(y: &mut [f32], x: &[f32], t: usize, w: &QMatrix<'_>, threads: usize) {
    let (rows, cols) = (w.rows, w.cols);
    let group = rows.div_ceil(threads * 4).max(1);
    let dot_rows = |r0: usize, out: &mut [f32]| {
        // out: (n rows of W, t tokens), row-major.
        with_scratch(cols, |row| {
            for (i, o) in out.chunks_exact_mut(t).enumerate() {
                w.dequantize_rows(r0 + i, row);
                for (tok, v) in o.iter_mut().enumerate() {
                    *v = dot(row, &x[tok * cols..(tok + 1) * cols]);
                }
            }
        })
    };
    if t == 1 {
        y.par_chunks_mut(group)
            .enumerate()
            .for_each(|(g, out)| dot_rows(g * group, out));
        return;
    }
    let parts: Vec<(usize, Vec<f32>)> = (0..rows.div_ceil(group))
        .into_par_iter()
        .map(|g| {
            let r0 = g * group;
            let mut out = vec![0.0; group.min(rows - r0) * t];
            dot_rows(r0, &mut out);
            (r0, out)
        })
        .collect();
    for (r0, out) in parts {
        for (i, o) in out.chunks_exact(t).enumerate() {
            for (tok, &v) in o.iter().enumerate() {
                y[tok * rows + r0 + i] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize;

    fn fill(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0
                    - 1.0
            })
            .collect()
    }

    /// The product against the dequantized matrix, in f64.
    fn reference(x: &[f32], w: &QMatrix<'_>) -> Vec<f64> {
        let mut dense = vec![0f32; w.rows * w.cols];
        w.dequantize_rows(0, &mut dense);
        let t = x.len() / w.cols;
        let mut y = vec![0f64; t * w.rows];
        for i in 0..t {
            for r in 0..w.rows {
                y[i * w.rows + r] = (0..w.cols)
                    .map(|c| x[i * w.cols + c] as f64 * dense[r * w.cols + c] as f64)
                    .sum();
            }
        }
        y
    }

    #[test]
    fn every_split_matches_the_dequantized_product() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let cols = if ty.block_size() == 256 { 512 } else { 96 };
            for rows in [1usize, 7, 33, 300] {
                let wdata = quantize(ty, &fill(rows * cols, 7), cols).unwrap();
                let w = QMatrix::new(ty, rows, cols, &wdata).unwrap();
                for t in [1usize, 2, 5, 47, 130] {
                    let x = fill(t * cols, 11 + t as u32);
                    let mut y = vec![f32::NAN; t * rows];
                    pool.install(|| matmul_forward(&mut y, &x, &w));
                    let want = reference(&x, &w);
                    for (i, (&g, &r)) in y.iter().zip(&want).enumerate() {
                        assert!(
                            (g as f64 - r).abs() < 1e-3 * (1.0 + r.abs()),
                            "{ty} rows {rows} t {t} i {i}: {g} vs {r}"
                        );
                    }
                }
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
