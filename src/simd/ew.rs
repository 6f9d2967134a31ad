#![allow(clippy::needless_range_loop)]
//! Element-wise kernels written as plain, branch-free Rust loops. Each is compiled once per
//! level (the per-ISA files wrap these bodies in `#[target_feature]` functions, so the
//! compiler vectorizes them with that level's registers) and reached through [`super::Ew`].
//! Compiled without features they are the scalar twins.
//!
//! Tiles of attention are kept transposed here: `st[j·ld + i]` is key `j`, query `i`, so
//! every per-query quantity (running max, sum, log-sum-exp, Δ) is a vector across `i`.

/// `exp(x)` evaluated in f64 and rounded once to f32: range reduction by ln 2 (split in
/// two parts), a degree-10 Taylor polynomial (relative error < 1e-11 on |r| ≤ ln2/2), so the
/// result is the correctly rounded f32 except in ties closer than 1e-11 — the same values as
/// glibc's `expf` (≤ 0.502 ulp) in practice. The exact path relies on this: training over
/// several AdamW steps amplifies one-ulp differences in attention probabilities. 0 below
/// −104 (and for −∞), +∞ above 88.73, NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f64 = 0.693_147_180_369_123_8;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let xd = (x as f64).clamp(-104.0, 89.0);
    let n = (xd * std::f64::consts::LOG2_E + 6_755_399_441_055_744.0) - 6_755_399_441_055_744.0;
    let r = (xd - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let scale = f64::from_bits(((n as i64 + 1023) as u64) << 52);
    let v = (p * scale) as f32;
    if x.is_nan() {
        x
    } else {
        v
    }
}

/// `x ← exp(x)`.
#[inline(always)]
pub fn exp_slice(x: &mut [f32]) {
    for v in x {
        *v = exp(*v);
    }
}

/// One key tile of the online softmax, transposed: `st` holds `rows` keys × `n` queries
/// (rows `ld` apart), scores already scaled and masked (−∞). Updates the running max `m`
/// and sum `l` of each query, writes `corr[i] = exp(m_old − m_new)` (the factor the
/// query's output accumulator must be scaled by) and replaces the scores by
/// `exp(s − m_new)`.
#[inline(always)]
pub fn softmax_tile(
    st: &mut [f32],
    rows: usize,
    n: usize,
    ld: usize,
    m: &mut [f32],
    l: &mut [f32],
    corr: &mut [f32],
) {
    let (m, l, corr) = (&mut m[..n], &mut l[..n], &mut corr[..n]);
    let mut mx = [f32::NEG_INFINITY; 64];
    let mut mu = [0f32; 64];
    let mut sum = [0f32; 64];
    for c0 in (0..n).step_by(64) {
        let w = 64.min(n - c0);
        mx[..w].copy_from_slice(&m[c0..c0 + w]);
        for j in 0..rows {
            let row = &st[j * ld + c0..j * ld + c0 + w];
            for (a, &s) in mx[..w].iter_mut().zip(row) {
                *a = a.max(s);
            }
        }
        for i in 0..w {
            // A query whose keys so far are all masked keeps max −∞; shift by 0 then.
            mu[i] = if mx[i] == f32::NEG_INFINITY {
                0.0
            } else {
                mx[i]
            };
            corr[c0 + i] = exp(m[c0 + i] - mu[i]);
            sum[i] = 0.0;
        }
        for j in 0..rows {
            let row = &mut st[j * ld + c0..j * ld + c0 + w];
            for ((s, &a), acc) in row.iter_mut().zip(&mu[..w]).zip(sum[..w].iter_mut()) {
                *s = exp(*s - a);
                *acc += *s;
            }
        }
        for i in 0..w {
            l[c0 + i] = l[c0 + i] * corr[c0 + i] + sum[i];
            m[c0 + i] = mx[i];
        }
    }
}

/// Probabilities of a transposed tile from the log-sum-exp of each query:
/// `st ← exp(st − lse)` (masked scores −∞ give 0).
#[inline(always)]
pub fn probs_tile(st: &mut [f32], rows: usize, n: usize, ld: usize, lse: &[f32]) {
    let lse = &lse[..n];
    for j in 0..rows {
        let row = &mut st[j * ld..j * ld + n];
        for (s, &z) in row.iter_mut().zip(lse) {
            *s = exp(*s - z);
        }
    }
}

/// `ds ← p ⊙ (ds − Δ)` over a transposed tile (`ds` enters holding dP).
#[inline(always)]
pub fn dsoftmax_tile(ds: &mut [f32], p: &[f32], rows: usize, n: usize, ld: usize, delta: &[f32]) {
    let delta = &delta[..n];
    for j in 0..rows {
        let (d, pr) = (&mut ds[j * ld..j * ld + n], &p[j * ld..j * ld + n]);
        for ((x, &pp), &dl) in d.iter_mut().zip(pr).zip(delta) {
            *x = pp * (*x - dl);
        }
    }
}

/// `y ← a · y` for each row `i` of a (rows × n, rows `ld` apart) matrix, `a = scale[i]`.
#[inline(always)]
pub fn scale_rows(y: &mut [f32], rows: usize, n: usize, ld: usize, scale: &[f32]) {
    for (i, &a) in scale[..rows].iter().enumerate() {
        for v in &mut y[i * ld..i * ld + n] {
            *v *= a;
        }
    }
}

/// SwiGLU forward: `h = g·σ(g)·u`.
#[inline(always)]
pub fn swiglu(h: &mut [f32], g: &[f32], u: &[f32]) {
    for ((o, &gv), &uv) in h.iter_mut().zip(g).zip(u) {
        let s = 1.0 / (1.0 + exp(-gv));
        *o = gv * s * uv;
    }
}

/// SwiGLU backward: `dg += dh·u·σ(g)·(1 + g·(1 − σ(g)))`, `du += dh·g·σ(g)`.
#[inline(always)]
pub fn swiglu_back(dg: &mut [f32], du: &mut [f32], dh: &[f32], g: &[f32], u: &[f32]) {
    let n = dh
        .len()
        .min(g.len())
        .min(u.len())
        .min(dg.len())
        .min(du.len());
    let (dg, du, dh, g, u) = (&mut dg[..n], &mut du[..n], &dh[..n], &g[..n], &u[..n]);
    for i in 0..n {
        let gv = g[i];
        let s = 1.0 / (1.0 + exp(-gv));
        dg[i] += dh[i] * u[i] * s * (1.0 + gv * (1.0 - s));
        du[i] += dh[i] * gv * s;
    }
}

/// AdamW update of one tensor (torch semantics); `k = [β1, β2, lr/bc1, √bc2, ε, decay]`.
#[inline(always)]
pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: [f32; 6]) {
    let [b1, b2, step, bc2_sqrt, eps, decay] = k;
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        p[i] *= decay;
        m[i] += (g[i] - m[i]) * (1.0 - b1);
        v[i] = v[i] * b2 + (1.0 - b2) * g[i] * g[i];
        let denom = v[i].sqrt() / bc2_sqrt + eps;
        p[i] -= step * m[i] / denom;
    }
}

/// RMSNorm forward of one row: returns 1/rms; `out = x · r · w`.
#[inline(always)]
pub fn rmsnorm_row(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) -> f32 {
    let n = x.len().min(out.len()).min(w.len());
    let mut acc = [0f32; 16];
    let chunks = n / 16;
    for c in 0..chunks {
        for l in 0..16 {
            let v = x[16 * c + l];
            acc[l] += v * v;
        }
    }
    let mut ss = 0f32;
    for a in acc {
        ss += a;
    }
    for &v in &x[16 * chunks..n] {
        ss += v * v;
    }
    let r = 1.0 / (ss / n as f32 + eps).sqrt();
    for ((o, &xi), &wi) in out[..n].iter_mut().zip(&x[..n]).zip(&w[..n]) {
        *o = xi * r * wi;
    }
    r
}

/// RMSNorm backward of one row: `dx += r·w·dy − x·r³/c · Σ dy·w·x`.
#[inline(always)]
pub fn rmsnorm_back_row(dx: &mut [f32], dy: &[f32], x: &[f32], w: &[f32], r: f32) {
    let n = dx.len().min(dy.len()).min(x.len()).min(w.len());
    let mut acc = [0f32; 16];
    let chunks = n / 16;
    for c in 0..chunks {
        for l in 0..16 {
            let i = 16 * c + l;
            acc[l] += dy[i] * w[i] * x[i];
        }
    }
    let mut s = 0f32;
    for a in acc {
        s += a;
    }
    for i in 16 * chunks..n {
        s += dy[i] * w[i] * x[i];
    }
    let k = r * r * r * s / n as f32;
    for i in 0..n {
        dx[i] += r * w[i] * dy[i] - x[i] * k;
    }
}

/// Online log-sum-exp over a panel of columns, row by row: for each of `rows` rows of `x`
/// (`n` values, rows `ld` apart), `m ← max(m, max x)` and `s ← s·e^(m_old − m) + Σ e^(x − m)`
/// (sums in f64).
#[inline(always)]
pub fn lse_rows(x: &[f32], rows: usize, n: usize, ld: usize, m: &mut [f32], s: &mut [f64]) {
    for j in 0..rows {
        let row = &x[j * ld..j * ld + n];
        let mut mx = [f32::NEG_INFINITY; 16];
        let chunks = n / 16;
        for c in 0..chunks {
            for l in 0..16 {
                mx[l] = mx[l].max(row[16 * c + l]);
            }
        }
        let mut mrow = m[j];
        for &v in mx.iter().chain(&row[16 * chunks..]) {
            mrow = mrow.max(v);
        }
        let shift = if mrow == f32::NEG_INFINITY { 0.0 } else { mrow };
        let mut acc = [0f64; 16];
        for c in 0..chunks {
            for l in 0..16 {
                acc[l] += exp(row[16 * c + l] - shift) as f64;
            }
        }
        let mut sum = 0f64;
        for a in acc {
            sum += a;
        }
        for &v in &row[16 * chunks..] {
            sum += exp(v - shift) as f64;
        }
        s[j] = s[j] * exp(m[j] - shift) as f64 + sum;
        m[j] = mrow;
    }
}

/// `x ← scale · exp(x − lse)` row by row (softmax from a known log-sum-exp).
#[inline(always)]
pub fn softmax_rows(x: &mut [f32], rows: usize, n: usize, ld: usize, lse: &[f32], scale: f32) {
    for j in 0..rows {
        let z = lse[j];
        for v in &mut x[j * ld..j * ld + n] {
            *v = exp(*v - z) * scale;
        }
    }
}
