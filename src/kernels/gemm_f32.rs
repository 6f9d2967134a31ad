//! Safe entry points to the `gemm` crate's f32 microkernels for the two layouts the engine
//! uses. Shapes are checked here, once, so the single `unsafe` call below only ever sees
//! in-bounds strides.

use gemm::Parallelism;

/// `y (m, n) ← [y +] a (m, k) · bᵀ`, with `b` stored (n, k) row-major (a weight panel) and
/// `y` rows `ldy` apart (`ldy ≥ n`). Runs on the calling thread.
#[allow(clippy::too_many_arguments)]
pub fn gemm_abt(
    y: &mut [f32],
    ldy: usize,
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    gemm_strided(y, ldy, a, b, m, n, k, (1, k as isize), accumulate);
}

/// `y (m, n) ← [y +] a (m, k) · b`, with `b` stored (k, n) row-major and `y` rows `ldy` apart.
#[allow(clippy::too_many_arguments)]
pub fn gemm_ab(
    y: &mut [f32],
    ldy: usize,
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    gemm_strided(y, ldy, a, b, m, n, k, (n as isize, 1), accumulate);
}

/// The shared checked call; `b_strides` = (row stride, column stride) of the k × n operand.
#[allow(clippy::too_many_arguments)]
fn gemm_strided(
    y: &mut [f32],
    ldy: usize,
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    b_strides: (isize, isize),
    accumulate: bool,
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
                row[..n].fill(0.0);
            }
        }
        return;
    }
    assert!(
        a.len() >= m * k && b.len() >= k * n,
        "gemm: operands too small"
    );
    let (b_rs, b_cs) = b_strides;
    // SAFETY: every pointer/stride pair addresses only elements inside the slices checked
    // above: a is m×k with strides (k, 1); b is k×n with strides (b_rs, b_cs), which are
    // (1, k) for a (n, k) row-major panel or (n, 1) for a (k, n) matrix, both inside
    // b[..k*n]; y is m×n with strides (ldy, 1) inside y[..(m-1)*ldy+n]. `y` is borrowed
    // mutably, so nothing else aliases it, and `a`/`b` cannot overlap it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            ldy as isize,
            accumulate,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
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

    fn fill(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn both_layouts_match_naive_products_over_odd_shapes() {
        for (m, n, k) in [
            (1, 1, 1),
            (3, 5, 7),
            (31, 33, 17),
            (65, 9, 255),
            (2, 129, 64),
        ] {
            let a = fill(m * k, 1);
            let bt = fill(n * k, 2); // (n, k)
            let b: Vec<f32> = (0..k * n).map(|i| bt[(i % n) * k + i / n]).collect(); // (k, n)
            let ldy = n + 3;
            let mut y1 = vec![0.5f32; m * ldy];
            let mut y2 = y1.clone();
            gemm_abt(&mut y1, ldy, &a, &bt, m, n, k, true);
            gemm_ab(&mut y2, ldy, &a, &b, m, n, k, false);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| a[i * k + p] as f64 * bt[j * k + p] as f64)
                        .sum();
                    assert!(
                        (y1[i * ldy + j] as f64 - (want + 0.5)).abs() < 1e-4,
                        "abt {m}x{n}x{k}"
                    );
                    assert!(
                        (y2[i * ldy + j] as f64 - want).abs() < 1e-4,
                        "ab {m}x{n}x{k}"
                    );
                }
                for j in n..ldy {
                    assert_eq!(y1[i * ldy + j], 0.5, "padding untouched");
                }
            }
        }
    }

    #[test]
    fn empty_inner_dimension_zeroes_or_keeps() {
        let mut y = vec![3.0f32; 4];
        gemm_abt(&mut y, 2, &[], &[], 2, 2, 0, true);
        assert_eq!(y, vec![3.0; 4]);
        gemm_abt(&mut y, 2, &[], &[], 2, 2, 0, false);
        assert_eq!(y, vec![0.0; 4]);
    }
}
