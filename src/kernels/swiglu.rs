//! SwiGLU gating: `h = silu(g) · u`, with `silu(g) = g · sigmoid(g)`, and its gradient.

use rayon::prelude::*;

use super::matmul::Precision;
use super::num::Real;

/// Elements per parallel task of the f32 paths.
const CHUNK: usize = 16384;

/// `h ← silu(gate) · up`, element by element. Shapes: (rows, ff) each. `Fast` takes the
/// sigmoid's exponential from the f32 [`crate::simd::ew::exp_fast`].
pub fn swiglu_forward<F: Real>(h: &mut [F], gate: &[F], up: &[F], precision: Precision) {
    assert!(
        gate.len() == up.len() && h.len() == up.len(),
        "swiglu: sizes differ"
    );
    if let (Some(h), Some(gate), Some(up)) = (F::as_f32_mut(h), F::as_f32(gate), F::as_f32(up)) {
        let f = crate::simd::kernels().ew.swiglu;
        h.par_chunks_mut(CHUNK)
            .zip(gate.par_chunks(CHUNK))
            .zip(up.par_chunks(CHUNK))
            .for_each(|((h, g), u)| f(h, g, u, precision == Precision::Fast));
        return;
    }
    for ((o, &g), &u) in h.iter_mut().zip(gate).zip(up) {
        *o = silu(g) * u;
    }
}

/// `dgate = dh · up · silu'(gate)`, `dup = dh · silu(gate)`, overwriting both (`precision` as
/// in [`swiglu_forward`]).
pub fn swiglu_backward<F: Real>(
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
        "swiglu backward: sizes"
    );
    let f32s = (F::as_f32(dh), F::as_f32(gate), F::as_f32(up));
    if let ((Some(dh), Some(gate), Some(up)), Some(dgate), Some(dup)) =
        (f32s, F::as_f32_mut(dgate), F::as_f32_mut(dup))
    {
        let f = crate::simd::kernels().ew.swiglu_back;
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
        let sig = sigmoid(g);
        dgate[i] = dh[i] * up[i] * sig * (F::ONE + g * (F::ONE - sig));
        dup[i] = dh[i] * g * sig;
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

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{assert_close, numeric, values, weighted};
    use super::*;

    #[test]
    fn forward_matches_f64_definition_including_large_magnitudes() {
        let xs = [
            -100.0f32, -20.0, -3.5, -1e-3, 0.0, 1e-3, 0.7, 5.0, 30.0, 100.0,
        ];
        let up: Vec<f32> = xs.iter().map(|v| 0.5 - v * 0.01).collect();
        for precision in [Precision::Exact, Precision::Fast] {
            let mut h = vec![0f32; xs.len()];
            swiglu_forward(&mut h, &xs, &up, precision);
            for i in 0..xs.len() {
                let x = xs[i] as f64;
                let want = x / (1.0 + (-x).exp()) * up[i] as f64;
                assert!(
                    (h[i] as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{precision} {x}: {} vs {want}",
                    h[i]
                );
                assert!(h[i].is_finite());
            }
        }
    }

    #[test]
    fn backward_matches_central_differences() {
        let n = 37;
        let x = values(2 * n, 4).iter().map(|v| v * 4.0).collect::<Vec<_>>(); // gate ‖ up
        let w = values(n, 5);
        let loss = |x: &[f64]| {
            let mut h = vec![0.0; n];
            swiglu_forward(&mut h, &x[..n], &x[n..], Precision::Exact);
            weighted(&h, &w)
        };
        // Stale values in the outputs: the gradient overwrites them.
        let mut d = vec![7.0; 2 * n];
        let (dg, du) = d.split_at_mut(n);
        swiglu_backward(dg, du, &w, &x[..n], &x[n..], Precision::Exact);
        assert_close("swiglu", &d, &numeric(&x, loss));
    }
}
