//! SwiGLU gating: `h = silu(gate) · up`, with `silu(g) = g · sigmoid(g)`.

/// Overwrites `gate` with `silu(gate) · up`, element by element. Shapes: (rows, ff) each.
pub fn swiglu_forward(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: gate and up differ in size");
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// `x · sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_f64_definition_including_large_magnitudes() {
        let xs = [
            -100.0f32, -20.0, -3.5, -1e-3, 0.0, 1e-3, 0.7, 5.0, 30.0, 100.0,
        ];
        let mut g = xs.to_vec();
        let up: Vec<f32> = xs.iter().map(|v| 0.5 - v * 0.01).collect();
        swiglu_forward(&mut g, &up);
        for i in 0..xs.len() {
            let x = xs[i] as f64;
            let want = x / (1.0 + (-x).exp()) * up[i] as f64;
            assert!(
                (g[i] as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{x}: {} vs {want}",
                g[i]
            );
            assert!(g[i].is_finite());
        }
    }
}
