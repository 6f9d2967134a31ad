//! RMSNorm: `y = x / sqrt(mean(x²) + eps) · w`, row by row.

/// Normalises each of the `rows` rows of `x` (row length `c = w.len()`) into `out`, and
/// stores each row's reciprocal RMS in `rstd` (kept for the backward pass).
///
/// Shapes: `x`, `out`: (rows, c); `rstd`: (rows).
pub fn rmsnorm_forward(out: &mut [f32], rstd: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let c = w.len();
    assert!(
        c > 0 && x.len() % c == 0,
        "rmsnorm: x is not a whole number of rows"
    );
    assert!(
        out.len() == x.len() && rstd.len() == x.len() / c,
        "rmsnorm: buffer sizes"
    );
    for ((xr, or), rs) in x
        .chunks_exact(c)
        .zip(out.chunks_exact_mut(c))
        .zip(rstd.iter_mut())
    {
        let ss = sum_of_squares(xr);
        let r = 1.0 / (ss / c as f32 + eps).sqrt();
        *rs = r;
        for ((o, &xi), &wi) in or.iter_mut().zip(xr).zip(w) {
            *o = xi * r * wi;
        }
    }
}

/// Σ x², accumulated in eight independent lanes so the compiler can vectorise it.
fn sum_of_squares(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for ch in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += v * v;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &v in chunks.remainder() {
        s += v * v;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_f64_reference_over_odd_widths() {
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
}
