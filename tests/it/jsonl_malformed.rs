//! Malformed data files (JSONL in every format, plain text): each case asserts the error the
//! reader returns — its kind, the line it names and what it says — or, with skipping on, the
//! lines it skipped.

use crate::common;

use std::path::Path;
use std::sync::OnceLock;

use pocketlora::internals::data::{load_dataset, parse_dataset, DataFormat, Dataset, LoadOptions};
use pocketlora::internals::error::Error;
use pocketlora::internals::tokenizer::chat::ChatTemplate;
use pocketlora::internals::tokenizer::Tokenizer;

fn tok() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::open(common::asset("aidreams260K-q8_0.gguf")).unwrap())
}

fn parse(text: &str, skip: bool) -> pocketlora::Result<Dataset> {
    let chat = ChatTemplate::parse("chatml").unwrap();
    let opts = LoadOptions {
        skip_bad_lines: skip,
        ..LoadOptions::default()
    };
    parse_dataset(Path::new("d.jsonl"), text, Some(tok()), Some(&chat), opts)
}

/// The error for `text` must be a data error on `line` whose message contains `needle`.
fn bad(text: &str, line: usize, needle: &str) {
    match parse(text, false) {
        Err(Error::Data { path, line: l, msg }) => {
            assert_eq!(path, Path::new("d.jsonl"));
            assert_eq!(l, line, "{text:?}: {msg}");
            assert!(msg.contains(needle), "{text:?}: {msg:?} lacks {needle:?}");
        }
        other => panic!("{text:?}: expected a data error on line {line}, got {other:?}"),
    }
}

const TEXT: &str = "{\"text\": \"a b c\"}\n";
const IDS: &str = "{\"ids\": [1, 2, 3]}\n";

#[test]
fn valid_files_of_each_format_load() {
    for (text, fmt) in [
        (TEXT, DataFormat::Text),
        (IDS, DataFormat::Ids),
        ("{\"prompt\": \"p\", \"completion\": \"c\"}", DataFormat::PromptCompletion),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}",
            DataFormat::Chat,
        ),
    ] {
        let d = parse(text, false).unwrap();
        assert_eq!(d.format, fmt);
        assert_eq!(d.records.len(), 1);
    }
}

#[test]
fn not_json() {
    bad(&format!("{TEXT}{{\"text\": \"x\"\n"), 2, "not valid JSON");
}

#[test]
fn first_line_not_an_object() {
    bad("[1, 2, 3]\n", 1, "expected a JSON object");
}

#[test]
fn later_line_not_an_object() {
    bad(
        &format!("{TEXT}\"just a string\"\n"),
        2,
        "expected a JSON object",
    );
}

#[test]
fn unknown_keys() {
    bad("{\"body\": \"x\"}\n", 1, "cannot tell the format");
}

#[test]
fn text_not_a_string() {
    bad(
        &format!("{TEXT}{{\"text\": [1]}}\n"),
        2,
        "\"text\" must be a string",
    );
}

#[test]
fn text_key_missing_on_a_later_line() {
    bad(
        &format!("{TEXT}\n\n{{\"txt\": \"x\"}}\n"),
        4,
        "missing key \"text\"",
    );
}

#[test]
fn prompt_without_completion() {
    bad("{\"prompt\": \"p\"}\n", 1, "missing key \"completion\"");
}

#[test]
fn messages_not_a_list() {
    bad(
        "{\"messages\": {\"role\": \"user\"}}\n",
        1,
        "\"messages\" must be a list",
    );
}

#[test]
fn message_with_unknown_role() {
    bad(
        "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n",
        1,
        "messages[0]: role \"robot\"",
    );
}

#[test]
fn message_without_content() {
    bad(
        "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\"}]}\n",
        1,
        "messages[1] has no string \"content\"",
    );
}

#[test]
fn conversation_without_assistant() {
    bad(
        "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}\n",
        1,
        "no assistant message",
    );
}

#[test]
fn ids_not_a_list() {
    bad(
        &format!("{IDS}{{\"ids\": \"1 2\"}}\n"),
        2,
        "\"ids\" must be a list",
    );
}

#[test]
fn ids_empty() {
    bad("{\"ids\": []}\n", 1, "\"ids\" is empty");
}

#[test]
fn id_negative_fractional_or_over_u32() {
    bad("{\"ids\": [1, -2]}\n", 1, "ids[1] = -2");
    bad("{\"ids\": [1, 2.5]}\n", 1, "ids[1] = 2.5");
    bad("{\"ids\": [4294967296]}\n", 1, "ids[0] = 4294967296");
}

#[test]
fn mask_of_the_wrong_length() {
    bad(
        "{\"ids\": [1, 2, 3], \"mask\": [0, 1]}\n",
        1,
        "\"mask\" has 2 entries but \"ids\" has 3",
    );
}

#[test]
fn mask_values_not_0_or_1() {
    bad(
        "{\"ids\": [1, 2], \"mask\": [0, 2]}\n",
        1,
        "mask[1] = 2 must be 0 or 1",
    );
    bad(
        "{\"ids\": [1, 2], \"mask\": \"01\"}\n",
        1,
        "\"mask\" must be a list",
    );
}

#[test]
fn format_changes_within_the_file() {
    // The first record fixes the format: an ids record after text ones is a text record
    // without "text".
    bad(&format!("{TEXT}{IDS}"), 2, "missing key \"text\"");
}

#[test]
fn nesting_deeper_than_the_json_limit() {
    let deep = format!(
        "{{\"text\": {}1{}}}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    bad(&deep, 1, "not valid JSON");
}

#[test]
fn skipping_counts_every_bad_line() {
    let text = format!("not json\n{TEXT}{{\"txt\": 1}}\n\n{TEXT}[]\n");
    let d = parse(&text, true).unwrap();
    assert_eq!(d.records.len(), 2);
    let lines: Vec<usize> = d.skipped.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, vec![1, 3, 6]);
    assert!(d.skipped[0].1.contains("not valid JSON"));
}

#[test]
fn text_formats_need_a_tokenizer() {
    let e = parse_dataset(
        Path::new("d.jsonl"),
        TEXT,
        None,
        None,
        LoadOptions::default(),
    );
    match e {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("need the model's tokenizer"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Ids need none.
    let d = parse_dataset(
        Path::new("d.jsonl"),
        IDS,
        None,
        None,
        LoadOptions::default(),
    );
    assert_eq!(d.unwrap().records.len(), 1);
}

#[test]
fn files_that_are_missing_or_not_utf8() {
    let dir = common::scratch_dir("jsonl-malformed");
    match load_dataset(
        &dir.join("none.jsonl"),
        Some(tok()),
        None,
        LoadOptions::default(),
    ) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
        }
        other => panic!("{other:?}"),
    }
    let p = dir.join("latin1.jsonl");
    std::fs::write(&p, b"{\"text\": \"caf\xe9\"}\n").unwrap();
    // Not UTF-8: a data error naming the line and the byte offset, not an I/O error.
    std::fs::write(&p, b"{\"text\": \"ok\"}\n{\"text\": \"caf\xe9\"}\n").unwrap();
    match load_dataset(&p, Some(tok()), None, LoadOptions::default()) {
        Err(Error::Data { path, line, msg }) => {
            assert_eq!(path, p);
            assert_eq!(line, 2);
            assert!(
                msg.contains("UTF-8") && msg.contains("byte offset 28"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
