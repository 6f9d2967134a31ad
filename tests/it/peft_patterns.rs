//! PEFT adapters made by Hugging Face PEFT with `rank_pattern`, `alpha_pattern` (plain,
//! layer-specific and regular-expression keys), `layers_to_transform` and `use_rslora`
//! (tests/golden/oracle/peft_patterns/make_goldens.py, see the README there):
//! - our loss with each equals PEFT's within 1e-4 (relative, per record);
//! - the same adapters saved again by us (`export --format peft`, committed as
//!   `<case>.resaved`) give PEFT the same loss as us, and saving them today writes the same
//!   files;
//! - an adapter for another base model is refused with an error naming the tensor.

use crate::common;

use std::process::Command;

use common::{asset, golden, rel_diff, scratch_dir};
use pocketlora::internals::data::read_ids_jsonl;
use pocketlora::internals::eval::evaluate_with;
use pocketlora::internals::lora::{self, peft, Target};
use pocketlora::internals::model::Model;

const CASES: [(&str, &str); 3] = [
    ("patterns", "stories260K-q8_0.gguf"),
    ("rslora-subset", "aidreams260K-q4_0.gguf"),
    ("plain-subset", "stories260K-f32.gguf"),
];

fn json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(golden(rel)).unwrap()).unwrap()
}

/// Our per-record losses with the adapter at `dir` vs PEFT's (`<dir>.peft_loss.json`).
fn check_loss(model: &Model, dir: &str) -> f64 {
    let records = read_ids_jsonl(golden("oracle/eval_records.jsonl")).unwrap();
    let a = lora::load(&golden(&format!("oracle/peft_patterns/{dir}")), &model.cfg).unwrap();
    let ours = evaluate_with(model, Some(&a), &records).unwrap();
    let want = json(&format!("oracle/peft_patterns/{dir}.peft_loss.json"));
    let mut worst = 0f64;
    for (i, (x, w)) in ours
        .per_record
        .iter()
        .zip(want["per_record"].as_array().unwrap())
        .enumerate()
    {
        let e = rel_diff(*x, w.as_f64().unwrap());
        worst = worst.max(e);
        assert!(e < 1e-4, "{dir} record {i}: ours {x}, PEFT {w}");
    }
    assert!(rel_diff(ours.loss, want["batch_mean"].as_f64().unwrap()) < 1e-4);
    // The adapter matters: without it the losses differ.
    let base = evaluate_with(model, None, &records).unwrap();
    assert!((base.loss - ours.loss).abs() > 1e-2, "{dir}");
    eprintln!("{dir}: worst per-record relative difference from PEFT {worst:e}");
    worst
}

#[test]
fn our_loss_with_peft_made_pattern_adapters_equals_peft() {
    for (case, model) in CASES {
        let m = Model::open(asset(model), 2).unwrap();
        check_loss(&m, case);
    }
}

#[test]
fn peft_loss_with_our_resaved_adapters_equals_ours() {
    for (case, model) in CASES {
        let m = Model::open(asset(model), 2).unwrap();
        check_loss(&m, &format!("{case}.resaved"));
    }
}

#[test]
fn the_patterns_are_read_as_peft_reads_them() {
    let m = Model::open(asset("stories260K-q8_0.gguf"), 1).unwrap();
    let a = peft::load(&golden("oracle/peft_patterns/patterns"), &m.cfg).unwrap();
    let pair = |l: usize, t: Target| a.layers[l][t.index()].as_ref().unwrap();
    // r 4, alpha 8; rank_pattern q_proj 8, layers.1.mlp.down_proj 2, layers\.[34]\...v_proj 6;
    // alpha_pattern k_proj 3, model.layers.2.mlp.up_proj 20, o_proj 12.
    assert_eq!((pair(0, Target::Q).r, pair(0, Target::Q).scale), (8, 1.0));
    assert_eq!(
        (pair(1, Target::Down).r, pair(1, Target::Down).scale),
        (2, 4.0)
    );
    assert_eq!(
        (pair(2, Target::Down).r, pair(2, Target::Down).scale),
        (4, 2.0)
    );
    assert_eq!(
        (
            pair(3, Target::V).r,
            pair(4, Target::V).r,
            pair(2, Target::V).r
        ),
        (6, 6, 4)
    );
    assert_eq!(pair(0, Target::K).scale, 0.75);
    assert_eq!(
        (pair(2, Target::Up).scale, pair(3, Target::Up).scale),
        (5.0, 2.0)
    );
    assert_eq!(pair(4, Target::O).scale, 3.0);
    let r = peft::load(&golden("oracle/peft_patterns/rslora-subset"), &m.cfg);
    // An aidreams adapter (head dim 16, 4 blocks) on stories260K: refused, naming the tensor.
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("lora_A") && e.contains("another base model?"),
        "{e}"
    );
    let a = peft::load(
        &golden("oracle/peft_patterns/rslora-subset"),
        &Model::open(asset("aidreams260K-q4_0.gguf"), 1).unwrap().cfg,
    )
    .unwrap();
    // use_rslora: α/√r with r 8 (q), 4 (v: rank_pattern); alpha 6 for up_proj.
    let p = |l: usize, t: Target| a.layers[l][t.index()].as_ref().map(|p| (p.r, p.scale));
    assert_eq!(p(0, Target::Q), Some((8, 4.0 / 8f32.sqrt())));
    assert_eq!(p(2, Target::V), Some((4, 2.0)));
    assert_eq!(p(0, Target::Up), Some((8, 6.0 / 8f32.sqrt())));
    assert_eq!(
        (p(1, Target::Q), p(3, Target::Q), p(0, Target::K)),
        (None, None, None)
    );
}

#[test]
fn saving_again_writes_the_committed_resaved_files() {
    let dir = scratch_dir("peft-resave");
    for (case, model) in CASES {
        let out = dir.join(case);
        let o = Command::new(env!("CARGO_BIN_EXE_pocketlora"))
            .args(["export", "--model"])
            .arg(asset(model))
            .arg("--adapter")
            .arg(golden(&format!("oracle/peft_patterns/{case}")))
            .args(["--format", "peft", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for f in [peft::CONFIG_FILE, peft::WEIGHTS_FILE] {
            let committed = golden(&format!("oracle/peft_patterns/{case}.resaved/{f}"));
            assert!(
                std::fs::read(out.join(f)).unwrap() == std::fs::read(committed).unwrap(),
                "{case}: {f} differs from the committed file"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
