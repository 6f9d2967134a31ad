#![allow(clippy::needless_range_loop)]
#![allow(clippy::too_many_arguments)]
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
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 · 2^52: rounds to an integer in the low bits
    let xd = (x as f64).clamp(-104.0, 89.0);
    let nm = xd * std::f64::consts::LOG2_E + MAGIC;
    let n = nm - MAGIC;
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
    // n's integer value sits in the low bits of `nm` (no float → int conversion, which
    // would not vectorize).
    let ni = nm.to_bits().wrapping_sub(MAGIC.to_bits());
    let scale = f64::from_bits(ni.wrapping_add(1023) << 52);
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

/// `exp(x)` in f32 for `--precision fast`: range reduction by ln 2 (split in two parts, the
/// first exact in f32), a degree-6 polynomial on |r| ≤ ln2/2 (Cephes' `expf` coefficients):
/// relative error 8·10⁻⁸ at most over [−87, 88] (about one ulp; the exact path's [`exp`] is
/// correctly rounded in practice). 0 below −87 (where the result nears f32's smallest
/// normal), +∞ above 88, NaN stays NaN. Half the width of [`exp`]'s f64 arithmetic and a
/// shorter polynomial, so about 3× fewer vector operations per value.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4; // 355/512: n·LN2_HI is exact for |n| < 2^15
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: rounds to an integer in the low bits
    let xc = if x < -87.0 { -87.0 } else { x };
    let xc = if xc > 88.0 { 88.0 } else { xc };
    let nm = xc * std::f32::consts::LOG2_E + MAGIC;
    let n = nm - MAGIC;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_2e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * (r * r) + r + 1.0;
    // n ∈ [−126, 127] sits in the low bits of `nm`.
    let ni = nm.to_bits().wrapping_sub(MAGIC.to_bits());
    let scale = f32::from_bits(ni.wrapping_add(127) << 23);
    let v = y * scale;
    let v = if x > 88.0 { f32::INFINITY } else { v };
    let v = if x < -87.0 { 0.0 } else { v };
    if x.is_nan() {
        x
    } else {
        v
    }
}

/// [`exp_fast`] when `fast`, else [`exp`]: the exponential an element-wise kernel uses, one
/// compiled loop per choice.
macro_rules! with_exp {
    ($fast:expr, $body:ident($($arg:expr),*)) => {
        if $fast {
            $body($($arg,)* exp_fast)
        } else {
            $body($($arg,)* exp)
        }
    };
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
    fast: bool,
) {
    with_exp!(fast, softmax_tile_with(st, rows, n, ld, m, l, corr))
}

#[inline(always)]
fn softmax_tile_with(
    st: &mut [f32],
    rows: usize,
    n: usize,
    ld: usize,
    m: &mut [f32],
    l: &mut [f32],
    corr: &mut [f32],
    e: impl Fn(f32) -> f32,
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
            corr[c0 + i] = e(m[c0 + i] - mu[i]);
            sum[i] = 0.0;
        }
        for j in 0..rows {
            let row = &mut st[j * ld + c0..j * ld + c0 + w];
            for ((s, &a), acc) in row.iter_mut().zip(&mu[..w]).zip(sum[..w].iter_mut()) {
                *s = e(*s - a);
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
pub fn probs_tile(st: &mut [f32], rows: usize, n: usize, ld: usize, lse: &[f32], fast: bool) {
    with_exp!(fast, probs_tile_with(st, rows, n, ld, lse))
}

#[inline(always)]
fn probs_tile_with(
    st: &mut [f32],
    rows: usize,
    n: usize,
    ld: usize,
    lse: &[f32],
    e: impl Fn(f32) -> f32,
) {
    let lse = &lse[..n];
    for j in 0..rows {
        let row = &mut st[j * ld..j * ld + n];
        for (s, &z) in row.iter_mut().zip(lse) {
            *s = e(*s - z);
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
pub fn swiglu(h: &mut [f32], g: &[f32], u: &[f32], fast: bool) {
    with_exp!(fast, swiglu_with(h, g, u))
}

#[inline(always)]
fn swiglu_with(h: &mut [f32], g: &[f32], u: &[f32], e: impl Fn(f32) -> f32) {
    for ((o, &gv), &uv) in h.iter_mut().zip(g).zip(u) {
        let s = 1.0 / (1.0 + e(-gv));
        *o = gv * s * uv;
    }
}

/// SwiGLU backward: `dg = dh·u·σ(g)·(1 + g·(1 − σ(g)))`, `du = dh·g·σ(g)` (overwritten, so
/// the caller need not clear them first).
#[inline(always)]
pub fn swiglu_back(dg: &mut [f32], du: &mut [f32], dh: &[f32], g: &[f32], u: &[f32], fast: bool) {
    with_exp!(fast, swiglu_back_with(dg, du, dh, g, u))
}

#[inline(always)]
fn swiglu_back_with(
    dg: &mut [f32],
    du: &mut [f32],
    dh: &[f32],
    g: &[f32],
    u: &[f32],
    e: impl Fn(f32) -> f32,
) {
    let (dg, du, dh, g, u) = common_len(dg, du, dh, g, u);
    let n = dh.len();
    for i in 0..n {
        let gv = g[i];
        let s = 1.0 / (1.0 + e(-gv));
        dg[i] = dh[i] * u[i] * s * (1.0 + gv * (1.0 - s));
        du[i] = dh[i] * gv * s;
    }
}

/// √(2/π), the tanh GELU's inner factor.
const GELU_K: f32 = 0.797_884_6;
/// The tanh GELU's cubic coefficient.
const GELU_C: f32 = 0.044_715;

/// `tanh(z) = 1 − 2 / (e^(2z) + 1)` through the level's exponential: ±1 at the ends (the
/// exponential saturates to 0 or +∞), branch-free.
#[inline(always)]
fn tanh_with(z: f32, e: &impl Fn(f32) -> f32) -> f32 {
    1.0 - 2.0 / (e(2.0 * z) + 1.0)
}

/// GeGLU forward with the tanh GELU (`gelu_pytorch_tanh`):
/// `h = ½·g·(1 + tanh(√(2/π)·(g + 0.044715·g³)))·u`.
#[inline(always)]
pub fn geglu(h: &mut [f32], g: &[f32], u: &[f32], fast: bool) {
    with_exp!(fast, geglu_with(h, g, u))
}

#[inline(always)]
fn geglu_with(h: &mut [f32], g: &[f32], u: &[f32], e: impl Fn(f32) -> f32) {
    for ((o, &gv), &uv) in h.iter_mut().zip(g).zip(u) {
        let t = tanh_with(GELU_K * (gv + GELU_C * gv * gv * gv), &e);
        *o = 0.5 * gv * (1.0 + t) * uv;
    }
}

/// GeGLU backward: `dg = dh·u·gelu'(g)`, `du = dh·gelu(g)` (overwritten), with
/// `gelu'(g) = ½(1 + t) + ½·g·(1 − t²)·√(2/π)·(1 + 3·0.044715·g²)`.
#[inline(always)]
pub fn geglu_back(dg: &mut [f32], du: &mut [f32], dh: &[f32], g: &[f32], u: &[f32], fast: bool) {
    with_exp!(fast, geglu_back_with(dg, du, dh, g, u))
}

#[inline(always)]
fn geglu_back_with(
    dg: &mut [f32],
    du: &mut [f32],
    dh: &[f32],
    g: &[f32],
    u: &[f32],
    e: impl Fn(f32) -> f32,
) {
    let (dg, du, dh, g, u) = common_len(dg, du, dh, g, u);
    let n = dh.len();
    for i in 0..n {
        let gv = g[i];
        let g2 = gv * gv;
        let t = tanh_with(GELU_K * (gv + GELU_C * g2 * gv), &e);
        let gelu = 0.5 * gv * (1.0 + t);
        let d = 0.5 * (1.0 + t) + 0.5 * gv * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * g2);
        dg[i] = dh[i] * u[i] * d;
        du[i] = dh[i] * gelu;
    }
}

/// A gated activation's backward slices: (dg, du, dh, g, u).
type GluBack<'a> = (
    &'a mut [f32],
    &'a mut [f32],
    &'a [f32],
    &'a [f32],
    &'a [f32],
);

/// The five slices of a gated activation's backward cut to their common length (so the
/// loops index without bounds checks).
#[inline(always)]
fn common_len<'a>(
    dg: &'a mut [f32],
    du: &'a mut [f32],
    dh: &'a [f32],
    g: &'a [f32],
    u: &'a [f32],
) -> GluBack<'a> {
    let n = dh
        .len()
        .min(g.len())
        .min(u.len())
        .min(dg.len())
        .min(du.len());
    (&mut dg[..n], &mut du[..n], &dh[..n], &g[..n], &u[..n])
}

/// AdamW update of one tensor (torch semantics); `k = [β1, β2, lr/bc1, √bc2, ε, decay]`.
#[inline(always)]
pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: [f32; 6]) {
    let [b1, b2, step, bc2_sqrt, eps, decay] = k;
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
    // Moments below 1e-30 are flushed to zero: left alone they decay into subnormals, whose
    // arithmetic costs ~100× (measured: 13% of a training step), and at that size they move
    // neither √v next to ε nor p.
    const TINY: f32 = 1e-30;
    for i in 0..n {
        p[i] *= decay;
        let mi = m[i] + (g[i] - m[i]) * (1.0 - b1);
        m[i] = if mi.abs() < TINY { 0.0 } else { mi };
        let gg = if g[i].abs() < 1e-15 { 0.0 } else { g[i] * g[i] };
        let vi = v[i] * b2 + (1.0 - b2) * gg;
        v[i] = if vi < TINY { 0.0 } else { vi };
        let denom = v[i].sqrt() / bc2_sqrt + eps;
        p[i] -= step * m[i] / denom;
    }
}

/// RMSNorm forward of one row: returns 1/rms; `out = x · r · w`.
#[inline(always)]
pub fn rmsnorm_row(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) -> f32 {
    let n = x.len().min(out.len()).min(w.len());
    let (out, x, w) = (&mut out[..n], &x[..n], &w[..n]);
    let mut acc = [0f32; 16];
    let xc = x.chunks_exact(16);
    let tail = xc.remainder();
    for c in xc {
        for l in 0..16 {
            acc[l] += c[l] * c[l];
        }
    }
    let mut ss = 0f32;
    for a in acc {
        ss += a;
    }
    for &v in tail {
        ss += v * v;
    }
    let r = 1.0 / (ss / n as f32 + eps).sqrt();
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = xi * r * wi;
    }
    r
}

/// RMSNorm backward of one row: `dx += r·w·dy − x·r³/c · Σ dy·w·x`.
#[inline(always)]
pub fn rmsnorm_back_row(dx: &mut [f32], dy: &[f32], x: &[f32], w: &[f32], r: f32) {
    let n = dx.len().min(dy.len()).min(x.len()).min(w.len());
    let (dx, dy, x, w) = (&mut dx[..n], &dy[..n], &x[..n], &w[..n]);
    let mut acc = [0f32; 16];
    let chunks = n / 16;
    for ((a, b), c) in dy
        .chunks_exact(16)
        .zip(w.chunks_exact(16))
        .zip(x.chunks_exact(16))
    {
        for l in 0..16 {
            acc[l] += a[l] * b[l] * c[l];
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
    for (((d, &g), &xi), &wi) in dx.iter_mut().zip(dy).zip(x).zip(w) {
        *d += r * wi * g - xi * k;
    }
}

/// Online softmax over a panel of columns, row by row: for each of `rows` rows of `x`
/// (`n` values, rows `ld` apart), `m ← max(m, max x)`, `corr ← e^(m_old − m)` (the factor
/// that row's accumulators must be scaled by), `x ← e^(x − m)` and `s ← s·corr + Σ x`
/// (sums in f64: a row can be 10⁵ wide).
#[inline(always)]
pub fn lse_exp_rows(
    x: &mut [f32],
    rows: usize,
    n: usize,
    ld: usize,
    m: &mut [f32],
    s: &mut [f64],
    corr: &mut [f32],
    fast: bool,
) {
    with_exp!(fast, lse_exp_rows_with(x, rows, n, ld, m, s, corr))
}

#[inline(always)]
fn lse_exp_rows_with(
    x: &mut [f32],
    rows: usize,
    n: usize,
    ld: usize,
    m: &mut [f32],
    s: &mut [f64],
    corr: &mut [f32],
    e: impl Fn(f32) -> f32,
) {
    for j in 0..rows {
        let row = &mut x[j * ld..j * ld + n];
        let mut mx = [f32::NEG_INFINITY; 16];
        let chunks = n / 16;
        // Compare-and-select, not `f32::max`: its NaN rule keeps the loop scalar. A NaN
        // logit is never selected here but still reaches the sum below, so it shows.
        for c in 0..chunks {
            for l in 0..16 {
                let v = row[16 * c + l];
                mx[l] = if v > mx[l] { v } else { mx[l] };
            }
        }
        let mut mrow = m[j];
        for &v in mx.iter().chain(&row[16 * chunks..]) {
            mrow = if v > mrow { v } else { mrow };
        }
        let shift = if mrow == f32::NEG_INFINITY { 0.0 } else { mrow };
        // The exponentials of 16 values at once into f32 lanes (stored back), then widened
        // into the f64 sums: written as two loops so that both are vectorized.
        let mut acc = [0f64; 16];
        for c in 0..chunks {
            let v: &mut [f32; 16] = match (&mut row[16 * c..16 * c + 16]).try_into() {
                Ok(a) => a,
                Err(_) => unreachable!(),
            };
            for x in v.iter_mut() {
                *x = e(*x - shift);
            }
            for l in 0..16 {
                acc[l] += v[l] as f64;
            }
        }
        let mut sum = 0f64;
        for a in acc {
            sum += a;
        }
        for v in &mut row[16 * chunks..] {
            *v = e(*v - shift);
            sum += *v as f64;
        }
        corr[j] = e(m[j] - shift);
        s[j] = s[j] * corr[j] as f64 + sum;
        m[j] = mrow;
    }
}

/// Quantizes 32 values to i8 with scale d = max|x|/127, q = round(x/d) (half to even, as
/// `cvtps2dq`); returns d and Σ q.
#[inline(always)]
pub fn quantize_block(x: &[f32], q: &mut [i8; 32]) -> (f32, i32) {
    let x: &[f32; 32] = match x[..32].try_into() {
        Ok(a) => a,
        Err(_) => unreachable!(),
    };
    let (d, id) = block_scale(x);
    let mut s = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        let r = crate::quant::reference::nearest_int(v * id).clamp(-127, 127);
        *o = r as i8;
        s += r;
    }
    (d, s)
}

/// The scale max|x|/127 of a block and its inverse (0 for an all-zero block).
#[inline(always)]
fn block_scale(x: &[f32; 32]) -> (f32, f32) {
    // Running maxima folded in halves, by compare-and-select: `f32::max`'s NaN rule keeps
    // these loops scalar.
    let sel = |a: f32, b: f32| if b > a { b } else { a };
    let mut m16 = [0f32; 16];
    for l in 0..16 {
        m16[l] = sel(x[l].abs(), x[l + 16].abs());
    }
    let mut m8 = [0f32; 8];
    for l in 0..8 {
        m8[l] = sel(m16[l], m16[l + 8]);
    }
    let mut m4 = [0f32; 4];
    for l in 0..4 {
        m4[l] = sel(m8[l], m8[l + 4]);
    }
    let amax = sel(sel(m4[0], m4[2]), sel(m4[1], m4[3]));
    let d = amax / 127.0;
    (d, if d > 0.0 { 1.0 / d } else { 0.0 })
}

/// The body of [`super::Kernels::pack_lanes`] (sizes checked there).
#[inline(always)]
pub fn pack_lanes(
    lay: super::Int8Layout,
    x: &[f32],
    rows: usize,
    ldx: usize,
    offset: i32,
    vals: &mut [u8],
    d: &mut [f32],
    sum: &mut [f32],
    corr: &mut [i32],
) {
    let (nt, g) = (lay.nt, lay.group);
    let nb = d.len() / nt;
    let mut q = [0i8; 32];
    for b in 0..nb {
        let vb = &mut vals[b * 32 * nt..(b + 1) * 32 * nt];
        for j in 0..nt {
            let (scale, s) = if j < rows {
                quantize_block(&x[j * ldx + 32 * b..][..32], &mut q)
            } else {
                q = [0; 32];
                (0.0, 0)
            };
            // Groups of `g` bytes of lane j at ((e / g)·nt + j)·g, moved as whole words.
            if g == 4 {
                for grp in 0..8 {
                    let w = [q[4 * grp], q[4 * grp + 1], q[4 * grp + 2], q[4 * grp + 3]];
                    let at = (grp * nt + j) * 4;
                    vb[at..at + 4].copy_from_slice(&w.map(|b| b as u8));
                }
            } else {
                for grp in 0..32 / g {
                    let at = (grp * nt + j) * g;
                    for u in 0..g {
                        vb[at + u] = q[grp * g + u] as u8;
                    }
                }
            }
            d[b * nt + j] = scale;
            sum[b * nt + j] = scale * s as f32;
            corr[b * nt + j] = -offset * s;
        }
    }
}

/// Quantizes one row per 32 values (zero-padded to `v.len()`) as [`quantize_block`]:
/// values `q + offset` (as u8) in `v`, scales in `d`.
#[inline(always)]
pub fn quantize_row(x: &[f32], v: &mut [u8], d: &mut [f32], offset: i32) {
    for (b, (vb, db)) in v.chunks_exact_mut(32).zip(d.iter_mut()).enumerate() {
        let mut buf = [0f32; 32];
        let xb: &[f32; 32] = match x.get(32 * b..32 * b + 32) {
            Some(full) => match full.try_into() {
                Ok(a) => a,
                Err(_) => unreachable!(),
            },
            None => {
                let lo = (32 * b).min(x.len());
                buf[..x.len() - lo].copy_from_slice(&x[lo..]);
                &buf
            }
        };
        let (scale, id) = block_scale(xb);
        // Written straight to `v`: a detour through an i8 array costs a store-forwarding
        // stall per block.
        for (o, &x) in vb.iter_mut().zip(xb) {
            let r = crate::quant::reference::nearest_int(x * id).clamp(-127, 127);
            *o = (r + offset) as u8;
        }
        *db = scale;
    }
}

/// Q8_0 row → int8 row operand: values `q + offset` (i8 clamped to −127 without an offset),
/// scales per block.
#[inline(always)]
pub fn decode_q8_0(src: &[u8], v: &mut [u8], d: &mut [f32], offset: i32) {
    let lo = if offset == 0 { -127 } else { -128 };
    for ((blk, out), dd) in src
        .chunks_exact(34)
        .zip(v.chunks_exact_mut(32))
        .zip(d.iter_mut())
    {
        *dd = crate::quant::reference::f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
        for (o, &q) in out.iter_mut().zip(&blk[2..34]) {
            *o = ((q as i8 as i32).max(lo) + offset) as u8;
        }
    }
}

/// Q4_0 row → int8 row operand: values `nibble − 8 + offset`, scales per block.
#[inline(always)]
pub fn decode_q4_0(src: &[u8], v: &mut [u8], d: &mut [f32], offset: i32) {
    for ((blk, out), dd) in src
        .chunks_exact(18)
        .zip(v.chunks_exact_mut(32))
        .zip(d.iter_mut())
    {
        *dd = crate::quant::reference::f16_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
        let (lo16, hi16) = out.split_at_mut(16);
        for j in 0..16 {
            let q = blk[2 + j] as i32;
            lo16[j] = ((q & 15) - 8 + offset) as u8;
            hi16[j] = ((q >> 4) - 8 + offset) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_within_its_documented_error_and_handles_the_limits() {
        let mut worst = 0f64;
        for i in 0..=1_750_000 {
            let x = -87.0 + i as f32 * 1e-4;
            let want = (x as f64).exp();
            let rel = (exp_fast(x) as f64 - want).abs() / want;
            worst = worst.max(rel);
        }
        assert!(worst < 1.5e-7, "worst relative error {worst:e}");
        assert!(worst > 0.0, "the sweep compared nothing");
        for (x, want) in [
            (f32::NEG_INFINITY, 0.0),
            (-87.01, 0.0),
            (-1e30, 0.0),
            (88.01, f32::INFINITY),
            (f32::INFINITY, f32::INFINITY),
            (0.0, 1.0),
            (-0.0, 1.0),
        ] {
            assert_eq!(exp_fast(x), want, "exp_fast({x})");
        }
        assert!(exp_fast(f32::NAN).is_nan());
    }
}
