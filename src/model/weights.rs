//! The frozen base weights: views of the memory-mapped GGUF tensors, checked against the
//! configuration once at load. Matrices stay in their file encoding; only the small norm
//! vectors, biases and RoPE frequency factors are converted to f32.

use std::sync::Arc;

use super::arch::Biases;
use super::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::kernels::QMatrix;
use crate::quant::{dequantize_row, GgmlType};

/// A validated 2-D weight tensor of the file: `rows` output features × `cols` inputs —
/// or, for a projection stored inside a fused tensor (phi3's `attn_qkv`, `ffn_up`), rows
/// `row0 .. row0 + rows` of it.
#[derive(Clone, Debug)]
pub struct MatrixRef {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// The first row within the tensor (0 unless a fused tensor's part).
    pub row0: usize,
}

impl MatrixRef {
    /// Rows `r0 .. r0 + rows` of this (checked) matrix.
    fn part(&self, r0: usize, rows: usize) -> MatrixRef {
        MatrixRef {
            rows,
            row0: self.row0 + r0,
            ..self.clone()
        }
    }
}

/// A short-convolution block's own weights (lfm2).
#[derive(Clone, Debug)]
pub struct ConvWeights {
    /// n_embd → 3·n_embd: the gates B and C and the input x, in that order.
    pub in_proj: MatrixRef,
    pub out_proj: MatrixRef,
    /// The depthwise kernel, (n_embd, taps): tap `k` of channel `c` at `c·taps + k`, the
    /// last tap on the current position.
    pub kernel: Vec<f32>,
}

/// The weights of one transformer block. An attention block has `wq … wo`; a
/// short-convolution block `conv` instead.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// The norm before the mixer (attention or short convolution).
    pub attn_norm: Vec<f32>,
    pub wq: Option<MatrixRef>,
    pub wk: Option<MatrixRef>,
    pub wv: Option<MatrixRef>,
    pub wo: Option<MatrixRef>,
    pub conv: Option<ConvWeights>,
    /// q/k/v biases (qwen2).
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    /// Per-head RMSNorm weights of Q and K, (head_dim) each (QK-norm).
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    /// RMSNorm of the attention output before the residual add (gemma).
    pub attn_post_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    /// RMSNorm of the MLP output before the residual add (gemma).
    pub ffn_post_norm: Option<Vec<f32>>,
    pub w_gate: MatrixRef,
    pub w_up: MatrixRef,
    pub w_down: MatrixRef,
}

/// All weights of a model, borrowing their bytes from the shared GGUF file.
#[derive(Debug)]
pub struct Weights {
    file: Arc<GgufFile>,
    pub token_embd: MatrixRef,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Vec<f32>,
    /// The output head; `token_embd` itself when the model ties them.
    pub output: MatrixRef,
    pub tied_output: bool,
    /// Llama-3.1-style per-pair RoPE frequency divisors (`rope_freqs.weight`).
    pub rope_freqs: Option<Vec<f32>>,
}

impl Weights {
    /// Finds and checks every tensor the configuration calls for.
    pub fn load(file: Arc<GgufFile>, cfg: &ModelConfig) -> Result<Weights> {
        let (c, q, kv, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        let f = &*file;
        let token_embd = matrix(f, "token_embd.weight", cfg.n_vocab, c)?;
        let (output, tied_output) = match f.tensor_info("output.weight") {
            Some(_) => (matrix(f, "output.weight", cfg.n_vocab, c)?, false),
            None => (token_embd.clone(), true),
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let name = |s: &str| format!("blk.{i}.{s}");
            let bias = |s: &str, n: usize| -> Result<Option<Vec<f32>>> {
                let nm = name(s);
                match (cfg.arch.biases, f.tensor_info(&nm)) {
                    (Biases::Required, _) | (Biases::IfPresent, Some(_)) => {
                        vector(f, &nm, n).map(Some)
                    }
                    (Biases::IfPresent | Biases::None, _) => Ok(None),
                }
            };
            // A vector the recipe calls for (`Some`), or `None` when it does not.
            let needed = |on: bool, s: &str, n: usize| -> Result<Option<Vec<f32>>> {
                on.then(|| vector(f, &name(s), n)).transpose()
            };
            let (qk, post) = (cfg.arch.qk_norm, cfg.arch.post_norms);
            let hd = cfg.head_dim;
            // Fused q/k/v and gate/up: each projection is a row view of its fused tensor.
            let conv_layer = cfg.layers[i].conv;
            let (wq, wk, wv) = if conv_layer {
                (None, None, None)
            } else if cfg.arch.fused {
                let qkv = matrix(f, &name("attn_qkv.weight"), q + 2 * kv, c)?;
                (
                    Some(qkv.part(0, q)),
                    Some(qkv.part(q, kv)),
                    Some(qkv.part(q + kv, kv)),
                )
            } else {
                (
                    Some(matrix(f, &name("attn_q.weight"), q, c)?),
                    Some(matrix(f, &name("attn_k.weight"), kv, c)?),
                    Some(matrix(f, &name("attn_v.weight"), kv, c)?),
                )
            };
            let (w_gate, w_up) = if cfg.arch.fused {
                let gate_up = matrix(f, &name("ffn_up.weight"), 2 * ff, c)?;
                (gate_up.part(0, ff), gate_up.part(ff, ff))
            } else {
                (
                    matrix(f, &name("ffn_gate.weight"), ff, c)?,
                    matrix(f, &name("ffn_up.weight"), ff, c)?,
                )
            };
            let wo = if conv_layer {
                None
            } else {
                Some(matrix(f, &name("attn_output.weight"), c, q)?)
            };
            let conv = if conv_layer {
                Some(ConvWeights {
                    in_proj: matrix(f, &name("shortconv.in_proj.weight"), 3 * c, c)?,
                    out_proj: matrix(f, &name("shortconv.out_proj.weight"), c, c)?,
                    kernel: kernel(f, &name("shortconv.conv.weight"), c, cfg.conv_taps)?,
                })
            } else {
                None
            };
            let (qk, post) = (qk && !conv_layer, post);
            layers.push(LayerWeights {
                attn_norm: vector(f, &name("attn_norm.weight"), c)?,
                wq,
                wk,
                wv,
                wo,
                conv,
                bq: if conv_layer {
                    None
                } else {
                    bias("attn_q.bias", q)?
                },
                bk: if conv_layer {
                    None
                } else {
                    bias("attn_k.bias", kv)?
                },
                bv: if conv_layer {
                    None
                } else {
                    bias("attn_v.bias", kv)?
                },
                q_norm: needed(qk, "attn_q_norm.weight", hd)?,
                k_norm: needed(qk, "attn_k_norm.weight", hd)?,
                attn_post_norm: needed(post, "post_attention_norm.weight", c)?,
                ffn_norm: vector(f, &name("ffn_norm.weight"), c)?,
                ffn_post_norm: needed(post, "post_ffw_norm.weight", c)?,
                w_gate,
                w_up,
                w_down: matrix(f, &name("ffn_down.weight"), c, ff)?,
            });
        }
        let output_norm = vector(f, cfg.arch.output_norm, c)?;
        let rope_freqs = rope_factors(f, cfg)?;
        Ok(Weights {
            file,
            token_embd,
            layers,
            output_norm,
            output,
            tied_output,
            rope_freqs,
        })
    }

    /// The GGUF file the weights live in.
    pub fn file(&self) -> &Arc<GgufFile> {
        &self.file
    }

    /// A multiplication-ready view of a checked matrix.
    pub fn matrix(&self, m: &MatrixRef) -> QMatrix<'_> {
        let data = match self.file.tensor(&m.name) {
            Some(v) => v.data,
            None => unreachable!("tensor {} was found at load", m.name),
        };
        let total =
            (data.len() as u64 / m.ty.bytes_for(m.cols as u64).unwrap_or(1).max(1)) as usize;
        match QMatrix::new(m.ty, total, m.cols, data) {
            Ok(q) => q.rows_range(m.row0, m.row0 + m.rows),
            Err(e) => unreachable!("tensor {} was checked at load: {e}", m.name),
        }
    }

    /// Writes the embedding of `token` (one row of `token_embd`, any encoding) into `out`.
    pub fn embed<F: crate::kernels::Real>(&self, token: u32, out: &mut [F]) -> Result<()> {
        let e = &self.token_embd;
        if token as usize >= e.rows {
            return Err(ModelError::TokenOutOfRange {
                token,
                vocab: e.rows,
            }
            .into());
        }
        self.matrix(e).dequantize_rows(token as usize, out);
        Ok(())
    }
}

/// Checks that `name` is a `rows × cols` matrix (GGUF dims `[cols, rows]`) of a usable type.
fn matrix(f: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<MatrixRef> {
    let t = f.require_tensor(name)?;
    let want = [cols as u64, rows as u64];
    if t.info.dims != want {
        return Err(ModelError::TensorShape {
            tensor: name.into(),
            expected: want.to_vec(),
            found: t.info.dims.clone(),
        }
        .into());
    }
    QMatrix::new(t.info.ty, rows, cols, t.data).map_err(|_| ModelError::TensorType {
        tensor: name.into(),
        ty: t.info.ty,
        role: "a weight matrix",
    })?;
    Ok(MatrixRef {
        name: name.into(),
        ty: t.info.ty,
        rows,
        cols,
        row0: 0,
    })
}

/// The per-pair RoPE frequency divisors: `rope_freqs.weight` (Llama 3.1), or for LongRoPE
/// (phi3) `rope_factors_long` when the model's context exceeds
/// `rope.scaling.original_context_length`, else `rope_factors_short` — llama.cpp's choice
/// (`get_rope_factors`) with its default context, the model's own.
fn rope_factors(f: &GgufFile, cfg: &ModelConfig) -> Result<Option<Vec<f32>>> {
    let n = cfg.rope_dim / 2;
    if f.tensor_info("rope_freqs.weight").is_some() {
        return vector(f, "rope_freqs.weight", n).map(Some);
    }
    if !cfg.arch.long_rope || f.tensor_info("rope_factors_long.weight").is_none() {
        return Ok(None);
    }
    let orig = f
        .opt_u32(&format!(
            "{}.rope.scaling.original_context_length",
            cfg.arch.name
        ))?
        .map_or(cfg.n_ctx, |v| v as usize);
    let which = if cfg.n_ctx > orig {
        "rope_factors_long.weight"
    } else {
        "rope_factors_short.weight"
    };
    vector(f, which, n).map(Some)
}

/// Reads a depthwise convolution kernel: GGUF dims `[taps, channels]` (the converter
/// squeezed PyTorch's `(channels, 1, taps)`), as f32, channel by channel.
fn kernel(f: &GgufFile, name: &str, channels: usize, taps: usize) -> Result<Vec<f32>> {
    let t = f.require_tensor(name)?;
    let want = [taps as u64, channels as u64];
    if t.info.dims != want {
        return Err(ModelError::TensorShape {
            tensor: name.into(),
            expected: want.to_vec(),
            found: t.info.dims.clone(),
        }
        .into());
    }
    let mut out = vec![0f32; channels * taps];
    dequantize_row(t.info.ty, t.data, &mut out).map_err(|_| ModelError::TensorType {
        tensor: name.into(),
        ty: t.info.ty,
        role: "a convolution kernel",
    })?;
    Ok(out)
}

/// Reads a 1-D tensor of `n` elements as f32.
fn vector(f: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>> {
    let t = f.require_tensor(name)?;
    if t.info.dims != [n as u64] {
        return Err(ModelError::TensorShape {
            tensor: name.into(),
            expected: vec![n as u64],
            found: t.info.dims.clone(),
        }
        .into());
    }
    let mut out = vec![0f32; n];
    dequantize_row(t.info.ty, t.data, &mut out).map_err(|_| ModelError::TensorType {
        tensor: name.into(),
        ty: t.info.ty,
        role: "a vector",
    })?;
    Ok(out)
}
