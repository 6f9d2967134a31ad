//! Safe entry points to the `gemm` crate's microkernels (f32 and f64) for strided
//! matrices. Shapes and strides are checked here, once, so the single `unsafe` call below
//! only ever sees in-bounds addresses.

use gemm::Parallelism;

use super::num::Real;

/// A read-only matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, F> {
    pub data: &'a [F],
    pub rs: usize,
    pub cs: usize,
}

impl<'a, F> MatRef<'a, F> {
    /// A row-major (rows, cols) matrix with rows `ld` apart.
    pub fn rows(data: &'a [F], ld: usize) -> Self {
        MatRef {
            data,
            rs: ld,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with rows `ld` apart.
    pub fn transposed(data: &'a [F], ld: usize) -> Self {
        MatRef {
            data,
            rs: 1,
            cs: ld,
        }
    }

    /// Whether every element of an (m, n) view lies inside `data`.
    fn fits(&self, m: usize, n: usize) -> bool {
        m == 0 || n == 0 || (m - 1) * self.rs + (n - 1) * self.cs < self.data.len()
    }
}

/// `y (m, n) ← [y +] a (m, k) · b (k, n)`; `y` is row-major with rows `ldy` apart.
/// Runs on the calling thread.
#[allow(clippy::too_many_arguments)]
pub fn gemm<F: Real>(
    y: &mut [F],
    ldy: usize,
    a: MatRef<'_, F>,
    b: MatRef<'_, F>,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    gemm_scaled(y, ldy, a, b, m, n, k, accumulate, F::ONE);
}

/// `y (m, n) ← [y +] scale · a (m, k) · b (k, n)`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_scaled<F: Real>(
    y: &mut [F],
    ldy: usize,
    a: MatRef<'_, F>,
    b: MatRef<'_, F>,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    scale: F,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        ldy >= n && y.len() >= (m - 1) * ldy + n,
        "gemm: y too small"
    );
    if k == 0 {
        if !accumulate {
            for row in y.chunks_mut(ldy).take(m) {
                row[..n].fill(F::ZERO);
            }
        }
        return;
    }
    assert!(
        a.fits(m, k) && b.fits(k, n),
        "gemm: operand views out of bounds"
    );
    // SAFETY: `F` is f32 or f64 (the only `Real` types), both supported by `gemm::gemm`.
    // Every address the call forms is inside its slice: y's (m, n) view with strides
    // (ldy, 1) and a's (m, k) / b's (k, n) views with their strides were checked above. `y`
    // is borrowed mutably, so it aliases neither `a` nor `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            ldy as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            F::ONE,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(n: usize, seed: u32) -> Vec<f64> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f64 / 1000.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn every_layout_matches_naive_products_over_odd_shapes() {
        for (m, n, k) in [
            (1, 1, 1),
            (3, 5, 7),
            (31, 33, 17),
            (65, 9, 255),
            (2, 129, 64),
        ] {
            let a = fill(m * k, 1); // (m, k)
            let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect(); // (k, m)
            let bt = fill(n * k, 2); // (n, k)
            let b: Vec<f64> = (0..k * n).map(|i| bt[(i % n) * k + i / n]).collect(); // (k, n)
            let ldy = n + 3;
            let want =
                |i: usize, j: usize| -> f64 { (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum() };
            let cases: [(MatRef<f64>, MatRef<f64>); 3] = [
                (MatRef::rows(&a, k), MatRef::transposed(&bt, k)),
                (MatRef::rows(&a, k), MatRef::rows(&b, n)),
                (MatRef::transposed(&at, m), MatRef::rows(&b, n)),
            ];
            for (case, (ra, rb)) in cases.into_iter().enumerate() {
                let mut y = vec![0.5f64; m * ldy];
                gemm(&mut y, ldy, ra, rb, m, n, k, case == 0);
                let base = if case == 0 { 0.5 } else { 0.0 };
                for i in 0..m {
                    for j in 0..n {
                        assert!(
                            (y[i * ldy + j] - want(i, j) - base).abs() < 1e-12,
                            "case {case} {m}x{n}x{k}"
                        );
                    }
                    for j in n..ldy {
                        assert_eq!(y[i * ldy + j], 0.5, "padding untouched");
                    }
                }
            }
            // f32 too.
            let af: Vec<f32> = a.iter().map(|&x| x as f32).collect();
            let btf: Vec<f32> = bt.iter().map(|&x| x as f32).collect();
            let mut y = vec![0f32; m * n];
            gemm(
                &mut y,
                n,
                MatRef::rows(&af, k),
                MatRef::transposed(&btf, k),
                m,
                n,
                k,
                false,
            );
            for i in 0..m {
                for j in 0..n {
                    assert!((y[i * n + j] as f64 - want(i, j)).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    fn empty_inner_dimension_zeroes_or_keeps() {
        let mut y = vec![3.0f32; 4];
        gemm(
            &mut y,
            2,
            MatRef::rows(&[], 0),
            MatRef::rows(&[], 2),
            2,
            2,
            0,
            true,
        );
        assert_eq!(y, vec![3.0; 4]);
        gemm(
            &mut y,
            2,
            MatRef::rows(&[], 0),
            MatRef::rows(&[], 2),
            2,
            2,
            0,
            false,
        );
        assert_eq!(y, vec![0.0; 4]);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn views_past_the_end_are_refused() {
        let mut y = vec![0f32; 4];
        let a = vec![0f32; 3];
        gemm(
            &mut y,
            2,
            MatRef::rows(&a, 2),
            MatRef::rows(&a, 2),
            2,
            2,
            2,
            false,
        );
    }
}
