//! Central-difference gradient checks in f64, shared by the kernels' tests.

use crate::util::rng::XorShift64;

/// Deterministic values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = XorShift64::new(seed);
    (0..n).map(|_| rng.next_f64() * 2.0 - 1.0).collect()
}

/// The numeric gradient of `f` at `x` by central differences.
pub fn numeric(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let h = 1e-5 * x[i].abs().max(1.0);
            xp[i] = x[i] + h;
            let up = f(&xp);
            xp[i] = x[i] - h;
            let down = f(&xp);
            xp[i] = x[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// ‖analytic − numeric‖ / ‖numeric‖.
pub fn rel_error(analytic: &[f64], numeric: &[f64]) -> f64 {
    assert_eq!(analytic.len(), numeric.len());
    let diff: f64 = analytic
        .iter()
        .zip(numeric)
        .map(|(a, n)| (a - n) * (a - n))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = numeric.iter().map(|n| n * n).sum::<f64>().sqrt();
    diff / norm.max(1e-300)
}

/// Asserts the relative error is at most 1e-6.
pub fn assert_close(what: &str, analytic: &[f64], numeric: &[f64]) {
    let e = rel_error(analytic, numeric);
    assert!(e <= 1e-6, "{what}: relative gradient error {e:e}");
}

/// `Σ w ⊙ y`: a scalar loss that weights every output differently.
pub fn weighted(y: &[f64], w: &[f64]) -> f64 {
    y.iter().zip(w).map(|(a, b)| a * b).sum()
}
