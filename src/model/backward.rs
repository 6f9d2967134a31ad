//! The training pass over one sequence: forward with per-block activation checkpointing
//! (only each adapted block's input is kept), the output head and cross-entropy fused over
//! panels of the vocabulary (never the whole T × V logits: a first pass keeps each target
//! row's running log-sum-exp, a second recomputes each panel's logits, turns them into
//! `softmax − onehot` and multiplies back — each panel of the head is read twice, with all
//! target rows at once, which the int8 path needs to amortize its weight repacking), then
//! the blocks in reverse — each recomputed from its checkpoint and differentiated — down to
//! the lowest adapted block. Nothing below it is computed in backward.

use super::block::{block_backward, block_forward, BackwardScratch, BlockCtx, BlockState, Dropout};
use super::forward::Model;
use crate::error::{ModelError, Result};
use crate::kernels::loss::{lse_update_rows, softmax_from_lse_rows};
use crate::kernels::num::add_into;
use crate::kernels::{
    matmul_backward_input, matmul_forward, rmsnorm_backward, rmsnorm_forward, rope_table, Real,
};
use crate::lora::Adapter;

/// Vocabulary rows per panel of the fused head + loss.
pub const HEAD_PANEL: usize = 2048;

/// Buffers of training passes over sequences of up to `capacity` tokens.
#[derive(Debug)]
pub struct TrainWorkspace<F> {
    capacity: usize,
    /// Residual stream (T, C).
    x: Vec<F>,
    /// Input of every adapted block (T, C) — the activation checkpoints.
    checkpoints: Vec<Vec<F>>,
    /// Keys and values of the block being processed (T, kv_dim).
    k: Vec<F>,
    v: Vec<F>,
    state: BlockState<F>,
    scratch: BackwardScratch<F>,
    /// Final norm output and its reciprocal RMS.
    xf: Vec<F>,
    rstd_f: Vec<F>,
    /// Gradients of the residual stream and of the final norm's output, (T, C).
    dx: Vec<F>,
    dxf: Vec<F>,
    /// Fused head + loss: gathered target rows (T, C), one panel of their logits
    /// (T, HEAD_PANEL), the rows' gradients (T, C), running max / log-sum-exp / target logit
    /// per row (T) and the running sums (T, f64).
    rows: Vec<F>,
    logits: Vec<F>,
    drows: Vec<F>,
    row_max: Vec<F>,
    row_target: Vec<F>,
    row_sum: Vec<f64>,
    cos: Vec<F>,
    sin: Vec<F>,
}

impl<F: Real> TrainWorkspace<F> {
    /// Buffers for `capacity` tokens of `model` training `adapter`.
    pub fn new(model: &Model, adapter: &Adapter<F>, capacity: usize) -> Self {
        let cfg = &model.cfg;
        let (c, kvd, half) = (cfg.n_embd, cfg.kv_dim(), cfg.rope_dim / 2);
        let rank = adapter.pairs().map(|p| p.r).max().unwrap_or(0);
        let dropout = adapter.config.dropout > 0.0;
        let lowest = adapter.lowest_layer().unwrap_or(cfg.n_layer);
        let z = |n: usize| vec![F::ZERO; n];
        TrainWorkspace {
            capacity,
            x: z(capacity * c),
            checkpoints: (lowest..cfg.n_layer).map(|_| z(capacity * c)).collect(),
            k: z(capacity * kvd),
            v: z(capacity * kvd),
            state: BlockState::new(cfg, capacity, rank, dropout),
            scratch: BackwardScratch::new(cfg, capacity, rank, dropout),
            xf: z(capacity * c),
            rstd_f: z(capacity),
            dx: z(capacity * c),
            dxf: z(capacity * c),
            rows: z(capacity * c),
            logits: z(capacity * HEAD_PANEL.min(cfg.n_vocab)),
            drows: z(capacity * c),
            row_max: z(capacity),
            row_target: z(capacity),
            row_sum: vec![0f64; capacity],
            cos: z(capacity * half),
            sin: z(capacity * half),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// One sequence's contribution to a training step: runs `ids` forward with `adapter`, and
/// adds `loss_scale · ∂(Σ cross-entropy over target tokens)/∂(A, B)` into `grads`.
/// `targets[i]` marks token `i` as predicted from the tokens before it. Returns the sum of
/// the target tokens' cross-entropies (unscaled). `dropout_key` seeds this sequence's
/// dropout masks (ignored when the adapter has no dropout).
#[allow(clippy::too_many_arguments)]
pub fn forward_backward<F: Real>(
    model: &Model,
    adapter: &Adapter<F>,
    grads: &mut Adapter<F>,
    ids: &[u32],
    targets: &[bool],
    loss_scale: f64,
    dropout_key: u64,
    ws: &mut TrainWorkspace<F>,
) -> Result<f64> {
    let cfg = &model.cfg;
    let (t, c) = (ids.len(), cfg.n_embd);
    if t > ws.capacity {
        return Err(ModelError::ContextOverflow {
            len: t,
            context: ws.capacity,
        }
        .into());
    }
    for &id in ids {
        if id as usize >= cfg.n_vocab {
            return Err(ModelError::TokenOutOfRange {
                token: id,
                vocab: cfg.n_vocab,
            }
            .into());
        }
    }
    let Some(lowest) = adapter.lowest_layer() else {
        return Ok(0.0);
    };
    let half = cfg.rope_dim / 2;
    for (i, &id) in ids.iter().enumerate() {
        model.weights.embed(id, &mut ws.x[i * c..(i + 1) * c])?;
    }
    let positions: Vec<usize> = (0..t).collect();
    rope_table(
        &mut ws.cos[..t * half],
        &mut ws.sin[..t * half],
        &positions,
        model.inv_freq(),
    );
    let p = adapter.config.dropout;
    let dropout = |l: usize| {
        (p > 0.0).then_some(Dropout {
            p,
            key: dropout_key ^ ((l as u64) << 40),
        })
    };
    model.install(|| {
        let TrainWorkspace {
            x,
            checkpoints,
            k,
            v,
            state,
            scratch,
            xf,
            rstd_f,
            dx,
            dxf,
            rows,
            logits,
            drows,
            row_max,
            row_target,
            row_sum,
            cos,
            sin,
            ..
        } = ws;
        let (x, dx, dxf, xf) = (
            &mut x[..t * c],
            &mut dx[..t * c],
            &mut dxf[..t * c],
            &mut xf[..t * c],
        );
        let (cos, sin) = (&cos[..t * half], &sin[..t * half]);
        let ctx = |l: usize| BlockCtx {
            cfg,
            weights: &model.weights,
            layer: l,
            lora: Some(&adapter.layers[l]),
            dropout: dropout(l),
            cos,
            sin,
            precision: model.precision(),
        };
        // Forward, keeping each adapted block's input.
        for l in 0..cfg.n_layer {
            if l >= lowest {
                checkpoints[l - lowest][..t * c].copy_from_slice(x);
            }
            block_forward(&ctx(l), x, k, v, 0, state, l + 1 == cfg.n_layer);
        }
        rmsnorm_forward(
            xf,
            &mut rstd_f[..t],
            x,
            &model.weights.output_norm,
            cfg.rms_eps,
        );

        // Fused output head + cross-entropy + its backward over vocabulary panels.
        let head = model
            .weights
            .matrix(&model.weights.output)
            .with_precision(model.precision());
        let v_n = cfg.n_vocab;
        dxf.fill(F::ZERO);
        let preds: Vec<(usize, usize)> = (0..t.saturating_sub(1))
            .filter(|&i| targets.get(i + 1).copied().unwrap_or(false))
            .map(|i| (i, ids[i + 1] as usize))
            .collect();
        let n = preds.len();
        for (j, &(i, _)) in preds.iter().enumerate() {
            rows[j * c..(j + 1) * c].copy_from_slice(&xf[i * c..(i + 1) * c]);
        }
        let rows = &rows[..n * c];
        let (m, s, zt) = (&mut row_max[..n], &mut row_sum[..n], &mut row_target[..n]);
        m.fill(F::NEG_INFINITY);
        s.fill(0.0);
        let panel = HEAD_PANEL.min(v_n);
        // Pass 1: each row's log-sum-exp and target logit.
        let mut v0 = 0;
        while v0 < v_n {
            let vp = panel.min(v_n - v0);
            let lg = &mut logits[..n * vp];
            matmul_forward(lg, rows, &head.rows_range(v0, v0 + vp));
            lse_update_rows(lg, n, vp, vp, m, s);
            for (j, &(_, tgt)) in preds.iter().enumerate() {
                if (v0..v0 + vp).contains(&tgt) {
                    zt[j] = lg[j * vp + tgt - v0];
                }
            }
            v0 += vp;
        }
        let mut loss = 0f64;
        for j in 0..n {
            let lse = m[j].to_f64() + s[j].ln();
            loss += lse - zt[j].to_f64();
            m[j] = F::from_f64(lse);
        }
        let lse = &*m;
        // Pass 2: the same logits again, softmax − onehot, back through the head.
        let dr = &mut drows[..n * c];
        dr.fill(F::ZERO);
        let mut v0 = 0;
        while v0 < v_n {
            let vp = panel.min(v_n - v0);
            let sub = head.rows_range(v0, v0 + vp);
            let lg = &mut logits[..n * vp];
            matmul_forward(lg, rows, &sub);
            softmax_from_lse_rows(lg, n, vp, vp, lse, loss_scale);
            for (j, &(_, tgt)) in preds.iter().enumerate() {
                if (v0..v0 + vp).contains(&tgt) {
                    lg[j * vp + tgt - v0] -= F::from_f64(loss_scale);
                }
            }
            matmul_backward_input(dr, lg, &sub);
            v0 += vp;
        }
        for (j, &(i, _)) in preds.iter().enumerate() {
            add_into(&mut dxf[i * c..(i + 1) * c], &dr[j * c..(j + 1) * c]);
        }
        dx.fill(F::ZERO);
        rmsnorm_backward(dx, dxf, x, &model.weights.output_norm, &rstd_f[..t]);

        // Blocks in reverse; the top block's activations are still in `state`.
        for l in (lowest..cfg.n_layer).rev() {
            let x_in = &checkpoints[l - lowest][..t * c];
            if l + 1 != cfg.n_layer {
                x.copy_from_slice(x_in);
                block_forward(&ctx(l), x, k, v, 0, state, true);
            }
            let kvd = cfg.kv_dim();
            block_backward(
                &ctx(l),
                Some(&mut grads.layers[l]),
                dx,
                x_in,
                &k[..t * kvd],
                &v[..t * kvd],
                state,
                scratch,
                l > lowest,
            );
        }
        Ok(loss)
    })
}
