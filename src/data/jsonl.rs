//! JSONL records of token ids: `{"ids": [1, 5, 9], "mask": [0, 1, 1]}`, one per line.
//! `mask[i] = 1` makes token `i` a target, predicted from the tokens before it (so `mask[0]`
//! never counts); without `mask`, every token after the first is a target. Blank lines are
//! skipped; anything else malformed is an error naming the file and line.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// A tokenized sequence and which of its tokens are training/evaluation targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub ids: Vec<u32>,
    /// `targets[i]`: token `i` is predicted and scored. Always false at 0.
    pub targets: Vec<bool>,
    /// Packed records (`data::pack`): positions where a further document begins
    /// (increasing, never 0). Empty: the record is one document.
    pub doc_starts: Vec<u32>,
}

impl TokenRecord {
    /// One document.
    pub fn new(ids: Vec<u32>, targets: Vec<bool>) -> TokenRecord {
        TokenRecord {
            ids,
            targets,
            doc_starts: Vec::new(),
        }
    }

    /// Number of scored tokens.
    pub fn n_targets(&self) -> usize {
        self.targets.iter().filter(|&&t| t).count()
    }
}

/// Reads every record of an ids JSONL file.
pub fn read_ids_jsonl(path: impl AsRef<Path>) -> Result<Vec<TokenRecord>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec = parse_ids_record(line).map_err(|msg| Error::Data {
            path: path.into(),
            line: i + 1,
            msg,
        })?;
        out.push(rec);
    }
    Ok(out)
}

/// Parses one line; the error text says what was expected.
pub fn parse_ids_record(line: &str) -> std::result::Result<TokenRecord, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("expected a JSON object like {\"ids\": [...], \"mask\": [...]}")?;
    let ids_v = obj
        .get("ids")
        .ok_or("missing key \"ids\" (a list of token ids)")?;
    let ids_a = ids_v
        .as_array()
        .ok_or("\"ids\" must be a list of token ids")?;
    let mut ids = Vec::with_capacity(ids_a.len());
    for (i, x) in ids_a.iter().enumerate() {
        match x.as_u64() {
            Some(n) if n <= u32::MAX as u64 => ids.push(n as u32),
            _ => {
                return Err(format!(
                    "ids[{i}] = {x} is not a token id (a non-negative integer)"
                ))
            }
        }
    }
    if ids.is_empty() {
        return Err("\"ids\" is empty".into());
    }
    let targets = match obj.get("mask") {
        None | Some(Value::Null) => (0..ids.len()).map(|i| i > 0).collect(),
        Some(Value::Array(m)) => {
            if m.len() != ids.len() {
                return Err(format!(
                    "\"mask\" has {} entries but \"ids\" has {}",
                    m.len(),
                    ids.len()
                ));
            }
            let mut t = Vec::with_capacity(m.len());
            for (i, x) in m.iter().enumerate() {
                let on = match x {
                    Value::Bool(b) => *b,
                    _ => match x.as_u64() {
                        Some(0) => false,
                        Some(1) => true,
                        _ => return Err(format!("mask[{i}] = {x} must be 0 or 1")),
                    },
                };
                t.push(on && i > 0);
            }
            t
        }
        Some(other) => return Err(format!("\"mask\" must be a list of 0/1, found {other}")),
    };
    Ok(TokenRecord::new(ids, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_default_and_first_token_never_counts() {
        let r = parse_ids_record(r#"{"ids": [1, 5, 9]}"#).unwrap();
        assert_eq!(r.targets, vec![false, true, true]);
        let r = parse_ids_record(r#"{"ids": [1, 5, 9], "mask": [1, 0, 1]}"#).unwrap();
        assert_eq!(r.targets, vec![false, false, true]);
        assert_eq!(r.n_targets(), 1);
    }

    #[test]
    fn malformed_lines_say_what_was_expected() {
        for (line, needle) in [
            ("[1,2]", "JSON object"),
            ("{\"id\": [1]}", "missing key \"ids\""),
            ("{\"ids\": [1, -2]}", "ids[1]"),
            ("{\"ids\": [1, 2], \"mask\": [1]}", "has 1 entries"),
            ("{\"ids\": [1, 2], \"mask\": [0, 2]}", "mask[1]"),
            ("{\"ids\": []}", "empty"),
            ("{\"ids\": [1, 4294967296]}", "ids[1]"),
            ("{\"ids\": [1", "not valid JSON"),
        ] {
            let e = parse_ids_record(line).unwrap_err();
            assert!(e.contains(needle), "{line}: {e}");
        }
    }

    #[test]
    fn file_errors_name_the_line() {
        let dir = std::env::temp_dir().join(format!("plora-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.jsonl");
        std::fs::write(&p, "{\"ids\": [1, 2]}\n\n{\"ids\": \"x\"}\n").unwrap();
        let e = read_ids_jsonl(&p).unwrap_err().to_string();
        assert!(e.contains("d.jsonl:3:"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
