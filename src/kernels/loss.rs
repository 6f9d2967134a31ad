//! Cross-entropy of rows of logits against target ids, and its gradient.

use super::matmul::Precision;
use super::num::Real;

/// `logsumexp(z) − z[target]`, accumulated in f64 (the row can be 10⁵ wide).
pub fn cross_entropy<F: Real>(logits: &[F], target: usize) -> f64 {
    let max = logits
        .iter()
        .map(|z| z.to_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|&z| (z.to_f64() - max).exp()).sum();
    max + sum.ln() - logits[target].to_f64()
}

/// Overwrites `logits` with `scale · (softmax(logits) − onehot(target))`, the gradient of
/// `scale · cross_entropy`, and returns the cross-entropy.
pub fn cross_entropy_backward<F: Real>(logits: &mut [F], target: usize, scale: f64) -> f64 {
    let max = logits
        .iter()
        .map(|z| z.to_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|&z| (z.to_f64() - max).exp()).sum();
    let lse = max + sum.ln();
    let ce = lse - logits[target].to_f64();
    for z in logits.iter_mut() {
        *z = F::from_f64((z.to_f64() - lse).exp() * scale);
    }
    logits[target] -= F::from_f64(scale);
    ce
}

/// Online log-sum-exp over a panel of logits, row by row: `rows` rows of `n` values (rows
/// `ld` apart) update each row's running max `m` and sum `s` (of `e^(x − m)`, in f64).
/// `Fast` takes the f32 exponentials from [`crate::simd::ew::exp_fast`].
pub fn lse_update_rows<F: Real>(
    x: &[F],
    (rows, n, ld): (usize, usize, usize),
    m: &mut [F],
    s: &mut [f64],
    precision: Precision,
) {
    assert!(
        m.len() >= rows && s.len() >= rows && (rows == 0 || (rows - 1) * ld + n <= x.len()),
        "lse_update_rows: sizes"
    );
    if let (Some(x), Some(m)) = (F::as_f32(x), F::as_f32_mut(m)) {
        return (crate::simd::kernels().ew.lse_rows)(
            x,
            rows,
            n,
            ld,
            m,
            s,
            precision == Precision::Fast,
        );
    }
    for j in 0..rows {
        let row = &x[j * ld..j * ld + n];
        let mx = row.iter().fold(m[j], |a, &b| a.max(b));
        let shift = if mx == F::NEG_INFINITY {
            0.0
        } else {
            mx.to_f64()
        };
        let sum: f64 = row.iter().map(|&v| (v.to_f64() - shift).exp()).sum();
        s[j] = s[j] * (m[j].to_f64() - shift).exp() + sum;
        m[j] = mx;
    }
}

/// `x ← scale · exp(x − lse)` row by row: the softmax of a panel of logits from each row's
/// log-sum-exp over the whole row (`precision` as in [`lse_update_rows`]).
pub fn softmax_from_lse_rows<F: Real>(
    x: &mut [F],
    (rows, n, ld): (usize, usize, usize),
    lse: &[F],
    scale: f64,
    precision: Precision,
) {
    assert!(
        lse.len() >= rows && (rows == 0 || (rows - 1) * ld + n <= x.len()),
        "softmax_from_lse_rows: sizes"
    );
    if let (Some(lse), Some(x)) = (F::as_f32(lse), F::as_f32_mut(x)) {
        return (crate::simd::kernels().ew.softmax_rows)(
            x,
            rows,
            n,
            ld,
            lse,
            scale as f32,
            precision == Precision::Fast,
        );
    }
    for j in 0..rows {
        for v in &mut x[j * ld..j * ld + n] {
            *v = F::from_f64((v.to_f64() - lse[j].to_f64()).exp() * scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{assert_close, numeric, values};
    use super::*;

    #[test]
    fn matches_log_softmax_and_survives_large_logits() {
        let z = [1.0f32, 2.0, 3.0];
        let want = -(3.0f64.exp() / (1f64.exp() + 2f64.exp() + 3f64.exp())).ln();
        assert!((cross_entropy(&z, 2) - want).abs() < 1e-12);
        let big = [1000.0f32, 0.0, -1000.0];
        assert!(cross_entropy(&big, 0).abs() < 1e-12);
        assert!((cross_entropy(&big, 1) - 1000.0).abs() < 1e-9);
        assert!((cross_entropy(&[0.0f32; 4], 3) - 4f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn backward_matches_central_differences() {
        let z: Vec<f64> = values(23, 31).iter().map(|v| v * 5.0).collect();
        for target in [0usize, 7, 22] {
            let mut g = z.clone();
            let ce = cross_entropy_backward(&mut g, target, 0.3);
            assert!((ce - cross_entropy(&z, target)).abs() < 1e-12);
            assert_close(
                "cross-entropy",
                &g,
                &numeric(&z, |z| 0.3 * cross_entropy(z, target)),
            );
        }
    }
}
