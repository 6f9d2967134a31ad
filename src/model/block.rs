//! One transformer block, forward and backward, generic over the float type:
//!
//! ```text
//! xn1 = rmsnorm(x)                    q, k, v = xn1·W0ᵀ (+ bias) + LoRA;  RoPE on q, k
//! att = softmax(q·kᵀ/√d)·v (causal)   x_mid = x + att·Woᵀ + LoRA
//! xn2 = rmsnorm(x_mid)                g, u = xn2·W0ᵀ + LoRA;  h = silu(g)·u
//! out = x_mid + h·Wdᵀ + LoRA
//! ```
//!
//! [`block_forward`] leaves every intermediate the backward pass needs in a [`BlockState`];
//! [`block_backward`] walks the same steps in reverse (read the two side by side), adding
//! into the adapter gradients and turning d(out) into d(x). W0 never gets a gradient.

use super::config::ModelConfig;
use super::weights::{LayerWeights, MatrixRef, Weights};
use crate::kernels::num::{add_into, Real};
use crate::kernels::{
    attention_backward, attention_forward, lora_backward, lora_forward, matmul_backward_input,
    matmul_forward, rmsnorm_backward, rmsnorm_forward, rope_backward, rope_forward,
    swiglu_backward, swiglu_forward, AttnShape, Precision, QMatrix,
};
use crate::lora::{LayerAdapter, LoraPair, Target};

/// Inverted dropout on the LoRA input path, with masks derived from a key and the element
/// index, so the backward pass regenerates exactly the forward's mask without storing it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub p: f32,
    /// Identifies (step, record, block); the target index is mixed in per use.
    pub key: u64,
}

impl Dropout {
    fn keep(key: u64, i: usize, p: f32) -> bool {
        let mut z = key ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) >= p
    }

    fn target_key(&self, t: Target) -> u64 {
        self.key ^ ((t.index() as u64 + 1) << 56)
    }

    /// `out = mask ⊙ x / (1 − p)` (also the gradient's own form).
    fn apply<F: Real>(&self, t: Target, x: &[F], out: &mut [F]) {
        let key = self.target_key(t);
        let s = F::from_f64(1.0 / (1.0 - self.p as f64));
        for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
            *o = if Dropout::keep(key, i, self.p) {
                v * s
            } else {
                F::ZERO
            };
        }
    }
}

/// What a block computes with besides its input.
pub struct BlockCtx<'a, F> {
    pub cfg: &'a ModelConfig,
    pub weights: &'a Weights,
    pub layer: usize,
    pub lora: Option<&'a LayerAdapter<F>>,
    pub dropout: Option<Dropout>,
    /// RoPE angles of the T positions, (T, rope_dim/2) each.
    pub cos: &'a [F],
    pub sin: &'a [F],
    /// Arithmetic of the products with W0.
    pub precision: Precision,
}

impl<F: Real> BlockCtx<'_, F> {
    fn lw(&self) -> &LayerWeights {
        &self.weights.layers[self.layer]
    }

    /// The base matrix of target `t`, multiplied in this context's precision.
    fn matrix(&self, t: Target) -> QMatrix<'_> {
        self.weights
            .matrix(base(self.lw(), t))
            .with_precision(self.precision)
    }

    fn pair(&self, t: Target) -> Option<&LoraPair<F>> {
        self.lora.and_then(|l| l[t.index()].as_ref())
    }

    fn shape(&self) -> AttnShape {
        AttnShape {
            n_head: self.cfg.n_head,
            n_head_kv: self.cfg.n_head_kv,
            head_dim: self.cfg.head_dim,
        }
    }
}

/// The base matrix of a target.
fn base(lw: &LayerWeights, t: Target) -> &MatrixRef {
    match t {
        Target::Q => &lw.wq,
        Target::K => &lw.wk,
        Target::V => &lw.wv,
        Target::O => &lw.wo,
        Target::Gate => &lw.w_gate,
        Target::Up => &lw.w_up,
        Target::Down => &lw.w_down,
    }
}

/// Intermediates of one block for up to `capacity` tokens.
#[derive(Debug)]
pub struct BlockState<F> {
    capacity: usize,
    pub(crate) xn1: Vec<F>,
    pub(crate) rstd1: Vec<F>,
    /// Queries after bias and RoPE.
    pub(crate) q: Vec<F>,
    pub(crate) att: Vec<F>,
    pub(crate) lse: Vec<F>,
    pub(crate) x_mid: Vec<F>,
    pub(crate) xn2: Vec<F>,
    pub(crate) rstd2: Vec<F>,
    pub(crate) gate: Vec<F>,
    pub(crate) up: Vec<F>,
    pub(crate) h: Vec<F>,
    pub(crate) proj: Vec<F>,
    /// `u = dropout(x)·Aᵀ` per target, (T, r).
    pub(crate) lora_u: [Vec<F>; 7],
    /// Dropped-out LoRA input, (T, widest input).
    pub(crate) dropped: Vec<F>,
}

impl<F: Real> BlockState<F> {
    pub fn new(cfg: &ModelConfig, capacity: usize, max_rank: usize, dropout: bool) -> Self {
        let (c, qd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.n_ff);
        let z = |n: usize| vec![F::ZERO; capacity * n];
        let widest = c.max(qd).max(ff);
        BlockState {
            capacity,
            xn1: z(c),
            rstd1: z(1),
            q: z(qd),
            att: z(qd),
            lse: z(cfg.n_head),
            x_mid: z(c),
            xn2: z(c),
            rstd2: z(1),
            gate: z(ff),
            up: z(ff),
            h: z(ff),
            proj: z(c.max(qd)),
            lora_u: std::array::from_fn(|_| z(max_rank)),
            dropped: if dropout { z(widest) } else { Vec::new() },
        }
    }

    /// Bytes held for `capacity` tokens.
    pub fn bytes_for(cfg: &ModelConfig, capacity: usize, max_rank: usize, dropout: bool) -> usize {
        let (c, qd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.n_ff);
        let widest = c.max(qd).max(ff);
        let per_token = 3 * c
            + 2
            + 2 * qd
            + cfg.n_head
            + 3 * ff
            + c.max(qd)
            + 7 * max_rank
            + if dropout { widest } else { 0 };
        std::mem::size_of::<F>() * capacity * per_token
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// `y ← x·W0ᵀ + s·(dropout(x)·Aᵀ)·Bᵀ` for target `t` (bias not included).
fn linear_forward<F: Real>(
    ctx: &BlockCtx<'_, F>,
    t: Target,
    y: &mut [F],
    x: &[F],
    u: &mut [F],
    dropped: &mut [F],
) {
    let m = ctx.matrix(t);
    matmul_forward(y, x, &m);
    if let Some(p) = ctx.pair(t) {
        let rows = x.len() / m.cols;
        let u = &mut u[..rows * p.r];
        match ctx.dropout {
            Some(d) => {
                let xd = &mut dropped[..x.len()];
                d.apply(t, x, xd);
                lora_forward(y, u, xd, p.view());
            }
            None => lora_forward(y, u, x, p.view()),
        }
    }
}

/// Gradient of [`linear_forward`]: adds `dy·W0` (when `dx` is given) and the LoRA part into
/// `dx`, and the adapter gradients into `grad`.
#[allow(clippy::too_many_arguments)]
fn linear_backward<F: Real>(
    ctx: &BlockCtx<'_, F>,
    t: Target,
    mut dx: Option<&mut [F]>,
    grad: Option<&mut LoraPair<F>>,
    dy: &[F],
    x: &[F],
    u: &[F],
    scratch: &mut LoraScratch<F>,
) {
    let m = ctx.matrix(t);
    if let Some(dx) = dx.as_deref_mut() {
        matmul_backward_input(dx, dy, &m);
    }
    let (Some(p), Some(g)) = (ctx.pair(t), grad) else {
        return;
    };
    let rows = x.len() / m.cols;
    let (u, du) = (&u[..rows * p.r], &mut scratch.du[..rows * p.r]);
    match ctx.dropout {
        Some(d) => {
            let xd = &mut scratch.dropped[..x.len()];
            d.apply(t, x, xd);
            match dx {
                Some(dx) => {
                    let dxl = &mut scratch.lora_dx[..x.len()];
                    dxl.fill(F::ZERO);
                    lora_backward(Some(&mut *dxl), &mut g.a, &mut g.b, du, dy, xd, u, p.view());
                    // The mask is the same linear map on the way back.
                    let masked = &mut scratch.dropped[..x.len()];
                    d.apply(t, dxl, masked);
                    add_into(dx, masked);
                }
                None => lora_backward(None, &mut g.a, &mut g.b, du, dy, xd, u, p.view()),
            }
        }
        None => lora_backward(dx, &mut g.a, &mut g.b, du, dy, x, u, p.view()),
    }
}

fn add_bias<F: Real>(y: &mut [F], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(b.len()) {
            for (v, &bb) in row.iter_mut().zip(b) {
                *v += F::from_f32(bb);
            }
        }
    }
}

/// Runs the block on `x` (T, C) in place, for positions `pos0 .. pos0+T`. Keys and values
/// of those positions are written to rows `pos0 ..` of `kc`/`vc` (a cache, or a training
/// buffer), and attention reads rows `0 .. pos0+T`. With `keep_lse`, the attention
/// log-sum-exp is kept for the backward pass.
pub fn block_forward<F: Real>(
    ctx: &BlockCtx<'_, F>,
    x: &mut [F],
    kc: &mut [F],
    vc: &mut [F],
    pos0: usize,
    st: &mut BlockState<F>,
    keep_lse: bool,
) {
    let cfg = ctx.cfg;
    let lw = ctx.lw();
    let (c, qd, kvd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
    let t = x.len() / c;
    assert!(
        t <= st.capacity,
        "block: {t} tokens exceed the state capacity {}",
        st.capacity
    );
    let BlockState {
        xn1,
        rstd1,
        q,
        att,
        lse,
        x_mid,
        xn2,
        rstd2,
        gate,
        up,
        h,
        proj,
        lora_u,
        dropped,
        ..
    } = st;
    let [u_q, u_k, u_v, u_o, u_g, u_u, u_d] = lora_u;
    let (xn1, q, att, x_mid, xn2) = (
        &mut xn1[..t * c],
        &mut q[..t * qd],
        &mut att[..t * qd],
        &mut x_mid[..t * c],
        &mut xn2[..t * c],
    );
    let (gate, up, h, proj) = (
        &mut gate[..t * ff],
        &mut up[..t * ff],
        &mut h[..t * ff],
        &mut proj[..t * c],
    );

    rmsnorm_forward(xn1, &mut rstd1[..t], x, &lw.attn_norm, cfg.rms_eps);
    linear_forward(ctx, Target::Q, q, xn1, u_q, dropped);
    add_bias(q, lw.bq.as_deref());
    rope_forward(
        q,
        cfg.n_head,
        cfg.head_dim,
        ctx.cos,
        ctx.sin,
        cfg.rope_style,
    );
    let k = &mut kc[pos0 * kvd..(pos0 + t) * kvd];
    linear_forward(ctx, Target::K, k, xn1, u_k, dropped);
    add_bias(k, lw.bk.as_deref());
    rope_forward(
        k,
        cfg.n_head_kv,
        cfg.head_dim,
        ctx.cos,
        ctx.sin,
        cfg.rope_style,
    );
    let v = &mut vc[pos0 * kvd..(pos0 + t) * kvd];
    linear_forward(ctx, Target::V, v, xn1, u_v, dropped);
    add_bias(v, lw.bv.as_deref());
    let n_kv = (pos0 + t) * kvd;
    let lse = if keep_lse {
        Some(&mut lse[..t * cfg.n_head])
    } else {
        None
    };
    attention_forward(
        att,
        lse,
        q,
        &kc[..n_kv],
        &vc[..n_kv],
        pos0,
        ctx.shape(),
        None,
    );
    linear_forward(ctx, Target::O, proj, att, u_o, dropped);
    add_into(x, proj);
    x_mid.copy_from_slice(x);

    rmsnorm_forward(xn2, &mut rstd2[..t], x, &lw.ffn_norm, cfg.rms_eps);
    linear_forward(ctx, Target::Gate, gate, xn2, u_g, dropped);
    linear_forward(ctx, Target::Up, up, xn2, u_u, dropped);
    swiglu_forward(h, gate, up);
    linear_forward(ctx, Target::Down, proj, h, u_d, dropped);
    add_into(x, proj);
}

/// Scratch of one target's LoRA backward, (T, r) and (T, widest input).
#[derive(Debug)]
pub struct LoraScratch<F> {
    du: Vec<F>,
    dropped: Vec<F>,
    lora_dx: Vec<F>,
}

/// Gradient buffers one block's backward pass works in, for up to `capacity` tokens.
#[derive(Debug)]
pub struct BackwardScratch<F> {
    dxn: Vec<F>,
    datt: Vec<F>,
    dq: Vec<F>,
    dk: Vec<F>,
    dv: Vec<F>,
    delta: Vec<F>,
    dh: Vec<F>,
    dgate: Vec<F>,
    dup: Vec<F>,
    lora: LoraScratch<F>,
}

impl<F: Real> BackwardScratch<F> {
    pub fn new(cfg: &ModelConfig, capacity: usize, max_rank: usize, dropout: bool) -> Self {
        let (c, qd, kvd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        let z = |n: usize| vec![F::ZERO; capacity * n];
        let widest = c.max(qd).max(ff);
        BackwardScratch {
            dxn: z(c),
            datt: z(qd),
            dq: z(qd),
            dk: z(kvd),
            dv: z(kvd),
            delta: z(cfg.n_head),
            dh: z(ff),
            dgate: z(ff),
            dup: z(ff),
            lora: LoraScratch {
                du: z(max_rank),
                dropped: if dropout { z(widest) } else { Vec::new() },
                lora_dx: if dropout { z(widest) } else { Vec::new() },
            },
        }
    }

    /// Bytes held for `capacity` tokens.
    pub fn bytes_for(cfg: &ModelConfig, capacity: usize, max_rank: usize, dropout: bool) -> usize {
        let (c, qd, kvd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        let widest = c.max(qd).max(ff);
        let per_token = c
            + 2 * qd
            + 2 * kvd
            + cfg.n_head
            + 3 * ff
            + max_rank
            + if dropout { 2 * widest } else { 0 };
        std::mem::size_of::<F>() * capacity * per_token
    }
}

/// Backward through the block whose forward (from input `x_in`, at positions `0 .. T`)
/// left `st` and the keys/values `k`, `v` (T, kv_dim). On entry `dx` holds d(out); on
/// return d(x_in) — unless `need_dx` is false (the lowest adapted block), when the input
/// gradient is skipped and `dx` is left partial. Adapter gradients are added into `grads`.
#[allow(clippy::too_many_arguments)]
pub fn block_backward<F: Real>(
    ctx: &BlockCtx<'_, F>,
    grads: Option<&mut LayerAdapter<F>>,
    dx: &mut [F],
    x_in: &[F],
    k: &[F],
    v: &[F],
    st: &BlockState<F>,
    sc: &mut BackwardScratch<F>,
    need_dx: bool,
) {
    let cfg = ctx.cfg;
    let lw = ctx.lw();
    let (c, qd, kvd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
    let t = x_in.len() / c;
    let [gq, gk, gv, go, gg, gu, gd] = match grads {
        Some([a, b, c2, d, e, f, h]) => [
            a.as_mut(),
            b.as_mut(),
            c2.as_mut(),
            d.as_mut(),
            e.as_mut(),
            f.as_mut(),
            h.as_mut(),
        ],
        None => Default::default(),
    };
    let u = |tg: Target| &st.lora_u[tg.index()][..];
    let BackwardScratch {
        dxn,
        datt,
        dq,
        dk,
        dv,
        delta,
        dh,
        dgate,
        dup,
        lora,
    } = sc;
    let (dxn, datt, dq, dk, dv) = (
        &mut dxn[..t * c],
        &mut datt[..t * qd],
        &mut dq[..t * qd],
        &mut dk[..t * kvd],
        &mut dv[..t * kvd],
    );
    let (dh, dgate, dup) = (&mut dh[..t * ff], &mut dgate[..t * ff], &mut dup[..t * ff]);

    // out = x_mid + down(h): d(x_mid) starts as dx; d(h) from the down projection.
    dh.fill(F::ZERO);
    linear_backward(
        ctx,
        Target::Down,
        Some(&mut *dh),
        gd,
        dx,
        &st.h[..t * ff],
        u(Target::Down),
        lora,
    );
    dgate.fill(F::ZERO);
    dup.fill(F::ZERO);
    swiglu_backward(dgate, dup, dh, &st.gate[..t * ff], &st.up[..t * ff]);
    dxn.fill(F::ZERO);
    let xn2 = &st.xn2[..t * c];
    linear_backward(
        ctx,
        Target::Gate,
        Some(&mut *dxn),
        gg,
        dgate,
        xn2,
        u(Target::Gate),
        lora,
    );
    linear_backward(
        ctx,
        Target::Up,
        Some(&mut *dxn),
        gu,
        dup,
        xn2,
        u(Target::Up),
        lora,
    );
    rmsnorm_backward(dx, dxn, &st.x_mid[..t * c], &lw.ffn_norm, &st.rstd2[..t]);

    // x_mid = x_in + o(att): d(att) from the output projection of d(x_mid).
    datt.fill(F::ZERO);
    let att = &st.att[..t * qd];
    linear_backward(
        ctx,
        Target::O,
        Some(&mut *datt),
        go,
        dx,
        att,
        u(Target::O),
        lora,
    );
    dq.fill(F::ZERO);
    dk.fill(F::ZERO);
    dv.fill(F::ZERO);
    let lse = &st.lse[..t * cfg.n_head];
    attention_backward(
        dq,
        dk,
        dv,
        &mut delta[..t * cfg.n_head],
        datt,
        &st.q[..t * qd],
        k,
        v,
        att,
        lse,
        ctx.shape(),
        None,
    );
    rope_backward(
        dq,
        cfg.n_head,
        cfg.head_dim,
        ctx.cos,
        ctx.sin,
        cfg.rope_style,
    );
    rope_backward(
        dk,
        cfg.n_head_kv,
        cfg.head_dim,
        ctx.cos,
        ctx.sin,
        cfg.rope_style,
    );

    // q, k, v = projections of xn1 = rmsnorm(x_in).
    let xn1 = &st.xn1[..t * c];
    dxn.fill(F::ZERO);
    let mut dxn = need_dx.then_some(dxn);
    linear_backward(
        ctx,
        Target::Q,
        dxn.as_deref_mut(),
        gq,
        dq,
        xn1,
        u(Target::Q),
        lora,
    );
    linear_backward(
        ctx,
        Target::K,
        dxn.as_deref_mut(),
        gk,
        dk,
        xn1,
        u(Target::K),
        lora,
    );
    linear_backward(
        ctx,
        Target::V,
        dxn.as_deref_mut(),
        gv,
        dv,
        xn1,
        u(Target::V),
        lora,
    );
    if let Some(dxn) = dxn {
        rmsnorm_backward(dx, dxn, x_in, &lw.attn_norm, &st.rstd1[..t]);
    }
}
