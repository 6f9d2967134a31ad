//! The vocabulary as a GGUF file describes it: token texts, scores and types, special ids,
//! the `add_bos`/`add_eos`/`add_space_prefix` flags, and the end-of-generation set.
//!
//! Keys read (llama.cpp's `llama_vocab::load` is the reference for defaults and fallbacks):
//! `tokenizer.ggml.model`, `.tokens`, `.scores`, `.token_type`, `.bos_token_id`,
//! `.eos_token_id`, `.eot_token_id`, `.eom_token_id`, `.unknown_token_id`, `.padding_token_id`,
//! `.fim_{pad,rep,sep}_token_id`, `.add_bos_token`, `.add_eos_token`, `.add_space_prefix`.
//!
//! Differences from llama.cpp, on purpose: a byte-level BPE vocabulary without BOS/EOS keys has
//! no BOS/EOS (llama.cpp falls back to id 11, a GPT-2 artefact); special ids outside the
//! vocabulary are ignored with the default kept, as llama.cpp does, but silently.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::error::{Result, TokenizerError};
use crate::gguf::{GgufFile, Value};

use super::texts::TokenTexts;

/// A token's type, as `tokenizer.ggml.token_type` stores it (llama.cpp `llama_token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenType {
    /// 0, or any value not listed here.
    Undefined = 0,
    /// 1: ordinary text.
    Normal = 1,
    /// 2: the unknown token (`<unk>`).
    Unknown = 2,
    /// 3: control tokens (BOS, EOS, `<|im_start|>`, ...): never produced from text unless
    /// special tokens are parsed, rendered as nothing by [`super::Tokenizer::decode`].
    Control = 3,
    /// 4: user-defined tokens: always matched in text before the model's tokenizer runs.
    UserDefined = 4,
    /// 5: unused slots.
    Unused = 5,
    /// 6: byte-fallback tokens `<0xNN>` (SentencePiece).
    Byte = 6,
}

impl TokenType {
    fn from_i64(v: i64) -> TokenType {
        match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }
}

/// Which algorithm turns text into tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// `tokenizer.ggml.model = "llama"`: SentencePiece BPE, merges by score, byte fallback.
    Spm,
    /// `tokenizer.ggml.model = "gpt2"`: byte-level BPE with merge ranks and a pre-tokenizer.
    Bpe,
}

/// FNV-1a style hasher, multiply-mixed: vocabulary keys are short strings and id pairs, and
/// the std SipHash costs more than the lookups it guards. Not DoS-resistant, which is fine for
/// a table built once from the model file.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h ^ u64::from_le_bytes(w))
                .wrapping_mul(0x100_0000_01b3)
                .rotate_left(23);
        }
        for &b in chunks.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 31)
    }
}

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Token texts ending a turn; llama.cpp marks them end-of-generation (and control) by text.
const EOG_TEXTS: [&str; 12] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];
/// Texts that identify the end-of-turn token when `eot_token_id` is absent.
const EOT_TEXTS: [&str; 9] = [
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const FIM_PAD_TEXTS: [&str; 4] = ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>"];
const FIM_REP_TEXTS: [&str; 5] = [
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: [&str; 1] = ["<|file_sep|>"];

/// Special ids of a vocabulary (`None` when the model has none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
}

/// The vocabulary and its flags.
#[derive(Clone, Debug)]
pub struct Vocab {
    pub(super) kind: ModelKind,
    pub(super) pre: Option<String>,
    texts: TokenTexts,
    scores: Vec<f32>,
    types: Vec<TokenType>,
    pub(super) special: SpecialIds,
    pub(super) add_bos: bool,
    pub(super) add_eos: bool,
    pub(super) add_space_prefix: bool,
    /// Sorted, deduplicated end-of-generation ids.
    pub(super) eog: Vec<u32>,
    /// Control, user-defined and unknown tokens, longest text first (ties by id): the order
    /// in which they are searched for in text.
    pub(super) specials: Vec<u32>,
}

fn str_array<'a>(f: &'a GgufFile, key: &'static str) -> Result<Vec<&'a str>> {
    let arr = f.get_array(key)?;
    (0..arr.len())
        .map(|i| {
            arr.str_at(i).ok_or_else(|| {
                TokenizerError::ArrayItem {
                    key,
                    index: i,
                    expected: "a string",
                    found: arr.get(i).map_or_else(String::new, |v| v.describe()),
                }
                .into()
            })
        })
        .collect()
}

fn opt_numbers<T>(
    f: &GgufFile,
    key: &'static str,
    n: usize,
    conv: impl Fn(&Value) -> Option<T>,
    expected: &'static str,
) -> Result<Option<Vec<T>>> {
    let Some(arr) = f.opt_array(key)? else {
        return Ok(None);
    };
    if arr.len() != n {
        return Err(TokenizerError::ArrayLength {
            key,
            expected: n,
            found: arr.len(),
        }
        .into());
    }
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            conv(&v).ok_or_else(|| {
                TokenizerError::ArrayItem {
                    key,
                    index: i,
                    expected,
                    found: v.describe(),
                }
                .into()
            })
        })
        .collect::<Result<Vec<T>>>()
        .map(Some)
}

impl Vocab {
    /// Reads the vocabulary of a GGUF file (a full model or a vocabulary-only file).
    pub fn from_gguf(f: &GgufFile) -> Result<Vocab> {
        let model = f.get_str("tokenizer.ggml.model")?;
        let kind = match model {
            "llama" => ModelKind::Spm,
            "gpt2" => ModelKind::Bpe,
            other => {
                return Err(TokenizerError::UnknownModel {
                    model: other.to_owned(),
                }
                .into())
            }
        };
        let pre = f.opt_str("tokenizer.ggml.pre")?.map(str::to_owned);
        let raw = str_array(f, "tokenizer.ggml.tokens")?;
        let n = raw.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab.into());
        }
        if n as u64 > crate::model::MAX_VOCAB {
            return Err(TokenizerError::VocabTooLarge {
                n,
                limit: crate::model::MAX_VOCAB,
            }
            .into());
        }
        let scores = opt_numbers(
            f,
            "tokenizer.ggml.scores",
            n,
            |v| v.as_f64().map(|x| x as f32),
            "a number",
        )?
        .unwrap_or_else(|| vec![0.0; n]);
        let types = opt_numbers(
            f,
            "tokenizer.ggml.token_type",
            n,
            |v| v.as_i64().map(TokenType::from_i64),
            "an integer",
        )?
        .unwrap_or_else(|| vec![TokenType::Normal; n]);

        // llama.cpp names empty pieces so that they stay addressable and never match text.
        let texts = TokenTexts::new(raw.iter().enumerate().map(|(i, t)| {
            if t.is_empty() {
                std::borrow::Cow::Owned(format!("[EMPTY_{i}]"))
            } else {
                std::borrow::Cow::Borrowed(*t)
            }
        }));

        let mut v = Vocab {
            kind,
            pre,
            texts,
            scores,
            types,
            special: SpecialIds::default(),
            add_bos: false,
            add_eos: false,
            add_space_prefix: false,
            eog: Vec::new(),
            specials: Vec::new(),
        };
        v.read_flags(f)?;
        v.read_special_ids(f)?;
        v.build_special_list();
        Ok(v)
    }

    fn read_flags(&mut self, f: &GgufFile) -> Result<()> {
        match self.kind {
            ModelKind::Spm => {
                self.add_bos = true;
                self.add_space_prefix = true;
            }
            ModelKind::Bpe => {
                // llama.cpp turns BOS on for the Llama 3 family (and tekken, chameleon).
                self.add_bos = matches!(
                    self.pre.as_deref(),
                    Some(
                        "llama3"
                            | "llama-v3"
                            | "llama-bpe"
                            | "falcon3"
                            | "falcon-h1"
                            | "pixtral"
                            | "midm-2.0"
                            | "lfm2"
                    )
                );
            }
        }
        if let Some(b) = f.opt_bool("tokenizer.ggml.add_bos_token")? {
            self.add_bos = b;
        }
        if let Some(b) = f.opt_bool("tokenizer.ggml.add_eos_token")? {
            self.add_eos = b;
        }
        if let Some(b) = f.opt_bool("tokenizer.ggml.add_space_prefix")? {
            self.add_space_prefix = b;
        }
        Ok(())
    }

    fn read_special_ids(&mut self, f: &GgufFile) -> Result<()> {
        let n = self.texts.len() as u64;
        let key = |k: &str| -> Result<Option<u32>> {
            Ok(f.opt_u64(k)?.filter(|&id| id < n).map(|id| id as u32))
        };
        let mut s = match self.kind {
            ModelKind::Spm => SpecialIds {
                bos: Some(1),
                eos: Some(2),
                unk: Some(0),
                ..SpecialIds::default()
            },
            ModelKind::Bpe => SpecialIds::default(),
        };
        let set = |slot: &mut Option<u32>, v: Option<u32>| {
            if v.is_some() {
                *slot = v;
            }
        };
        set(&mut s.bos, key("tokenizer.ggml.bos_token_id")?);
        set(&mut s.eos, key("tokenizer.ggml.eos_token_id")?);
        set(&mut s.eot, key("tokenizer.ggml.eot_token_id")?);
        set(&mut s.eom, key("tokenizer.ggml.eom_token_id")?);
        set(&mut s.unk, key("tokenizer.ggml.unknown_token_id")?);
        set(&mut s.pad, key("tokenizer.ggml.padding_token_id")?);
        // Defaults that point past a tiny vocabulary are dropped.
        for slot in [&mut s.bos, &mut s.eos, &mut s.unk] {
            if slot.is_some_and(|id| u64::from(id) >= n) {
                *slot = None;
            }
        }
        let mut fim_pad = key("tokenizer.ggml.fim_pad_token_id")?;
        let mut fim_rep = key("tokenizer.ggml.fim_rep_token_id")?;
        let mut fim_sep = key("tokenizer.ggml.fim_sep_token_id")?;

        // Detection by text, in id order (llama.cpp iterates a hash map; for a vocabulary
        // with one such token per role the order does not matter).
        let mut eog: Vec<u32> = Vec::new();
        for (id, t) in self.texts.iter().enumerate() {
            let id = id as u32;
            if s.eot.is_none() && EOT_TEXTS.contains(&t) {
                s.eot = Some(id);
                self.types[id as usize] = TokenType::Control;
            }
            if s.eom.is_none() && t == "<|eom_id|>" {
                s.eom = Some(id);
                self.types[id as usize] = TokenType::Control;
            }
            if fim_pad.is_none() && FIM_PAD_TEXTS.contains(&t) {
                fim_pad = Some(id);
                self.types[id as usize] = TokenType::Control;
            }
            if fim_rep.is_none() && FIM_REP_TEXTS.contains(&t) {
                fim_rep = Some(id);
                self.types[id as usize] = TokenType::Control;
            }
            if fim_sep.is_none() && FIM_SEP_TEXTS.contains(&t) {
                fim_sep = Some(id);
                self.types[id as usize] = TokenType::Control;
            }
            if EOG_TEXTS.contains(&t) {
                eog.push(id);
                self.types[id as usize] = TokenType::Control;
            }
        }
        eog.extend(
            [fim_pad, fim_rep, fim_sep, s.eos, s.eot, s.eom]
                .into_iter()
                .flatten(),
        );
        eog.sort_unstable();
        eog.dedup();
        self.eog = eog;
        self.special = s;
        Ok(())
    }

    fn build_special_list(&mut self) {
        let mut sp: Vec<u32> = (0..self.texts.len() as u32)
            .filter(|&id| {
                matches!(
                    self.types[id as usize],
                    TokenType::Control | TokenType::UserDefined | TokenType::Unknown
                )
            })
            .collect();
        sp.sort_by(|&a, &b| {
            let len = |id: u32| self.texts.get(id as usize).map_or(0, str::len);
            len(b).cmp(&len(a)).then(a.cmp(&b))
        });
        self.specials = sp;
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether the vocabulary is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The id of a token text.
    #[inline]
    pub fn id(&self, text: &str) -> Option<u32> {
        self.texts.id(text)
    }

    /// The text of a token as stored (`▁` for spaces in SentencePiece vocabularies, byte-level
    /// characters in GPT-2 style ones).
    pub fn text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize)
    }

    /// A token's score (SentencePiece merge priority).
    #[inline]
    pub fn score(&self, id: u32) -> f32 {
        self.scores.get(id as usize).copied().unwrap_or(0.0)
    }

    /// A token's type.
    #[inline]
    pub fn token_type(&self, id: u32) -> TokenType {
        self.types
            .get(id as usize)
            .copied()
            .unwrap_or(TokenType::Undefined)
    }

    /// End-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// The tokenizer algorithm.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }
}
