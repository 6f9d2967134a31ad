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

/// In place: overwrites `logits` with `scale · (softmax(logits) − onehot(target))`, the
/// gradient of `scale · cross_entropy`, and returns the cross-entropy.
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

/// Online softmax over a panel of logits, row by row (flash-attention style): `rows` rows
/// of `n` values (rows `ld` apart) update each row's running max `m` and sum `s` (of
/// `e^(x − m)`, in f64), are replaced by `e^(x − m)` with the updated max, and `corr[j] =
/// e^(m_old − m_new)` is the factor by which anything accumulated from row `j`'s earlier
/// panels must be scaled. After the last panel `m + ln s` is the row's log-sum-exp. `Fast`
/// takes the f32 exponentials from [`crate::simd::ew::exp_fast`].
pub fn lse_exp_update_rows<F: Real>(
    x: &mut [F],
    (rows, n, ld): (usize, usize, usize),
    m: &mut [F],
    s: &mut [f64],
    corr: &mut [F],
    precision: Precision,
) {
    assert!(
        m.len() >= rows
            && s.len() >= rows
            && corr.len() >= rows
            && (rows == 0 || (rows - 1) * ld + n <= x.len()),
        "lse_exp_update_rows: sizes"
    );
    if rows == 0 {
        return;
    }
    if let (Some(x), Some(m), Some(corr)) =
        (F::as_f32_mut(x), F::as_f32_mut(m), F::as_f32_mut(corr))
    {
        let (lse_exp_rows, fast) = (
            crate::simd::kernels().ew.lse_exp_rows,
            precision == Precision::Fast,
        );
        let per = rows_per_task(rows, n);
        if per >= rows {
            return lse_exp_rows(x, rows, n, ld, m, s, corr, fast);
        }
        // Whole rows of `ld` per task; the last task's rows end at `(rows − 1)·ld + n`.
        let x = &mut x[..(rows - 1) * ld + n];
        use rayon::prelude::*;
        return x
            .par_chunks_mut(per * ld)
            .zip(m[..rows].par_chunks_mut(per))
            .zip(s[..rows].par_chunks_mut(per))
            .zip(corr[..rows].par_chunks_mut(per))
            .for_each(|(((x, m), s), corr)| lse_exp_rows(x, m.len(), n, ld, m, s, corr, fast));
    }
    for j in 0..rows {
        let row = &mut x[j * ld..j * ld + n];
        let mx = row.iter().fold(m[j], |a, &b| a.max(b));
        let shift = if mx == F::NEG_INFINITY {
            0.0
        } else {
            mx.to_f64()
        };
        let mut sum = 0f64;
        for v in row.iter_mut() {
            let e = (v.to_f64() - shift).exp();
            *v = F::from_f64(e);
            sum += e;
        }
        let c = (m[j].to_f64() - shift).exp();
        corr[j] = F::from_f64(c);
        s[j] = s[j] * c + sum;
        m[j] = mx;
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
    fn online_softmax_rows_split_over_tasks_match_the_definition() {
        // Enough rows of a width that the rows go to several parallel tasks, with a padded
        // stride; two panels of each row, the second raising some rows' max.
        for precision in [Precision::Exact, Precision::Fast] {
            for (rows, n, ld) in [(37usize, 1000usize, 1003usize), (5, 70_000, 70_000)] {
                let a: Vec<f32> = values(rows * ld, 41)
                    .iter()
                    .map(|&v| (v * 20.0) as f32)
                    .collect();
                let b: Vec<f32> = values(rows * ld, 42)
                    .iter()
                    .map(|&v| (v * 20.0 + if v > 0.0 { 3.0 } else { 0.0 }) as f32)
                    .collect();
                let (mut m, mut s) = (vec![f32::NEG_INFINITY; rows], vec![0f64; rows]);
                let mut corr = vec![f32::NAN; rows];
                let (mut pa, mut pb) = (a.clone(), b.clone());
                lse_exp_update_rows(&mut pa, (rows, n, ld), &mut m, &mut s, &mut corr, precision);
                let m_a = m.clone();
                lse_exp_update_rows(&mut pb, (rows, n, ld), &mut m, &mut s, &mut corr, precision);
                let tol = |want: f64| 2e-6 * want.abs() + 1e-30;
                for j in 0..rows {
                    let (ra, rb) = (&a[j * ld..j * ld + n], &b[j * ld..j * ld + n]);
                    let row: Vec<f32> = ra.iter().chain(rb).copied().collect();
                    let lse = cross_entropy(&row, 0) + row[0] as f64;
                    let got = m[j] as f64 + s[j].ln();
                    assert!((got - lse).abs() < 1e-5, "row {j}: {got} vs {lse}");
                    let max = row.iter().fold(f32::NEG_INFINITY, |x, &y| x.max(y));
                    assert_eq!(m[j], max);
                    let c = (m_a[j] as f64 - m[j] as f64).exp();
                    assert!(
                        (corr[j] as f64 - c).abs() <= tol(c),
                        "corr {} vs {c}",
                        corr[j]
                    );
                    // Each panel holds e^(x − the max known after it).
                    for i in [0, n / 2, n - 1] {
                        let want_a = ((ra[i] - m_a[j]) as f64).exp();
                        let want_b = ((rb[i] - m[j]) as f64).exp();
                        let (ga, gb) = (pa[j * ld + i] as f64, pb[j * ld + i] as f64);
                        assert!((ga - want_a).abs() <= tol(want_a), "{ga} vs {want_a}");
                        assert!((gb - want_b).abs() <= tol(want_b), "{gb} vs {want_b}");
                    }
                    let pad = j * ld + n..(j + 1) * ld;
                    assert_eq!(pb[pad.clone()], b[pad], "padding written");
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
