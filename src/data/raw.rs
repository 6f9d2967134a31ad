//! Training records as users write them, before tokenization: one format per file, detected
//! from its extension and first record.
//!
//! | format | file | targets |
//! |---|---|---|
//! | text | JSONL `{"text": …}` | every token after BOS, EOS included |
//! | prompt/completion | JSONL `{"prompt": …, "completion": …}` | completion tokens and EOS (all with `--no-mask-prompt`) |
//! | chat | JSONL `{"messages": [{"role", "content"}, …]}` | assistant turns, as the chat template marks them |
//! | ids | JSONL `{"ids": […], "mask": […]}` | as given |
//! | plain text | `.txt`, documents separated by blank lines | as text |

use serde_json::Value;

use super::jsonl::parse_ids_record;
use super::TokenRecord;
use crate::tokenizer::chat::{Message, Role};

/// The format of a data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    Text,
    PromptCompletion,
    Chat,
    Ids,
    PlainText,
}

impl DataFormat {
    pub fn name(self) -> &'static str {
        match self {
            DataFormat::Text => "text ({\"text\": ...})",
            DataFormat::PromptCompletion => {
                "prompt/completion ({\"prompt\": ..., \"completion\": ...})"
            }
            DataFormat::Chat => "chat ({\"messages\": [...]})",
            DataFormat::Ids => "ids ({\"ids\": [...], \"mask\": [...]})",
            DataFormat::PlainText => "plain text",
        }
    }

    /// The format of a JSONL file from one of its lines.
    pub fn detect(line: &str) -> Result<DataFormat, String> {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
        let o = v.as_object().ok_or("expected a JSON object")?;
        if o.contains_key("messages") {
            Ok(DataFormat::Chat)
        } else if o.contains_key("prompt") || o.contains_key("completion") {
            Ok(DataFormat::PromptCompletion)
        } else if o.contains_key("text") {
            Ok(DataFormat::Text)
        } else if o.contains_key("ids") {
            Ok(DataFormat::Ids)
        } else {
            Err(format!(
                "cannot tell the format: expected one of the keys \"text\", \"prompt\"/\"completion\", \"messages\" or \"ids\", found {:?}",
                o.keys().collect::<Vec<_>>()
            ))
        }
    }
}

/// One record before tokenization.
#[derive(Clone, Debug, PartialEq)]
pub enum RawRecord {
    Text(String),
    PromptCompletion { prompt: String, completion: String },
    Chat(Vec<Message>),
    Ids(TokenRecord),
}

fn string_field(
    o: &serde_json::Map<String, Value>,
    key: &str,
    expected: &str,
) -> Result<String, String> {
    match o.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("\"{key}\" must be a string, found {other}")),
        None => Err(format!(
            "missing key \"{key}\" (this file's records are {expected})"
        )),
    }
}

/// Parses one JSONL line of a file whose format is `fmt`; the error says what was expected.
pub fn parse_line(line: &str, fmt: DataFormat) -> Result<RawRecord, String> {
    if fmt == DataFormat::Ids {
        return parse_ids_record(line).map(RawRecord::Ids);
    }
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let o = v
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, {}", fmt.name()))?;
    match fmt {
        DataFormat::Text | DataFormat::PlainText => {
            Ok(RawRecord::Text(string_field(o, "text", fmt.name())?))
        }
        DataFormat::PromptCompletion => Ok(RawRecord::PromptCompletion {
            prompt: string_field(o, "prompt", fmt.name())?,
            completion: string_field(o, "completion", fmt.name())?,
        }),
        DataFormat::Chat => {
            let msgs = o.get("messages").and_then(Value::as_array).ok_or_else(|| {
                format!(
                    "\"messages\" must be a list (this file's records are {})",
                    fmt.name()
                )
            })?;
            let mut out = Vec::with_capacity(msgs.len());
            for (i, m) in msgs.iter().enumerate() {
                let role = m
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("messages[{i}] has no string \"role\""))?;
                let role = Role::parse(role).ok_or_else(|| {
                    format!("messages[{i}]: role {role:?} is not system, user or assistant")
                })?;
                let content = m
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("messages[{i}] has no string \"content\""))?;
                out.push(Message::new(role, content));
            }
            if !out.iter().any(|m| m.role == Role::Assistant) {
                return Err("the conversation has no assistant message to train on".into());
            }
            Ok(RawRecord::Chat(out))
        }
        DataFormat::Ids => unreachable!("handled above"),
    }
}

/// Splits a plain-text file into documents at blank lines (lines with only whitespace),
/// with the line number each starts on.
pub fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                docs.push((start, cur.join("\n")));
                cur.clear();
            }
        } else {
            if cur.is_empty() {
                start = i + 1;
            }
            cur.push(line);
        }
    }
    if !cur.is_empty() {
        docs.push((start, cur.join("\n")));
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_from_keys() {
        assert_eq!(DataFormat::detect(r#"{"text": "a"}"#), Ok(DataFormat::Text));
        assert_eq!(
            DataFormat::detect(r#"{"prompt": "a", "completion": "b"}"#),
            Ok(DataFormat::PromptCompletion)
        );
        assert_eq!(
            DataFormat::detect(r#"{"messages": []}"#),
            Ok(DataFormat::Chat)
        );
        assert_eq!(DataFormat::detect(r#"{"ids": [1]}"#), Ok(DataFormat::Ids));
        assert!(DataFormat::detect(r#"{"body": "x"}"#)
            .unwrap_err()
            .contains("\"body\""));
        assert!(DataFormat::detect("[1]").is_err());
    }

    #[test]
    fn malformed_records_say_what_was_expected() {
        for (line, fmt, needle) in [
            (r#"{"txt": "a"}"#, DataFormat::Text, "missing key \"text\""),
            (r#"{"text": 5}"#, DataFormat::Text, "must be a string"),
            (
                r#"{"prompt": "a"}"#,
                DataFormat::PromptCompletion,
                "\"completion\"",
            ),
            (r#"{"messages": "hi"}"#, DataFormat::Chat, "must be a list"),
            (
                r#"{"messages": [{"role": "robot", "content": "x"}]}"#,
                DataFormat::Chat,
                "robot",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "x"}]}"#,
                DataFormat::Chat,
                "no assistant",
            ),
            (
                r#"{"messages": [{"role": "user"}]}"#,
                DataFormat::Chat,
                "content",
            ),
            ("{", DataFormat::Text, "not valid JSON"),
        ] {
            let e = parse_line(line, fmt).unwrap_err();
            assert!(e.contains(needle), "{line}: {e}");
        }
    }

    #[test]
    fn documents_split_at_blank_lines() {
        let d = split_documents("one\ntwo\n\n  \nthree\n\n\nfour\n");
        assert_eq!(
            d,
            vec![
                (1, "one\ntwo".to_string()),
                (5, "three".to_string()),
                (8, "four".to_string())
            ]
        );
        assert!(split_documents("\n\n").is_empty());
    }
}
