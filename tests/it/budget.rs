//! The memory budget is a contract: training stories260K-q8_0 (r 8, all-linear, seq 256,
//! batch 4) at `--budget 8M`, `16M` and `32M` keeps the process's anonymous memory
//! (RssAnon, sampled from outside) and its counted heap peak inside the budget; a budget
//! too small is refused before anything runs, with a message naming it. (That the planned
//! workspace size is what gets allocated is checked in `workspace_size.rs`, alone in its
//! process so no other test's allocations interfere.)

use crate::common;

use std::io::Write;
use std::process::Command;

use common::cli::run_sampled;
use common::{asset, scratch_dir};
/// Records of 256 tokens (deterministic ids), so sequences really are 256 long.
fn data(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("long.jsonl");
    let mut f = std::fs::File::create(&p).unwrap();
    for r in 0..8u32 {
        let ids: Vec<String> = (0..256u32)
            .map(|i| (1 + (i * 7919 + r * 104729) % 511).to_string())
            .collect();
        writeln!(f, "{{\"ids\": [{}]}}", ids.join(", ")).unwrap();
    }
    p
}

#[cfg(target_os = "linux")]
#[test]
fn training_stays_inside_8_16_and_32_mib() {
    let dir = scratch_dir("budget");
    let d = data(&dir);
    let model = asset("stories260K-q8_0.gguf");
    for (budget, bytes) in [("8M", 8u64 << 20), ("16M", 16 << 20), ("32M", 32 << 20)] {
        let out = dir.join(budget);
        let args = [
            "train",
            "--model",
            model.to_str().unwrap(),
            "--data",
            d.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--rank",
            "8",
            "--targets",
            "all-linear",
            "--seq-len",
            "256",
            "--batch",
            "4",
            "--steps",
            "6",
            "--budget",
            budget,
            "--json",
        ];
        let (rss, o) = run_sampled(&args);
        assert!(
            o.status.success(),
            "{budget}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let done: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap())
                .unwrap();
        let heap = done["peak_heap_bytes"].as_u64().unwrap();
        let planned = done["plan"]["total_bytes"].as_u64().unwrap();
        eprintln!(
            "{budget}: RssAnon peak {rss}, heap peak {heap}, plan {planned}, chunk {}, threads {}",
            done["plan"]["chunk"], done["plan"]["threads"]
        );
        assert!(rss > 0, "RssAnon was sampled");
        assert!(rss <= bytes, "{budget}: RssAnon {rss} over the budget");
        assert!(heap <= bytes, "{budget}: heap {heap} over the budget");
        assert!(planned <= bytes);
        assert_eq!(done["plan"]["seq_len"], 256);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_budget_too_small_is_refused_up_front() {
    let dir = scratch_dir("budget-small");
    let d = data(&dir);
    let out = dir.join("x");
    let model = asset("stories260K-q8_0.gguf");
    let o = Command::new(env!("CARGO_BIN_EXE_pocketlora"))
        .args([
            "train",
            "--model",
            model.to_str().unwrap(),
            "--data",
            d.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--seq-len", "256", "--budget", "64K"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.contains("64.0 KiB") && e.contains("too small") && e.contains("smallest plan needs"),
        "{e}"
    );
    assert!(!out.exists(), "nothing is written when the plan is refused");
    std::fs::remove_dir_all(&dir).ok();
}

/// Bench, not a test (ignored by default; numbers go in the notes):
/// `cargo test --release --test it -- --ignored --nocapture big_models`.
/// A TinyLlama-1.1B-shaped Q4_0 model (random weights, written here) at `--budget 256M` and a
/// SmolLM2-135M-shaped Q8_0 one at `--budget 64M`, r 8 all-linear, seq 512, 2 steps:
/// RssAnon and heap peaks, tokens/s and the plan's choices.
#[cfg(target_os = "linux")]
#[test]
#[ignore]
fn big_models_inside_their_budgets() {
    use common::synth::{build, Spec};
    use pocketlora::internals::quant::GgmlType;
    let dir = std::env::temp_dir().join("pocketlora-budget-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let shapes = [
        (
            "tinyllama-1.1b-q4_0",
            2048usize,
            22usize,
            32usize,
            4usize,
            5632usize,
            32000usize,
            GgmlType::Q4_0,
            "256M",
            256u64 << 20,
        ),
        (
            "smollm2-135m-q8_0",
            576,
            30,
            9,
            3,
            1536,
            49152,
            GgmlType::Q8_0,
            "64M",
            64 << 20,
        ),
    ];
    for (name, c, l, h, kv, ff, v, ty, budget, bytes) in shapes {
        let path = dir.join(format!("{name}.gguf"));
        if !path.exists() {
            let spec = Spec {
                name: "bench",
                arch: "llama",
                n_vocab: v,
                n_embd: c,
                n_layer: l,
                n_head: h,
                n_head_kv: kv,
                n_ff: ff,
                n_ctx: 2048,
                tied: false,
                qkv_bias: false,
                rope_base: 10000.0,
                embd_ty: ty,
                output_ty: ty,
                matrix_types: [ty; 7],
                rope_linear: None,
                rope_freqs: None,
                features: common::synth::Features::NONE,
                seed: 3,
            };
            std::fs::write(&path, build(&spec)).unwrap();
        }
        let data = dir.join(format!("{name}.jsonl"));
        let ids: Vec<String> = (0..512u32)
            .map(|i| (1 + (i * 7919) % (v as u32 - 1)).to_string())
            .collect();
        std::fs::write(&data, format!("{{\"ids\": [{}]}}\n", ids.join(", "))).unwrap();
        let out = dir.join(format!("{name}-adapter"));
        let args = [
            "train",
            "--model",
            path.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--rank",
            "8",
            "--seq-len",
            "512",
            "--batch",
            "1",
            "--steps",
            "2",
            "--budget",
            budget,
            "--json",
        ];
        let (rss, o) = run_sampled(&args);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let done: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap())
                .unwrap();
        let heap = done["peak_heap_bytes"].as_u64().unwrap();
        eprintln!(
            "{name} at {budget}: RssAnon peak {:.1} MiB, heap peak {:.1} MiB, plan {:.1} MiB, {:.1} tokens/s, chunk {}, saved {}, threads {}",
            rss as f64 / 1048576.0,
            heap as f64 / 1048576.0,
            done["plan"]["total_bytes"].as_u64().unwrap() as f64 / 1048576.0,
            done["tokens_per_s"].as_f64().unwrap(),
            done["plan"]["chunk"],
            done["plan"]["saved_activations"],
            done["plan"]["threads"]
        );
        assert!(rss <= bytes && heap <= bytes, "{name}: over the budget");
    }
}

/// A gemma3-shaped model (head size 128 over a 256-wide residual, one key/value head,
/// QK-norm, post-norms, GeGLU, sliding window 64 on five of six layers, an 8192-token tied
/// Q8_0 head), written here.
#[cfg(target_os = "linux")]
fn gemma3_shaped(dir: &std::path::Path) -> std::path::PathBuf {
    use common::synth::{build, Features, Spec};
    use pocketlora::internals::quant::GgmlType;
    let path = dir.join("gemma3-shaped.gguf");
    let spec = Spec {
        name: "gemma3-shaped",
        arch: "gemma3",
        n_vocab: 8192,
        n_embd: 256,
        n_layer: 6,
        n_head: 4,
        n_head_kv: 1,
        n_ff: 1024,
        n_ctx: 1024,
        tied: true,
        qkv_bias: false,
        rope_base: 1_000_000.0,
        embd_ty: GgmlType::Q8_0,
        output_ty: GgmlType::Q8_0,
        matrix_types: [GgmlType::Q8_0; 7],
        rope_linear: None,
        rope_freqs: None,
        features: Features {
            head_dim: Some(128),
            sliding_window: Some(64),
            ..Features::NONE
        },
        seed: 8,
    };
    std::fs::write(&path, build(&spec)).unwrap();
    path
}

/// The budget holds for the new architecture's buffers too (QK-norm and post-norm inputs,
/// window starts, the head over a larger vocabulary): a gemma3-shaped model trained at
/// three budgets, from one that forces recompute to one where every block keeps its
/// activations, stays inside each (RssAnon sampled from outside, and the counted heap).
#[cfg(target_os = "linux")]
#[test]
fn gemma3_shaped_training_stays_inside_its_budgets() {
    let dir = scratch_dir("budget-gemma3");
    let model = gemma3_shaped(&dir);
    let data = dir.join("long.jsonl");
    let mut f = std::fs::File::create(&data).unwrap();
    for r in 0..4u32 {
        let ids: Vec<String> = (0..256u32)
            .map(|i| (3 + (i * 7919 + r * 104729) % 8000).to_string())
            .collect();
        writeln!(f, "{{\"ids\": [{}]}}", ids.join(", ")).unwrap();
    }
    drop(f);
    let mut kept = Vec::new();
    for (budget, bytes) in [("14M", 14u64 << 20), ("24M", 24 << 20), ("60M", 60 << 20)] {
        let out = dir.join(budget);
        let args = [
            "train",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--rank",
            "8",
            "--seq-len",
            "256",
            "--batch",
            "2",
            "--steps",
            "3",
            "--budget",
            budget,
            "--json",
        ];
        let (rss, o) = run_sampled(&args);
        assert!(
            o.status.success(),
            "{budget}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let done: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap())
                .unwrap();
        let heap = done["peak_heap_bytes"].as_u64().unwrap();
        let planned = done["plan"]["total_bytes"].as_u64().unwrap();
        eprintln!(
            "gemma3-shaped {budget}: RssAnon peak {rss}, heap peak {heap}, plan {planned}, kept {}, chunk {}, segment {}",
            done["plan"]["kept_blocks"], done["plan"]["chunk"], done["plan"]["segment"]
        );
        assert!(
            rss > 0 && rss <= bytes,
            "{budget}: RssAnon {rss} over the budget"
        );
        assert!(heap <= bytes, "{budget}: heap {heap} over the budget");
        assert!(
            planned <= bytes && heap <= planned,
            "{budget}: heap {heap}, plan {planned}"
        );
        kept.push(done["plan"]["kept_blocks"].as_u64().unwrap());
    }
    assert!(
        kept[0] < 6 && kept[2] == 6,
        "the budgets span the plans: {kept:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
