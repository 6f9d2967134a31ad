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

/// A validated 2-D weight tensor of the file: `rows` output features × `cols` inputs.
#[derive(Clone, Debug)]
pub struct MatrixRef {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
}

/// The weights of one transformer block.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: MatrixRef,
    pub wk: MatrixRef,
    pub wv: MatrixRef,
    pub wo: MatrixRef,
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
            layers.push(LayerWeights {
                attn_norm: vector(f, &name("attn_norm.weight"), c)?,
                wq: matrix(f, &name("attn_q.weight"), q, c)?,
                wk: matrix(f, &name("attn_k.weight"), kv, c)?,
                wv: matrix(f, &name("attn_v.weight"), kv, c)?,
                wo: matrix(f, &name("attn_output.weight"), c, q)?,
                bq: bias("attn_q.bias", q)?,
                bk: bias("attn_k.bias", kv)?,
                bv: bias("attn_v.bias", kv)?,
                q_norm: needed(qk, "attn_q_norm.weight", hd)?,
                k_norm: needed(qk, "attn_k_norm.weight", hd)?,
                attn_post_norm: needed(post, "post_attention_norm.weight", c)?,
                ffn_norm: vector(f, &name("ffn_norm.weight"), c)?,
                ffn_post_norm: needed(post, "post_ffw_norm.weight", c)?,
                w_gate: matrix(f, &name("ffn_gate.weight"), ff, c)?,
                w_up: matrix(f, &name("ffn_up.weight"), ff, c)?,
                w_down: matrix(f, &name("ffn_down.weight"), c, ff)?,
            });
        }
        let output_norm = vector(f, "output_norm.weight", c)?;
        let rope_freqs = match f.tensor_info("rope_freqs.weight") {
            Some(_) => Some(vector(f, "rope_freqs.weight", cfg.rope_dim / 2)?),
            None => None,
        };
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
        match QMatrix::new(m.ty, m.rows, m.cols, data) {
            Ok(q) => q,
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
    })
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
