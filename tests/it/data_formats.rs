//! Every data format, checked token by token against the tokenizer: what is a target and
//! what is not (BOS never, EOS always for text and completions, prompts masked, chat
//! assistant-only, ids as given), plain text split at blank lines, and malformed inputs
//! named by file and line.

use crate::common;

use std::path::{Path, PathBuf};

use common::{asset, scratch_dir};
use pocketlora::internals::data::{
    load_dataset, DataFormat, EncodeOptions, LoadOptions, TokenRecord,
};
use pocketlora::internals::gguf::{GgufFile, GgufWriter, Value};
use pocketlora::internals::tokenizer::chat::ChatTemplate;
use pocketlora::internals::tokenizer::Tokenizer;

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

fn tok() -> Tokenizer {
    Tokenizer::open(asset("aidreams260K-f32.gguf")).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn load(
    p: &Path,
    tok: &Tokenizer,
    chat: Option<&ChatTemplate>,
    mask_prompt: bool,
) -> pocketlora::Result<pocketlora::internals::data::Dataset> {
    let opts = LoadOptions {
        encode: EncodeOptions { mask_prompt },
        skip_bad_lines: false,
    };
    load_dataset(p, Some(tok), chat, opts)
}

/// The text of the target tokens, decoded in order.
fn target_text(tok: &Tokenizer, r: &TokenRecord) -> String {
    let ids: Vec<u32> = r
        .ids
        .iter()
        .zip(&r.targets)
        .filter(|(_, &t)| t)
        .map(|(&i, _)| i)
        .collect();
    tok.decode_with_special(&ids).unwrap()
}

#[test]
fn text_records_target_everything_after_bos_including_eos() {
    let (t, dir) = (tok(), scratch_dir("fmt-text"));
    let p = write(
        &dir,
        "d.jsonl",
        "{\"text\": \"Echoes of vectors unfold\"}\n\n{\"text\": \"a gentle hum\"}\n",
    );
    let d = load(&p, &t, None, true).unwrap();
    assert_eq!(d.format, DataFormat::Text);
    assert_eq!(d.records.len(), 2);
    let body = t.encode("Echoes of vectors unfold", false, false);
    let r = &d.records[0];
    assert_eq!(r.ids[0], 1);
    assert_eq!(&r.ids[1..r.ids.len() - 1], &body[..]);
    assert_eq!(*r.ids.last().unwrap(), 2);
    assert!(!r.targets[0]);
    assert!(
        r.targets[1..].iter().all(|&x| x),
        "every token after BOS, EOS included"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn completions_are_targets_and_prompts_are_not() {
    let (t, dir) = (tok(), scratch_dir("fmt-pc"));
    let p = write(&dir, "d.jsonl", "{\"prompt\": \"My sister Alice lives in\", \"completion\": \" Lisbon and teaches piano.\"}\n");
    let d = load(&p, &t, None, true).unwrap();
    assert_eq!(d.format, DataFormat::PromptCompletion);
    let r = &d.records[0];
    // Token by token: the prompt's tokens (as tokenized in context) are masked, the rest and EOS are targets.
    let whole = t.encode(
        "My sister Alice lives in Lisbon and teaches piano.",
        false,
        false,
    );
    assert_eq!(&r.ids[1..r.ids.len() - 1], &whole[..]);
    let prompt_tokens = t.encode("My sister Alice lives in", false, false);
    let n_prompt = prompt_tokens
        .iter()
        .zip(&whole)
        .take_while(|(a, b)| a == b)
        .count();
    for (i, &target) in r.targets.iter().enumerate() {
        assert_eq!(target, i > n_prompt, "token {i}");
    }
    // (decoding drops the SentencePiece space at the start of a piece)
    assert_eq!(
        target_text(&t, r).trim_start(),
        "Lisbon and teaches piano.</s>"
    );
    let all = load(&p, &t, None, false).unwrap();
    assert!(
        all.records[0].targets[1..].iter().all(|&x| x),
        "--no-mask-prompt trains on both"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn chat_targets_are_the_assistant_turns_only() {
    let (t, dir) = (tok(), scratch_dir("fmt-chat"));
    let chat = ChatTemplate::parse(CHATML).unwrap();
    let p = write(
        &dir,
        "d.jsonl",
        concat!(
            r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where does Alice live?"}, "#,
            r#"{"role": "assistant", "content": "In Lisbon."}, {"role": "user", "content": "And Bob?"}, {"role": "assistant", "content": "Porto."}]}"#,
            "\n"
        ),
    );
    let d = load(&p, &t, Some(&chat), true).unwrap();
    assert_eq!(d.format, DataFormat::Chat);
    let text = target_text(&t, &d.records[0]);
    // Exactly the assistant contents and their end-of-turn markers.
    assert!(
        text.contains("In Lisbon.") && text.contains("Porto."),
        "{text:?}"
    );
    for absent in ["Alice", "Bob", "Be brief", "user", "system"] {
        assert!(
            !text.contains(absent),
            "{absent:?} must not be a target: {text:?}"
        );
    }
    assert!(text.contains("<|im_end|>"));
    // Without a template, chat records are an error naming the line.
    let e = load(&p, &t, None, true).unwrap_err().to_string();
    assert!(
        e.contains("d.jsonl:1:") && e.contains("chat template"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ids_are_taken_as_given_and_need_no_tokenizer() {
    let dir = scratch_dir("fmt-ids");
    let p = write(
        &dir,
        "d.jsonl",
        "{\"ids\": [1, 5, 9], \"mask\": [0, 0, 1]}\n",
    );
    let d = load_dataset(&p, None, None, LoadOptions::default()).unwrap();
    assert_eq!(
        d.records,
        vec![TokenRecord::new(vec![1, 5, 9], vec![false, false, true])]
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn plain_text_files_split_into_documents() {
    let (t, dir) = (tok(), scratch_dir("fmt-txt"));
    let p = write(
        &dir,
        "notes.txt",
        "First note\nstill first.\n\n\nSecond note.\n",
    );
    let d = load(&p, &t, None, true).unwrap();
    assert_eq!(d.format, DataFormat::PlainText);
    assert_eq!(d.records.len(), 2);
    assert_eq!(target_text(&t, &d.records[1]), "Second note.</s>");
    assert_eq!(
        t.decode(&d.records[0].ids[1..d.records[0].ids.len() - 1])
            .unwrap(),
        "First note\nstill first."
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn malformed_lines_are_named_or_skipped_and_counted() {
    let (t, dir) = (tok(), scratch_dir("fmt-bad"));
    let p = write(
        &dir,
        "d.jsonl",
        "{\"text\": \"ok\"}\n{\"text\": 3}\nnot json\n{\"text\": \"fine\"}\n",
    );
    let e = load(&p, &t, None, true).unwrap_err().to_string();
    assert!(
        e.contains("d.jsonl:2:") && e.contains("must be a string"),
        "{e}"
    );
    let opts = LoadOptions {
        skip_bad_lines: true,
        ..LoadOptions::default()
    };
    let d = load_dataset(&p, Some(&t), None, opts).unwrap();
    assert_eq!(d.records.len(), 2);
    assert_eq!(
        d.skipped.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let p = write(&dir, "e.jsonl", "{\"body\": \"x\"}\n");
    let e = load(&p, &t, None, true).unwrap_err().to_string();
    assert!(
        e.contains("e.jsonl:1:") && e.contains("cannot tell the format"),
        "{e}"
    );
    let e = load(&dir.join("missing.jsonl"), &t, None, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.jsonl"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_model_file_with_a_chat_template_provides_it() {
    // The bundled model has no template; give a copy one and read it back from the file.
    let f = GgufFile::open(asset("aidreams260K-q8_0.gguf")).unwrap();
    let mut w = GgufWriter::copy_of(&f).unwrap();
    w.set("tokenizer.chat_template", Value::String(CHATML.into()));
    let g = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(
        ChatTemplate::from_gguf(&g).unwrap().name(),
        ChatTemplate::parse(CHATML).unwrap().name()
    );
}
