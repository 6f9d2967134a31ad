//! SentencePiece BPE (`tokenizer.ggml.model = "llama"`): spaces become `▁` (U+2581), an extra
//! `▁` goes in front of the text when `add_space_prefix` is set, the text is cut into UTF-8
//! characters, and adjacent symbols whose concatenation is a token are merged highest score
//! first. What is left that is not a token is spelled with the byte-fallback tokens `<0xNN>`.
//!
//! The algorithm is SentencePiece's `bpe_model.cc` as llama.cpp's `llm_tokenizer_spm_session`
//! runs it: a linked list of symbols and a priority queue of candidate pairs ordered by
//! (score descending, position ascending); a pair whose symbols changed since it was queued is
//! skipped.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Range;

use super::unicode::utf8_len;
use super::vocab::Vocab;

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Sym {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

#[derive(Clone, Copy, Debug)]
struct Pair {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

impl PartialEq for Pair {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pair {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

/// Buffers reused across calls.
#[derive(Default, Debug)]
pub struct SpmScratch {
    text: String,
    /// Escaped byte index → byte offset in the caller's text.
    map: Vec<usize>,
    syms: Vec<Sym>,
    queue: BinaryHeap<Pair>,
}

/// The byte-fallback token of each byte: `<0xNN>`, else the one-byte text itself.
pub fn byte_tokens(vocab: &Vocab) -> [Option<u32>; 256] {
    let mut t = [None; 256];
    for (b, slot) in t.iter_mut().enumerate() {
        *slot = vocab.id(&format!("<0x{b:02X}>")).or_else(|| {
            let s = [b as u8];
            std::str::from_utf8(&s).ok().and_then(|s| vocab.id(s))
        });
    }
    t
}

/// Appends the tokens of `text[frag]`, with a leading `▁` when `prefix` (and, if asked, each
/// token's byte range in `text`; the added `▁` covers no bytes).
#[allow(clippy::too_many_arguments)]
pub fn encode(
    vocab: &Vocab,
    byte_ids: &[Option<u32>; 256],
    unk: Option<u32>,
    text: &str,
    frag: Range<usize>,
    prefix: bool,
    split_on_space: bool,
    s: &mut SpmScratch,
    out: &mut Vec<u32>,
    mut offsets: Option<&mut Vec<Range<usize>>>,
) {
    const ESC: &str = "\u{2581}";
    s.text.clear();
    s.map.clear();
    let want_map = offsets.is_some();
    if prefix {
        s.text.push_str(ESC);
        if want_map {
            s.map.extend([frag.start; 3]);
        }
    }
    let src = &text[frag.clone()];
    for (i, c) in src.char_indices() {
        if c == ' ' {
            s.text.push_str(ESC);
        } else {
            s.text.push(c);
        }
        if want_map {
            let n = if c == ' ' { 3 } else { c.len_utf8() };
            s.map.extend(std::iter::repeat_n(frag.start + i, n));
        }
    }
    if want_map {
        s.map.push(frag.end);
    }
    if s.text.is_empty() {
        return;
    }
    // Cut at every `▁` that follows another character when no token can span such a point:
    // the merges on either side are then independent, and small queues are much faster.
    let mut a = 0;
    if split_on_space {
        let mut k = 1;
        while k < s.text.len() {
            let t = s.text.as_bytes();
            if t[k..].starts_with(ESC.as_bytes()) && !t[..k].ends_with(ESC.as_bytes()) {
                merge_range(vocab, byte_ids, unk, s, a..k, out, offsets.as_deref_mut());
                a = k;
                k += ESC.len();
            } else {
                k += 1;
            }
        }
    }
    let n = s.text.len();
    merge_range(vocab, byte_ids, unk, s, a..n, out, offsets);
}

/// Whether no token contains `▁` right after another character, so that text can be cut in
/// front of every such `▁` without changing the result (true of SentencePiece vocabularies
/// trained with `split_by_whitespace`, the default).
pub fn splits_on_space(vocab: &Vocab) -> bool {
    const ESC: char = '\u{2581}';
    (0..vocab.len() as u32).all(|id| {
        let t = vocab.text(id).unwrap_or_default();
        let mut prev: Option<char> = None;
        t.chars().all(|c| {
            let ok = !(c == ESC && prev.is_some_and(|p| p != ESC));
            prev = Some(c);
            ok
        })
    })
}

/// The merge loop over `s.text[range]`.
fn merge_range(
    vocab: &Vocab,
    byte_ids: &[Option<u32>; 256],
    unk: Option<u32>,
    s: &mut SpmScratch,
    range: Range<usize>,
    out: &mut Vec<u32>,
    mut offsets: Option<&mut Vec<Range<usize>>>,
) {
    let want_map = offsets.is_some();
    let t = s.text.as_bytes();
    s.syms.clear();
    let mut off = range.start;
    while off < range.end {
        let len = utf8_len(t[off]).min(range.end - off);
        let i = s.syms.len() as u32;
        s.syms.push(Sym {
            start: off as u32,
            len: len as u32,
            prev: if i == 0 { NONE } else { i - 1 },
            next: if off + len == range.end { NONE } else { i + 1 },
        });
        off += len;
    }
    if s.syms.is_empty() {
        return;
    }
    s.queue.clear();
    for i in 1..s.syms.len() as u32 {
        push_pair(vocab, &s.text, &s.syms, &mut s.queue, i - 1, i);
    }
    while let Some(p) = s.queue.pop() {
        let (l, r) = (s.syms[p.left as usize], s.syms[p.right as usize]);
        if l.len == 0 || r.len == 0 || l.len + r.len != p.size {
            continue;
        }
        s.syms[p.left as usize].len += r.len;
        s.syms[p.left as usize].next = r.next;
        s.syms[p.right as usize].len = 0;
        if r.next != NONE {
            s.syms[r.next as usize].prev = p.left;
        }
        if l.prev != NONE {
            push_pair(vocab, &s.text, &s.syms, &mut s.queue, l.prev, p.left);
        }
        if r.next != NONE {
            push_pair(vocab, &s.text, &s.syms, &mut s.queue, p.left, r.next);
        }
    }
    let mut i = 0u32;
    while i != NONE {
        let sym = s.syms[i as usize];
        let (a, b) = (sym.start as usize, (sym.start + sym.len) as usize);
        let range = |a: usize, b: usize| if want_map { s.map[a]..s.map[b] } else { 0..0 };
        if let Some(id) = s.text.get(a..b).and_then(|piece| vocab.id(piece)) {
            out.push(id);
            if let Some(o) = offsets.as_deref_mut() {
                o.push(range(a, b));
            }
        } else {
            for k in a..b {
                // A byte without a token is spelled <unk> (llama.cpp would abort here).
                if let Some(id) = byte_ids[t[k] as usize].or(unk) {
                    out.push(id);
                    if let Some(o) = offsets.as_deref_mut() {
                        o.push(range(a, b));
                    }
                }
            }
        }
        i = sym.next;
    }
}

fn push_pair(
    vocab: &Vocab,
    text: &str,
    syms: &[Sym],
    queue: &mut BinaryHeap<Pair>,
    left: u32,
    right: u32,
) {
    let (l, r) = (syms[left as usize], syms[right as usize]);
    let (a, b) = (l.start as usize, (r.start + r.len) as usize);
    if let Some(id) = text.get(a..b).and_then(|piece| vocab.id(piece)) {
        queue.push(Pair {
            score: vocab.score(id),
            left,
            right,
            size: l.len + r.len,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;

    #[test]
    fn cutting_at_spaces_changes_nothing() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/vocab/ggml-vocab-llama-spm.gguf"
        );
        let vocab = Vocab::from_gguf(&GgufFile::open(path).unwrap()).unwrap();
        assert!(splits_on_space(&vocab));
        let bytes = byte_tokens(&vocab);
        let texts = [
            "Hello world,  how   are you?\n\n\tfine ",
            "   leading and trailing   ",
            "naïve café — 日本語のテキスト 🦙🦙 x\u{301}y",
            "a  b   c    d     e\u{a0}f",
        ];
        for t in texts {
            let run = |split: bool| {
                let (mut out, mut offs) = (Vec::new(), Vec::new());
                let mut s = SpmScratch::default();
                encode(
                    &vocab,
                    &bytes,
                    Some(0),
                    t,
                    0..t.len(),
                    true,
                    split,
                    &mut s,
                    &mut out,
                    Some(&mut offs),
                );
                (out, offs)
            };
            assert_eq!(run(true), run(false), "{t:?}");
        }
    }
}
