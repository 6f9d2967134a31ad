//! llama.cpp's tokenizer test vectors (`models/ggml-vocab-*.gguf.inp/.out`, MIT licence):
//! every case must give exactly the expected ids, and decode back to its input.
//!
//! Vocabulary files are looked up in `tests/data/vocab/` (committed copies), then
//! `../shared/vocab/`, then `$POCKETLORA_VOCAB_DIR`; a family whose `.gguf` is in none of them
//! is skipped with a message (the large ones are not committed, see tests/data/vocab/README.md)
//! — except under `CI=true`, where it fails (`.ci/run` fetches them from the llama-cpp-python
//! source package).

use std::path::{Path, PathBuf};

use pocketlora::internals::tokenizer::Tokenizer;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vocab")
}

fn find_gguf(name: &str) -> Option<PathBuf> {
    let mut dirs = vec![
        data_dir(),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/vocab"),
    ];
    if let Some(d) = std::env::var_os("POCKETLORA_VOCAB_DIR") {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The cases of a `.inp`/`.out` pair, read as llama.cpp's `test-tokenizer-0` reads them.
fn cases(inp: &Path, out: &Path) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(inp).expect("read .inp");
    let out = std::fs::read_to_string(out).expect("read .out");
    let sep = "\n__ggml_vocab_test__\n";
    let texts: Vec<&str> = inp.split(sep).collect();
    // The file ends with a separator, so the last split piece is empty.
    let texts = &texts[..texts.len() - 1];
    let lines: Vec<&str> = out.split('\n').collect();
    assert!(
        lines.len() >= texts.len(),
        "{} has too few lines",
        out.len()
    );
    texts
        .iter()
        .zip(&lines)
        .map(|(t, l)| {
            let ids = l
                .split_whitespace()
                .map(|x| x.parse().expect("id"))
                .collect();
            (t.to_string(), ids)
        })
        .collect()
}

/// Runs one vector file pair against one vocabulary; returns the number of cases, or `None`
/// when the vocabulary file is not available.
fn check(vocab: &str, vectors: &str) -> Option<usize> {
    let Some(path) = find_gguf(vocab) else {
        let msg =
            format!("{vocab} is not in tests/data/vocab, ../shared/vocab or $POCKETLORA_VOCAB_DIR");
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true: {msg}"
        );
        eprintln!("skipped {vectors}: {msg}");
        return None;
    };
    let tok = Tokenizer::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dir = data_dir();
    let cs = cases(
        &dir.join(format!("{vectors}.inp")),
        &dir.join(format!("{vectors}.out")),
    );
    assert!(cs.len() > 20, "{vectors}: only {} cases", cs.len());
    let mut failures = Vec::new();
    for (text, want) in &cs {
        let got = tok.encode(text, false, false);
        if &got != want {
            failures.push(format!("{text:?}\n   want {want:?}\n    got {got:?}"));
            continue;
        }
        let back = tok.decode(&got).expect("decode");
        if &back != text {
            failures.push(format!("{text:?} decodes back to {back:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{vectors}: {} of {} cases fail:\n{}",
        failures.len(),
        cs.len(),
        failures.join("\n")
    );
    eprintln!("{vectors}: {} cases pass", cs.len());
    Some(cs.len())
}

macro_rules! family {
    ($name:ident, $vocab:expr) => {
        family!($name, $vocab, $vocab);
    };
    ($name:ident, $vocab:expr, $vectors:expr) => {
        #[test]
        fn $name() {
            check(
                concat!("ggml-vocab-", $vocab, ".gguf"),
                concat!($vectors, ".gguf"),
            );
        }
    };
}

// The acceptance pair (shared/vocab), also committed under tests/data/vocab.
#[test]
fn llama_spm_shared() {
    assert!(check("ggml-vocab-llama-spm.gguf", "ggml-vocab-llama-spm.gguf").is_some());
}

#[test]
fn gpt_2_shared() {
    assert!(check("ggml-vocab-gpt-2.gguf", "ggml-vocab-gpt-2.gguf").is_some());
}

// Committed vocabularies: these must run.
#[test]
fn starcoder() {
    assert!(check("ggml-vocab-starcoder.gguf", "ggml-vocab-starcoder.gguf").is_some());
}

#[test]
fn deepseek_coder() {
    assert!(check(
        "ggml-vocab-deepseek-coder.gguf",
        "ggml-vocab-deepseek-coder.gguf"
    )
    .is_some());
}

// The same vocabularies with llama.cpp's newer vector files.
family!(
    llama_spm_llamacpp,
    "llama-spm",
    "llamacpp-ggml-vocab-llama-spm"
);
family!(gpt_2_llamacpp, "gpt-2", "llamacpp-ggml-vocab-gpt-2");

// Vocabularies too large to commit: run when present.
family!(llama_bpe, "llama-bpe", "ggml-vocab-llama-bpe");
family!(qwen2, "qwen2", "ggml-vocab-qwen2");
family!(falcon, "falcon", "ggml-vocab-falcon");
family!(refact, "refact", "ggml-vocab-refact");
family!(deepseek_llm, "deepseek-llm", "ggml-vocab-deepseek-llm");
family!(mpt, "mpt", "ggml-vocab-mpt");
family!(phi_3, "phi-3", "ggml-vocab-phi-3");
family!(qwen35, "qwen35", "ggml-vocab-qwen35");
