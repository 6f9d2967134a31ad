//! RMSNorm: `y = x / sqrt(mean(x²) + eps) · w`, row by row, and its gradient.

use rayon::prelude::*;

use super::num::Real;

/// Rows per parallel task of the f32 paths.
const ROWS: usize = 16;

/// Normalises each row of `x` (row length `c = w.len()`) into `out`, and stores each row's
/// reciprocal RMS in `rstd` (kept for the backward pass).
///
/// Shapes: `x`, `out`: (rows, c); `rstd`: (rows).
pub fn rmsnorm_forward<F: Real>(out: &mut [F], rstd: &mut [F], x: &[F], w: &[f32], eps: f32) {
    let c = w.len();
    assert!(
        c > 0 && x.len() % c == 0,
        "rmsnorm: x is not a whole number of rows"
    );
    assert!(
        out.len() == x.len() && rstd.len() == x.len() / c,
        "rmsnorm: buffer sizes"
    );
    if let (Some(out), Some(rstd), Some(x)) =
        (F::as_f32_mut(out), F::as_f32_mut(rstd), F::as_f32(x))
    {
        let row = crate::simd::kernels().ew.rmsnorm_row;
        out.par_chunks_mut(ROWS * c)
            .zip(rstd.par_chunks_mut(ROWS))
            .zip(x.par_chunks(ROWS * c))
            .for_each(|((o, r), x)| {
                for ((o, r), x) in o.chunks_exact_mut(c).zip(r).zip(x.chunks_exact(c)) {
                    *r = row(o, x, w, eps);
                }
            });
        return;
    }
    for ((xr, or), rs) in x
        .chunks_exact(c)
        .zip(out.chunks_exact_mut(c))
        .zip(rstd.iter_mut())
    {
        let ss = sum_of_squares(xr);
        let r = F::ONE / (ss / F::from_f64(c as f64) + F::from_f32(eps)).sqrt();
        *rs = r;
        for ((o, &xi), &wi) in or.iter_mut().zip(xr).zip(w) {
            *o = xi * r * F::from_f32(wi);
        }
    }
}

/// `dx += ∂(rmsnorm)/∂x · dy`, with `rstd` from the forward pass.
///
/// `dx_j += r·w_j·dy_j − x_j·r³/c · Σ_i dy_i·w_i·x_i`.
pub fn rmsnorm_backward<F: Real>(dx: &mut [F], dy: &[F], x: &[F], w: &[f32], rstd: &[F]) {
    let c = w.len();
    assert!(
        dx.len() == x.len() && dy.len() == x.len() && rstd.len() * c == x.len(),
        "rmsnorm backward: sizes"
    );
    if let (Some(dx), Some(dy), Some(x), Some(rstd)) = (
        F::as_f32_mut(dx),
        F::as_f32(dy),
        F::as_f32(x),
        F::as_f32(rstd),
    ) {
        let row = crate::simd::kernels().ew.rmsnorm_back_row;
        dx.par_chunks_mut(ROWS * c)
            .zip(dy.par_chunks(ROWS * c))
            .zip(x.par_chunks(ROWS * c))
            .zip(rstd.par_chunks(ROWS))
            .for_each(|(((dx, dy), x), r)| {
                for (((dx, dy), x), &r) in dx
                    .chunks_exact_mut(c)
                    .zip(dy.chunks_exact(c))
                    .zip(x.chunks_exact(c))
                    .zip(r)
                {
                    row(dx, dy, x, w, r);
                }
            });
        return;
    }
    for (((dxr, dyr), xr), &r) in dx
        .chunks_exact_mut(c)
        .zip(dy.chunks_exact(c))
        .zip(x.chunks_exact(c))
        .zip(rstd)
    {
        let mut s = F::ZERO;
        for ((&g, &xi), &wi) in dyr.iter().zip(xr).zip(w) {
            s += g * F::from_f32(wi) * xi;
        }
        let k = r * r * r * s / F::from_f64(c as f64);
        for (((d, &g), &xi), &wi) in dxr.iter_mut().zip(dyr).zip(xr).zip(w) {
            *d += r * F::from_f32(wi) * g - xi * k;
        }
    }
}

/// Σ x², accumulated in eight independent lanes so the compiler can vectorise it.
fn sum_of_squares<F: Real>(x: &[F]) -> F {
    let mut acc = [F::ZERO; 8];
    let mut chunks = x.chunks_exact(8);
    for ch in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += v * v;
        }
    }
    let mut s: F = acc.iter().copied().sum();
    for &v in chunks.remainder() {
        s += v * v;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{assert_close, numeric, values, weighted};
    use super::*;

    #[test]
    fn forward_matches_f64_definition_over_odd_widths() {
        for c in [1usize, 7, 31, 33, 64, 255] {
            let rows = 3;
            let x: Vec<f32> = (0..rows * c)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let w: Vec<f32> = (0..c).map(|i| 0.5 + (i % 5) as f32 * 0.25).collect();
            let mut out = vec![0.0; rows * c];
            let mut rstd = vec![0.0; rows];
            rmsnorm_forward(&mut out, &mut rstd, &x, &w, 1e-5);
            for r in 0..rows {
                let xr = &x[r * c..(r + 1) * c];
                let ms: f64 = xr.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / c as f64;
                let inv = 1.0 / (ms + 1e-5).sqrt();
                for i in 0..c {
                    let want = xr[i] as f64 * inv * w[i] as f64;
                    let got = out[r * c + i] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "c={c} r={r} i={i}: {got} vs {want}"
                    );
                }
                assert!(((rstd[r] as f64) - inv).abs() <= 1e-5 * inv);
            }
        }
    }

    #[test]
    fn backward_matches_central_differences() {
        for c in [1usize, 3, 17, 64] {
            let rows = 3;
            let x = values(rows * c, 1);
            let w: Vec<f32> = values(c, 2)
                .iter()
                .map(|&v| (1.0 + 0.5 * v) as f32)
                .collect();
            let g = values(rows * c, 3);
            let loss = |x: &[f64]| {
                let mut y = vec![0.0; x.len()];
                let mut r = vec![0.0; rows];
                rmsnorm_forward(&mut y, &mut r, x, &w, 1e-5);
                weighted(&y, &g)
            };
            let mut y = vec![0.0; x.len()];
            let mut r = vec![0.0; rows];
            rmsnorm_forward(&mut y, &mut r, &x, &w, 1e-5);
            let mut dx = vec![0.0; x.len()];
            rmsnorm_backward(&mut dx, &g, &x, &w, &r);
            assert_close(&format!("rmsnorm c={c}"), &dx, &numeric(&x, loss));
        }
    }
}
