//! The training workspace: its shape (sequence length, token chunk, checkpoint storage and
//! spacing, logit rows, kept blocks), and its buffers, built from one size list
//! ([`crate::memory::sizes::Sizer`]) so that the memory planner's number
//! ([`workspace_bytes`]) and the allocation ([`TrainWorkspace::with_shape`]) are one code.

use super::block::{BlockState, ChunkScratch};
use super::block_backward::BackwardScratch;
use super::config::ModelConfig;
use super::forward::Model;
use super::head::HeadBuffers;
use crate::error::{Error, Result};
use crate::kernels::Real;
use crate::lora::Adapter;
use crate::memory::sizes::Sizer;

pub use super::head::LOSS_ROWS;

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

/// One block's saved input.
#[derive(Debug)]
pub(crate) enum Saved<F> {
    Full(Vec<F>),
    Half(Vec<u16>),
}

impl<F: Real> Saved<F> {
    /// Stores `x` (as `dtype` when this is a half buffer).
    pub(crate) fn save(&mut self, x: &[F], dtype: SavedDtype) {
        match self {
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

    /// Writes the stored values into `x`.
    pub(crate) fn restore(&self, x: &mut [F], dtype: SavedDtype) {
        match self {
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
}

/// One adapted block's activations kept from the forward pass for its backward.
#[derive(Debug)]
pub(crate) struct Kept<F> {
    /// Block input, (T, C).
    pub(crate) x_in: Vec<F>,
    pub(crate) state: BlockState<F>,
    /// Keys and values, (T, kv_dim).
    pub(crate) k: Vec<F>,
    pub(crate) v: Vec<F>,
    /// The MLP's gate and up projections, (T, n_ff).
    pub(crate) gate: Vec<F>,
    pub(crate) up: Vec<F>,
    /// The down projection before the MLP's post-norm, (T, C) (post-norms only).
    pub(crate) down: Vec<F>,
}

impl<F: Real> Kept<F> {
    fn build(cfg: &ModelConfig, t: usize, s: &mut Sizer) -> Self {
        let post = cfg.arch.post_norms;
        Kept {
            x_in: s.zeros(t * cfg.n_embd),
            state: BlockState::build(cfg, t, true, s),
            k: s.zeros(t * cfg.kv_dim()),
            v: s.zeros(t * cfg.kv_dim()),
            gate: s.zeros(t * cfg.n_ff),
            up: s.zeros(t * cfg.n_ff),
            down: s.zeros(if post { t * cfg.n_embd } else { 0 }),
        }
    }
}

/// The sequence's tables: RoPE angles, positions, document starts, sliding-window starts
/// and the target rows.
#[derive(Debug)]
pub(crate) struct SequenceTables<F> {
    /// RoPE angles of the T positions, (capacity, rope_dim/2) per table
    /// ([`ModelConfig::rope_tables`]: global, then local).
    pub(crate) cos: Vec<F>,
    pub(crate) sin: Vec<F>,
    pub(crate) positions: Vec<usize>,
    /// Per token, the first position of its document (packed sequences).
    pub(crate) starts: Vec<usize>,
    /// Per token, the first position its sliding window sees (and its document: the later
    /// of both); filled only for models with sliding windows.
    pub(crate) window_starts: Vec<usize>,
    /// (row, target token) of every predicted position.
    pub(crate) preds: Vec<(usize, usize)>,
}

/// The blocks' buffers: the residual stream and its gradient, checkpoints, kept
/// activations, and the workspaces of one block's forward and backward.
#[derive(Debug)]
pub(crate) struct BlockBuffers<F> {
    /// Residual stream and a restored block input, (T, C).
    pub(crate) x: Vec<F>,
    pub(crate) x_in: Vec<F>,
    /// Gradient of the residual stream, (T, C).
    pub(crate) dx: Vec<F>,
    /// Input of every `segment`-th checkpointed block — the activation checkpoints.
    pub(crate) checkpoints: Vec<Saved<F>>,
    /// Inputs of the other blocks of the segment being differentiated, (T, C) each.
    pub(crate) segment_inputs: Vec<Saved<F>>,
    /// The activations of the top `shape.kept` adapted blocks, lowest first.
    pub(crate) kept: Vec<Kept<F>>,
    /// Keys and values of the block being processed, (T, kv_dim).
    pub(crate) k: Vec<F>,
    pub(crate) v: Vec<F>,
    pub(crate) state: BlockState<F>,
    pub(crate) chunk: ChunkScratch<F>,
    pub(crate) scratch: BackwardScratch<F>,
}

/// Buffers of training passes, sized once.
#[derive(Debug)]
pub struct TrainWorkspace<F> {
    pub(crate) shape: WorkspaceShape,
    pub(crate) seq: SequenceTables<F>,
    pub(crate) blocks: BlockBuffers<F>,
    pub(crate) head: HeadBuffers<F>,
}

/// Bytes an f32 workspace of this shape holds (what [`TrainWorkspace::with_shape`] allocates).
pub fn workspace_bytes(cfg: &ModelConfig, g: AdapterGeometry, shape: WorkspaceShape) -> usize {
    Sizer::bytes_of(|s| TrainWorkspace::<f32>::build(cfg, g, shape, s))
}

impl<F: Real> TrainWorkspace<F> {
    /// Plain buffers for sequences of up to `capacity` tokens of `model` training `adapter`.
    pub fn new(model: &Model, adapter: &Adapter<F>, capacity: usize) -> Self {
        TrainWorkspace::with_shape(model, adapter, WorkspaceShape::plain(capacity))
    }

    /// Buffers of the given shape (see `memory::Plan`).
    pub fn with_shape(model: &Model, adapter: &Adapter<F>, shape: WorkspaceShape) -> Self {
        let g = AdapterGeometry::of(&model.cfg, adapter);
        TrainWorkspace::build(&model.cfg, g, shape, &mut Sizer::allocating())
    }

    /// The workspace's one size list: every buffer comes from `s`.
    fn build(cfg: &ModelConfig, g: AdapterGeometry, shape: WorkspaceShape, s: &mut Sizer) -> Self {
        let (c, kvd, half) = (cfg.n_embd, cfg.kv_dim(), cfg.rope_dim / 2);
        let capacity = shape.capacity.max(1);
        let chunk = shape.chunk.clamp(1, capacity);
        let seg = shape.segment.max(1);
        let rows = shape.loss_rows.clamp(1, capacity);
        let saved = |s: &mut Sizer| match shape.saved {
            SavedDtype::F32 => Saved::Full(s.zeros(capacity * c)),
            _ => Saved::Half(s.zeros(capacity * c)),
        };
        let (n_kept, n_ckpt) = shape.split(g.checkpoints);
        TrainWorkspace {
            shape: WorkspaceShape {
                capacity,
                chunk,
                saved: shape.saved,
                segment: seg,
                loss_rows: rows,
                kept: n_kept,
            },
            blocks: BlockBuffers {
                x: s.zeros(capacity * c),
                x_in: s.zeros(if n_ckpt > 0 { capacity * c } else { 0 }),
                checkpoints: s.each(n_ckpt.div_ceil(seg), saved),
                segment_inputs: s.each(seg.min(n_ckpt.max(1)) - 1, saved),
                kept: s.each(n_kept, |s| Kept::build(cfg, capacity, s)),
                k: s.zeros(capacity * kvd),
                v: s.zeros(capacity * kvd),
                state: BlockState::build(cfg, capacity, true, s),
                chunk: ChunkScratch::build(cfg, chunk, g.max_rank, g.dropout, s),
                scratch: BackwardScratch::build(cfg, capacity, chunk, g.max_rank, g.dropout, s),
                dx: s.zeros(capacity * c),
            },
            head: HeadBuffers::build(cfg, rows, s),
            seq: SequenceTables {
                cos: s.zeros(cfg.rope_tables() * capacity * half),
                sin: s.zeros(cfg.rope_tables() * capacity * half),
                positions: s.room(capacity),
                starts: s.room(capacity),
                window_starts: s.room(if cfg.window.is_some() { capacity } else { 0 }),
                preds: s.room(capacity),
            },
        }
    }

    pub fn capacity(&self) -> usize {
        self.shape.capacity
    }

    pub fn shape(&self) -> WorkspaceShape {
        self.shape
    }
}
