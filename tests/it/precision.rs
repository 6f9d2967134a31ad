//! `--precision fast` stays close to `exact`: evaluation loss within 0.5% and the loss after
//! 20 LoRA training steps within 1%, on the bundled real models and on a random model whose
//! every matrix takes the int8 path (all widths multiples of 32). Also: fast runs are
//! deterministic for a thread count.

use crate::common;

use common::{asset, golden, rel_diff, scratch_dir};
use pocketlora::internals::bench::{write_random_model, Shape};
use pocketlora::internals::data::{read_ids_jsonl, TokenRecord};
use pocketlora::internals::eval::evaluate;
use pocketlora::internals::kernels::Precision;
use pocketlora::internals::lora::{Adapter, LoraConfig};
use pocketlora::internals::model::Model;
use pocketlora::internals::quant::GgmlType;
use pocketlora::internals::train::{Schedule, TrainConfig, Trainer};
use std::sync::Arc;

fn train_losses(model: &Arc<Model>, records: &[TokenRecord], steps: usize) -> Vec<f64> {
    let lora = LoraConfig {
        r: 8,
        alpha: 16.0,
        ..LoraConfig::default()
    };
    let adapter = Adapter::new(&model.cfg, lora).unwrap();
    let cfg = TrainConfig {
        lr: 2e-3,
        schedule: Schedule::Constant,
        total_steps: steps,
        ..TrainConfig::default()
    };
    let max_len = records.iter().map(|r| r.ids.len()).max().unwrap();
    let mut tr = Trainer::new(model.clone(), adapter, cfg, max_len).unwrap();
    let batch: Vec<&TokenRecord> = records.iter().collect();
    (0..steps).map(|_| tr.step(&batch).unwrap().loss).collect()
}

fn compare(name: &str, model: Model, records: &[TokenRecord]) {
    let mut model = Arc::new(model);
    Arc::get_mut(&mut model)
        .unwrap()
        .set_precision(Precision::Exact);
    let exact_eval = evaluate(&model, records).unwrap().loss;
    let exact_train = train_losses(&model, records, 20);
    // The trainers are gone: the model is ours alone again.
    Arc::get_mut(&mut model)
        .unwrap()
        .set_precision(Precision::Fast);
    let fast_eval = evaluate(&model, records).unwrap().loss;
    let fast_train = train_losses(&model, records, 20);
    let (de, dt) = (
        rel_diff(fast_eval, exact_eval),
        rel_diff(fast_train[19], exact_train[19]),
    );
    eprintln!(
        "{name}: eval exact {exact_eval:.6} fast {fast_eval:.6} ({de:.2e}); loss after 20 steps exact {:.6} fast {:.6} ({dt:.2e})",
        exact_train[19], fast_train[19]
    );
    assert!(de <= 5e-3, "{name}: eval loss differs by {de:e}");
    assert!(dt <= 1e-2, "{name}: training loss differs by {dt:e}");
    assert!(
        exact_train[19] < exact_train[0],
        "{name}: training did not lower the loss"
    );
}

fn facts() -> Vec<TokenRecord> {
    read_ids_jsonl(golden("facts/aidreams_facts.jsonl")).unwrap()
}

#[test]
fn fast_stays_within_tolerance_on_the_bundled_models() {
    for file in [
        "aidreams260K-q8_0.gguf",
        "aidreams260K-q4_0.gguf",
        "aidreams260K-f32.gguf",
    ] {
        compare(file, Model::open(asset(file), 2).unwrap(), &facts());
    }
}

fn random_records(n_vocab: usize, n: usize, len: usize) -> Vec<TokenRecord> {
    (0..n)
        .map(|k| {
            let ids: Vec<u32> = (0..len)
                .map(|i| 3 + ((i * 7919 + k * 104_729) % (n_vocab - 3)) as u32)
                .collect();
            TokenRecord::new(ids, (0..len).map(|i| i > 0).collect())
        })
        .collect()
}

#[test]
fn fast_stays_within_tolerance_when_every_matrix_is_int8() {
    let dir = scratch_dir("precision");
    let shape = Shape {
        name: "test",
        arch: "llama",
        n_vocab: 512,
        n_embd: 256,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 512,
        n_ctx: 256,
        tied: true,
        qkv_bias: false,
        rope_base: 10000.0,
        rms_eps: 1e-5,
        head_dim: None,
        window: None,
        attn_layers: None,
    };
    for quant in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K] {
        let path = dir.join(format!("{}.gguf", quant.name()));
        write_random_model(&shape, quant, &path).unwrap();
        let model = Model::open(&path, 2).unwrap();
        compare(
            &format!("random {quant}"),
            model,
            &random_records(512, 3, 96),
        );
    }
    // A gemma3 shape: GeGLU, QK-norm and post-norms, head size 128, a window of 32.
    let gemma = Shape {
        arch: "gemma3",
        head_dim: Some(128),
        window: Some(32),
        ..shape
    };
    let path = dir.join("gemma3-q8_0.gguf");
    write_random_model(&gemma, GgmlType::Q8_0, &path).unwrap();
    let model = Model::open(&path, 2).unwrap();
    compare("random gemma3 Q8_0", model, &random_records(512, 3, 96));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fast_training_is_deterministic_for_a_thread_count() {
    let mut model = Model::open(asset("aidreams260K-q8_0.gguf"), 2).unwrap();
    model.set_precision(Precision::Fast);
    let model = Arc::new(model);
    let a = train_losses(&model, &facts(), 3);
    let b = train_losses(&model, &facts(), 3);
    assert_eq!(
        a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}
