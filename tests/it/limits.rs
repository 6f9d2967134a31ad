//! Sizes a file claims are bounded before anything is allocated for them: model dimensions
//! and counts in GGUF metadata, and adapter ranks in PEFT configs and llama.cpp adapters.
//! (GGUF counts, string and array lengths and dims: tests/gguf_malformed.rs; safetensors
//! dims and offsets: tests/safetensors_malformed.rs.)

use crate::common;

use std::path::Path;
use std::sync::Arc;

use common::synth;
use pocketlora::internals::error::{Error, ModelError};
use pocketlora::internals::fuzzing::tiny_model_config;
use pocketlora::internals::gguf::{GgufFile, GgufWriter, Value};
use pocketlora::internals::lora::{gguf_adapter, peft, LoraConfig, MAX_RANK};
use pocketlora::internals::model::{
    Model, ModelConfig, MAX_CONTEXT, MAX_HEADS, MAX_LAYERS, MAX_WIDTH,
};
use pocketlora::internals::quant::GgmlType;

fn model_with(key: &str, v: u32) -> pocketlora::Result<Model> {
    let mut w = synth::writer(&synth::llama_untied());
    w.set(format!("llama.{key}"), Value::U32(v));
    Model::from_file(Arc::new(GgufFile::from_bytes(w.to_bytes()).unwrap()), 1)
}

#[test]
fn model_sizes_over_the_limits() {
    for (key, limit) in [
        ("block_count", MAX_LAYERS),
        ("embedding_length", MAX_WIDTH),
        ("feed_forward_length", MAX_WIDTH),
        ("attention.head_count", MAX_HEADS),
        ("attention.head_count_kv", MAX_HEADS),
        ("context_length", MAX_CONTEXT),
        ("attention.key_length", MAX_WIDTH),
        ("rope.dimension_count", MAX_WIDTH),
    ] {
        for v in [limit as u32 + 1, u32::MAX] {
            match model_with(key, v) {
                Err(Error::Model(ModelError::Limit {
                    key: k,
                    value,
                    limit: l,
                })) => {
                    assert_eq!(k, format!("llama.{key}"));
                    assert_eq!((value, l), (u64::from(v), limit));
                }
                Err(e) => panic!("{key} = {v}: {e}"),
                Ok(_) => panic!("{key} = {v} was accepted"),
            }
        }
    }
    // At the limit the size is not refused as such (the file is then inconsistent with its
    // tensors, a configuration error of another kind).
    assert!(!matches!(
        model_with("block_count", MAX_LAYERS as u32),
        Err(Error::Model(ModelError::Limit { .. }))
    ));
}

fn peft_config(r: &str) -> String {
    format!(r#"{{"peft_type": "LORA", "r": {r}, "lora_alpha": 16, "target_modules": ["q_proj"]}}"#)
}

#[test]
fn peft_rank_over_the_limit() {
    let cfg = tiny_model_config();
    for r in ["0", "4097", "1099511627776", "-1", "2.5"] {
        match peft::load_from_bytes(Path::new("a"), &peft_config(r), &[], &cfg) {
            Err(Error::Adapter { path, msg }) => {
                assert_eq!(path, Path::new("a").join(peft::CONFIG_FILE));
                assert!(msg.contains("\"r\""), "r = {r}: {msg}");
            }
            other => panic!("r = {r}: {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn lora_config_rank_over_the_limit() {
    let c = LoraConfig {
        r: MAX_RANK + 1,
        ..LoraConfig::default()
    };
    match c.validate() {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("4097"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// A llama.cpp adapter with one q pair of rank `r` for the tiny model.
fn gguf_adapter_of_rank(cfg: &ModelConfig, r: u64) -> GgufFile {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::from("llama"));
    w.set("general.type", Value::from("adapter"));
    w.set("adapter.type", Value::from("lora"));
    w.set("adapter.lora.alpha", Value::F32(8.0));
    let (c, q) = (cfg.n_embd as u64, cfg.q_dim() as u64);
    let zeros = |n: u64| vec![0u8; 4 * n as usize];
    w.add_tensor(
        "blk.0.attn_q.weight.lora_a",
        GgmlType::F32,
        &[c, r],
        zeros(c * r),
    )
    .unwrap();
    w.add_tensor(
        "blk.0.attn_q.weight.lora_b",
        GgmlType::F32,
        &[r, q],
        zeros(r * q),
    )
    .unwrap();
    GgufFile::from_bytes(w.to_bytes()).unwrap()
}

#[test]
fn gguf_adapter_rank_over_the_limit() {
    let cfg = tiny_model_config();
    let p = Path::new("a.gguf");
    gguf_adapter::from_file(&gguf_adapter_of_rank(&cfg, 4), p, &cfg).unwrap();
    match gguf_adapter::from_file(&gguf_adapter_of_rank(&cfg, MAX_RANK as u64 + 1), p, &cfg) {
        Err(Error::Adapter { msg, .. }) => {
            assert!(msg.contains("rank 4097 is over the 4096"), "{msg}")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}
