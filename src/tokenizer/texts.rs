//! Token texts stored compactly: all texts in one buffer with each token's end offset, and an
//! open-addressing table of ids hashed by text for the text → id lookup. This is what a
//! `Vec<Box<str>>` plus a `HashMap<Box<str>, u32>` did, in about a quarter of the memory
//! (no allocation per token, no second copy of each text): it matters on a phone and inside a
//! `--budget`, where a 49k vocabulary cost 4 MiB that way.

use std::hash::{BuildHasher, BuildHasherDefault};

use super::vocab::FastHasher;

const EMPTY: u32 = u32::MAX;

/// Token texts, by id and by text.
#[derive(Clone, Debug, Default)]
pub struct TokenTexts {
    text: String,
    /// Where token `i`'s text ends in `text` (it starts where token `i - 1`'s ends).
    ends: Vec<usize>,
    /// Ids, at the slot their text hashes to (linear probing); `EMPTY` where none.
    slots: Vec<u32>,
}

fn hash(s: &str) -> u64 {
    BuildHasherDefault::<FastHasher>::default().hash_one(s)
}

impl TokenTexts {
    /// The texts of ids 0, 1, 2, … in order. When two tokens have the same text, the text's id
    /// is the later one (as a map filled in id order gives).
    pub fn new<S: AsRef<str>>(texts: impl IntoIterator<Item = S>) -> TokenTexts {
        let mut text = String::new();
        let mut ends = Vec::new();
        for t in texts {
            text.push_str(t.as_ref());
            ends.push(text.len());
        }
        text.shrink_to_fit();
        ends.shrink_to_fit();
        // Load factor at most 1/2: short probe sequences.
        let n_slots = (2 * ends.len()).next_power_of_two().max(2);
        let mut out = TokenTexts {
            text,
            ends,
            slots: vec![EMPTY; n_slots],
        };
        for id in 0..out.ends.len() {
            let slot = out.probe(out.get_unchecked(id));
            out.slots[slot] = id as u32;
        }
        out
    }

    /// The slot holding `s`'s id, or the empty slot where it would go.
    #[inline]
    fn probe(&self, s: &str) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = hash(s) as usize & mask;
        loop {
            let id = self.slots[i];
            if id == EMPTY || self.get_unchecked(id as usize) == s {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn get_unchecked(&self, id: usize) -> &str {
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        &self.text[start..self.ends[id]]
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Token `id`'s text.
    #[inline]
    pub fn get(&self, id: usize) -> Option<&str> {
        (id < self.ends.len()).then(|| self.get_unchecked(id))
    }

    /// The id of `text`.
    #[inline]
    pub fn id(&self, text: &str) -> Option<u32> {
        if self.ends.is_empty() {
            return None;
        }
        match self.slots[self.probe(text)] {
            EMPTY => None,
            id => Some(id),
        }
    }

    /// Every text, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.ends.len()).map(|i| self.get_unchecked(i))
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + self.ends.capacity() * std::mem::size_of::<usize>()
            + self.slots.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn lookups_agree_with_a_map() {
        // Texts of every length, shared prefixes, unicode, and duplicates.
        let mut texts: Vec<String> = (0..5000)
            .map(|i| format!("{}{}", "▁ab".repeat(i % 7), i % 1500))
            .collect();
        texts.push(String::new());
        texts.push("ü".into());
        let t = TokenTexts::new(&texts);
        let mut map = HashMap::new();
        for (i, s) in texts.iter().enumerate() {
            map.insert(s.as_str(), i as u32);
        }
        assert_eq!(t.len(), texts.len());
        for (i, s) in texts.iter().enumerate() {
            assert_eq!(t.get(i), Some(s.as_str()));
            assert_eq!(t.id(s), map.get(s.as_str()).copied(), "{s:?}");
        }
        assert_eq!(t.get(texts.len()), None);
        assert_eq!(t.id("not a token"), None);
        assert_eq!(t.iter().count(), texts.len());
        // The later of two equal texts wins, as in a map filled in order.
        let dup = TokenTexts::new(["a", "b", "a"]);
        assert_eq!(dup.id("a"), Some(2));
        assert_eq!(TokenTexts::new(Vec::<&str>::new()).id("a"), None);
    }

    #[test]
    fn a_vocabulary_costs_its_text_and_a_few_bytes_a_token() {
        let texts: Vec<String> = (0..49152).map(|i| format!("tok{i}")).collect();
        let bytes: usize = texts.iter().map(String::len).sum();
        let t = TokenTexts::new(&texts);
        // Text + an 8-byte end + two 4-byte slots a token (at worst 4 slots after rounding).
        assert!(
            t.heap_bytes() <= bytes + texts.len() * (8 + 16),
            "{}",
            t.heap_bytes()
        );
    }
}
