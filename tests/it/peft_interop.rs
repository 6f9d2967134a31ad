//! Adapters written by `pocketlora train` load unchanged in Hugging Face PEFT and give the
//! same losses there as `eval --adapter` here (PEFT's numbers committed, see
//! tests/golden/oracle/peft_load/README.md).

use crate::common;

use std::process::Command;

use common::{asset, golden, rel_diff};

fn eval_json(model: &str, adapter: &str) -> serde_json::Value {
    let m = asset(model);
    let a = golden(&format!("oracle/peft_load/{adapter}"));
    let d = golden("oracle/eval_records.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_pocketlora"))
        .args([
            "eval",
            "--model",
            m.to_str().unwrap(),
            "--adapter",
            a.to_str().unwrap(),
            "--data",
            d.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn check(model: &str, adapter: &str) {
    let ours = eval_json(model, adapter);
    let text = std::fs::read_to_string(golden(&format!(
        "oracle/peft_load/{adapter}.peft_loss.json"
    )))
    .unwrap();
    let peft: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (i, (a, b)) in ours["per_record"]
        .as_array()
        .unwrap()
        .iter()
        .zip(peft["per_record"].as_array().unwrap())
        .enumerate()
    {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!(
            rel_diff(a, b) < 1e-4,
            "{adapter} record {i}: ours {a}, PEFT {b}"
        );
    }
    assert!(
        rel_diff(
            ours["loss"].as_f64().unwrap(),
            peft["batch_mean"].as_f64().unwrap()
        ) < 1e-4
    );
}

#[test]
fn all_targets_adapter_on_a_llama_with_permuted_qk() {
    check("stories260K-q8_0.gguf", "all-targets");
}

#[test]
fn rslora_adapter_on_the_last_two_blocks() {
    check("aidreams260K-q4_0.gguf", "rslora-last2");
}

#[test]
fn the_config_carries_what_peft_needs() {
    let text = std::fs::read_to_string(golden("oracle/peft_load/rslora-last2/adapter_config.json"))
        .unwrap();
    let c: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(c["peft_type"], "LORA");
    assert_eq!(c["task_type"], "CAUSAL_LM");
    assert_eq!(c["r"], 8);
    assert_eq!(c["use_rslora"], true);
    assert_eq!(c["bias"], "none");
    assert_eq!(c["fan_in_fan_out"], false);
    assert_eq!(c["layers_to_transform"], serde_json::json!([2, 3]));
    assert_eq!(
        c["target_modules"],
        serde_json::json!(["q_proj", "v_proj", "down_proj"])
    );
    assert_eq!(c["base_model_name_or_path"], "aidreams260K-q4_0.gguf");
}
