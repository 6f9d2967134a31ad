//! The backward pass of one block (see `block.rs` for the forward, step by step), in four
//! phases read bottom-up against the forward: the MLP, the output projection, attention
//! with RoPE, and the q/k/v projections. The MLP and the projections run chunk by chunk:
//! each chunk's norm outputs, MLP activations and LoRA inputs are recomputed from x_mid
//! (MLP) or x_in (q/k/v), so only the attention state and the attention gradients cover
//! all T tokens. When the workspace keeps every block's activations
//! (`WorkspaceShape::kept`), the MLP's projections come from the forward pass instead.
//! Adds into the adapter gradients and turns d(out) into d(x_in).
//!
//! The norms' backward ([`rmsnorm_backward`]) adds into its input gradient: the post-norm
//! and QK-norm gradients start from zeroed chunk buffers; their reciprocal RMS is
//! recomputed from the kept inputs.

use super::block::{linear_forward, lora_input, BlockCtx, BlockState, ChunkScratch};
use super::config::ModelConfig;
use crate::kernels::num::{add_into, Real};
use crate::kernels::{
    attention_backward, glu_backward_overwrite, glu_forward, lora_backward, matmul_backward_input,
    rmsnorm_backward, rmsnorm_forward, rope_backward,
};
use crate::lora::config::N_TARGETS;
use crate::lora::{LayerAdapter, LoraPair, Target};
use crate::memory::sizes::Sizer;

/// Scratch of the LoRA part of a target's backward, per chunk.
#[derive(Debug)]
pub struct LoraScratch<F> {
    du: Vec<F>,
    dropped: Vec<F>,
    lora_dx: Vec<F>,
}

/// Gradient buffers of one block's backward pass: attention gradients over all T tokens,
/// the rest per chunk.
#[derive(Debug)]
pub struct BackwardScratch<F> {
    rows: usize,
    pub(crate) datt: Vec<F>,
    dq: Vec<F>,
    dk: Vec<F>,
    dv: Vec<F>,
    delta: Vec<F>,
    pub(crate) dxn: Vec<F>,
    dh: Vec<F>,
    dgate: Vec<F>,
    dup: Vec<F>,
    /// Gradient of a post-norm's input, (rows, C) (post-norms only).
    dpost: Vec<F>,
    /// Gradients of q and k before QK-norm, (rows, q_dim) and (rows, kv_dim) (QK-norm only).
    dq_pre: Vec<F>,
    dk_pre: Vec<F>,
    /// Short-convolution blocks: the convolution's output and its input's gradient, (T, C),
    /// and the gradient of the input projection's output, (T, 3C).
    pub(crate) conv_out: Vec<F>,
    pub(crate) dbx: Vec<F>,
    pub(crate) dbcx: Vec<F>,
    pub(crate) lora: LoraScratch<F>,
}

impl<F: Real> BackwardScratch<F> {
    /// The buffers for sequences of up to `capacity` tokens processed `rows` at a time,
    /// taken from `s` (their one size list).
    pub(crate) fn build(
        cfg: &ModelConfig,
        capacity: usize,
        rows: usize,
        max_rank: usize,
        dropout: bool,
        s: &mut Sizer,
    ) -> Self {
        let (c, qd, kvd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        let widest = if dropout { c.max(qd).max(ff) } else { 0 };
        let (qk, post) = (cfg.arch.qk_norm, cfg.arch.post_norms);
        let conv = cfg.has_conv();
        let datt_w = if conv { qd.max(c) } else { qd };
        BackwardScratch {
            rows,
            datt: s.zeros(capacity * datt_w),
            dq: s.zeros(capacity * qd),
            dk: s.zeros(capacity * kvd),
            dv: s.zeros(capacity * kvd),
            delta: s.zeros(capacity * cfg.n_head),
            dxn: s.zeros(rows * c),
            dh: s.zeros(rows * ff),
            dgate: s.zeros(rows * ff),
            dup: s.zeros(rows * ff),
            dpost: s.zeros(if post { rows * c } else { 0 }),
            dq_pre: s.zeros(if qk { rows * qd } else { 0 }),
            dk_pre: s.zeros(if qk { rows * kvd } else { 0 }),
            conv_out: s.zeros(if conv { capacity * c } else { 0 }),
            dbx: s.zeros(if conv { capacity * c } else { 0 }),
            dbcx: s.zeros(if conv { capacity * 3 * c } else { 0 }),
            lora: LoraScratch {
                du: s.zeros(rows * max_rank),
                dropped: s.zeros(rows * widest),
                lora_dx: s.zeros(rows * widest),
            },
        }
    }
}

/// The adapter gradients of one block, per adapter target (`None` where not adapted).
pub(crate) type Grads<'a, F> = [Option<&'a mut LoraPair<F>>; N_TARGETS];

/// The gradient pair of projection `t` (its fused pair's, where the recipe fuses it).
pub(crate) fn grad_of<'g, F>(
    g: &'g mut Grads<'_, F>,
    cfg: &ModelConfig,
    t: Target,
) -> Option<&'g mut LoraPair<F>> {
    g[cfg.lora_part(t).0.index()].as_deref_mut()
}

/// What the MLP's backward takes from the forward pass when the block kept it: gate and
/// up (T, n_ff), and the down projection before its post-norm (T, C; empty without one).
pub(crate) struct KeptMlpRef<'a, F> {
    pub gate: &'a [F],
    pub up: &'a [F],
    pub down: &'a [F],
}

/// Gradient of `linear_forward` for target `t` on the chunk starting at token `r0`: adds
/// `dy·W0` (when `dx` is given) and the LoRA part into `dx`, the adapter gradients into
/// `grad`. `u` is the chunk's saved `dropout(x)·Aᵀ`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_backward<F: Real>(
    ctx: &BlockCtx<'_, F>,
    t: Target,
    mut dx: Option<&mut [F]>,
    grad: Option<&mut LoraPair<F>>,
    dy: &[F],
    x: &[F],
    r0: usize,
    u: &[F],
    s: &mut LoraScratch<F>,
) {
    let m = ctx.matrix(t);
    if let Some(dx) = dx.as_deref_mut() {
        matmul_backward_input(dx, dy, &m);
    }
    let (Some(p), Some(g)) = (ctx.pair(t), grad) else {
        return;
    };
    let rows = x.len() / m.cols;
    let r = p.r();
    let (u, du) = (&u[..rows * r], &mut s.du[..rows * r]);
    // A fused pair's part: its rows of dB; dA (shared by the parts) accumulates.
    let (ga, gb) = (&mut g.a, &mut g.b[p.rows.start * r..p.rows.end * r]);
    match ctx.dropout {
        Some(d) => {
            let xd = &mut s.dropped[..x.len()];
            d.apply(p.slot, x, xd, r0 * m.cols);
            match dx {
                Some(dx) => {
                    let dxl = &mut s.lora_dx[..x.len()];
                    dxl.fill(F::ZERO);
                    lora_backward(Some(&mut *dxl), ga, gb, du, dy, xd, u, p.view());
                    // The mask is the same linear map on the way back.
                    d.apply(p.slot, dxl, xd, r0 * m.cols);
                    add_into(dx, xd);
                }
                None => lora_backward(None, ga, gb, du, dy, xd, u, p.view()),
            }
        }
        None => lora_backward(dx, ga, gb, du, dy, x, u, p.view()),
    }
}

/// The gradient of a post-norm `y = rmsnorm(x)·w` on one chunk: `dx` (zeroed first) from
/// `dy` and the norm's input `x`, its reciprocal RMS recomputed into `rstd` (`scratch`
/// takes the discarded normed rows).
fn post_norm_backward<F: Real>(
    dx: &mut [F],
    dy: &[F],
    x: &[F],
    w: &[f32],
    eps: f32,
    scratch: &mut [F],
    rstd: &mut [F],
) {
    let n = x.len() / w.len();
    rmsnorm_forward(&mut scratch[..x.len()], &mut rstd[..n], x, w, eps);
    dx.fill(F::ZERO);
    rmsnorm_backward(dx, dy, x, w, &rstd[..n]);
}

/// Backward through the block whose attention half ran forward from `x_in` at positions
/// `0 .. T` with `keep_lse`, leaving `st` and the keys/values `k`, `v` (T, kv_dim). On entry
/// `dx` holds d(out); on return d(x_in) — unless `need_dx` is false (the lowest adapted
/// block), when the input gradient is skipped and `dx` is left partial.
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_backward<F: Real>(
    ctx: &BlockCtx<'_, F>,
    grads: Option<&mut LayerAdapter<F>>,
    dx: &mut [F],
    x_in: &[F],
    k: &[F],
    v: &[F],
    st: &BlockState<F>,
    ch: &mut ChunkScratch<F>,
    sc: &mut BackwardScratch<F>,
    need_dx: bool,
    kept_mlp: Option<KeptMlpRef<'_, F>>,
) {
    let t = x_in.len() / ctx.cfg.n_embd;
    let mut g: Grads<'_, F> = match grads {
        Some(l) => {
            let mut it = l.iter_mut().map(|p| p.as_mut());
            std::array::from_fn(|_| it.next().flatten())
        }
        None => Default::default(),
    };
    let rows = ch.rows().min(sc.rows);
    mlp_backward(ctx, &mut g, dx, t, rows, st, ch, sc, kept_mlp.as_ref());
    if ctx.cfg.layers[ctx.layer].conv {
        let c = ctx.cfg.n_embd;
        out_proj_backward(ctx, &mut g, Target::ConvOut, c, dx, t, rows, st, ch, sc);
        super::block_conv::shortconv_mixer_backward(
            ctx, &mut g, dx, x_in, rows, st, ch, sc, need_dx,
        );
        return;
    }
    out_proj_backward(
        ctx,
        &mut g,
        Target::O,
        ctx.cfg.q_dim(),
        dx,
        t,
        rows,
        st,
        ch,
        sc,
    );
    attention_and_rope_backward(ctx, t, k, v, st, sc);
    qkv_backward(ctx, &mut g, dx, x_in, rows, st, ch, sc, need_dx);
}

/// The chunks of `t` tokens, `rows` at a time, as `(r0, r1)`.
pub(crate) fn chunks(t: usize, rows: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..t).step_by(rows).map(move |r0| (r0, (r0 + rows).min(t)))
}

/// `out = x_mid + post(down(act(gate(xn2), up(xn2))))`, `xn2 = rmsnorm(x_mid)`: per chunk,
/// recompute the MLP's activations, then d(x_mid) = d(out) + the MLP's input gradient.
#[allow(clippy::too_many_arguments)]
fn mlp_backward<F: Real>(
    ctx: &BlockCtx<'_, F>,
    g: &mut Grads<'_, F>,
    dx: &mut [F],
    t: usize,
    rows: usize,
    st: &BlockState<F>,
    ch: &mut ChunkScratch<F>,
    sc: &mut BackwardScratch<F>,
    kept: Option<&KeptMlpRef<'_, F>>,
) {
    let cfg = ctx.cfg;
    let lw = ctx.lw();
    let (c, ff) = (cfg.n_embd, cfg.n_ff);
    let post = lw.ffn_post_norm.as_deref();
    for (r0, r1) in chunks(t, rows) {
        let n = r1 - r0;
        let x_mid = &st.x_mid[r0 * c..r1 * c];
        let ChunkScratch {
            xn,
            rstd,
            gate,
            up,
            h,
            proj,
            lora_u,
            dropped,
            post_rstd,
            ..
        } = &mut *ch;
        let [.., u_g, u_u, u_d, _, _, _, _] = lora_u;
        let (xn, rstd, gate, up, h) = (
            &mut xn[..n * c],
            &mut rstd[..n],
            &mut gate[..n * ff],
            &mut up[..n * ff],
            &mut h[..n * ff],
        );
        rmsnorm_forward(xn, rstd, x_mid, &lw.ffn_norm, cfg.rms_eps);
        match kept {
            // Kept from the forward pass: only the LoRA inputs are formed again.
            Some(kp) => {
                gate.copy_from_slice(&kp.gate[r0 * ff..r1 * ff]);
                up.copy_from_slice(&kp.up[r0 * ff..r1 * ff]);
                lora_input(ctx, Target::Gate, xn, r0, u_g, dropped);
                lora_input(ctx, Target::Up, xn, r0, u_u, dropped);
            }
            None => {
                linear_forward(ctx, Target::Gate, gate, xn, r0, u_g, dropped);
                linear_forward(ctx, Target::Up, up, xn, r0, u_u, dropped);
            }
        }
        glu_forward(cfg.arch.activation, h, gate, up, ctx.precision);
        let dxc = &mut dx[r0 * c..r1 * c];
        // d(down's output): through the post-norm when there is one, whose input (the
        // down projection) was kept or is recomputed here.
        let d_down: &[F] = match post {
            Some(w) => {
                let d_pre = &mut proj[..n * c];
                match kept {
                    Some(kp) => {
                        d_pre.copy_from_slice(&kp.down[r0 * c..r1 * c]);
                        lora_input(ctx, Target::Down, h, r0, u_d, dropped);
                    }
                    None => linear_forward(ctx, Target::Down, d_pre, h, r0, u_d, dropped),
                }
                let dpost = &mut sc.dpost[..n * c];
                let (d_pre, scratch) = (&*d_pre, &mut sc.dxn[..n * c]);
                post_norm_backward(dpost, dxc, d_pre, w, cfg.rms_eps, scratch, post_rstd);
                &sc.dpost[..n * c]
            }
            None => {
                lora_input(ctx, Target::Down, h, r0, u_d, dropped);
                dxc
            }
        };
        let (dh, dgate, dup, dxn) = (
            &mut sc.dh[..n * ff],
            &mut sc.dgate[..n * ff],
            &mut sc.dup[..n * ff],
            &mut sc.dxn[..n * c],
        );
        dh.fill(F::ZERO);
        let lora = &mut sc.lora;
        let gd = grad_of(g, ctx.cfg, Target::Down);
        linear_backward(
            ctx,
            Target::Down,
            Some(&mut *dh),
            gd,
            d_down,
            h,
            r0,
            u_d,
            lora,
        );
        let act = cfg.arch.activation;
        glu_backward_overwrite(act, dgate, dup, dh, gate, up, ctx.precision);
        dxn.fill(F::ZERO);
        let gg = grad_of(g, ctx.cfg, Target::Gate);
        linear_backward(
            ctx,
            Target::Gate,
            Some(&mut *dxn),
            gg,
            dgate,
            xn,
            r0,
            u_g,
            lora,
        );
        let gu = grad_of(g, ctx.cfg, Target::Up);
        linear_backward(ctx, Target::Up, Some(&mut *dxn), gu, dup, xn, r0, u_u, lora);
        rmsnorm_backward(&mut dx[r0 * c..r1 * c], dxn, x_mid, &lw.ffn_norm, rstd);
    }
}

/// `x_mid = x_in + post(o(att))`: d(att) (T, width `qd`) from the output projection
/// `target` (attention's o, or a conv block's out_proj) of d(x_mid), per chunk, through the
/// post-norm when there is one.
#[allow(clippy::too_many_arguments)]
fn out_proj_backward<F: Real>(
    ctx: &BlockCtx<'_, F>,
    g: &mut Grads<'_, F>,
    target: Target,
    qd: usize,
    dx: &[F],
    t: usize,
    rows: usize,
    st: &BlockState<F>,
    ch: &mut ChunkScratch<F>,
    sc: &mut BackwardScratch<F>,
) {
    let cfg = ctx.cfg;
    let c = cfg.n_embd;
    let post = ctx.lw().attn_post_norm.as_deref();
    let datt = &mut sc.datt[..t * qd];
    datt.fill(F::ZERO);
    for (r0, r1) in chunks(t, rows) {
        let n = r1 - r0;
        let att = &st.att[r0 * qd..r1 * qd];
        let ChunkScratch {
            xn,
            lora_u,
            dropped,
            post_rstd,
            ..
        } = &mut *ch;
        let u_o = &mut lora_u[target.index()];
        lora_input(ctx, target, att, r0, u_o, dropped);
        let dxc = &dx[r0 * c..r1 * c];
        let dy: &[F] = match post {
            Some(w) => {
                let o_pre = &st.o_pre[r0 * c..r1 * c];
                let dpost = &mut sc.dpost[..n * c];
                post_norm_backward(dpost, dxc, o_pre, w, cfg.rms_eps, xn, post_rstd);
                &sc.dpost[..n * c]
            }
            None => dxc,
        };
        let go = grad_of(g, ctx.cfg, target);
        let datt = Some(&mut datt[r0 * qd..r1 * qd]);
        linear_backward(ctx, target, datt, go, dy, att, r0, u_o, &mut sc.lora);
    }
}

/// Attention over all T tokens, then RoPE backwards: d(att) → dq (T, q_dim), dk, dv
/// (T, kv_dim), dq and dk with respect to the queries and keys before RoPE.
fn attention_and_rope_backward<F: Real>(
    ctx: &BlockCtx<'_, F>,
    t: usize,
    k: &[F],
    v: &[F],
    st: &BlockState<F>,
    sc: &mut BackwardScratch<F>,
) {
    let cfg = ctx.cfg;
    let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
    let BackwardScratch {
        datt,
        dq,
        dk,
        dv,
        delta,
        ..
    } = sc;
    let (dq, dk, dv) = (&mut dq[..t * qd], &mut dk[..t * kvd], &mut dv[..t * kvd]);
    dq.fill(F::ZERO);
    dk.fill(F::ZERO);
    dv.fill(F::ZERO);
    attention_backward(
        dq,
        dk,
        dv,
        &mut delta[..t * cfg.n_head],
        &datt[..t * qd],
        &st.q[..t * qd],
        k,
        v,
        &st.att[..t * qd],
        &st.lse[..t * cfg.n_head],
        ctx.shape(),
        ctx.starts,
    );
    if let Some((cos, sin)) = ctx.rope_rows(0, t) {
        rope_backward(dq, cfg.n_head, cfg.head_dim, cos, sin, cfg.rope_style);
        rope_backward(dk, cfg.n_head_kv, cfg.head_dim, cos, sin, cfg.rope_style);
    }
}

/// q, k, v = projections of xn1 = rmsnorm(x_in) (q and k through QK-norm when the recipe
/// has it), per chunk: the adapter gradients, and d(x_in) when `need_dx`.
#[allow(clippy::too_many_arguments)]
fn qkv_backward<F: Real>(
    ctx: &BlockCtx<'_, F>,
    g: &mut Grads<'_, F>,
    dx: &mut [F],
    x_in: &[F],
    rows: usize,
    st: &BlockState<F>,
    ch: &mut ChunkScratch<F>,
    sc: &mut BackwardScratch<F>,
    need_dx: bool,
) {
    let cfg = ctx.cfg;
    let lw = ctx.lw();
    let (c, qd, kvd) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim());
    let t = x_in.len() / c;
    for (r0, r1) in chunks(t, rows) {
        let n = r1 - r0;
        let xi = &x_in[r0 * c..r1 * c];
        let ChunkScratch {
            xn,
            rstd,
            proj,
            lora_u,
            dropped,
            head_rstd,
            ..
        } = &mut *ch;
        let [u_q, u_k, u_v, ..] = lora_u;
        let (xn, rstd) = (&mut xn[..n * c], &mut rstd[..n]);
        rmsnorm_forward(xn, rstd, xi, &lw.attn_norm, cfg.rms_eps);
        lora_input(ctx, Target::Q, xn, r0, u_q, dropped);
        lora_input(ctx, Target::K, xn, r0, u_k, dropped);
        lora_input(ctx, Target::V, xn, r0, u_v, dropped);
        // d(q), d(k) before QK-norm, when the recipe has it.
        let qk_norm = |dy: &[F], pre: &[F], w: &[f32], heads: usize, dpre: &mut [F]| {
            let width = dy.len() / n;
            let scratch = &mut proj[..n * width];
            rmsnorm_forward(scratch, &mut head_rstd[..n * heads], pre, w, cfg.rms_eps);
            dpre.fill(F::ZERO);
            rmsnorm_backward(dpre, dy, pre, w, &head_rstd[..n * heads]);
        };
        let mut qk_norm = qk_norm;
        let dq_c = &sc.dq[r0 * qd..r1 * qd];
        let dq_c: &[F] = match lw.q_norm.as_deref() {
            Some(w) => {
                let pre = &st.q_pre[r0 * qd..r1 * qd];
                qk_norm(dq_c, pre, w, cfg.n_head, &mut sc.dq_pre[..n * qd]);
                &sc.dq_pre[..n * qd]
            }
            None => dq_c,
        };
        let dk_c = &sc.dk[r0 * kvd..r1 * kvd];
        let dk_c: &[F] = match lw.k_norm.as_deref() {
            Some(w) => {
                let pre = &st.k_pre[r0 * kvd..r1 * kvd];
                qk_norm(dk_c, pre, w, cfg.n_head_kv, &mut sc.dk_pre[..n * kvd]);
                &sc.dk_pre[..n * kvd]
            }
            None => dk_c,
        };
        let dv_c = &sc.dv[r0 * kvd..r1 * kvd];
        let dxn = &mut sc.dxn[..n * c];
        dxn.fill(F::ZERO);
        let mut d = need_dx.then_some(&mut *dxn);
        let lora = &mut sc.lora;
        let gq = grad_of(g, ctx.cfg, Target::Q);
        linear_backward(
            ctx,
            Target::Q,
            d.as_deref_mut(),
            gq,
            dq_c,
            xn,
            r0,
            u_q,
            lora,
        );
        let gk = grad_of(g, ctx.cfg, Target::K);
        linear_backward(
            ctx,
            Target::K,
            d.as_deref_mut(),
            gk,
            dk_c,
            xn,
            r0,
            u_k,
            lora,
        );
        let gv = grad_of(g, ctx.cfg, Target::V);
        linear_backward(ctx, Target::V, d, gv, dv_c, xn, r0, u_v, lora);
        if need_dx {
            rmsnorm_backward(&mut dx[r0 * c..r1 * c], dxn, xi, &lw.attn_norm, rstd);
        }
    }
}
