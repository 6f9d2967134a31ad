//! The training pass over one sequence: forward with per-block activation checkpointing
//! (only each adapted block's input is kept, optionally as f16/bf16), the output head and
//! cross-entropy fused and chunked over target rows (never the whole T × V logits), then
//! the blocks in reverse — each block's attention half recomputed from its checkpoint, its
//! MLP and projections recomputed chunk by chunk inside the backward — down to the lowest
//! adapted block. Nothing below it is computed in backward. When the memory plan has room
//! (`WorkspaceShape::kept`), the top adapted blocks (all of them, or as many as fit) instead
//! keep their input, attention state, keys, values and the MLP's gate and up, and backward
//! recomputes no projection of theirs: each kept block saves one block forward per step.

use super::block::{
    block_attention, block_forward, block_forward_kept, BlockCtx, Dropout, KeptMlp,
};
use super::block_backward::{block_backward, KeptMlpRef};
use super::config::{LayerRope, ModelConfig};
use super::forward::Model;
use super::head::head_loss_backward;
use super::workspace::{BlockBuffers, SequenceTables};
use crate::error::{Error, ModelError, Result};
use crate::kernels::{rope_table, scale_rope_table, Real};
use crate::lora::Adapter;

pub use super::head::{HEAD_PANEL, LOSS_ROWS};
pub use super::workspace::{
    workspace_bytes, AdapterGeometry, SavedDtype, TrainWorkspace, WorkspaceShape, ALL_BLOCKS,
};

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
    forward_backward_packed(
        model,
        adapter,
        grads,
        ids,
        targets,
        &[],
        loss_scale,
        dropout_key,
        ws,
    )
}

/// [`forward_backward`] over a packed sequence: documents begin at 0 and at each of
/// `doc_starts` (increasing). Each token attends only within its document and its RoPE
/// position counts from its document's start, so every document gets the loss and the
/// gradient it would get alone (document masking).
#[allow(clippy::too_many_arguments)]
pub fn forward_backward_packed<F: Real>(
    model: &Model,
    adapter: &Adapter<F>,
    grads: &mut Adapter<F>,
    ids: &[u32],
    targets: &[bool],
    doc_starts: &[u32],
    loss_scale: f64,
    dropout_key: u64,
    ws: &mut TrainWorkspace<F>,
) -> Result<f64> {
    let cfg = &model.cfg;
    let (t, c) = (ids.len(), cfg.n_embd);
    check_sequence(cfg, ids, doc_starts, ws.shape.capacity)?;
    let Some(lowest) = adapter.lowest_layer() else {
        return Ok(0.0);
    };
    let TrainWorkspace {
        shape,
        seq,
        blocks,
        head,
    } = ws;
    for (i, &id) in ids.iter().enumerate() {
        model.embed(id, &mut blocks.x[i * c..(i + 1) * c])?;
    }
    seq.fill(model, ids, targets, doc_starts, shape.capacity);
    let pass = Pass {
        model,
        adapter,
        seq,
        t,
        lowest,
        // Blocks from `keep_from` up keep their activations; `lowest .. keep_from` are
        // checkpointed.
        keep_from: (cfg.n_layer - blocks.kept.len()).max(lowest),
        dropout_key,
        packed: !doc_starts.is_empty(),
        shape: *shape,
    };
    model.install(|| {
        pass.forward(blocks);
        let (x, dx) = (&blocks.x[..t * c], &mut blocks.dx[..t * c]);
        let loss = head_loss_backward(model, &seq.preds, x, dx, head, shape.loss_rows, loss_scale);
        pass.backward_kept(blocks, grads);
        pass.backward_checkpointed(blocks, grads);
        Ok(loss)
    })
}

/// Checks the tokens against the vocabulary, the length against the workspace, and the
/// document starts of a packed sequence.
fn check_sequence(
    cfg: &ModelConfig,
    ids: &[u32],
    doc_starts: &[u32],
    capacity: usize,
) -> Result<()> {
    let t = ids.len();
    if t > capacity {
        return Err(ModelError::ContextOverflow {
            len: t,
            context: capacity,
        }
        .into());
    }
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= cfg.n_vocab) {
        return Err(ModelError::TokenOutOfRange {
            token: id,
            vocab: cfg.n_vocab,
        }
        .into());
    }
    if doc_starts
        .iter()
        .zip(doc_starts.iter().skip(1))
        .any(|(a, b)| a >= b)
        || doc_starts.iter().any(|&d| d == 0 || d as usize >= t.max(1))
    {
        return Err(Error::InvalidArgument(format!(
            "packed sequence of {t} tokens: document starts {doc_starts:?} must increase within 1..{t}"
        )));
    }
    Ok(())
}

impl<F: Real> SequenceTables<F> {
    /// Positions (counted from each document's start), document starts, sliding-window
    /// starts, RoPE angles (per table, `capacity` rows apart) and the predicted rows of one
    /// sequence.
    fn fill(
        &mut self,
        model: &Model,
        ids: &[u32],
        targets: &[bool],
        doc_starts: &[u32],
        capacity: usize,
    ) {
        let t = ids.len();
        let half = model.cfg.rope_dim / 2;
        self.positions.clear();
        self.starts.clear();
        let mut next = doc_starts.iter().map(|&d| d as usize).peekable();
        let mut start = 0;
        for i in 0..t {
            if next.peek() == Some(&i) {
                start = i;
                next.next();
            }
            self.positions.push(i - start);
            self.starts.push(start);
        }
        if let Some(w) = model.cfg.window {
            self.window_starts.clear();
            let first = |(i, &s): (usize, &usize)| s.max((i + 1).saturating_sub(w));
            self.window_starts
                .extend(self.starts.iter().enumerate().map(first));
        }
        let table = capacity * half;
        for (j, inv) in model.inv_freqs().iter().enumerate() {
            let (c, s) = (
                &mut self.cos[j * table..j * table + t * half],
                &mut self.sin[j * table..j * table + t * half],
            );
            rope_table(c, s, &self.positions, inv);
            if j == 0 {
                scale_rope_table(c, s, model.cfg.rope_attn_factor);
            }
        }
        self.preds.clear();
        self.preds.extend(
            (0..t.saturating_sub(1))
                .filter(|&i| targets.get(i + 1).copied().unwrap_or(false))
                .map(|i| (i, ids[i + 1] as usize)),
        );
    }
}

/// What every phase of one sequence's pass reads: the model, the adapter, the sequence's
/// tables, and which blocks are kept, checkpointed or not differentiated.
struct Pass<'a, F> {
    model: &'a Model,
    adapter: &'a Adapter<F>,
    seq: &'a SequenceTables<F>,
    t: usize,
    /// The lowest adapted block: nothing below it is differentiated.
    lowest: usize,
    /// The lowest block that keeps its activations.
    keep_from: usize,
    dropout_key: u64,
    packed: bool,
    shape: super::workspace::WorkspaceShape,
}

impl<F: Real> Pass<'_, F> {
    fn ctx(&self, l: usize) -> BlockCtx<'_, F> {
        let cfg = &self.model.cfg;
        let (t, half) = (self.t, cfg.rope_dim / 2);
        let p = self.adapter.config.dropout;
        let table = self.shape.capacity * half;
        let rope = match cfg.layers[l].rope {
            LayerRope::None => None,
            r => {
                let j = usize::from(r == LayerRope::Local) * table;
                Some((
                    &self.seq.cos[j..j + t * half],
                    &self.seq.sin[j..j + t * half],
                ))
            }
        };
        let starts = if cfg.window_of(l).is_some() {
            Some(&self.seq.window_starts[..t])
        } else {
            self.packed.then_some(&self.seq.starts[..t])
        };
        BlockCtx {
            cfg,
            weights: &self.model.weights,
            layer: l,
            lora: Some(&self.adapter.layers[l]),
            dropout: (p > 0.0).then_some(Dropout {
                p,
                key: self.dropout_key ^ ((l as u64) << 40),
            }),
            rope,
            precision: self.model.precision(),
            starts,
        }
    }

    /// Forward through every block, keeping the input of every `segment`-th checkpointed
    /// block and the kept blocks' activations. The top checkpointed block keeps its
    /// attention state (and its keys and values stay in `k`, `v`): its backward need not
    /// recompute them.
    fn forward(&self, b: &mut BlockBuffers<F>) {
        let cfg = &self.model.cfg;
        let (t, c, ff) = (self.t, cfg.n_embd, cfg.n_ff);
        let (lowest, keep_from) = (self.lowest, self.keep_from);
        let seg = self.shape.segment.max(1);
        let x = &mut b.x[..t * c];
        for l in 0..cfg.n_layer {
            if l >= keep_from {
                let kp = &mut b.kept[l - keep_from];
                kp.x_in[..t * c].copy_from_slice(x);
                let down_len = if kp.down.is_empty() { 0 } else { t * c };
                let keep = KeptMlp {
                    gate: &mut kp.gate[..t * ff],
                    up: &mut kp.up[..t * ff],
                    down: &mut kp.down[..down_len],
                };
                let (k, v) = (&mut kp.k, &mut kp.v);
                block_forward_kept(&self.ctx(l), x, k, v, &mut kp.state, &mut b.chunk, keep);
                continue;
            }
            if l >= lowest && (l - lowest) % seg == 0 {
                b.checkpoints[(l - lowest) / seg].save(x, self.shape.saved);
            }
            let keep_state = l + 1 == keep_from;
            let (k, v) = (&mut b.k, &mut b.v);
            block_forward(
                &self.ctx(l),
                x,
                k,
                v,
                0,
                &mut b.state,
                &mut b.chunk,
                keep_state,
            );
        }
    }

    /// Backward through the kept blocks, top first: everything their backward needs was
    /// kept, nothing is recomputed.
    fn backward_kept(&self, b: &mut BlockBuffers<F>, grads: &mut Adapter<F>) {
        let cfg = &self.model.cfg;
        let (t, c, kvd, ff) = (self.t, cfg.n_embd, cfg.kv_dim(), cfg.n_ff);
        for l in (self.keep_from..cfg.n_layer).rev() {
            let kp = &b.kept[l - self.keep_from];
            block_backward(
                &self.ctx(l),
                Some(&mut grads.layers[l]),
                &mut b.dx[..t * c],
                &kp.x_in[..t * c],
                &kp.k[..t * kvd],
                &kp.v[..t * kvd],
                &kp.state,
                &mut b.chunk,
                &mut b.scratch,
                l > self.lowest,
                Some(KeptMlpRef {
                    gate: &kp.gate[..t * ff],
                    up: &kp.up[..t * ff],
                    down: &kp.down[..if kp.down.is_empty() { 0 } else { t * c }],
                }),
            );
        }
    }

    /// Backward through the checkpointed blocks, segment by segment. A segment's first
    /// block input is its checkpoint; the others are recomputed (full block forwards) into
    /// `segment_inputs`. Each block's attention half is recomputed from its input (the MLP
    /// is recomputed chunk by chunk inside block_backward) — except the top one's when
    /// segments are single blocks: its state is still in `state` from the forward.
    fn backward_checkpointed(&self, b: &mut BlockBuffers<F>, grads: &mut Adapter<F>) {
        let cfg = &self.model.cfg;
        let (t, c, kvd) = (self.t, cfg.n_embd, cfg.kv_dim());
        let (lowest, keep_from) = (self.lowest, self.keep_from);
        let (seg, saved) = (self.shape.segment.max(1), self.shape.saved);
        let x_in = &mut b.x_in[..if keep_from > lowest { t * c } else { 0 }];
        let (x, dx) = (&mut b.x[..t * c], &mut b.dx[..t * c]);
        let (k, v, state, chunk) = (&mut b.k, &mut b.v, &mut b.state, &mut b.chunk);
        let n_seg = (keep_from - lowest).div_ceil(seg);
        for si in (0..n_seg).rev() {
            let (s0, s1) = (lowest + si * seg, (lowest + (si + 1) * seg).min(keep_from));
            b.checkpoints[si].restore(x_in, saved);
            if s1 - s0 > 1 {
                x.copy_from_slice(x_in);
                for l in s0..s1 - 1 {
                    block_forward(&self.ctx(l), x, k, v, 0, state, chunk, false);
                    b.segment_inputs[l - s0].save(x, saved);
                }
            }
            for l in (s0..s1).rev() {
                if l > s0 {
                    b.segment_inputs[l - s0 - 1].restore(x_in, saved);
                } else if s1 - s0 > 1 {
                    b.checkpoints[si].restore(x_in, saved);
                }
                let x_l: &[F] = x_in;
                if seg > 1 || l + 1 != keep_from {
                    x.copy_from_slice(x_l);
                    block_attention(&self.ctx(l), x, k, v, 0, state, chunk, true);
                }
                block_backward(
                    &self.ctx(l),
                    Some(&mut grads.layers[l]),
                    dx,
                    x_l,
                    &k[..t * kvd],
                    &v[..t * kvd],
                    state,
                    chunk,
                    &mut b.scratch,
                    l > lowest,
                    None,
                );
            }
        }
    }
}
