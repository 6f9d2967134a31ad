//! Whole-model gradient check in f64: the adapter gradients of the training pass
//! (checkpointed forward, fused head + loss, block backward) against central differences
//! of the loss, on small synthetic llama, qwen2, gemma3, qwen3 and smollm3 models with
//! every target adapted, B non-zero, GQA, tied and untied heads, and dropout; for gemma3
//! every feature at once (head size other than n_embd/n_head, QK-norm, post-norms,
//! GeGLU, √d embeddings, sliding windows shorter than the sequences with their own RoPE
//! base, final-logit soft-capping), under every workspace shape.

use crate::common;

use std::sync::Arc;

use common::synth::{self, Lcg, Spec};
use pocketlora::internals::gguf::GgufFile;
use pocketlora::internals::lora::{Adapter, LayerSelection, LoraConfig, Target};
use pocketlora::internals::model::backward::{
    forward_backward, SavedDtype, TrainWorkspace, WorkspaceShape, ALL_BLOCKS,
};
use pocketlora::internals::model::Model;
use pocketlora::internals::quant::GgmlType;

fn tiny(arch: &'static str, tied: bool) -> Spec {
    Spec {
        name: "tiny",
        arch,
        n_vocab: 24,
        n_embd: 32,
        n_layer: 3,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 40,
        n_ctx: 64,
        tied,
        qkv_bias: arch == "qwen2",
        rope_base: 10000.0,
        embd_ty: GgmlType::F32,
        output_ty: GgmlType::F32,
        matrix_types: [GgmlType::F32; 7],
        rope_linear: None,
        rope_freqs: None,
        features: common::synth::Features::NONE,
        seed: 5,
    }
}

/// `check_chunked`'s `chunk` for a workspace keeping every block's activations.
const KEEP_ALL: usize = 1000;
/// ... and for one keeping only the top block's.
const KEEP_TOP: usize = 1001;

fn loss_and_grads(
    model: &Model,
    adapter: &Adapter<f64>,
    seqs: &[(Vec<u32>, Vec<bool>)],
    chunk: usize,
) -> (f64, Adapter<f64>) {
    let mut grads = adapter.zeros_like();
    let n: usize = seqs
        .iter()
        .map(|(_, t)| t.iter().filter(|&&b| b).count())
        .sum();
    // chunk 0 asks for √L checkpointing (a checkpoint every 2 blocks) with 5 logit rows;
    // KEEP_ALL keeps every block's activations, KEEP_TOP the top block's (the others
    // checkpointed, in chunks of 4).
    let shape = match chunk {
        0 => WorkspaceShape {
            segment: 2,
            loss_rows: 5,
            ..WorkspaceShape::plain(16)
        },
        KEEP_ALL => WorkspaceShape::keeping(16, ALL_BLOCKS),
        KEEP_TOP => WorkspaceShape {
            chunk: 4,
            ..WorkspaceShape::keeping(16, 1)
        },
        c => WorkspaceShape::chunked(16, c, SavedDtype::F32),
    };
    let mut ws = TrainWorkspace::with_shape(model, adapter, shape);
    let mut loss = 0.0;
    for (k, (ids, targets)) in seqs.iter().enumerate() {
        loss += forward_backward(
            model,
            adapter,
            &mut grads,
            ids,
            targets,
            1.0 / n as f64,
            77 + k as u64,
            &mut ws,
        )
        .unwrap();
    }
    (loss / n as f64, grads)
}

fn check(spec: &Spec, lora: LoraConfig) {
    check_chunked(spec, lora, 16);
}

/// `chunk`: tokens per MLP/projection chunk of the training pass (16 = unchunked here).
fn check_chunked(spec: &Spec, lora: LoraConfig, chunk: usize) {
    let model = Model::from_file(
        Arc::new(GgufFile::from_bytes(synth::build(spec)).unwrap()),
        2,
    )
    .unwrap();
    let mut adapter: Adapter<f64> = Adapter::new(&model.cfg, lora).unwrap();
    let mut r = Lcg::new(9);
    for p in adapter.pairs_mut() {
        for b in p.b.iter_mut() {
            *b = r.next() as f64 * 0.3;
        }
    }
    let seqs = vec![
        (
            vec![1, 5, 9, 3, 17, 22, 4, 8, 11, 2],
            vec![false, true, true, true, true, true, true, true, true, true],
        ),
        (
            vec![1, 7, 7, 13, 20, 6],
            vec![false, false, false, true, false, true],
        ),
    ];
    let (_, grads) = loss_and_grads(&model, &adapter, &seqs, chunk);
    // Central differences over every parameter.
    let mut analytic = Vec::new();
    let mut numeric = Vec::new();
    let n_pairs = adapter.pairs().count();
    for pi in 0..n_pairs {
        for which in 0..2 {
            let len = {
                let p = adapter.pairs().nth(pi).unwrap();
                if which == 0 {
                    p.a.len()
                } else {
                    p.b.len()
                }
            };
            for e in 0..len {
                let g = grads.pairs().nth(pi).unwrap();
                analytic.push(if which == 0 { g.a[e] } else { g.b[e] });
                let mut eval = |delta: f64| {
                    let p = adapter.pairs_mut().nth(pi).unwrap();
                    let v = if which == 0 { &mut p.a[e] } else { &mut p.b[e] };
                    let old = *v;
                    *v = old + delta;
                    let (l, _) = loss_and_grads(&model, &adapter, &seqs, chunk);
                    let p = adapter.pairs_mut().nth(pi).unwrap();
                    if which == 0 {
                        p.a[e] = old
                    } else {
                        p.b[e] = old
                    }
                    l
                };
                let h = 1e-5;
                numeric.push((eval(h) - eval(-h)) / (2.0 * h));
            }
        }
    }
    let diff: f64 = analytic
        .iter()
        .zip(&numeric)
        .map(|(a, n)| (a - n) * (a - n))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = numeric.iter().map(|n| n * n).sum::<f64>().sqrt();
    assert!(norm > 1e-3, "gradient suspiciously small: {norm}");
    assert!(
        diff / norm <= 1e-6,
        "{} {:?}: relative gradient error {:e} over {} parameters",
        spec.arch,
        spec.tied,
        diff / norm,
        numeric.len()
    );
}

#[test]
fn llama_untied_all_targets_every_layer() {
    check(
        &tiny("llama", false),
        LoraConfig {
            r: 2,
            alpha: 3.0,
            ..LoraConfig::default()
        },
    );
}

#[test]
fn qwen2_tied_with_biases_last_two_layers_rslora() {
    check(
        &tiny("qwen2", true),
        LoraConfig {
            r: 3,
            alpha: 2.0,
            rslora: true,
            layers: LayerSelection::Last(2),
            ..LoraConfig::default()
        },
    );
}

#[test]
fn dropout_masks_are_reproduced_in_backward() {
    check(
        &tiny("llama", true),
        LoraConfig {
            r: 2,
            alpha: 4.0,
            dropout: 0.3,
            targets: vec![Target::Q, Target::V, Target::Up, Target::Down],
            ..LoraConfig::default()
        },
    );
}

#[test]
fn only_the_middle_layer_adapted() {
    check(
        &tiny("llama", false),
        LoraConfig {
            r: 2,
            layers: LayerSelection::List(vec![1]),
            targets: vec![Target::K, Target::O, Target::Gate],
            ..LoraConfig::default()
        },
    );
}

#[test]
fn token_chunked_recompute_with_dropout() {
    // Chunks of 3 tokens over sequences of 10 and 6: chunk edges inside both records.
    check_chunked(
        &tiny("qwen2", false),
        LoraConfig {
            r: 2,
            alpha: 4.0,
            dropout: 0.2,
            ..LoraConfig::default()
        },
        3,
    );
}

#[test]
fn segmented_checkpoints_and_few_logit_rows() {
    check_chunked(
        &tiny("llama", false),
        LoraConfig {
            r: 2,
            alpha: 3.0,
            ..LoraConfig::default()
        },
        0,
    );
}

#[test]
fn vocabulary_over_several_head_panels() {
    // The fused head reads the vocabulary in panels of HEAD_PANEL rows with an online
    // softmax; a vocabulary of two panels and a part one rescales what earlier panels
    // accumulated wherever a later panel raises a row's max.
    let panel = pocketlora::internals::model::backward::HEAD_PANEL;
    let spec = Spec {
        n_vocab: 2 * panel + 37,
        ..tiny("llama", false)
    };
    check(
        &spec,
        LoraConfig {
            r: 2,
            alpha: 3.0,
            layers: LayerSelection::Last(1),
            targets: vec![Target::O, Target::Down],
            ..LoraConfig::default()
        },
    );
}

/// A gemma3 with every feature: head size 12 (not 32/4), a sliding window of 4 on layers 0
/// and 1 (pattern 3) with RoPE base 100 there, soft-capped logits (cap 2: the logits of
/// this model reach past it), QK-norm, post-norms, GeGLU, √d embeddings, tied head.
fn gemma3() -> Spec {
    Spec {
        features: synth::Features {
            head_dim: Some(12),
            sliding_window: Some(4),
            swa_pattern: Some(3),
            rope_base_swa: Some(100.0),
            final_softcap: Some(2.0),
            ..synth::Features::NONE
        },
        ..tiny("gemma3", true)
    }
}

fn all_targets(r: usize) -> LoraConfig {
    LoraConfig {
        r,
        alpha: 3.0,
        ..LoraConfig::default()
    }
}

#[test]
fn gemma3_every_feature_plain_and_kept() {
    check(&gemma3(), all_targets(2));
    check_chunked(&gemma3(), all_targets(2), KEEP_ALL);
}

#[test]
fn gemma3_chunked_with_dropout_and_partly_kept() {
    let lora = LoraConfig {
        dropout: 0.2,
        ..all_targets(2)
    };
    check_chunked(&gemma3(), lora.clone(), 3);
    check_chunked(&gemma3(), lora, KEEP_TOP);
    check_chunked(&gemma3(), all_targets(2), 0);
}

#[test]
fn qwen3_head_size_and_qk_norm_untied() {
    let spec = Spec {
        features: synth::Features {
            head_dim: Some(12),
            ..synth::Features::NONE
        },
        ..tiny("qwen3", false)
    };
    check(&spec, all_targets(2));
}

#[test]
fn smollm3_without_rope_on_every_fourth_layer() {
    let spec = Spec {
        n_layer: 4,
        ..tiny("smollm3", true)
    };
    check(&spec, all_targets(2));
}

/// A phi3: fused q/k/v and gate/up (each fused pair's A shared by its parts, B split by
/// rows), partial rotary over 4 of 8 dimensions, LongRoPE factors and attention factor;
/// with dropout (one mask per fused module's input, as PEFT applies it) and chunked.
#[test]
fn phi3_fused_projections_partial_rotary_and_long_rope() {
    let spec = Spec {
        n_ctx: 64,
        features: synth::Features {
            rope_dim: Some(4),
            long_rope: Some((vec![1.0, 2.5], vec![1.0, 1.2], 16, 1.1)),
            ..synth::Features::NONE
        },
        ..tiny("phi3", false)
    };
    check(&spec, all_targets(2));
    let lora = LoraConfig {
        dropout: 0.25,
        ..all_targets(2)
    };
    check_chunked(&spec, lora, 3);
}

/// An lfm2: short-convolution blocks (3 taps) on layers 0 and 2 around an attention block
/// with QK-norm, every target (conv in/out projections included); also chunked with
/// dropout and with every block's activations kept.
#[test]
fn lfm2_short_convolution_blocks() {
    let spec = Spec {
        features: synth::Features {
            conv_layers: Some(vec![true, false, true]),
            conv_taps: 3,
            ..synth::Features::NONE
        },
        ..tiny("lfm2", false)
    };
    check(&spec, all_targets(2));
    let lora = LoraConfig {
        dropout: 0.2,
        ..all_targets(2)
    };
    check_chunked(&spec, lora, 3);
    check_chunked(&spec, all_targets(2), KEEP_ALL);
}
