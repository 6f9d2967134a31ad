//! The `pocketlora` binary: the exact output forms later checks rely on, and one-line errors
//! with a non-zero exit status.

use crate::common;

use common::cli::{assert_one_line_error, run, stderr, stdout};
use common::{asset, golden, scratch_dir};

#[test]
fn generate_prints_the_reference_ids() {
    let stories = asset("stories260K-f32.gguf");
    let o = run(&[
        "generate",
        "--model",
        stories.to_str().unwrap(),
        "--prompt-ids",
        "1",
        "-n",
        "40",
        "--temp",
        "0",
        "--ids",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "1 461 461 401 401 401 461 378 455 473 456 435 299 362 409 283 264 283 452 288 13 431 431 431 431 431 431 431 431 431 431 431 431 431 293 430 417 363 416 315 342"
    );
    let aid = asset("aidreams260K-f32.gguf");
    let o = run(&[
        "generate",
        "--model",
        aid.to_str().unwrap(),
        "--prompt-ids",
        "1",
        "-n",
        "60",
        "--temp",
        "0",
        "--ids",
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "1 319 459 355 260 275 429 339 315 374 327 446 262 421 392 275 280 269 440 270 283 446 299 303 266 358 430 312 379 441 260 446 262 421 392 275 280 269 440 270 283 446 299 303 384 467 407 360 266 291 443 435 295 448 429 465 265 434 317 431 434"
    );
}

#[test]
fn eval_json_has_per_record_and_loss() {
    let model = asset("stories260K-q8_0.gguf");
    let data = golden("oracle/eval_records.jsonl");
    let o = run(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(v["per_record"].as_array().unwrap().len(), 10);
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden("oracle/loss_stories260K-q8_0.json")).unwrap(),
    )
    .unwrap();
    let (got, w) = (
        v["loss"].as_f64().unwrap(),
        want["batch_mean"].as_f64().unwrap(),
    );
    assert!((got - w).abs() / w < 1e-4, "{got} vs {w}");
    // The text form: one line per record and a mean.
    let o = run(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 11, "{text}");
    assert!(text.lines().last().unwrap().starts_with("mean loss"));
}

#[test]
fn inspect_reports_shapes_types_and_special_ids() {
    let model = asset("stories260K-q8_0.gguf");
    let o = run(&["inspect", "--model", model.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["architecture"], "llama");
    let m = &v["model"];
    assert_eq!(
        (
            m["n_embd"].as_u64(),
            m["n_layer"].as_u64(),
            m["n_head"].as_u64(),
            m["n_head_kv"].as_u64()
        ),
        (Some(64), Some(5), Some(8), Some(4))
    );
    assert_eq!(
        (
            m["n_ctx"].as_u64(),
            m["n_vocab"].as_u64(),
            m["tied_output"].as_bool()
        ),
        (Some(512), Some(512), Some(true))
    );
    assert_eq!(v["special_ids"]["bos"], 1);
    assert_eq!(v["special_ids"]["eos"], 2);
    assert_eq!(
        v["file_size"].as_u64(),
        Some(std::fs::metadata(&model).unwrap().len())
    );
    assert!(v["tensor_types"]["Q8_0"]["count"].as_u64().unwrap() > 0);
    assert!(v["tensor_types"]["F32"]["count"].as_u64().unwrap() > 0);
    let o = run(&["inspect", "--model", model.to_str().unwrap()]);
    let text = stdout(&o);
    for needle in [
        "architecture:  llama",
        "heads 8 (kv 4)",
        "context:       512",
        "Q8_0",
        "blk.0.ffn_down.weight",
        "bos 1",
    ] {
        assert!(
            text.contains(needle),
            "inspect text lacks {needle:?}:\n{text}"
        );
    }
}

#[test]
fn failures_are_one_line_and_non_zero() {
    let dir = scratch_dir("cli-errors");
    let model = asset("stories260K-f32.gguf");
    let m = model.to_str().unwrap();
    // Missing file.
    assert_one_line_error(
        &run(&["inspect", "--model", "/nonexistent/x.gguf"]),
        "/nonexistent/x.gguf",
    );
    // Truncated model.
    let bytes = std::fs::read(&model).unwrap();
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_error(
        &run(&[
            "generate",
            "--model",
            cut.to_str().unwrap(),
            "--prompt-ids",
            "1",
        ]),
        "truncated",
    );
    // Bad ids, out-of-vocabulary ids.
    assert_one_line_error(
        &run(&["generate", "--model", m, "--prompt-ids", "1,x"]),
        "--prompt-ids",
    );
    assert_one_line_error(
        &run(&[
            "generate",
            "--model",
            m,
            "--prompt-ids",
            "1,9999",
            "-n",
            "1",
        ]),
        "9999",
    );
    // A malformed JSONL line names file:line.
    let data = dir.join("bad.jsonl");
    std::fs::write(&data, "{\"ids\": [1, 2]}\n{\"ids\": [1, \"two\"]}\n").unwrap();
    assert_one_line_error(
        &run(&["eval", "--model", m, "--data", data.to_str().unwrap()]),
        "bad.jsonl:2:",
    );
    // Unknown flags and subcommands (clap's usage errors are folded to one line too).
    assert_one_line_error(
        &run(&["generate", "--model", m, "--prompt-ids", "1", "--bogus"]),
        "--bogus",
    );
    assert_one_line_error(&run(&["frobnicate"]), "frobnicate");
    // A directory as the model.
    for cmd in [
        &["inspect", "--model", dir.to_str().unwrap()][..],
        &[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt-ids",
            "1",
        ][..],
    ] {
        let o = run(cmd);
        assert_one_line_error(&o, "is a directory; a GGUF file is expected");
        assert!(!stderr(&o).contains("os error"), "{}", stderr(&o));
    }
    // Not a GGUF at all.
    let txt = dir.join("x.gguf");
    std::fs::write(&txt, "hello world, not a model").unwrap();
    assert_one_line_error(&run(&["inspect", "--model", txt.to_str().unwrap()]), "GGUF");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn inspect_describes_an_adapter_file_as_an_adapter() {
    // llama.cpp's own converter wrote this one (tests/golden/llama_cpp/README.md).
    let f = golden("llama_cpp/converter_stories260K-f32_trained.gguf");
    let o = run(&["inspect", "--model", f.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let a = &v["adapter"];
    assert_eq!(a["type"], "lora");
    assert_eq!(a["base_architecture"], "llama");
    assert_eq!(a["alpha"], 8.0);
    assert_eq!(
        (a["pairs"].as_u64(), a["rank_max"].as_u64()),
        (Some(35), Some(4))
    );
    assert_eq!(a["layers"], serde_json::json!([0, 1, 2, 3, 4]));
    assert_eq!(a["modules"].as_array().unwrap().len(), 7);
    assert!(v["model"]["reason"]
        .as_str()
        .unwrap()
        .contains("LoRA adapter"));
    let o = run(&["inspect", "--model", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("LoRA adapter for a llama base model, alpha 8"),
        "{}",
        stdout(&o)
    );
}
