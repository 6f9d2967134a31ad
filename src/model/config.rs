//! Model hyper-parameters read from GGUF metadata (`{arch}.*` keys), validated once.

use crate::error::{GgufError, ModelError, Result};
use crate::gguf::GgufFile;
use crate::kernels::RopeStyle;

/// Architectures this engine runs, as written in `general.architecture`.
pub const SUPPORTED_ARCHITECTURES: &str = "llama, qwen2";

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

/// A supported architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3, TinyLlama, SmolLM2, Mistral: GQA, SwiGLU, RMSNorm, adjacent-pair RoPE on
    /// converter-permuted Q/K rows.
    Llama,
    /// Qwen2: Llama plus q/k/v biases and half-split (NEOX) RoPE.
    Qwen2,
}

impl Arch {
    /// The `general.architecture` string.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
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
}

impl ModelConfig {
    /// Reads and checks the configuration; `n_vocab` comes from the embedding tensor.
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig> {
        let arch_name = f.get_str("general.architecture")?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(ModelError::UnsupportedArchitecture {
                    arch: other.to_string(),
                    supported: SUPPORTED_ARCHITECTURES,
                }
                .into())
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        // Every size is bounded before anything is sized by it (or multiplied with it).
        let limited = |k: &str, v: u32, limit: u64| -> Result<usize> {
            if u64::from(v) > limit {
                return Err(ModelError::Limit {
                    key: key(k),
                    value: v.into(),
                    limit,
                }
                .into());
            }
            Ok(v as usize)
        };
        let get = |k: &str, limit: u64| limited(k, f.get_u32(&key(k))?, limit);
        let opt = |k: &str, limit: u64| -> Result<Option<usize>> {
            f.opt_u32(&key(k))?
                .map(|v| limited(k, v, limit))
                .transpose()
        };
        let n_embd = get("embedding_length", MAX_WIDTH)?;
        let n_layer = get("block_count", MAX_LAYERS)?;
        let n_ff = get("feed_forward_length", MAX_WIDTH)?;
        let n_head = get("attention.head_count", MAX_HEADS)?;
        let n_head_kv = opt("attention.head_count_kv", MAX_HEADS)?.unwrap_or(n_head);
        let n_ctx = get("context_length", MAX_CONTEXT)?;
        let rms_eps = f.get_f32(&key("attention.layer_norm_rms_epsilon"))?;
        let rope_base = f.opt_f32(&key("rope.freq_base"))?.unwrap_or(10000.0);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(ModelError::Config(format!(
                "{n_head} attention heads cannot be shared by {n_head_kv} key/value heads"
            ))
            .into());
        }
        let head_dim = match opt("attention.key_length", MAX_WIDTH)? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(ModelError::Config(format!(
                    "embedding length {n_embd} is not a multiple of the {n_head} heads"
                ))
                .into())
            }
        };
        if let Some(v) = f.opt_u32(&key("attention.value_length"))? {
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
        let rope_dim = opt("rope.dimension_count", MAX_WIDTH)?.unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(ModelError::Config(format!(
                "rope.dimension_count {rope_dim} must be even and at most the head size {head_dim}"
            ))
            .into());
        }
        let rope_freq_scale = rope_scaling(f, &key)?;
        let embd = f.require_tensor("token_embd.weight")?;
        if embd.info.n_rows() > MAX_VOCAB {
            return Err(ModelError::Limit {
                key: "token_embd.weight rows (vocabulary)".into(),
                value: embd.info.n_rows(),
                limit: MAX_VOCAB,
            }
            .into());
        }
        let n_vocab = embd.info.n_rows() as usize;
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
            rope_style: match arch {
                Arch::Llama => RopeStyle::Adjacent,
                Arch::Qwen2 => RopeStyle::HalfSplit,
            },
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
            && self.rope_base > 0.0)
        {
            return Err(ModelError::Config(format!(
                "rms epsilon {} / rope base {} out of range",
                self.rms_eps, self.rope_base
            ))
            .into());
        }
        Ok(())
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

/// `1 / factor` for linear scaling; other scaling types are refused by name.
fn rope_scaling(f: &GgufFile, key: &dyn Fn(&str) -> String) -> Result<f32> {
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
