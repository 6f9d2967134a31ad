//! Inference with f32 activations: embedding lookup (scaled as the recipe says), every
//! block (see [`super::block`]) over the KV cache ([`super::kv_cache`]; sliding-window
//! layers see only their window), with the model's adapter if one is set, then the final
//! norm. Logits are a separate step ([`Model::logits`], soft-capped where the model says)
//! so callers compute them only for the rows they need.

use std::path::Path;
use std::sync::Arc;

use super::block::{block_forward, BlockCtx, BlockState, ChunkScratch};
use super::config::{LayerRope, ModelConfig};
use super::kv_cache::KvCache;
use super::weights::Weights;
use crate::error::{Error, ModelError, Result};
use crate::gguf::GgufFile;
use crate::kernels::{
    inverse_frequencies, matmul_forward, rmsnorm_forward, rope_table, scale_rope_table, Precision,
};
use crate::lora::Adapter;
use crate::memory::sizes::Sizer;
use crate::util::team;

/// A loaded model, the thread pool its kernels run on, and the adapter (if any) that
/// inference applies on top of the frozen weights.
#[derive(Debug)]
pub struct Model {
    pub cfg: ModelConfig,
    pub weights: Weights,
    /// RoPE inverse frequencies: the global table, then the local one (sliding-window
    /// layers) when some layer uses it.
    inv_freqs: Vec<Vec<f64>>,
    pool: Arc<rayon::ThreadPool>,
    adapter: Option<Arc<Adapter>>,
    precision: Precision,
}

/// Most worker threads a model takes: more than a few per core only adds switching (and
/// each costs a stack), and a mistyped count must not hang the process.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (4 * cores).max(64)
}

/// Refuses a worker count above [`max_threads`].
fn check_threads(threads: usize) -> Result<()> {
    let max = max_threads();
    if threads > max {
        return Err(Error::InvalidArgument(format!(
            "{threads} threads are more than this machine can use (at most {max}; 0 means one per core)"
        )));
    }
    Ok(())
}

/// The kernels' worker pool of `threads` (0: one per core).
fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    check_threads(threads)?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("pocketlora-{i}"))
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start {threads} threads: {e}")))
}

impl Model {
    /// Memory-maps and validates `path`, then builds the model with `threads` worker threads
    /// (0 = one per core).
    pub fn open(path: impl AsRef<Path>, threads: usize) -> Result<Model> {
        check_threads(threads)?;
        let file = GgufFile::open(path)?;
        Model::from_file(Arc::new(file), threads)
    }

    /// Builds the model from an already-open GGUF file.
    pub fn from_file(file: Arc<GgufFile>, threads: usize) -> Result<Model> {
        let cfg = ModelConfig::from_gguf(&file)?;
        let weights = Weights::load(file, &cfg)?;
        let mut inv_freqs = vec![inverse_frequencies(
            cfg.rope_dim,
            cfg.rope_base,
            cfg.rope_freq_scale,
            weights.rope_freqs.as_deref(),
        )];
        if cfg.has_local_rope() {
            // The local layers' own base, unscaled (llama.cpp's rope_freq_scale_train_swa).
            inv_freqs.push(inverse_frequencies(
                cfg.rope_dim,
                cfg.rope_base_local,
                1.0,
                None,
            ));
        }
        let pool = thread_pool(threads)?;
        Ok(Model {
            cfg,
            weights,
            inv_freqs,
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
        let pool = thread_pool(threads)?;
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

    /// Per-pair RoPE inverse frequencies (scaling and factors applied) of the global table.
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freqs[0]
    }

    /// The RoPE tables: global, then local when the model has one ([`ModelConfig::rope_tables`]).
    pub fn inv_freqs(&self) -> &[Vec<f64>] {
        &self.inv_freqs
    }

    /// Writes the embedding of `token` into `out`, scaled as the recipe says (×√n_embd for
    /// gemma).
    pub fn embed<F: crate::kernels::Real>(&self, token: u32, out: &mut [F]) -> Result<()> {
        self.weights.embed(token, out)?;
        if self.cfg.embed_scale != 1.0 {
            let s = F::from_f32(self.cfg.embed_scale);
            out.iter_mut().for_each(|v| *v *= s);
        }
        Ok(())
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
        let pos0 = cache.len();
        if pos0 + t > cache.capacity() {
            return Err(ModelError::ContextOverflow {
                len: pos0 + t,
                context: cache.capacity(),
            }
            .into());
        }
        cache.check_call(t)?;
        let c = cfg.n_embd;
        act.t = t;
        for (i, &tok) in tokens.iter().enumerate() {
            self.embed(tok, &mut act.x[i * c..(i + 1) * c])?;
        }
        let positions: Vec<usize> = (pos0..pos0 + t).collect();
        let half = cfg.rope_dim / 2;
        let table = act.capacity * half;
        for (j, inv) in self.inv_freqs.iter().enumerate() {
            let (c, s) = (
                &mut act.cos[j * table..j * table + t * half],
                &mut act.sin[j * table..j * table + t * half],
            );
            rope_table(c, s, &positions, inv);
            if j == 0 {
                scale_rope_table(c, s, cfg.rope_attn_factor);
            }
        }
        self.install(|| {
            let Activations {
                x,
                xn,
                rstd,
                cos,
                sin,
                window_starts,
                state,
                chunk,
                ..
            } = act;
            let x = &mut x[..t * c];
            let mut layers = |x: &mut [f32]| {
                for l in 0..cfg.n_layer {
                    let view = cache.layer_for(l, pos0, t);
                    // A sliding-window layer's lower bound (a conv layer's window is its
                    // taps, which the convolution bounds by itself).
                    let window = view.window.filter(|_| !cfg.layers[l].conv);
                    if let Some(w) = window {
                        window_starts.clear();
                        let p0 = view.pos0;
                        window_starts.extend((0..t).map(|i| (p0 + i + 1).saturating_sub(w)));
                    }
                    let starts = window.map(|_| &window_starts[..]);
                    let rope = match cfg.layers[l].rope {
                        LayerRope::None => None,
                        r => {
                            let j = usize::from(r == LayerRope::Local) * table;
                            Some((&cos[j..j + t * half], &sin[j..j + t * half]))
                        }
                    };
                    let ctx = BlockCtx {
                        cfg,
                        weights: &self.weights,
                        layer: l,
                        lora: adapter.map(|a| &a.layers[l]),
                        dropout: None,
                        rope,
                        precision: self.precision,
                        starts,
                    };
                    block_forward(&ctx, x, view.k, view.v, view.pos0, state, chunk, false);
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
        cache.set_len(pos0 + t);
        Ok(())
    }

    /// `logits (rows, n_vocab) ← hidden (rows, n_embd) · outputᵀ`.
    pub fn logits(&self, hidden: &[f32], logits: &mut [f32]) {
        let head = self
            .weights
            .matrix(&self.weights.output)
            .with_precision(self.precision);
        self.install(|| matmul_forward(logits, hidden, &head));
        if let Some(cap) = self.cfg.final_softcap {
            softcap(logits, cap);
        }
    }
}

/// The largest rank of an adapter's pairs (0 without one).
fn max_rank(adapter: Option<&Adapter>) -> usize {
    adapter.map_or(0, |a| a.pairs().map(|p| p.r).max().unwrap_or(0))
}

/// Final-logit soft-capping in place: `z ← cap · tanh(z / cap)`.
pub fn softcap(logits: &mut [f32], cap: f32) {
    for z in logits {
        *z = cap * (*z / cap).tanh();
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
    /// RoPE angles, (capacity, rope_dim/2) per table ([`ModelConfig::rope_tables`]).
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// The first key each query of a sliding-window layer may see.
    window_starts: Vec<usize>,
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
        let tables = cfg.rope_tables();
        Activations {
            capacity,
            max_rank,
            n_embd: c,
            t: 0,
            x: s.zeros(capacity * c),
            xn: s.zeros(capacity * c),
            rstd: s.zeros(capacity),
            cos: s.zeros(tables * capacity * half),
            sin: s.zeros(tables * capacity * half),
            window_starts: s.room(if cfg.window.is_some() { capacity } else { 0 }),
            state: BlockState::build(cfg, capacity, false, s),
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
