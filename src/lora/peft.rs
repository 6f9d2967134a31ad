//! PEFT adapter directories: `adapter_model.safetensors` + `adapter_config.json`, as
//! Hugging Face PEFT writes and reads them.
//!
//! Keys are `base_model.model.model.layers.{i}.{self_attn|mlp}.{q,k,v,o,gate,up,down}_proj
//! .lora_{A,B}.weight`, A as [r, in] and B as [out, r], rows in Hugging Face order. A
//! llama-architecture GGUF stores attn_q/attn_k rows permuted for adjacent-pair RoPE (as
//! llama.cpp's converter does), and adapters here live in GGUF order, so the q/k `lora_B`
//! rows are permuted on the way out and back on the way in; qwen2 is not permuted.
//! Per-module ranks come from the tensor shapes and must agree with `r` / `rank_pattern`;
//! `alpha_pattern` / `rank_pattern` keys are regular expressions matched against the end of
//! the module name as PEFT matches them (first key in file order). Saving writes the
//! patterns back for every module whose rank or scale differs from the config's, and
//! target modules by full name when the adapted blocks do not all share one target set.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::adapter::{first_non_finite, target_shape, Adapter, LayerAdapter, LoraPair};
use super::config::{scale_for, LayerSelection, LoraConfig, LoraInit, Target, MAX_RANK};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::ModelConfig;
use crate::safetensors::{self, Dtype};

pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
pub const CONFIG_FILE: &str = "adapter_config.json";

/// The PEFT module path of a target in block `layer` (without `base_model.model.`), as
/// the model's architecture names it.
pub fn module_name(model: &ModelConfig, layer: usize, t: Target) -> String {
    model.arch.hf_module_path(layer, t)
}

fn tensor_key(model: &ModelConfig, layer: usize, t: Target, ab: char) -> String {
    format!(
        "base_model.model.{}.lora_{ab}.weight",
        module_name(model, layer, t)
    )
}

/// Heads whose rows llama.cpp's converter permuted for this target, if any.
fn permuted_heads(model: &ModelConfig, t: Target) -> Option<usize> {
    match t {
        Target::Q if model.arch.permuted_qk => Some(model.n_head),
        Target::K if model.arch.permuted_qk => Some(model.n_head_kv),
        _ => None,
    }
}

/// Heap that saving an adapter of this configuration holds for a moment beyond the adapter
/// itself: the q/k B matrices copied into PEFT's row order, and per tensor its name, shape
/// and header text (a generous 512 bytes each, `copies` sets of tensors — a checkpoint
/// writes parameters and both AdamW moments).
pub fn save_extra_bytes(model: &ModelConfig, lora: &LoraConfig, copies: usize) -> Result<u64> {
    let on = lora.layers.resolve(model.n_layer)?;
    let layers = on.iter().filter(|&&b| b).count() as u64;
    let mut permuted = 0u64;
    let targets = lora.targets_for(model.arch)?;
    for &t in &targets {
        if permuted_heads(model, t).is_some() {
            permuted += (crate::lora::target_shape(model, t).0 * lora.r * 4) as u64;
        }
    }
    let tensors = layers * 2 * targets.len() as u64;
    Ok(layers * permuted + tensors * 512 * copies.max(1) as u64)
}

/// Reorders the rows of `m` (rows × `cols`) from Hugging Face order to GGUF order
/// (`to_gguf`) or back: within each head of `rows / heads` rows, HF row `s·d/2 + i` is GGUF
/// row `2i + s` (llama.cpp's `permute`).
pub fn permute_rows(m: &[f32], cols: usize, heads: usize, to_gguf: bool) -> Vec<f32> {
    let rows = m.len() / cols.max(1);
    let d = rows / heads.max(1);
    let mut out = vec![0f32; m.len()];
    for h in 0..heads {
        for i in 0..d / 2 {
            for s in 0..2 {
                let hf = h * d + s * (d / 2) + i;
                let gg = h * d + 2 * i + s;
                let (src, dst) = if to_gguf { (hf, gg) } else { (gg, hf) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&m[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Writes `adapter` (for `model`) as a PEFT directory `dir` (created if missing), with
/// `base_model` as `base_model_name_or_path`. Both files are written atomically.
pub fn save(
    adapter: &Adapter,
    model: &ModelConfig,
    dir: &Path,
    base_model: &str,
    dtype: Dtype,
) -> Result<()> {
    adapter.check_fits(model)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // Borrow every tensor; only the q/k B matrices that change row order are copied (they
    // are out × r, small), so saving needs no second copy of the adapter.
    let permuted: Vec<Option<Vec<f32>>> = adapter
        .entries()
        .map(|(_, t, p)| permuted_heads(model, t).map(|h| permute_rows(&p.b, p.r, h, false)))
        .collect();
    let mut refs: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    for ((i, t, p), perm) in adapter.entries().zip(&permuted) {
        refs.push((tensor_key(model, i, t, 'A'), vec![p.r, p.in_dim], &p.a));
        refs.push((
            tensor_key(model, i, t, 'B'),
            vec![p.out_dim, p.r],
            perm.as_deref().unwrap_or(&p.b),
        ));
    }
    let meta: BTreeMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::write(&dir.join(WEIGHTS_FILE), &refs, dtype, &meta)?;
    let config = config_json(adapter, model, base_model);
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    write_atomic(&dir.join(CONFIG_FILE), |w| w.write_all(text.as_bytes()))
}

/// The adapter's tensors under their PEFT names, shapes and row order: (name, shape, values).
pub fn to_tensors(adapter: &Adapter, model: &ModelConfig) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut owned = Vec::new();
    for (i, t, p) in adapter.entries() {
        owned.push((
            tensor_key(model, i, t, 'A'),
            vec![p.r, p.in_dim],
            p.a.clone(),
        ));
        let b = match permuted_heads(model, t) {
            Some(h) => permute_rows(&p.b, p.r, h, false),
            None => p.b.clone(),
        };
        owned.push((tensor_key(model, i, t, 'B'), vec![p.out_dim, p.r], b));
    }
    owned
}

fn config_json(adapter: &Adapter, model: &ModelConfig, base_model: &str) -> Value {
    let c = &adapter.config;
    // Per-module ranks and alphas that differ from the config's: PEFT's patterns, keyed by
    // the full module name (PEFT matches keys as `(.*\.)?KEY$`; a full name matches only
    // its own module).
    let mut rank_pattern = serde_json::Map::new();
    let mut alpha_pattern = serde_json::Map::new();
    for (i, t, p) in adapter.entries() {
        if p.r != c.r {
            rank_pattern.insert(module_name(model, i, t), json!(p.r));
        }
        let expected = scale_for(c.alpha, p.r, c.rslora);
        if (p.scale - expected).abs() > 1e-6 * expected.abs().max(p.scale.abs()) {
            let root = if c.rslora {
                (p.r as f64).sqrt()
            } else {
                p.r as f64
            };
            alpha_pattern.insert(module_name(model, i, t), json!(p.scale as f64 * root));
        }
    }
    // Adapted blocks and their targets: one target list over a set of blocks when every
    // adapted block has the same targets, otherwise every module by its full name.
    let per_layer: Vec<Vec<Target>> = adapter
        .layers
        .iter()
        .map(|l| {
            Target::EVERY
                .into_iter()
                .filter(|t| l[t.index()].is_some())
                .collect()
        })
        .collect();
    let adapted: Vec<usize> = (0..per_layer.len())
        .filter(|&i| !per_layer[i].is_empty())
        .collect();
    let regular = adapted
        .windows(2)
        .all(|w| per_layer[w[0]] == per_layer[w[1]]);
    let (targets, layers): (Vec<String>, Value) = if regular && !adapted.is_empty() {
        let targets = per_layer[adapted[0]]
            .iter()
            .map(|&t| model.arch.hf_module(t).to_string())
            .collect();
        let layers = if adapted.len() == model.n_layer {
            Value::Null
        } else {
            json!(adapted)
        };
        (targets, layers)
    } else {
        let names = adapter
            .entries()
            .map(|(i, t, _)| module_name(model, i, t))
            .collect();
        (names, Value::Null)
    };
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": c.r,
        "lora_alpha": c.alpha,
        "lora_dropout": c.dropout,
        "use_rslora": c.rslora,
        "target_modules": targets,
        "layers_to_transform": layers,
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "use_dora": false,
        "revision": null,
    })
}

/// Loads a PEFT adapter directory for `model`: any subset of targets and blocks,
/// per-module ranks, `alpha_pattern`, rsLoRA. Shapes are checked against the model.
pub fn load(dir: &Path, model: &ModelConfig) -> Result<Adapter> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    // The configuration is checked before the (larger) weights file is read.
    let settings = Settings::parse(&text).map_err(|msg| Error::Adapter {
        path: cfg_path.clone(),
        msg,
    })?;
    let w_path = dir.join(WEIGHTS_FILE);
    let (tensors, _) = safetensors::read(&w_path)?;
    build(&settings, &w_path, &tensors, model)
}

/// [`load`] from the two files' contents (`config` is `adapter_config.json`, `weights` the
/// bytes of `adapter_model.safetensors`); errors name the two files as if they were in `dir`.
pub fn load_from_bytes(
    dir: &Path,
    config: &str,
    weights: &[u8],
    model: &ModelConfig,
) -> Result<Adapter> {
    let settings = Settings::parse(config).map_err(|msg| Error::Adapter {
        path: dir.join(CONFIG_FILE),
        msg,
    })?;
    let w_path = dir.join(WEIGHTS_FILE);
    let (tensors, _) = safetensors::parse(weights).map_err(|source| Error::Safetensors {
        path: w_path.clone(),
        source,
    })?;
    build(&settings, &w_path, &tensors, model)
}

/// What `adapter_config.json` says.
struct Settings {
    r: usize,
    alpha: f32,
    rslora: bool,
    dropout: f32,
    alpha_pattern: Pattern,
    rank_pattern: Pattern,
}

impl Settings {
    fn parse(text: &str) -> std::result::Result<Settings, String> {
        let cfg: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        if !cfg.is_object() {
            return Err("expected a JSON object (PEFT's LoraConfig)".into());
        }
        if let Some(t) = cfg.get("peft_type").and_then(Value::as_str) {
            if t != "LORA" {
                return Err(format!("peft_type {t:?} is not supported (LORA only)"));
            }
        }
        if cfg.get("use_dora").and_then(Value::as_bool) == Some(true) {
            return Err("DoRA adapters (use_dora) are not supported".into());
        }
        if cfg.get("fan_in_fan_out").and_then(Value::as_bool) == Some(true) {
            return Err("fan_in_fan_out adapters (Conv1D bases) are not supported".into());
        }
        let r = cfg
            .get("r")
            .and_then(Value::as_u64)
            .ok_or("missing integer \"r\"")?;
        if r == 0 || r > MAX_RANK as u64 {
            return Err(format!(
                "\"r\" = {r}: a rank must be between 1 and {MAX_RANK}"
            ));
        }
        let alpha = cfg
            .get("lora_alpha")
            .and_then(Value::as_f64)
            .ok_or("missing number \"lora_alpha\"")?;
        if !(alpha as f32).is_finite() {
            return Err(format!("\"lora_alpha\" = {alpha} is not a finite f32"));
        }
        let rslora = cfg
            .get("use_rslora")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let dropout = cfg
            .get("lora_dropout")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        if !(0.0..1.0).contains(&dropout) {
            return Err(format!("\"lora_dropout\" = {dropout} must be in [0, 1)"));
        }
        Ok(Settings {
            r: r as usize,
            alpha: alpha as f32,
            rslora,
            dropout: dropout as f32,
            alpha_pattern: Pattern::parse(&cfg, text, "alpha_pattern")?,
            rank_pattern: Pattern::parse(&cfg, text, "rank_pattern")?,
        })
    }
}

/// The adapter the tensors of `w_path` make under `s`, checked against `model`.
fn build(
    s: &Settings,
    w_path: &Path,
    tensors: &BTreeMap<String, safetensors::Tensor>,
    model: &ModelConfig,
) -> Result<Adapter> {
    let (r, alpha, rslora, dropout) = (s.r, s.alpha, s.rslora, s.dropout);
    let (alpha_pattern, rank_pattern) = (&s.alpha_pattern, &s.rank_pattern);
    let werr = |msg: String| Error::Adapter {
        path: w_path.to_path_buf(),
        msg,
    };
    let mut layers: Vec<LayerAdapter> = (0..model.n_layer).map(|_| Default::default()).collect();
    let mut targets_seen = Vec::new();
    let mut layers_seen = vec![false; model.n_layer];
    for (key, a) in tensors {
        if key.contains("lora_B") {
            continue;
        }
        let (layer, t) = parse_key(model, key).ok_or_else(|| {
            werr(format!("tensor {key:?} is not a LoRA A/B of a q/k/v/o/gate/up/down projection; not supported"))
        })?;
        if layer >= model.n_layer {
            return Err(werr(format!("tensor {key:?}: block {layer} does not exist in a {}-block model — trained for another base model?", model.n_layer)));
        }
        let b_key = key.replace("lora_A", "lora_B");
        let b = tensors
            .get(&b_key)
            .ok_or_else(|| werr(format!("{key:?} has no matching {b_key:?}")))?;
        let (out, inp) = target_shape(model, t);
        let module = module_name(model, layer, t);
        let rank = a.shape.first().copied().unwrap_or(0);
        if a.shape != [rank, inp] || b.shape != [out, rank] || rank == 0 {
            return Err(werr(format!(
                "{key}: lora_A {:?} / lora_B {:?} do not fit the base model's {} ({out}×{inp}, so lora_A [r, {inp}] and lora_B [{out}, r]) — trained for another base model?",
                a.shape,
                b.shape,
                t.gguf_tensor()
            )));
        }
        if rank > MAX_RANK {
            return Err(werr(format!(
                "{key}: rank {rank} is over the {MAX_RANK} this reader accepts"
            )));
        }
        let want_rank = rank_pattern.lookup(&module).map_or(r, |v| v as usize);
        if rank != want_rank {
            return Err(werr(format!(
                "{key}: rank {rank}, but adapter_config.json gives {module} rank {want_rank} (r / rank_pattern)"
            )));
        }
        let a_alpha = alpha_pattern.lookup(&module).map_or(alpha, |v| v as f32);
        if !a_alpha.is_finite() {
            return Err(werr(format!(
                "{module}: alpha {a_alpha} from alpha_pattern is not a finite f32"
            )));
        }
        for (name, values) in [(key.as_str(), &a.data), (b_key.as_str(), &b.data)] {
            if let Some((i, v)) = first_non_finite(values) {
                return Err(werr(format!(
                    "tensor {name:?}: value {i} is {v}; an adapter must hold finite numbers"
                )));
            }
        }
        let b_rows = match permuted_heads(model, t) {
            Some(h) => permute_rows(&b.data, rank, h, true),
            None => b.data.clone(),
        };
        layers[layer][t.index()] = Some(LoraPair {
            a: a.data.clone(),
            b: b_rows,
            r: rank,
            in_dim: inp,
            out_dim: out,
            scale: scale_for(a_alpha, rank, rslora),
        });
        targets_seen.push(t);
        layers_seen[layer] = true;
    }
    for key in tensors.keys().filter(|k| k.contains("lora_B")) {
        if !tensors.contains_key(&key.replace("lora_B", "lora_A")) {
            return Err(werr(format!("{key:?} has no matching lora_A")));
        }
    }
    if targets_seen.is_empty() {
        return Err(werr("no LoRA tensors found".into()));
    }
    targets_seen.sort();
    targets_seen.dedup();
    let layers_sel = if layers_seen.iter().all(|&b| b) {
        LayerSelection::All
    } else {
        LayerSelection::List(
            layers_seen
                .iter()
                .enumerate()
                .filter(|(_, &b)| b)
                .map(|(i, _)| i)
                .collect(),
        )
    };
    let config = LoraConfig {
        r,
        alpha,
        rslora,
        dropout,
        targets: targets_seen,
        layers: layers_sel,
        init: LoraInit::Kaiming,
        seed: 0,
    };
    Ok(Adapter { config, layers })
}

/// A `rank_pattern` / `alpha_pattern` map: regular-expression keys, matched as PEFT's
/// `get_pattern_key` does — `re.match(rf"(.*\.)?({key})$", module)`, the first key in the
/// file's order that matches wins.
struct Pattern {
    /// (compiled key, value), in file order.
    keys: Vec<(regex_lite::Regex, f64)>,
}

impl Pattern {
    fn parse(cfg: &Value, text: &str, field: &str) -> std::result::Result<Pattern, String> {
        let Some(map) = cfg.get(field).and_then(Value::as_object) else {
            return Ok(Pattern { keys: Vec::new() });
        };
        // serde_json sorts object keys; PEFT takes the first match in file order, so order
        // the keys by where they appear in the text after the field's name.
        let after = text
            .find(&format!("\"{field}\""))
            .map_or(text, |i| &text[i..]);
        let mut keys = Vec::with_capacity(map.len());
        for (k, v) in map {
            let v = v
                .as_f64()
                .ok_or_else(|| format!("{field}[{k:?}] is not a number"))?;
            let re = regex_lite::Regex::new(&format!("^(?:.*\\.)?(?:{k})$")).map_err(|e| {
                format!("{field} key {k:?} is not a regular expression PEFT could use: {e}")
            })?;
            let quoted = serde_json::to_string(k).unwrap_or_default();
            let pos = after.find(&quoted).unwrap_or(usize::MAX);
            keys.push((pos, re, v));
        }
        keys.sort_by_key(|(pos, _, _)| *pos);
        Ok(Pattern {
            keys: keys.into_iter().map(|(_, re, v)| (re, v)).collect(),
        })
    }

    /// The value of the first key matching `module`.
    fn lookup(&self, module: &str) -> Option<f64> {
        self.keys
            .iter()
            .find(|(re, _)| re.is_match(module))
            .map(|(_, v)| *v)
    }
}

/// (block, target) of `base_model.model.model.layers.{i}.{parent}.{module}.lora_A[.default].weight`.
fn parse_key(model: &ModelConfig, key: &str) -> Option<(usize, Target)> {
    let rest = key.strip_prefix("base_model.model.")?;
    let rest = rest.strip_prefix("model.layers.")?;
    let mut parts = rest.split('.');
    let layer: usize = parts.next()?.parse().ok()?;
    let parent = parts.next()?;
    let module = parts.next()?;
    let t = model.arch.target_of_hf(parent, module)?;
    match (parts.next()?, parts.next()?, parts.next()) {
        ("lora_A" | "lora_B", "weight", None) => Some((layer, t)),
        ("lora_A" | "lora_B", _, Some("weight")) if parts.next().is_none() => Some((layer, t)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_llama_cpp_and_inverts() {
        // Two heads of 4 rows, 1 column: HF rows [h0: a0 a1 b0 b1] → GGUF [a0 b0 a1 b1].
        let hf = [0.0f32, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0];
        let gg = permute_rows(&hf, 1, 2, true);
        assert_eq!(gg, vec![0.0, 2.0, 1.0, 3.0, 10.0, 12.0, 11.0, 13.0]);
        assert_eq!(permute_rows(&gg, 1, 2, false), hf.to_vec());
        let m: Vec<f32> = (0..48).map(|x| x as f32).collect();
        assert_eq!(permute_rows(&permute_rows(&m, 3, 2, true), 3, 2, false), m);
    }

    #[test]
    fn keys_parse_with_and_without_adapter_name() {
        let cfg = crate::fuzzing::tiny_model_config();
        assert_eq!(
            parse_key(
                &cfg,
                "base_model.model.model.layers.3.self_attn.k_proj.lora_A.weight"
            ),
            Some((3, Target::K))
        );
        assert_eq!(
            parse_key(
                &cfg,
                "base_model.model.model.layers.0.mlp.down_proj.lora_B.default.weight"
            ),
            Some((0, Target::Down))
        );
        assert_eq!(
            parse_key(
                &cfg,
                "base_model.model.model.layers.0.mlp.q_proj.lora_A.weight"
            ),
            None
        );
        assert_eq!(
            parse_key(&cfg, "base_model.model.lm_head.lora_A.weight"),
            None
        );
    }

    #[test]
    fn patterns_match_as_peft_does_first_key_in_file_order() {
        let text = r#"{"rank_pattern": {"q_proj": 8, "layers.1.self_attn.q_proj": 2,
            "^model.layers.[23].mlp.*": 6, "1.self_attn.v_proj": 5}}"#;
        let cfg: Value = serde_json::from_str(text).unwrap();
        let p = Pattern::parse(&cfg, text, "rank_pattern").unwrap();
        // "q_proj" comes first in the file, so it wins over the more specific key.
        assert_eq!(p.lookup("model.layers.1.self_attn.q_proj"), Some(8.0));
        assert_eq!(p.lookup("model.layers.2.mlp.up_proj"), Some(6.0));
        assert_eq!(p.lookup("model.layers.4.mlp.up_proj"), None);
        // Keys match whole dot-separated suffixes only.
        assert_eq!(p.lookup("model.layers.1.self_attn.v_proj"), Some(5.0));
        assert_eq!(p.lookup("model.layers.11.self_attn.v_proj"), None);
        assert_eq!(p.lookup("model.layers.0.self_attn.xq_proj"), None);
        let bad = r#"{"alpha_pattern": {"(": 1}}"#;
        let cfg: Value = serde_json::from_str(bad).unwrap();
        assert!(Pattern::parse(&cfg, bad, "alpha_pattern").is_err());
    }
}
