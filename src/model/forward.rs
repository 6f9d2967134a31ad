//! Inference with f32 activations: embedding lookup, every block (see [`super::block`]) over
//! the KV cache, with the model's adapter if one is set, then the final norm. Logits are a
//! separate step ([`Model::logits`]) so callers compute them only for the rows they need.

use std::path::Path;
use std::sync::Arc;

use super::block::{block_forward, BlockCtx, BlockState, ChunkScratch};
use super::config::ModelConfig;
use super::weights::Weights;
use crate::error::{Error, ModelError, Result};
use crate::gguf::GgufFile;
use crate::kernels::{
    inverse_frequencies, matmul_forward, rmsnorm_forward, rope_table, team, Precision,
};
use crate::lora::Adapter;
use crate::memory::sizes::Sizer;

/// A loaded model, the thread pool its kernels run on, and the adapter (if any) that
/// inference applies on top of the frozen weights.
#[derive(Debug)]
pub struct Model {
    pub cfg: ModelConfig,
    pub weights: Weights,
    inv_freq: Vec<f64>,
    pool: Arc<rayon::ThreadPool>,
    adapter: Option<Arc<Adapter>>,
    precision: Precision,
}

impl Model {
    /// Memory-maps and validates `path`, then builds the model with `threads` worker threads
    /// (0 = one per core).
    pub fn open(path: impl AsRef<Path>, threads: usize) -> Result<Model> {
        let file = GgufFile::open(path)?;
        Model::from_file(Arc::new(file), threads)
    }

    /// Builds the model from an already-open GGUF file.
    pub fn from_file(file: Arc<GgufFile>, threads: usize) -> Result<Model> {
        let cfg = ModelConfig::from_gguf(&file)?;
        let weights = Weights::load(file, &cfg)?;
        let inv_freq = inverse_frequencies(
            cfg.rope_dim,
            cfg.rope_base,
            cfg.rope_freq_scale,
            weights.rope_freqs.as_deref(),
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("pocketlora-{i}"))
            .build()
            .map_err(|e| Error::InvalidArgument(format!("cannot start {threads} threads: {e}")))?;
        Ok(Model {
            cfg,
            weights,
            inv_freq,
            pool: Arc::new(pool),
            adapter: None,
            precision: Precision::Exact,
        })
    }

    /// Worker threads the kernels use.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Rebuilds the thread pool with `threads` workers (a memory plan may use fewer).
    pub fn set_threads(&mut self, threads: usize) -> Result<()> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("pocketlora-{i}"))
            .build()
            .map_err(|e| Error::InvalidArgument(format!("cannot start {threads} threads: {e}")))?;
        self.pool = Arc::new(pool);
        Ok(())
    }

    /// Sets every worker thread's kernel scratch to exactly `need` now (see
    /// [`crate::memory::plan::kernel_scratch_need`]), so that steps do not allocate it and
    /// no buffer an earlier, bigger call grew stays past the plan.
    pub fn reserve_scratch(&self, need: crate::kernels::scratch::ScratchNeed) {
        self.pool
            .broadcast(|_| crate::kernels::scratch::reserve(&need));
    }

    /// Runs `f` on the model's thread pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// Per-pair RoPE inverse frequencies (scaling and factors applied).
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    /// Applies `adapter` in every following forward pass (hot swap; `None` removes it).
    /// The adapter must fit the model.
    pub fn set_adapter(&mut self, adapter: Option<Arc<Adapter>>) -> Result<()> {
        if let Some(a) = &adapter {
            a.check_fits(&self.cfg)?;
        }
        self.adapter = adapter;
        Ok(())
    }

    /// The arithmetic of the products with the frozen weights (default: exact).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Sets the arithmetic of the products with the frozen weights for every following
    /// forward, training and logits call.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// The adapter inference applies, if any.
    pub fn adapter(&self) -> Option<&Arc<Adapter>> {
        self.adapter.as_ref()
    }

    /// Runs `tokens` at positions `cache.len() ..` through every block, appending their keys
    /// and values to `cache`, and leaves the final-normed hidden states in `act.hidden()`
    /// (tokens.len(), n_embd). At most `act.capacity()` tokens per call. Applies the
    /// model's adapter ([`Model::set_adapter`]), if any.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        act: &mut Activations,
    ) -> Result<()> {
        self.forward_with(tokens, cache, act, self.adapter.as_deref())
    }

    /// [`Model::forward`] with an explicit adapter (or none) instead of the model's own: one
    /// shared model can serve requests with different adapters, and a trainer's adapter can
    /// be used as it trains. `act` must have room for the adapter's rank
    /// ([`Activations::for_adapter`]).
    pub fn forward_with(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        act: &mut Activations,
        adapter: Option<&Adapter>,
    ) -> Result<()> {
        let cfg = &self.cfg;
        if let Some(a) = adapter {
            a.check_fits(cfg)?;
            let rank = max_rank(Some(a));
            if rank > act.max_rank {
                return Err(Error::InvalidArgument(format!(
                    "the adapter has rank {rank}, but the activation buffers were made for rank {} at most",
                    act.max_rank
                )));
            }
        }
        let t = tokens.len();
        if t > act.capacity() {
            return Err(Error::InvalidArgument(format!(
                "{t} tokens exceed the activation capacity {}",
                act.capacity()
            )));
        }
        let pos0 = cache.len;
        if pos0 + t > cache.capacity {
            return Err(ModelError::ContextOverflow {
                len: pos0 + t,
                context: cache.capacity,
            }
            .into());
        }
        let c = cfg.n_embd;
        act.t = t;
        for (i, &tok) in tokens.iter().enumerate() {
            self.weights.embed(tok, &mut act.x[i * c..(i + 1) * c])?;
        }
        let positions: Vec<usize> = (pos0..pos0 + t).collect();
        let half = cfg.rope_dim / 2;
        rope_table(
            &mut act.cos[..t * half],
            &mut act.sin[..t * half],
            &positions,
            &self.inv_freq,
        );
        self.install(|| {
            let Activations {
                x,
                xn,
                rstd,
                cos,
                sin,
                state,
                chunk,
                ..
            } = act;
            let x = &mut x[..t * c];
            let mut layers = |x: &mut [f32]| {
                for l in 0..cfg.n_layer {
                    let ctx = BlockCtx {
                        cfg,
                        weights: &self.weights,
                        layer: l,
                        lora: adapter.map(|a| &a.layers[l]),
                        dropout: None,
                        cos: &cos[..t * half],
                        sin: &sin[..t * half],
                        precision: self.precision,
                        starts: None,
                    };
                    let (kc, vc) = cache.layer_mut(l);
                    block_forward(&ctx, x, kc, vc, pos0, state, chunk, false);
                }
            };
            // A generation step (the matmuls' few-token GEMV path) is ~7 small matrix-vector
            // products per layer: the pool's other workers spin between them as a team
            // instead of being woken for each.
            if t <= crate::kernels::matmul::GEMV_TOKENS {
                team::with_team(|| layers(x));
            } else {
                layers(x);
            }
            rmsnorm_forward(
                &mut xn[..t * c],
                &mut rstd[..t],
                x,
                &self.weights.output_norm,
                cfg.rms_eps,
            );
        });
        cache.len = pos0 + t;
        Ok(())
    }

    /// `logits (rows, n_vocab) ← hidden (rows, n_embd) · outputᵀ`.
    pub fn logits(&self, hidden: &[f32], logits: &mut [f32]) {
        let head = self
            .weights
            .matrix(&self.weights.output)
            .with_precision(self.precision);
        self.install(|| matmul_forward(logits, hidden, &head));
    }
}

/// The largest rank of an adapter's pairs (0 without one).
fn max_rank(adapter: Option<&Adapter>) -> usize {
    adapter.map_or(0, |a| a.pairs().map(|p| p.r).max().unwrap_or(0))
}

/// Keys and values of every layer for positions `0 .. len`, room for `capacity`.
#[derive(Debug)]
pub struct KvCache {
    kv_dim: usize,
    capacity: usize,
    len: usize,
    /// Per layer: keys (capacity, kv_dim), then values (capacity, kv_dim).
    layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl KvCache {
    /// An empty cache for `capacity` positions. Callers that follow the model's training
    /// context (generation) cap it at `n_ctx`; evaluation may go past it.
    pub fn new(cfg: &ModelConfig, capacity: usize) -> Result<KvCache> {
        capacity
            .checked_mul(cfg.kv_dim())
            .filter(|n| n.checked_mul(8 * cfg.n_layer).is_some())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "a KV cache of {capacity} positions does not fit in memory"
                ))
            })?;
        Ok(KvCache::build(cfg, capacity, &mut Sizer::allocating()))
    }

    /// The cache's one size list.
    fn build(cfg: &ModelConfig, capacity: usize, s: &mut Sizer) -> KvCache {
        let n = capacity * cfg.kv_dim();
        KvCache {
            kv_dim: cfg.kv_dim(),
            capacity,
            len: 0,
            layers: s.each(cfg.n_layer, |s| (s.zeros(n), s.zeros(n))),
        }
    }

    /// Bytes a cache of `capacity` positions holds (its per-layer buffers; the small
    /// vector of them included).
    pub fn bytes_for(cfg: &ModelConfig, capacity: usize) -> usize {
        Sizer::bytes_of(|s| KvCache::build(cfg, capacity, s))
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position (keeps the memory).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops positions from `len` on, so a prefix can be reused.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn layer_mut(&mut self, l: usize) -> (&mut [f32], &mut [f32]) {
        let (k, v) = &mut self.layers[l];
        debug_assert_eq!(k.len(), self.capacity * self.kv_dim);
        (k, v)
    }
}

/// Activation buffers for up to `capacity` tokens per forward call.
#[derive(Debug)]
pub struct Activations {
    capacity: usize,
    max_rank: usize,
    n_embd: usize,
    t: usize,
    x: Vec<f32>,
    xn: Vec<f32>,
    rstd: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    state: BlockState<f32>,
    chunk: ChunkScratch<f32>,
}

/// Tokens per MLP/projection chunk in inference: memory stays at this many rows of the
/// feed-forward width however long the prompt.
pub const INFERENCE_CHUNK: usize = 256;

impl Activations {
    /// Buffers for `capacity` tokens of model `cfg`, with room for adapters up to
    /// `max_rank` (0 without an adapter).
    pub fn new(cfg: &ModelConfig, capacity: usize, max_rank: usize) -> Activations {
        Activations::build(cfg, capacity, max_rank, &mut Sizer::allocating())
    }

    /// The activations' one size list.
    fn build(cfg: &ModelConfig, capacity: usize, max_rank: usize, s: &mut Sizer) -> Activations {
        let (c, half) = (cfg.n_embd, cfg.rope_dim / 2);
        Activations {
            capacity,
            max_rank,
            n_embd: c,
            t: 0,
            x: s.zeros(capacity * c),
            xn: s.zeros(capacity * c),
            rstd: s.zeros(capacity),
            cos: s.zeros(capacity * half),
            sin: s.zeros(capacity * half),
            state: BlockState::build(cfg, capacity, s),
            chunk: ChunkScratch::build(cfg, capacity.clamp(1, INFERENCE_CHUNK), max_rank, false, s),
        }
    }

    /// Buffers for running `model` with its current adapter.
    pub fn for_model(model: &Model, capacity: usize) -> Activations {
        Activations::for_adapter(&model.cfg, model.adapter().map(|a| &**a), capacity)
    }

    /// Buffers for running a model of configuration `cfg` with `adapter`.
    pub fn for_adapter(
        cfg: &ModelConfig,
        adapter: Option<&Adapter>,
        capacity: usize,
    ) -> Activations {
        Activations::new(cfg, capacity, max_rank(adapter))
    }

    /// Bytes held for `capacity` tokens.
    pub fn bytes_for(cfg: &ModelConfig, capacity: usize, max_rank: usize) -> usize {
        Sizer::bytes_of(|s| Activations::build(cfg, capacity, max_rank, s))
    }

    /// Tokens per forward call.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Final-normed hidden states of the last forward call, (T, n_embd).
    pub fn hidden(&self) -> &[f32] {
        &self.xn[..self.t * self.n_embd]
    }
}
