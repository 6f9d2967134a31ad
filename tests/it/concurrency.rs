//! Concurrency: one `Model` (one mmap, one worker pool) shared by two trainers on two
//! threads, and generation on one thread while a trainer runs on another. Each must give
//! exactly what it gives alone: the model is read-only after loading, and each trainer owns
//! its adapter, optimizer state and workspace.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::asset;
use pocketlora::internals::data::{read_ids_jsonl, TokenRecord};
use pocketlora::internals::gguf::GgufFile;
use pocketlora::internals::infer::{generate_with, GenerateParams, SamplerConfig};
use pocketlora::internals::lora::{Adapter, LoraConfig};
use pocketlora::internals::model::Model;
use pocketlora::internals::tokenizer::Tokenizer;
use pocketlora::internals::train::{TrainConfig, Trainer};

/// The types a caller shares between threads are `Send + Sync`; a trainer can move to
/// another thread.
#[test]
fn shared_types_are_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    fn movable<T: Send>() {}
    shared::<Model>();
    shared::<GgufFile>();
    shared::<Tokenizer>();
    shared::<Adapter>();
    movable::<Trainer>();
    movable::<pocketlora::internals::model::KvCache>();
}

fn records() -> Vec<TokenRecord> {
    read_ids_jsonl(common::golden("oracle/eval_records.jsonl")).unwrap()
}

/// `steps` steps of a fresh rank-4 adapter seeded with `seed`; the adapter at the end.
fn train(model: &Arc<Model>, seed: u64, steps: usize, data: &[TokenRecord]) -> Adapter {
    let a = Adapter::new(
        &model.cfg,
        LoraConfig {
            r: 4,
            seed,
            ..LoraConfig::default()
        },
    )
    .unwrap();
    let cfg = TrainConfig {
        lr: 3e-3,
        total_steps: steps,
        seed,
        ..TrainConfig::default()
    };
    let max = data.iter().map(|r| r.ids.len()).max().unwrap_or(1);
    let mut t = Trainer::new(model.clone(), a, cfg, max).unwrap();
    for s in 0..steps {
        let batch: Vec<&TokenRecord> = (0..2).map(|k| &data[(2 * s + k) % data.len()]).collect();
        t.step(&batch).unwrap();
    }
    t.into_adapter()
}

fn model() -> Arc<Model> {
    Arc::new(Model::open(asset("stories260K-q4_0.gguf"), 2).unwrap())
}

#[test]
fn two_trainers_on_one_model() {
    let model = model();
    let data = records();
    let alone = (train(&model, 1, 4, &data), train(&model, 2, 4, &data));
    let together = std::thread::scope(|s| {
        let a = s.spawn(|| train(&model, 1, 4, &data));
        let b = s.spawn(|| train(&model, 2, 4, &data));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(
        together.0 == alone.0,
        "trainer 1 differs when another runs beside it"
    );
    assert!(
        together.1 == alone.1,
        "trainer 2 differs when another runs beside it"
    );
    assert!(alone.0 != alone.1, "the two runs are distinct");
}

#[test]
fn generation_while_a_trainer_runs() {
    let model = model();
    let data = records();
    let adapter = train(&model, 3, 2, &data);
    let params = GenerateParams {
        max_new: 16,
        sampler: SamplerConfig::greedy(),
        stop_ids: Vec::new(),
    };
    let prompt = [1u32, 403, 29, 12];
    let gen = |a: Option<&Adapter>| {
        generate_with(&model, a, &prompt, &params, |_| true)
            .unwrap()
            .0
    };
    let (base_alone, adapted_alone) = (gen(None), gen(Some(&adapter)));
    let trained_alone = train(&model, 4, 4, &data);
    let done = AtomicBool::new(false);
    let (trained, rounds) = std::thread::scope(|s| {
        let t = s.spawn(|| {
            let a = train(&model, 4, 4, &data);
            done.store(true, Ordering::Release);
            a
        });
        let mut rounds = 0;
        // At least one round, and rounds until the trainer is done.
        loop {
            assert_eq!(
                gen(None),
                base_alone,
                "base generation changed during training"
            );
            assert_eq!(gen(Some(&adapter)), adapted_alone);
            rounds += 1;
            // Done, or ended without finishing (a panic, reported by the join below).
            if done.load(Ordering::Acquire) || t.is_finished() {
                break;
            }
        }
        (t.join().unwrap(), rounds)
    });
    assert!(rounds >= 1);
    assert!(
        trained == trained_alone,
        "training differs while generation runs"
    );
}
