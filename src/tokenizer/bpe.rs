//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`): words from the pre-tokenizer are turned
//! into bytes, each byte into its printable stand-in character (GPT-2's `bytes_to_unicode`),
//! and adjacent symbols are merged lowest rank first, the rank being the position of the pair
//! in `tokenizer.ggml.merges`.
//!
//! The merge loop is the one of llama.cpp's `llm_tokenizer_bpe_session` (and of GPT-2's
//! `encoder.py`): a doubly linked list of symbols and a priority queue of candidate pairs
//! ordered by (rank, position); stale pairs are skipped when popped. Symbols carry vocabulary
//! ids, so a pair is looked up as one integer key. A merge whose two halves are not
//! themselves tokens can never apply to such symbols and is ignored.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

use super::vocab::{FastMap, Vocab};
use crate::error::{Result, TokenizerError};
use crate::gguf::GgufFile;

/// GPT-2's byte → character table: printable Latin-1 bytes stand for themselves, the other 68
/// bytes map in order to U+0100, U+0101, ...
pub fn byte_to_char_table() -> [char; 256] {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        t[b as usize] = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\u{FFFD}');
            n += 1;
            c
        };
    }
    t
}

const fn printable(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The bytes that U+0100 + k stands for, k = 0..68.
const fn shifted_bytes() -> [u8; 68] {
    let mut t = [0u8; 68];
    let mut n = 0;
    let mut b = 0usize;
    while b < 256 {
        if !printable(b as u8) {
            t[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    t
}

static SHIFTED: [u8; 68] = shifted_bytes();

/// The byte a stand-in character represents, if it is one.
pub fn char_to_byte(c: char) -> Option<u8> {
    match c as u32 {
        n @ 0..=0xFF if printable(n as u8) => Some(n as u8),
        n @ 0x100..=0x143 => Some(SHIFTED[(n - 0x100) as usize]),
        _ => None,
    }
}

/// Merge table and byte tokens of a byte-level BPE vocabulary.
#[derive(Clone, Debug)]
pub struct Bpe {
    /// `(left << 32 | right)` → (rank, merged id or `u32::MAX` when the result is no token).
    merges: FastMap<u64, (u32, u32)>,
    /// The token of each byte's stand-in character.
    byte_ids: [Option<u32>; 256],
    byte_chars: [char; 256],
    /// Skip the merges when a whole word is a token (Llama 3).
    ignore_merges: bool,
}

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Sym {
    id: u32,
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

/// A candidate merge: (rank, left, right, left id, right id); smallest first.
type QueuedPair = (u32, u32, u32, u32, u32);

/// Buffers reused across words.
#[derive(Default, Debug)]
pub struct BpeScratch {
    syms: Vec<Sym>,
    queue: BinaryHeap<Reverse<QueuedPair>>,
    word: String,
}

impl Bpe {
    /// Reads `tokenizer.ggml.merges`.
    pub fn from_gguf(f: &GgufFile, vocab: &Vocab, ignore_merges: bool) -> Result<Bpe> {
        let arr = f.get_array("tokenizer.ggml.merges")?;
        let mut merges: FastMap<u64, (u32, u32)> = FastMap::default();
        merges.reserve(arr.len());
        let mut joined = String::new();
        for rank in 0..arr.len() {
            let m = arr.str_at(rank).ok_or_else(|| TokenizerError::ArrayItem {
                key: "tokenizer.ggml.merges",
                index: rank,
                expected: "a string",
                found: arr.get(rank).map_or_else(String::new, |v| v.describe()),
            })?;
            // The first space after the first byte separates the halves (llama.cpp).
            let Some(sp) = m.bytes().skip(1).position(|b| b == b' ').map(|i| i + 1) else {
                return Err(TokenizerError::BadMerge {
                    index: rank,
                    merge: m.to_owned(),
                }
                .into());
            };
            let (a, b) = (&m[..sp], &m[sp + 1..]);
            let (Some(ia), Some(ib)) = (vocab.id(a), vocab.id(b)) else {
                continue;
            };
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            let merged = vocab.id(&joined).unwrap_or(NONE);
            merges
                .entry(u64::from(ia) << 32 | u64::from(ib))
                .or_insert((rank as u32, merged));
        }
        let byte_chars = byte_to_char_table();
        let mut byte_ids = [None; 256];
        let mut buf = [0u8; 4];
        for (b, id) in byte_ids.iter_mut().enumerate() {
            *id = vocab.id(byte_chars[b].encode_utf8(&mut buf));
        }
        Ok(Bpe {
            merges,
            byte_ids,
            byte_chars,
            ignore_merges,
        })
    }

    /// Appends the tokens of one pre-tokenized word `text[word]` (and, if asked, their byte
    /// ranges in `text`).
    pub fn encode_word(
        &self,
        vocab: &Vocab,
        text: &str,
        word: Range<usize>,
        s: &mut BpeScratch,
        out: &mut Vec<u32>,
        mut offsets: Option<&mut Vec<Range<usize>>>,
    ) {
        let bytes = &text.as_bytes()[word.clone()];
        if bytes.is_empty() {
            return;
        }
        if self.ignore_merges && bytes.len() > 1 {
            s.word.clear();
            s.word
                .extend(bytes.iter().map(|&b| self.byte_chars[b as usize]));
            if let Some(id) = vocab.id(&s.word) {
                out.push(id);
                if let Some(o) = offsets.as_deref_mut() {
                    o.push(word);
                }
                return;
            }
        }
        let n = bytes.len() as u32;
        s.syms.clear();
        s.syms.extend(bytes.iter().enumerate().map(|(i, &b)| {
            let i = i as u32;
            Sym {
                id: self.byte_ids[b as usize].unwrap_or(NONE),
                start: i,
                len: 1,
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
            }
        }));
        s.queue.clear();
        for i in 1..n {
            self.push_pair(s, i - 1, i);
        }
        while let Some(Reverse((_, left, right, lid, rid))) = s.queue.pop() {
            let (l, r) = (s.syms[left as usize], s.syms[right as usize]);
            if l.len == 0 || r.len == 0 || l.id != lid || r.id != rid {
                continue;
            }
            let key = u64::from(lid) << 32 | u64::from(rid);
            let Some(&(_, merged)) = self.merges.get(&key) else {
                continue;
            };
            let ls = &mut s.syms[left as usize];
            ls.len += r.len;
            ls.id = merged;
            ls.next = r.next;
            s.syms[right as usize].len = 0;
            if r.next != NONE {
                s.syms[r.next as usize].prev = left;
            }
            let (prev, next) = (l.prev, r.next);
            if prev != NONE {
                self.push_pair(s, prev, left);
            }
            if next != NONE {
                self.push_pair(s, left, next);
            }
        }
        let mut i = 0u32;
        while i != NONE {
            let sym = s.syms[i as usize];
            let range =
                word.start + sym.start as usize..word.start + (sym.start + sym.len) as usize;
            if sym.id != NONE {
                out.push(sym.id);
                if let Some(o) = offsets.as_deref_mut() {
                    o.push(range);
                }
            } else {
                // Not a token (a broken vocabulary): fall back to the bytes that are.
                for (k, &b) in text.as_bytes()[range.clone()].iter().enumerate() {
                    if let Some(id) = self.byte_ids[b as usize] {
                        out.push(id);
                        if let Some(o) = offsets.as_deref_mut() {
                            o.push(range.start + k..range.start + k + 1);
                        }
                    }
                }
            }
            i = sym.next;
        }
    }

    #[inline]
    fn push_pair(&self, s: &mut BpeScratch, left: u32, right: u32) {
        let (lid, rid) = (s.syms[left as usize].id, s.syms[right as usize].id);
        if lid == NONE || rid == NONE {
            return;
        }
        if let Some(&(rank, _)) = self.merges.get(&(u64::from(lid) << 32 | u64::from(rid))) {
            s.queue.push(Reverse((rank, left, right, lid, rid)));
        }
    }

    /// The bytes a byte-level token text stands for (characters outside the table are kept
    /// as their UTF-8).
    pub fn decode_text(text: &str, out: &mut Vec<u8>) {
        let mut buf = [0u8; 4];
        for c in text.chars() {
            match char_to_byte(c) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection() {
        let t = byte_to_char_table();
        assert_eq!(t[b'A' as usize], 'A');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(t[b as usize]), Some(b));
        }
        assert_eq!(char_to_byte('€'), None);
    }
}
