//! The forward pass with f32 activations: embedding lookup, per block RMSNorm → q/k/v
//! (+ biases) → RoPE → causal GQA attention over the KV cache → output projection →
//! residual → RMSNorm → SwiGLU MLP → residual; then the final norm. Logits are a separate
//! step ([`Model::logits`]) so callers compute them only for the rows they need.

use std::path::Path;
use std::sync::Arc;

use super::config::ModelConfig;
use super::weights::Weights;
use crate::error::{Error, ModelError, Result};
use crate::gguf::GgufFile;
use crate::kernels::{
    attention_forward, inverse_frequencies, matmul_forward, rmsnorm_forward, rope_forward,
    rope_table, swiglu_forward, AttnShape,
};

/// A loaded model and the thread pool its kernels run on.
#[derive(Debug)]
pub struct Model {
    pub cfg: ModelConfig,
    pub weights: Weights,
    inv_freq: Vec<f64>,
    pool: Arc<rayon::ThreadPool>,
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
        })
    }

    /// Worker threads the kernels use.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `f` on the model's thread pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// Runs `tokens` at positions `cache.len() ..` through every block, appending their keys
    /// and values to `cache`, and leaves the final-normed hidden states in `act.hidden()`
    /// (tokens.len(), n_embd). At most `act.capacity()` tokens per call.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        act: &mut Activations,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let t = tokens.len();
        if t > act.capacity {
            return Err(Error::InvalidArgument(format!(
                "{t} tokens exceed the activation capacity {}",
                act.capacity
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
        let (c, qd, kvd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
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
        let shape = AttnShape {
            n_head: cfg.n_head,
            n_head_kv: cfg.n_head_kv,
            head_dim: cfg.head_dim,
        };
        self.install(|| {
            let w = &self.weights;
            let (cos, sin) = (&act.cos[..t * half], &act.sin[..t * half]);
            for (l, lw) in w.layers.iter().enumerate() {
                let x = &mut act.x[..t * c]; // (T, C) residual stream
                let xn = &mut act.xn[..t * c]; // (T, C)
                rmsnorm_forward(xn, &mut act.rstd[..t], x, &lw.attn_norm, cfg.rms_eps);
                let q = &mut act.q[..t * qd]; // (T, n_head·head_dim)
                matmul_forward(q, xn, &w.matrix(&lw.wq));
                add_bias(q, lw.bq.as_deref());
                rope_forward(q, cfg.n_head, cfg.head_dim, cos, sin, cfg.rope_style);
                let (kc, vc) = cache.layer_mut(l);
                let k = &mut kc[pos0 * kvd..(pos0 + t) * kvd]; // (T, kv_dim), straight into the cache
                matmul_forward(k, xn, &w.matrix(&lw.wk));
                add_bias(k, lw.bk.as_deref());
                rope_forward(k, cfg.n_head_kv, cfg.head_dim, cos, sin, cfg.rope_style);
                let v = &mut vc[pos0 * kvd..(pos0 + t) * kvd];
                matmul_forward(v, xn, &w.matrix(&lw.wv));
                add_bias(v, lw.bv.as_deref());
                let att = &mut act.att[..t * qd];
                let n_kv = (pos0 + t) * kvd;
                attention_forward(att, q, &kc[..n_kv], &vc[..n_kv], pos0, shape);
                let proj = &mut act.proj[..t * c];
                matmul_forward(proj, att, &w.matrix(&lw.wo));
                add_into(x, proj);
                rmsnorm_forward(xn, &mut act.rstd[..t], x, &lw.ffn_norm, cfg.rms_eps);
                let gate = &mut act.gate[..t * ff]; // (T, n_ff)
                let up = &mut act.up[..t * ff];
                matmul_forward(gate, xn, &w.matrix(&lw.w_gate));
                matmul_forward(up, xn, &w.matrix(&lw.w_up));
                swiglu_forward(gate, up);
                matmul_forward(proj, gate, &w.matrix(&lw.w_down));
                add_into(x, proj);
            }
            rmsnorm_forward(
                &mut act.xn[..t * c],
                &mut act.rstd[..t],
                &act.x[..t * c],
                &w.output_norm,
                cfg.rms_eps,
            );
        });
        cache.len = pos0 + t;
        Ok(())
    }

    /// `logits (rows, n_vocab) ← hidden (rows, n_embd) · outputᵀ`.
    pub fn logits(&self, hidden: &[f32], logits: &mut [f32]) {
        let head = self.weights.matrix(&self.weights.output);
        self.install(|| matmul_forward(logits, hidden, &head));
    }
}

fn add_bias(y: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(b.len()) {
            add_into(row, b);
        }
    }
}

fn add_into(y: &mut [f32], x: &[f32]) {
    for (a, &b) in y.iter_mut().zip(x) {
        *a += b;
    }
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
        let n = capacity
            .checked_mul(cfg.kv_dim())
            .filter(|n| n.checked_mul(8 * cfg.n_layer).is_some())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "a KV cache of {capacity} positions does not fit in memory"
                ))
            })?;
        let layers = (0..cfg.n_layer)
            .map(|_| (vec![0f32; n], vec![0f32; n]))
            .collect();
        Ok(KvCache {
            kv_dim: cfg.kv_dim(),
            capacity,
            len: 0,
            layers,
        })
    }

    /// Bytes a cache of `capacity` positions holds.
    pub fn bytes_for(cfg: &ModelConfig, capacity: usize) -> usize {
        2 * 4 * cfg.n_layer * capacity * cfg.kv_dim()
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
    n_embd: usize,
    t: usize,
    x: Vec<f32>,
    xn: Vec<f32>,
    rstd: Vec<f32>,
    q: Vec<f32>,
    att: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Activations {
    /// Buffers for `capacity` tokens of model `cfg`.
    pub fn new(cfg: &ModelConfig, capacity: usize) -> Activations {
        let (c, qd, ff, half) = (cfg.n_embd, cfg.q_dim(), cfg.n_ff, cfg.rope_dim / 2);
        let z = |n: usize| vec![0f32; capacity * n];
        Activations {
            capacity,
            n_embd: c,
            t: 0,
            x: z(c),
            xn: z(c),
            rstd: z(1),
            q: z(qd),
            att: z(qd),
            proj: z(c),
            gate: z(ff),
            up: z(ff),
            cos: z(half),
            sin: z(half),
        }
    }

    /// Bytes held for `capacity` tokens.
    pub fn bytes_for(cfg: &ModelConfig, capacity: usize) -> usize {
        4 * capacity * (3 * cfg.n_embd + 1 + 2 * cfg.q_dim() + 2 * cfg.n_ff + cfg.rope_dim)
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
