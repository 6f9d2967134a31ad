//! Special tokens in text: before the model's tokenizer runs, the text is cut at every
//! occurrence of a user-defined token, and — when the caller asks to parse special tokens —
//! of every control and unknown token (llama.cpp `tokenizer_st_partition`).
//!
//! Tokens are searched longest first (ties by id); each takes its leftmost non-overlapping
//! occurrences in the text not yet claimed by a longer one. Instead of one pass over the text
//! per special token, all occurrences are found in a single scan (candidates bucketed by first
//! byte) and then claimed in that priority order, which gives the same cut.

use std::collections::BTreeMap;
use std::ops::Range;

use super::vocab::{TokenType, Vocab};

/// A piece of the input: text for the tokenizer, or a special token found in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fragment {
    Text(Range<usize>),
    Token(u32, Range<usize>),
}

/// The special tokens of a vocabulary, ready for matching.
#[derive(Clone, Debug)]
pub struct Specials {
    /// Per first byte: (priority, id, is user-defined).
    by_first: Vec<Vec<(u32, u32, bool)>>,
    any_user_defined: bool,
    any: bool,
}

impl Specials {
    pub fn new(vocab: &Vocab) -> Specials {
        let mut by_first = vec![Vec::new(); 256];
        let mut any_user_defined = false;
        for (rank, &id) in vocab.specials.iter().enumerate() {
            let Some(text) = vocab.text(id) else { continue };
            let Some(&b) = text.as_bytes().first() else {
                continue;
            };
            let user = vocab.token_type(id) == TokenType::UserDefined;
            any_user_defined |= user;
            by_first[b as usize].push((rank as u32, id, user));
        }
        let any = by_first.iter().any(|v| !v.is_empty());
        Specials {
            by_first,
            any_user_defined,
            any,
        }
    }

    /// Cuts `text` into fragments (appended to `out`).
    pub fn partition(
        &self,
        vocab: &Vocab,
        text: &str,
        parse_special: bool,
        out: &mut Vec<Fragment>,
    ) {
        out.clear();
        if text.is_empty() {
            return;
        }
        if !self.any || !(parse_special || self.any_user_defined) {
            out.push(Fragment::Text(0..text.len()));
            return;
        }
        let bytes = text.as_bytes();
        // (priority, start, end, id)
        let mut occ: Vec<(u32, usize, usize, u32)> = Vec::new();
        for (i, &b) in bytes.iter().enumerate() {
            for &(rank, id, user) in &self.by_first[b as usize] {
                if !(parse_special || user) {
                    continue;
                }
                let piece = vocab.text(id).unwrap_or_default().as_bytes();
                if bytes[i..].starts_with(piece) {
                    occ.push((rank, i, i + piece.len(), id));
                }
            }
        }
        if occ.is_empty() {
            out.push(Fragment::Text(0..text.len()));
            return;
        }
        occ.sort_unstable();
        let mut taken: BTreeMap<usize, (usize, u32)> = BTreeMap::new();
        for (_, start, end, id) in occ {
            let clash_before = taken
                .range(..=start)
                .next_back()
                .is_some_and(|(_, &(e, _))| e > start);
            let clash_after = taken.range(start..).next().is_some_and(|(&s, _)| s < end);
            if !clash_before && !clash_after {
                taken.insert(start, (end, id));
            }
        }
        let mut pos = 0;
        for (start, (end, id)) in taken {
            if start > pos {
                out.push(Fragment::Text(pos..start));
            }
            out.push(Fragment::Token(id, start..end));
            pos = end;
        }
        if pos < text.len() {
            out.push(Fragment::Text(pos..text.len()));
        }
    }
}
