//! Small synthetic models written deterministically with the crate's own GGUF writer and
//! quantizer. Their oracle losses were computed once from the exact bytes these builders
//! produce (the FNV-1a hash recorded beside each golden proves it) by
//! `shared/oracle/peft_reference.py`; see `tests/golden/oracle/README.md`.

use pocketlora::internals::gguf::{Array, GgufWriter, Value, ValueType};
use pocketlora::internals::quant::{quantize, GgmlType};

/// The shape and encodings of a synthetic model.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: &'static str,
    pub arch: &'static str,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub n_ctx: usize,
    pub tied: bool,
    pub qkv_bias: bool,
    pub rope_base: f32,
    pub embd_ty: GgmlType,
    pub output_ty: GgmlType,
    /// Types of attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down, cycled
    /// over layers.
    pub matrix_types: [GgmlType; 7],
    /// `rope.scaling.type = linear` with this factor.
    pub rope_linear: Option<f32>,
    /// A Llama-3.1-style `rope_freqs.weight` tensor (one divisor per rotated pair).
    pub rope_freqs: Option<Vec<f32>>,
    /// What the newer architectures add (head size, windows, soft-cap, ...).
    pub features: Features,
    pub seed: u64,
}

/// The settings of the newer architectures: which tensors a block has follows from the
/// architecture (gemma3: QK-norm and post-norms; qwen3: QK-norm).
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    /// `attention.key_length` / `value_length` (head size other than n_embd / n_head).
    pub head_dim: Option<usize>,
    /// `attention.sliding_window`.
    pub sliding_window: Option<u32>,
    /// `attention.sliding_window_pattern` (a period).
    pub swa_pattern: Option<u32>,
    /// `rope.freq_base_swa`.
    pub rope_base_swa: Option<f32>,
    /// `final_logit_softcapping`.
    pub final_softcap: Option<f32>,
    /// `rope.dimension_count` below the head size (partial rotary).
    pub rope_dim: Option<usize>,
    /// LongRoPE: `rope_factors_long.weight`, `rope_factors_short.weight`,
    /// `rope.scaling.original_context_length` and `rope.scaling.attn_factor`.
    pub long_rope: Option<(Vec<f32>, Vec<f32>, u32, f32)>,
    /// lfm2: which layers are short-convolution blocks, and their taps.
    pub conv_layers: Option<Vec<bool>>,
    pub conv_taps: u32,
}

impl Features {
    pub const NONE: Features = Features {
        head_dim: None,
        sliding_window: None,
        swa_pattern: None,
        rope_base_swa: None,
        final_softcap: None,
        rope_dim: None,
        long_rope: None,
        conv_layers: None,
        conv_taps: 0,
    };
}

/// Whether blocks of `arch` carry per-head Q/K norms.
fn has_qk_norm(arch: &str) -> bool {
    matches!(arch, "gemma3" | "qwen3" | "lfm2")
}

/// Whether `arch` stores q/k/v and gate/up fused (phi3).
fn fused(arch: &str) -> bool {
    arch == "phi3"
}

/// Whether blocks of `arch` carry post-attention and post-MLP norms.
fn has_post_norms(arch: &str) -> bool {
    arch == "gemma3"
}

/// A llama with an untied output head: embedding 128, 4 heads of 32, 2 KV heads.
pub fn llama_untied() -> Spec {
    Spec {
        name: "synth-llama-untied",
        arch: "llama",
        n_vocab: 96,
        n_embd: 128,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 192,
        n_ctx: 256,
        tied: false,
        qkv_bias: false,
        rope_base: 10000.0,
        embd_ty: GgmlType::F32,
        output_ty: GgmlType::Q8_0,
        matrix_types: [
            GgmlType::F32,
            GgmlType::Q8_0,
            GgmlType::F32,
            GgmlType::Q4_0,
            GgmlType::F32,
            GgmlType::Q8_0,
            GgmlType::F32,
        ],
        rope_linear: None,
        rope_freqs: None,
        features: Features::NONE,
        seed: 11,
    }
}

/// `llama_untied` with linear RoPE scaling (factor 4).
pub fn llama_rope_linear() -> Spec {
    Spec {
        name: "synth-llama-rope-linear",
        rope_linear: Some(4.0),
        ..llama_untied()
    }
}

/// `llama_untied` with per-pair RoPE frequency divisors rising from 1 to 8, as Llama 3.1's
/// long-context factors do.
pub fn llama_rope_freqs() -> Spec {
    let factors = (0..16)
        .map(|i| 1.0 + 7.0 * (i as f32 / 15.0).powi(2))
        .collect();
    Spec {
        name: "synth-llama-rope-freqs",
        rope_freqs: Some(factors),
        ..llama_untied()
    }
}

/// Llama 3.x's RoPE scaling (`rope_type = "llama3"`) as llama.cpp's converter writes it:
/// one `rope_freqs.weight` divisor per rotated pair from (factor, low, high, original
/// context), here 8, 1, 4 and 64 — an original context short enough that the 70-token
/// records reach the scaled and the smoothed frequencies.
pub fn llama3_rope_factors(head_dim: usize, base: f64) -> Vec<f32> {
    let (factor, low, high, orig) = (8.0f64, 1.0f64, 4.0f64, 64.0f64);
    let (low_wl, high_wl) = (orig / low, orig / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / base.powf(2.0 * i as f64 / head_dim as f64);
            let wl = 2.0 * std::f64::consts::PI / freq;
            (if wl < high_wl {
                1.0
            } else if wl > low_wl {
                factor
            } else {
                let smooth = (orig / wl - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }) as f32
        })
        .collect()
}

/// A Llama 3.2-style model: base 500 000, Llama 3 RoPE scaling in `rope_freqs.weight`
/// ([`llama3_rope_factors`]), GQA; F32 and Q8_0 matrices; an untied head (tied, this random
/// model only repeats its last token).
pub fn llama3() -> Spec {
    Spec {
        name: "synth-llama3",
        arch: "llama",
        n_vocab: 100,
        n_embd: 128,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 256,
        n_ctx: 256,
        tied: false,
        qkv_bias: false,
        rope_base: 500_000.0,
        embd_ty: GgmlType::F32,
        output_ty: GgmlType::F32,
        matrix_types: [
            GgmlType::F32,
            GgmlType::Q8_0,
            GgmlType::F32,
            GgmlType::F32,
            GgmlType::Q8_0,
            GgmlType::F32,
            GgmlType::F32,
        ],
        rope_linear: None,
        rope_freqs: Some(llama3_rope_factors(32, 500_000.0)),
        features: Features::NONE,
        seed: 77,
    }
}

/// A qwen2 with q/k/v biases and half-split RoPE.
pub fn qwen2_biases() -> Spec {
    Spec {
        name: "synth-qwen2",
        arch: "qwen2",
        n_vocab: 80,
        n_embd: 64,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 160,
        n_ctx: 256,
        tied: true,
        qkv_bias: true,
        rope_base: 1_000_000.0,
        embd_ty: GgmlType::F32,
        output_ty: GgmlType::F32,
        matrix_types: [GgmlType::F32; 7],
        rope_linear: None,
        rope_freqs: None,
        features: Features::NONE,
        seed: 22,
    }
}

/// A 256-wide llama whose matrices are Q4_K, Q6_K, F16 and BF16.
pub fn llama_kquants() -> Spec {
    Spec {
        name: "synth-llama-kquants",
        arch: "llama",
        n_vocab: 72,
        n_embd: 256,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 512,
        n_ctx: 256,
        tied: false,
        qkv_bias: false,
        rope_base: 10000.0,
        embd_ty: GgmlType::Q6_K,
        output_ty: GgmlType::Q4_K,
        matrix_types: [
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q6_K,
            GgmlType::Q4_K,
            GgmlType::F16,
        ],
        rope_linear: None,
        rope_freqs: None,
        features: Features::NONE,
        seed: 33,
    }
}

/// A gemma3 with every feature its recipe has: 4 heads of 32 over a 64-wide residual (head
/// size other than n_embd / n_head) sharing one key/value head, QK-norm, post-norms,
/// GeGLU, √d embeddings, a sliding window of 8 (shorter than most records) on layers 0, 1
/// and 3 (pattern 3) with RoPE base 10 000 there and 1e6 on the global layer 2, soft-capped
/// logits (cap 8), a Q8_0 embedding and an untied Q5_0 head (a tied head makes this
/// random model repeat its last token); F32, Q8_0, Q5_0 and Q4_0 matrices.
pub fn gemma3() -> Spec {
    Spec {
        name: "synth-gemma3",
        arch: "gemma3",
        n_vocab: 96,
        n_embd: 64,
        n_layer: 4,
        n_head: 4,
        n_head_kv: 1,
        n_ff: 128,
        n_ctx: 256,
        tied: false,
        qkv_bias: false,
        rope_base: 1_000_000.0,
        embd_ty: GgmlType::Q8_0,
        output_ty: GgmlType::Q5_0,
        matrix_types: [
            GgmlType::F32,
            GgmlType::Q8_0,
            GgmlType::Q5_0,
            GgmlType::F32,
            GgmlType::Q4_0,
            GgmlType::F32,
            GgmlType::Q8_0,
        ],
        rope_linear: None,
        rope_freqs: None,
        features: Features {
            head_dim: Some(32),
            sliding_window: Some(8),
            swa_pattern: Some(3),
            rope_base_swa: Some(10_000.0),
            final_softcap: Some(8.0),
            rope_dim: None,
            long_rope: None,
            conv_layers: None,
            conv_taps: 0,
        },
        seed: 44,
    }
}

/// A qwen3: QK-norm, NEOX RoPE, 4 heads of 24 over a 64-wide residual, 2 key/value heads,
/// an untied Q8_0 head; F32 and Q8_0 matrices.
pub fn qwen3() -> Spec {
    Spec {
        name: "synth-qwen3",
        arch: "qwen3",
        n_vocab: 88,
        n_embd: 64,
        n_layer: 3,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 160,
        n_ctx: 256,
        tied: false,
        qkv_bias: false,
        rope_base: 1_000_000.0,
        embd_ty: GgmlType::F32,
        output_ty: GgmlType::Q8_0,
        matrix_types: [
            GgmlType::Q8_0,
            GgmlType::F32,
            GgmlType::Q8_0,
            GgmlType::F32,
            GgmlType::F32,
            GgmlType::Q8_0,
            GgmlType::F32,
        ],
        rope_linear: None,
        rope_freqs: None,
        features: Features {
            head_dim: Some(24),
            ..Features::NONE
        },
        seed: 55,
    }
}

/// `gemma3` with every tensor F32, for llama.cpp comparisons (ggml quantizes activations
/// in quantized matmuls, which would hide what the comparison is for).
pub fn gemma3_f32() -> Spec {
    Spec {
        name: "synth-gemma3-f32",
        embd_ty: GgmlType::F32,
        output_ty: GgmlType::F32,
        matrix_types: [GgmlType::F32; 7],
        ..gemma3()
    }
}

/// `qwen3` with every tensor F32 (see [`gemma3_f32`]).
pub fn qwen3_f32() -> Spec {
    Spec {
        name: "synth-qwen3-f32",
        embd_ty: GgmlType::F32,
        output_ty: GgmlType::F32,
        matrix_types: [GgmlType::F32; 7],
        ..qwen3()
    }
}

/// A phi3 (named synth-phi: llama.cpp gives names containing "phi3" Phi-3's special
/// tokens, which this vocabulary does not have): fused attn_qkv and gate/up (ffn_up of 2·n_ff rows), NEOX RoPE on the first 12
/// of each head's 24 dimensions (partial rotary), LongRoPE factors (long ones chosen: the
/// context, 512, is over the original 64) and attention factor √(1 + ln 8 / ln 64); GQA,
/// an untied Q8_0 head; F32 and Q8_0 matrices.
pub fn phi3() -> Spec {
    let long = vec![1.0, 1.3, 1.8, 2.5, 3.2, 4.0];
    let short = vec![1.0, 1.05, 1.1, 1.2, 1.3, 1.5];
    Spec {
        name: "synth-phi",
        arch: "phi3",
        n_vocab: 90,
        n_embd: 96,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 128,
        n_ctx: 512,
        tied: false,
        qkv_bias: false,
        rope_base: 10_000.0,
        embd_ty: GgmlType::F32,
        output_ty: GgmlType::Q8_0,
        matrix_types: [
            GgmlType::F32,
            GgmlType::F32,
            GgmlType::F32,
            GgmlType::Q8_0,
            GgmlType::F32,
            GgmlType::Q8_0,
            GgmlType::F32,
        ],
        rope_linear: None,
        rope_freqs: None,
        features: Features {
            rope_dim: Some(12),
            long_rope: Some((long, short, 64, (1.0f32 + 8f32.ln() / 64f32.ln()).sqrt())),
            ..Features::NONE
        },
        seed: 88,
    }
}

/// `phi3` with every tensor F32 (see [`gemma3_f32`]).
pub fn phi3_f32() -> Spec {
    Spec {
        name: "synth-phi-f32",
        embd_ty: GgmlType::F32,
        output_ty: GgmlType::F32,
        matrix_types: [GgmlType::F32; 7],
        ..phi3()
    }
}

/// An lfm2: short-convolution blocks on layers 0, 1 and 3 (3 taps; head_count_kv 0 there)
/// and an attention block with QK-norm on layer 2, SwiGLU MLPs; an untied Q8_0 head (tied,
/// this random model repeats its last token); F32 and Q8_0 matrices.
pub fn lfm2() -> Spec {
    Spec {
        name: "synth-lfm2",
        arch: "lfm2",
        n_vocab: 84,
        n_embd: 64,
        n_layer: 4,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 128,
        n_ctx: 256,
        tied: false,
        qkv_bias: false,
        rope_base: 1_000_000.0,
        embd_ty: GgmlType::F32,
        output_ty: GgmlType::Q8_0,
        matrix_types: [
            GgmlType::F32,
            GgmlType::Q8_0,
            GgmlType::F32,
            GgmlType::F32,
            GgmlType::Q8_0,
            GgmlType::F32,
            GgmlType::F32,
        ],
        rope_linear: None,
        rope_freqs: None,
        features: Features {
            conv_layers: Some(vec![true, true, false, true]),
            conv_taps: 3,
            ..Features::NONE
        },
        seed: 99,
    }
}

/// `lfm2` with every tensor F32 (see [`gemma3_f32`]).
pub fn lfm2_f32() -> Spec {
    Spec {
        name: "synth-lfm2-f32",
        embd_ty: GgmlType::F32,
        output_ty: GgmlType::F32,
        matrix_types: [GgmlType::F32; 7],
        ..lfm2()
    }
}

/// A smollm3: llama blocks with no RoPE on layer 3 (every fourth), tied head.
pub fn smollm3() -> Spec {
    Spec {
        name: "synth-smollm3",
        arch: "smollm3",
        n_vocab: 80,
        n_embd: 64,
        n_layer: 4,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 128,
        n_ctx: 256,
        tied: true,
        qkv_bias: false,
        rope_base: 5_000_000.0,
        embd_ty: GgmlType::F32,
        output_ty: GgmlType::F32,
        matrix_types: [GgmlType::F32; 7],
        rope_linear: None,
        rope_freqs: None,
        features: Features::NONE,
        seed: 66,
    }
}

/// Deterministic uniform numbers (xorshift64*), identical on every platform.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((v >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

fn tensor(w: &mut GgufWriter, name: &str, ty: GgmlType, values: &[f32], dims: &[u64]) {
    let bytes = quantize(ty, values, dims[0] as usize).expect("quantize synthetic tensor");
    w.add_tensor(name, ty, dims, bytes)
        .expect("add synthetic tensor");
}

/// The GGUF bytes of `s`.
pub fn build(s: &Spec) -> Vec<u8> {
    writer(s).to_bytes()
}

/// A writer holding the whole model `s`, for tests that alter it before writing.
pub fn writer(s: &Spec) -> GgufWriter {
    let mut r = Lcg::new(s.seed);
    let mut w = GgufWriter::new();
    let a = s.arch;
    let hd = s.features.head_dim.unwrap_or(s.n_embd / s.n_head);
    let (q, kv) = (s.n_head * hd, s.n_head_kv * hd);
    w.set("general.architecture", Value::String(a.into()));
    w.set("general.name", Value::String(s.name.into()));
    w.set(format!("{a}.context_length"), Value::U32(s.n_ctx as u32));
    w.set(format!("{a}.embedding_length"), Value::U32(s.n_embd as u32));
    w.set(format!("{a}.block_count"), Value::U32(s.n_layer as u32));
    w.set(
        format!("{a}.feed_forward_length"),
        Value::U32(s.n_ff as u32),
    );
    w.set(
        format!("{a}.attention.head_count"),
        Value::U32(s.n_head as u32),
    );
    match &s.features.conv_layers {
        // lfm2: one key/value head count per layer, 0 for the conv layers.
        Some(conv) => {
            let per: Vec<Value> = conv
                .iter()
                .map(|&c| Value::U32(if c { 0 } else { s.n_head_kv as u32 }))
                .collect();
            w.set(
                format!("{a}.attention.head_count_kv"),
                Value::Array(Array::new(ValueType::U32, per)),
            );
            w.set(
                format!("{a}.shortconv.l_cache"),
                Value::U32(s.features.conv_taps),
            );
        }
        None => w.set(
            format!("{a}.attention.head_count_kv"),
            Value::U32(s.n_head_kv as u32),
        ),
    }
    w.set(
        format!("{a}.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-5),
    );
    w.set(format!("{a}.rope.freq_base"), Value::F32(s.rope_base));
    w.set(
        format!("{a}.rope.dimension_count"),
        Value::U32(s.features.rope_dim.unwrap_or(hd) as u32),
    );
    let f = &s.features;
    if let Some(d) = f.head_dim {
        w.set(format!("{a}.attention.key_length"), Value::U32(d as u32));
        w.set(format!("{a}.attention.value_length"), Value::U32(d as u32));
    }
    if let Some(n) = f.sliding_window {
        w.set(format!("{a}.attention.sliding_window"), Value::U32(n));
    }
    if let Some(n) = f.swa_pattern {
        w.set(
            format!("{a}.attention.sliding_window_pattern"),
            Value::U32(n),
        );
    }
    if let Some(b) = f.rope_base_swa {
        w.set(format!("{a}.rope.freq_base_swa"), Value::F32(b));
    }
    if let Some(c) = f.final_softcap {
        w.set(format!("{a}.final_logit_softcapping"), Value::F32(c));
    }
    if let Some((_, _, orig, attn)) = &f.long_rope {
        w.set(
            format!("{a}.rope.scaling.original_context_length"),
            Value::U32(*orig),
        );
        w.set(format!("{a}.rope.scaling.attn_factor"), Value::F32(*attn));
    }
    w.set(format!("{a}.vocab_size"), Value::U32(s.n_vocab as u32));
    if let Some(f) = s.rope_linear {
        w.set(
            format!("{a}.rope.scaling.type"),
            Value::String("linear".into()),
        );
        w.set(format!("{a}.rope.scaling.factor"), Value::F32(f));
    }
    let tokens: Vec<Value> = (0..s.n_vocab)
        .map(|i| {
            Value::String(match i {
                0 => "<unk>".into(),
                1 => "<s>".into(),
                2 => "</s>".into(),
                _ => format!("t{i}"),
            })
        })
        .collect();
    let scores: Vec<Value> = (0..s.n_vocab).map(|i| Value::F32(-(i as f32))).collect();
    let types: Vec<Value> = (0..s.n_vocab)
        .map(|i| {
            Value::I32(if i < 3 {
                if i == 0 {
                    2
                } else {
                    3
                }
            } else {
                1
            })
        })
        .collect();
    w.set("tokenizer.ggml.model", Value::String("llama".into()));
    w.set(
        "tokenizer.ggml.tokens",
        Value::Array(Array::new(ValueType::String, tokens)),
    );
    w.set(
        "tokenizer.ggml.scores",
        Value::Array(Array::new(ValueType::F32, scores)),
    );
    w.set(
        "tokenizer.ggml.token_type",
        Value::Array(Array::new(ValueType::I32, types)),
    );
    w.set("tokenizer.ggml.bos_token_id", Value::U32(1));
    w.set("tokenizer.ggml.eos_token_id", Value::U32(2));
    w.set("tokenizer.ggml.unknown_token_id", Value::U32(0));

    let (v, c) = (s.n_vocab as u64, s.n_embd as u64);
    tensor(
        &mut w,
        "token_embd.weight",
        s.embd_ty,
        &r.vec(s.n_vocab * s.n_embd, 1.0),
        &[c, v],
    );
    let norm =
        |r: &mut Lcg, n: usize| -> Vec<f32> { (0..n).map(|_| 1.0 + 0.3 * r.next()).collect() };
    for l in 0..s.n_layer {
        let t = |k: usize| s.matrix_types[(k + l) % 7];
        let mat =
            |r: &mut Lcg, rows: usize, cols: usize| r.vec(rows * cols, 1.5 / (cols as f32).sqrt());
        let b = format!("blk.{l}");
        tensor(
            &mut w,
            &format!("{b}.attn_norm.weight"),
            GgmlType::F32,
            &norm(&mut r, s.n_embd),
            &[c],
        );
        let conv_layer = s.features.conv_layers.as_ref().is_some_and(|v| v[l]);
        if conv_layer {
            // lfm2: a gated short-convolution block.
            let taps = s.features.conv_taps as usize;
            let c3 = 3 * s.n_embd as u64;
            let inp = mat(&mut r, 3 * s.n_embd, s.n_embd);
            tensor(
                &mut w,
                &format!("{b}.shortconv.in_proj.weight"),
                t(0),
                &inp,
                &[c, c3],
            );
            let k = r.vec(s.n_embd * taps, 0.6);
            let dims = [taps as u64, c];
            tensor(
                &mut w,
                &format!("{b}.shortconv.conv.weight"),
                GgmlType::F32,
                &k,
                &dims,
            );
            let out = mat(&mut r, s.n_embd, s.n_embd);
            tensor(
                &mut w,
                &format!("{b}.shortconv.out_proj.weight"),
                t(3),
                &out,
                &[c, c],
            );
        } else {
            let (wq, wk, wv) = (
                mat(&mut r, q, s.n_embd),
                mat(&mut r, kv, s.n_embd),
                mat(&mut r, kv, s.n_embd),
            );
            if fused(a) {
                // phi3: one attn_qkv, rows q then k then v (as llama.cpp's converter writes it).
                let qkv: Vec<f32> = [wq, wk, wv].concat();
                let rows = (q + 2 * kv) as u64;
                tensor(
                    &mut w,
                    &format!("{b}.attn_qkv.weight"),
                    t(0),
                    &qkv,
                    &[c, rows],
                );
            } else {
                tensor(
                    &mut w,
                    &format!("{b}.attn_q.weight"),
                    t(0),
                    &wq,
                    &[c, q as u64],
                );
                tensor(
                    &mut w,
                    &format!("{b}.attn_k.weight"),
                    t(1),
                    &wk,
                    &[c, kv as u64],
                );
                tensor(
                    &mut w,
                    &format!("{b}.attn_v.weight"),
                    t(2),
                    &wv,
                    &[c, kv as u64],
                );
            }
            if s.qkv_bias {
                tensor(
                    &mut w,
                    &format!("{b}.attn_q.bias"),
                    GgmlType::F32,
                    &r.vec(q, 0.5),
                    &[q as u64],
                );
                tensor(
                    &mut w,
                    &format!("{b}.attn_k.bias"),
                    GgmlType::F32,
                    &r.vec(kv, 0.5),
                    &[kv as u64],
                );
                tensor(
                    &mut w,
                    &format!("{b}.attn_v.bias"),
                    GgmlType::F32,
                    &r.vec(kv, 0.5),
                    &[kv as u64],
                );
            }
            tensor(
                &mut w,
                &format!("{b}.attn_output.weight"),
                t(3),
                &mat(&mut r, s.n_embd, q),
                &[q as u64, c],
            );
            if has_qk_norm(a) {
                for n in ["attn_q_norm", "attn_k_norm"] {
                    let v = norm(&mut r, hd);
                    tensor(
                        &mut w,
                        &format!("{b}.{n}.weight"),
                        GgmlType::F32,
                        &v,
                        &[hd as u64],
                    );
                }
            }
        }
        if has_post_norms(a) {
            for n in ["post_attention_norm", "post_ffw_norm"] {
                let v = norm(&mut r, s.n_embd);
                tensor(&mut w, &format!("{b}.{n}.weight"), GgmlType::F32, &v, &[c]);
            }
        }
        tensor(
            &mut w,
            &format!("{b}.ffn_norm.weight"),
            GgmlType::F32,
            &norm(&mut r, s.n_embd),
            &[c],
        );
        let ff = s.n_ff as u64;
        let (wg, wu) = (mat(&mut r, s.n_ff, s.n_embd), mat(&mut r, s.n_ff, s.n_embd));
        if fused(a) {
            // phi3: gate and up in one ffn_up, gate first.
            let gu: Vec<f32> = [wg, wu].concat();
            tensor(
                &mut w,
                &format!("{b}.ffn_up.weight"),
                t(5),
                &gu,
                &[c, 2 * ff],
            );
        } else {
            tensor(&mut w, &format!("{b}.ffn_gate.weight"), t(4), &wg, &[c, ff]);
            tensor(&mut w, &format!("{b}.ffn_up.weight"), t(5), &wu, &[c, ff]);
        }
        tensor(
            &mut w,
            &format!("{b}.ffn_down.weight"),
            t(6),
            &mat(&mut r, s.n_embd, s.n_ff),
            &[ff, c],
        );
    }
    // lfm2's converter names the final norm token_embd_norm.
    let out_norm = if a == "lfm2" {
        "token_embd_norm.weight"
    } else {
        "output_norm.weight"
    };
    tensor(
        &mut w,
        out_norm,
        GgmlType::F32,
        &norm(&mut r, s.n_embd),
        &[c],
    );
    if !s.tied {
        tensor(
            &mut w,
            "output.weight",
            s.output_ty,
            &r.vec(s.n_vocab * s.n_embd, 1.0 / (c as f32).sqrt()),
            &[c, v],
        );
    }
    if let Some((long, short, _, _)) = &s.features.long_rope {
        for (n, v) in [("rope_factors_long", long), ("rope_factors_short", short)] {
            tensor(
                &mut w,
                &format!("{n}.weight"),
                GgmlType::F32,
                v,
                &[v.len() as u64],
            );
        }
    }
    if let Some(f) = &s.rope_freqs {
        tensor(
            &mut w,
            "rope_freqs.weight",
            GgmlType::F32,
            f,
            &[f.len() as u64],
        );
    }
    w
}

/// FNV-1a, 64 bit: the fingerprint recorded beside each golden.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Deterministic evaluation records for a vocabulary of `n_vocab` tokens.
pub fn records(n_vocab: usize, seed: u64) -> String {
    let mut r = Lcg::new(seed);
    let mut out = String::new();
    for (n, masked) in [
        (2usize, false),
        (7, true),
        (16, false),
        (33, true),
        (70, false),
    ] {
        let ids: Vec<u32> = std::iter::once(1)
            .chain((1..n).map(|_| {
                3 + ((r.next() + 1.0) * 0.5 * (n_vocab - 3) as f32) as u32 % (n_vocab as u32 - 3)
            }))
            .collect();
        let ids_s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        if masked {
            let m: Vec<&str> = (0..n)
                .map(|i| {
                    if i >= n / 2 && i != n / 2 + 1 {
                        "1"
                    } else {
                        "0"
                    }
                })
                .collect();
            out += &format!(
                "{{\"ids\": [{}], \"mask\": [{}]}}\n",
                ids_s.join(", "),
                m.join(", ")
            );
        } else {
            out += &format!("{{\"ids\": [{}]}}\n", ids_s.join(", "));
        }
    }
    out
}
