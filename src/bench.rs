//! Support for `pocketlora bench`: the shapes of real models written as random-weight GGUF
//! files (complete with a vocabulary, so llama.cpp and transformers load the very same file),
//! the fp32 FMA peak microbenchmark, FLOP counts of the passes, and memory readings.

use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gguf::{Array, GgufWriter, Value, ValueType};
use crate::model::ModelConfig;
use crate::quant::{quantize_row, GgmlType, QK_K};
use crate::simd::{Kernels, Level};
use crate::util::rng::XorShift64;

/// The architecture numbers of a model shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
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
    pub rms_eps: f32,
    /// Head size when it is not n_embd / n_head (`attention.key_length`).
    pub head_dim: Option<usize>,
    /// The sliding window (`attention.sliding_window`), for recipes that have windows.
    pub window: Option<usize>,
    /// Hybrid recipes (lfm2): the attention layers; the others are short-convolution
    /// blocks of 3 taps.
    pub attn_layers: Option<&'static [usize]>,
}

/// The shapes `bench --shape` knows.
pub const SHAPES: [Shape; 9] = [
    Shape {
        name: "smollm2-135m",
        arch: "llama",
        n_vocab: 49152,
        n_embd: 576,
        n_layer: 30,
        n_head: 9,
        n_head_kv: 3,
        n_ff: 1536,
        n_ctx: 8192,
        tied: true,
        qkv_bias: false,
        rope_base: 100_000.0,
        rms_eps: 1e-5,
        head_dim: None,
        window: None,
        attn_layers: None,
    },
    Shape {
        name: "tinyllama-1.1b",
        arch: "llama",
        n_vocab: 32000,
        n_embd: 2048,
        n_layer: 22,
        n_head: 32,
        n_head_kv: 4,
        n_ff: 5632,
        n_ctx: 2048,
        tied: false,
        qkv_bias: false,
        rope_base: 10_000.0,
        rms_eps: 1e-5,
        head_dim: None,
        window: None,
        attn_layers: None,
    },
    Shape {
        name: "qwen2.5-0.5b",
        arch: "qwen2",
        n_vocab: 151_936,
        n_embd: 896,
        n_layer: 24,
        n_head: 14,
        n_head_kv: 2,
        n_ff: 4864,
        n_ctx: 32768,
        tied: true,
        qkv_bias: true,
        rope_base: 1_000_000.0,
        rms_eps: 1e-6,
        head_dim: None,
        window: None,
        attn_layers: None,
    },
    Shape {
        name: "gemma3-270m",
        arch: "gemma3",
        n_vocab: 262_144,
        n_embd: 640,
        n_layer: 18,
        n_head: 4,
        n_head_kv: 1,
        n_ff: 2048,
        n_ctx: 32768,
        tied: true,
        qkv_bias: false,
        rope_base: 1_000_000.0,
        rms_eps: 1e-6,
        head_dim: Some(256),
        window: Some(512),
        attn_layers: None,
    },
    Shape {
        name: "qwen3-0.6b",
        arch: "qwen3",
        n_vocab: 151_936,
        n_embd: 1024,
        n_layer: 28,
        n_head: 16,
        n_head_kv: 8,
        n_ff: 3072,
        n_ctx: 40960,
        tied: true,
        qkv_bias: false,
        rope_base: 1_000_000.0,
        rms_eps: 1e-6,
        head_dim: Some(128),
        window: None,
        attn_layers: None,
    },
    Shape {
        name: "llama3.2-1b",
        arch: "llama",
        n_vocab: 128_256,
        n_embd: 2048,
        n_layer: 16,
        n_head: 32,
        n_head_kv: 8,
        n_ff: 8192,
        n_ctx: 131_072,
        tied: true,
        qkv_bias: false,
        rope_base: 500_000.0,
        rms_eps: 1e-5,
        head_dim: None,
        window: None,
        attn_layers: None,
    },
    Shape {
        name: "phi3-mini",
        arch: "phi3",
        n_vocab: 32064,
        n_embd: 3072,
        n_layer: 32,
        n_head: 32,
        n_head_kv: 32,
        n_ff: 8192,
        n_ctx: 4096,
        tied: false,
        qkv_bias: false,
        rope_base: 10_000.0,
        rms_eps: 1e-5,
        head_dim: None,
        window: None,
        attn_layers: None,
    },
    Shape {
        name: "lfm2-350m",
        arch: "lfm2",
        n_vocab: 65536,
        n_embd: 1024,
        n_layer: 16,
        n_head: 16,
        n_head_kv: 8,
        n_ff: 4608,
        n_ctx: 128_000,
        tied: true,
        qkv_bias: false,
        rope_base: 1_000_000.0,
        rms_eps: 1e-5,
        head_dim: None,
        window: None,
        attn_layers: Some(&[2, 5, 8, 10, 12, 14]),
    },
    Shape {
        name: "smollm3-3b",
        arch: "smollm3",
        n_vocab: 128_256,
        n_embd: 2048,
        n_layer: 36,
        n_head: 16,
        n_head_kv: 4,
        n_ff: 11008,
        n_ctx: 65536,
        tied: true,
        qkv_bias: false,
        rope_base: 5_000_000.0,
        rms_eps: 1e-6,
        head_dim: None,
        window: None,
        attn_layers: None,
    },
];

/// The shape called `name`.
pub fn shape(name: &str) -> Option<&'static Shape> {
    SHAPES.iter().find(|s| s.name.eq_ignore_ascii_case(name))
}

/// The type a matrix with rows of `cols` elements gets for the requested `quant`: K-quants
/// fall back per tensor as llama.cpp's quantizer does when a row is not a whole number of
/// 256-element super-blocks (Q4_K → Q5_0, Q6_K → Q8_0).
pub fn tensor_type(quant: GgmlType, cols: usize) -> GgmlType {
    if cols % QK_K == 0 {
        return quant;
    }
    match quant {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q6_K => GgmlType::Q8_0,
        q => q,
    }
}

/// Deterministic pseudo-random values in [−a, a).
fn random(n: usize, seed: u64, a: f32) -> Vec<f32> {
    let mut rng = XorShift64::new(seed);
    (0..n)
        .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * a)
        .collect()
}

/// A random `rows × cols` matrix quantized to `ty`, rows in parallel.
fn random_matrix(rows: usize, cols: usize, ty: GgmlType, seed: u64, a: f32) -> Result<Vec<u8>> {
    let rb = ty
        .bytes_for(cols as u64)
        .ok_or_else(|| Error::InvalidArgument(format!("{cols} columns do not fit {ty} blocks")))?
        as usize;
    let mut out = vec![0u8; rows * rb];
    const ROWS: usize = 64;
    out.par_chunks_mut(ROWS * rb)
        .enumerate()
        .try_for_each(|(c, chunk)| {
            let n = chunk.len() / rb;
            let vals = random(n * cols, seed ^ ((c as u64 + 1) << 32), a);
            for (dst, src) in chunk.chunks_exact_mut(rb).zip(vals.chunks_exact(cols)) {
                quantize_row(ty, src, dst)?;
            }
            Ok::<(), crate::error::QuantError>(())
        })?;
    Ok(out)
}

/// Writes a GGUF model of `shape` with random weights, every matrix in `quant` (with the
/// K-quant fallbacks of [`tensor_type`]), norms in F32, and a SentencePiece-style vocabulary
/// (`<unk>`, `<s>`, `</s>`, the 256 byte tokens, then plain pieces) so that llama.cpp and
/// transformers load it as they load a converted model.
pub fn write_random_model(shape: &Shape, quant: GgmlType, path: &Path) -> Result<()> {
    if !crate::quant::can_quantize(quant) {
        return Err(Error::InvalidArgument(format!(
            "cannot write {quant} tensors (q8_0, q4_0, q4_k, q6_k, f16, bf16, f32 can be written)"
        )));
    }
    let s = shape;
    let recipe = crate::model::Arch::by_name(s.arch).ok_or_else(|| {
        Error::InvalidArgument(format!("shape {}: architecture {}?", s.name, s.arch))
    })?;
    let mut w = GgufWriter::new();
    write_hyperparameters(&mut w, s, quant);
    write_vocabulary(&mut w, s.n_vocab);
    let mut t = RandomTensors {
        w: &mut w,
        quant,
        seed: 1,
    };
    let c = s.n_embd;
    t.weight("token_embd.weight".into(), s.n_vocab, c)?;
    for l in 0..s.n_layer {
        write_block(&mut t, s, recipe, l)?;
    }
    t.norm(recipe.output_norm.into(), c, 7)?;
    if !s.tied {
        t.weight("output.weight".into(), s.n_vocab, c)?;
    }
    w.write_file(path)
}

impl Shape {
    /// Head size: `head_dim`, else n_embd / n_head.
    fn head_size(&self) -> usize {
        self.head_dim.unwrap_or(self.n_embd / self.n_head)
    }

    /// Whether layer `l` is a short-convolution block (hybrid recipes).
    fn is_conv_layer(&self, l: usize) -> bool {
        self.attn_layers.is_some_and(|at| !at.contains(&l))
    }
}

/// The `general.*` and `{arch}.*` keys of `s`.
fn write_hyperparameters(w: &mut GgufWriter, s: &Shape, quant: GgmlType) {
    let a = s.arch;
    let hd = s.head_size();
    let u32v = |v: usize| Value::U32(v as u32);
    w.set("general.architecture", Value::String(a.into()));
    w.set(
        "general.name",
        Value::String(format!("{}-random-{}", s.name, quant.name().to_lowercase())),
    );
    w.set(format!("{a}.context_length"), u32v(s.n_ctx));
    w.set(format!("{a}.embedding_length"), u32v(s.n_embd));
    w.set(format!("{a}.block_count"), u32v(s.n_layer));
    w.set(format!("{a}.feed_forward_length"), u32v(s.n_ff));
    w.set(format!("{a}.attention.head_count"), u32v(s.n_head));
    match s.attn_layers {
        Some(_) => {
            let per = (0..s.n_layer)
                .map(|l| u32v(if s.is_conv_layer(l) { 0 } else { s.n_head_kv }))
                .collect();
            w.set(
                format!("{a}.attention.head_count_kv"),
                Value::Array(Array::new(ValueType::U32, per)),
            );
            w.set(format!("{a}.shortconv.l_cache"), u32v(3));
        }
        None => w.set(format!("{a}.attention.head_count_kv"), u32v(s.n_head_kv)),
    }
    w.set(
        format!("{a}.attention.layer_norm_rms_epsilon"),
        Value::F32(s.rms_eps),
    );
    w.set(format!("{a}.rope.freq_base"), Value::F32(s.rope_base));
    w.set(format!("{a}.rope.dimension_count"), u32v(hd));
    w.set(format!("{a}.vocab_size"), u32v(s.n_vocab));
    if let Some(d) = s.head_dim {
        w.set(format!("{a}.attention.key_length"), u32v(d));
        w.set(format!("{a}.attention.value_length"), u32v(d));
    }
    if let Some(win) = s.window {
        w.set(format!("{a}.attention.sliding_window"), u32v(win));
    }
}

/// A SentencePiece-style vocabulary of `n_vocab` pieces: 0 `<unk>`, 1 `<s>`, 2 `</s>`,
/// 3..259 `<0x00>`..`<0xFF>`, then `▁t{i}`.
fn write_vocabulary(w: &mut GgufWriter, n_vocab: usize) {
    let piece = |i: usize| -> String {
        match i {
            0 => "<unk>".into(),
            1 => "<s>".into(),
            2 => "</s>".into(),
            3..=258 => format!("<0x{:02X}>", i - 3),
            _ => format!("\u{2581}t{i}"),
        }
    };
    let kind = |i: usize| -> i32 {
        match i {
            0 => 2,
            1 | 2 => 3,
            3..=258 => 6,
            _ => 1,
        }
    };
    let array = |elem_type, items| Value::Array(Array::new(elem_type, items));
    w.set("tokenizer.ggml.model", Value::String("llama".into()));
    w.set(
        "tokenizer.ggml.tokens",
        array(
            ValueType::String,
            (0..n_vocab).map(|i| Value::String(piece(i))).collect(),
        ),
    );
    w.set(
        "tokenizer.ggml.scores",
        array(
            ValueType::F32,
            (0..n_vocab).map(|i| Value::F32(-(i as f32))).collect(),
        ),
    );
    w.set(
        "tokenizer.ggml.token_type",
        array(
            ValueType::I32,
            (0..n_vocab).map(|i| Value::I32(kind(i))).collect(),
        ),
    );
    w.set("tokenizer.ggml.bos_token_id", Value::U32(1));
    w.set("tokenizer.ggml.eos_token_id", Value::U32(2));
    w.set("tokenizer.ggml.unknown_token_id", Value::U32(0));
}

/// Adds random tensors to a writer: matrices in the requested quant, each with a seed of its
/// own (the next one), and F32 vectors around a base value.
struct RandomTensors<'w> {
    w: &'w mut GgufWriter,
    quant: GgmlType,
    /// The seed of the last matrix added.
    seed: u64,
}

impl RandomTensors<'_> {
    /// A `rows × cols` weight matrix, values in ±1.7/√cols.
    fn weight(&mut self, name: String, rows: usize, cols: usize) -> Result<()> {
        let ty = tensor_type(self.quant, cols);
        self.seed += 1;
        let a = 1.7 / (cols as f32).sqrt();
        let data = random_matrix(rows, cols, ty, self.seed, a)?;
        self.w
            .add_tensor(name, ty, &[cols as u64, rows as u64], data)
    }

    /// An F32 vector of `n` values in `base ± a`.
    fn vector(&mut self, name: String, n: usize, seed: u64, base: f32, a: f32) -> Result<()> {
        let v: Vec<f32> = random(n, seed, a).iter().map(|x| base + x).collect();
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.w.add_tensor(name, GgmlType::F32, &[n as u64], bytes)
    }

    /// A norm's weights: around 1.
    fn norm(&mut self, name: String, n: usize, seed: u64) -> Result<()> {
        self.vector(name, n, seed, 1.0, 0.2)
    }

    /// A bias: around 0.
    fn bias(&mut self, name: String, n: usize, seed: u64) -> Result<()> {
        self.vector(name, n, seed, 0.0, 0.1)
    }
}

/// The tensors of block `l`: its mixer (attention or short convolution), the recipe's
/// post-norms, and the feed-forward.
fn write_block(
    t: &mut RandomTensors<'_>,
    s: &Shape,
    recipe: &crate::model::Arch,
    l: usize,
) -> Result<()> {
    let c = s.n_embd;
    let b = format!("blk.{l}");
    let sd = 1000 + 10 * l as u64;
    t.norm(format!("{b}.attn_norm.weight"), c, sd)?;
    if s.is_conv_layer(l) {
        write_short_conv(t, &b, c, sd)?;
    } else {
        write_attention(t, &b, s, recipe, sd)?;
    }
    if recipe.post_norms {
        t.norm(format!("{b}.post_attention_norm.weight"), c, sd + 7)?;
        t.norm(format!("{b}.post_ffw_norm.weight"), c, sd + 8)?;
    }
    t.norm(format!("{b}.ffn_norm.weight"), c, sd + 4)?;
    if recipe.fused {
        t.weight(format!("{b}.ffn_up.weight"), 2 * s.n_ff, c)?;
    } else {
        t.weight(format!("{b}.ffn_gate.weight"), s.n_ff, c)?;
        t.weight(format!("{b}.ffn_up.weight"), s.n_ff, c)?;
    }
    t.weight(format!("{b}.ffn_down.weight"), c, s.n_ff)
}

/// A short-convolution block's projections and its 3 taps per channel.
fn write_short_conv(t: &mut RandomTensors<'_>, b: &str, c: usize, sd: u64) -> Result<()> {
    t.weight(format!("{b}.shortconv.in_proj.weight"), 3 * c, c)?;
    let k: Vec<f32> = random(3 * c, sd + 9, 0.5);
    let bytes = k.iter().flat_map(|x| x.to_le_bytes()).collect();
    let dims = [3, c as u64];
    t.w.add_tensor(
        format!("{b}.shortconv.conv.weight"),
        GgmlType::F32,
        &dims,
        bytes,
    )?;
    t.weight(format!("{b}.shortconv.out_proj.weight"), c, c)
}

/// An attention block's projections (fused or not), biases and QK-norms as the recipe has
/// them.
fn write_attention(
    t: &mut RandomTensors<'_>,
    b: &str,
    s: &Shape,
    recipe: &crate::model::Arch,
    sd: u64,
) -> Result<()> {
    let c = s.n_embd;
    let hd = s.head_size();
    let (q, kv) = (s.n_head * hd, s.n_head_kv * hd);
    if recipe.fused {
        t.weight(format!("{b}.attn_qkv.weight"), q + 2 * kv, c)?;
    } else {
        t.weight(format!("{b}.attn_q.weight"), q, c)?;
        t.weight(format!("{b}.attn_k.weight"), kv, c)?;
        t.weight(format!("{b}.attn_v.weight"), kv, c)?;
    }
    if s.qkv_bias {
        t.bias(format!("{b}.attn_q.bias"), q, sd + 1)?;
        t.bias(format!("{b}.attn_k.bias"), kv, sd + 2)?;
        t.bias(format!("{b}.attn_v.bias"), kv, sd + 3)?;
    }
    t.weight(format!("{b}.attn_output.weight"), c, q)?;
    if recipe.qk_norm {
        t.norm(format!("{b}.attn_q_norm.weight"), hd, sd + 5)?;
        t.norm(format!("{b}.attn_k_norm.weight"), hd, sd + 6)?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Measurements.

/// The fp32 FMA peak of this machine in GFLOP/s with `threads` threads: independent
/// fused-multiply-add chains in the widest vector registers the CPU has (whatever
/// `POCKETLORA_DISABLE` says), the best of a few runs of about `seconds` each.
pub fn fp32_peak_gflops(threads: usize, seconds: f64) -> (f64, Level) {
    let burst = PeakBurst::calibrated(seconds / 3.0);
    let threads = threads.max(1);
    let best = (0..3)
        .map(|_| burst.on_threads(threads))
        .fold(0f64, f64::max);
    (best, burst.k.level)
}

/// One short run of the FMA peak microbenchmark, to repeat between the passes a speed is
/// measured on: a fraction of the peak then compares two speeds taken under the same
/// machine conditions. (On a shared VM the cores' speed drifts for seconds at a time, e.g.
/// when the host runs both virtual CPUs on one core, so a peak taken once, earlier, can be
/// twice or half the one the passes saw.)
#[derive(Clone, Copy, Debug)]
pub struct PeakBurst {
    k: Kernels,
    iters: usize,
}

impl PeakBurst {
    /// Calibrated to take about `seconds` on one thread, in the widest registers the CPU has.
    pub fn calibrated(seconds: f64) -> PeakBurst {
        let level = Level::available().last().copied().unwrap_or(Level::Scalar);
        let k = Kernels::for_level(level).unwrap_or_else(|| *crate::simd::kernels());
        let mut iters = 1usize << 12;
        loop {
            let t = Instant::now();
            k.fma_peak(iters);
            let dt = t.elapsed().as_secs_f64();
            if dt > 0.005 || iters > 1 << 30 {
                let iters = ((seconds / (dt / iters as f64)) as usize).max(1);
                return PeakBurst { k, iters };
            }
            iters *= 4;
        }
    }

    /// One burst on the calling thread.
    pub fn once(&self) {
        std::hint::black_box(self.k.fma_peak(self.iters));
    }

    /// One burst on each of `threads` new threads at once, in GFLOP/s.
    pub fn on_threads(&self, threads: usize) -> f64 {
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| self.once());
            }
        });
        self.gflops(threads, t.elapsed().as_secs_f64())
    }

    /// One burst on every thread of `pool` at once, in GFLOP/s.
    pub fn on_pool(&self, pool: &rayon::ThreadPool) -> f64 {
        let t = Instant::now();
        pool.broadcast(|_| self.once());
        self.gflops(pool.current_num_threads(), t.elapsed().as_secs_f64())
    }

    /// GFLOP/s of `threads` bursts that took `seconds` together.
    pub fn gflops(&self, threads: usize, seconds: f64) -> f64 {
        (self.k.fma_peak_flops_per_iter() * self.iters * threads) as f64 / seconds / 1e9
    }
}

/// FLOP counts of one sequence of `t` tokens through a model (multiply-adds count 2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flops {
    /// Forward over the blocks (no output head).
    pub forward: f64,
    /// One training step as this engine runs it: forward, the checkpointed blocks' forward
    /// again from their checkpoints (not the blocks whose activations are kept), the input gradients,
    /// the head twice (its logits and their gradient, one pass over the vocabulary), the LoRA
    /// products (forward and the backward ones).
    pub train: f64,
}

/// FLOP counts for `t` tokens of `cfg` with LoRA rank `r` on all seven targets of every
/// block; the training plan keeps the activations of the top `kept` blocks (they are not
/// recomputed in backward).
pub fn flops(cfg: &ModelConfig, t: usize, r: usize, kept: usize) -> Flops {
    let (c, q, kv, ff) = (
        cfg.n_embd as f64,
        cfg.q_dim() as f64,
        cfg.kv_dim() as f64,
        cfg.n_ff as f64,
    );
    let t = t as f64;
    let layers = cfg.n_layer as f64;
    let lin = c * q + 2.0 * c * kv + q * c + 3.0 * c * ff;
    let lora_io = (c + q) + 2.0 * (c + kv) + (q + c) + 2.0 * (c + ff) + (ff + c);
    // Query-key pairs per layer: causal, or within a sliding window.
    let tn = t as usize;
    let pairs = |l: usize| match cfg.window_of(l) {
        Some(w) => (0..tn).map(|i| (i + 1).min(w)).sum::<usize>() as f64,
        None => t * (t + 1.0) / 2.0,
    };
    let unit = 2.0 * cfg.n_head as f64 * cfg.head_dim as f64;
    let attn: f64 = (0..cfg.n_layer).map(|l| unit * pairs(l)).sum();
    let lora_fwd = 2.0 * t * r as f64 * lora_io;
    let forward = layers * 2.0 * t * lin + 2.0 * attn;
    let head = 2.0 * t * cfg.n_vocab as f64 * c;
    let recomputed = layers - kept.min(cfg.n_layer) as f64;
    // A checkpointed block's backward recomputes its MLP's down projection too when the
    // recipe post-norms the MLP output.
    let post_down = if cfg.arch.post_norms {
        2.0 * t * c * ff
    } else {
        0.0
    };
    let per_layer_attn = attn / layers.max(1.0);
    let train = layers * (2.0 * t * lin + 2.0 * t * lin + 3.0 * lora_fwd)
        + 7.0 * attn
        + recomputed * (2.0 * t * lin + 2.0 * per_layer_attn + lora_fwd + post_down)
        + 2.0 * head;
    Flops { forward, train }
}

/// The process's peak resident set (VmHWM), when the platform reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kb("VmHWM:").map(|kb| kb * 1024)
}

/// The process's resident set now (VmRSS).
pub fn rss_bytes() -> Option<u64> {
    proc_status_kb("VmRSS:").map(|kb| kb * 1024)
}

#[cfg(target_os = "linux")]
fn proc_status_kb(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn proc_status_kb(_: &str) -> Option<u64> {
    None
}

/// Memory the machine can give a new allocation now without swapping (Linux:
/// `MemAvailable` in /proc/meminfo), when the platform reports it.
pub fn available_memory_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let s = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kb: u64 = line["MemAvailable:".len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Resets the peak resident set to the current one (Linux: `/proc/self/clear_refs`), so a
/// measurement excludes what came before (writing the model). Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    #[cfg(target_os = "linux")]
    {
        std::fs::write("/proc/self/clear_refs", "5").is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Peak heap bytes since the last [`reset_peak_heap`], when the binary installs the counting
/// allocator ([`crate::memory::heap::CountingAlloc`]); `None` without one.
pub fn peak_heap_bytes() -> Option<u64> {
    let h = crate::memory::heap::installed();
    h.then(|| crate::memory::heap::peak() as u64)
}

/// Starts a new peak-heap measurement from the current heap size.
pub fn reset_peak_heap() {
    crate::memory::heap::reset_peak();
}

/// The CPU's model name (Linux), or the architecture.
pub fn cpu_model() -> String {
    #[cfg(target_os = "linux")]
    if let Ok(s) = std::fs::read_to_string("/proc/cpuinfo") {
        if let Some(l) = s
            .lines()
            .find(|l| l.starts_with("model name") || l.starts_with("Model"))
        {
            if let Some((_, v)) = l.split_once(':') {
                return v.trim().to_string();
            }
        }
    }
    std::env::consts::ARCH.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_quants_fall_back_per_tensor_like_llama_cpp() {
        assert_eq!(tensor_type(GgmlType::Q4_K, 576), GgmlType::Q5_0);
        assert_eq!(tensor_type(GgmlType::Q4_K, 1536), GgmlType::Q4_K);
        assert_eq!(tensor_type(GgmlType::Q6_K, 896), GgmlType::Q8_0);
        assert_eq!(tensor_type(GgmlType::Q8_0, 576), GgmlType::Q8_0);
    }

    #[test]
    fn a_small_random_model_loads_and_runs() {
        let s = Shape {
            name: "tiny",
            arch: "llama",
            n_vocab: 300,
            n_embd: 64,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
            n_ff: 96,
            n_ctx: 64,
            tied: true,
            qkv_bias: false,
            rope_base: 10000.0,
            rms_eps: 1e-5,
            head_dim: None,
            window: None,
            attn_layers: None,
        };
        let dir =
            std::env::temp_dir().join(format!("pocketlora-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny.gguf");
        write_random_model(&s, GgmlType::Q8_0, &path).unwrap();
        let model = crate::model::Model::open(&path, 1).unwrap();
        assert_eq!(model.cfg.n_vocab, 300);
        let tok = crate::tokenizer::Tokenizer::from_gguf(model.weights.file()).unwrap();
        assert_eq!(tok.token_text(3), Some("<0x00>"));
        assert!(!tok.encode("hello world", true, false).is_empty());
        // A gemma3 shape: its head size, window and recipe tensors are written.
        let g = Shape {
            arch: "gemma3",
            head_dim: Some(32),
            window: Some(8),
            ..s
        };
        let path = dir.join("tiny-gemma3.gguf");
        write_random_model(&g, GgmlType::Q8_0, &path).unwrap();
        let model = crate::model::Model::open(&path, 1).unwrap();
        let c = &model.cfg;
        assert_eq!((c.head_dim, c.q_dim(), c.window), (32, 128, Some(8)));
        assert!(c.layers[0].sliding && model.weights.layers[1].ffn_post_norm.is_some());
        // Windowed attention counts only the pairs inside the window.
        let full = flops(
            &crate::model::ModelConfig {
                window: None,
                ..c.clone()
            },
            64,
            8,
            0,
        );
        assert!(flops(c, 64, 8, 0).forward < full.forward);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn available_memory_is_read_on_linux() {
        let a = available_memory_bytes();
        if cfg!(target_os = "linux") {
            // Some memory is available, and not more than the machine has.
            let total = std::fs::read_to_string("/proc/meminfo")
                .unwrap()
                .lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap()
                * 1024;
            let a = a.expect("MemAvailable");
            assert!(a > 0 && a <= total, "{a} of {total}");
        } else {
            assert!(a.is_none());
        }
    }

    #[test]
    fn the_fma_peak_and_a_burst_on_a_pool_measure_positive_speeds() {
        let (g, _) = fp32_peak_gflops(1, 0.01);
        assert!(g > 0.0 && g.is_finite());
        let burst = PeakBurst::calibrated(0.002);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = (0..5).map(|_| burst.on_pool(&pool)).fold(0f64, f64::max);
        assert!(b > 0.0 && b.is_finite());
        // Two threads' bursts in the same time are twice the work.
        assert_eq!(burst.gflops(2, 0.5), 4.0 * burst.gflops(1, 1.0));
    }
}
