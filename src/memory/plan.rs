//! The memory plan: before the first step, a size table of everything the trainer (or the
//! generator) will hold, and the choices that make it fit a budget — token-chunked
//! recompute of projections and MLP, f16/bf16 storage of the saved activations, and, when
//! the user did not fix it, the sequence length. A plan that cannot fit is refused up
//! front, naming the smallest budget that would and the biggest items.
//!
//! Always in effect (they cost nothing in speed): per-block activation checkpointing,
//! flash-style attention (O(T) memory), and the fused, chunked output head + loss.
//!
//! What the budget covers: everything pocketlora allocates — adapter, gradients, AdamW
//! moments, activations, workspaces, the kernels' per-thread scratch (dequantized panels,
//! packed operands, attention tiles), KV cache, tokenizer, data — plus a fixed allowance for the
//! process runtime (allocator and thread stacks), so that the anonymous memory of the
//! `pocketlora` process stays inside it. The memory-mapped model file is file-backed and
//! reported apart.

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::kernels::scratch::ScratchNeed;
use crate::kernels::{attention, lora, matmul, AttnShape, Precision};
use crate::lora::Target;
use crate::lora::{target_shape, LoraConfig};
use crate::model::backward::{
    workspace_bytes, AdapterGeometry, SavedDtype, WorkspaceShape, HEAD_PANEL,
};
use crate::model::{Activations, KvCache, ModelConfig};

/// The process runtime outside pocketlora's counted allocations: allocator bookkeeping and
/// arenas, thread stacks in use, the standard library (measured: the CLI's RssAnon exceeds
/// its touched heap by under 1 MiB with two threads).
pub const RUNTIME_BASE: u64 = 1 << 20;
/// Per worker thread: its stack in use and its allocator arena's fixed part.
pub const RUNTIME_PER_THREAD: u64 = 128 << 10;

/// Smallest token chunk the planner will use.
pub const MIN_CHUNK: usize = 16;

/// Blocks per checkpoint segment the planner tries (1 = a checkpoint per block).
pub const SEGMENTS: [usize; 4] = [1, 2, 4, 8];
/// Logit rows at once in the fused head + loss the planner tries.
pub const LOSS_ROW_CHOICES: [usize; 4] = [256, 64, 16, 8];

/// What is being planned.
#[derive(Clone, Debug)]
pub struct TrainRequest<'a> {
    pub model: &'a ModelConfig,
    pub lora: &'a LoraConfig,
    /// Longest sequence to train on; `None` lets the plan choose (up to `max_seq_len`).
    pub seq_len: Option<usize>,
    /// Upper bound when the plan chooses: the longest record, at most the context length.
    pub max_seq_len: usize,
    pub threads: usize,
    pub budget: u64,
    /// Heap already in use for the model's metadata and tokenizer, and for the data and
    /// anything else the caller holds (the bench: its record and report).
    pub tokenizer_bytes: u64,
    pub data_bytes: u64,
    /// Validation runs: an evaluation workspace is needed.
    pub validation: bool,
    /// Early stopping keeps a copy of the best adapter.
    pub keep_best: bool,
    /// Saved-activation storage fixed by the user.
    pub saved: Option<SavedDtype>,
    /// Arithmetic of the products with W0 (its kernels need different scratch).
    pub precision: Precision,
}

/// A plan: the table, the total, and the chosen shape.
#[derive(Clone, Debug)]
pub struct Plan {
    pub budget: u64,
    pub items: Vec<(&'static str, u64)>,
    pub total: u64,
    pub shape: WorkspaceShape,
    /// Worker threads (fewer than asked when per-thread buffers did not fit).
    pub threads: usize,
    /// Adapted blocks (the lowest adapted block and all above): `shape.kept` of them keep
    /// their activations, the others are checkpointed.
    pub adapted_blocks: usize,
    /// What the planner chose and why.
    pub notes: Vec<String>,
}

impl Plan {
    /// Whether every adapted block keeps its activations (backward recomputes nothing).
    pub fn keeps_all(&self) -> bool {
        let (kept, checkpointed) = self.shape.split(self.adapted_blocks);
        kept > 0 && checkpointed == 0
    }

    /// The table as JSON.
    pub fn to_json(&self) -> Value {
        let items: serde_json::Map<String, Value> = self
            .items
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({"budget_bytes": self.budget, "total_bytes": self.total, "items": items, "seq_len": self.shape.capacity, "threads": self.threads,
               "chunk": self.shape.chunk, "segment": self.shape.segment, "loss_rows": self.shape.loss_rows, "keep_activations": self.keeps_all(), "kept_blocks": self.shape.kept, "adapted_blocks": self.adapted_blocks, "saved_activations": format!("{:?}", self.shape.saved).to_lowercase(), "notes": self.notes})
    }

    /// The table as text lines.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mut items = self.items.clone();
        items.sort_by_key(|x| std::cmp::Reverse(x.1));
        for (k, v) in items {
            s += &format!("  {k:<34} {:>10}\n", human(v));
        }
        s += &format!(
            "  {:<34} {:>10}  of a {} budget\n",
            "total",
            human(self.total),
            human(self.budget)
        );
        s += &format!(
            "  sequence length {}, {}, {} logit rows, {} threads\n",
            self.shape.capacity,
            if self.keeps_all() {
                "every block's activations kept (no recompute)".to_string()
            } else {
                format!(
                    "{}token chunk {}, checkpoint every {} blocks, saved activations {:?}",
                    if self.shape.kept > 0 {
                        format!("top {} blocks' activations kept, ", self.shape.kept)
                    } else {
                        String::new()
                    },
                    self.shape.chunk,
                    self.shape.segment,
                    self.shape.saved
                )
            },
            self.shape.loss_rows,
            self.threads
        );
        for n in &self.notes {
            s += &format!("  {n}\n");
        }
        s
    }
}

/// Bytes as a short human string (binary units).
pub fn human(b: u64) -> String {
    let f = b as f64;
    if b >= 1 << 30 {
        format!("{:.2} GiB", f / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.1} MiB", f / (1u64 << 20) as f64)
    } else if b >= 1 << 10 {
        format!("{:.1} KiB", f / 1024.0)
    } else {
        format!("{b} B")
    }
}

/// Trainable values of an adapter of this configuration.
pub fn adapter_params(model: &ModelConfig, lora: &LoraConfig) -> Result<u64> {
    let on = lora.layers.resolve(model.n_layer)?;
    let per_layer: u64 = lora
        .targets_for(model.arch)?
        .iter()
        .map(|&t| {
            let (out, inp) = target_shape(model, t);
            (lora.r * (inp + out)) as u64
        })
        .sum();
    Ok(per_layer * on.iter().filter(|&&b| b).count() as u64)
}

/// Kernel scratch per worker thread (its grow-only buffers,
/// [`crate::kernels::scratch::ScratchNeed`]) for passes
/// over `chunk` tokens through every linear map (adapters of rank `rank`), attention over
/// `attn_tokens` (with its backward when `training`), and `head_rows` rows through the
/// output head (one vocabulary panel at a time when training).
pub fn kernel_scratch_per_thread(
    m: &ModelConfig,
    rank: usize,
    chunk: usize,
    attn_tokens: usize,
    head_rows: usize,
    precision: Precision,
    training: bool,
) -> u64 {
    let need = kernel_scratch_need(m, rank, chunk, attn_tokens, head_rows, precision, training);
    need.bytes() as u64
}

/// [`kernel_scratch_per_thread`] slot by slot.
pub fn kernel_scratch_need(
    m: &ModelConfig,
    rank: usize,
    chunk: usize,
    attn_tokens: usize,
    head_rows: usize,
    precision: Precision,
    training: bool,
) -> ScratchNeed {
    let mut need = attention::scratch_need(
        attn_tokens,
        AttnShape {
            n_head: m.n_head,
            n_head_kv: m.n_head_kv,
            head_dim: m.head_dim,
            scale: m.attn_scale,
            precision,
        },
        training,
    );
    // The base products run per projection (a fused tensor's parts are row views of it);
    // the LoRA products per projection too, over its rows of a fused pair's B.
    let conv: &[Target] = if m.has_conv() {
        &[Target::ConvIn, Target::ConvOut]
    } else {
        &[]
    };
    for t in Target::ALL.into_iter().chain(conv.iter().copied()) {
        let (out, inp) = target_shape(m, t);
        need = need.max(matmul::scratch_need(chunk, out, inp, precision, false));
        if training {
            need = need.max(matmul::scratch_need(chunk, out, inp, precision, true));
        }
        if rank > 0 {
            need = need.max(lora::scratch_need(inp, out, rank));
        }
    }
    let head_out = if training {
        HEAD_PANEL.min(m.n_vocab)
    } else {
        m.n_vocab
    };
    need = need.max(matmul::scratch_need(
        head_rows, head_out, m.n_embd, precision, false,
    ));
    if training {
        need = need.max(matmul::scratch_need(
            head_rows, head_out, m.n_embd, precision, true,
        ));
    }
    need
}

fn geometry(model: &ModelConfig, lora: &LoraConfig) -> Result<AdapterGeometry> {
    let on = lora.layers.resolve(model.n_layer)?;
    let lowest = on.iter().position(|&b| b).unwrap_or(model.n_layer);
    Ok(AdapterGeometry {
        max_rank: lora.r,
        dropout: lora.dropout > 0.0,
        checkpoints: model.n_layer - lowest,
    })
}

/// Plans a training run inside `req.budget`: the fastest shape that fits, trying smaller
/// token chunks, then bf16 checkpoints, then (if the length was left open) shorter
/// sequences, then fewer threads.
pub fn plan_training(req: &TrainRequest<'_>) -> Result<Plan> {
    let mut smallest: Option<(u64, Vec<(&'static str, u64)>)> = None;
    for threads in (1..=req.threads.max(1)).rev() {
        match plan_with_threads(req, threads) {
            Ok(p) => return Ok(p),
            Err((need, items)) => {
                if smallest.as_ref().is_none_or(|(b, _)| need < *b) {
                    smallest = Some((need, items));
                }
            }
        }
    }
    let (need, mut items) = smallest.unwrap_or((u64::MAX, Vec::new()));
    items.sort_by_key(|x| std::cmp::Reverse(x.1));
    let biggest: Vec<String> = items
        .iter()
        .take(3)
        .map(|(k, v)| format!("{k} {}", human(*v)))
        .collect();
    Err(Error::Budget(format!(
        "the memory budget of {} is too small: the smallest plan needs {} ({} bytes; biggest items: {})",
        human(req.budget),
        human(need),
        need,
        biggest.join(", ")
    )))
}

/// The smallest total a failed attempt reached, and its items.
type Shortfall = (u64, Vec<(&'static str, u64)>);

/// The plan with `threads` workers, or the smallest total it could reach and its items.
fn plan_with_threads(
    req: &TrainRequest<'_>,
    threads: usize,
) -> std::result::Result<Plan, Shortfall> {
    let m = req.model;
    let (n, g) = match (adapter_params(m, req.lora), geometry(m, req.lora)) {
        (Ok(n), Ok(g)) => (n, g),
        _ => return Err((u64::MAX, Vec::new())),
    };
    let fixed = fixed_items(req, n, threads);
    let sizes = ShapeSizes {
        req,
        g,
        threads,
        fixed_total: fixed.iter().map(|x| x.1).sum(),
    };
    let mut smallest: Option<(u64, WorkspaceShape)> = None;
    for t in candidate_lengths(req) {
        for shape in candidate_shapes(req, g, t) {
            let total = sizes.total(shape);
            if smallest.is_none_or(|(b, _)| total < b) {
                smallest = Some((total, shape));
            }
            if total <= req.budget {
                let mut items = fixed.clone();
                items.push((
                    "activations and workspaces",
                    workspace_bytes(m, g, shape) as u64,
                ));
                items.push(("kernel scratch (per thread)", sizes.scratch(shape)));
                items.extend(sizes.validation(t));
                return Ok(Plan {
                    budget: req.budget,
                    items,
                    total,
                    shape,
                    threads,
                    adapted_blocks: g.checkpoints,
                    notes: plan_notes(req, g, shape, t, threads),
                });
            }
        }
    }
    let (need, shape) = smallest.unwrap_or((u64::MAX, WorkspaceShape::plain(1)));
    let mut items = fixed;
    items.push((
        "activations and workspaces",
        workspace_bytes(m, g, shape) as u64,
    ));
    Err((need, items))
}

/// What every shape of a training run with `threads` workers holds: the adapter with its
/// gradients and moments (`n` parameters), the runtime, what the caller holds, saving's
/// extra and the best adapter of early stopping.
fn fixed_items(req: &TrainRequest<'_>, n: u64, threads: usize) -> Vec<(&'static str, u64)> {
    let t64 = threads as u64;
    let mut fixed: Vec<(&'static str, u64)> = vec![
        ("adapter (A, B)", 4 * n),
        ("gradients", 4 * n),
        ("AdamW moments", 8 * n),
        (
            "runtime (allocator, stacks)",
            RUNTIME_BASE + t64 * RUNTIME_PER_THREAD,
        ),
        ("model metadata and tokenizer", req.tokenizer_bytes),
        ("data and other live heap", req.data_bytes),
        (
            "saving (checkpoint headers, PEFT row order)",
            crate::lora::peft::save_extra_bytes(req.model, req.lora, 4).unwrap_or(0),
        ),
    ];
    if req.keep_best {
        fixed.push(("best adapter (early stopping)", 4 * n));
    }
    fixed
}

/// The sizes that depend on the workspace shape, for one thread count.
struct ShapeSizes<'r, 'a> {
    req: &'r TrainRequest<'a>,
    g: AdapterGeometry,
    threads: usize,
    /// The sum of [`fixed_items`].
    fixed_total: u64,
}

impl ShapeSizes<'_, '_> {
    /// The validation run's buffers for sequences of `t` tokens (none without validation).
    fn validation(&self, t: usize) -> Vec<(&'static str, u64)> {
        let (req, m) = (self.req, self.req.model);
        if req.validation {
            let cap = t.clamp(1, crate::infer::generate::PROMPT_CHUNK);
            vec![
                (
                    "validation activations",
                    Activations::bytes_for(m, cap, req.lora.r) as u64,
                ),
                ("validation KV cache", KvCache::bytes_for(m, t) as u64),
                (
                    "validation logits",
                    (4 * 64 * (m.n_vocab + m.n_embd)) as u64,
                ),
            ]
        } else {
            Vec::new()
        }
    }

    /// The kernels' scratch of all threads: per thread the larger of training's and
    /// validation's.
    fn scratch(&self, shape: WorkspaceShape) -> u64 {
        let (req, m) = (self.req, self.req.model);
        let ch = shape.chunk.clamp(1, shape.capacity.max(1));
        let rows = shape.loss_rows.clamp(1, shape.capacity.max(1));
        let train =
            kernel_scratch_per_thread(m, req.lora.r, ch, shape.capacity, rows, req.precision, true);
        let valid = if req.validation {
            let cap = shape
                .capacity
                .clamp(1, crate::infer::generate::PROMPT_CHUNK);
            kernel_scratch_per_thread(
                m,
                req.lora.r,
                cap,
                cap,
                crate::eval::LOGIT_ROWS,
                req.precision,
                false,
            )
        } else {
            0
        };
        self.threads as u64 * train.max(valid)
    }

    /// Everything the run holds with `shape`.
    fn total(&self, shape: WorkspaceShape) -> u64 {
        self.fixed_total
            + workspace_bytes(self.req.model, self.g, shape) as u64
            + self.scratch(shape)
            + self
                .validation(shape.capacity)
                .iter()
                .map(|x| x.1)
                .sum::<u64>()
    }
}

/// The sequence lengths to try: the asked one, else the longest record's and its halves
/// down to [`MIN_CHUNK`].
fn candidate_lengths(req: &TrainRequest<'_>) -> Vec<usize> {
    match req.seq_len {
        Some(t) => vec![t],
        None => {
            let mut v = vec![req.max_seq_len.max(1)];
            let mut t = req.max_seq_len / 2;
            while t >= MIN_CHUNK {
                v.push(t);
                t /= 2;
            }
            v
        }
    }
}

/// Candidate shapes for sequences of `t` tokens, fastest first: whole sequence, then smaller
/// chunks, then halves.
fn candidate_shapes(req: &TrainRequest<'_>, g: AdapterGeometry, t: usize) -> Vec<WorkspaceShape> {
    let mut chunks = vec![t];
    let mut c = t / 2;
    while c >= MIN_CHUNK {
        chunks.push(c);
        c /= 2;
    }
    let saved: Vec<SavedDtype> = match req.saved {
        Some(s) => vec![s],
        None => vec![SavedDtype::F32, SavedDtype::BF16],
    };
    // Exact choices before the lossy one: for each storage type, every segment length
    // (recompute), fewer logit rows, smaller chunks.
    let mut out = Vec::new();
    // Fastest of all: every adapted block's activations kept, nothing recomputed; then
    // as many of the top blocks as fit, the others checkpointed (each kept block saves
    // one block forward per step).
    if req.saved.is_none_or(|s| s == SavedDtype::F32) {
        for blocks in (1..=g.checkpoints).rev() {
            out.push(WorkspaceShape::keeping(t, blocks));
        }
    }
    for &s in &saved {
        for segment in SEGMENTS {
            for loss_rows in LOSS_ROW_CHOICES {
                for &ch in &chunks {
                    out.push(WorkspaceShape {
                        capacity: t,
                        chunk: ch,
                        saved: s,
                        segment,
                        loss_rows,
                        kept: 0,
                    });
                }
            }
        }
    }
    out
}

/// What the planner chose for a plan of `shape` over sequences of `t` tokens with
/// `threads` workers, and why.
fn plan_notes(
    req: &TrainRequest<'_>,
    g: AdapterGeometry,
    shape: WorkspaceShape,
    t: usize,
    threads: usize,
) -> Vec<String> {
    let mut notes = Vec::new();
    let (kept, checkpointed) = shape.split(g.checkpoints);
    if kept > 0 && checkpointed == 0 {
        notes.push(
            "every adapted block's activations kept: backward recomputes nothing (the fastest plan)"
                .to_string(),
        );
    } else if kept > 0 {
        notes.push(format!(
            "the top {kept} of {} adapted blocks keep their activations (no recompute for them), the others are checkpointed, to fit",
            g.checkpoints
        ));
    }
    if checkpointed > 0 && shape.segment > 1 {
        notes.push(format!(
            "a checkpoint every {} blocks, the others recomputed in backward, to fit",
            shape.segment
        ));
    }
    if shape.loss_rows < crate::model::backward::LOSS_ROWS {
        notes.push(format!(
            "logits formed {} rows at a time to fit",
            shape.loss_rows
        ));
    }
    if shape.chunk < t {
        notes.push(format!(
            "projections and MLP recomputed in chunks of {} tokens to fit",
            shape.chunk
        ));
    }
    if shape.saved != SavedDtype::F32 && req.saved.is_none() {
        notes.push(format!(
            "saved activations stored as {:?} (lossy) to fit",
            shape.saved
        ));
    }
    if req.seq_len.is_none() && t < req.max_seq_len {
        notes.push(format!(
            "sequences truncated to {t} tokens to fit (longest is {})",
            req.max_seq_len
        ));
    }
    if threads < req.threads {
        notes.push(format!(
            "{threads} worker threads instead of {} to fit their per-thread buffers",
            req.threads
        ));
    }
    notes
}

/// What a generation needs planned.
#[derive(Clone, Debug)]
pub struct GenerateRequest<'a> {
    pub model: &'a ModelConfig,
    pub prompt_len: usize,
    pub max_new: usize,
    /// Largest adapter rank applied (0: none).
    pub max_rank: usize,
    pub threads: usize,
    pub budget: u64,
    /// Heap already in use (model metadata, tokenizer, adapters).
    pub loaded_bytes: u64,
    /// Arithmetic of the products with W0.
    pub precision: Precision,
}

/// A generation plan: its table and the limits it sets.
#[derive(Clone, Debug)]
pub struct GeneratePlan {
    pub budget: u64,
    pub items: Vec<(&'static str, u64)>,
    pub total: u64,
    pub limits: crate::infer::GenerateLimits,
    pub threads: usize,
    pub notes: Vec<String>,
}

/// Plans a generation inside `req.budget`: the fastest prompt chunk that fits, then fewer
/// cached positions (generation then stops earlier), then fewer threads.
pub fn plan_generation(req: &GenerateRequest<'_>) -> Result<GeneratePlan> {
    let m = req.model;
    let want_ctx = (req.prompt_len + req.max_new).min(m.n_ctx).max(1);
    let mut best_need = u64::MAX;
    for threads in (1..=req.threads.max(1)).rev() {
        let t64 = threads as u64;
        let fixed: Vec<(&'static str, u64)> = vec![
            ("model metadata, tokenizer, adapters", req.loaded_bytes),
            ("logits and sampler", (m.n_vocab * (4 + 8)) as u64),
            (
                "runtime (allocator, stacks)",
                RUNTIME_BASE + t64 * RUNTIME_PER_THREAD,
            ),
        ];
        let fixed_total: u64 = fixed.iter().map(|x| x.1).sum();
        let mut chunks = vec![req
            .prompt_len
            .clamp(1, crate::infer::generate::PROMPT_CHUNK)];
        while chunks.last().is_some_and(|&c| c / 2 >= MIN_CHUNK) {
            let c = chunks[chunks.len() - 1] / 2;
            chunks.push(c);
        }
        let mut contexts = vec![want_ctx];
        let mut c = want_ctx;
        while c / 2 > req.prompt_len {
            c /= 2;
            contexts.push(c);
        }
        contexts.push(req.prompt_len.max(1) + 1);
        for &ctx in &contexts {
            for &chunk in &chunks {
                let act = Activations::bytes_for(m, chunk, req.max_rank) as u64;
                let kv = KvCache::bytes_for(m, ctx) as u64;
                let scratch = t64
                    * kernel_scratch_per_thread(
                        m,
                        req.max_rank,
                        chunk,
                        chunk,
                        1,
                        req.precision,
                        false,
                    );
                let total = fixed_total + act + kv + scratch;
                best_need = best_need.min(total);
                if total <= req.budget {
                    let mut items = fixed.clone();
                    items.push(("activations", act));
                    items.push(("KV cache", kv));
                    items.push(("kernel scratch (per thread)", scratch));
                    let mut notes = Vec::new();
                    if ctx < want_ctx {
                        notes.push(format!(
                            "KV cache limited to {ctx} positions to fit: generation stops there"
                        ));
                    }
                    if chunk < req.prompt_len.min(crate::infer::generate::PROMPT_CHUNK) {
                        notes.push(format!("prompt read {chunk} tokens at a time to fit"));
                    }
                    if threads < req.threads {
                        notes.push(format!("{threads} worker threads instead of {} to fit their per-thread buffers", req.threads));
                    }
                    let limits = crate::infer::GenerateLimits {
                        prompt_chunk: chunk,
                        context: ctx,
                    };
                    return Ok(GeneratePlan {
                        budget: req.budget,
                        items,
                        total,
                        limits,
                        threads,
                        notes,
                    });
                }
            }
        }
    }
    Err(Error::Budget(format!(
        "the memory budget of {} is too small to generate: the smallest plan needs {} ({best_need} bytes)",
        human(req.budget),
        human(best_need)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tinyllama() -> ModelConfig {
        ModelConfig::dense(
            &crate::model::arch::LLAMA,
            32000,
            2048,
            22,
            32,
            4,
            5632,
            2048,
        )
    }

    fn req<'a>(m: &'a ModelConfig, l: &'a LoraConfig, budget: u64) -> TrainRequest<'a> {
        TrainRequest {
            model: m,
            lora: l,
            seq_len: Some(512),
            max_seq_len: 512,
            threads: 2,
            budget,
            tokenizer_bytes: 1 << 20,
            data_bytes: 1 << 20,
            validation: false,
            keep_best: false,
            saved: None,
            precision: Precision::Exact,
        }
    }

    #[test]
    fn adapter_size_matches_peft_counts() {
        // PEFT reports 6,307,840 trainable parameters for TinyLlama-1.1B, r 8, all linear.
        let l = LoraConfig {
            r: 8,
            ..LoraConfig::default()
        };
        assert_eq!(adapter_params(&tinyllama(), &l).unwrap(), 6_307_840);
    }

    #[test]
    fn a_generous_budget_keeps_the_fast_shape_and_a_tight_one_chunks() {
        let (m, l) = (
            tinyllama(),
            LoraConfig {
                r: 8,
                ..LoraConfig::default()
            },
        );
        // 2 GiB: every block's activations kept (TinyLlama needs about 1.1 GiB for them).
        let p = plan_training(&req(&m, &l, 2 << 30)).unwrap();
        assert_eq!(p.shape, WorkspaceShape::keeping(512, 22));
        assert!(p.keeps_all() && p.total <= 2 << 30);
        // 1 GiB: as many of the top blocks as fit keep theirs, and one more would not fit.
        let p = plan_training(&req(&m, &l, 1 << 30)).unwrap();
        let (kept, g) = (p.shape.kept, geometry(&m, &l).unwrap());
        assert!(kept > 0 && kept < 22 && !p.keeps_all(), "{:?}", p.shape);
        assert_eq!(
            WorkspaceShape { kept: 0, ..p.shape },
            WorkspaceShape::plain(512)
        );
        assert!(p.total <= 1 << 30);
        let one_more = WorkspaceShape {
            kept: kept + 1,
            ..p.shape
        };
        let grown = workspace_bytes(&m, g, one_more) - workspace_bytes(&m, g, p.shape);
        assert!(p.total + grown as u64 > 1 << 30);
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains(&format!("top {kept} of 22"))),
            "{:?}",
            p.notes
        );
        assert_eq!(p.to_json()["kept_blocks"], kept);
        assert_eq!(p.to_json()["keep_activations"], false);
        let p = plan_training(&req(&m, &l, 256 << 20)).unwrap();
        assert!(p.shape.chunk < 512, "{:?}", p.shape);
        assert!(p.total <= 256 << 20);
        let e = plan_training(&req(&m, &l, 64 << 10))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("64.0 KiB")
                && e.contains("smallest plan needs")
                && e.contains("AdamW moments"),
            "{e}"
        );
    }
}
