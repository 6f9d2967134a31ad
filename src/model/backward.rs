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
    block_attention, block_forward, block_forward_kept, BlockCtx, BlockState, ChunkScratch, Dropout,
};
use super::block_backward::{block_backward, BackwardScratch};
use super::config::ModelConfig;
use super::forward::Model;
use crate::error::{Error, ModelError, Result};
use crate::kernels::loss::lse_exp_update_rows;
use crate::kernels::{
    matmul_backward_input, matmul_forward, rmsnorm_backward, rmsnorm_forward, rope_table, Real,
};
use crate::lora::Adapter;

/// Target rows formed at once by the fused head + loss, unless a plan says fewer.
pub const LOSS_ROWS: usize = 256;
/// Vocabulary rows per panel of the fused head + loss: the logits that exist at once are
/// (loss rows) × HEAD_PANEL, whatever the vocabulary.
pub const HEAD_PANEL: usize = 2048;

/// How the per-block checkpoints (saved activations) are stored. `F32` is exact; the
/// halves are the one lossy memory saving, used only when asked or when a plan needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SavedDtype {
    F32,
    F16,
    BF16,
}

impl SavedDtype {
    pub fn bytes(self) -> usize {
        match self {
            SavedDtype::F32 => 4,
            SavedDtype::F16 | SavedDtype::BF16 => 2,
        }
    }

    pub fn parse(s: &str) -> Result<SavedDtype> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(SavedDtype::F32),
            "f16" => Ok(SavedDtype::F16),
            "bf16" => Ok(SavedDtype::BF16),
            other => Err(Error::InvalidArgument(format!(
                "saved-activation type {other:?}: expected f32, f16 or bf16"
            ))),
        }
    }
}

/// Shape of a training workspace: the longest sequence, the token chunk of the MLP and
/// projections, how checkpoints are stored, how many blocks share one checkpoint, and the
/// rows of logits formed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkspaceShape {
    pub capacity: usize,
    pub chunk: usize,
    pub saved: SavedDtype,
    /// Blocks per checkpoint segment: 1 keeps every adapted block's input; k keeps every
    /// k-th and recomputes the others inside backward (√L-style, one more forward pass).
    pub segment: usize,
    /// Target rows formed at once in the fused head + loss (their logits exist for one
    /// vocabulary panel at a time).
    pub loss_rows: usize,
    /// How many of the top adapted blocks keep their activations (input, attention state,
    /// keys, values and the MLP's gate and up over all T tokens), so backward recomputes
    /// nothing of theirs: 0 for none, `ALL_BLOCKS` (or any number ≥ the adapted blocks)
    /// for every one — the fastest shape and the largest. `chunk`, `segment` and `saved`
    /// apply to the other blocks only.
    pub kept: usize,
}

/// [`WorkspaceShape::kept`] for every adapted block.
pub const ALL_BLOCKS: usize = usize::MAX;

impl WorkspaceShape {
    /// Unchunked, exact storage, a checkpoint per block.
    pub fn plain(capacity: usize) -> Self {
        WorkspaceShape {
            capacity,
            chunk: capacity,
            saved: SavedDtype::F32,
            segment: 1,
            loss_rows: LOSS_ROWS,
            kept: 0,
        }
    }

    /// `plain`, keeping the activations of the top `blocks` adapted blocks ([`ALL_BLOCKS`]:
    /// every one, then nothing is recomputed in backward).
    pub fn keeping(capacity: usize, blocks: usize) -> Self {
        WorkspaceShape {
            kept: blocks,
            ..WorkspaceShape::plain(capacity)
        }
    }

    /// How many of `adapted` blocks keep their activations, and how many are checkpointed.
    pub fn split(&self, adapted: usize) -> (usize, usize) {
        let kept = self.kept.min(adapted);
        (kept, adapted - kept)
    }

    /// `plain` with another token chunk and checkpoint storage.
    pub fn chunked(capacity: usize, chunk: usize, saved: SavedDtype) -> Self {
        WorkspaceShape {
            chunk,
            saved,
            ..WorkspaceShape::plain(capacity)
        }
    }
}

/// One block's saved input.
#[derive(Debug)]
enum Saved<F> {
    Full(Vec<F>),
    Half(Vec<u16>),
}

/// One adapted block's activations kept from the forward pass for its backward.
#[derive(Debug)]
struct Kept<F> {
    /// Block input, (T, C).
    x_in: Vec<F>,
    state: BlockState<F>,
    /// Keys and values, (T, kv_dim).
    k: Vec<F>,
    v: Vec<F>,
    /// The MLP's gate and up projections, (T, n_ff).
    gate: Vec<F>,
    up: Vec<F>,
}

impl<F: Real> Kept<F> {
    fn new(cfg: &ModelConfig, t: usize) -> Self {
        let z = |n: usize| vec![F::ZERO; t * n];
        Kept {
            x_in: z(cfg.n_embd),
            state: BlockState::new(cfg, t),
            k: z(cfg.kv_dim()),
            v: z(cfg.kv_dim()),
            gate: z(cfg.n_ff),
            up: z(cfg.n_ff),
        }
    }

    /// Bytes of one f32 block's kept activations, its struct included.
    fn bytes_for(cfg: &ModelConfig, t: usize) -> usize {
        4 * t * (cfg.n_embd + 2 * cfg.kv_dim() + 2 * cfg.n_ff)
            + BlockState::<f32>::bytes_for(cfg, t)
            + std::mem::size_of::<Kept<f32>>()
    }
}

/// Buffers of training passes, sized once.
#[derive(Debug)]
pub struct TrainWorkspace<F> {
    shape: WorkspaceShape,
    /// Residual stream and a restored block input, (T, C).
    x: Vec<F>,
    x_in: Vec<F>,
    /// Input of every `segment`-th adapted block — the activation checkpoints.
    checkpoints: Vec<Saved<F>>,
    /// Inputs of the other blocks of the segment being differentiated, (T, C) each.
    segment_inputs: Vec<Saved<F>>,
    /// The activations of the top `shape.kept` adapted blocks, lowest first.
    kept: Vec<Kept<F>>,
    /// Keys and values of the block being processed, (T, kv_dim).
    k: Vec<F>,
    v: Vec<F>,
    state: BlockState<F>,
    chunk: ChunkScratch<F>,
    scratch: BackwardScratch<F>,
    /// Final norm output and its reciprocal RMS.
    /// Reciprocal RMS of the final norm for the target rows of one loss group.
    rstd_rows: Vec<F>,
    /// Gradients of the residual stream and of the final norm's output, (T, C).
    dx: Vec<F>,
    /// Fused head + loss: gathered hidden rows, one vocabulary panel of their logits, the
    /// rows' gradients; running max (then log-sum-exp), sum and target logit per row.
    rows: Vec<F>,
    logits: Vec<F>,
    drows: Vec<F>,
    row_max: Vec<F>,
    row_sum: Vec<f64>,
    row_target: Vec<F>,
    row_corr: Vec<F>,
    cos: Vec<F>,
    sin: Vec<F>,
    positions: Vec<usize>,
    /// Per token, the first position of its document (packed sequences).
    starts: Vec<usize>,
    preds: Vec<(usize, usize)>,
}

/// What sizes a training workspace besides its shape: the adapter's largest rank, whether
/// it uses dropout, and how many blocks keep a checkpoint (the adapted block and all above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterGeometry {
    pub max_rank: usize,
    pub dropout: bool,
    pub checkpoints: usize,
}

impl AdapterGeometry {
    pub fn of<F: Real>(cfg: &ModelConfig, adapter: &Adapter<F>) -> Self {
        AdapterGeometry {
            max_rank: adapter.pairs().map(|p| p.r).max().unwrap_or(0),
            dropout: adapter.config.dropout > 0.0,
            checkpoints: cfg.n_layer - adapter.lowest_layer().unwrap_or(cfg.n_layer),
        }
    }
}

/// Bytes an f32 workspace of this shape holds (what [`TrainWorkspace::with_shape`] allocates).
pub fn workspace_bytes(cfg: &ModelConfig, g: AdapterGeometry, shape: WorkspaceShape) -> usize {
    let (c, kvd, half) = (cfg.n_embd, cfg.kv_dim(), cfg.rope_dim / 2);
    let f = 4;
    let (t, ch) = (
        shape.capacity.max(1),
        shape.chunk.clamp(1, shape.capacity.max(1)),
    );
    let seg = shape.segment.max(1);
    let (kept, n_ckpt) = shape.split(g.checkpoints);
    let (stored, others) = (n_ckpt.div_ceil(seg), seg.min(n_ckpt.max(1)) - 1);
    let rows = shape.loss_rows.clamp(1, t);
    f * t * c * (1 + usize::from(n_ckpt > 0)) // x, and x_in for checkpointed blocks
        + stored * (t * c * shape.saved.bytes() + std::mem::size_of::<Saved<f32>>())
        + others * (t * c * shape.saved.bytes() + std::mem::size_of::<Saved<f32>>())
        + kept * Kept::<f32>::bytes_for(cfg, t)
        + f * t * 2 * kvd
        + BlockState::<f32>::bytes_for(cfg, t)
        + ChunkScratch::<f32>::bytes_for(cfg, ch, g.max_rank, g.dropout)
        + BackwardScratch::<f32>::bytes_for(cfg, t, ch, g.max_rank, g.dropout)
        + f * (t * (c + 2 * half) + rows)
        + f * rows * (2 * c + HEAD_PANEL.min(cfg.n_vocab) + 3)
        + 8 * rows
        + t * (2 * std::mem::size_of::<usize>() + std::mem::size_of::<(usize, usize)>())
}

impl<F: Real> TrainWorkspace<F> {
    /// Plain buffers for sequences of up to `capacity` tokens of `model` training `adapter`.
    pub fn new(model: &Model, adapter: &Adapter<F>, capacity: usize) -> Self {
        TrainWorkspace::with_shape(model, adapter, WorkspaceShape::plain(capacity))
    }

    /// Buffers of the given shape (see `memory::Plan`).
    pub fn with_shape(model: &Model, adapter: &Adapter<F>, shape: WorkspaceShape) -> Self {
        let cfg = &model.cfg;
        let (c, kvd, half) = (cfg.n_embd, cfg.kv_dim(), cfg.rope_dim / 2);
        let capacity = shape.capacity.max(1);
        let chunk = shape.chunk.clamp(1, capacity);
        let seg = shape.segment.max(1);
        let rows = shape.loss_rows.clamp(1, capacity);
        let rank = adapter.pairs().map(|p| p.r).max().unwrap_or(0);
        let dropout = adapter.config.dropout > 0.0;
        let lowest = adapter.lowest_layer().unwrap_or(cfg.n_layer);
        let z = |n: usize| vec![F::ZERO; n];
        let saved = |_| match shape.saved {
            SavedDtype::F32 => Saved::Full(z(capacity * c)),
            _ => Saved::Half(vec![0u16; capacity * c]),
        };
        let (n_kept, n_ckpt) = shape.split(cfg.n_layer - lowest);
        TrainWorkspace {
            shape: WorkspaceShape {
                capacity,
                chunk,
                saved: shape.saved,
                segment: seg,
                loss_rows: rows,
                kept: n_kept,
            },
            x: z(capacity * c),
            x_in: z(if n_ckpt > 0 { capacity * c } else { 0 }),
            checkpoints: (0..n_ckpt.div_ceil(seg)).map(saved).collect(),
            segment_inputs: (1..seg.min(n_ckpt.max(1))).map(saved).collect(),
            kept: (0..n_kept).map(|_| Kept::new(cfg, capacity)).collect(),
            k: z(capacity * kvd),
            v: z(capacity * kvd),
            state: BlockState::new(cfg, capacity),
            chunk: ChunkScratch::new(cfg, chunk, rank, dropout),
            scratch: BackwardScratch::new(cfg, capacity, chunk, rank, dropout),
            rstd_rows: z(rows),
            dx: z(capacity * c),
            rows: z(rows * c),
            logits: z(rows * HEAD_PANEL.min(cfg.n_vocab)),
            drows: z(rows * c),
            row_max: z(rows),
            row_sum: vec![0f64; rows],
            row_target: z(rows),
            row_corr: z(rows),
            cos: z(capacity * half),
            sin: z(capacity * half),
            positions: Vec::with_capacity(capacity),
            starts: Vec::with_capacity(capacity),
            preds: Vec::with_capacity(capacity),
        }
    }

    pub fn capacity(&self) -> usize {
        self.shape.capacity
    }

    pub fn shape(&self) -> WorkspaceShape {
        self.shape
    }
}

fn save<F: Real>(dst: &mut Saved<F>, x: &[F], dtype: SavedDtype) {
    match dst {
        Saved::Full(v) => v[..x.len()].copy_from_slice(x),
        Saved::Half(v) => {
            for (d, &s) in v.iter_mut().zip(x) {
                *d = match dtype {
                    SavedDtype::BF16 => half::bf16::from_f64(s.to_f64()).to_bits(),
                    _ => half::f16::from_f64(s.to_f64()).to_bits(),
                };
            }
        }
    }
}

fn restore<F: Real>(src: &Saved<F>, x: &mut [F], dtype: SavedDtype) {
    match src {
        Saved::Full(v) => x.copy_from_slice(&v[..x.len()]),
        Saved::Half(v) => {
            for (d, &s) in x.iter_mut().zip(v) {
                *d = F::from_f64(match dtype {
                    SavedDtype::BF16 => half::bf16::from_bits(s).to_f64(),
                    _ => half::f16::from_bits(s).to_f64(),
                });
            }
        }
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
    if t > ws.shape.capacity {
        return Err(ModelError::ContextOverflow {
            len: t,
            context: ws.shape.capacity,
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
    ws.positions.clear();
    ws.starts.clear();
    let mut next = doc_starts.iter().map(|&d| d as usize).peekable();
    let mut start = 0;
    for i in 0..t {
        if next.peek() == Some(&i) {
            start = i;
            next.next();
        }
        ws.positions.push(i - start);
        ws.starts.push(start);
    }
    let packed = !doc_starts.is_empty();
    rope_table(
        &mut ws.cos[..t * half],
        &mut ws.sin[..t * half],
        &ws.positions,
        model.inv_freq(),
    );
    ws.preds.clear();
    ws.preds.extend(
        (0..t.saturating_sub(1))
            .filter(|&i| targets.get(i + 1).copied().unwrap_or(false))
            .map(|i| (i, ids[i + 1] as usize)),
    );
    let p = adapter.config.dropout;
    let dropout = |l: usize| {
        (p > 0.0).then_some(Dropout {
            p,
            key: dropout_key ^ ((l as u64) << 40),
        })
    };
    let saved_dtype = ws.shape.saved;
    let seg = ws.shape.segment.max(1);
    // Blocks from `keep_from` up keep their activations; `lowest .. keep_from` are
    // checkpointed.
    let keep_from = (cfg.n_layer - ws.kept.len()).max(lowest);
    let loss_rows = ws.shape.loss_rows.max(1);
    model.install(|| {
        let TrainWorkspace {
            x,
            x_in,
            checkpoints,
            segment_inputs,
            kept,
            k,
            v,
            state,
            chunk,
            scratch,
            rstd_rows,
            dx,
            rows,
            logits,
            drows,
            row_max,
            row_sum,
            row_target,
            row_corr,
            cos,
            sin,
            preds,
            starts,
            ..
        } = ws;
        let x_in = &mut x_in[..if keep_from > lowest { t * c } else { 0 }];
        let (x, dx) = (&mut x[..t * c], &mut dx[..t * c]);
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
            starts: packed.then_some(&starts[..t]),
        };
        // Forward, keeping the input of every `seg`-th checkpointed block and the kept
        // blocks' activations. The top checkpointed block keeps its attention state (and
        // its keys and values stay in `k`, `v`): its backward need not recompute them.
        for l in 0..cfg.n_layer {
            if l >= keep_from {
                let kp = &mut kept[l - keep_from];
                kp.x_in[..t * c].copy_from_slice(x);
                let ff = cfg.n_ff;
                block_forward_kept(
                    &ctx(l),
                    x,
                    &mut kp.k,
                    &mut kp.v,
                    &mut kp.state,
                    chunk,
                    &mut kp.gate[..t * ff],
                    &mut kp.up[..t * ff],
                );
                continue;
            }
            if l >= lowest && (l - lowest) % seg == 0 {
                save(&mut checkpoints[(l - lowest) / seg], x, saved_dtype);
            }
            block_forward(&ctx(l), x, k, v, 0, state, chunk, l + 1 == keep_from);
        }

        // Fused output head + cross-entropy + its backward, `loss_rows` target rows at a
        // time. Only target rows go through the final norm, the head and the loss; their
        // gradients flow straight back into d(x). Per group, the head is read once, in
        // panels of HEAD_PANEL vocabulary rows, with an online softmax (as flash attention
        // does over keys): each panel's logits become `e^(z − m)` with each row's running
        // max `m`, which are multiplied back through the panel into `u` after `u` is scaled
        // by `e^(m_old − m)`. At the end `u / Σ e^(z − m)` is `Σ_v softmax_v · W_v`, and
        // the target's row of W is subtracted: `scale · (softmax − onehot) · W`.
        let head = model
            .weights
            .matrix(&model.weights.output)
            .with_precision(model.precision());
        let v_n = cfg.n_vocab;
        let panel = HEAD_PANEL.min(v_n).max(1);
        dx.fill(F::ZERO);
        let norm_w = &model.weights.output_norm;
        let mut loss = 0f64;
        for group in preds.chunks(loss_rows) {
            let n = group.len();
            for (j, &(i, _)) in group.iter().enumerate() {
                let (xr, row) = (&x[i * c..(i + 1) * c], &mut rows[j * c..(j + 1) * c]);
                rmsnorm_forward(row, &mut rstd_rows[j..j + 1], xr, norm_w, cfg.rms_eps);
            }
            let normed = &rows[..n * c];
            let (m, s, zt) = (&mut row_max[..n], &mut row_sum[..n], &mut row_target[..n]);
            let corr = &mut row_corr[..n];
            m.fill(F::NEG_INFINITY);
            s.fill(0.0);
            let u = &mut drows[..n * c];
            u.fill(F::ZERO);
            let mut v0 = 0;
            while v0 < v_n {
                let vp = panel.min(v_n - v0);
                let sub = head.rows_range(v0, v0 + vp);
                let lg = &mut logits[..n * vp];
                matmul_forward(lg, normed, &sub);
                for (j, &(_, tgt)) in group.iter().enumerate() {
                    if (v0..v0 + vp).contains(&tgt) {
                        zt[j] = lg[j * vp + tgt - v0];
                    }
                }
                lse_exp_update_rows(lg, (n, vp, vp), m, s, corr, model.precision());
                if v0 > 0 {
                    for (ur, &k) in u.chunks_exact_mut(c).zip(corr.iter()) {
                        if k != F::ONE {
                            ur.iter_mut().for_each(|x| *x *= k);
                        }
                    }
                }
                matmul_backward_input(u, lg, &sub);
                v0 += vp;
            }
            let dr = u;
            for (j, &(_, tgt)) in group.iter().enumerate() {
                loss += m[j].to_f64() + s[j].ln() - zt[j].to_f64();
                // scale · (u / s − W[target]); the target's row of W goes where this row's
                // normed input was (no longer needed).
                let wt = &mut rows[j * c..(j + 1) * c];
                head.dequantize_rows(tgt, wt);
                let k = F::from_f64(loss_scale / s[j]);
                let ls = F::from_f64(loss_scale);
                for (d, &w) in dr[j * c..(j + 1) * c].iter_mut().zip(wt.iter()) {
                    *d = *d * k - ls * w;
                }
            }
            let dr = &*dr;
            for (j, &(i, _)) in group.iter().enumerate() {
                let (dxr, xr) = (&mut dx[i * c..(i + 1) * c], &x[i * c..(i + 1) * c]);
                rmsnorm_backward(
                    dxr,
                    &dr[j * c..(j + 1) * c],
                    xr,
                    norm_w,
                    &rstd_rows[j..j + 1],
                );
            }
        }

        // Blocks in reverse. The kept blocks first: everything their backward needs was
        // kept, nothing is recomputed.
        let kvd = cfg.kv_dim();
        let ff = cfg.n_ff;
        for l in (keep_from..cfg.n_layer).rev() {
            let kp = &kept[l - keep_from];
            block_backward(
                &ctx(l),
                Some(&mut grads.layers[l]),
                dx,
                &kp.x_in[..t * c],
                &kp.k[..t * kvd],
                &kp.v[..t * kvd],
                &kp.state,
                chunk,
                scratch,
                l > lowest,
                Some((&kp.gate[..t * ff], &kp.up[..t * ff])),
            );
        }
        // Then the checkpointed blocks, segment by segment. A segment's first block input is
        // its checkpoint; the others are recomputed (full block forwards) into
        // `segment_inputs`. Each block's attention half is recomputed from its input (the
        // MLP is recomputed chunk by chunk inside block_backward) — except the top one's
        // when segments are single blocks: its state is still in `state` from the forward.
        let n_seg = (keep_from - lowest).div_ceil(seg);
        for si in (0..n_seg).rev() {
            let (s0, s1) = (lowest + si * seg, (lowest + (si + 1) * seg).min(keep_from));
            restore(&checkpoints[si], x_in, saved_dtype);
            if s1 - s0 > 1 {
                x.copy_from_slice(x_in);
                for l in s0..s1 - 1 {
                    block_forward(&ctx(l), x, k, v, 0, state, chunk, false);
                    save(&mut segment_inputs[l - s0], x, saved_dtype);
                }
            }
            for l in (s0..s1).rev() {
                if l > s0 {
                    restore(&segment_inputs[l - s0 - 1], x_in, saved_dtype);
                } else if s1 - s0 > 1 {
                    restore(&checkpoints[si], x_in, saved_dtype);
                }
                let x_l: &[F] = x_in;
                if seg > 1 || l + 1 != keep_from {
                    x.copy_from_slice(x_l);
                    block_attention(&ctx(l), x, k, v, 0, state, chunk, true);
                }
                block_backward(
                    &ctx(l),
                    Some(&mut grads.layers[l]),
                    dx,
                    x_l,
                    &k[..t * kvd],
                    &v[..t * kvd],
                    state,
                    chunk,
                    scratch,
                    l > lowest,
                    None,
                );
            }
        }
        Ok(loss)
    })
}
