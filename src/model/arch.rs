//! Architectures as data: one [`Arch`] recipe per `general.architecture`, saying how a
//! block is built (norm placement, QK-norm, biases, activation), how positions enter
//! (RoPE pairing, per-layer bases, layers without RoPE, sliding windows), how the
//! embedding and the logits are scaled, and how tensors and modules are named in GGUF
//! files and in Hugging Face PEFT files. The configuration ([`super::ModelConfig`]) reads
//! the recipe's metadata keys once; forward, backward, generation, LoRA targets, adapter
//! files, merge and `inspect` read the recipe, never the architecture's name.
//!
//! Adding an architecture is one recipe here (plus the kernels it genuinely lacks).

pub use crate::kernels::Glu;
use crate::kernels::RopeStyle;
use crate::lora::config::N_TARGETS;
use crate::lora::Target;

/// Whether a block's q/k/v projections carry biases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Biases {
    /// Never read.
    None,
    /// Used when the file has them (llama: some fine-tunes add them).
    IfPresent,
    /// Required (qwen2).
    Required,
}

/// How the sliding-window layers are chosen, when the file declares a window
/// (`{arch}.attention.sliding_window`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowPattern {
    /// No sliding windows.
    None,
    /// llama.cpp's `set_swa_pattern(n)` unless the file gives
    /// `attention.sliding_window_pattern` (a period, or one flag per layer): layer `il` is
    /// local when `il % n < n − 1` (gemma3: five local layers, then one global).
    Period(u32),
}

/// The scale of the attention scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnScale {
    /// 1/√head_dim.
    InvSqrtHeadDim,
    /// Gemma's `query_pre_attn_scalar`, which GGUF does not store: 1/√head_dim, except
    /// 1/√(n_embd/n_head) for the 27B model (62 layers), as llama.cpp does after
    /// gemma_pytorch.
    Gemma,
}

/// A recipe: everything that tells one architecture's blocks from another's.
#[derive(Debug, PartialEq)]
pub struct Arch {
    /// `general.architecture`.
    pub name: &'static str,
    /// The model families it covers (for `inspect` and the README).
    pub covers: &'static str,
    /// How RoPE pairs the rotated dimensions.
    pub rope_style: RopeStyle,
    /// llama.cpp's converter permuted the Q/K rows (llama): PEFT's rows are in the other
    /// order.
    pub permuted_qk: bool,
    pub biases: Biases,
    /// Per-head RMSNorm of Q and K before RoPE (`attn_q_norm`, `attn_k_norm`).
    pub qk_norm: bool,
    /// RMSNorm of the attention output and of the MLP output before each residual add
    /// (`attn_post_norm`, `ffn_post_norm`; gemma).
    pub post_norms: bool,
    /// The gated MLP's activation.
    pub activation: Glu,
    /// Token embeddings multiplied by √n_embd (gemma).
    pub embed_scale_sqrt_width: bool,
    /// Sliding-window layers.
    pub window: WindowPattern,
    /// The RoPE base of the sliding-window layers when the file has no
    /// `{arch}.rope.freq_base_swa` (`None`: the global base); those layers ignore RoPE
    /// scaling, as llama.cpp's `rope_freq_scale_train_swa` (1) does.
    pub local_rope_base: Option<f32>,
    /// Every n-th layer (`(il + 1) % n == 0`) has no RoPE (smollm3: 4).
    pub no_rope_every: Option<usize>,
    /// Reads `{arch}.final_logit_softcapping` (gemma): logits `cap·tanh(z/cap)`.
    pub final_softcap: bool,
    pub attn_scale: AttnScale,
    /// q, k and v are one matrix (`attn_qkv`; phi3), and gate and up one (`ffn_up` holding
    /// gate then up).
    pub fused: bool,
    /// LongRoPE (phi3): `rope_factors_long` / `rope_factors_short` per-pair divisors, long
    /// when the model's context exceeds `rope.scaling.original_context_length` (llama.cpp's
    /// rule with its default context), and `rope.scaling.attn_factor` on cos and sin.
    pub long_rope: bool,
    /// The linear layers that carry adapters, in [`Target`] order (`all-linear`; a
    /// layer has the ones its kind has, see [`super::ModelConfig::layer_has`]).
    pub targets: &'static [Target],
    /// Hybrid blocks (lfm2): layers whose `attention.head_count_kv` entry is 0 are gated
    /// short-convolution blocks (`shortconv.in_proj`, a causal depthwise convolution of
    /// `shortconv.l_cache` taps, `shortconv.out_proj`) instead of attention.
    pub short_conv: bool,
    /// The final norm's tensor (lfm2's converter names it `token_embd_norm`).
    pub output_norm: &'static str,
    /// The Hugging Face module paths of the targets: (parent, module) per [`Target`]
    /// index (empty for targets the architecture does not have).
    pub hf_modules: [(&'static str, &'static str); N_TARGETS],
}

/// Hugging Face module names of llama-like blocks.
const LLAMA_MODULES: [(&str, &str); N_TARGETS] = [
    ("self_attn", "q_proj"),
    ("self_attn", "k_proj"),
    ("self_attn", "v_proj"),
    ("self_attn", "o_proj"),
    ("mlp", "gate_proj"),
    ("mlp", "up_proj"),
    ("mlp", "down_proj"),
    ("", ""),
    ("", ""),
    ("", ""),
    ("", ""),
];

/// Hugging Face module names of phi3 blocks (fused qkv and gate/up).
const PHI3_MODULES: [(&str, &str); N_TARGETS] = [
    ("", ""),
    ("", ""),
    ("", ""),
    ("self_attn", "o_proj"),
    ("", ""),
    ("", ""),
    ("mlp", "down_proj"),
    ("self_attn", "qkv_proj"),
    ("mlp", "gate_up_proj"),
    ("", ""),
    ("", ""),
];

/// Hugging Face module names of lfm2 blocks (attention or short convolution, then the
/// MLP as `feed_forward.w1/w3/w2`).
const LFM2_MODULES: [(&str, &str); N_TARGETS] = [
    ("self_attn", "q_proj"),
    ("self_attn", "k_proj"),
    ("self_attn", "v_proj"),
    ("self_attn", "out_proj"),
    ("feed_forward", "w1"),
    ("feed_forward", "w3"),
    ("feed_forward", "w2"),
    ("", ""),
    ("", ""),
    ("conv", "in_proj"),
    ("conv", "out_proj"),
];

/// Llama 2/3.x, TinyLlama, SmolLM2, Mistral.
pub static LLAMA: Arch = Arch {
    name: "llama",
    covers: "Llama 2, Llama 3.x (3.2 1B/3B), TinyLlama, SmolLM / SmolLM2, Mistral 7B",
    rope_style: RopeStyle::Adjacent,
    permuted_qk: true,
    biases: Biases::IfPresent,
    qk_norm: false,
    post_norms: false,
    activation: Glu::Silu,
    embed_scale_sqrt_width: false,
    window: WindowPattern::None,
    local_rope_base: None,
    no_rope_every: None,
    final_softcap: false,
    attn_scale: AttnScale::InvSqrtHeadDim,
    fused: false,
    long_rope: false,
    targets: &Target::ALL,
    short_conv: false,
    output_norm: "output_norm.weight",
    hf_modules: LLAMA_MODULES,
};

/// Qwen2 / Qwen2.5: q/k/v biases, NEOX RoPE.
pub static QWEN2: Arch = Arch {
    name: "qwen2",
    covers: "Qwen2, Qwen2.5 (0.5B–7B)",
    rope_style: RopeStyle::HalfSplit,
    permuted_qk: false,
    biases: Biases::Required,
    ..LLAMA
};

/// Qwen3 (dense): QK-norm, NEOX RoPE, explicit head size, no biases.
pub static QWEN3: Arch = Arch {
    name: "qwen3",
    covers: "Qwen3 (0.6B, 1.7B, 4B, 8B dense)",
    rope_style: RopeStyle::HalfSplit,
    permuted_qk: false,
    biases: Biases::None,
    qk_norm: true,
    ..LLAMA
};

/// Gemma 3 (text): √d embedding scale, QK-norm, post-norms, GeGLU, sliding windows on five
/// of every six layers with their own RoPE base, optional final-logit soft-capping.
pub static GEMMA3: Arch = Arch {
    name: "gemma3",
    covers: "Gemma 3 (270M, 1B, 4B, 12B, 27B text)",
    rope_style: RopeStyle::HalfSplit,
    permuted_qk: false,
    biases: Biases::None,
    qk_norm: true,
    post_norms: true,
    activation: Glu::GeluTanh,
    embed_scale_sqrt_width: true,
    window: WindowPattern::Period(6),
    local_rope_base: Some(10_000.0),
    no_rope_every: None,
    final_softcap: true,
    attn_scale: AttnScale::Gemma,
    fused: false,
    long_rope: false,
    targets: &Target::ALL,
    short_conv: false,
    output_norm: "output_norm.weight",
    hf_modules: LLAMA_MODULES,
};

/// SmolLM3: llama blocks (converted like llama: adjacent pairs, permuted Q/K), no RoPE on
/// every fourth layer (NoPE), as llama.cpp's `n_no_rope_layer_step = 4`.
pub static SMOLLM3: Arch = Arch {
    name: "smollm3",
    covers: "SmolLM3 (3B)",
    biases: Biases::None,
    no_rope_every: Some(4),
    ..LLAMA
};

/// Phi-3 / Phi-4-mini: fused `attn_qkv` and gate/up, NEOX RoPE on the first
/// `rope.dimension_count` dimensions of each head (partial rotary), LongRoPE factors. Its
/// sliding window is off, as llama.cpp turns it off for Phi.
pub static PHI3: Arch = Arch {
    name: "phi3",
    covers: "Phi-3-mini (4k, 128k), Phi-3.5-mini, Phi-4-mini",
    rope_style: RopeStyle::HalfSplit,
    permuted_qk: false,
    biases: Biases::None,
    fused: true,
    long_rope: true,
    targets: &[Target::O, Target::Down, Target::Qkv, Target::GateUp],
    hf_modules: PHI3_MODULES,
    ..LLAMA
};

/// LFM2 (Liquid): hybrid blocks — gated short convolutions on the layers whose key/value
/// head count is 0, attention with QK-norm and NEOX RoPE on the others — each followed by
/// a SwiGLU MLP; tied head.
pub static LFM2: Arch = Arch {
    name: "lfm2",
    covers: "LFM2 (350M, 700M, 1.2B, 2.6B), LFM2.5",
    rope_style: RopeStyle::HalfSplit,
    permuted_qk: false,
    biases: Biases::None,
    qk_norm: true,
    short_conv: true,
    output_norm: "token_embd_norm.weight",
    targets: &[
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
        Target::ConvIn,
        Target::ConvOut,
    ],
    hf_modules: LFM2_MODULES,
    ..LLAMA
};

/// Every recipe files are opened with, in the order `inspect` and errors list them. A
/// recipe joins this list once it is verified against transformers and llama.cpp.
pub static ALL: [&Arch; 7] = [&LLAMA, &QWEN2, &GEMMA3, &QWEN3, &SMOLLM3, &PHI3, &LFM2];

impl Arch {
    /// The recipe of `general.architecture = name`.
    pub fn by_name(name: &str) -> Option<&'static Arch> {
        ALL.iter().copied().find(|a| a.name == name)
    }

    /// The names of every supported architecture, comma-separated.
    pub fn supported() -> String {
        ALL.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
    }

    /// The `general.architecture` string.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The Hugging Face module path of target `t` in block `layer` (as PEFT names it,
    /// without `base_model.model.`).
    pub fn hf_module_path(&self, layer: usize, t: Target) -> String {
        let (parent, module) = self.hf_modules[t.index()];
        format!("model.layers.{layer}.{parent}.{module}")
    }

    /// The target whose Hugging Face module is `parent.module`.
    pub fn target_of_hf(&self, parent: &str, module: &str) -> Option<Target> {
        self.targets
            .iter()
            .copied()
            .find(|t| self.hf_modules[t.index()] == (parent, module))
    }

    /// The target whose base tensor is `blk.N.{name}.weight` in this architecture.
    pub fn target_of_gguf(&self, name: &str) -> Option<Target> {
        self.targets
            .iter()
            .copied()
            .find(|t| t.gguf_tensor() == name)
    }

    /// The separate projections a fused target holds (itself for the others).
    pub fn fused_parts(&self, t: Target) -> &'static [Target] {
        match t {
            Target::Qkv => &[Target::Q, Target::K, Target::V],
            Target::GateUp => &[Target::Gate, Target::Up],
            Target::Q => &[Target::Q],
            Target::K => &[Target::K],
            Target::V => &[Target::V],
            Target::O => &[Target::O],
            Target::Gate => &[Target::Gate],
            Target::Up => &[Target::Up],
            Target::Down => &[Target::Down],
            Target::ConvIn => &[Target::ConvIn],
            Target::ConvOut => &[Target::ConvOut],
        }
    }

    /// The Hugging Face module name of target `t` (`q_proj`, …).
    pub fn hf_module(&self, t: Target) -> &'static str {
        self.hf_modules[t.index()].1
    }

    /// The architecture's block features beyond a plain llama block (for `inspect`).
    pub fn features(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.qk_norm {
            f.push("QK-norm");
        }
        if self.post_norms {
            f.push("post-attention and post-MLP norms");
        }
        if self.biases == Biases::Required {
            f.push("q/k/v biases");
        }
        if self.embed_scale_sqrt_width {
            f.push("embedding × √n_embd");
        }
        if self.no_rope_every.is_some() {
            f.push("layers without RoPE");
        }
        if self.fused {
            f.push("fused attn_qkv and gate/up");
        }
        if self.short_conv {
            f.push("gated short-convolution layers");
        }
        f
    }
}
