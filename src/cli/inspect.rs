//! `pocketlora inspect`: what a GGUF file holds — architecture, shapes, tensor types and
//! sizes, vocabulary and special ids. Works on any valid GGUF, runnable or not; a LoRA
//! adapter file (`general.type = "adapter"`) is described as one (type, alpha, base
//! architecture, pairs, modules, blocks, rank; see [`gguf_adapter::info`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};

use pocketlora::gguf_adapter;
use pocketlora::GgufFile;
use pocketlora::ModelConfig;
use pocketlora::{Error, Result};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

const SPECIAL: [(&str, &str); 7] = [
    ("bos", "tokenizer.ggml.bos_token_id"),
    ("eos", "tokenizer.ggml.eos_token_id"),
    ("unk", "tokenizer.ggml.unknown_token_id"),
    ("pad", "tokenizer.ggml.padding_token_id"),
    ("sep", "tokenizer.ggml.seperator_token_id"),
    ("eot", "tokenizer.ggml.eot_token_id"),
    ("eom", "tokenizer.ggml.eom_token_id"),
];

/// Everything `inspect` reports, as JSON (the text form is rendered from it).
pub fn describe(f: &GgufFile) -> Result<Value> {
    let mut special = serde_json::Map::new();
    for (name, key) in SPECIAL {
        if let Some(id) = f.opt_u32(key)? {
            special.insert(name.into(), json!(id));
        }
    }
    let vocab = f
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.as_array())
        .map(|a| a.len());
    let mut by_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    let tensors: Vec<Value> = f
        .tensors()
        .iter()
        .map(|t| {
            let e = by_type.entry(t.ty.name()).or_default();
            e.0 += 1;
            e.1 += t.n_bytes;
            json!({"name": t.name, "type": t.ty.name(), "dims": t.dims, "bytes": t.n_bytes})
        })
        .collect();
    let types: serde_json::Map<String, Value> = by_type
        .iter()
        .map(|(k, (n, b))| (k.to_string(), json!({"count": n, "bytes": b})))
        .collect();
    let adapter = gguf_adapter::info(f)?;
    let model = match (&adapter, ModelConfig::from_gguf(f)) {
        (Some(a), _) => json!({
            "runnable": false,
            "reason": format!(
                "a LoRA adapter for a {} base model, not a model: apply it to its base with --adapter",
                a.base_architecture.as_deref().unwrap_or("(unnamed)")
            ),
        }),
        (None, Ok(c)) => {
            let sliding: Vec<usize> = (0..c.n_layer).filter(|&l| c.layers[l].sliding).collect();
            let no_rope: Vec<usize> = (0..c.n_layer)
                .filter(|&l| c.layers[l].rope == pocketlora::LayerRope::None)
                .collect();
            json!({
                "runnable": true,
                "architecture": c.arch.name(),
                "n_vocab": c.n_vocab,
                "n_embd": c.n_embd,
                "n_layer": c.n_layer,
                "n_head": c.n_head,
                "n_head_kv": c.n_head_kv,
                "head_dim": c.head_dim,
                "n_ff": c.n_ff,
                "n_ctx": c.n_ctx,
                "rms_eps": c.rms_eps,
                "rope_base": c.rope_base,
                "rope_dim": c.rope_dim,
                "rope_freq_scale": c.rope_freq_scale,
                "rope_style": format!("{:?}", c.rope_style).to_lowercase(),
                "tied_output": f.tensor_info("output.weight").is_none(),
                "rope_freqs": f.tensor_info("rope_freqs.weight").is_some(),
                "long_rope": (c.arch.long_rope && f.tensor_info("rope_factors_long.weight").is_some())
                    .then(|| json!({"attn_factor": c.rope_attn_factor})),
                "features": c.arch.features(),
                "activation": c.arch.activation.name(),
                "qk_norm": c.arch.qk_norm,
                "post_norms": c.arch.post_norms,
                "sliding_window": c.window,
                "sliding_layers": sliding,
                "rope_base_local": c.has_local_rope().then_some(c.rope_base_local),
                "no_rope_layers": no_rope,
                "attention_scale": c.attn_scale,
                "embedding_scale": c.embed_scale,
                "final_logit_softcap": c.final_softcap,
                "fused_tensors": Vec::<String>::new(),
                "covers": c.arch.covers,
            })
        }
        (None, Err(e)) => json!({"runnable": false, "reason": e.to_string()}),
    };
    let adapter = adapter.map(|a| {
        json!({
            "type": a.adapter_type,
            "alpha": a.alpha,
            "base_architecture": a.base_architecture,
            "tensor_count": a.n_tensors,
            "pairs": a.n_pairs,
            "modules": a.modules,
            "layers": a.layers,
            "rank_min": a.rank.map(|r| r.0),
            "rank_max": a.rank.map(|r| r.1),
        })
    });
    Ok(json!({
        "file": f.path().map(|p| p.display().to_string()),
        "file_size": f.file_len(),
        "gguf_version": f.version(),
        "alignment": f.alignment(),
        "architecture": f.opt_str("general.architecture")?,
        "name": f.opt_str("general.name")?,
        "metadata_keys": f.metadata().len(),
        "model": model,
        "adapter": adapter,
        "vocab_size": vocab,
        "tokenizer": f.opt_str("tokenizer.ggml.model")?,
        "special_ids": special,
        "tensor_count": f.tensors().len(),
        "tensor_bytes": f.tensors().iter().map(|t| t.n_bytes).sum::<u64>(),
        "tensor_types": types,
        "tensors": tensors,
    }))
}

pub fn run(a: InspectArgs) -> Result<()> {
    let f = GgufFile::open(&a.model)?;
    let d = describe(&f)?;
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("<stdout>", e);
    if a.json {
        writeln!(out, "{d}").map_err(io)?;
        return Ok(());
    }
    writeln!(out, "{}", render_text(&d)).map_err(io)?;
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
}

/// A JSON value as text: strings unquoted, null as "-".
fn text(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The lines of an adapter file: what it is, for which base, what it adapts.
fn render_adapter(a: &Value, line: &mut impl FnMut(String)) {
    let s = text;
    let kind = match a["type"].as_str() {
        Some("lora") => "LoRA".to_string(),
        _ => s(&a["type"]),
    };
    line(format!(
        "adapter:       {kind} adapter for a {} base model, alpha {}",
        s(&a["base_architecture"]),
        s(&a["alpha"])
    ));
    let layers: Vec<String> = a["layers"]
        .as_array()
        .map(|l| l.iter().map(s).collect())
        .unwrap_or_default();
    line(format!(
        "pairs:         {} (of {} tensors) on blocks {}",
        a["pairs"],
        a["tensor_count"],
        if layers.is_empty() {
            "-".to_string()
        } else {
            layers.join(", ")
        }
    ));
    let modules: Vec<String> = a["modules"]
        .as_array()
        .map(|l| l.iter().map(s).collect())
        .unwrap_or_default();
    line(format!("modules:       {}", modules.join(", ")));
    let rank = match (a["rank_min"].as_u64(), a["rank_max"].as_u64()) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(hi)) => format!("{lo} to {hi}"),
        _ => "-".to_string(),
    };
    line(format!("rank:          {rank}"));
}

fn render_text(d: &Value) -> String {
    let s = text;
    let mut o = String::new();
    let mut line = |l: String| {
        o.push_str(&l);
        o.push('\n');
    };
    line(format!(
        "file:          {} ({} bytes = {}, GGUF v{}, alignment {})",
        s(&d["file"]),
        d["file_size"],
        mib(d["file_size"].as_u64().unwrap_or(0)),
        d["gguf_version"],
        d["alignment"]
    ));
    line(format!(
        "architecture:  {}   name: {}",
        s(&d["architecture"]),
        s(&d["name"])
    ));
    let m = &d["model"];
    let a = &d["adapter"];
    if !a.is_null() {
        render_adapter(a, &mut line);
    } else if m["runnable"] == json!(true) {
        line(format!(
            "shape:         embedding {}, layers {}, heads {} (kv {}), head dim {}, ffn {}",
            m["n_embd"], m["n_layer"], m["n_head"], m["n_head_kv"], m["head_dim"], m["n_ff"]
        ));
        line(format!("context:       {}", m["n_ctx"]));
        line(format!(
            "rope:          base {}, {} dims, {} pairs, frequency scale {}{}",
            m["rope_base"],
            m["rope_dim"],
            s(&m["rope_style"]),
            m["rope_freq_scale"],
            if m["rope_freqs"] == json!(true) {
                ", per-dimension factors".to_string()
            } else if !m["long_rope"].is_null() {
                format!(
                    ", LongRoPE factors, attention factor {}",
                    m["long_rope"]["attn_factor"]
                )
            } else {
                String::new()
            }
        ));
        line(format!("rms epsilon:   {}", m["rms_eps"]));
        let feats: Vec<String> = m["features"]
            .as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default();
        let mut block = vec![s(&m["activation"])];
        block.extend(feats);
        line(format!("block:         {}", block.join(", ")));
        if let Some(w) = m["sliding_window"].as_u64() {
            let n = m["sliding_layers"].as_array().map_or(0, |a| a.len());
            line(format!(
                "attention:     sliding window {w} on {n} of {} layers (local RoPE base {}), the others global",
                m["n_layer"],
                s(&m["rope_base_local"])
            ));
        }
        if let Some(n) = m["no_rope_layers"].as_array().filter(|a| !a.is_empty()) {
            line(format!(
                "no RoPE:       layers {}",
                n.iter().map(s).collect::<Vec<_>>().join(", ")
            ));
        }
        if !m["final_logit_softcap"].is_null() {
            line(format!(
                "logits:        soft-capped at {}",
                m["final_logit_softcap"]
            ));
        }
        if m["embedding_scale"].as_f64() != Some(1.0) {
            line(format!("embedding:     × {}", m["embedding_scale"]));
        }
        line(format!(
            "output head:   {}",
            if m["tied_output"] == json!(true) {
                "tied to the embedding"
            } else {
                "separate"
            }
        ));
        line(format!(
            "vocabulary:    {} ({} tokenizer)",
            m["n_vocab"],
            s(&d["tokenizer"])
        ));
    } else {
        line(format!(
            "model:         not runnable here: {}",
            s(&m["reason"])
        ));
        line(format!(
            "vocabulary:    {} ({} tokenizer)",
            s(&d["vocab_size"]),
            s(&d["tokenizer"])
        ));
    }
    let sp: Vec<String> = d["special_ids"].as_object().map_or(vec![], |m| {
        m.iter().map(|(k, v)| format!("{k} {v}")).collect()
    });
    if a.is_null() {
        line(format!(
            "special ids:   {}",
            if sp.is_empty() {
                "-".into()
            } else {
                sp.join(", ")
            }
        ));
    }
    let types: Vec<String> = d["tensor_types"].as_object().map_or(vec![], |m| {
        m.iter()
            .map(|(k, v)| {
                format!(
                    "{k} ×{} ({})",
                    v["count"],
                    mib(v["bytes"].as_u64().unwrap_or(0))
                )
            })
            .collect()
    });
    line(format!(
        "tensors:       {} ({}): {}",
        d["tensor_count"],
        mib(d["tensor_bytes"].as_u64().unwrap_or(0)),
        types.join(", ")
    ));
    for t in d["tensors"].as_array().into_iter().flatten() {
        line(format!(
            "  {:<32} {:<5} {:<16} {:>12} bytes",
            s(&t["name"]),
            s(&t["type"]),
            t["dims"].to_string(),
            t["bytes"]
        ));
    }
    o.pop();
    o
}
