//! Entry points of the fuzz targets (`fuzz/fuzz_targets/*.rs`, built with cargo-fuzz on
//! nightly) and of `tests/fuzz_corpora.rs`, which replays every committed corpus as an
//! ordinary test on stable. Not part of the API.
//!
//! Each function takes arbitrary bytes and must return without panicking, whatever they
//! are; the properties it asserts (ids inside the vocabulary, offsets on character
//! boundaries, round trips, adapters that fit the model they were loaded for, ...) are
//! bugs when they fail. Readers that accept the input are driven further, as the crate
//! would use what they return: a GGUF file that parses is also read as a model (and run for
//! a few tokens), a tokenizer, a chat template and a llama.cpp adapter.

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::data::{parse_dataset, EncodeOptions, LoadOptions};
use crate::gguf::GgufFile;
use crate::infer::{end_of_generation_ids, generate_with, GenerateParams, SamplerConfig};
use crate::lora::{gguf_adapter, peft, Adapter};
use crate::model::arch::LLAMA;
use crate::model::{Model, ModelConfig};
use crate::tokenizer::bpe::byte_to_char_table;
use crate::tokenizer::chat::{ChatTemplate, CustomTemplate, Message, Role};
use crate::tokenizer::{ModelKind, Tokenizer};

/// The fuzz targets, by name: also the names of their corpus directories under
/// `fuzz/corpus/`.
pub const TARGETS: [&str; 6] = [
    "gguf",
    "safetensors",
    "jsonl",
    "tokenizer",
    "chat",
    "peft_config",
];

/// The tokenizers the tokenizer, chat and JSONL targets run, from files under the crate
/// root `root`: SentencePiece with byte fallback (aidreams260K, 512 pieces), Llama's
/// SentencePiece (32k), and the byte-level BPE of GPT-2, StarCoder and DeepSeek Coder
/// (three pre-tokenizers).
pub fn tokenizers(root: &Path) -> crate::Result<Vec<Tokenizer>> {
    [
        "assets/aidreams260K-q8_0.gguf",
        "tests/data/vocab/ggml-vocab-llama-spm.gguf",
        "tests/data/vocab/ggml-vocab-gpt-2.gguf",
        "tests/data/vocab/ggml-vocab-starcoder.gguf",
        "tests/data/vocab/ggml-vocab-deepseek-coder.gguf",
    ]
    .iter()
    .map(|p| Tokenizer::open(root.join(p)))
    .collect()
}

/// [`tokenizers`] of this repository (its crate root), loaded once: what the fuzz targets
/// use. Panics when the files are missing (the fuzz harness has nothing to run then).
pub fn repo_tokenizers() -> &'static [Tokenizer] {
    static TOKS: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    TOKS.get_or_init(|| {
        tokenizers(Path::new(env!("CARGO_MANIFEST_DIR")))
            .expect("the tokenizer files of the repository")
    })
}

/// A two-block Llama small enough to check adapters against: width 8, two query heads of
/// 4 (so q/k rows are permuted), one key/value head, feed-forward 12.
pub fn tiny_model_config() -> ModelConfig {
    ModelConfig::dense(&LLAMA, 16, 8, 2, 2, 1, 12, 16)
}

/// An adapter loaded for `model` must fit it and hold only finite numbers.
fn check_loaded(a: &Adapter, model: &ModelConfig) {
    if let Err(e) = a.check_fits(model) {
        panic!("a loaded adapter does not fit the model it was loaded for: {e}");
    }
    for p in a.pairs() {
        assert!(
            p.a.iter().chain(&p.b).all(|v| v.is_finite()),
            "a loaded adapter holds a non-finite value"
        );
        assert!(
            p.scale.is_finite(),
            "a loaded adapter has scale {}",
            p.scale
        );
    }
}

/// The GGUF reader, then everything that reads a GGUF file: model configuration and
/// weights (and two generated tokens), tokenizer, chat template, end-of-generation ids,
/// llama.cpp adapter.
pub fn gguf(data: &[u8]) {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for (key, v) in f.metadata() {
        let _ = v.describe();
        let _ = (
            f.get_u64(key),
            f.get_f32(key),
            f.get_str(key),
            f.get_bool(key),
        );
        assert!(f.get(key).is_some(), "key {key:?} is listed but not found");
    }
    let mut views = 0;
    for v in f.tensor_views() {
        assert_eq!(v.data.len() as u64, v.info.n_bytes, "{}", v.info.name);
        assert!(v.row(0).is_some(), "{} has no first row", v.info.name);
        assert!(v.row(v.info.n_rows()).is_none());
        views += 1;
    }
    assert_eq!(
        views,
        f.tensors().len(),
        "every validated tensor has a view"
    );
    let f = Arc::new(f);
    if let Ok(tok) = Tokenizer::from_gguf(&f) {
        let text = "Hello <s> wörld 🦙 <|im_start|>\n\n  12345";
        for parse_special in [false, true] {
            let ids = tok.encode(text, true, parse_special);
            assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
            let _ = tok.decode(&ids);
        }
    }
    let _ = ChatTemplate::from_gguf(&f);
    let _ = end_of_generation_ids(&f);
    let tiny = tiny_model_config();
    if let Ok(a) = gguf_adapter::from_file(&f, Path::new("fuzz.gguf"), &tiny) {
        check_loaded(&a, &tiny);
    }
    if let Ok(model) = Model::from_file(f.clone(), 1) {
        if let Ok(a) = gguf_adapter::from_file(&f, Path::new("fuzz.gguf"), &model.cfg) {
            check_loaded(&a, &model.cfg);
        }
        let params = GenerateParams {
            max_new: 2,
            sampler: SamplerConfig::greedy(),
            stop_ids: Vec::new(),
        };
        let prompt = [0u32, (model.cfg.n_vocab - 1) as u32];
        let _ = generate_with(
            &model,
            None,
            &prompt[..model.cfg.n_ctx.min(2)],
            &params,
            |_| true,
        );
    }
}

/// The safetensors reader.
pub fn safetensors(data: &[u8]) {
    if let Ok((tensors, _)) = crate::safetensors::parse(data) {
        for (name, t) in &tensors {
            let n: usize = t.shape.iter().product();
            assert_eq!(n, t.data.len(), "{name}: shape and values disagree");
        }
    }
}

/// Splits `data` at the first 0 byte: (before, after); all of it and nothing without one.
fn split0(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// The data reader (JSONL in every format, and plain text), tokenizing with one of `toks`
/// and a chat template. The first byte picks the tokenizer, the template, the file type and
/// the options; the rest is the file.
pub fn jsonl(data: &[u8], toks: &[Tokenizer]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    // The reader takes UTF-8 text (a file that is not is an I/O error before parsing).
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let tok = (!toks.is_empty()).then(|| &toks[sel as usize % toks.len().max(1)]);
    let chat = ChatTemplate::parse(if sel & 0x10 != 0 { "chatml" } else { "llama3" }).ok();
    let name = if sel & 0x20 != 0 { "d.txt" } else { "d.jsonl" };
    let opts = LoadOptions {
        encode: EncodeOptions {
            mask_prompt: sel & 0x40 == 0,
        },
        skip_bad_lines: sel & 0x80 != 0,
    };
    let Ok(d) = parse_dataset(Path::new(name), text, tok, chat.as_ref(), opts) else {
        return;
    };
    for r in &d.records {
        assert_eq!(r.ids.len(), r.targets.len(), "one target flag per token");
        assert!(
            !r.targets.first().copied().unwrap_or(false),
            "token 0 is never a target"
        );
        if let Some(t) = tok {
            if d.format != crate::data::DataFormat::Ids {
                assert!(r.ids.iter().all(|&id| (id as usize) < t.n_vocab()));
            }
        }
    }
}

/// Whether `text` can survive a round trip through `tok` (see tests/tokenizer_roundtrip.rs):
/// SentencePiece writes spaces as U+2581, so a literal one cannot; a byte-level vocabulary
/// that lacks a byte cannot spell a character that uses it.
fn round_trips(tok: &Tokenizer, text: &str) -> bool {
    match tok.kind() {
        ModelKind::Spm => !text.contains('\u{2581}'),
        ModelKind::Bpe => {
            let table = byte_to_char_table();
            text.bytes().all(|b| {
                let mut cb = [0u8; 4];
                tok.token_id(table[b as usize].encode_utf8(&mut cb))
                    .is_some()
            })
        }
    }
}

fn check_offsets(text: &str, ids: &[u32], offs: &[Range<usize>], n_vocab: usize) {
    assert_eq!(ids.len(), offs.len(), "one offset range per id");
    for (id, r) in ids.iter().zip(offs) {
        assert!((*id as usize) < n_vocab, "id {id} outside the vocabulary");
        assert!(r.start <= r.end && r.end <= text.len(), "range {r:?}");
        assert!(
            text.is_char_boundary(r.start) && text.is_char_boundary(r.end),
            "range {r:?} splits a character"
        );
    }
}

/// A tokenizer on arbitrary text (invalid UTF-8 replaced, as a caller holding bytes would)
/// and arbitrary ids. The first byte picks one of `toks` and the flags.
pub fn tokenizer(data: &[u8], toks: &[Tokenizer]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if toks.is_empty() {
        return;
    }
    let tok = &toks[sel as usize % toks.len()];
    let add_special = sel & 0x80 != 0;
    let text = String::from_utf8_lossy(rest);
    for parse_special in [false, true] {
        let (ids, offs) = tok.encode_with_offsets(&text, add_special, parse_special);
        check_offsets(&text, &ids, &offs, tok.n_vocab());
        assert_eq!(tok.encode(&text, add_special, parse_special), ids);
        let back = match tok.decode(&ids) {
            Ok(s) => s,
            Err(e) => panic!("ids from encode do not decode: {e}"),
        };
        let mut dec = tok.decoder();
        let mut streamed = String::new();
        for &id in &ids {
            match dec.push(id) {
                Ok(s) => streamed.push_str(&s),
                Err(e) => panic!("ids from encode do not decode: {e}"),
            }
        }
        assert!(
            dec.pending().len() < 4,
            "a held-back character is < 4 bytes"
        );
        streamed.push_str(&dec.finish());
        assert_eq!(streamed, back, "streaming and whole decoding differ");
        if !parse_special && round_trips(tok, &text) {
            assert_eq!(back, text, "decode(encode(s)) != s");
        }
    }
    // Arbitrary ids, some outside the vocabulary: text or an error.
    let ids: Vec<u32> = rest
        .chunks(3)
        .map(|c| c.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)) % (tok.n_vocab() as u32 + 8))
        .collect();
    let _ = tok.decode(&ids);
    let _ = tok.decode_with_special(&ids);
    let mut dec = tok.decoder_with_special();
    for &id in &ids {
        let _ = dec.push(id);
    }
    let _ = dec.finish();
}

const TEMPLATE_NAMES: [&str; 13] = [
    "chatml",
    "llama3",
    "llama2",
    "llama2-sys",
    "llama2-sys-bos",
    "llama2-sys-strip",
    "mistral-v1",
    "mistral-v3",
    "mistral-v3-tekken",
    "mistral-v7",
    "zephyr",
    "phi3",
    "gemma",
];

/// Chat templates: detection from arbitrary template text, custom patterns, and rendering
/// (then tokenizing with one of `toks`) arbitrary conversations. The text (after the first
/// byte, which picks the tokenizer) is split at NUL characters: a template text, four
/// custom patterns, then messages whose first character picks the role.
pub fn chat(data: &[u8], toks: &[Tokenizer]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\0');
    let mut templates: Vec<ChatTemplate> = Vec::new();
    if let Ok(t) = ChatTemplate::parse(parts.next().unwrap_or_default()) {
        templates.push(t);
    }
    let pats: Vec<&str> = (0..4).map(|_| parts.next().unwrap_or_default()).collect();
    if let Ok(c) = CustomTemplate::new(pats[0], pats[1], pats[2], pats[3]) {
        templates.push(ChatTemplate::custom(c));
    }
    let name = TEMPLATE_NAMES[sel as usize % TEMPLATE_NAMES.len()];
    if let Ok(t) = ChatTemplate::parse(name) {
        templates.push(t.with_eos(pats[3]));
    }
    let messages: Vec<Message> = parts
        .map(|p| {
            let mut chars = p.chars();
            let role = match chars.next().map_or(0, |c| c as u32 % 3) {
                0 => Role::System,
                1 => Role::User,
                _ => Role::Assistant,
            };
            Message::new(role, chars.as_str())
        })
        .collect();
    let tok = (!toks.is_empty()).then(|| &toks[sel as usize % toks.len().max(1)]);
    for t in &templates {
        for gen in [false, true] {
            let r = t.render(&messages, gen);
            let mut last = 0;
            for s in &r.assistant_spans {
                assert!(last <= s.start && s.start < s.end && s.end <= r.text.len());
                assert!(r.text.is_char_boundary(s.start) && r.text.is_char_boundary(s.end));
                last = s.end;
            }
            if let Some(tok) = tok {
                let ct = r.tokenize(tok, true);
                assert_eq!(ct.ids.len(), ct.targets.len());
                assert!(ct.ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
            }
        }
    }
}

/// The PEFT adapter reader: `adapter_config.json` (the bytes before the first 0) and
/// `adapter_model.safetensors` (the bytes after it), loaded for [`tiny_model_config`].
pub fn peft_config(data: &[u8]) {
    let (config, weights) = split0(data);
    let Ok(config) = std::str::from_utf8(config) else {
        return;
    };
    let model = tiny_model_config();
    if let Ok(a) = peft::load_from_bytes(Path::new("fuzz-adapter"), config, weights, &model) {
        check_loaded(&a, &model);
        let _ = peft::to_tensors(&a, &model);
    }
}

/// Runs the target named `name` (one of [`TARGETS`]) on `data`; `toks` as from
/// [`tokenizers`]. Returns false for an unknown name.
pub fn run(name: &str, data: &[u8], toks: &[Tokenizer]) -> bool {
    match name {
        "gguf" => gguf(data),
        "safetensors" => safetensors(data),
        "jsonl" => jsonl(data, toks),
        "tokenizer" => tokenizer(data, toks),
        "chat" => chat(data, toks),
        "peft_config" => peft_config(data),
        _ => return false,
    }
    true
}
