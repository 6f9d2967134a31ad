//! Chat templates: recognition and rendering against llama.cpp's and Hugging Face's outputs
//! (tests/golden/chat), assistant spans, and per-token training targets.

use crate::common;

use std::path::PathBuf;

use pocketlora::internals::tokenizer::chat::{ChatTemplate, CustomTemplate, Message, Role};
use pocketlora::internals::tokenizer::Tokenizer;
use serde_json::Value;

fn goldens() -> Vec<Value> {
    let p = common::golden("chat/chat_goldens.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn messages(v: &Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            Message::new(
                Role::parse(m["role"].as_str().unwrap()).unwrap(),
                m["content"].as_str().unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_family_renders_like_the_reference() {
    let cases = goldens();
    assert!(cases.len() >= 18);
    let mut families = std::collections::BTreeSet::new();
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let t = ChatTemplate::parse(c["template"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .with_eos(c["eos"].as_str().unwrap());
        assert_eq!(
            t.name(),
            c["family"].as_str().unwrap(),
            "{name}: detected family"
        );
        let msgs = messages(&c["messages"]);
        let r = t.render(&msgs, c["add_generation_prompt"].as_bool().unwrap());
        assert_eq!(r.text, c["expected"].as_str().unwrap(), "{name}");
        // One span per assistant message, each holding its (possibly trimmed) content.
        let assistants: Vec<&Message> = msgs.iter().filter(|m| m.role == Role::Assistant).collect();
        assert_eq!(r.assistant_spans.len(), assistants.len(), "{name}");
        for (span, m) in r.assistant_spans.iter().zip(&assistants) {
            // (Qwen3 drops past turns' reasoning: the answer after `</think>` is there.)
            let answer = m.content.rsplit("</think>").next().unwrap_or("");
            assert!(
                r.text[span.clone()].contains(answer.trim()),
                "{name}: {span:?}"
            );
        }
        families.insert(t.name());
    }
    for f in [
        "chatml", "qwen3", "llama3", "llama2", "zephyr", "phi3", "gemma",
    ] {
        assert!(families.contains(f), "no golden for {f}");
    }
}

#[test]
fn names_and_unknown_templates() {
    assert_eq!(ChatTemplate::parse("chatml").unwrap().name(), "chatml");
    let e = ChatTemplate::parse("{{ messages }} nothing known here").unwrap_err();
    assert!(e.to_string().contains("not recognised"), "{e}");
}

#[test]
fn custom_template_renders_and_marks_the_assistant() {
    let t = ChatTemplate::custom(
        CustomTemplate::new(
            "{content}\n\n",
            "USER: {content}\n",
            "ASSISTANT: {content}</s>\n",
            "ASSISTANT:",
        )
        .unwrap(),
    );
    let r = t.render(
        &[
            Message::system("Be brief."),
            Message::user("Hi"),
            Message::assistant("Hello!"),
            Message::user("Bye"),
        ],
        true,
    );
    assert_eq!(
        r.text,
        "Be brief.\n\nUSER: Hi\nASSISTANT: Hello!</s>\nUSER: Bye\nASSISTANT:"
    );
    assert_eq!(r.assistant_spans.len(), 1);
    assert_eq!(&r.text[r.assistant_spans[0].clone()], "Hello!</s>\n");
    assert!(CustomTemplate::new("{content}", "no placeholder", "{content}", "").is_err());
    assert!(CustomTemplate::new("{content}{content}", "{content}", "{content}", "").is_err());
}

#[test]
fn training_targets_cover_exactly_the_assistant_turns() {
    let vocab = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/vocab/ggml-vocab-llama-spm.gguf");
    let tok = Tokenizer::open(vocab).unwrap();
    let t = ChatTemplate::parse("llama2").unwrap();
    let r = t.render(
        &[
            Message::user("Hello"),
            Message::assistant("Hi there"),
            Message::user("Who are you"),
            Message::assistant("A helper."),
        ],
        false,
    );
    assert_eq!(
        r.text,
        "[INST] Hello [/INST]Hi there</s>[INST] Who are you [/INST]A helper.</s>"
    );
    let ct = r.tokenize(&tok, true);
    assert_eq!(ct.ids.len(), ct.targets.len());
    assert_eq!(ct.ids[0], tok.bos().unwrap());
    assert!(!ct.targets[0]);
    let eos = tok.eos().unwrap();
    // Both </s> were parsed as the EOS token, and both are targets.
    let eos_pos: Vec<usize> = (0..ct.ids.len()).filter(|&i| ct.ids[i] == eos).collect();
    assert_eq!(eos_pos.len(), 2);
    assert!(eos_pos.iter().all(|&i| ct.targets[i]));
    // The target tokens spell the assistant turns; the rest spell the prompt.
    let pick = |want: bool| -> Vec<u32> {
        ct.ids
            .iter()
            .zip(&ct.targets)
            .filter(|(_, &t)| t == want)
            .map(|(&id, _)| id)
            .collect()
    };
    let said = tok.decode_with_special(&pick(true)).unwrap();
    assert_eq!(said.replace(' ', ""), "Hithere</s>Ahelper.</s>");
    let prompt = tok.decode_with_special(&pick(false)).unwrap();
    assert!(
        !prompt.contains("Hi") && prompt.contains("Who are you"),
        "{prompt}"
    );
}
