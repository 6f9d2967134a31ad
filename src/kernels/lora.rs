//! The low-rank update of a LoRA target: `y += s · (x · Aᵀ) · Bᵀ`, and its gradients.
//!
//! `A` is (r, in), `B` is (out, r), `s` the scale (α/r, or α/√r for rsLoRA). The forward
//! keeps `u = x · Aᵀ` (T, r), which the backward needs for `dB`.

use super::gemm::{gemm, gemm_scaled, MatRef};
use super::num::Real;

/// One target's adapter matrices, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct LoraRef<'a, F> {
    /// (r, in)
    pub a: &'a [F],
    /// (out, r)
    pub b: &'a [F],
    pub r: usize,
    pub scale: F,
}

impl<F> LoraRef<'_, F> {
    fn dims(&self) -> (usize, usize) {
        (self.a.len() / self.r.max(1), self.b.len() / self.r.max(1))
    }
}

/// `u (T, r) ← x (T, in) · Aᵀ` (only `l.a` and `l.r` are used).
pub fn lora_input<F: Real>(u: &mut [F], x: &[F], l: LoraRef<'_, F>) {
    let inp = l.a.len() / l.r.max(1);
    let t = x.len() / inp.max(1);
    assert!(
        x.len() == t * inp && u.len() == t * l.r,
        "lora input: sizes"
    );
    gemm(
        u,
        l.r,
        MatRef::rows(x, inp),
        MatRef::transposed(l.a, inp),
        t,
        l.r,
        inp,
        false,
    );
}

/// `u (T, r) ← x (T, in) · Aᵀ`, then `y (T, out) += s · u · Bᵀ`.
pub fn lora_forward<F: Real>(y: &mut [F], u: &mut [F], x: &[F], l: LoraRef<'_, F>) {
    let (inp, out) = l.dims();
    let t = x.len() / inp.max(1);
    assert!(
        x.len() == t * inp && y.len() == t * out && u.len() == t * l.r,
        "lora forward: sizes"
    );
    lora_input(u, x, l);
    gemm_scaled(
        y,
        out,
        MatRef::rows(u, l.r),
        MatRef::transposed(l.b, l.r),
        t,
        out,
        l.r,
        true,
        l.scale,
    );
}

/// Gradients of [`lora_forward`] given `dy` (T, out), the input `x` and the saved `u`:
/// `dB += s · dyᵀ · u`, `du = s · dy · B` (into the scratch `du`, (T, r)), `dA += duᵀ · x`,
/// and `dx += du · A` when `dx` is given.
#[allow(clippy::too_many_arguments)]
pub fn lora_backward<F: Real>(
    dx: Option<&mut [F]>,
    da: &mut [F],
    db: &mut [F],
    du: &mut [F],
    dy: &[F],
    x: &[F],
    u: &[F],
    l: LoraRef<'_, F>,
) {
    let (inp, out) = l.dims();
    let (t, r) = (x.len() / inp.max(1), l.r);
    assert!(
        dy.len() == t * out
            && u.len() == t * r
            && du.len() == t * r
            && da.len() == r * inp
            && db.len() == out * r,
        "lora backward: sizes"
    );
    gemm_scaled(
        db,
        r,
        MatRef::transposed(dy, out),
        MatRef::rows(u, r),
        out,
        r,
        t,
        true,
        l.scale,
    );
    gemm_scaled(
        du,
        r,
        MatRef::rows(dy, out),
        MatRef::rows(l.b, r),
        t,
        r,
        out,
        false,
        l.scale,
    );
    gemm(
        da,
        inp,
        MatRef::transposed(du, r),
        MatRef::rows(x, inp),
        r,
        inp,
        t,
        true,
    );
    if let Some(dx) = dx {
        assert_eq!(dx.len(), t * inp, "lora backward: dx size");
        gemm(
            dx,
            inp,
            MatRef::rows(du, r),
            MatRef::rows(l.a, inp),
            t,
            inp,
            r,
            true,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{assert_close, numeric, values, weighted};
    use super::*;

    #[test]
    fn forward_matches_the_definition() {
        let (t, inp, out, r) = (3usize, 5usize, 4usize, 2usize);
        let (x, a, b) = (values(t * inp, 1), values(r * inp, 2), values(out * r, 3));
        let mut y = vec![1.0; t * out];
        let mut u = vec![0.0; t * r];
        lora_forward(
            &mut y,
            &mut u,
            &x,
            LoraRef {
                a: &a,
                b: &b,
                r,
                scale: 0.7,
            },
        );
        for i in 0..t {
            for o in 0..out {
                let want: f64 = 1.0
                    + 0.7
                        * (0..r)
                            .map(|k| {
                                b[o * r + k]
                                    * (0..inp)
                                        .map(|c| a[k * inp + c] * x[i * inp + c])
                                        .sum::<f64>()
                            })
                            .sum::<f64>();
                assert!((y[i * out + o] - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn backward_matches_central_differences_for_x_a_and_b() {
        for (t, inp, out, r) in [
            (1usize, 1usize, 1usize, 1usize),
            (5, 7, 3, 2),
            (9, 33, 17, 4),
        ] {
            let n = t * inp + r * inp + out * r;
            let params = values(n, 7 + t as u64);
            let w = values(t * out, 8);
            let split = |p: &[f64]| -> (Vec<f64>, Vec<f64>, Vec<f64>) {
                (
                    p[..t * inp].to_vec(),
                    p[t * inp..t * inp + r * inp].to_vec(),
                    p[t * inp + r * inp..].to_vec(),
                )
            };
            let loss = |p: &[f64]| {
                let (x, a, b) = split(p);
                let mut y = vec![0.0; t * out];
                let mut u = vec![0.0; t * r];
                lora_forward(
                    &mut y,
                    &mut u,
                    &x,
                    LoraRef {
                        a: &a,
                        b: &b,
                        r,
                        scale: 1.3,
                    },
                );
                weighted(&y, &w)
            };
            let (x, a, b) = split(&params);
            let l = LoraRef {
                a: &a,
                b: &b,
                r,
                scale: 1.3,
            };
            let mut y = vec![0.0; t * out];
            let mut u = vec![0.0; t * r];
            lora_forward(&mut y, &mut u, &x, l);
            let mut g = vec![0.0; n];
            let (dx, rest) = g.split_at_mut(t * inp);
            let (da, db) = rest.split_at_mut(r * inp);
            let mut du = vec![0.0; t * r];
            lora_backward(Some(dx), da, db, &mut du, &w, &x, &u, l);
            assert_close(
                &format!("lora t{t} in{inp} out{out} r{r}"),
                &g,
                &numeric(&params, loss),
            );
        }
    }
}
