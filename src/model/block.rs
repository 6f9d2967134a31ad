//! One transformer block, forward and backward, generic over the float type, as its
//! architecture's recipe ([`super::arch::Arch`]) builds it:
//!
//! ```text
//! xn1 = rmsnorm(x)                    q, k, v = xn1·W0ᵀ (+ bias) + LoRA
//!                                     [QK-norm: per-head rmsnorm of q, k];  RoPE on q, k
//! att = softmax(scale·q·kᵀ)·v         (causal; a sliding window and document starts bound
//!                                      the keys from below)
//! o = att·Woᵀ + LoRA                  [post-norm: o = rmsnorm(o)];  x_mid = x + o
//! xn2 = rmsnorm(x_mid)                g, u = xn2·W0ᵀ + LoRA;  h = act(g)·u (SwiGLU, GeGLU)
//! d = h·Wdᵀ + LoRA                    [post-norm: d = rmsnorm(d)];  out = x_mid + d
//! ```
//!
//! Memory grows with a token *chunk*, not with T, wherever it can: the projections, norms
//! and the MLP run chunk by chunk; only the attention state — x_mid, q, att and the
//! log-sum-exp, and for training the inputs of the QK- and post-norms (k and v live in the
//! caller's cache or buffer) — covers all T tokens. The backward pass
//! (`block_backward.rs`, read side by side with this file) recomputes each chunk's norms,
//! MLP activations and LoRA inputs from x_in and x_mid. W0 never gets a gradient.

use super::config::ModelConfig;
use super::weights::{LayerWeights, MatrixRef, Weights};
use crate::kernels::num::{add_into, Real};
use crate::kernels::{
    attention_forward, glu_forward, lora_forward, matmul_forward, rmsnorm_forward, rope_forward,
    AttnShape, LoraRef, Precision, QMatrix,
};
use crate::lora::config::N_TARGETS;
use crate::lora::{LayerAdapter, LoraPair, Target};
use crate::memory::sizes::Sizer;
use crate::util::rng::{splitmix64_mix, unit_f32, GOLDEN_GAMMA};

/// Inverted dropout on the LoRA input path, with masks derived from a key and the element's
/// index in the whole (T, in) input, so the backward pass regenerates exactly the forward's
/// mask, chunk by chunk, without storing it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub p: f32,
    /// Identifies (step, record, block); the target index is mixed in per use.
    pub key: u64,
}

impl Dropout {
    fn keep(key: u64, i: usize, p: f32) -> bool {
        let z = splitmix64_mix(key ^ (i as u64).wrapping_mul(GOLDEN_GAMMA));
        unit_f32(z) >= p
    }

    /// `out = mask ⊙ x / (1 − p)` for target `t`, where `x` starts at element `offset` of the
    /// whole input (also the gradient's own form).
    pub(crate) fn apply<F: Real>(&self, t: Target, x: &[F], out: &mut [F], offset: usize) {
        let key = self.key ^ ((t.index() as u64 + 1) << 56);
        let s = F::from_f64(1.0 / (1.0 - self.p as f64));
        for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
            *o = if Dropout::keep(key, offset + i, self.p) {
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
    /// RoPE angles (cos, sin) of this layer's T positions, (T, rope_dim/2) each; `None`
    /// when the layer has no RoPE.
    pub rope: Option<(&'a [F], &'a [F])>,
    /// Arithmetic of the products with W0.
    pub precision: Precision,
    /// The first key each query may see, relative to the key rows: the first position of
    /// its record (packed sequences), its sliding window's start, or the later of both.
    /// `None`: plain causal attention.
    pub starts: Option<&'a [usize]>,
}

impl<F: Real> BlockCtx<'_, F> {
    pub(crate) fn lw(&self) -> &LayerWeights {
        &self.weights.layers[self.layer]
    }

    /// The base matrix of target `t`, multiplied in this context's precision.
    pub(crate) fn matrix(&self, t: Target) -> QMatrix<'_> {
        let Some(m) = base(self.lw(), t) else {
            unreachable!(
                "block {} has no {t:?} projection (its kind was checked at load)",
                self.layer
            )
        };
        self.weights.matrix(m).with_precision(self.precision)
    }

    /// The adapter of projection `t`: its pair and `t`'s rows of it (a fused pair's part).
    pub(crate) fn pair(&self, t: Target) -> Option<LoraPart<'_, F>> {
        let (slot, rows) = self.cfg.lora_part(t);
        let pair = self.lora.and_then(|l| l[slot.index()].as_ref())?;
        Some(LoraPart { pair, slot, rows })
    }

    pub(crate) fn shape(&self) -> AttnShape {
        AttnShape {
            n_head: self.cfg.n_head,
            n_head_kv: self.cfg.n_head_kv,
            head_dim: self.cfg.head_dim,
            scale: self.cfg.attn_scale,
            precision: self.precision,
        }
    }

    /// RoPE rows of tokens `r0 .. r1` (`None`: the layer has no RoPE).
    pub(crate) fn rope_rows(&self, r0: usize, r1: usize) -> Option<(&[F], &[F])> {
        let half = self.cfg.rope_dim / 2;
        self.rope
            .map(|(c, s)| (&c[r0 * half..r1 * half], &s[r0 * half..r1 * half]))
    }
}

/// The adapter of one projection: the pair of its adapter target (`slot`), and the rows
/// of that pair's B that produce this projection (all of them, or its part of a fused
/// q/k/v or gate/up pair — whose A the parts share, as PEFT's one module has one A).
pub(crate) struct LoraPart<'a, F> {
    pub pair: &'a LoraPair<F>,
    /// The adapter target: the projection itself, or the fused one holding it (the
    /// dropout mask is the slot's, one mask for the fused module's input as in PEFT).
    pub slot: Target,
    pub rows: std::ops::Range<usize>,
}

impl<F: Real> LoraPart<'_, F> {
    pub(crate) fn view(&self) -> LoraRef<'_, F> {
        let r = self.pair.r;
        LoraRef {
            b: &self.pair.b[self.rows.start * r..self.rows.end * r],
            ..self.pair.view()
        }
    }

    pub(crate) fn r(&self) -> usize {
        self.pair.r
    }

    pub(crate) fn in_dim(&self) -> usize {
        self.pair.in_dim
    }
}

/// The base matrix of a projection (one of the separate ones; a fused tensor's part is a
/// row view of it), if the block has it.
pub(crate) fn base(lw: &LayerWeights, t: Target) -> Option<&MatrixRef> {
    match t {
        Target::Q | Target::Qkv => lw.wq.as_ref(),
        Target::K => lw.wk.as_ref(),
        Target::V => lw.wv.as_ref(),
        Target::O => lw.wo.as_ref(),
        Target::Gate | Target::GateUp => Some(&lw.w_gate),
        Target::Up => Some(&lw.w_up),
        Target::Down => Some(&lw.w_down),
        Target::ConvIn => lw.conv.as_ref().map(|c| &c.in_proj),
        Target::ConvOut => lw.conv.as_ref().map(|c| &c.out_proj),
    }
}

/// The attention state of one block over all T tokens (what the backward pass keeps).
#[derive(Debug)]
pub struct BlockState<F> {
    capacity: usize,
    /// Residual after attention, (T, C).
    pub(crate) x_mid: Vec<F>,
    /// Queries after bias, QK-norm and RoPE, (T, q_dim).
    pub(crate) q: Vec<F>,
    /// Attention output, (T, q_dim).
    pub(crate) att: Vec<F>,
    /// Log-sum-exp of each query row and head, (T, n_head).
    pub(crate) lse: Vec<F>,
    /// Training states only, for the norms' backward: queries and keys before QK-norm,
    /// (T, q_dim) and (T, kv_dim); the attention output before its post-norm, (T, C).
    /// Empty when the recipe has no such norm, and in inference states.
    pub(crate) q_pre: Vec<F>,
    pub(crate) k_pre: Vec<F>,
    pub(crate) o_pre: Vec<F>,
    /// Short-convolution blocks (models that have them): the input projection's output
    /// (gates B, C and input x), (T, 3C); in training states also the convolution's input
    /// B ⊙ x, (T, C) (inference keeps that in the cache).
    pub(crate) bcx: Vec<F>,
    pub(crate) bx: Vec<F>,
}

impl<F: Real> BlockState<F> {
    /// The state's buffers, taken from `s` (its one size list); `training` states also
    /// keep the norms' inputs.
    pub(crate) fn build(cfg: &ModelConfig, capacity: usize, training: bool, s: &mut Sizer) -> Self {
        let qk = training && cfg.arch.qk_norm;
        let post = training && cfg.arch.post_norms;
        let conv = cfg.has_conv();
        // A conv block's mixer output (C wide) lives where attention's (q_dim) does.
        let att_w = if conv {
            cfg.q_dim().max(cfg.n_embd)
        } else {
            cfg.q_dim()
        };
        BlockState {
            capacity,
            x_mid: s.zeros(capacity * cfg.n_embd),
            q: s.zeros(capacity * cfg.q_dim()),
            att: s.zeros(capacity * att_w),
            lse: s.zeros(capacity * cfg.n_head),
            q_pre: s.zeros(if qk { capacity * cfg.q_dim() } else { 0 }),
            k_pre: s.zeros(if qk { capacity * cfg.kv_dim() } else { 0 }),
            o_pre: s.zeros(if post { capacity * cfg.n_embd } else { 0 }),
            bcx: s.zeros(if conv { capacity * 3 * cfg.n_embd } else { 0 }),
            bx: s.zeros(if conv && training {
                capacity * cfg.n_embd
            } else {
                0
            }),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Per-chunk workspace of the forward pass (and the backward pass's recompute).
#[derive(Debug)]
pub struct ChunkScratch<F> {
    rows: usize,
    pub(crate) xn: Vec<F>,
    pub(crate) rstd: Vec<F>,
    pub(crate) gate: Vec<F>,
    pub(crate) up: Vec<F>,
    pub(crate) h: Vec<F>,
    /// A projection's output before its norm or residual add, (rows, max(C, q_dim)).
    pub(crate) proj: Vec<F>,
    /// `u = dropout(x)·Aᵀ` per projection, (rows, r) (empty for the fused targets, whose
    /// parts use their projections' slots, and for conv projections without conv blocks).
    pub(crate) lora_u: [Vec<F>; N_TARGETS],
    /// Dropped-out LoRA input, (rows, widest input).
    pub(crate) dropped: Vec<F>,
    /// Reciprocal RMS of the per-head QK-norm rows, (rows, n_head) (QK-norm only).
    pub(crate) head_rstd: Vec<F>,
    /// Reciprocal RMS of a post-norm, (rows) (post-norms only).
    pub(crate) post_rstd: Vec<F>,
}

impl<F: Real> ChunkScratch<F> {
    /// The chunk's buffers, taken from `s` (its one size list).
    pub(crate) fn build(
        cfg: &ModelConfig,
        rows: usize,
        max_rank: usize,
        dropout: bool,
        s: &mut Sizer,
    ) -> Self {
        let (c, qd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.n_ff);
        let (qk, post) = (cfg.arch.qk_norm, cfg.arch.post_norms);
        ChunkScratch {
            rows,
            xn: s.zeros(rows * c),
            rstd: s.zeros(rows),
            gate: s.zeros(rows * ff),
            up: s.zeros(rows * ff),
            h: s.zeros(rows * ff),
            proj: s.zeros(rows * c.max(qd)),
            lora_u: std::array::from_fn(|i| {
                let used = match Target::EVERY[i] {
                    Target::Qkv | Target::GateUp => false,
                    Target::ConvIn | Target::ConvOut => cfg.has_conv(),
                    _ => true,
                };
                s.zeros(if used { rows * max_rank } else { 0 })
            }),
            dropped: s.zeros(if dropout { rows * c.max(qd).max(ff) } else { 0 }),
            head_rstd: s.zeros(if qk { rows * cfg.n_head } else { 0 }),
            post_rstd: s.zeros(if post { rows } else { 0 }),
        }
    }

    /// Tokens per chunk.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// `u (rows, r) ← dropout(x)·Aᵀ` for target `t` on the chunk starting at token `r0`.
pub(crate) fn lora_input<F: Real>(
    ctx: &BlockCtx<'_, F>,
    t: Target,
    x: &[F],
    r0: usize,
    u: &mut [F],
    dropped: &mut [F],
) -> Option<()> {
    let p = ctx.pair(t)?;
    let (inp, r) = (p.in_dim(), p.r());
    let rows = x.len() / inp;
    let u = &mut u[..rows * r];
    let a_only = LoraRef {
        a: &p.pair.a,
        b: &[],
        r,
        scale: F::ZERO,
    };
    match ctx.dropout {
        Some(d) => {
            let xd = &mut dropped[..x.len()];
            d.apply(p.slot, x, xd, r0 * inp);
            crate::kernels::lora::lora_input(u, xd, a_only);
        }
        None => crate::kernels::lora::lora_input(u, x, a_only),
    }
    Some(())
}

/// `y ← x·W0ᵀ + s·(dropout(x)·Aᵀ)·Bᵀ` for target `t` on the chunk starting at token `r0`
/// (bias not included); keeps `u`.
pub(crate) fn linear_forward<F: Real>(
    ctx: &BlockCtx<'_, F>,
    t: Target,
    y: &mut [F],
    x: &[F],
    r0: usize,
    u: &mut [F],
    dropped: &mut [F],
) {
    matmul_forward(y, x, &ctx.matrix(t));
    if let Some(p) = ctx.pair(t) {
        let rows = x.len() / p.in_dim();
        let u = &mut u[..rows * p.r()];
        match ctx.dropout {
            Some(d) => {
                let xd = &mut dropped[..x.len()];
                d.apply(p.slot, x, xd, r0 * p.in_dim());
                lora_forward(y, u, xd, p.view());
            }
            None => lora_forward(y, u, x, p.view()),
        }
    }
}

pub(crate) fn add_bias<F: Real>(y: &mut [F], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(b.len()) {
            for (v, &bb) in row.iter_mut().zip(b) {
                *v += F::from_f32(bb);
            }
        }
    }
}

/// One of q or k for the chunk starting at token `r0`: `out ← rope(norm(xn·W0ᵀ + bias +
/// LoRA))`, with the per-head QK-norm when the recipe has it (its input also copied to
/// `pre`, when given: training) and RoPE when the layer has it.
#[allow(clippy::too_many_arguments)]
fn query_or_key<F: Real>(
    ctx: &BlockCtx<'_, F>,
    t: Target,
    out: &mut [F],
    xn: &[F],
    r0: usize,
    n_heads: usize,
    ch: &mut ChunkScratch<F>,
    pre: Option<&mut [F]>,
) {
    let (cfg, lw) = (ctx.cfg, ctx.lw());
    let n = xn.len() / cfg.n_embd;
    let (bias, norm) = match t {
        Target::Q => (lw.bq.as_deref(), lw.q_norm.as_deref()),
        _ => (lw.bk.as_deref(), lw.k_norm.as_deref()),
    };
    let ChunkScratch {
        proj,
        lora_u,
        dropped,
        head_rstd,
        ..
    } = ch;
    let u = &mut lora_u[t.index()];
    match norm {
        None => {
            linear_forward(ctx, t, out, xn, r0, u, dropped);
            add_bias(out, bias);
        }
        Some(w) => {
            let p = &mut proj[..out.len()];
            linear_forward(ctx, t, p, xn, r0, u, dropped);
            add_bias(p, bias);
            if let Some(pre) = pre {
                pre.copy_from_slice(p);
            }
            rmsnorm_forward(out, &mut head_rstd[..n * n_heads], p, w, cfg.rms_eps);
        }
    }
    if let Some((cos, sin)) = ctx.rope_rows(r0, r0 + n) {
        rope_forward(out, n_heads, cfg.head_dim, cos, sin, cfg.rope_style);
    }
}

/// `x += norm(y)` where the recipe has a post-norm `w` for this sum (its reciprocal RMS to
/// `rstd`, the normed rows to `scratch`), else `x += y`.
pub(crate) fn add_residual<F: Real>(
    x: &mut [F],
    y: &[F],
    w: Option<&[f32]>,
    eps: f32,
    scratch: &mut [F],
    rstd: &mut [F],
) {
    match w {
        Some(w) => {
            let n = y.len() / w.len();
            let normed = &mut scratch[..y.len()];
            rmsnorm_forward(normed, &mut rstd[..n], y, w, eps);
            add_into(x, normed);
        }
        None => add_into(x, y),
    }
}

/// The attention half of the block on `x` (T, C), in place: `x ← x_mid`, also kept in
/// `st`. Keys and values of positions `pos0 ..` go to rows `pos0 ..` of `kc`/`vc` (a cache,
/// or a training buffer), and attention reads rows `0 .. pos0+T`. With `keep_lse`, the
/// log-sum-exp is kept for the backward pass.
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_attention<F: Real>(
    ctx: &BlockCtx<'_, F>,
    x: &mut [F],
    kc: &mut [F],
    vc: &mut [F],
    pos0: usize,
    st: &mut BlockState<F>,
    ch: &mut ChunkScratch<F>,
    keep_lse: bool,
) {
    let cfg = ctx.cfg;
    let lw = ctx.lw();
    let (c, qd, kvd) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim());
    let t = x.len() / c;
    assert!(
        t <= st.capacity,
        "block: {t} tokens exceed the state capacity {}",
        st.capacity
    );
    if cfg.layers[ctx.layer].conv {
        // The convolution's input rows: the training state's, or the cache's (`kc`).
        let mut bx = std::mem::take(&mut st.bx);
        let buf = if bx.is_empty() { kc } else { &mut bx[..] };
        super::block_conv::shortconv_mixer(ctx, x, buf, pos0, st, ch);
        st.bx = bx;
        return;
    }
    let rows = ch.rows;
    // Training states keep the QK-norm inputs (empty buffers otherwise).
    let keep_pre = !st.q_pre.is_empty();
    for r0 in (0..t).step_by(rows) {
        let r1 = (r0 + rows).min(t);
        let n = r1 - r0;
        let mut xn = std::mem::take(&mut ch.xn);
        rmsnorm_forward(
            &mut xn[..n * c],
            &mut ch.rstd[..n],
            &x[r0 * c..r1 * c],
            &lw.attn_norm,
            cfg.rms_eps,
        );
        let xn_c = &xn[..n * c];
        let q = &mut st.q[r0 * qd..r1 * qd];
        let q_pre = keep_pre.then(|| &mut st.q_pre[r0 * qd..r1 * qd]);
        query_or_key(ctx, Target::Q, q, xn_c, r0, cfg.n_head, ch, q_pre);
        let k = &mut kc[(pos0 + r0) * kvd..(pos0 + r1) * kvd];
        let k_pre = keep_pre.then(|| &mut st.k_pre[r0 * kvd..r1 * kvd]);
        query_or_key(ctx, Target::K, k, xn_c, r0, cfg.n_head_kv, ch, k_pre);
        let v = &mut vc[(pos0 + r0) * kvd..(pos0 + r1) * kvd];
        let u_v = &mut ch.lora_u[Target::V.index()];
        linear_forward(ctx, Target::V, v, xn_c, r0, u_v, &mut ch.dropped);
        add_bias(v, lw.bv.as_deref());
        ch.xn = xn;
    }
    let n_kv = (pos0 + t) * kvd;
    let lse = if keep_lse {
        Some(&mut st.lse[..t * cfg.n_head])
    } else {
        None
    };
    attention_forward(
        &mut st.att[..t * qd],
        lse,
        &st.q[..t * qd],
        &kc[..n_kv],
        &vc[..n_kv],
        pos0,
        ctx.shape(),
        ctx.starts,
    );
    mixer_output(ctx, Target::O, qd, x, st, ch);
}

/// The end of a block's mixer, per chunk: its output `st.att` (T, `width`) through the
/// output projection `t` (attention's o, a conv block's out_proj), the post-norm where the
/// recipe has one (its input kept in training states), added into the residual `x` (T, C),
/// which is then x_mid, also kept in `st`.
pub(crate) fn mixer_output<F: Real>(
    ctx: &BlockCtx<'_, F>,
    t: Target,
    width: usize,
    x: &mut [F],
    st: &mut BlockState<F>,
    ch: &mut ChunkScratch<F>,
) {
    let cfg = ctx.cfg;
    let c = cfg.n_embd;
    let n_tok = x.len() / c;
    let rows = ch.rows;
    let keep_o = !st.o_pre.is_empty();
    let post = ctx.lw().attn_post_norm.as_deref();
    let ChunkScratch {
        xn,
        proj,
        lora_u,
        dropped,
        post_rstd,
        ..
    } = ch;
    for r0 in (0..n_tok).step_by(rows) {
        let r1 = (r0 + rows).min(n_tok);
        let proj = &mut proj[..(r1 - r0) * c];
        let att = &st.att[r0 * width..r1 * width];
        let u = &mut lora_u[t.index()];
        linear_forward(ctx, t, proj, att, r0, u, dropped);
        if keep_o {
            st.o_pre[r0 * c..r1 * c].copy_from_slice(proj);
        }
        let xr = &mut x[r0 * c..r1 * c];
        add_residual(xr, proj, post, cfg.rms_eps, xn, post_rstd);
    }
    st.x_mid[..n_tok * c].copy_from_slice(x);
}

/// The MLP half on one chunk of rows (`x` holds x_mid of tokens `r0 ..`, in place → out).
/// Leaves the chunk's gate, up and (before its post-norm) down projections in `ch`.
pub(crate) fn mlp_chunk<F: Real>(
    ctx: &BlockCtx<'_, F>,
    x: &mut [F],
    r0: usize,
    ch: &mut ChunkScratch<F>,
) {
    let cfg = ctx.cfg;
    let (c, ff) = (cfg.n_embd, cfg.n_ff);
    let n = x.len() / c;
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
    } = ch;
    let [.., u_g, u_u, u_d, _, _, _, _] = lora_u;
    let (xn, gate, up, h, proj) = (
        &mut xn[..n * c],
        &mut gate[..n * ff],
        &mut up[..n * ff],
        &mut h[..n * ff],
        &mut proj[..n * c],
    );
    let lw = ctx.lw();
    rmsnorm_forward(xn, &mut rstd[..n], x, &lw.ffn_norm, cfg.rms_eps);
    linear_forward(ctx, Target::Gate, gate, xn, r0, u_g, dropped);
    linear_forward(ctx, Target::Up, up, xn, r0, u_u, dropped);
    glu_forward(cfg.arch.activation, h, gate, up, ctx.precision);
    linear_forward(ctx, Target::Down, proj, h, r0, u_d, dropped);
    let post = lw.ffn_post_norm.as_deref();
    add_residual(x, proj, post, cfg.rms_eps, xn, post_rstd);
}

/// What a kept block keeps of its MLP over all T tokens: gate, up (T, n_ff) and, when the
/// recipe post-norms the MLP output, the down projection before the norm (T, C).
pub(crate) struct KeptMlp<'a, F> {
    pub gate: &'a mut [F],
    pub up: &'a mut [F],
    pub down: &'a mut [F],
}

/// [`block_forward`] for training without recompute: the attention state (with the
/// log-sum-exp) goes to `st`, keys and values to `kc`/`vc`, and the MLP's projections to
/// `keep`, all kept for backward.
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_forward_kept<F: Real>(
    ctx: &BlockCtx<'_, F>,
    x: &mut [F],
    kc: &mut [F],
    vc: &mut [F],
    st: &mut BlockState<F>,
    ch: &mut ChunkScratch<F>,
    keep: KeptMlp<'_, F>,
) {
    block_attention(ctx, x, kc, vc, 0, st, ch, true);
    let (c, ff) = (ctx.cfg.n_embd, ctx.cfg.n_ff);
    let rows = ch.rows();
    for (i, xc) in x.chunks_mut(rows * c).enumerate() {
        let (r0, n) = (i * rows, xc.len() / c);
        mlp_chunk(ctx, xc, r0, ch);
        keep.gate[r0 * ff..(r0 + n) * ff].copy_from_slice(&ch.gate[..n * ff]);
        keep.up[r0 * ff..(r0 + n) * ff].copy_from_slice(&ch.up[..n * ff]);
        if !keep.down.is_empty() {
            keep.down[r0 * c..(r0 + n) * c].copy_from_slice(&ch.proj[..n * c]);
        }
    }
}

/// The whole block on `x` (T, C) in place (see [`block_attention`] for the cache).
#[allow(clippy::too_many_arguments)]
pub(crate) fn block_forward<F: Real>(
    ctx: &BlockCtx<'_, F>,
    x: &mut [F],
    kc: &mut [F],
    vc: &mut [F],
    pos0: usize,
    st: &mut BlockState<F>,
    ch: &mut ChunkScratch<F>,
    keep_lse: bool,
) {
    block_attention(ctx, x, kc, vc, pos0, st, ch, keep_lse);
    let c = ctx.cfg.n_embd;
    let rows = ch.rows();
    for (i, xc) in x.chunks_mut(rows * c).enumerate() {
        mlp_chunk(ctx, xc, i * rows, ch);
    }
}
