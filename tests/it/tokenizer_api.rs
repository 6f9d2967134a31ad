//! Tokenizer metadata handling: BOS/EOS flags, special tokens in text, end-of-generation ids,
//! errors for unknown or malformed tokenizer metadata, chat templates from a GGUF file.

use std::path::PathBuf;

use pocketlora::internals::gguf::{Array, GgufFile, GgufWriter, Value, ValueType};
use pocketlora::internals::tokenizer::chat::{ChatTemplate, Message};
use pocketlora::internals::tokenizer::Tokenizer;

fn vocab(name: &str) -> Tokenizer {
    Tokenizer::open(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/vocab")
            .join(name),
    )
    .unwrap()
}

/// A tiny byte-level BPE vocabulary: the 256 byte characters, one merge, and control tokens.
fn tiny_bpe(pre: Option<&str>, extra: &[(&str, Value)]) -> GgufWriter {
    let table = pocketlora::internals::tokenizer::bpe::byte_to_char_table();
    let mut tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
    tokens.push("ab".into()); // 256
    tokens.push("<|im_start|>".into()); // 257
    tokens.push("<|im_end|>".into()); // 258
    let mut types = vec![Value::I32(1); 257];
    types.extend([Value::I32(3), Value::I32(3)]);
    let mut w = GgufWriter::new();
    w.set("tokenizer.ggml.model", Value::from("gpt2"));
    if let Some(p) = pre {
        w.set("tokenizer.ggml.pre", Value::from(p));
    }
    w.set(
        "tokenizer.ggml.tokens",
        Value::Array(Array::from_strings(tokens)),
    );
    w.set(
        "tokenizer.ggml.token_type",
        Value::Array(Array::new(ValueType::I32, types)),
    );
    w.set(
        "tokenizer.ggml.merges",
        Value::Array(Array::from_strings(["a b"])),
    );
    w.set("tokenizer.ggml.eos_token_id", Value::U32(258));
    for (k, v) in extra {
        w.set(*k, v.clone());
    }
    w
}

#[test]
fn spm_adds_bos_and_parses_special_tokens_on_request() {
    let tok = vocab("ggml-vocab-llama-spm.gguf");
    assert!(tok.add_bos() && !tok.add_eos());
    let plain = tok.encode("Hello", false, false);
    assert_eq!(
        tok.encode("Hello", true, false),
        [&[1][..], &plain].concat()
    );
    // `</s>` is text unless special tokens are parsed.
    let as_text = tok.encode("Hi</s>", false, false);
    assert!(!as_text.contains(&2));
    let parsed = tok.encode("Hi</s>", false, true);
    assert_eq!(parsed.last(), Some(&2));
    assert_eq!(tok.decode_with_special(&parsed).unwrap(), "Hi</s>");
    assert_eq!(tok.decode(&parsed).unwrap(), "Hi");
    assert!(tok.is_eog(2) && !tok.is_eog(1));
}

#[test]
fn bpe_flags_from_metadata() {
    let tok = vocab("ggml-vocab-gpt-2.gguf");
    assert!(!tok.add_bos());
    assert_eq!(tok.encode("Hello world", true, false), [15496, 995]);
    let eot = tok.token_id("<|endoftext|>").unwrap();
    assert!(tok.is_eog(eot));
    assert_eq!(tok.encode("<|endoftext|>", false, true), [eot]);
}

#[test]
fn vocabulary_only_file_with_merges_and_control_tokens() {
    let w = tiny_bpe(
        Some("gpt-2"),
        &[("tokenizer.ggml.add_bos_token", Value::Bool(false))],
    );
    let tok = Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes()).unwrap()).unwrap();
    assert_eq!(tok.encode("ab", false, false), [256]);
    assert_eq!(
        tok.encode("<|im_start|>ab<|im_end|>", false, true),
        [257, 256, 258]
    );
    assert!(tok.is_eog(258));
    // An id past the vocabulary is an error, not a panic.
    let e = tok.decode(&[259]).unwrap_err();
    assert!(e.to_string().contains("259"), "{e}");
}

#[test]
fn unknown_pre_tokenizer_is_named() {
    let w = tiny_bpe(Some("my-new-model"), &[]);
    let e = Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes()).unwrap()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("\"my-new-model\"") && msg.contains("llama-bpe"),
        "{msg}"
    );
}

#[test]
fn malformed_tokenizer_metadata_is_an_error() {
    let mut w = tiny_bpe(None, &[]);
    w.set("tokenizer.ggml.model", Value::from("t5"));
    let e = Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes()).unwrap()).unwrap_err();
    assert!(e.to_string().contains("\"t5\""), "{e}");

    let mut w = tiny_bpe(None, &[]);
    w.set(
        "tokenizer.ggml.scores",
        Value::Array(Array::new(ValueType::F32, vec![Value::F32(0.0)])),
    );
    let e = Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes()).unwrap()).unwrap_err();
    assert!(e.to_string().contains("tokenizer.ggml.scores"), "{e}");

    let w = tiny_bpe(None, &[("tokenizer.ggml.add_bos_token", Value::Bool(true))]);
    let e = Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes()).unwrap()).unwrap_err();
    assert!(e.to_string().contains("BOS"), "{e}");

    let mut w = tiny_bpe(None, &[]);
    w.set(
        "tokenizer.ggml.merges",
        Value::Array(Array::from_strings(["nospace"])),
    );
    let e = Tokenizer::from_gguf(&GgufFile::from_bytes(w.to_bytes()).unwrap()).unwrap_err();
    assert!(e.to_string().contains("nospace"), "{e}");
}

#[test]
fn chat_template_from_gguf_uses_the_models_eos() {
    let zephyr = "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + eos_token }}{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + eos_token }}{% endif %}{% endfor %}";
    let w = tiny_bpe(None, &[("tokenizer.chat_template", Value::from(zephyr))]);
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let t = ChatTemplate::from_gguf(&f).unwrap();
    assert_eq!(t.name(), "zephyr");
    let r = t.render(&[Message::user("Hi")], true);
    assert_eq!(r.text, "<|user|>\nHi<|im_end|>\n<|assistant|>\n");
    // No template at all: a clear error.
    let f = GgufFile::from_bytes(tiny_bpe(None, &[]).to_bytes()).unwrap();
    assert!(ChatTemplate::from_gguf(&f)
        .unwrap_err()
        .to_string()
        .contains("chat_template"));
}
