//! `pocketlora tokenize` and the text forms of `pocketlora generate`: output forms, and
//! one-line errors with a non-zero exit status.

use crate::common;

use std::path::PathBuf;

use common::cli::{assert_one_line_error, run, stderr, stdout};
use common::{asset, scratch_dir};

fn gpt2() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/vocab/ggml-vocab-gpt-2.gguf")
        .to_str()
        .unwrap()
        .to_owned()
}

fn aidreams() -> String {
    asset("aidreams260K-q8_0.gguf").to_str().unwrap().to_owned()
}

#[test]
fn tokenize_prints_ids_on_one_line() {
    // ggml-vocab-gpt-2.gguf.out: "Hello world" → 15496 995
    let o = run(&["tokenize", "--model", &gpt2(), "--text", "Hello world"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "15496 995\n");
}

#[test]
fn tokenize_adds_bos_only_when_asked() {
    let without = run(&["tokenize", "--model", &aidreams(), "--text", "Echoes of"]);
    assert_eq!(stdout(&without), "388 355 260 275\n");
    let with = run(&[
        "tokenize",
        "--model",
        &aidreams(),
        "--text",
        "Echoes of",
        "--bos",
    ]);
    assert_eq!(stdout(&with), "1 388 355 260 275\n");
}

#[test]
fn tokenize_json_and_file_forms() {
    let o = run(&[
        "tokenize",
        "--model",
        &aidreams(),
        "--text",
        "Echoes of",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["ids"], serde_json::json!([388, 355, 260, 275]));
    assert_eq!(v["pieces"], serde_json::json!(["▁E", "cho", "es", "▁of"]));

    let dir = scratch_dir("cli-tokenize");
    let f = dir.join("in.txt");
    std::fs::write(&f, "Hello world").unwrap();
    let o = run(&[
        "tokenize",
        "--model",
        &gpt2(),
        "--file",
        f.to_str().unwrap(),
    ]);
    assert_eq!(stdout(&o), "15496 995\n");

    std::fs::write(&f, b"bad \xff byte").unwrap();
    let o = run(&[
        "tokenize",
        "--model",
        &gpt2(),
        "--file",
        f.to_str().unwrap(),
    ]);
    assert_one_line_error(&o, "not UTF-8");
}

#[test]
fn tokenize_parse_special_is_opt_in() {
    let plain = run(&["tokenize", "--model", &gpt2(), "--text", "<|endoftext|>"]);
    assert_ne!(stdout(&plain).trim(), "50256");
    let special = run(&[
        "tokenize",
        "--model",
        &gpt2(),
        "--text",
        "<|endoftext|>",
        "--parse-special",
    ]);
    assert_eq!(stdout(&special).trim(), "50256");
}

#[test]
fn tokenize_errors_are_one_line() {
    assert_one_line_error(&run(&["tokenize", "--model", &gpt2()]), "--text");
    assert_one_line_error(
        &run(&["tokenize", "--model", &gpt2(), "--text", "a", "--file", "b"]),
        "cannot be used with",
    );
    assert_one_line_error(
        &run(&["tokenize", "--model", "/nonexistent.gguf", "--text", "a"]),
        "/nonexistent.gguf",
    );
    // A file that is not GGUF.
    let dir = scratch_dir("cli-tokenize-bad");
    let f = dir.join("x.gguf");
    std::fs::write(&f, b"not a gguf file at all").unwrap();
    assert_one_line_error(
        &run(&["tokenize", "--model", f.to_str().unwrap(), "--text", "a"]),
        "GGUF",
    );
}

#[test]
fn generate_prints_text_by_default() {
    // From <s>: the reference greedy continuation, as llama.cpp prints it.
    let f32 = asset("aidreams260K-f32.gguf");
    let o = run(&[
        "generate",
        "--model",
        f32.to_str().unwrap(),
        "--prompt-ids",
        "1",
        "-n",
        "30",
        "--temp",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("\"Echoes of vectors unfold, a gentle hum of precision"),
        "{}",
        stdout(&o)
    );
    // A text prompt is echoed and continued.
    let o = run(&[
        "generate",
        "--model",
        &aidreams(),
        "--prompt",
        "Echoes of",
        "-n",
        "8",
        "--temp",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("Echoes of "), "{}", stdout(&o));
    // --ids keeps the id form: the prompt's ids (BOS first) and the new ones.
    let o = run(&[
        "generate",
        "--model",
        &aidreams(),
        "--prompt",
        "Echoes of",
        "-n",
        "3",
        "--temp",
        "0",
        "--ids",
    ]);
    let text = stdout(&o);
    let ids: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(&ids[..5], ["1", "388", "355", "260", "275"]);
    assert_eq!(ids.len(), 8);
}

#[test]
fn generate_inputs_are_exclusive_and_chat_needs_a_template() {
    assert_one_line_error(
        &run(&[
            "generate",
            "--model",
            &aidreams(),
            "--prompt",
            "a",
            "--prompt-ids",
            "1",
        ]),
        "cannot be used with",
    );
    assert_one_line_error(&run(&["generate", "--model", &aidreams()]), "--prompt");
    assert_one_line_error(
        &run(&[
            "generate",
            "--model",
            &aidreams(),
            "--chat",
            "hi",
            "-n",
            "2",
        ]),
        "chat_template",
    );
}
