//! `eval` against Hugging Face transformers (shared/oracle/peft_reference.py `loss`): the
//! per-record and batch-mean cross-entropies must agree within 1e-4 relative, on the bundled
//! stories260K/aidreams260K files and on synthetic models this suite writes itself.

use crate::common;

use std::path::Path;

use common::synth::{self, Spec};
use common::{asset, golden, rel_diff, scratch_dir};
use pocketlora::internals::data::read_ids_jsonl;
use pocketlora::internals::eval::evaluate;
use pocketlora::internals::model::Model;

const TOLERANCE: f64 = 1e-4;

fn oracle(name: &str) -> (Vec<f64>, f64) {
    let text =
        std::fs::read_to_string(golden(&format!("oracle/loss_{name}.json"))).expect("golden file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("golden json");
    let per = v["per_record"]
        .as_array()
        .expect("per_record")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    (per, v["batch_mean"].as_f64().expect("batch_mean"))
}

fn check(model_path: &Path, data: &Path, name: &str) {
    let model = Model::open(model_path, 2).expect("open model");
    let records = read_ids_jsonl(data).expect("records");
    let report = evaluate(&model, &records).expect("evaluate");
    let (want, want_mean) = oracle(name);
    assert_eq!(report.per_record.len(), want.len(), "{name}: record count");
    for (i, (&got, &w)) in report.per_record.iter().zip(&want).enumerate() {
        assert!(
            rel_diff(got, w) < TOLERANCE,
            "{name} record {i}: ours {got}, oracle {w}"
        );
    }
    assert!(
        rel_diff(report.loss, want_mean) < TOLERANCE,
        "{name} mean: ours {}, oracle {want_mean}",
        report.loss
    );
}

#[test]
fn bundled_models_match_the_oracle() {
    let data = golden("oracle/eval_records.jsonl");
    for name in [
        "stories260K-f32",
        "stories260K-q8_0",
        "stories260K-q4_0",
        "aidreams260K-f32",
        "aidreams260K-q8_0",
        "aidreams260K-q4_0",
    ] {
        check(&asset(&format!("{name}.gguf")), &data, name);
    }
}

fn specs() -> [Spec; 11] {
    [
        synth::llama_untied(),
        synth::qwen2_biases(),
        synth::llama_kquants(),
        synth::llama_rope_linear(),
        synth::llama_rope_freqs(),
        synth::gemma3(),
        synth::qwen3(),
        synth::smollm3(),
        synth::llama3(),
        synth::phi3(),
        synth::lfm2(),
    ]
}

/// Writes `spec`'s model into `dir`; returns its path and fingerprint.
fn write_model(spec: &Spec, dir: &Path) -> (std::path::PathBuf, u64) {
    let bytes = synth::build(spec);
    let hash = synth::fnv1a64(&bytes);
    let model = dir.join(format!("{}.gguf", spec.name));
    std::fs::write(&model, &bytes).expect("write model");
    (model, hash)
}

#[test]
fn synthetic_models_match_the_oracle() {
    let dir = scratch_dir("synth-oracle");
    for spec in specs() {
        let (model, hash) = write_model(&spec, &dir);
        let want = std::fs::read_to_string(golden(&format!("oracle/{}.fnv1a64", spec.name)))
            .expect("hash golden");
        assert_eq!(
            format!("{hash:016x}"),
            want.trim(),
            "{}: the synthetic model is not the file the goldens were made from (writer or quantizer changed?); \
             regenerate with tests/golden/oracle/README.md",
            spec.name
        );
        check(
            &model,
            &golden(&format!("oracle/{}.records.jsonl", spec.name)),
            spec.name,
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Writes the synthetic models for the oracle: `POCKETLORA_SYNTH_OUT=DIR cargo test --release
/// --test it -- --ignored write_synthetic_fixtures`.
#[test]
#[ignore]
fn write_synthetic_fixtures() {
    let dir = std::env::var("POCKETLORA_SYNTH_OUT").expect("set POCKETLORA_SYNTH_OUT");
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).expect("create output dir");
    // The F32 variants are for the llama.cpp comparisons (tests/llama_cpp_adapter.rs).
    for spec in specs().into_iter().chain([
        synth::gemma3_f32(),
        synth::qwen3_f32(),
        synth::phi3_f32(),
        synth::lfm2_f32(),
    ]) {
        let (model, hash) = write_model(&spec, dir);
        let records = dir.join(format!("{}.records.jsonl", spec.name));
        std::fs::write(&records, synth::records(spec.n_vocab, spec.seed)).expect("write records");
        std::fs::write(
            dir.join(format!("{}.fnv1a64", spec.name)),
            format!("{hash:016x}\n"),
        )
        .expect("write hash");
        println!("{} {hash:016x}", model.display());
    }
}
