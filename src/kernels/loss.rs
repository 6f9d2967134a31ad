//! Cross-entropy of one row of logits against a target id.

/// `logsumexp(z) − z[target]`, accumulated in f64 (the row can be 10⁵ wide).
pub fn cross_entropy(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&z| (z as f64 - max).exp()).sum();
    max + sum.ln() - logits[target] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_log_softmax_and_survives_large_logits() {
        let z = [1.0f32, 2.0, 3.0];
        let want = -(3.0f64.exp() / (1f64.exp() + 2f64.exp() + 3f64.exp())).ln();
        assert!((cross_entropy(&z, 2) - want).abs() < 1e-12);
        let big = [1000.0f32, 0.0, -1000.0];
        assert!(cross_entropy(&big, 0).abs() < 1e-12);
        assert!((cross_entropy(&big, 1) - 1000.0).abs() < 1e-9);
        assert!((cross_entropy(&[0.0; 4], 3) - 4f64.ln()).abs() < 1e-12);
    }
}
