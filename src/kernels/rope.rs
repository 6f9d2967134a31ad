//! Rotary position embeddings.
//!
//! Two pairings exist in GGUF files: llama-arch files pair *adjacent* dimensions
//! (`(x[2i], x[2i+1])`, llama.cpp's "normal" mode) because llama.cpp's converter permuted the
//! Q/K rows to make that equivalent to Hugging Face's half-split rotation; qwen2 files pair
//! `(x[i], x[i + d/2])` ("NEOX" mode) and are not permuted. Only the first `rot_dim`
//! dimensions of each head rotate. The gradient of a rotation is the inverse rotation.

use super::num::Real;

/// How the rotated dimensions of a head are paired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// `(x[2i], x[2i+1])`: llama-arch GGUFs (Q/K rows permuted by the converter).
    Adjacent,
    /// `(x[i], x[i + rot_dim/2])`: qwen2 and other NEOX-style models.
    HalfSplit,
}

/// The per-pair inverse frequencies of a model: `base^(-2i/rot_dim) · freq_scale / factor[i]`.
///
/// `freq_scale` is `1 / factor` of linear RoPE scaling; `factors` are the Llama-3.1-style
/// per-dimension frequency divisors from a `rope_freqs.weight` tensor, when the file has one.
pub fn inverse_frequencies(
    rot_dim: usize,
    base: f32,
    freq_scale: f32,
    factors: Option<&[f32]>,
) -> Vec<f64> {
    (0..rot_dim / 2)
        .map(|i| {
            let f = (base as f64).powf(-2.0 * i as f64 / rot_dim as f64) * freq_scale as f64;
            match factors {
                Some(d) => f / d[i] as f64,
                None => f,
            }
        })
        .collect()
}

/// Fills `cos`/`sin` (each (positions.len(), inv_freq.len())) with the rotation of every pair
/// at every position.
pub fn rope_table<F: Real>(cos: &mut [F], sin: &mut [F], positions: &[usize], inv_freq: &[f64]) {
    let half = inv_freq.len();
    assert!(
        cos.len() == positions.len() * half && sin.len() == cos.len(),
        "rope_table: sizes"
    );
    for (t, &p) in positions.iter().enumerate() {
        for (i, &f) in inv_freq.iter().enumerate() {
            let (s, c) = (p as f64 * f).sin_cos();
            cos[t * half + i] = F::from_f64(c);
            sin[t * half + i] = F::from_f64(s);
        }
    }
}

/// Multiplies a RoPE table by `mscale` (LongRoPE's attention factor: llama.cpp's
/// `attn_factor`, transformers' `attention_scaling`, on both cos and sin).
pub fn scale_rope_table<F: Real>(cos: &mut [F], sin: &mut [F], mscale: f32) {
    if mscale != 1.0 {
        let m = F::from_f32(mscale);
        cos.iter_mut().chain(sin.iter_mut()).for_each(|v| *v *= m);
    }
}

/// Rotates, in place, every head of every row of `x` (rows, n_heads · head_dim) by the
/// angles of `cos`/`sin` (rows, rot_dim/2).
pub fn rope_forward<F: Real>(
    x: &mut [F],
    n_heads: usize,
    head_dim: usize,
    cos: &[F],
    sin: &[F],
    style: RopeStyle,
) {
    rope_apply(x, n_heads, head_dim, cos, sin, style, F::ONE);
}

/// The gradient of [`rope_forward`], in place: rotates `dx` (the output gradient) back by
/// the same angles, turning it into the input gradient.
pub fn rope_backward<F: Real>(
    dx: &mut [F],
    n_heads: usize,
    head_dim: usize,
    cos: &[F],
    sin: &[F],
    style: RopeStyle,
) {
    rope_apply(dx, n_heads, head_dim, cos, sin, style, -F::ONE);
}

fn rope_apply<F: Real>(
    x: &mut [F],
    n_heads: usize,
    head_dim: usize,
    cos: &[F],
    sin: &[F],
    style: RopeStyle,
    sign: F,
) {
    let width = n_heads * head_dim;
    let rows = x.len() / width;
    let half = cos.len() / rows.max(1);
    assert!(
        x.len() == rows * width && cos.len() == rows * half && half * 2 <= head_dim,
        "rope: sizes"
    );
    use rayon::prelude::*;
    x.par_chunks_mut(width)
        .zip(cos.par_chunks(half.max(1)))
        .zip(sin.par_chunks(half.max(1)))
        .for_each(|((row, c), s)| {
            for head in row.chunks_exact_mut(head_dim) {
                rotate(head, c, s, style, sign);
            }
        });
}

/// Rotates one head by the given angles (`sign = -1` rotates backwards, for the gradient).
#[inline]
fn rotate<F: Real>(head: &mut [F], cos: &[F], sin: &[F], style: RopeStyle, sign: F) {
    let half = cos.len();
    for i in 0..half {
        let (a, b) = match style {
            RopeStyle::Adjacent => (2 * i, 2 * i + 1),
            RopeStyle::HalfSplit => (i, i + half),
        };
        let (x0, x1) = (head[a], head[b]);
        let (c, s) = (cos[i], sign * sin[i]);
        head[a] = x0 * c - x1 * s;
        head[b] = x0 * s + x1 * c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rotation as complex multiplication in f64, for either pairing.
    fn reference(x: &[f32], pos: usize, rot_dim: usize, base: f64, style: RopeStyle) -> Vec<f64> {
        let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let half = rot_dim / 2;
        for i in 0..half {
            let th = pos as f64 * base.powf(-((2 * i) as f64) / rot_dim as f64);
            let (a, b) = match style {
                RopeStyle::Adjacent => (2 * i, 2 * i + 1),
                RopeStyle::HalfSplit => (i, i + half),
            };
            let (re, im) = (x[a] as f64, x[b] as f64);
            y[a] = re * th.cos() - im * th.sin();
            y[b] = re * th.sin() + im * th.cos();
        }
        y
    }

    #[test]
    fn both_pairings_match_complex_rotation_and_partial_rotary_leaves_tail() {
        let (n_heads, head_dim) = (3, 10);
        for rot_dim in [10usize, 6] {
            for style in [RopeStyle::Adjacent, RopeStyle::HalfSplit] {
                let positions = [0usize, 1, 7, 300];
                let inv = inverse_frequencies(rot_dim, 10000.0, 1.0, None);
                let mut cos = vec![0.0; positions.len() * rot_dim / 2];
                let mut sin = cos.clone();
                rope_table(&mut cos, &mut sin, &positions, &inv);
                let x: Vec<f32> = (0..positions.len() * n_heads * head_dim)
                    .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
                    .collect();
                let mut y = x.clone();
                rope_forward(&mut y, n_heads, head_dim, &cos, &sin, style);
                for (t, &p) in positions.iter().enumerate() {
                    for h in 0..n_heads {
                        let o = (t * n_heads + h) * head_dim;
                        let want = reference(&x[o..o + head_dim], p, rot_dim, 10000.0, style);
                        for d in 0..head_dim {
                            assert!(
                                (y[o + d] as f64 - want[d]).abs() < 1e-5,
                                "{style:?} rot {rot_dim} pos {p} d {d}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn backward_matches_central_differences() {
        use super::super::gradcheck::{assert_close, numeric, values, weighted};
        let (n_heads, head_dim, rot) = (2usize, 6usize, 4usize);
        let positions = [0usize, 3, 11];
        let inv = inverse_frequencies(rot, 500.0, 1.0, None);
        let mut cos = vec![0f64; positions.len() * rot / 2];
        let mut sin = cos.clone();
        rope_table(&mut cos, &mut sin, &positions, &inv);
        let x = values(positions.len() * n_heads * head_dim, 9);
        let w = values(x.len(), 10);
        for style in [RopeStyle::Adjacent, RopeStyle::HalfSplit] {
            let loss = |x: &[f64]| {
                let mut y = x.to_vec();
                rope_forward(&mut y, n_heads, head_dim, &cos, &sin, style);
                weighted(&y, &w)
            };
            let mut d = w.clone();
            rope_backward(&mut d, n_heads, head_dim, &cos, &sin, style);
            assert_close("rope", &d, &numeric(&x, loss));
        }
    }

    #[test]
    fn scaling_and_factors_divide_the_frequencies() {
        let plain = inverse_frequencies(8, 10000.0, 1.0, None);
        let linear = inverse_frequencies(8, 10000.0, 0.25, None);
        let factors = [1.0f32, 2.0, 4.0, 8.0];
        let with_f = inverse_frequencies(8, 10000.0, 1.0, Some(&factors));
        for i in 0..4 {
            assert!((linear[i] - plain[i] * 0.25).abs() < 1e-15);
            assert!((with_f[i] - plain[i] / factors[i] as f64).abs() < 1e-15);
        }
        assert_eq!(plain[0], 1.0);
        assert!((plain[1] - 0.1).abs() < 1e-12);
    }
}
