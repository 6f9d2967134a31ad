//! `pocketlora train` from the command line: JSON events, the adapter directory, use of the
//! adapter by `eval` and `generate`, bit-identical reruns, and one-line errors.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::{asset, golden, scratch_dir};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pocketlora"))
        .args(args)
        .output()
        .expect("run pocketlora")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn train(out: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let model = asset("stories260K-q4_0.gguf");
    let data = golden("oracle/eval_records.jsonl");
    let mut args = vec![
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
        "--threads",
        "2",
    ];
    args.extend_from_slice(extra);
    ok(&run(&args))
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn json_events_adapter_files_and_their_use() {
    let dir = scratch_dir("cli-train");
    let out = dir.join("adapter");
    let events = train(
        &out,
        &[
            "--steps", "6", "--batch", "2", "--lr", "1e-2", "--rank", "4",
        ],
    );
    let steps: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "step").collect();
    assert_eq!(steps.len(), 6);
    assert!(events.iter().any(|e| e["event"] == "checkpoint"));
    for (i, e) in steps.iter().enumerate() {
        assert_eq!(e["event"], "step");
        assert_eq!(e["step"], i + 1);
        for k in ["loss", "lr", "grad_norm", "tokens"] {
            assert!(e[k].is_number(), "step event lacks {k}: {e}");
        }
    }
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["adapter"], out.to_str().unwrap());
    assert_eq!(done["steps"], 6);
    assert!(
        out.join("adapter_model.safetensors").exists() && out.join("adapter_config.json").exists()
    );

    let model = asset("stories260K-q4_0.gguf");
    let m = model.to_str().unwrap();
    let data = golden("oracle/eval_records.jsonl");
    let base: serde_json::Value = serde_json::from_str(&ok(&run(&[
        "eval",
        "--model",
        m,
        "--data",
        data.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    let tuned: serde_json::Value = serde_json::from_str(&ok(&run(&[
        "eval",
        "--model",
        m,
        "--data",
        data.to_str().unwrap(),
        "--json",
        "--adapter",
        out.to_str().unwrap(),
    ])))
    .unwrap();
    assert_ne!(
        base["loss"], tuned["loss"],
        "the adapter must change the model"
    );
    let g = ok(&run(&[
        "generate",
        "--model",
        m,
        "--prompt-ids",
        "1",
        "-n",
        "5",
        "--temp",
        "0",
        "--ids",
        "--adapter",
        out.to_str().unwrap(),
    ]));
    assert_eq!(g.split_whitespace().count(), 6);

    // Continue from the adapter: rank and targets come from it.
    let out2 = dir.join("continued");
    let ev = train(
        &out2,
        &[
            "--steps",
            "2",
            "--batch",
            "2",
            "--init-adapter",
            out.to_str().unwrap(),
            "--rank",
            "16",
        ],
    );
    assert_eq!(ev.last().unwrap()["event"], "done");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out2.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["r"], 4);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_same_run_twice_is_bit_identical() {
    let dir = scratch_dir("cli-train-det");
    let args = [
        "--steps",
        "4",
        "--batch",
        "3",
        "--shuffle",
        "--seed",
        "3",
        "--dropout",
        "0.1",
        "--lr",
        "5e-3",
    ];
    let a = train(&dir.join("a"), &args);
    let b = train(&dir.join("b"), &args);
    let losses = |ev: &[serde_json::Value]| {
        ev.iter()
            .filter(|e| e["event"] == "step")
            .map(|e| e["loss"].as_f64().unwrap().to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&a), losses(&b));
    let read = |d: &str| std::fs::read(dir.join(d).join("adapter_model.safetensors")).unwrap();
    assert_eq!(read("a"), read("b"));
    let c = train(
        &dir.join("c"),
        &[
            "--steps",
            "4",
            "--batch",
            "3",
            "--shuffle",
            "--seed",
            "4",
            "--dropout",
            "0.1",
            "--lr",
            "5e-3",
        ],
    );
    assert_ne!(losses(&a), losses(&c), "another seed, another run");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_options_fail_with_one_line() {
    let dir = scratch_dir("cli-train-bad");
    let model = asset("stories260K-q4_0.gguf");
    let data = golden("oracle/eval_records.jsonl");
    let out = dir.join("x");
    let base = [
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    for (extra, needle) in [
        (vec!["--targets", "q,lm_head"], "lm_head"),
        (vec!["--layers", "last:9"], "last:9"),
        (vec!["--batch", "0"], "--batch"),
        (vec!["--schedule", "step"], "schedule"),
        (vec!["--init", "xavier"], "xavier"),
        (vec!["--dropout", "1.5"], "dropout"),
        (
            vec!["--init-adapter", "/nonexistent/dir"],
            "/nonexistent/dir",
        ),
    ] {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra.iter());
        let o = run(&args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?} should fail");
        assert_eq!(e.trim_end().lines().count(), 1, "{extra:?}: {e}");
        assert!(e.contains(needle), "{extra:?}: {e}");
    }
    assert!(
        !out.exists(),
        "nothing is written when the run cannot start"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn packing_keeps_the_first_step_loss_of_the_same_records() {
    let dir = scratch_dir("cli-train-pack");
    let first_loss = |extra: &[&str], out: &str| -> f64 {
        let mut args = vec!["--steps", "1", "--seq-len", "256", "--rank", "4"];
        args.extend_from_slice(extra);
        let events = train(&dir.join(out), &args);
        let step = events
            .iter()
            .find(|e| e["event"] == "step")
            .expect("a step");
        step["loss"].as_f64().unwrap()
    };
    // The ten records in one step, alone or packed into two sequences.
    let alone = first_loss(&["--batch", "10"], "alone");
    let packed = first_loss(&["--batch", "2", "--pack"], "packed");
    assert!(
        ((alone - packed) / alone).abs() < 1e-5,
        "alone {alone}, packed {packed}"
    );
    // The adapter directory records the packing.
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("packed").join("pocketlora_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["config"]["pack"], true, "{cfg}");
}
