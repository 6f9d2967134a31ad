//! Gated MLP activations, `h = act(g) · u`, and their gradients: SwiGLU (`act = silu`,
//! `silu(g) = g · sigmoid(g)`: llama, qwen) and GeGLU with the tanh GELU
//! (`act(g) = ½·g·(1 + tanh(√(2/π)·(g + 0.044715·g³)))`, PyTorch's `gelu(approximate=
//! "tanh")`: gemma). The f32 paths run the dispatched element-wise kernels; any other
//! [`Real`] (the f64 gradient checks) runs the plain formulas below.

use rayon::prelude::*;

use super::matmul::Precision;
use super::num::Real;

/// Elements per parallel task of the f32 paths.
const CHUNK: usize = 16384;

/// The activation of a gated MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Glu {
    /// SwiGLU: `silu(g) · u`.
    Silu,
    /// GeGLU: `gelu_tanh(g) · u`.
    GeluTanh,
}

impl Glu {
    pub fn name(self) -> &'static str {
        match self {
            Glu::Silu => "SwiGLU",
            Glu::GeluTanh => "GeGLU (tanh GELU)",
        }
    }
}

/// `h ← act(gate) · up`, element by element. Shapes: (rows, ff) each. `Fast` takes the
/// exponential from the f32 [`crate::simd::ew::exp_fast`].
pub fn glu_forward<F: Real>(act: Glu, h: &mut [F], gate: &[F], up: &[F], precision: Precision) {
    assert!(
        gate.len() == up.len() && h.len() == up.len(),
        "glu: sizes differ"
    );
    if let (Some(h), Some(gate), Some(up)) = (F::as_f32_mut(h), F::as_f32(gate), F::as_f32(up)) {
        let ew = crate::simd::kernels().ew;
        let f = match act {
            Glu::Silu => ew.swiglu,
            Glu::GeluTanh => ew.geglu,
        };
        h.par_chunks_mut(CHUNK)
            .zip(gate.par_chunks(CHUNK))
            .zip(up.par_chunks(CHUNK))
            .for_each(|((h, g), u)| f(h, g, u, precision == Precision::Fast));
        return;
    }
    for ((o, &g), &u) in h.iter_mut().zip(gate).zip(up) {
        *o = match act {
            Glu::Silu => silu(g),
            Glu::GeluTanh => gelu_tanh(g).0,
        } * u;
    }
}

/// `dgate = dh · up · act'(gate)`, `dup = dh · act(gate)`, *overwriting* both (`precision`
/// as in [`glu_forward`]).
pub fn glu_backward_overwrite<F: Real>(
    act: Glu,
    dgate: &mut [F],
    dup: &mut [F],
    dh: &[F],
    gate: &[F],
    up: &[F],
    precision: Precision,
) {
    let n = dh.len();
    assert!(
        dgate.len() == n && dup.len() == n && gate.len() == n && up.len() == n,
        "glu backward: sizes"
    );
    let f32s = (F::as_f32(dh), F::as_f32(gate), F::as_f32(up));
    if let ((Some(dh), Some(gate), Some(up)), Some(dgate), Some(dup)) =
        (f32s, F::as_f32_mut(dgate), F::as_f32_mut(dup))
    {
        let ew = crate::simd::kernels().ew;
        let f = match act {
            Glu::Silu => ew.swiglu_back,
            Glu::GeluTanh => ew.geglu_back,
        };
        dgate
            .par_chunks_mut(CHUNK)
            .zip(dup.par_chunks_mut(CHUNK))
            .zip(dh.par_chunks(CHUNK))
            .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
            .for_each(|(((dg, du), dh), (g, u))| f(dg, du, dh, g, u, precision == Precision::Fast));
        return;
    }
    for i in 0..n {
        let g = gate[i];
        let (a, da) = match act {
            Glu::Silu => {
                let sig = sigmoid(g);
                (g * sig, sig * (F::ONE + g * (F::ONE - sig)))
            }
            Glu::GeluTanh => gelu_tanh(g),
        };
        dgate[i] = dh[i] * up[i] * da;
        dup[i] = dh[i] * a;
    }
}

#[inline]
fn sigmoid<F: Real>(x: F) -> F {
    F::ONE / (F::ONE + (-x).exp())
}

/// `x · sigmoid(x)`.
#[inline]
pub fn silu<F: Real>(x: F) -> F {
    x * sigmoid(x)
}

/// The tanh GELU of `x` and its derivative.
#[inline]
pub fn gelu_tanh<F: Real>(x: F) -> (F, F) {
    let k = F::from_f64((2.0 / std::f64::consts::PI).sqrt());
    let c = F::from_f64(0.044715);
    let half = F::from_f64(0.5);
    let t = (k * (x + c * x * x * x)).tanh();
    let d = half * (F::ONE + t)
        + half * x * (F::ONE - t * t) * k * (F::ONE + F::from_f64(3.0) * c * x * x);
    (half * x * (F::ONE + t), d)
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{assert_close, numeric, values, weighted};
    use super::*;

    /// The f64 definitions: PyTorch's silu and `gelu(approximate="tanh")`.
    fn definition(act: Glu, x: f64) -> f64 {
        match act {
            Glu::Silu => x / (1.0 + (-x).exp()),
            Glu::GeluTanh => {
                let k = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (k * (x + 0.044715 * x.powi(3))).tanh())
            }
        }
    }

    #[test]
    fn forward_matches_f64_definition_including_large_magnitudes() {
        let xs = [
            -100.0f32, -20.0, -3.5, -1e-3, 0.0, 1e-3, 0.7, 5.0, 30.0, 100.0,
        ];
        let up: Vec<f32> = xs.iter().map(|v| 0.5 - v * 0.01).collect();
        for act in [Glu::Silu, Glu::GeluTanh] {
            for precision in [Precision::Exact, Precision::Fast] {
                let mut h = vec![0f32; xs.len()];
                glu_forward(act, &mut h, &xs, &up, precision);
                for i in 0..xs.len() {
                    let want = definition(act, xs[i] as f64) * up[i] as f64;
                    assert!(
                        (h[i] as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "{act:?} {precision} {}: {} vs {want}",
                        xs[i],
                        h[i]
                    );
                    assert!(h[i].is_finite());
                }
            }
        }
    }

    #[test]
    fn backward_matches_central_differences() {
        let n = 37;
        let x = values(2 * n, 4).iter().map(|v| v * 4.0).collect::<Vec<_>>(); // gate ‖ up
        let w = values(n, 5);
        for act in [Glu::Silu, Glu::GeluTanh] {
            let loss = |x: &[f64]| {
                let mut h = vec![0.0; n];
                glu_forward(act, &mut h, &x[..n], &x[n..], Precision::Exact);
                weighted(&h, &w)
            };
            // Stale values in the outputs: the gradient overwrites them.
            let mut d = vec![7.0; 2 * n];
            let (dg, du) = d.split_at_mut(n);
            glu_backward_overwrite(act, dg, du, &w, &x[..n], &x[n..], Precision::Exact);
            assert_close(act.name(), &d, &numeric(&x, loss));
        }
    }

    #[test]
    fn f32_backward_matches_the_f64_formulas() {
        // The dispatched f32 kernels against the generic path in f64, over a wide range.
        let n = 301;
        let g: Vec<f32> = (0..n).map(|i| (i as f32 - 150.0) * 0.07).collect();
        let u: Vec<f32> = values(n, 9).iter().map(|&v| v as f32).collect();
        let dh: Vec<f32> = values(n, 10).iter().map(|&v| v as f32).collect();
        let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        for act in [Glu::Silu, Glu::GeluTanh] {
            for precision in [Precision::Exact, Precision::Fast] {
                let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
                glu_backward_overwrite(act, &mut dg, &mut du, &dh, &g, &u, precision);
                let (mut dg64, mut du64) = (vec![0f64; n], vec![0f64; n]);
                let (g64, u64v, dh64) = (wide(&g), wide(&u), wide(&dh));
                glu_backward_overwrite(act, &mut dg64, &mut du64, &dh64, &g64, &u64v, precision);
                for i in 0..n {
                    for (a, b) in [(dg[i], dg64[i]), (du[i], du64[i])] {
                        assert!(
                            (a as f64 - b).abs() <= 2e-6 * b.abs().max(1.0),
                            "{act:?} {precision} g {}: {a} vs {b}",
                            g[i]
                        );
                    }
                }
            }
        }
    }
}
