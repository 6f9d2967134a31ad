//! Several adapters on one loaded base, switched per request, and the adapter being trained
//! used for generation in the same process:
//! - a shared `&Model` serves requests with different mixes (`AdapterSet`) and no adapter,
//!   each giving what a model with only that adapter set gives;
//! - `generate --adapter A --adapter B:0.5` is the library's rank-concatenated mix, and a
//!   GGUF adapter file works wherever a PEFT directory does;
//! - mid-training, `generate_with(trainer.adapter())` equals generating with the adapter
//!   saved and loaded back, and training goes on afterwards.
//!
//! (That a mix equals llama.cpp's own multi-adapter application is checked in
//! tests/llama_cpp_adapter.rs.)

use crate::common;

use std::process::Command;
use std::sync::Arc;

use common::{asset, golden, scratch_dir};
use pocketlora::internals::data::{read_ids_jsonl, TokenRecord};
use pocketlora::internals::infer::{generate, generate_with, GenerateParams, SamplerConfig};
use pocketlora::internals::lora::{combine, gguf_adapter, peft, AdapterSet};
use pocketlora::internals::model::Model;
use pocketlora::internals::quant::GgmlType;
use pocketlora::internals::safetensors::Dtype;
use pocketlora::internals::train::{RecordOrder, TrainConfig, Trainer};

fn greedy(n: usize) -> GenerateParams {
    GenerateParams {
        max_new: n,
        sampler: SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        },
        stop_ids: vec![],
    }
}

const TRAINED: &str = "oracle/train/stories260K-q8_0/trained";
const SUBSET: &str = "oracle/peft_patterns/plain-subset";

#[test]
fn one_base_serves_each_request_with_its_own_mix() {
    let model = Arc::new(Model::open(asset("stories260K-q8_0.gguf"), 2).unwrap());
    let mut set = AdapterSet::new(&model.cfg);
    set.insert("trained", peft::load(&golden(TRAINED), &model.cfg).unwrap())
        .unwrap();
    set.insert("subset", peft::load(&golden(SUBSET), &model.cfg).unwrap())
        .unwrap();
    let prompt = [1u32, 461, 461];
    let p = greedy(24);
    let requests: Vec<Vec<(&str, f32)>> = vec![
        vec![("trained", 1.0)],
        vec![("trained", 1.0), ("subset", 0.5)],
        vec![],
        vec![("subset", 2.0)],
        vec![("trained", 1.0), ("subset", 0.5)],
    ];
    let mut outputs = Vec::new();
    for r in &requests {
        let mix = if r.is_empty() {
            None
        } else {
            Some(set.mix(r).unwrap())
        };
        let (ids, _) = generate_with(&model, mix.as_deref(), &prompt, &p, |_| true).unwrap();
        // The same request on a model of its own, adapter set the old way.
        let mut own = Model::open(asset("stories260K-q8_0.gguf"), 2).unwrap();
        own.set_adapter(mix.clone()).unwrap();
        assert_eq!(
            generate(&own, &prompt, &p, |_| true).unwrap().0,
            ids,
            "{r:?}"
        );
        outputs.push(ids);
    }
    assert_eq!(outputs[1], outputs[4]);
    assert!(
        outputs[0] != outputs[2] && outputs[1] != outputs[0] && outputs[3] != outputs[2],
        "{outputs:?}"
    );
}

fn cli_ids(args: &[&str]) -> Vec<u32> {
    let o = Command::new(env!("CARGO_BIN_EXE_pocketlora"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect()
}

#[test]
fn generate_takes_several_adapters_and_gguf_files() {
    let m = asset("stories260K-q8_0.gguf");
    let model = Arc::new(Model::open(&m, 2).unwrap());
    let (a, b) = (
        peft::load(&golden(TRAINED), &model.cfg).unwrap(),
        peft::load(&golden(SUBSET), &model.cfg).unwrap(),
    );
    let dir = scratch_dir("multi-cli");
    let b_gguf = dir.join("subset.gguf");
    gguf_adapter::save(&b, &model.cfg, "llama", "subset", GgmlType::F32, &b_gguf).unwrap();
    let mix = combine(&[(&a, 1.0), (&b, 0.5)]).unwrap();
    let prompt = [1u32, 401];
    let (want, _) = generate_with(&model, Some(&mix), &prompt, &greedy(20), |_| true).unwrap();
    let ta = golden(TRAINED);
    let spec_b = format!("{}:0.5", b_gguf.display());
    let base_args = [
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--prompt-ids",
        "1,401",
        "-n",
        "20",
        "--temp",
        "0",
        "--ids",
        "--adapter",
        ta.to_str().unwrap(),
        "--adapter",
        &spec_b,
    ];
    let got = cli_ids(&base_args);
    assert_eq!(&got[2..], &want[..]);
    // The same mix from the PEFT directory of B.
    let sb = format!("{}:0.5", golden(SUBSET).display());
    let mut args = base_args;
    args[13] = &sb;
    assert_eq!(cli_ids(&args), got);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_adapter_in_training_generates_without_a_reload() {
    let model = Arc::new(Model::open(asset("stories260K-q8_0.gguf"), 2).unwrap());
    let records: Vec<TokenRecord> = read_ids_jsonl(golden("oracle/eval_records.jsonl")).unwrap();
    let init = peft::load(&golden("oracle/train/stories260K-q8_0/init"), &model.cfg).unwrap();
    let cfg = TrainConfig {
        lr: 1e-2,
        total_steps: 6,
        ..TrainConfig::default()
    };
    let longest = records.iter().map(|r| r.ids.len()).max().unwrap();
    let mut trainer = Trainer::new(model.clone(), init, cfg, longest).unwrap();
    let mut order = RecordOrder::new(records.len(), false, 0);
    let prompt = [1u32, 461];
    let p = greedy(16);
    let dir = scratch_dir("train-generate");
    let mut seen = Vec::new();
    for step in 0..6 {
        let batch: Vec<&TokenRecord> = order.take(2).into_iter().map(|i| &records[i]).collect();
        trainer.step(&batch).unwrap();
        if step % 3 == 2 {
            let (live, _) =
                generate_with(&model, Some(trainer.adapter()), &prompt, &p, |_| true).unwrap();
            // The same adapter through a file and a model of its own.
            peft::save(trainer.adapter(), &model.cfg, &dir, "stories", Dtype::F32).unwrap();
            let mut other = Model::open(asset("stories260K-q8_0.gguf"), 2).unwrap();
            other
                .set_adapter(Some(Arc::new(peft::load(&dir, &other.cfg).unwrap())))
                .unwrap();
            assert_eq!(generate(&other, &prompt, &p, |_| true).unwrap().0, live);
            seen.push(live);
        }
    }
    assert_eq!(trainer.steps_done(), 6);
    assert_ne!(seen[0], seen[1], "training moved the generations");
    let _ = std::fs::remove_dir_all(&dir);
}
