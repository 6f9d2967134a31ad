//! Cross-entropy of rows of logits against target ids, and its gradient.

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
