//! Reading a data file of any supported format into token records, with errors that name
//! the file and line (or skip and count bad lines when asked).

use std::path::Path;

use super::encode::{EncodeOptions, Encoder};
use super::raw::{parse_line, split_documents, DataFormat, RawRecord};
use super::TokenRecord;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::tokenizer::chat::ChatTemplate;
use crate::tokenizer::Tokenizer;
use crate::util::rng::SplitMix64;

/// How to read a data file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    pub encode: EncodeOptions,
    /// Skip malformed lines (and count them) instead of failing.
    pub skip_bad_lines: bool,
}

/// The records of a data file.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub format: DataFormat,
    pub records: Vec<TokenRecord>,
    /// The line each record begins on.
    pub lines: Vec<usize>,
    /// Lines skipped with `skip_bad_lines`: (line number, reason).
    pub skipped: Vec<(usize, String)>,
}

/// Reads `path`. Text formats need the model's tokenizer (`tok`); chat records its
/// template.
pub fn load_dataset(
    path: &Path,
    tok: Option<&Tokenizer>,
    chat: Option<&ChatTemplate>,
    opts: LoadOptions,
) -> Result<Dataset> {
    let text = read_text(path)?;
    parse_dataset(path, &text, tok, chat, opts)
}

/// Reads `path` as UTF-8 text; bytes that are not UTF-8 are a data error naming the line
/// and the byte offset.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let b = e.as_bytes();
        let line = 1 + b[..at].iter().filter(|&&c| c == b'\n').count();
        let col = at - b[..at].iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1) + 1;
        Error::Data {
            path: path.into(),
            line,
            msg: format!(
                "not valid UTF-8 at byte offset {at} (column {col}, byte 0x{:02x}); save the file as UTF-8",
                b[at]
            ),
        }
    })
}

/// [`load_dataset`] with the tokenizer and chat template of the model in `file`, built
/// only when the records need them (token-id files need neither, and building a large
/// vocabulary's tokenizer costs memory).
pub fn load_for_model(path: &Path, file: &GgufFile, opts: LoadOptions) -> Result<Dataset> {
    let text = read_text(path)?;
    let is_txt = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("txt"));
    let ids_only = !is_txt
        && text
            .lines()
            .find(|l| !l.trim().is_empty())
            .is_some_and(|l| DataFormat::detect(l) == Ok(DataFormat::Ids));
    let (tok, chat) = if ids_only {
        (None, None)
    } else {
        (
            Tokenizer::from_gguf(file).ok(),
            ChatTemplate::from_gguf(file).ok(),
        )
    };
    parse_dataset(path, &text, tok.as_ref(), chat.as_ref(), opts)
}

/// [`load_dataset`] over text already read: `path` names the file in errors and its
/// extension (`.txt` or not) picks plain text or JSONL.
pub fn parse_dataset(
    path: &Path,
    text: &str,
    tok: Option<&Tokenizer>,
    chat: Option<&ChatTemplate>,
    opts: LoadOptions,
) -> Result<Dataset> {
    let bad = |line: usize, msg: String| Error::Data {
        path: path.into(),
        line,
        msg,
    };
    let is_txt = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("txt"));
    let mut lines: Vec<(usize, RawRecord)> = Vec::new();
    let mut skipped = Vec::new();
    let format = if is_txt {
        lines.extend(
            split_documents(text)
                .into_iter()
                .map(|(n, d)| (n, RawRecord::Text(d))),
        );
        DataFormat::PlainText
    } else {
        let mut format = None;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let fmt = match format {
                Some(f) => f,
                None => match DataFormat::detect(line) {
                    Ok(f) => *format.insert(f),
                    Err(msg) if opts.skip_bad_lines => {
                        skipped.push((i + 1, msg));
                        continue;
                    }
                    Err(msg) => return Err(bad(i + 1, msg)),
                },
            };
            match parse_line(line, fmt) {
                Ok(r) => lines.push((i + 1, r)),
                Err(msg) if opts.skip_bad_lines => skipped.push((i + 1, msg)),
                Err(msg) => return Err(bad(i + 1, msg)),
            }
        }
        format.unwrap_or(DataFormat::Ids)
    };
    let needs_tok = !matches!(format, DataFormat::Ids);
    let tok = match (needs_tok, tok) {
        (false, _) => None,
        (true, Some(t)) => Some(t),
        (true, None) => {
            return Err(Error::InvalidArgument(format!(
                "{}: {} records need the model's tokenizer, and the model has none",
                path.display(),
                format.name()
            )))
        }
    };
    let mut records = Vec::with_capacity(lines.len());
    let mut record_lines = Vec::with_capacity(lines.len());
    for (n, raw) in &lines {
        let rec = match (&raw, tok) {
            (RawRecord::Ids(r), _) => Ok(r.clone()),
            (_, Some(t)) => Encoder {
                tok: t,
                chat,
                opts: opts.encode,
            }
            .encode(raw),
            // Not reached: a text format without a tokenizer was refused above.
            (_, None) => Err("this record needs the model's tokenizer".to_string()),
        };
        match rec {
            Ok(r) => {
                records.push(r);
                record_lines.push(*n);
            }
            Err(msg) if opts.skip_bad_lines => skipped.push((*n, msg)),
            Err(msg) => return Err(bad(*n, msg)),
        }
    }
    Ok(Dataset {
        format,
        records,
        lines: record_lines,
        skipped,
    })
}

/// Which of `n` records a validation split of `fraction` holds out: a seeded sample of
/// ⌈fraction·n⌉ (at least one, and at least one left to train on when n ≥ 2).
pub fn held_out(n: usize, fraction: f64, seed: u64) -> Vec<bool> {
    let k = ((n as f64 * fraction).ceil() as usize).clamp(1, n.saturating_sub(1).max(1));
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(seed ^ 0x5EED_5EED);
    for i in (1..n).rev() {
        idx.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let mut held = vec![false; n];
    idx[..k.min(n)].iter().for_each(|&i| held[i] = true);
    held
}

/// Splits `records` as [`held_out`] says: returns (training, validation), each in file
/// order.
pub fn hold_out(
    records: Vec<TokenRecord>,
    fraction: f64,
    seed: u64,
) -> (Vec<TokenRecord>, Vec<TokenRecord>) {
    let held = held_out(records.len(), fraction, seed);
    let (v, t): (Vec<_>, Vec<_>) = records.into_iter().enumerate().partition(|(i, _)| held[*i]);
    (
        t.into_iter().map(|(_, r)| r).collect(),
        v.into_iter().map(|(_, r)| r).collect(),
    )
}
