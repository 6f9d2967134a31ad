//! Ids back to text. Each token's bytes are precomputed once ([`Pieces`]); a [`Decoder`]
//! joins them and hands out only complete UTF-8, holding back the start of a character that
//! the next token will finish (byte-fallback and byte-level tokens split characters).
//!
//! Rules (llama.cpp `token_to_piece`/`detokenize`, and SentencePiece's decoder):
//! - SentencePiece: `▁` becomes a space; `<0xNN>` is the byte; when `add_space_prefix` is set,
//!   the space the encoder put in front of the text is dropped again — at the start, and after
//!   each control token, where the encoder adds it;
//! - byte-level BPE: each character stands for one byte (GPT-2's table);
//! - user-defined tokens are their text; control and unknown tokens are their text only when
//!   special tokens are rendered, otherwise nothing; unused and undefined slots are nothing.
//!
//! Bytes that can never become valid UTF-8 come out as U+FFFD.

use super::bpe::Bpe;
use super::vocab::{ModelKind, TokenType, Vocab};
use super::Tokenizer;
use crate::error::{Result, TokenizerError};

/// The bytes of every token.
#[derive(Clone, Debug)]
pub struct Pieces {
    bytes: Vec<u8>,
    /// `ends[i]` is where token i's bytes end; they start at `ends[i - 1]`.
    ends: Vec<u32>,
    /// Control or unknown: rendered only on request.
    special: Vec<bool>,
}

impl Pieces {
    pub fn new(vocab: &Vocab) -> Pieces {
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(vocab.len());
        let mut special = Vec::with_capacity(vocab.len());
        for id in 0..vocab.len() as u32 {
            let text = vocab.text(id).unwrap_or_default();
            let ty = vocab.token_type(id);
            special.push(matches!(ty, TokenType::Control | TokenType::Unknown));
            match (vocab.kind(), ty) {
                (_, TokenType::Control | TokenType::Unknown | TokenType::UserDefined) => {
                    bytes.extend_from_slice(text.as_bytes())
                }
                (ModelKind::Spm, TokenType::Normal) => {
                    bytes.extend_from_slice(text.replace('\u{2581}', " ").as_bytes())
                }
                (ModelKind::Spm, TokenType::Byte) => match parse_byte_token(text) {
                    Some(b) => bytes.push(b),
                    None => bytes.extend_from_slice(text.as_bytes()),
                },
                (ModelKind::Bpe, TokenType::Normal) => Bpe::decode_text(text, &mut bytes),
                _ => {}
            }
            ends.push(bytes.len() as u32);
        }
        Pieces {
            bytes,
            ends,
            special,
        }
    }

    /// Token `id`'s bytes and whether it is a control/unknown token.
    pub fn get(&self, id: u32) -> Option<(&[u8], bool)> {
        let i = id as usize;
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some((&self.bytes[start..end], self.special[i]))
    }
}

/// `<0xNN>` → the byte.
fn parse_byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Turns ids into text piece by piece, safe to print as each token arrives.
///
/// ```no_run
/// # fn main() -> pocketlora::Result<()> {
/// let tok = pocketlora::internals::tokenizer::Tokenizer::open("assets/aidreams260K-q8_0.gguf")?;
/// let mut dec = tok.decoder();
/// for id in [1, 319, 459] {
///     print!("{}", dec.push(id)?); // complete characters only
/// }
/// print!("{}", dec.finish());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Decoder<'a> {
    tok: &'a Tokenizer,
    pending: Vec<u8>,
    strip_space: bool,
    render_special: bool,
}

impl<'a> Decoder<'a> {
    pub(super) fn new(tok: &'a Tokenizer, render_special: bool) -> Decoder<'a> {
        Decoder {
            tok,
            pending: Vec::new(),
            strip_space: tok.strips_space(),
            render_special,
        }
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        let (bytes, special) = self
            .tok
            .pieces
            .get(id)
            .ok_or(TokenizerError::TokenOutOfRange {
                token: id,
                vocab: self.tok.n_vocab(),
            })?;
        if special {
            if self.render_special {
                self.pending.extend_from_slice(bytes);
            }
            // The encoder puts a space prefix after every special token.
            self.strip_space = self.tok.strips_space();
        } else if !bytes.is_empty() {
            let skip = usize::from(self.strip_space && bytes[0] == b' ');
            self.pending.extend_from_slice(&bytes[skip..]);
            self.strip_space = false;
        }
        Ok(self.take_complete())
    }

    /// Ends the stream: whatever is held back (an unfinished character) as U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }

    /// Bytes held back, waiting for the rest of a character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }
}
