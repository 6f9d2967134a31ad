//! End to end on real weights: LoRA on aidreams260K-q8_0 learns six one-line personal
//! facts (tokenized with Hugging Face's tokenizer for this GGUF, committed) well enough that
//! greedy generation continues at least four of them verbatim from their first words,
//! where the base model continues none. Settings follow the PEFT calibration in
//! shared/models/README.md: r 16, α 32, all seven targets, AdamW lr 5e-3, batch 6, 200 steps.

use crate::common;

use std::sync::Arc;

use common::{asset, golden, scratch_dir};
use pocketlora::internals::data::TokenRecord;
use pocketlora::internals::infer::{generate, GenerateParams, SamplerConfig};
use pocketlora::internals::lora::{peft, Adapter, LoraConfig};
use pocketlora::internals::model::Model;
use pocketlora::internals::safetensors::Dtype;
use pocketlora::internals::train::{RecordOrder, Schedule, TrainConfig, Trainer};

struct Fact {
    ids: Vec<u32>,
    prompt_len: usize,
}

fn facts() -> Vec<Fact> {
    let text = std::fs::read_to_string(golden("facts/aidreams_facts.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Fact {
                ids: v["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect(),
                prompt_len: v["prompt_len"].as_u64().unwrap() as usize,
            }
        })
        .collect()
}

/// How many facts greedy generation completes exactly (through the final EOS).
fn recalled(model: &Model, facts: &[Fact]) -> usize {
    facts
        .iter()
        .filter(|f| {
            let params = GenerateParams {
                max_new: f.ids.len() - f.prompt_len,
                sampler: SamplerConfig::greedy(),
                stop_ids: vec![],
            };
            let (new, _) = generate(model, &f.ids[..f.prompt_len], &params, |_| true).unwrap();
            new == f.ids[f.prompt_len..]
        })
        .count()
}

#[test]
fn six_facts_are_learned_and_recalled() {
    let mut model = Arc::new(Model::open(asset("aidreams260K-q8_0.gguf"), 2).unwrap());
    let facts = facts();
    assert_eq!(facts.len(), 6);
    assert_eq!(
        recalled(&model, &facts),
        0,
        "the base model must not know the facts"
    );

    let records: Vec<TokenRecord> = facts
        .iter()
        .map(|f| TokenRecord::new(f.ids.clone(), (0..f.ids.len()).map(|i| i > 0).collect()))
        .collect();
    let lora = LoraConfig {
        r: 16,
        alpha: 32.0,
        ..LoraConfig::default()
    };
    let adapter = Adapter::new(&model.cfg, lora).unwrap();
    let cfg = TrainConfig {
        lr: 5e-3,
        schedule: Schedule::Constant,
        total_steps: 200,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(model.clone(), adapter, cfg, 64).unwrap();
    let mut order = RecordOrder::new(records.len(), false, 0);
    let mut losses = Vec::new();
    for _ in 0..200 {
        let batch: Vec<&TokenRecord> = order.take(6).into_iter().map(|i| &records[i]).collect();
        losses.push(trainer.step(&batch).unwrap().loss);
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(first > 4.0 && last < 0.3, "loss {first} → {last}");

    // Through the adapter files, as a user would: save, load, apply.
    let dir = scratch_dir("memorize");
    peft::save(
        trainer.adapter(),
        &model.cfg,
        &dir,
        "aidreams260K-q8_0.gguf",
        Dtype::F32,
    )
    .unwrap();
    drop(trainer);
    let model = Arc::get_mut(&mut model).expect("the trainer is gone");
    let loaded = peft::load(&dir, &model.cfg).unwrap();
    model.set_adapter(Some(Arc::new(loaded))).unwrap();
    let n = recalled(model, &facts);
    eprintln!("loss {first:.3} → {last:.3}; {n} of 6 facts recalled verbatim");
    assert!(n >= 4, "only {n} of 6 facts recalled");
    // Hot swap back to the base model.
    model.set_adapter(None).unwrap();
    assert_eq!(recalled(model, &facts), 0);
    std::fs::remove_dir_all(&dir).ok();
}
