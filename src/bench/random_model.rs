//! Random-weight GGUF models of a [`Shape`], complete with a vocabulary, so that llama.cpp
//! and transformers load the very same file as pocketlora.

use std::path::Path;

use rayon::prelude::*;

use super::Shape;
use crate::error::{Error, Result};
use crate::gguf::{Array, GgufWriter, Value, ValueType};
use crate::quant::{quantize_row, GgmlType, QK_K};
use crate::util::rng::XorShift64;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::flops;

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
}
