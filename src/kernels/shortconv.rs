//! The causal depthwise convolution of a gated short-convolution block (lfm2; PyTorch's
//! `Conv1d(C, C, kernel_size=L, groups=C, padding=L−1)` cut to the sequence, llama.cpp's
//! `ggml_ssm_conv`): each channel of output row `i` is the dot product of that channel's
//! `L` taps with input rows `i − L + 1 ..= i`, the last tap on row `i`; rows before the
//! first one a query may see (0, or its document's start in a packed sequence) count as
//! zeros. The kernel is frozen: only the input gets a gradient.
//!
//! Plain loops over the channels (they vectorize as they are), for any [`Real`].

use super::num::Real;

/// `out (T, C) ← conv(x)` for output rows `0 .. T`, which are input rows `pos0 .. pos0+T`
/// of `x` (≥ pos0 + T rows of C: earlier rows are the history, e.g. a generation's conv
/// state). `kernel` is (C, taps). `starts[i]`, when given, is the first input row output
/// row `i` may read (document masking); rows before it, and before 0, are zeros.
pub fn shortconv_forward<F: Real>(
    out: &mut [F],
    x: &[F],
    kernel: &[f32],
    taps: usize,
    pos0: usize,
    starts: Option<&[usize]>,
) {
    let c = kernel.len() / taps.max(1);
    let t = out.len() / c.max(1);
    assert!(
        kernel.len() == c * taps && out.len() == t * c && x.len() >= (pos0 + t) * c,
        "shortconv: sizes"
    );
    for i in 0..t {
        let row = pos0 + i;
        let first = starts.map_or(0, |s| s[i]);
        let o = &mut out[i * c..(i + 1) * c];
        o.fill(F::ZERO);
        for k in 0..taps {
            // Tap k reads input row `row + 1 + k − taps`.
            let Some(src) = (row + 1 + k).checked_sub(taps) else {
                continue;
            };
            if src < first {
                continue;
            }
            let xr = &x[src * c..(src + 1) * c];
            for ((o, &xv), ch) in o.iter_mut().zip(xr).zip(0..c) {
                *o += F::from_f32(kernel[ch * taps + k]) * xv;
            }
        }
    }
}

/// The gradient of [`shortconv_forward`] (with `pos0 = 0`) with respect to its input:
/// *adds* into `dx` (T, C) the contributions of `dout` (T, C).
pub fn shortconv_backward<F: Real>(
    dx: &mut [F],
    dout: &[F],
    kernel: &[f32],
    taps: usize,
    starts: Option<&[usize]>,
) {
    let c = kernel.len() / taps.max(1);
    let t = dout.len() / c.max(1);
    assert!(
        kernel.len() == c * taps && dout.len() == t * c && dx.len() == t * c,
        "shortconv backward: sizes"
    );
    for i in 0..t {
        let first = starts.map_or(0, |s| s[i]);
        let d = &dout[i * c..(i + 1) * c];
        for k in 0..taps {
            let Some(src) = (i + 1 + k).checked_sub(taps) else {
                continue;
            };
            if src < first {
                continue;
            }
            let dxr = &mut dx[src * c..(src + 1) * c];
            for ((g, &dv), ch) in dxr.iter_mut().zip(d).zip(0..c) {
                *g += F::from_f32(kernel[ch * taps + k]) * dv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{assert_close, numeric, values, weighted};
    use super::*;

    fn kernel(c: usize, taps: usize) -> Vec<f32> {
        values(c * taps, 3).iter().map(|&v| v as f32).collect()
    }

    #[test]
    fn forward_is_pytorch_s_padded_depthwise_conv() {
        // out[i][ch] = Σ_k w[ch][k] · x[i + k − (L − 1)][ch], zeros before row 0.
        let (t, c, taps) = (7, 3, 3);
        let x = values(t * c, 1);
        let w = kernel(c, taps);
        let mut out = vec![0.0; t * c];
        shortconv_forward(&mut out, &x, &w, taps, 0, None);
        for i in 0..t {
            for ch in 0..c {
                let want: f64 = (0..taps)
                    .filter_map(|k| (i + k).checked_sub(taps - 1).map(|s| (k, s)))
                    .map(|(k, s)| w[ch * taps + k] as f64 * x[s * c + ch])
                    .sum();
                assert!((out[i * c + ch] - want).abs() < 1e-12);
            }
        }
        // A history: rows 0..pos0 of x precede the output rows.
        let mut tail = vec![0.0; 3 * c];
        shortconv_forward(&mut tail, &x, &w, taps, 4, None);
        assert_eq!(tail, out[4 * c..]);
    }

    #[test]
    fn document_starts_cut_the_history() {
        let (t, c, taps) = (6, 2, 3);
        let x = values(t * c, 2);
        let w = kernel(c, taps);
        let starts = [0, 0, 0, 3, 3, 3];
        let mut packed = vec![0.0; t * c];
        shortconv_forward(&mut packed, &x, &w, taps, 0, Some(&starts));
        let mut second = vec![0.0; 3 * c];
        shortconv_forward(&mut second, &x[3 * c..], &w, taps, 0, None);
        assert_eq!(packed[3 * c..], second[..]);
    }

    #[test]
    fn backward_matches_central_differences() {
        let (t, c, taps) = (9, 4, 3);
        let w = kernel(c, taps);
        let wt = values(t * c, 5);
        let starts = [0, 0, 0, 0, 4, 4, 4, 4, 8];
        for s in [None, Some(&starts[..])] {
            let loss = |x: &[f64]| {
                let mut out = vec![0.0; t * c];
                shortconv_forward(&mut out, x, &w, taps, 0, s);
                weighted(&out, &wt)
            };
            let x = values(t * c, 6);
            let mut dx = vec![0.0; t * c];
            shortconv_backward(&mut dx, &wt, &w, taps, s);
            assert_close("shortconv", &dx, &numeric(&x, loss));
        }
    }
}
