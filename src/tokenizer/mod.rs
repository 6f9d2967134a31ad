//! Text ↔ token ids, exactly as the model was trained: the tokenizer described by a GGUF
//! file's `tokenizer.ggml.*` metadata, with llama.cpp's behaviour as the reference.
//!
//! - [`Tokenizer::from_gguf`] reads the vocabulary ([`vocab`]) and builds either a
//!   SentencePiece BPE tokenizer ([`spm`], `tokenizer.ggml.model = "llama"`) or a byte-level
//!   BPE tokenizer ([`bpe`], `"gpt2"`) with the pre-tokenizer named by `tokenizer.ggml.pre`
//!   ([`pretok`]). Vocabulary-only files (no tensors) work.
//! - [`Tokenizer::encode`] cuts special tokens out of the text first ([`special`]), tokenizes
//!   the rest, and adds BOS/EOS as `tokenizer.ggml.add_bos_token`/`add_eos_token` say.
//! - [`Tokenizer::decode`] and the streaming [`Decoder`] turn ids back into text
//!   ([`decode`]); `decode(encode(s)) == s` for every string `s` when special tokens are not
//!   parsed (the SentencePiece space prefix is dropped again).
//! - [`chat`] renders conversations with the model's chat template and marks the assistant's
//!   tokens for training.
//!
//! ```
//! use pocketlora::internals::tokenizer::Tokenizer;
//! let tok = Tokenizer::open("assets/aidreams260K-q8_0.gguf")?;
//! let ids = tok.encode("Echoes of vectors", true, false);
//! assert_eq!(ids[0], tok.bos().unwrap());
//! assert_eq!(tok.decode(&ids)?, "Echoes of vectors");
//! # Ok::<(), pocketlora::Error>(())
//! ```

pub mod bpe;
pub mod chat;
pub mod decode;
pub mod pretok;
pub mod special;
pub mod spm;
pub mod texts;
pub mod unicode;
mod unicode_tables;
pub mod vocab;

use std::cell::RefCell;
use std::ops::Range;
use std::path::Path;

pub use decode::Decoder;
pub use pretok::PreTokenizer;
pub use vocab::{ModelKind, SpecialIds, TokenType, Vocab};

use crate::error::{Result, TokenizerError};
use crate::gguf::GgufFile;
use bpe::{Bpe, BpeScratch};
use decode::Pieces;
use pretok::SplitScratch;
use special::{Fragment, Specials};
use spm::SpmScratch;

#[derive(Clone, Debug)]
enum Algo {
    Spm {
        byte_ids: Box<[Option<u32>; 256]>,
        split_on_space: bool,
    },
    Bpe {
        bpe: Box<Bpe>,
        pre: PreTokenizer,
    },
}

/// A model's tokenizer. Cheap to share (`&Tokenizer` is all encoding and decoding need).
#[derive(Clone, Debug)]
pub struct Tokenizer {
    vocab: Vocab,
    algo: Algo,
    specials: Specials,
    pieces: Pieces,
}

#[derive(Default)]
struct Scratch {
    frags: Vec<Fragment>,
    words: Vec<Range<usize>>,
    split: SplitScratch,
    bpe: BpeScratch,
    spm: SpmScratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes.
    ///
    /// Errors: a missing or mistyped key, an unknown `tokenizer.ggml.model`, an unknown
    /// `tokenizer.ggml.pre` (the error names it and lists the known ones), arrays whose length
    /// does not match the vocabulary, and `add_bos_token`/`add_eos_token` without the token.
    pub fn from_gguf(f: &GgufFile) -> Result<Tokenizer> {
        let vocab = Vocab::from_gguf(f)?;
        let algo = match vocab.kind {
            ModelKind::Spm => Algo::Spm {
                byte_ids: Box::new(spm::byte_tokens(&vocab)),
                split_on_space: spm::splits_on_space(&vocab),
            },
            ModelKind::Bpe => {
                let name = vocab.pre.as_deref();
                let pre =
                    PreTokenizer::from_name(name).ok_or_else(|| TokenizerError::UnknownPre {
                        pre: name.unwrap_or_default().to_owned(),
                        known: pretok::NAMES
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                let bpe = Bpe::from_gguf(f, &vocab, PreTokenizer::ignores_merges(name))?;
                Algo::Bpe {
                    bpe: Box::new(bpe),
                    pre,
                }
            }
        };
        if vocab.add_bos && vocab.special.bos.is_none() {
            return Err(TokenizerError::NoSpecialToken { what: "BOS" }.into());
        }
        if vocab.add_eos && vocab.special.eos.is_none() {
            return Err(TokenizerError::NoSpecialToken { what: "EOS" }.into());
        }
        let specials = Specials::new(&vocab);
        let pieces = Pieces::new(&vocab);
        Ok(Tokenizer {
            vocab,
            algo,
            specials,
            pieces,
        })
    }

    /// Opens a GGUF file (model or vocabulary only) and builds its tokenizer.
    pub fn open(path: impl AsRef<Path>) -> Result<Tokenizer> {
        Tokenizer::from_gguf(&GgufFile::open(path)?)
    }

    /// Text → ids. `add_special` adds BOS/EOS as the model asks (`add_bos_token`,
    /// `add_eos_token`); `parse_special` lets control tokens written in the text (`<s>`,
    /// `<|im_start|>`, ...) become those tokens — otherwise they are tokenized as plain text.
    /// User-defined tokens are always recognised.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut ids = Vec::new();
        self.encode_into(text, add_special, parse_special, &mut ids, None);
        ids
    }

    /// Like [`Tokenizer::encode`], with each token's byte range in `text` (BOS/EOS and the
    /// SentencePiece space prefix cover no bytes). Ranges start and end on character
    /// boundaries: byte-fallback tokens and byte-level BPE pieces of one character share its
    /// range (so neighbouring ranges can overlap by that character).
    pub fn encode_with_offsets(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> (Vec<u32>, Vec<Range<usize>>) {
        let mut ids = Vec::new();
        let mut offs = Vec::new();
        self.encode_into(text, add_special, parse_special, &mut ids, Some(&mut offs));
        (ids, offs)
    }

    fn encode_into(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
        out: &mut Vec<u32>,
        mut offs: Option<&mut Vec<Range<usize>>>,
    ) {
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let s = &mut *guard;
            let v = &self.vocab;
            fn push_special(
                out: &mut Vec<u32>,
                offs: Option<&mut Vec<Range<usize>>>,
                id: Option<u32>,
                at: usize,
            ) {
                if let Some(id) = id {
                    out.push(id);
                    if let Some(o) = offs {
                        o.push(at..at);
                    }
                }
            }
            if add_special && v.add_bos {
                push_special(out, offs.as_deref_mut(), v.special.bos, 0);
            }
            self.specials
                .partition(v, text, parse_special, &mut s.frags);
            let mut prev_special = true;
            for frag in &s.frags {
                match frag {
                    Fragment::Token(id, r) => {
                        out.push(*id);
                        if let Some(o) = offs.as_deref_mut() {
                            o.push(r.clone());
                        }
                        prev_special = true;
                    }
                    Fragment::Text(r) => {
                        match &self.algo {
                            Algo::Spm {
                                byte_ids,
                                split_on_space,
                            } => spm::encode(
                                v,
                                byte_ids,
                                v.special.unk,
                                text,
                                r.clone(),
                                v.add_space_prefix && prev_special,
                                *split_on_space,
                                &mut s.spm,
                                out,
                                offs.as_deref_mut(),
                            ),
                            Algo::Bpe { bpe, pre } => {
                                let piece = &text[r.clone()];
                                pre.split(piece, &mut s.split, &mut s.words);
                                for w in &s.words {
                                    let w = r.start + w.start..r.start + w.end;
                                    bpe.encode_word(
                                        v,
                                        text,
                                        w,
                                        &mut s.bpe,
                                        out,
                                        offs.as_deref_mut(),
                                    );
                                }
                            }
                        }
                        prev_special = false;
                    }
                }
            }
            if add_special && v.add_eos {
                push_special(out, offs.as_deref_mut(), v.special.eos, text.len());
            }
            // Byte-level BPE pieces can end inside a character; widen every range to whole
            // characters, so each can slice `text` (pieces of one character share its range).
            if let Some(o) = offs {
                for r in o.iter_mut() {
                    while !text.is_char_boundary(r.start) {
                        r.start -= 1;
                    }
                    while !text.is_char_boundary(r.end) {
                        r.end += 1;
                    }
                }
            }
        })
    }

    /// Ids → text, control tokens left out (see [`decode`] for the rules). Fails on an id
    /// outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_inner(ids, false)
    }

    /// Ids → text with control tokens written out (`<s>`, `<|im_end|>`, ...).
    pub fn decode_with_special(&self, ids: &[u32]) -> Result<String> {
        self.decode_inner(ids, true)
    }

    fn decode_inner(&self, ids: &[u32], special: bool) -> Result<String> {
        let mut d = Decoder::new(self, special);
        let mut out = String::new();
        for &id in ids {
            out.push_str(&d.push(id)?);
        }
        out.push_str(&d.finish());
        Ok(out)
    }

    /// A streaming decoder (control tokens left out).
    pub fn decoder(&self) -> Decoder<'_> {
        Decoder::new(self, false)
    }

    /// A streaming decoder that writes control tokens out.
    pub fn decoder_with_special(&self) -> Decoder<'_> {
        Decoder::new(self, true)
    }

    /// Whether decoding drops the SentencePiece space prefix.
    fn strips_space(&self) -> bool {
        self.vocab.kind == ModelKind::Spm && self.vocab.add_space_prefix
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }

    /// The vocabulary (texts, scores, types).
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// SentencePiece or byte-level BPE.
    pub fn kind(&self) -> ModelKind {
        self.vocab.kind
    }

    /// The pre-tokenizer (byte-level BPE only).
    pub fn pre_tokenizer(&self) -> Option<PreTokenizer> {
        match &self.algo {
            Algo::Bpe { pre, .. } => Some(*pre),
            Algo::Spm { .. } => None,
        }
    }

    /// Special ids (BOS, EOS, EOT, EOM, UNK, PAD).
    pub fn special_ids(&self) -> &SpecialIds {
        &self.vocab.special
    }

    /// Beginning-of-sequence id.
    pub fn bos(&self) -> Option<u32> {
        self.vocab.special.bos
    }

    /// End-of-sequence id.
    pub fn eos(&self) -> Option<u32> {
        self.vocab.special.eos
    }

    /// Whether [`Tokenizer::encode`] with `add_special` puts BOS first.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    /// Whether [`Tokenizer::encode`] with `add_special` puts EOS last.
    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }

    /// Whether SentencePiece encoding puts a space in front of the text.
    pub fn add_space_prefix(&self) -> bool {
        self.vocab.add_space_prefix
    }

    /// Whether `id` ends generation: EOS, EOT, EOM, and the end-of-turn tokens llama.cpp
    /// recognises by their text (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.vocab.eog
    }

    /// A token's text as stored in the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.text(id)
    }

    /// The id of a token text (exact match).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }
}
