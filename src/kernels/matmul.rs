//! Products with a frozen weight matrix W0 kept in its GGUF encoding:
//! forward `Y = X · W0ᵀ` and, for training, the gradient to the input `dX += dY · W0`
//! (W0 never gets a gradient).
//!
//! W0 is never dequantized whole: rows are dequantized into a small, cache-sized panel that
//! is handed to the `gemm` crate's microkernels, panel after panel. Work is split on the
//! current rayon pool:
//! - many tokens (prompt processing, evaluation, training): each thread takes a contiguous
//!   chunk of tokens and walks all panels, so output rows are disjoint, the dequantization
//!   cost is amortised over the chunk, and every output element is reduced in one fixed
//!   order (results do not depend on scheduling);
//! - few tokens (generation): each thread takes a group of weight rows, dequantizes one row
//!   at a time and dots it with every token.
//!
//! Panel scratch lives in a grow-only per-thread buffer ([`Real::with_scratch`]), so
//! steady-state calls do not allocate once each thread has seen the largest width.

use rayon::prelude::*;

use super::gemm::{gemm, MatRef};
use super::num::{dot, Real};
use crate::error::QuantError;
use crate::quant::GgmlType;

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
    pub fn dequantize_rows<F: Real>(&self, r0: usize, out: &mut [F]) {
        for (i, dst) in out.chunks_exact_mut(self.cols).enumerate() {
            if let Err(e) = F::dequantize(self.ty, self.row(r0 + i), dst) {
                unreachable!("row geometry was validated by QMatrix::new: {e}");
            }
        }
    }
}

/// Target size of one dequantized f32 panel (bytes): about a quarter of a typical L2.
const PANEL_BYTES: usize = 256 * 1024;
/// Below this many tokens per thread, the forward splits the weight rows instead.
const MIN_TOKENS_PER_THREAD: usize = 16;

/// Rows per dequantized panel for a given row width.
pub fn panel_rows(cols: usize) -> usize {
    (PANEL_BYTES / (4 * cols.max(1))).clamp(8, 512) / 8 * 8
}

/// Bytes of per-thread scratch the matmuls grow to (f32), for matrices up to `max_cols`
/// wide and `max_rows` tall: the dequantized panel, and the few-token output block.
pub fn matmul_scratch_bytes(max_cols: usize, max_rows: usize, threads: usize) -> usize {
    let few_tokens =
        (threads.max(1) * MIN_TOKENS_PER_THREAD) * max_rows.div_ceil(threads.max(1) * 4);
    4 * (panel_rows(max_cols) * max_cols + few_tokens)
}

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
fn forward_token_chunk<F: Real>(y: &mut [F], x: &[F], w: &QMatrix<'_>) {
    let (rows, cols) = (w.rows, w.cols);
    let t = x.len() / cols;
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

/// Few tokens: groups of weight rows in parallel, one dequantized row at a time.
fn forward_by_rows<F: Real>(y: &mut [F], x: &[F], t: usize, w: &QMatrix<'_>, threads: usize) {
    let (rows, cols) = (w.rows, w.cols);
    let group = rows.div_ceil(threads * 4).max(1);
    let dot_rows = |r0: usize, out: &mut [F]| {
        // out: (n rows of W, t tokens), row-major.
        F::with_scratch(0, cols, |row| {
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
    // Several tokens: each group fills a (rows, t) block in its thread's second scratch,
    // then writes it into y's columns under a lock (disjoint writes; no allocation).
    let y = std::sync::Mutex::new(y);
    (0..rows.div_ceil(group)).into_par_iter().for_each(|g| {
        let r0 = g * group;
        let n = group.min(rows - r0);
        F::with_scratch(1, n * t, |out| {
            dot_rows(r0, out);
            let mut y = match y.lock() {
                Ok(y) => y,
                Err(poisoned) => poisoned.into_inner(),
            };
            for (i, o) in out.chunks_exact(t).enumerate() {
                for (tok, &v) in o.iter().enumerate() {
                    y[tok * rows + r0 + i] = v;
                }
            }
        });
    });
}

/// `dx (t, w.cols) += dy (t, w.rows) · W`: the gradient of [`matmul_forward`] with respect
/// to its input. Tokens are split across threads; each thread walks all panels.
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
    let threads = rayon::current_num_threads().max(1);
    let chunk = t.div_ceil(threads).max(1);
    dx.par_chunks_mut(chunk * cols)
        .zip(dy.par_chunks(chunk * rows))
        .for_each(|(dxc, dyc)| {
            let tc = dyc.len() / rows;
            let p = panel_rows(cols).min(rows);
            F::with_scratch(0, p * cols, |panel| {
                let mut r0 = 0;
                while r0 < rows {
                    let n = p.min(rows - r0);
                    let panel = &mut panel[..n * cols];
                    w.dequantize_rows(r0, panel);
                    // dx_chunk (tc, cols) += dy_chunk[:, r0..r0+n] (tc, n) · panel (n, cols)
                    gemm(
                        dxc,
                        cols,
                        MatRef::rows(&dyc[r0..], rows),
                        MatRef::rows(panel, cols),
                        tc,
                        cols,
                        n,
                        true,
                    );
                    r0 += n;
                }
            });
        });
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

    fn dense(w: &QMatrix<'_>) -> Vec<f64> {
        let mut d = vec![0f64; w.rows * w.cols];
        w.dequantize_rows(0, &mut d);
        d
    }

    #[test]
    fn forward_and_backward_match_the_dequantized_product_for_every_split() {
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
                let d = dense(&w);
                for t in [1usize, 2, 5, 47, 130] {
                    let x = fill(t * cols, 11 + t as u32);
                    let mut y = vec![f32::NAN; t * rows];
                    pool.install(|| matmul_forward(&mut y, &x, &w));
                    for i in 0..t {
                        for r in 0..rows {
                            let want: f64 = (0..cols)
                                .map(|c| x[i * cols + c] as f64 * d[r * cols + c])
                                .sum();
                            let got = y[i * rows + r] as f64;
                            assert!(
                                (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                                "fwd {ty} rows {rows} t {t}"
                            );
                        }
                    }
                    let dy = fill(t * rows, 5 + t as u32);
                    let mut dx = vec![0.25f32; t * cols];
                    pool.install(|| matmul_backward_input(&mut dx, &dy, &w));
                    for i in 0..t {
                        for c in 0..cols {
                            let want: f64 = 0.25
                                + (0..rows)
                                    .map(|r| dy[i * rows + r] as f64 * d[r * cols + c])
                                    .sum::<f64>();
                            let got = dx[i * cols + c] as f64;
                            assert!(
                                (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                                "bwd {ty} rows {rows} t {t}"
                            );
                        }
                    }
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
    fn deterministic_for_a_given_thread_count() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (rows, cols, t) = (300usize, 96usize, 200usize);
        let wdata = quantize(GgmlType::Q4_0, &fill(rows * cols, 3), cols).unwrap();
        let w = QMatrix::new(GgmlType::Q4_0, rows, cols, &wdata).unwrap();
        let dy = fill(t * rows, 2);
        let run = || {
            let mut dx = vec![0f32; t * cols];
            pool.install(|| matmul_backward_input(&mut dx, &dy, &w));
            dx
        };
        let first = run();
        for _ in 0..5 {
            assert!(run()
                .iter()
                .zip(&first)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
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
