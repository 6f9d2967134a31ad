//! `pocketlora tokenize`: text → token ids with the model's own tokenizer.

use std::io::Write;
use std::path::PathBuf;

use clap::{ArgGroup, Args};

use pocketlora::GgufFile;
use pocketlora::Tokenizer;
use pocketlora::{Error, Result, TokenizerError};

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["text", "file"])))]
pub struct TokenizeArgs {
    /// GGUF model or vocabulary-only file.
    #[arg(long)]
    model: PathBuf,
    /// The text to tokenize.
    #[arg(long)]
    text: Option<String>,
    /// A UTF-8 file whose whole content is tokenized.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Print {"ids": [...], "pieces": [...]} instead of bare ids.
    #[arg(long)]
    json: bool,
    /// Put the model's BOS token first.
    #[arg(long)]
    bos: bool,
    /// Turn control tokens written in the text (<s>, <|im_start|>, ...) into those tokens.
    #[arg(long)]
    parse_special: bool,
}

pub fn run(a: TokenizeArgs) -> Result<()> {
    let text = match (&a.text, &a.file) {
        (Some(t), _) => t.clone(),
        (None, Some(p)) => {
            let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
            String::from_utf8(bytes).map_err(|e| Error::Data {
                path: p.clone(),
                line: 0,
                msg: format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            })?
        }
        (None, None) => return Err(Error::InvalidArgument("give --text or --file".into())),
    };
    let f = GgufFile::open(&a.model)?;
    let tok = Tokenizer::from_gguf(&f)?;
    let mut ids = Vec::new();
    if a.bos {
        ids.push(
            tok.bos()
                .ok_or(TokenizerError::NoSpecialToken { what: "BOS" })?,
        );
    }
    ids.extend(tok.encode(&text, false, a.parse_special));
    let line = if a.json {
        let pieces: Vec<&str> = ids
            .iter()
            .map(|&id| tok.token_text(id).unwrap_or_default())
            .collect();
        serde_json::json!({ "ids": ids, "pieces": pieces }).to_string()
    } else {
        ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").map_err(|e| Error::io("<stdout>", e))?;
    Ok(())
}
