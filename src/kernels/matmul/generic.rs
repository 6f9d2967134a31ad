//! Products with W0 for float types other than f32 (the f64 gradient checks): the `gemm`
//! crate on dequantized panels, or per-row dot products for few tokens.

use super::{panel_rows, QMatrix, GEMV_TOKENS};
use crate::kernels::gemm::{gemm, MatRef};
use crate::kernels::num::Real;
use crate::util::num::dot;

// ------------------------------------------------------------------------------------------
// Generic float types (f64 gradient checks): the gemm crate on dequantized panels.

pub(super) fn forward_generic<F: Real>(y: &mut [F], x: &[F], t: usize, w: &QMatrix<'_>) {
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

pub(super) fn backward_generic<F: Real>(dx: &mut [F], dy: &[F], t: usize, w: &QMatrix<'_>) {
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
    use super::super::tests::fill;
    use super::super::{matmul_backward_input, matmul_forward};
    use super::*;
    use crate::quant::{quantize, GgmlType};

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
}
