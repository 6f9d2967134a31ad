//! Model configuration and weight validation: every missing key, unsupported setting or
//! mismatched tensor is a specific error naming what is wrong, never a panic.

use crate::common;

use std::sync::Arc;

use common::synth;
use pocketlora::internals::error::{Error, GgufError, ModelError};
use pocketlora::internals::gguf::{GgufFile, GgufWriter, Value};
use pocketlora::internals::model::Model;
use pocketlora::internals::quant::GgmlType;

/// Rewrites a synthetic model, letting `edit_kv` drop/replace keys and `edit_tensor`
/// drop/replace tensors (returning None drops).
fn variant(
    spec: &synth::Spec,
    edit_kv: impl Fn(&str, &Value) -> Option<Value>,
    edit_tensor: impl Fn(&str, GgmlType, &[u64], &[u8]) -> Option<(GgmlType, Vec<u64>, Vec<u8>)>,
) -> pocketlora::Result<Model> {
    let f = GgufFile::from_bytes(synth::build(spec)).expect("synthetic model reads");
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        if let Some(v) = edit_kv(k, v) {
            w.set(k.clone(), v);
        }
    }
    for t in f.tensor_views() {
        if let Some((ty, dims, data)) = edit_tensor(&t.info.name, t.info.ty, &t.info.dims, t.data) {
            w.add_tensor(t.info.name.clone(), ty, &dims, data)
                .expect("edited tensor is valid");
        }
    }
    Model::from_file(Arc::new(GgufFile::from_bytes(w.to_bytes())?), 1)
}

fn keep_kv(_: &str, v: &Value) -> Option<Value> {
    Some(v.clone())
}

fn keep_tensor(
    _: &str,
    ty: GgmlType,
    dims: &[u64],
    data: &[u8],
) -> Option<(GgmlType, Vec<u64>, Vec<u8>)> {
    Some((ty, dims.to_vec(), data.to_vec()))
}

fn err_text(r: pocketlora::Result<Model>) -> (Error, String) {
    let e = r.expect_err("expected an error");
    let s = e.to_string();
    (e, s)
}

#[test]
fn valid_models_load_with_their_shapes() {
    let m = variant(&synth::llama_untied(), keep_kv, keep_tensor).unwrap();
    assert_eq!(
        (
            m.cfg.arch.name,
            m.cfg.n_embd,
            m.cfg.n_head,
            m.cfg.n_head_kv,
            m.cfg.head_dim
        ),
        ("llama", 128, 4, 2, 32)
    );
    assert!(!m.weights.tied_output);
    let m = variant(&synth::qwen2_biases(), keep_kv, keep_tensor).unwrap();
    assert_eq!(m.cfg.arch.name, "qwen2");
    assert!(m.weights.tied_output && m.weights.layers[0].bq.is_some());
    let m = variant(&synth::llama_rope_linear(), keep_kv, keep_tensor).unwrap();
    assert_eq!(m.cfg.rope_freq_scale, 0.25);
    let m = variant(&synth::llama_rope_freqs(), keep_kv, keep_tensor).unwrap();
    assert_eq!(m.weights.rope_freqs.as_ref().map(|f| f.len()), Some(16));
}

#[test]
fn each_required_key_missing_is_named() {
    for key in [
        "general.architecture",
        "llama.embedding_length",
        "llama.block_count",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.context_length",
        "llama.attention.layer_norm_rms_epsilon",
    ] {
        let (e, s) = err_text(variant(
            &synth::llama_untied(),
            |k, v| (k != key).then(|| v.clone()),
            keep_tensor,
        ));
        assert!(
            matches!(e.as_gguf(), Some(GgufError::MissingKey { key: k }) if k == key),
            "{key}: {e:?}"
        );
        assert!(s.contains(key), "{s}");
    }
}

#[test]
fn a_key_of_the_wrong_type_is_named() {
    let (e, s) = err_text(variant(
        &synth::llama_untied(),
        |k, v| {
            Some(if k == "llama.block_count" {
                Value::String("two".into())
            } else {
                v.clone()
            })
        },
        keep_tensor,
    ));
    assert!(
        matches!(e.as_gguf(), Some(GgufError::KeyType { .. })),
        "{e:?}"
    );
    assert!(s.contains("llama.block_count"), "{s}");
}

#[test]
fn other_architectures_are_refused_with_the_supported_list() {
    let (e, s) = err_text(variant(
        &synth::llama_untied(),
        |k, v| {
            Some(if k == "general.architecture" {
                Value::String("gpt2".into())
            } else {
                v.clone()
            })
        },
        keep_tensor,
    ));
    assert!(
        matches!(e, Error::Model(ModelError::UnsupportedArchitecture { .. })),
        "{e:?}"
    );
    assert!(s.contains("gpt2") && s.contains("llama, qwen2"), "{s}");
}

#[test]
fn unsupported_rope_scaling_is_refused_by_name() {
    let spec = synth::llama_rope_linear();
    let (_, s) = err_text(variant(
        &spec,
        |k, v| {
            Some(if k == "llama.rope.scaling.type" {
                Value::String("yarn".into())
            } else {
                v.clone()
            })
        },
        keep_tensor,
    ));
    assert!(s.contains("yarn") && s.contains("linear"), "{s}");
    let (_, s) = err_text(variant(
        &spec,
        |k, v| (k != "llama.rope.scaling.factor").then(|| v.clone()),
        keep_tensor,
    ));
    assert!(s.contains("llama.rope.scaling.factor"), "{s}");
}

#[test]
fn inconsistent_head_counts_are_refused() {
    let (e, s) = err_text(variant(
        &synth::llama_untied(),
        |k, v| {
            Some(if k == "llama.attention.head_count_kv" {
                Value::U32(3)
            } else {
                v.clone()
            })
        },
        keep_tensor,
    ));
    assert!(matches!(e, Error::Model(ModelError::Config(_))), "{e:?}");
    assert!(s.contains("3 key/value heads"), "{s}");
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let spec = synth::llama_untied();
    let (e, s) = err_text(variant(&spec, keep_kv, |n, ty, d, b| {
        (n != "blk.1.ffn_up.weight").then(|| (ty, d.to_vec(), b.to_vec()))
    }));
    assert!(
        matches!(e.as_gguf(), Some(GgufError::MissingTensor { .. })),
        "{e:?}"
    );
    assert!(s.contains("blk.1.ffn_up.weight"), "{s}");
    // attn_k with the query's shape (128 rows instead of 64).
    let (e, s) = err_text(variant(&spec, keep_kv, |n, ty, d, b| {
        if n == "blk.0.attn_k.weight" {
            let data =
                pocketlora::internals::quant::quantize(ty, &vec![0.0; 128 * 128], 128).unwrap();
            Some((ty, vec![128, 128], data))
        } else {
            Some((ty, d.to_vec(), b.to_vec()))
        }
    }));
    assert!(
        matches!(e, Error::Model(ModelError::TensorShape { .. })),
        "{e:?}"
    );
    assert!(
        s.contains("blk.0.attn_k.weight") && s.contains("[128, 64]"),
        "{s}"
    );
    // A norm of the wrong length.
    let (_, s) = err_text(variant(&spec, keep_kv, |n, ty, d, b| {
        if n == "output_norm.weight" {
            Some((ty, vec![64], vec![0; 256]))
        } else {
            Some((ty, d.to_vec(), b.to_vec()))
        }
    }));
    assert!(s.contains("output_norm.weight"), "{s}");
    // qwen2 needs its biases.
    let (_, s) = err_text(variant(&synth::qwen2_biases(), keep_kv, |n, ty, d, b| {
        (n != "blk.0.attn_v.bias").then(|| (ty, d.to_vec(), b.to_vec()))
    }));
    assert!(s.contains("blk.0.attn_v.bias"), "{s}");
}

#[test]
fn a_weight_type_the_engine_cannot_multiply_is_refused() {
    let (e, s) = err_text(variant(&synth::llama_untied(), keep_kv, |n, ty, d, b| {
        if n == "blk.0.attn_q.weight" {
            Some((GgmlType::I32, d.to_vec(), vec![0; 4 * 128 * 128]))
        } else {
            Some((ty, d.to_vec(), b.to_vec()))
        }
    }));
    assert!(
        matches!(e, Error::Model(ModelError::TensorType { .. })),
        "{e:?}"
    );
    assert!(
        s.contains("blk.0.attn_q.weight") && s.contains("I32"),
        "{s}"
    );
}
