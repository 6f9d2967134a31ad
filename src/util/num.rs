//! The dot product, the one arithmetic primitive both [`crate::simd`] (as the scalar twin of
//! its vector dot) and [`crate::kernels`] (generic over f32 and f64) need. It lives below
//! both so that `simd` does not depend on `kernels`; [`crate::kernels::Real`] implies the
//! bounds of [`Scalar`].

use std::ops::{Add, AddAssign, Mul};

/// The arithmetic [`dot`] needs: f32 and f64 (and every [`crate::kernels::Real`]).
/// `Default::default()` is the zero.
pub trait Scalar: Copy + Default + Add<Output = Self> + Mul<Output = Self> + AddAssign {}

impl<F: Copy + Default + Add<Output = F> + Mul<Output = F> + AddAssign> Scalar for F {}

/// Dot product in eight independent lanes (vectorisable; fixed order, so deterministic).
#[inline]
pub fn dot<F: Scalar>(a: &[F], b: &[F]) -> F {
    let mut acc = [F::default(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (&x, &y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_handles_remainders_in_both_types() {
        for n in [0usize, 1, 7, 8, 9, 31, 33] {
            let a: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let b: Vec<f64> = (0..n).map(|i| 1.0 - i as f64 * 0.5).collect();
            let want: f64 = (0..n).map(|i| i as f64 * (1.0 - i as f64 * 0.5)).sum();
            assert_eq!(dot(&a, &b), want);
            let af: Vec<f32> = a.iter().map(|&x| x as f32).collect();
            let bf: Vec<f32> = b.iter().map(|&x| x as f32).collect();
            assert!((dot(&af, &bf) as f64 - want).abs() < 1e-3);
        }
    }
}
