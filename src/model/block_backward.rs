//! The backward pass of one block (see `block.rs` for the forward, step by step). The MLP
//! and the projections run chunk by chunk: each chunk's norm outputs, MLP activations and
//! LoRA inputs are recomputed from x_mid (MLP) or x_in (q/k/v), so only the attention
//! state and the attention gradients cover all T tokens. When the workspace keeps every
//! block's activations (`WorkspaceShape::keep`), the MLP's gate and up come from the
//! forward pass instead. Adds into the adapter gradients
//! and turns d(out) into d(x_in).

use super::block::{linear_forward, lora_input, BlockCtx, BlockState, ChunkScratch};
use super::config::ModelConfig;
use crate::kernels::num::{add_into, Real};
use crate::kernels::{
    attention_backward, lora_backward, matmul_backward_input, rmsnorm_backward, rmsnorm_forward,
    rope_backward, swiglu_backward, swiglu_forward,
};
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
    datt: Vec<F>,
    dq: Vec<F>,
    dk: Vec<F>,
    dv: Vec<F>,
    delta: Vec<F>,
    dxn: Vec<F>,
    dh: Vec<F>,
    dgate: Vec<F>,
    dup: Vec<F>,
    lora: LoraScratch<F>,
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
        BackwardScratch {
            rows,
            datt: s.zeros(capacity * qd),
            dq: s.zeros(capacity * qd),
            dk: s.zeros(capacity * kvd),
            dv: s.zeros(capacity * kvd),
            delta: s.zeros(capacity * cfg.n_head),
            dxn: s.zeros(rows * c),
            dh: s.zeros(rows * ff),
            dgate: s.zeros(rows * ff),
            dup: s.zeros(rows * ff),
            lora: LoraScratch {
                du: s.zeros(rows * max_rank),
                dropped: s.zeros(rows * widest),
                lora_dx: s.zeros(rows * widest),
            },
        }
    }
}

/// Gradient of `linear_forward` for target `t` on the chunk starting at token `r0`: adds
/// `dy·W0` (when `dx` is given) and the LoRA part into `dx`, the adapter gradients into
/// `grad`. `u` is the chunk's saved `dropout(x)·Aᵀ`.
#[allow(clippy::too_many_arguments)]
fn linear_backward<F: Real>(
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
    let (u, du) = (&u[..rows * p.r], &mut s.du[..rows * p.r]);
    match ctx.dropout {
        Some(d) => {
            let xd = &mut s.dropped[..x.len()];
            d.apply(t, x, xd, r0 * m.cols);
            match dx {
                Some(dx) => {
                    let dxl = &mut s.lora_dx[..x.len()];
                    dxl.fill(F::ZERO);
                    lora_backward(Some(&mut *dxl), &mut g.a, &mut g.b, du, dy, xd, u, p.view());
                    // The mask is the same linear map on the way back.
                    d.apply(t, dxl, xd, r0 * m.cols);
                    add_into(dx, xd);
                }
                None => lora_backward(None, &mut g.a, &mut g.b, du, dy, xd, u, p.view()),
            }
        }
        None => lora_backward(dx, &mut g.a, &mut g.b, du, dy, x, u, p.view()),
    }
}

/// Backward through the block whose attention half ran forward from `x_in` at positions
/// `0 .. T` with `keep_lse`, leaving `st` and the keys/values `k`, `v` (T, kv_dim). On entry
/// `dx` holds d(out); on return d(x_in) — unless `need_dx` is false (the lowest adapted
/// block), when the input gradient is skipped and `dx` is left partial.
#[allow(clippy::too_many_arguments)]
pub fn block_backward<F: Real>(
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
    kept_mlp: Option<(&[F], &[F])>,
) {
    let cfg = ctx.cfg;
    let lw = ctx.lw();
    let (c, qd, kvd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
    let t = x_in.len() / c;
    let rows = ch.rows().min(sc.rows);
    let [mut gq, mut gk, mut gv, mut go, mut gg, mut gu, mut gd] = match grads {
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
    let BackwardScratch {
        datt,
        dq,
        dk,
        dv,
        delta,
        dxn,
        dh,
        dgate,
        dup,
        lora,
        ..
    } = sc;
    let chunks = || (0..t).step_by(rows).map(move |r0| (r0, (r0 + rows).min(t)));

    // out = x_mid + down(swiglu(gate(xn2), up(xn2))), xn2 = rmsnorm(x_mid): per chunk,
    // recompute the MLP's activations, then d(x_mid) = d(out) + the MLP's input gradient.
    for (r0, r1) in chunks() {
        let n = r1 - r0;
        let x_mid = &st.x_mid[r0 * c..r1 * c];
        let ChunkScratch {
            xn,
            rstd,
            gate,
            up,
            h,
            lora_u,
            dropped,
            ..
        } = &mut *ch;
        let [.., u_g, u_u, u_d] = lora_u;
        let (xn, rstd, gate, up, h) = (
            &mut xn[..n * c],
            &mut rstd[..n],
            &mut gate[..n * ff],
            &mut up[..n * ff],
            &mut h[..n * ff],
        );
        rmsnorm_forward(xn, rstd, x_mid, &lw.ffn_norm, cfg.rms_eps);
        match kept_mlp {
            // Kept from the forward pass: only the LoRA inputs are formed again.
            Some((kg, ku)) => {
                gate.copy_from_slice(&kg[r0 * ff..r1 * ff]);
                up.copy_from_slice(&ku[r0 * ff..r1 * ff]);
                lora_input(ctx, Target::Gate, xn, r0, u_g, dropped);
                lora_input(ctx, Target::Up, xn, r0, u_u, dropped);
            }
            None => {
                linear_forward(ctx, Target::Gate, gate, xn, r0, u_g, dropped);
                linear_forward(ctx, Target::Up, up, xn, r0, u_u, dropped);
            }
        }
        swiglu_forward(h, gate, up, ctx.precision);
        lora_input(ctx, Target::Down, h, r0, u_d, dropped);
        let dxc = &mut dx[r0 * c..r1 * c];
        let (dh, dgate, dup, dxn) = (
            &mut dh[..n * ff],
            &mut dgate[..n * ff],
            &mut dup[..n * ff],
            &mut dxn[..n * c],
        );
        dh.fill(F::ZERO);
        linear_backward(
            ctx,
            Target::Down,
            Some(&mut *dh),
            gd.as_deref_mut(),
            dxc,
            h,
            r0,
            u_d,
            lora,
        );
        swiglu_backward(dgate, dup, dh, gate, up, ctx.precision);
        dxn.fill(F::ZERO);
        linear_backward(
            ctx,
            Target::Gate,
            Some(&mut *dxn),
            gg.as_deref_mut(),
            dgate,
            xn,
            r0,
            u_g,
            lora,
        );
        linear_backward(
            ctx,
            Target::Up,
            Some(&mut *dxn),
            gu.as_deref_mut(),
            dup,
            xn,
            r0,
            u_u,
            lora,
        );
        rmsnorm_backward(dxc, dxn, x_mid, &lw.ffn_norm, rstd);
    }

    // x_mid = x_in + o(att): d(att) from the output projection of d(x_mid), per chunk.
    let datt = &mut datt[..t * qd];
    datt.fill(F::ZERO);
    for (r0, r1) in chunks() {
        let att = &st.att[r0 * qd..r1 * qd];
        let ChunkScratch {
            lora_u, dropped, ..
        } = &mut *ch;
        let u_o = &mut lora_u[Target::O.index()];
        lora_input(ctx, Target::O, att, r0, u_o, dropped);
        linear_backward(
            ctx,
            Target::O,
            Some(&mut datt[r0 * qd..r1 * qd]),
            go.as_deref_mut(),
            &dx[r0 * c..r1 * c],
            att,
            r0,
            u_o,
            lora,
        );
    }

    // Attention over all T tokens, then RoPE backwards.
    let (dq, dk, dv) = (&mut dq[..t * qd], &mut dk[..t * kvd], &mut dv[..t * kvd]);
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
        &st.att[..t * qd],
        lse,
        ctx.shape(),
        ctx.starts,
    );
    let half = cfg.rope_dim / 2;
    let (cos, sin) = (&ctx.cos[..t * half], &ctx.sin[..t * half]);
    rope_backward(dq, cfg.n_head, cfg.head_dim, cos, sin, cfg.rope_style);
    rope_backward(dk, cfg.n_head_kv, cfg.head_dim, cos, sin, cfg.rope_style);

    // q, k, v = projections of xn1 = rmsnorm(x_in), per chunk.
    for (r0, r1) in chunks() {
        let n = r1 - r0;
        let xi = &x_in[r0 * c..r1 * c];
        let ChunkScratch {
            xn,
            rstd,
            lora_u,
            dropped,
            ..
        } = &mut *ch;
        let [u_q, u_k, u_v, ..] = lora_u;
        let (xn, rstd) = (&mut xn[..n * c], &mut rstd[..n]);
        rmsnorm_forward(xn, rstd, xi, &lw.attn_norm, cfg.rms_eps);
        lora_input(ctx, Target::Q, xn, r0, u_q, dropped);
        lora_input(ctx, Target::K, xn, r0, u_k, dropped);
        lora_input(ctx, Target::V, xn, r0, u_v, dropped);
        let dxn = &mut dxn[..n * c];
        dxn.fill(F::ZERO);
        let mut d = need_dx.then_some(&mut *dxn);
        linear_backward(
            ctx,
            Target::Q,
            d.as_deref_mut(),
            gq.as_deref_mut(),
            &dq[r0 * qd..r1 * qd],
            xn,
            r0,
            u_q,
            lora,
        );
        linear_backward(
            ctx,
            Target::K,
            d.as_deref_mut(),
            gk.as_deref_mut(),
            &dk[r0 * kvd..r1 * kvd],
            xn,
            r0,
            u_k,
            lora,
        );
        linear_backward(
            ctx,
            Target::V,
            d,
            gv.as_deref_mut(),
            &dv[r0 * kvd..r1 * kvd],
            xn,
            r0,
            u_v,
            lora,
        );
        if need_dx {
            rmsnorm_backward(&mut dx[r0 * c..r1 * c], dxn, xi, &lw.attn_norm, rstd);
        }
    }
}
