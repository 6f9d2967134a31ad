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

/// Rows of `n` values per parallel task of the row-wise kernels below: about 32 Ki values
/// (tens of microseconds of exponentials) per task, all rows in one when that is all.
fn rows_per_task(rows: usize, n: usize) -> usize {
    (32_768 / n.max(1)).clamp(1, rows.max(1))
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
        let (lse_rows, fast) = (
            crate::simd::kernels().ew.lse_rows,
            precision == Precision::Fast,
        );
        let per = rows_per_task(rows, n);
        if per >= rows {
            return lse_rows(x, rows, n, ld, m, s, fast);
        }
        use rayon::prelude::*;
        return m[..rows]
            .par_chunks_mut(per)
            .zip(s[..rows].par_chunks_mut(per))
            .enumerate()
            .for_each(|(i, (m, s))| {
                let r = m.len();
                lse_rows(&x[i * per * ld..], r, n, ld, m, s, fast)
            });
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
        let (softmax_rows, fast) = (
            crate::simd::kernels().ew.softmax_rows,
            precision == Precision::Fast,
        );
        let per = rows_per_task(rows, n);
        if per >= rows {
            return softmax_rows(x, rows, n, ld, lse, scale as f32, fast);
        }
        // Whole rows of `ld` per task; the last task's rows end at `(rows − 1)·ld + n`.
        let x = &mut x[..(rows - 1) * ld + n];
        use rayon::prelude::*;
        return x
            .par_chunks_mut(per * ld)
            .zip(lse[..rows].par_chunks(per))
            .for_each(|(x, lse)| softmax_rows(x, lse.len(), n, ld, lse, scale as f32, fast));
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
    fn row_wise_lse_and_softmax_split_over_tasks_match_the_definition() {
        // Enough rows of a width that the rows go to several parallel tasks, with a padded
        // stride; the log-sum-exp over two panels of each row, then the softmax of the
        // second panel from it.
        for precision in [Precision::Exact, Precision::Fast] {
            for (rows, n, ld) in [(37usize, 1000usize, 1003usize), (5, 70_000, 70_000)] {
                let a: Vec<f32> = values(rows * ld, 41)
                    .iter()
                    .map(|&v| (v * 20.0) as f32)
                    .collect();
                let b: Vec<f32> = values(rows * ld, 42)
                    .iter()
                    .map(|&v| (v * 20.0) as f32)
                    .collect();
                let (mut m, mut s) = (vec![f32::NEG_INFINITY; rows], vec![0f64; rows]);
                lse_update_rows(&a, (rows, n, ld), &mut m, &mut s, precision);
                lse_update_rows(&b, (rows, n, ld), &mut m, &mut s, precision);
                let mut lse = vec![0f32; rows];
                for j in 0..rows {
                    let row = a[j * ld..j * ld + n].iter().chain(&b[j * ld..j * ld + n]);
                    let want =
                        cross_entropy(&row.copied().collect::<Vec<_>>(), 0) + a[j * ld] as f64;
                    let got = m[j] as f64 + s[j].ln();
                    assert!((got - want).abs() < 1e-5, "row {j}: {got} vs {want}");
                    lse[j] = got as f32;
                }
                let mut p = b.clone();
                softmax_from_lse_rows(&mut p, (rows, n, ld), &lse, 0.25, precision);
                for j in 0..rows {
                    for i in [0, n / 2, n - 1] {
                        let want = 0.25 * ((b[j * ld + i] - lse[j]) as f64).exp();
                        let got = p[j * ld + i] as f64;
                        assert!((got - want).abs() <= 1e-6 * want + 1e-30, "{got} vs {want}");
                    }
                    let pad = j * ld + n..(j + 1) * ld;
                    assert_eq!(p[pad.clone()], b[pad], "padding written");
                }
            }
        }
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
