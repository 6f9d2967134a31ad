//! The low-rank update of a LoRA target: `y += s · (x · Aᵀ) · Bᵀ`, and its gradients.
//!
//! `A` is (r, in), `B` is (out, r), `s` the scale (α/r, or α/√r for rsLoRA). The forward
//! keeps `u = x · Aᵀ` (T, r), which the backward needs for `dB`.
//!
//! In f32 every product runs on the dispatched micro-gemm, split over the current rayon pool
//! by rows of its output (tokens, or rows of `dB`) or columns (`dA`); each output element is
//! reduced inside one kernel call, so results do not depend on the split. Other float types
//! (the f64 gradient checks) use the `gemm` crate on the calling thread.

use rayon::prelude::*;

use super::gemm::{gemm, gemm_scaled, MatRef};
use super::num::Real;
use super::scratch::{with_f32, ScratchNeed};
use crate::simd::{self, Kernels, Out, Sgemm, SharedColumns};

/// Rows of output per parallel task.
const ROWS: usize = 32;

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

/// Per-thread scratch of the f32 LoRA products of an `inp → out` pair of rank `r`.
pub fn scratch_need(inp: usize, out: usize, r: usize) -> ScratchNeed {
    let mut n = ScratchNeed::default();
    n.f32[0] = inp * r + r * out;
    n
}

/// `u (T, r) ← x (T, in) · Aᵀ` (only `l.a` and `l.r` are used).
pub fn lora_input<F: Real>(u: &mut [F], x: &[F], l: LoraRef<'_, F>) {
    let inp = l.a.len() / l.r.max(1);
    let t = x.len() / inp.max(1);
    assert!(
        x.len() == t * inp && u.len() == t * l.r,
        "lora input: sizes"
    );
    if let (Some(u), Some(x), Some(a)) = (F::as_f32_mut(u), F::as_f32(x), F::as_f32(l.a)) {
        return input_f32(simd::kernels(), u, x, a, l.r);
    }
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
    if let (Some(y), Some(u), Some(x), Some(a), Some(b)) = (
        F::as_f32_mut(y),
        F::as_f32_mut(u),
        F::as_f32(x),
        F::as_f32(l.a),
        F::as_f32(l.b),
    ) {
        let scale = l.scale.to_f64() as f32;
        return forward_f32(simd::kernels(), y, u, x, a, b, l.r, scale);
    }
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
/// `dB += s · dyᵀ · u`, `du = s · dy · B` (overwriting the scratch `du`, (T, r)),
/// `dA += duᵀ · x`, and `dx += du · A` when `dx` is given.
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
    if let Some(dx) = dx.as_deref() {
        assert_eq!(dx.len(), t * inp, "lora backward: dx size");
    }
    if F::as_f32(&[]).is_some() {
        let dx = dx.and_then(|d| F::as_f32_mut(d));
        let ins = (
            F::as_f32(dy),
            F::as_f32(x),
            F::as_f32(u),
            F::as_f32(l.a),
            F::as_f32(l.b),
        );
        let outs = (F::as_f32_mut(da), F::as_f32_mut(db), F::as_f32_mut(du));
        let ((Some(dy), Some(x), Some(u), Some(a), Some(b)), (Some(da), Some(db), Some(du))) =
            (ins, outs)
        else {
            unreachable!("F is f32");
        };
        let scale = l.scale.to_f64() as f32;
        return backward_f32(
            simd::kernels(),
            dx,
            [da, db, du],
            [dy, x, u, a, b],
            r,
            scale,
        );
    }
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

/// `dst (cols × rows) = srcᵀ` for a row-major (rows × cols) `src`.
fn transpose(dst: &mut [f32], src: &[f32], rows: usize, cols: usize) {
    for (i, row) in src.chunks_exact(cols).take(rows).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            dst[j * rows + i] = v;
        }
    }
}

/// `y (+)= alpha · x_rows · L` split by rows of `y`: rows of `x` are `ldx` apart, `L` is
/// (k × n) row-major.
#[allow(clippy::too_many_arguments)]
fn rows_product(
    k: &Kernels,
    y: &mut [f32],
    n: usize,
    x: &[f32],
    ldx: usize,
    l: &[f32],
    kk: usize,
    alpha: f32,
    accumulate: bool,
) {
    y.par_chunks_mut(ROWS * n)
        .zip(x.par_chunks(ROWS * ldx))
        .for_each(|(yc, xc)| {
            let m = yc.len() / n;
            k.sgemm(
                &Sgemm {
                    m,
                    n,
                    k: kk,
                    r: xc,
                    rs: ldx,
                    cs: 1,
                    l,
                    ldb: n,
                    alpha,
                },
                &mut Out::new(yc, n, 1, accumulate),
            );
        });
}

#[allow(clippy::too_many_arguments)]
fn forward_f32(
    k: &Kernels,
    y: &mut [f32],
    u: &mut [f32],
    x: &[f32],
    a: &[f32],
    b: &[f32],
    r: usize,
    scale: f32,
) {
    let (inp, out) = (a.len() / r.max(1), b.len() / r.max(1));
    if r == 0 || x.is_empty() {
        return;
    }
    with_f32(0, inp * r + r * out, |buf| {
        let (at, bt) = buf.split_at_mut(inp * r);
        transpose(at, a, r, inp);
        transpose(bt, b, out, r);
        // u = x · Aᵀ, then y += s · u · Bᵀ.
        rows_product(k, u, r, x, inp, at, inp, 1.0, false);
        rows_product(k, y, out, u, r, bt, r, scale, true);
    });
}

/// `u = x · Aᵀ` on the dispatched micro-gemm.
fn input_f32(k: &Kernels, u: &mut [f32], x: &[f32], a: &[f32], r: usize) {
    let inp = a.len() / r.max(1);
    if r == 0 || x.is_empty() {
        return;
    }
    with_f32(0, inp * r, |at| {
        transpose(at, a, r, inp);
        rows_product(k, u, r, x, inp, at, inp, 1.0, false);
    });
}

fn backward_f32(
    k: &Kernels,
    dx: Option<&mut [f32]>,
    outs: [&mut [f32]; 3],
    ins: [&[f32]; 5],
    r: usize,
    scale: f32,
) {
    let [da, db, du] = outs;
    let [dy, x, u, a, b] = ins;
    let (inp, out) = (a.len() / r.max(1), b.len() / r.max(1));
    let t = x.len() / inp.max(1);
    if r == 0 || t == 0 {
        return;
    }
    // dB (out × r) += s · dyᵀ · u, by rows of dB, computed as dBᵀ = s · uᵀ · dy: the rank's
    // r rows against dB's rows in the lanes (full vectors; with dB's r columns in the lanes
    // most of each vector was empty), stored lane-major into dB.
    db.par_chunks_mut(ROWS * r)
        .enumerate()
        .for_each(|(ci, dbc)| {
            let o0 = ci * ROWS;
            k.sgemm(
                &Sgemm {
                    m: r,
                    n: dbc.len() / r,
                    k: t,
                    r: u,
                    rs: 1,
                    cs: r,
                    l: &dy[o0..],
                    ldb: out,
                    alpha: scale,
                },
                &mut Out::new(dbc, 1, r, true),
            );
        });
    // du = s · dy · B.
    rows_product(k, du, r, dy, out, b, out, scale, false);
    // dA (r × in) += duᵀ · x, by columns of dA.
    let width = 128;
    SharedColumns::new(da, inp).par_parts(inp, width, |_, mut part| {
        let (c0, c1) = part.columns();
        k.sgemm(
            &Sgemm {
                m: r,
                n: c1 - c0,
                k: t,
                r: du,
                rs: 1,
                cs: r,
                l: &x[c0..],
                ldb: inp,
                alpha: 1.0,
            },
            &mut part.out(0, c0, inp, 1, true),
        );
    });
    // dx += du · A.
    if let Some(dx) = dx {
        rows_product(k, dx, inp, du, r, a, r, 1.0, true);
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

    #[test]
    fn f32_path_matches_the_f64_definition_on_every_level_over_odd_shapes() {
        for level in crate::simd::Level::available() {
            let k = Kernels::for_level(level).unwrap();
            for (t, inp, out, r) in [
                (1usize, 1usize, 1usize, 1usize),
                (33, 31, 70, 8),
                (70, 255, 33, 4),
                (5, 4097, 3, 2),
            ] {
                let (x, a, b) = (values(t * inp, 1), values(r * inp, 2), values(out * r, 3));
                let dy = values(t * out, 4);
                let f = |v: &[f64]| v.iter().map(|&z| z as f32).collect::<Vec<f32>>();
                // f64 reference through the generic path.
                let l64 = LoraRef {
                    a: &a,
                    b: &b,
                    r,
                    scale: 0.7,
                };
                let mut y64 = vec![0.5; t * out];
                let mut u64_ = vec![0.0; t * r];
                lora_forward(&mut y64, &mut u64_, &x, l64);
                let (mut da64, mut db64, mut du64, mut dx64) = (
                    vec![0.1; r * inp],
                    vec![0.2; out * r],
                    vec![0.0; t * r],
                    vec![0.3; t * inp],
                );
                lora_backward(
                    Some(&mut dx64),
                    &mut da64,
                    &mut db64,
                    &mut du64,
                    &dy,
                    &x,
                    &u64_,
                    l64,
                );
                let (x32, a32, b32, dy32) = (f(&x), f(&a), f(&b), f(&dy));
                let mut y = vec![0.5f32; t * out];
                let mut u = vec![0f32; t * r];
                forward_f32(&k, &mut y, &mut u, &x32, &a32, &b32, r, 0.7);
                let (mut da, mut db, mut du, mut dx) = (
                    vec![0.1f32; r * inp],
                    vec![0.2f32; out * r],
                    vec![0f32; t * r],
                    vec![0.3f32; t * inp],
                );
                backward_f32(
                    &k,
                    Some(&mut dx),
                    [&mut da, &mut db, &mut du],
                    [&dy32, &x32, &u, &a32, &b32],
                    r,
                    0.7,
                );
                let tol = 2e-6 * (inp.max(out).max(t) as f64).sqrt() * 10.0;
                for (name, got, want) in [
                    ("y", &y, &y64),
                    ("u", &u, &u64_),
                    ("dA", &da, &da64),
                    ("dB", &db, &db64),
                    ("du", &du, &du64),
                    ("dx", &dx, &dx64),
                ] {
                    for (i, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
                        assert!(
                            (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
                            "{name} {level:?} t{t} in{inp} out{out} r{r} [{i}]: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
