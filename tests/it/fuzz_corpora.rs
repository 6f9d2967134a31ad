//! Replays every committed fuzz corpus (`fuzz/corpus/<target>/*`) through the same entry
//! points the cargo-fuzz targets call (`pocketlora::internals::fuzzing`), so that CI checks them on
//! stable without libFuzzer; and keeps each input a fuzzer ever crashed on as a named
//! regression test (`fuzz/regressions/<target>-*`, replayed the same way).
//!
//! The seed corpora are written by `write_seed_corpora` (ignored; run it with
//! `cargo test --release --test it -- --ignored` after changing the seeds), then
//! grown and minimised by fuzzing (`cargo +nightly fuzz run <target>`, see fuzz/README.md).

use crate::common;

use std::path::{Path, PathBuf};

use common::synth;
use pocketlora::internals::fuzzing::{self, TARGETS};
use pocketlora::internals::gguf::Value;
use pocketlora::internals::lora::{gguf_adapter, peft, Adapter, LoraConfig, LoraInit};
use pocketlora::internals::quant::GgmlType;
use pocketlora::internals::safetensors::{self as st, Dtype};
use pocketlora::internals::tokenizer::Tokenizer;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn toks() -> &'static [Tokenizer] {
    fuzzing::repo_tokenizers()
}

/// Every file of `dir` (sorted), or none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn replay(target: &str, paths: &[PathBuf]) {
    for p in paths {
        let data = std::fs::read(p).unwrap();
        let run = std::panic::catch_unwind(|| fuzzing::run(target, &data, toks()));
        match run {
            Ok(known) => assert!(known, "no fuzz target {target}"),
            Err(_) => panic!("fuzz target {target} panicked on {}", p.display()),
        }
    }
}

fn replay_corpus(target: &str) {
    let paths = files(&root().join("fuzz/corpus").join(target));
    assert!(
        paths.len() >= 3,
        "fuzz/corpus/{target} holds {} inputs; the seeds are missing",
        paths.len()
    );
    replay(target, &paths);
}

#[test]
fn corpus_gguf() {
    replay_corpus("gguf");
}

#[test]
fn corpus_safetensors() {
    replay_corpus("safetensors");
}

#[test]
fn corpus_jsonl() {
    replay_corpus("jsonl");
}

#[test]
fn corpus_tokenizer() {
    replay_corpus("tokenizer");
}

#[test]
fn corpus_chat() {
    replay_corpus("chat");
}

#[test]
fn corpus_peft_config() {
    replay_corpus("peft_config");
}

/// Inputs the fuzzers crashed on, named `<target>-<what>`: each one is a test of its own
/// finding (see fuzz/README.md for what each was).
#[test]
fn regressions() {
    let all = files(&root().join("fuzz/regressions"));
    for t in TARGETS {
        let mine: Vec<PathBuf> = all
            .iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{t}-")))
            })
            .cloned()
            .collect();
        replay(t, &mine);
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds.

fn tiny_spec(arch: &'static str, n_embd: usize, ty: GgmlType) -> synth::Spec {
    synth::Spec {
        name: "fuzz-tiny",
        arch,
        n_vocab: 16,
        n_embd,
        n_layer: 2,
        n_head: 2,
        n_head_kv: 1,
        n_ff: if ty == GgmlType::F32 {
            n_embd + n_embd / 2
        } else {
            2 * n_embd
        },
        n_ctx: 16,
        tied: ty == GgmlType::F32,
        qkv_bias: arch == "qwen2",
        rope_base: 10000.0,
        embd_ty: GgmlType::F32,
        output_ty: ty,
        matrix_types: [ty; 7],
        rope_linear: None,
        rope_freqs: None,
        features: common::synth::Features::NONE,
        seed: 7,
    }
}

fn tiny_adapter(r: usize) -> Adapter {
    let mut a = Adapter::new(
        &fuzzing::tiny_model_config(),
        LoraConfig {
            r,
            init: LoraInit::Gaussian,
            ..LoraConfig::default()
        },
    )
    .unwrap();
    for p in a.pairs_mut() {
        for (i, v) in p.b.iter_mut().enumerate() {
            *v = (i as f32 * 0.37).sin() * 0.1;
        }
    }
    a
}

/// The files of a PEFT directory for the tiny model: (adapter_config.json, safetensors).
fn peft_files(a: &Adapter, dtype: Dtype) -> (Vec<u8>, Vec<u8>) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = common::scratch_dir(&format!("fuzz-seed-peft-{n}"));
    peft::save(a, &fuzzing::tiny_model_config(), &dir, "tiny", dtype).unwrap();
    let c = std::fs::read(dir.join(peft::CONFIG_FILE)).unwrap();
    let w = std::fs::read(dir.join(peft::WEIGHTS_FILE)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (c, w)
}

fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |t: &'static str, name: &str, bytes: Vec<u8>| {
        out.push((t, format!("seed-{name}"), bytes));
    };

    // GGUF: tiny complete models (F32 llama with a chat template, Q8_0 qwen2), a
    // vocabulary-only file, a llama.cpp adapter.
    let mut w = synth::writer(&tiny_spec("llama", 8, GgmlType::F32));
    w.set(
        "tokenizer.chat_template",
        Value::from("{{ '<|im_start|>' }}"),
    );
    add("gguf", "llama-f32", w.to_bytes());
    add(
        "gguf",
        "qwen2-q8_0",
        synth::build(&tiny_spec("qwen2", 32, GgmlType::Q8_0)),
    );
    let mut w = pocketlora::internals::gguf::GgufWriter::new();
    let v = synth::writer(&tiny_spec("llama", 8, GgmlType::F32));
    for (k, val) in v.metadata() {
        if k.starts_with("tokenizer.") {
            w.set(k.clone(), val.clone());
        }
    }
    add("gguf", "vocab-only", w.to_bytes());
    let (w, _) = gguf_adapter::to_writer(
        &tiny_adapter(2),
        &fuzzing::tiny_model_config(),
        "llama",
        "tiny",
        GgmlType::F32,
    )
    .unwrap();
    add("gguf", "llama-cpp-adapter", w.to_bytes());

    // safetensors: PEFT adapters in F32 and F16, a BF16 tensor with metadata, an empty file.
    let (c2, w2) = peft_files(&tiny_adapter(2), Dtype::F32);
    let (c1, w1) = peft_files(&tiny_adapter(1), Dtype::F16);
    add("safetensors", "peft-f32", w2.clone());
    add("safetensors", "peft-f16", w1.clone());
    let bf16 = {
        let h = r#"{"__metadata__":{"format":"pt"},"x":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}}"#;
        let mut v = (h.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(&[0x80, 0x3f, 0, 0x40, 0x40, 0x40, 0x80, 0xbf]);
        v
    };
    add("safetensors", "bf16-and-empty", bf16);
    add(
        "safetensors",
        "empty",
        st::encode(&[], Dtype::F32, &Default::default()),
    );

    // PEFT: config + NUL + weights; patterns and rsLoRA; a config alone.
    let join = |c: &[u8], w: &[u8]| {
        let mut v = c.to_vec();
        v.push(0);
        v.extend_from_slice(w);
        v
    };
    add("peft_config", "rank2", join(&c2, &w2));
    add("peft_config", "rank1-f16", join(&c1, &w1));
    let patterned = String::from_utf8(c2.clone()).unwrap().replace(
        "\"rank_pattern\": {}",
        "\"rank_pattern\": {\"q_proj\": 2, \"^model.layers.[01].mlp.*\": 2}",
    );
    let patterned = patterned.replace(
        "\"alpha_pattern\": {}",
        "\"alpha_pattern\": {\"layers.1.self_attn.v_proj\": 4.5}",
    );
    let patterned = patterned.replace("\"use_rslora\": false", "\"use_rslora\": true");
    add(
        "peft_config",
        "patterns-rslora",
        join(patterned.as_bytes(), &w2),
    );
    add("peft_config", "config-only", c2.clone());

    // JSONL: one byte of options (tokenizer, template, .txt, masking, skipping), then a file.
    let files = [
        (0u8, "{\"text\": \"Echoes of vectors\"}\n{\"text\": \"naïve 日本語 🦙\"}\n"),
        (1, "{\"prompt\": \"Q: hi\\nA:\", \"completion\": \" hello\"}\n\n{\"prompt\": \"\", \"completion\": \"x\"}\n"),
        (0x12, "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}]}\n"),
        (3, "{\"messages\": [{\"role\": \"user\", \"content\": \"<|im_end|>\"}, {\"role\": \"assistant\", \"content\": \" \"}]}\n"),
        (4, "{\"ids\": [1, 5, 9], \"mask\": [0, 1, 1]}\n{\"ids\": [1, 2]}\n{\"ids\": [7], \"mask\": [true]}\n"),
        (0x80, "{\"text\": \"a\"}\nnot json\n{\"txt\": 1}\n{\"text\": \"\"}\n"),
        (0x21, "one\ntwo\n\n  \nthree\n"),
        (0x40, "{\"prompt\": \"p\", \"completion\": \"c\"}\n"),
    ];
    for (i, (sel, text)) in files.iter().enumerate() {
        let mut v = vec![*sel];
        v.extend_from_slice(text.as_bytes());
        add("jsonl", &format!("{i}"), v);
    }

    // Tokenizer: one byte (tokenizer, add_special), then text.
    let texts: [&[u8]; 8] = [
        b"Hello world",
        "  naïve  Äpfel\n\n\tжизнь 日本語 🦙🚀 x\u{301}".as_bytes(),
        b"<s>[INST] hi [/INST]</s><|im_start|>user<|im_end|>",
        b"don't I'm 12345678 $%^&*()",
        b"\xff\xfe invalid \xc3 utf-8 \xf0\x9f",
        "\u{2581}\u{2581}x \u{a0}\u{3000}".as_bytes(),
        b"",
        b"   \n\n\n   ",
    ];
    for (i, t) in texts.iter().enumerate() {
        let mut v = vec![(i as u8) | if i % 2 == 0 { 0x80 } else { 0 }];
        v.extend_from_slice(t);
        add("tokenizer", &format!("{i}"), v);
    }

    // Chat: one byte (template name, tokenizer), then template text, four custom patterns,
    // then messages (first character: role), NUL-separated.
    let chats = [
        (0u8, "{{ '<|im_start|>' }}\0<<{content}>>\0U: {content}\n\0A: {content}</s>\0A:\0 sys\0\u{1}Hi\0\u{2}Hello"),
        (1, "<|start_header_id|><|end_header_id|>\0\0\0\0\0\u{1}  spaced  \0\u{2}\tok\t"),
        (2, "[INST] <<SYS>>\0{content}\0{content}{content}\0x\0\0 system\0\u{1}q\0\u{2}a\0\u{1}q2"),
        (10, "<|user|><|assistant|>eos_token\0\0\0\0\0\u{2}only the assistant"),
        (12, "<start_of_turn>\0\0\0\0\0 be nice\0 twice\0\u{1}u\0\u{2}m\0\u{2}m2"),
        (9, "[SYSTEM_PROMPT]\0\0\0\0\0\u{1}日本語\0\u{2}🦙"),
    ];
    for (i, (sel, text)) in chats.iter().enumerate() {
        let mut v = vec![*sel];
        v.extend_from_slice(text.as_bytes());
        add("chat", &format!("{i}"), v);
    }
    out
}

/// Writes the seeds into fuzz/corpus (ignored: the corpora are committed).
#[test]
#[ignore]
fn write_seed_corpora() {
    for (target, name, bytes) in seeds() {
        let dir = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The seeds themselves replay cleanly (whatever the committed corpus holds).
#[test]
fn seeds_replay() {
    for (target, name, bytes) in seeds() {
        let run = std::panic::catch_unwind(|| fuzzing::run(target, &bytes, toks()));
        assert!(run.is_ok(), "{target} seed {name} panicked");
    }
}

/// The GGUF seeds reach the deep paths: the models load and run, the adapter loads.
#[test]
fn gguf_seeds_are_valid_models_and_adapters() {
    use pocketlora::internals::gguf::GgufFile;
    use pocketlora::internals::model::Model;
    use std::sync::Arc;
    let s = seeds();
    let get = |n: &str| {
        let (_, _, b) = s.iter().find(|(_, name, _)| name == n).unwrap();
        Arc::new(GgufFile::from_bytes(b.clone()).unwrap())
    };
    for n in ["seed-llama-f32", "seed-qwen2-q8_0"] {
        let m = Model::from_file(get(n), 1).unwrap();
        assert!(Tokenizer::from_gguf(m.weights.file()).is_ok(), "{n}");
    }
    let f = get("seed-llama-cpp-adapter");
    let tiny = fuzzing::tiny_model_config();
    gguf_adapter::from_file(&f, Path::new("a.gguf"), &tiny).unwrap();
}

/// Found by the tokenizer target (fuzz/regressions/tokenizer-bpe-offsets-split-a-character):
/// GPT-2's byte-level BPE splits some characters between two tokens, whose offset ranges
/// then ended inside the character, so slicing the text by them panicked.
#[test]
fn bpe_offsets_never_split_a_character() {
    let gpt2 = &toks()[2];
    let text = "\u{1d}\u{fffd}\u{fffd}\u{2581}\u{2581}x \u{a0}\u{3000}";
    for parse_special in [false, true] {
        let (ids, offs) = gpt2.encode_with_offsets(text, true, parse_special);
        assert_eq!(ids.len(), offs.len());
        // Each range slices the text (whole characters), and together, in order and
        // without gaps, they cover it.
        let mut covered = 0;
        for r in &offs {
            let _piece = &text[r.clone()];
            assert!(r.start <= covered, "gap before {r:?}");
            covered = covered.max(r.end);
        }
        assert_eq!(covered, text.len());
    }
}
