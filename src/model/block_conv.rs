//! The mixer of a gated short-convolution block (lfm2), forward and backward, in place of
//! attention (see `block.rs`; the MLP half is the same):
//!
//! ```text
//! xn = rmsnorm(x)            [b, c, u] = xn·W_inᵀ + LoRA        (3 × C)
//! bx = b ⊙ u                 y = c ⊙ conv(bx)  (causal depthwise, L taps; within a document)
//! x_mid = x + y·W_outᵀ + LoRA
//! ```
//!
//! The convolution reads the previous `L − 1` rows of `bx`: in training, rows of the
//! state's own buffer; in inference, the KV cache's rows for this layer (its conv state,
//! kept like a sliding window of `L` positions). Only the projections get gradients: the
//! kernel is frozen.

use super::block::{linear_forward, lora_input, mixer_output, BlockCtx, BlockState, ChunkScratch};
use super::block_backward::{chunks, grad_of, linear_backward, BackwardScratch, Grads};
use crate::kernels::num::Real;
use crate::kernels::{rmsnorm_backward, rmsnorm_forward, shortconv_backward, shortconv_forward};
use crate::lora::Target;

/// The kernel and its taps of this context's (conv) block.
fn kernel<'a, F>(ctx: &'a BlockCtx<'_, F>) -> (&'a [f32], usize) {
    let Some(conv) = ctx.weights.layers[ctx.layer].conv.as_ref() else {
        unreachable!("block {} is a conv block (checked at load)", ctx.layer)
    };
    (&conv.kernel, ctx.cfg.conv_taps)
}

/// The mixer on `x` (T, C), in place: `x ← x_mid`, kept in `st` with the input
/// projection's output. `bx` holds the convolution's input rows: rows `pos0 ..` are
/// written here, rows before are the history (a cache's conv state).
pub(crate) fn shortconv_mixer<F: Real>(
    ctx: &BlockCtx<'_, F>,
    x: &mut [F],
    bx: &mut [F],
    pos0: usize,
    st: &mut BlockState<F>,
    ch: &mut ChunkScratch<F>,
) {
    let cfg = ctx.cfg;
    let c = cfg.n_embd;
    let t = x.len() / c;
    let rows = ch.rows();
    let lw = ctx.lw();
    for (r0, r1) in chunks(t, rows) {
        let n = r1 - r0;
        let mut xn = std::mem::take(&mut ch.xn);
        rmsnorm_forward(
            &mut xn[..n * c],
            &mut ch.rstd[..n],
            &x[r0 * c..r1 * c],
            &lw.attn_norm,
            cfg.rms_eps,
        );
        let bcx = &mut st.bcx[r0 * 3 * c..r1 * 3 * c];
        let u = &mut ch.lora_u[Target::ConvIn.index()];
        linear_forward(
            ctx,
            Target::ConvIn,
            bcx,
            &xn[..n * c],
            r0,
            u,
            &mut ch.dropped,
        );
        ch.xn = xn;
        for (i, row) in bcx.chunks_exact(3 * c).enumerate() {
            let dst = &mut bx[(pos0 + r0 + i) * c..(pos0 + r0 + i + 1) * c];
            for ((d, &b), &v) in dst.iter_mut().zip(&row[..c]).zip(&row[2 * c..]) {
                *d = b * v;
            }
        }
    }
    let (kern, taps) = kernel(ctx);
    let y = &mut st.att[..t * c];
    shortconv_forward(y, &bx[..(pos0 + t) * c], kern, taps, pos0, ctx.starts);
    for (yr, row) in y.chunks_exact_mut(c).zip(st.bcx.chunks_exact(3 * c)) {
        for (v, &g) in yr.iter_mut().zip(&row[c..2 * c]) {
            *v *= g;
        }
    }
    mixer_output(ctx, Target::ConvOut, c, x, st, ch);
}

/// Backward through the mixer, after the output projection's backward left d(y) in
/// `sc.datt` (T, C): the gates, the convolution, and the input projection (adapter
/// gradients; d(x_in) added into `dx` when `need_dx`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn shortconv_mixer_backward<F: Real>(
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
    let c = cfg.n_embd;
    let t = x_in.len() / c;
    let (kern, taps) = kernel(ctx);
    let (bcx, bx) = (&st.bcx[..t * 3 * c], &st.bx[..t * c]);
    // y = c ⊙ conv(bx): d(c) = d(y) ⊙ conv(bx), d(conv) = d(y) ⊙ c.
    let conv_out = &mut sc.conv_out[..t * c];
    shortconv_forward(conv_out, bx, kern, taps, 0, ctx.starts);
    let (dy, dbcx) = (&mut sc.datt[..t * c], &mut sc.dbcx[..t * 3 * c]);
    for ((dyr, row), (co, drow)) in dy
        .chunks_exact_mut(c)
        .zip(bcx.chunks_exact(3 * c))
        .zip(conv_out.chunks_exact(c).zip(dbcx.chunks_exact_mut(3 * c)))
    {
        for i in 0..c {
            drow[c + i] = dyr[i] * co[i];
            dyr[i] *= row[c + i];
        }
    }
    // bx = b ⊙ u: through the convolution, then the gate.
    let dbx = &mut sc.dbx[..t * c];
    dbx.fill(F::ZERO);
    shortconv_backward(dbx, dy, kern, taps, ctx.starts);
    for ((dbr, row), drow) in dbx
        .chunks_exact(c)
        .zip(bcx.chunks_exact(3 * c))
        .zip(dbcx.chunks_exact_mut(3 * c))
    {
        for i in 0..c {
            drow[i] = dbr[i] * row[2 * c + i];
            drow[2 * c + i] = dbr[i] * row[i];
        }
    }
    // [b, c, u] = rmsnorm(x_in)·W_inᵀ + LoRA, per chunk.
    let lw = ctx.lw();
    for (r0, r1) in chunks(t, rows) {
        let n = r1 - r0;
        let xi = &x_in[r0 * c..r1 * c];
        let ChunkScratch {
            xn,
            rstd,
            lora_u,
            dropped,
            ..
        } = &mut *ch;
        let (xn, rstd) = (&mut xn[..n * c], &mut rstd[..n]);
        rmsnorm_forward(xn, rstd, xi, &lw.attn_norm, cfg.rms_eps);
        let u = &mut lora_u[Target::ConvIn.index()];
        lora_input(ctx, Target::ConvIn, xn, r0, u, dropped);
        let dxn = &mut sc.dxn[..n * c];
        dxn.fill(F::ZERO);
        let d = need_dx.then_some(&mut *dxn);
        let gin = grad_of(g, cfg, Target::ConvIn);
        let dyc = &sc.dbcx[r0 * 3 * c..r1 * 3 * c];
        linear_backward(ctx, Target::ConvIn, d, gin, dyc, xn, r0, u, &mut sc.lora);
        if need_dx {
            rmsnorm_backward(&mut dx[r0 * c..r1 * c], dxn, xi, &lw.attn_norm, rstd);
        }
    }
}
