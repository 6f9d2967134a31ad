//! llama.cpp LoRA adapters (GGUF): what `convert_lora_to_gguf.py` writes and
//! `llama_adapter_lora_init` reads.
//!
//! Metadata: `general.architecture` (the base's), `general.type = "adapter"`,
//! `adapter.type = "lora"`, `general.name`, `adapter.lora.alpha` (f32),
//! `general.quantization_version = 2`. Tensors `blk.N.<base tensor>.weight.lora_a` with ggml
//! dims `[in, r]` (A as (r, in) rows) and `.lora_b` with dims `[r, out]` (B as (out, r) rows),
//! B's rows in GGUF order — the order adapters already have here, so q/k `lora_b` come out
//! permuted exactly as the converter permutes them.
//!
//! llama.cpp scales each pair by `alpha / r` with `r` the pair's own rank (`lora_b`'s
//! `ne[0]`), or by 1 when alpha is 0. What is written as alpha is α, as the converter does,
//! except for rsLoRA adapters: the converter ignores `use_rslora`, so α·√r is written and
//! llama.cpp's α·√r / r equals our α/√r. Any pair whose scale still differs from what
//! llama.cpp will compute (`alpha_pattern`, `rank_pattern` under rsLoRA, adapters combined
//! here) has the ratio folded into its B, so every pair's product s·B·A is what we apply.

use std::path::Path;

use super::adapter::{first_non_finite, target_shape, Adapter, LayerAdapter, LoraPair};
use super::config::{LayerSelection, LoraConfig, LoraInit, Target, MAX_RANK};
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, GgufWriter, Value};
use crate::model::ModelConfig;
use crate::quant::{dequantize_row, quantize, GgmlType};

/// The scale llama.cpp applies to a pair of rank `r` under adapter alpha `alpha`.
pub fn llama_cpp_scale(alpha: f32, r: usize) -> f32 {
    if alpha != 0.0 {
        alpha / r as f32
    } else {
        1.0
    }
}

/// The `adapter.lora.alpha` written for `config`: α, or α·√r for rsLoRA.
pub fn exported_alpha(config: &LoraConfig) -> f32 {
    if config.rslora {
        config.alpha * (config.r as f32).sqrt()
    } else {
        config.alpha
    }
}

/// The GGUF tensor name of a pair's A (`'a'`) or B (`'b'`).
pub fn tensor_name(layer: usize, t: Target, ab: char) -> String {
    format!("blk.{layer}.{}.weight.lora_{ab}", t.gguf_tensor())
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportSummary {
    /// `adapter.lora.alpha`.
    pub alpha: f32,
    /// Tensors written (two per pair).
    pub n_tensors: usize,
    /// Pairs whose scale ratio was folded into B (block, target, factor).
    pub folded: Vec<(usize, Target, f32)>,
}

/// Builds the llama.cpp adapter file for `adapter` on a base of architecture `arch`
/// (`general.architecture`), with tensors of type `dtype` (F32 or F16).
pub fn to_writer(
    adapter: &Adapter,
    model: &ModelConfig,
    arch: &str,
    name: &str,
    dtype: GgmlType,
) -> Result<(GgufWriter, ExportSummary)> {
    if !matches!(dtype, GgmlType::F32 | GgmlType::F16) {
        return Err(Error::InvalidArgument(format!(
            "adapter tensors can be F32 or F16, not {dtype}"
        )));
    }
    adapter.check_fits(model)?;
    let alpha = exported_alpha(&adapter.config);
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String(arch.into()));
    w.set("general.type", Value::String("adapter".into()));
    w.set("adapter.type", Value::String("lora".into()));
    w.set("general.name", Value::String(name.into()));
    w.set("adapter.lora.alpha", Value::F32(alpha));
    w.set("general.quantization_version", Value::U32(2));
    let mut folded = Vec::new();
    let mut n_tensors = 0;
    for (i, t, p) in adapter.entries() {
        let factor = p.scale / llama_cpp_scale(alpha, p.r);
        let b = if factor == 1.0 {
            p.b.clone()
        } else {
            folded.push((i, t, factor));
            p.b.iter().map(|v| v * factor).collect()
        };
        let encode = |v: &[f32], row: usize| quantize(dtype, v, row).map_err(Error::from);
        w.add_tensor(
            tensor_name(i, t, 'a'),
            dtype,
            &[p.in_dim as u64, p.r as u64],
            encode(&p.a, p.in_dim)?,
        )?;
        w.add_tensor(
            tensor_name(i, t, 'b'),
            dtype,
            &[p.r as u64, p.out_dim as u64],
            encode(&b, p.r)?,
        )?;
        n_tensors += 2;
    }
    Ok((
        w,
        ExportSummary {
            alpha,
            n_tensors,
            folded,
        },
    ))
}

/// Writes the llama.cpp adapter file `path` (atomically); see [`to_writer`].
pub fn save(
    adapter: &Adapter,
    model: &ModelConfig,
    arch: &str,
    name: &str,
    dtype: GgmlType,
    path: &Path,
) -> Result<ExportSummary> {
    let (w, summary) = to_writer(adapter, model, arch, name, dtype)?;
    w.write_file(path)?;
    Ok(summary)
}

/// Loads a llama.cpp LoRA adapter file for `model`. Each pair gets llama.cpp's scale
/// (alpha / its rank, or 1 when alpha is 0 or absent); shapes are checked against the model.
pub fn load(path: &Path, model: &ModelConfig) -> Result<Adapter> {
    let f = GgufFile::open(path)?;
    from_file(&f, path, model)
}

/// [`load`] from an open GGUF file; `path` names it in errors.
pub fn from_file(f: &GgufFile, path: &Path, model: &ModelConfig) -> Result<Adapter> {
    let err = |msg: String| Error::Adapter {
        path: path.to_path_buf(),
        msg,
    };
    let general_type = f.opt_str("general.type")?.unwrap_or("");
    if general_type != "adapter" {
        return Err(err(format!(
            "general.type is {general_type:?}, not \"adapter\": not a llama.cpp adapter file"
        )));
    }
    let adapter_type = f.opt_str("adapter.type")?.unwrap_or("");
    if adapter_type != "lora" {
        return Err(err(format!(
            "adapter.type is {adapter_type:?}; only \"lora\" adapters are supported"
        )));
    }
    let arch = f.opt_str("general.architecture")?.unwrap_or("");
    if arch != model.arch.name() {
        return Err(err(format!(
            "the adapter is for architecture {arch:?} but the model is {:?} — trained for another base model?",
            model.arch.name()
        )));
    }
    let alpha = f.opt_f32("adapter.lora.alpha")?.unwrap_or(0.0);
    if !alpha.is_finite() {
        return Err(err(format!(
            "adapter.lora.alpha = {alpha} is not a finite number"
        )));
    }
    let read = |name: &str| -> Result<(Vec<u64>, Vec<f32>)> {
        let t = f.require_tensor(name)?;
        let n =
            usize::try_from(t.info.n_elements()).map_err(|_| err(format!("{name}: too large")))?;
        let mut out = vec![0f32; n];
        dequantize_row(t.info.ty, t.data, &mut out)
            .map_err(|e| err(format!("tensor {name}: {e}")))?;
        Ok((t.info.dims.clone(), out))
    };
    let mut layers: Vec<LayerAdapter> = (0..model.n_layer).map(|_| Default::default()).collect();
    let mut targets = Vec::new();
    let mut on = vec![false; model.n_layer];
    let mut max_r = 0;
    for info in f.tensors() {
        let name = info.name.as_str();
        let Some(stem) = name.strip_suffix(".weight.lora_a") else {
            if name.ends_with(".weight.lora_b") {
                continue;
            }
            return Err(err(format!(
                "tensor {name:?} is not the lora_a/lora_b of a q/k/v/o/gate/up/down weight; not supported"
            )));
        };
        let (layer, t) = parse_stem(model.arch, stem).ok_or_else(|| {
            err(format!(
                "tensor {name:?} does not adapt a block's attn_q/k/v/output or ffn_gate/up/down; not supported"
            ))
        })?;
        if layer >= model.n_layer {
            return Err(err(format!(
                "tensor {name:?}: block {layer} does not exist in a {}-block model — trained for another base model?",
                model.n_layer
            )));
        }
        let b_name = tensor_name(layer, t, 'b');
        if f.tensor_info(&b_name).is_none() {
            return Err(err(format!("{name:?} has no matching {b_name:?}")));
        }
        // Shapes are checked before anything is allocated for the values.
        let a_dims = f.require_tensor(name)?.info.dims.clone();
        let b_dims = f.require_tensor(&b_name)?.info.dims.clone();
        let (out, inp) = target_shape(model, t);
        let r = usize::try_from(a_dims.get(1).copied().unwrap_or(0)).unwrap_or(usize::MAX);
        if r == 0 || a_dims != [inp as u64, r as u64] || b_dims != [r as u64, out as u64] {
            return Err(err(format!(
                "{name} {a_dims:?} / {b_name} {b_dims:?} do not fit the model's {out}×{inp} {} (expected [{inp}, r] and [r, {out}]) — trained for another base model?",
                t.gguf_tensor()
            )));
        }
        if r > MAX_RANK {
            return Err(err(format!(
                "{name}: rank {r} is over the {MAX_RANK} this reader accepts"
            )));
        }
        let (_, a) = read(name)?;
        let (_, b) = read(&b_name)?;
        for (n, values) in [(name, &a), (b_name.as_str(), &b)] {
            if let Some((i, v)) = first_non_finite(values) {
                return Err(err(format!(
                    "tensor {n:?}: value {i} is {v}; an adapter must hold finite numbers"
                )));
            }
        }
        max_r = max_r.max(r);
        layers[layer][t.index()] = Some(LoraPair {
            a,
            b,
            r,
            in_dim: inp,
            out_dim: out,
            scale: llama_cpp_scale(alpha, r),
        });
        targets.push(t);
        on[layer] = true;
    }
    for info in f.tensors() {
        if let Some(stem) = info.name.strip_suffix(".weight.lora_b") {
            if f.tensor_info(&format!("{stem}.weight.lora_a")).is_none() {
                return Err(err(format!("{:?} has no matching lora_a", info.name)));
            }
        }
    }
    if targets.is_empty() {
        return Err(err("no LoRA tensors found".into()));
    }
    targets.sort();
    targets.dedup();
    let layers_sel = if on.iter().all(|&b| b) {
        LayerSelection::All
    } else {
        LayerSelection::List((0..on.len()).filter(|&i| on[i]).collect())
    };
    let config = LoraConfig {
        r: max_r,
        alpha,
        rslora: false,
        dropout: 0.0,
        targets,
        layers: layers_sel,
        init: LoraInit::Kaiming,
        seed: 0,
    };
    Ok(Adapter { config, layers })
}

/// What a llama.cpp adapter file says about itself, read without its base model (what
/// `pocketlora inspect` shows). Nothing is checked against a model here; [`from_file`] does
/// that when the adapter is loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterInfo {
    /// `adapter.type` (`"lora"` for the adapters this crate loads), if present.
    pub adapter_type: Option<String>,
    /// `adapter.lora.alpha`, if present.
    pub alpha: Option<f32>,
    /// `general.architecture`: the base model's architecture.
    pub base_architecture: Option<String>,
    /// All tensors of the file.
    pub n_tensors: usize,
    /// `lora_a` tensors with their `lora_b`.
    pub n_pairs: usize,
    /// The adapted modules, sorted: a pair's tensor name without `blk.N.` and
    /// `.weight.lora_a` (`attn_q`, `ffn_down`; `token_embd` for a tensor outside the blocks).
    pub modules: Vec<String>,
    /// The blocks with at least one pair, ascending.
    pub layers: Vec<usize>,
    /// The smallest and largest rank of a pair (a `lora_a`'s second dim); `None` without
    /// pairs. They differ for adapters trained with a rank pattern.
    pub rank: Option<(u64, u64)>,
}

/// Whether `f` is an adapter file (`general.type = "adapter"`, as llama.cpp's
/// `convert_lora_to_gguf.py` and [`to_writer`] write).
pub fn is_adapter(f: &GgufFile) -> bool {
    f.opt_str("general.type").ok().flatten() == Some("adapter")
}

/// Describes the adapter file `f` (see [`AdapterInfo`]), or `None` when it is not an
/// adapter ([`is_adapter`]). Fails only on a key of the wrong type.
pub fn info(f: &GgufFile) -> Result<Option<AdapterInfo>> {
    if !is_adapter(f) {
        return Ok(None);
    }
    let mut modules = Vec::new();
    let mut layers = Vec::new();
    let mut rank: Option<(u64, u64)> = None;
    let mut n_pairs = 0;
    for t in f.tensors() {
        let Some(stem) = t.name.strip_suffix(".weight.lora_a") else {
            continue;
        };
        if f.tensor_info(&format!("{stem}.weight.lora_b")).is_none() {
            continue;
        }
        n_pairs += 1;
        let block = stem
            .strip_prefix("blk.")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(n, module)| Some((n.parse::<usize>().ok()?, module)));
        let module = match block {
            Some((layer, module)) => {
                layers.push(layer);
                module
            }
            None => stem,
        };
        modules.push(module.to_owned());
        let r = t.dims.get(1).copied().unwrap_or(1);
        rank = Some(rank.map_or((r, r), |(lo, hi)| (lo.min(r), hi.max(r))));
    }
    modules.sort();
    modules.dedup();
    layers.sort_unstable();
    layers.dedup();
    Ok(Some(AdapterInfo {
        adapter_type: f.opt_str("adapter.type")?.map(str::to_owned),
        alpha: f.opt_f32("adapter.lora.alpha")?,
        base_architecture: f.opt_str("general.architecture")?.map(str::to_owned),
        n_tensors: f.tensors().len(),
        n_pairs,
        modules,
        layers,
        rank,
    }))
}

/// (block, target) of `blk.N.attn_q` etc., as architecture `arch` names its tensors.
fn parse_stem(arch: &crate::model::Arch, stem: &str) -> Option<(usize, Target)> {
    let rest = stem.strip_prefix("blk.")?;
    let (n, tensor) = rest.split_once('.')?;
    let layer = n.parse().ok()?;
    Some((layer, arch.target_of_gguf(tensor)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_scales_and_stems() {
        assert_eq!(llama_cpp_scale(16.0, 8), 2.0);
        assert_eq!(llama_cpp_scale(0.0, 8), 1.0);
        let c = LoraConfig {
            r: 16,
            alpha: 8.0,
            rslora: true,
            ..LoraConfig::default()
        };
        assert_eq!(exported_alpha(&c), 32.0);
        assert_eq!(llama_cpp_scale(exported_alpha(&c), 16), c.scale());
        assert_eq!(
            parse_stem(&crate::model::arch::LLAMA, "blk.12.ffn_down"),
            Some((12, Target::Down))
        );
        assert_eq!(
            parse_stem(&crate::model::arch::LLAMA, "blk.0.attn_output"),
            Some((0, Target::O))
        );
        assert_eq!(parse_stem(&crate::model::arch::LLAMA, "token_embd"), None);
        assert_eq!(parse_stem(&crate::model::arch::LLAMA, "blk.x.attn_q"), None);
        assert_eq!(tensor_name(3, Target::K, 'b'), "blk.3.attn_k.weight.lora_b");
    }
}
