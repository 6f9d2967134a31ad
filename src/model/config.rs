//! Model hyper-parameters read from GGUF metadata (`{arch}.*` keys), validated once. What
//! an architecture's keys mean comes from its recipe ([`super::arch::Arch`]); the result is
//! plain numbers and per-layer facts (sliding window, which RoPE table) that the passes
//! read.

use super::arch::{AttnScale, WindowPattern};
use crate::error::{GgufError, ModelError, Result};
use crate::gguf::{GgufFile, Value};
use crate::kernels::RopeStyle;
use crate::lora::Target;

pub use super::arch::Arch;

/// Most transformer blocks a model may declare.
pub const MAX_LAYERS: u64 = 1 << 12;
/// Most attention heads (query or key/value).
pub const MAX_HEADS: u64 = 1 << 12;
/// Largest width: embedding length, feed-forward length, head size, and heads × head size.
pub const MAX_WIDTH: u64 = 1 << 20;
/// Longest context length.
pub const MAX_CONTEXT: u64 = 1 << 24;
/// Largest vocabulary (rows of `token_embd`).
pub const MAX_VOCAB: u64 = 1 << 22;

/// Which RoPE angles a layer's queries and keys are rotated by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerRope {
    /// The model's RoPE (`rope.freq_base`, its scaling and frequency factors).
    Global,
    /// The sliding-window layers' own base (`rope_base_local`), unscaled.
    Local,
    /// No RoPE (smollm3's NoPE layers).
    None,
}

/// What differs from layer to layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    /// A gated short-convolution block instead of attention (lfm2).
    pub conv: bool,
    /// Attends only to the last `window` positions (itself included).
    pub sliding: bool,
    pub rope: LayerRope,
}

impl LayerSpec {
    /// A full-attention layer with the model's RoPE.
    pub const GLOBAL: LayerSpec = LayerSpec {
        conv: false,
        sliding: false,
        rope: LayerRope::Global,
    };
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// The architecture's recipe.
    pub arch: &'static Arch,
    /// Vocabulary size (rows of `token_embd`).
    pub n_vocab: usize,
    /// Residual width.
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// SwiGLU hidden width.
    pub n_ff: usize,
    /// Training context length.
    pub n_ctx: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// Leading dimensions of each head that rotate.
    pub rope_dim: usize,
    /// `1 / factor` of linear RoPE scaling (1 when unscaled).
    pub rope_freq_scale: f32,
    pub rope_style: RopeStyle,
    /// RoPE base of the sliding-window layers (`rope.freq_base_swa`, or the recipe's).
    pub rope_base_local: f32,
    /// The sliding window (`attention.sliding_window`) of the layers marked `sliding`.
    pub window: Option<usize>,
    /// Per layer: sliding or full attention, and its RoPE.
    pub layers: Vec<LayerSpec>,
    /// Scale of the attention scores (1/√head_dim unless the recipe says otherwise).
    pub attn_scale: f32,
    /// Factor of the token embeddings (1, or √n_embd for gemma).
    pub embed_scale: f32,
    /// Final-logit soft-capping: logits become `cap · tanh(z / cap)`.
    pub final_softcap: Option<f32>,
    /// Factor on the RoPE cos and sin of the global table (LongRoPE's
    /// `rope.scaling.attn_factor`; 1 otherwise).
    pub rope_attn_factor: f32,
    /// Taps of the short convolutions (`shortconv.l_cache`; 0 without conv layers).
    pub conv_taps: usize,
}

impl ModelConfig {
    /// Reads and checks the configuration; `n_vocab` comes from the embedding tensor.
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig> {
        let arch_name = f.get_str("general.architecture")?;
        let Some(arch) = Arch::by_name(arch_name) else {
            return Err(ModelError::UnsupportedArchitecture {
                arch: arch_name.to_string(),
                supported: Arch::supported(),
            }
            .into());
        };
        let keys = ArchKeys { f, arch: arch_name };
        // Every size is bounded before anything is sized by it (or multiplied with it).
        let n_embd = keys.get("embedding_length", MAX_WIDTH)?;
        let n_layer = keys.get("block_count", MAX_LAYERS)?;
        let n_ff = keys.get("feed_forward_length", MAX_WIDTH)?;
        let n_head = keys.get("attention.head_count", MAX_HEADS)?;
        let (n_head_kv, conv_layers) = kv_heads(&keys, arch, n_head, n_layer)?;
        let conv_taps = conv_taps(&keys, arch, &conv_layers)?;
        let n_ctx = keys.get("context_length", MAX_CONTEXT)?;
        let rms_eps = f.get_f32(&keys.key("attention.layer_norm_rms_epsilon"))?;
        let rope_base = f.opt_f32(&keys.key("rope.freq_base"))?.unwrap_or(10000.0);
        let head_dim = head_size(&keys, n_embd, n_head, n_head_kv)?;
        let rope_dim = rotated_dims(&keys, head_dim)?;
        let rope_freq_scale = rope_scaling(&keys)?;
        let n_vocab = vocab_size(f)?;
        let window = sliding_window(&keys, arch)?;
        let sliding = sliding_layers(&keys, arch, window.is_some(), n_layer)?;
        let layers = layer_specs(arch, &conv_layers, &sliding);
        let rope_base_local = match f.opt_f32(&keys.key("rope.freq_base_swa"))? {
            Some(b) => b,
            None => arch.local_rope_base.unwrap_or(rope_base),
        };
        let final_softcap = final_softcap(&keys, arch)?;
        let attn_scale = attention_scale(arch, n_layer, n_embd, n_head, head_dim);
        let rope_attn_factor = rope_attn_factor(&keys, arch)?;
        let embed_scale = if arch.embed_scale_sqrt_width {
            (n_embd as f32).sqrt()
        } else {
            1.0
        };
        let cfg = ModelConfig {
            arch,
            n_vocab,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            n_ctx,
            rms_eps,
            rope_base,
            rope_dim,
            rope_freq_scale,
            rope_style: arch.rope_style,
            rope_base_local,
            window,
            layers,
            attn_scale,
            embed_scale,
            final_softcap,
            rope_attn_factor,
            conv_taps,
        };
        cfg.check_positive()?;
        Ok(cfg)
    }

    fn check_positive(&self) -> Result<()> {
        for (name, v) in [
            ("n_vocab", self.n_vocab),
            ("embedding_length", self.n_embd),
            ("block_count", self.n_layer),
            ("feed_forward_length", self.n_ff),
            ("context_length", self.n_ctx),
            ("head size", self.head_dim),
        ] {
            if v == 0 {
                return Err(ModelError::Config(format!("{name} is zero")).into());
            }
        }
        if !(self.rms_eps.is_finite()
            && self.rms_eps >= 0.0
            && self.rope_base.is_finite()
            && self.rope_base > 0.0
            && self.rope_base_local.is_finite()
            && self.rope_base_local > 0.0)
        {
            return Err(ModelError::Config(format!(
                "rms epsilon {} / rope base {} (local {}) out of range",
                self.rms_eps, self.rope_base, self.rope_base_local
            ))
            .into());
        }
        Ok(())
    }

    /// A llama-like configuration with every layer global (tests and fixtures).
    #[allow(clippy::too_many_arguments)]
    pub fn dense(
        arch: &'static Arch,
        n_vocab: usize,
        n_embd: usize,
        n_layer: usize,
        n_head: usize,
        n_head_kv: usize,
        n_ff: usize,
        n_ctx: usize,
    ) -> ModelConfig {
        let head_dim = n_embd / n_head.max(1);
        ModelConfig {
            arch,
            n_vocab,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            n_ctx,
            rms_eps: 1e-5,
            rope_base: 1e4,
            rope_dim: head_dim,
            rope_freq_scale: 1.0,
            rope_style: arch.rope_style,
            rope_base_local: 1e4,
            window: None,
            layers: vec![LayerSpec::GLOBAL; n_layer],
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            embed_scale: 1.0,
            final_softcap: None,
            rope_attn_factor: 1.0,
            conv_taps: 0,
        }
    }

    /// Whether block `l` has target `t`: a short-convolution block has its in/out
    /// projections and the MLP, an attention block q/k/v/o (or qkv) and the MLP.
    pub fn layer_has(&self, l: usize, t: Target) -> bool {
        let conv = self.layers[l].conv;
        let by_kind = match t {
            Target::ConvIn | Target::ConvOut => conv,
            Target::Q | Target::K | Target::V | Target::O | Target::Qkv => !conv,
            _ => true,
        };
        by_kind && self.arch.targets.contains(&t)
    }

    /// Whether some block is a short-convolution block.
    pub fn has_conv(&self) -> bool {
        self.layers.iter().any(|l| l.conv)
    }

    /// Where the LoRA of projection `t` (one of the seven separate ones the block computes)
    /// lives: the adapter target, and the rows of its B (and of its output) that belong to
    /// `t` — all of them, or `t`'s part of a fused target (q, k, v of `Qkv`; gate, up of
    /// `GateUp`).
    pub fn lora_part(&self, t: Target) -> (Target, std::ops::Range<usize>) {
        let (qd, kvd, ff) = (self.q_dim(), self.kv_dim(), self.n_ff);
        if !self.arch.fused {
            let out = crate::lora::target_shape(self, t).0;
            return (t, 0..out);
        }
        match t {
            Target::Q => (Target::Qkv, 0..qd),
            Target::K => (Target::Qkv, qd..qd + kvd),
            Target::V => (Target::Qkv, qd + kvd..qd + 2 * kvd),
            Target::Gate => (Target::GateUp, 0..ff),
            Target::Up => (Target::GateUp, ff..2 * ff),
            t => (t, 0..crate::lora::target_shape(self, t).0),
        }
    }

    /// Whether some layer rotates by the local RoPE table.
    pub fn has_local_rope(&self) -> bool {
        self.layers.iter().any(|l| l.rope == LayerRope::Local)
    }

    /// How many RoPE angle tables a pass fills: the global one, and the local one when
    /// some layer uses it.
    pub fn rope_tables(&self) -> usize {
        1 + usize::from(self.has_local_rope())
    }

    /// The sliding window of layer `l`, if it has one.
    pub fn window_of(&self, l: usize) -> Option<usize> {
        self.layers[l].sliding.then_some(self.window).flatten()
    }

    /// Width of the query projection output.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of the key/value projection outputs.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

// ------------------------------------------------------------------------------------------
// Readers of the hyper-parameter groups, in the order `from_gguf` reads them (which decides
// the error a file with several faults gets).

/// The `{arch}.*` keys of one file; every size read is bounded before anything is sized by
/// it.
struct ArchKeys<'f> {
    f: &'f GgufFile,
    /// The `general.architecture` name the keys are prefixed with.
    arch: &'f str,
}

impl ArchKeys<'_> {
    /// The full key of `k`: `{arch}.{k}`.
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    /// `v` (read from key `k`) if it is at most `limit`.
    fn limited(&self, k: &str, v: u32, limit: u64) -> Result<usize> {
        if u64::from(v) > limit {
            return Err(ModelError::Limit {
                key: self.key(k),
                value: v.into(),
                limit,
            }
            .into());
        }
        Ok(v as usize)
    }

    /// A required u32 size, at most `limit`.
    fn get(&self, k: &str, limit: u64) -> Result<usize> {
        self.limited(k, self.f.get_u32(&self.key(k))?, limit)
    }

    /// An optional u32 size, at most `limit`.
    fn opt(&self, k: &str, limit: u64) -> Result<Option<usize>> {
        self.f
            .opt_u32(&self.key(k))?
            .map(|v| self.limited(k, v, limit))
            .transpose()
    }
}

/// Key/value heads, and per layer whether it is a short-convolution block. Hybrid models
/// (lfm2) give one key/value head count per layer, 0 for the short-convolution layers.
fn kv_heads(
    keys: &ArchKeys<'_>,
    arch: &Arch,
    n_head: usize,
    n_layer: usize,
) -> Result<(usize, Vec<bool>)> {
    Ok(match keys.f.get(&keys.key("attention.head_count_kv")) {
        Some(Value::Array(a)) if arch.short_conv => {
            let per: Option<Vec<u64>> = a
                .iter()
                .map(|v| match v {
                    Value::U32(x) => Some(u64::from(x)),
                    Value::I32(x) => u64::try_from(x).ok(),
                    Value::U64(x) => Some(x),
                    _ => None,
                })
                .collect();
            let per = per.filter(|p| p.len() == n_layer).ok_or_else(|| {
                ModelError::Config(format!(
                    "{} must hold one count per layer ({n_layer})",
                    keys.key("attention.head_count_kv")
                ))
            })?;
            let attn: Vec<u64> = per.iter().copied().filter(|&k| k > 0).collect();
            let kv = attn.first().copied().unwrap_or(n_head as u64);
            if attn.iter().any(|&k| k != kv) || kv > MAX_HEADS {
                return Err(ModelError::Config(format!(
                    "attention layers with different key/value head counts ({attn:?}) are not supported"
                ))
                .into());
            }
            (kv as usize, per.iter().map(|&k| k == 0).collect())
        }
        _ => (
            keys.opt("attention.head_count_kv", MAX_HEADS)?
                .unwrap_or(n_head),
            vec![false; n_layer],
        ),
    })
}

/// Taps of the short convolutions (`shortconv.l_cache`), 0 without conv layers.
fn conv_taps(keys: &ArchKeys<'_>, arch: &Arch, conv_layers: &[bool]) -> Result<usize> {
    if !(arch.short_conv && conv_layers.iter().any(|&c| c)) {
        return Ok(0);
    }
    let l = keys.get("shortconv.l_cache", 1 << 10)?;
    if l < 2 {
        return Err(ModelError::Config(format!("shortconv.l_cache {l} must be at least 2")).into());
    }
    Ok(l)
}

/// The head size (`attention.key_length`, else n_embd / n_head), once the heads are known
/// to share the key/value heads evenly; values must have the same size.
fn head_size(keys: &ArchKeys<'_>, n_embd: usize, n_head: usize, n_head_kv: usize) -> Result<usize> {
    if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
        return Err(ModelError::Config(format!(
            "{n_head} attention heads cannot be shared by {n_head_kv} key/value heads"
        ))
        .into());
    }
    let head_dim = match keys.opt("attention.key_length", MAX_WIDTH)? {
        Some(d) => d,
        None if n_embd % n_head == 0 => n_embd / n_head,
        None => {
            return Err(ModelError::Config(format!(
                "embedding length {n_embd} is not a multiple of the {n_head} heads"
            ))
            .into())
        }
    };
    if let Some(v) = keys.f.opt_u32(&keys.key("attention.value_length"))? {
        if v as usize != head_dim {
            return Err(ModelError::Config(format!(
                "value head size {v} differs from key head size {head_dim}; not supported"
            ))
            .into());
        }
    }
    if n_head as u64 * head_dim as u64 > MAX_WIDTH {
        return Err(ModelError::Config(format!(
            "{n_head} heads of {head_dim} make a query width over {MAX_WIDTH}"
        ))
        .into());
    }
    Ok(head_dim)
}

/// Leading dimensions of each head that rotate (`rope.dimension_count`, else all): even,
/// at most the head size.
fn rotated_dims(keys: &ArchKeys<'_>, head_dim: usize) -> Result<usize> {
    let rope_dim = keys
        .opt("rope.dimension_count", MAX_WIDTH)?
        .unwrap_or(head_dim);
    if rope_dim > head_dim || rope_dim % 2 != 0 {
        return Err(ModelError::Config(format!(
            "rope.dimension_count {rope_dim} must be even and at most the head size {head_dim}"
        ))
        .into());
    }
    Ok(rope_dim)
}

/// The vocabulary size: the rows of `token_embd.weight`, at most [`MAX_VOCAB`].
fn vocab_size(f: &GgufFile) -> Result<usize> {
    let embd = f.require_tensor("token_embd.weight")?;
    if embd.info.n_rows() > MAX_VOCAB {
        return Err(ModelError::Limit {
            key: "token_embd.weight rows (vocabulary)".into(),
            value: embd.info.n_rows(),
            limit: MAX_VOCAB,
        }
        .into());
    }
    Ok(embd.info.n_rows() as usize)
}

/// The sliding window (`attention.sliding_window`; 0 = none) of recipes that have windows.
fn sliding_window(keys: &ArchKeys<'_>, arch: &Arch) -> Result<Option<usize>> {
    Ok(match arch.window {
        WindowPattern::None => None,
        WindowPattern::Period(_) => match keys.opt("attention.sliding_window", MAX_CONTEXT)? {
            Some(0) | None => None,
            Some(w) => Some(w),
        },
    })
}

/// Per layer: convolution or attention, sliding or full, and which RoPE (none every
/// `no_rope_every`-th layer, the local base on sliding layers of recipes that have one).
fn layer_specs(arch: &Arch, conv_layers: &[bool], sliding: &[bool]) -> Vec<LayerSpec> {
    (0..sliding.len())
        .map(|il| LayerSpec {
            conv: conv_layers[il],
            sliding: sliding[il],
            rope: match arch.no_rope_every {
                Some(n) if (il + 1) % n == 0 => LayerRope::None,
                _ if sliding[il] && arch.local_rope_base.is_some() => LayerRope::Local,
                _ => LayerRope::Global,
            },
        })
        .collect()
}

/// Final-logit soft-capping (`final_logit_softcapping`; 0 = none) of recipes that have it.
fn final_softcap(keys: &ArchKeys<'_>, arch: &Arch) -> Result<Option<f32>> {
    if !arch.final_softcap {
        return Ok(None);
    }
    match keys.f.opt_f32(&keys.key("final_logit_softcapping"))? {
        Some(0.0) => Ok(None),
        Some(c) if c.is_finite() && c > 0.0 => Ok(Some(c)),
        Some(c) => {
            Err(ModelError::Config(format!("final_logit_softcapping {c} must be positive")).into())
        }
        None => Ok(None),
    }
}

/// LongRoPE's factor on the global table's cos and sin (`rope.scaling.attn_factor`; 1
/// otherwise).
fn rope_attn_factor(keys: &ArchKeys<'_>, arch: &Arch) -> Result<f32> {
    if !arch.long_rope {
        return Ok(1.0);
    }
    match keys.f.opt_f32(&keys.key("rope.scaling.attn_factor"))? {
        Some(a) if a.is_finite() && a > 0.0 => Ok(a),
        Some(a) => {
            Err(ModelError::Config(format!("rope.scaling.attn_factor {a} must be positive")).into())
        }
        None => Ok(1.0),
    }
}

/// Which layers use the sliding window: llama.cpp's rule (`load_swa_pattern`): a flag per
/// layer when `attention.sliding_window_pattern` is an array, else its period (or the
/// recipe's), layer `il` local when `il % n < n − 1` (n = 0: every layer).
fn sliding_layers(
    keys: &ArchKeys<'_>,
    arch: &Arch,
    has_window: bool,
    n_layer: usize,
) -> Result<Vec<bool>> {
    let WindowPattern::Period(default) = arch.window else {
        return Ok(vec![false; n_layer]);
    };
    if !has_window {
        return Ok(vec![false; n_layer]);
    }
    let (f, k) = (keys.f, keys.key("attention.sliding_window_pattern"));
    let period = match f.get(&k) {
        Some(Value::Array(a)) => {
            let flags: Option<Vec<bool>> = a
                .iter()
                .map(|v| match v {
                    Value::Bool(b) => Some(b),
                    _ => None,
                })
                .collect();
            return match flags {
                Some(v) if v.len() == n_layer => Ok(v),
                _ => Err(ModelError::Config(format!(
                    "{k} must hold one bool per layer ({n_layer})"
                ))
                .into()),
            };
        }
        Some(_) => f.get_u32(&k)?,
        None => default,
    };
    Ok((0..n_layer as u32)
        .map(|il| period == 0 || il % period < period - 1)
        .collect())
}

/// The attention scores' scale by the recipe's rule ([`AttnScale`]).
fn attention_scale(
    arch: &Arch,
    n_layer: usize,
    n_embd: usize,
    n_head: usize,
    head_dim: usize,
) -> f32 {
    match arch.attn_scale {
        AttnScale::Gemma if n_layer == 62 => 1.0 / ((n_embd / n_head) as f32).sqrt(),
        _ => 1.0 / (head_dim as f32).sqrt(),
    }
}

/// `1 / factor` for linear scaling; other scaling types are refused by name.
fn rope_scaling(keys: &ArchKeys<'_>) -> Result<f32> {
    let (f, key) = (keys.f, |k: &str| keys.key(k));
    let ty = f.opt_str(&key("rope.scaling.type"))?;
    let factor = f.opt_f32(&key("rope.scaling.factor"))?;
    match (ty, factor) {
        // Older files write only `rope.scale_linear`, the linear factor itself.
        (None, _) => match f.opt_f32(&key("rope.scale_linear"))? {
            Some(x) if x.is_finite() && x > 0.0 => Ok(1.0 / x),
            Some(x) => {
                Err(ModelError::Config(format!("rope.scale_linear {x} must be positive")).into())
            }
            None => Ok(1.0),
        },
        (Some("none"), _) => Ok(1.0),
        (Some("linear"), Some(x)) if x.is_finite() && x > 0.0 => Ok(1.0 / x),
        (Some("linear"), Some(x)) => {
            Err(ModelError::Config(format!("rope.scaling.factor {x} must be positive")).into())
        }
        (Some("linear"), None) => Err(GgufError::MissingKey {
            key: key("rope.scaling.factor"),
        }
        .into()),
        (Some(other), _) => Err(ModelError::Config(format!(
            "RoPE scaling type {other:?} is not supported (supported: none, linear)"
        ))
        .into()),
    }
}
