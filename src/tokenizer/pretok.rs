//! Pre-tokenizers of byte-level BPE vocabularies: how text is cut into words before merges,
//! chosen by `tokenizer.ggml.pre`.
//!
//! Each model family splits with a list of regexes applied in turn (Hugging Face
//! `tokenizers` `Split` pre-tokenizers with `behavior: isolated`): every regex cuts each
//! piece left by the previous ones into its matches *and* the text between them. llama.cpp
//! (`llama-vocab.cpp`, `unicode.cpp`) is the reference for which lists each name uses and for
//! their exact semantics; this module implements each regex by hand, so no regex engine is
//! needed:
//!
//! | names | splits |
//! | --- | --- |
//! | `gpt-2`, `mpt`, `olmo`, `jais`, `phi-2`, ... | GPT-2: `'s\|'t\|'re\|'ve\|'m\|'ll\|'d\| ?\p{L}+\| ?\p{N}+\| ?[^\s\p{L}\p{N}]+\|\s+(?!\S)\|\s+` |
//! | `llama-bpe`, `llama3`, `dbrx`, `smaug-bpe`, ... | Llama 3: `(?i:'s\|'t\|'re\|'ve\|'m\|'ll\|'d)\|[^\r\n\p{L}\p{N}]?\p{L}+\|\p{N}{1,3}\| ?[^\s\p{L}\p{N}]+[\r\n]*\|\s*[\r\n]+\|\s+(?!\S)\|\s+` |
//! | `qwen2`, `stablelm2`, `megrez`, ... | Llama 3 with `\p{N}` (single digits) |
//! | `qwen35` | `qwen2` with `[\p{L}\p{M}]+` letter runs (`[^\s\p{L}\p{M}\p{N}]` for the others) |
//! | `starcoder`, `refact`, `smollm`, `command-r`, ... | `\p{N}`, then GPT-2 |
//! | `falcon` | ``[\p{P}\$\+<=>\^~\|`]+``, GPT-2, `[0-9][0-9][0-9]` |
//! | `default` (or no key) | `[\p{P}\$\+<=>\^~\|]+`, GPT-2, `\p{N}+`, `[0-9][0-9][0-9]` |
//! | `deepseek-llm` | `[\r\n]`, `\s?[cased letters]+`, `\s?[ASCII/full-width punctuation]+`, `\s+$`, `[CJK]+`, `\p{N}+` |
//! | `deepseek-coder` | `[\r\n]`, `\s?\p{L}+`, `\s?\p{P}+`, `[CJK]+`, `\p{N}` |
//!
//! Semantics matched exactly, as llama.cpp runs them: matching is leftmost-first (ECMAScript);
//! `\s` is the Unicode `White_Space` property; the categories come from the Unicode tables,
//! except that in the generic regexes (all but GPT-2 and Llama 3 proper) a non-ASCII white
//! space code point matches only `\s`, as llama.cpp maps it to `\v` before matching.

use std::ops::Range;

use super::unicode::{category, is_whitespace, Category};

/// A pre-tokenizer: the split rules of one model family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `default` (also used when `tokenizer.ggml.pre` is absent).
    Default,
    /// `gpt-2` and families with the same regex.
    Gpt2,
    /// `llama-bpe` (Llama 3) and families with the same regex.
    Llama3,
    /// `qwen2`: the Llama 3 regex with single digits.
    Qwen2,
    /// `qwen35` (Qwen3.5): `qwen2` whose letter runs also take combining marks.
    Qwen35,
    /// `starcoder`, `refact`, `smollm`, ...: single digits, then GPT-2.
    Starcoder,
    /// `falcon`
    Falcon,
    /// `deepseek-llm`
    DeepseekLlm,
    /// `deepseek-coder`
    DeepseekCoder,
}

/// Every name accepted for `tokenizer.ggml.pre`, with its pre-tokenizer.
pub const NAMES: &[(&str, PreTokenizer)] = &[
    ("default", PreTokenizer::Default),
    ("llama3", PreTokenizer::Llama3),
    ("llama-v3", PreTokenizer::Llama3),
    ("llama-bpe", PreTokenizer::Llama3),
    ("falcon3", PreTokenizer::Llama3),
    ("falcon-h1", PreTokenizer::Llama3),
    ("pixtral", PreTokenizer::Llama3),
    ("midm-2.0", PreTokenizer::Llama3),
    ("lfm2", PreTokenizer::Llama3),
    ("dbrx", PreTokenizer::Llama3),
    ("smaug-bpe", PreTokenizer::Llama3),
    ("chatglm-bpe", PreTokenizer::Llama3),
    ("glm4", PreTokenizer::Llama3),
    ("deepseek-llm", PreTokenizer::DeepseekLlm),
    ("deepseek-coder", PreTokenizer::DeepseekCoder),
    ("falcon", PreTokenizer::Falcon),
    ("mpt", PreTokenizer::Gpt2),
    ("gpt-2", PreTokenizer::Gpt2),
    ("phi-2", PreTokenizer::Gpt2),
    ("jina-es", PreTokenizer::Gpt2),
    ("jina-de", PreTokenizer::Gpt2),
    ("jina-v1-en", PreTokenizer::Gpt2),
    ("jina-v2-es", PreTokenizer::Gpt2),
    ("jina-v2-de", PreTokenizer::Gpt2),
    ("jina-v2-code", PreTokenizer::Gpt2),
    ("roberta-bpe", PreTokenizer::Gpt2),
    ("gigachat", PreTokenizer::Gpt2),
    ("a.x-4.0", PreTokenizer::Gpt2),
    ("mellum", PreTokenizer::Gpt2),
    ("olmo", PreTokenizer::Gpt2),
    ("jais", PreTokenizer::Gpt2),
    ("trillion", PreTokenizer::Gpt2),
    ("exaone4", PreTokenizer::Gpt2),
    ("starcoder", PreTokenizer::Starcoder),
    ("refact", PreTokenizer::Starcoder),
    ("command-r", PreTokenizer::Starcoder),
    ("smollm", PreTokenizer::Starcoder),
    ("codeshell", PreTokenizer::Starcoder),
    ("exaone", PreTokenizer::Starcoder),
    ("minerva-7b", PreTokenizer::Starcoder),
    ("qwen2", PreTokenizer::Qwen2),
    ("deepseek-r1-qwen", PreTokenizer::Qwen2),
    ("megrez", PreTokenizer::Qwen2),
    ("stablelm2", PreTokenizer::Qwen2),
    ("hunyuan", PreTokenizer::Qwen2),
    ("qwen35", PreTokenizer::Qwen35),
];

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value (`None` = key absent = `default`).
    pub fn from_name(name: Option<&str>) -> Option<PreTokenizer> {
        match name {
            None => Some(PreTokenizer::Default),
            Some(n) => NAMES.iter().find(|(k, _)| *k == n).map(|&(_, p)| p),
        }
    }

    /// Whether a word that is itself a token skips the merges (llama.cpp `ignore_merges`,
    /// set for the Llama 3 names).
    pub fn ignores_merges(name: Option<&str>) -> bool {
        matches!(
            name,
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
        )
    }

    fn stages(self) -> &'static [Stage] {
        use Class::*;
        use Stage::*;
        match self {
            PreTokenizer::Gpt2 => &[Gpt2],
            PreTokenizer::Llama3 => &[Llama3 {
                digits: 3,
                marks: false,
            }],
            PreTokenizer::Qwen2 => &[Llama3 {
                digits: 1,
                marks: false,
            }],
            PreTokenizer::Qwen35 => &[Llama3 {
                digits: 1,
                marks: true,
            }],
            PreTokenizer::Starcoder => &[Single(Number), Gpt2],
            PreTokenizer::Falcon => &[Run(FalconPunct), Gpt2, Triple(AsciiDigit)],
            PreTokenizer::Default => &[Run(DefaultPunct), Gpt2, Run(Number), Triple(AsciiDigit)],
            PreTokenizer::DeepseekLlm => &[
                Single(CrLf),
                PrefixRun(DsLetter),
                PrefixRun(DsPunct),
                TrailingSpace,
                Run(Cjk),
                Run(Number),
            ],
            PreTokenizer::DeepseekCoder => &[
                Single(CrLf),
                PrefixRun(Letter),
                PrefixRun(Punct),
                Run(Cjk),
                Single(Number),
            ],
        }
    }

    /// Splits `text` into words: byte ranges that cover it in order, none empty.
    pub fn split(self, text: &str, scratch: &mut SplitScratch, out: &mut Vec<Range<usize>>) {
        out.clear();
        if text.is_empty() {
            return;
        }
        let SplitScratch { cps, offs, a, b } = scratch;
        cps.clear();
        offs.clear();
        for (i, c) in text.char_indices() {
            cps.push(c as u32);
            offs.push(i);
        }
        offs.push(text.len());
        a.clear();
        a.push(0..cps.len());
        for stage in self.stages() {
            b.clear();
            for frag in a.iter() {
                stage.split(cps, frag.clone(), b);
            }
            std::mem::swap(a, b);
        }
        out.extend(a.iter().map(|r| offs[r.start]..offs[r.end]));
    }
}

/// Buffers reused across calls to [`PreTokenizer::split`].
#[derive(Default, Debug)]
pub struct SplitScratch {
    cps: Vec<u32>,
    offs: Vec<usize>,
    a: Vec<Range<usize>>,
    b: Vec<Range<usize>>,
}

/// One regex of a split list.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// The GPT-2 regex.
    Gpt2,
    /// The Llama 3 regex, with `\p{N}{1,digits}`.
    /// With `marks`, letter runs also take combining marks (`[\p{L}\p{M}]+`, qwen35).
    Llama3 { digits: usize, marks: bool },
    /// `C+`
    Run(Class),
    /// `\s?C+`
    PrefixRun(Class),
    /// `C`
    Single(Class),
    /// `CCC`
    Triple(Class),
    /// `\s+$`
    TrailingSpace,
}

/// Character classes of the generic regexes.
#[derive(Clone, Copy, Debug)]
enum Class {
    /// `\p{N}`
    Number,
    /// `\p{L}`
    Letter,
    /// `\p{P}`
    Punct,
    /// `[\p{P}\$\+<=>\^~\|]`
    DefaultPunct,
    /// ``[\p{P}\$\+<=>\^~\|`]``
    FalconPunct,
    /// `[0-9]`
    AsciiDigit,
    /// `[\r\n]`
    CrLf,
    /// `[一-龥ࠀ-一가-퟿]`
    Cjk,
    /// DeepSeek LLM's cased-letter class.
    DsLetter,
    /// `[!-/:-~！-／：-～‘-‟　-。]`
    DsPunct,
}

/// The cased-letter class of DeepSeek LLM's pre-tokenizer regex (from its tokenizer.json, as
/// llama.cpp spells it), as inclusive ranges.
#[rustfmt::skip]
static DS_LETTERS: [(u32, u32); 87] = [
    (0x41, 0x5A), (0x61, 0x7A), (0xB5, 0xB5), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x1BA),
    (0x1BC, 0x1BF), (0x1C4, 0x293), (0x295, 0x2AF), (0x370, 0x373), (0x376, 0x376), (0x377, 0x377),
    (0x37B, 0x37D), (0x37F, 0x37F), (0x386, 0x386), (0x388, 0x38A), (0x38C, 0x38C), (0x38E, 0x3A1),
    (0x3A3, 0x3F5), (0x3F7, 0x481), (0x48A, 0x52F), (0x531, 0x556), (0x10A0, 0x10C5),
    (0x13A0, 0x13F5), (0x13F8, 0x13FD), (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF), (0x1D00, 0x1D2B),
    (0x1D6B, 0x1D77), (0x1D79, 0x1D9A), (0x1E00, 0x1F15), (0x1F18, 0x1F1D), (0x1F20, 0x1F45),
    (0x1F48, 0x1F4D), (0x1F50, 0x1F57), (0x1F59, 0x1F59), (0x1F5B, 0x1F5B), (0x1F5D, 0x1F5D),
    (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4), (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4),
    (0x1FC6, 0x1FCC), (0x1FD0, 0x1FD3), (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4),
    (0x1FF6, 0x1FFC), (0x2102, 0x2102), (0x2107, 0x2107), (0x210A, 0x2113), (0x2115, 0x2115),
    (0x2119, 0x211D), (0x2124, 0x2124), (0x2126, 0x2126), (0x2128, 0x2128), (0x212A, 0x212D),
    (0x212F, 0x2134), (0x2139, 0x2139), (0x213C, 0x213F), (0x2145, 0x2149), (0x214E, 0x214E),
    (0x2183, 0x2183), (0x2184, 0x2184), (0x2C00, 0x2C7B), (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE),
    (0x2CF2, 0x2CF2), (0x2CF3, 0x2CF3), (0xA640, 0xA66D), (0xA680, 0xA69B), (0xA722, 0xA76F),
    (0xA771, 0xA787), (0xA78B, 0xA78E), (0xAB70, 0xABBF), (0xFB00, 0xFB06), (0xFB13, 0xFB17),
    (0xFF21, 0xFF3A), (0xFF41, 0xFF5A), (0x10400, 0x1044F), (0x104B0, 0x104D3), (0x104D8, 0x104FB),
    (0x10C80, 0x10CB2), (0x10CC0, 0x10CF2), (0x118A0, 0x118DF), (0x1E900, 0x1E943),
];

fn in_ranges(ranges: &[(u32, u32)], c: u32) -> bool {
    let i = ranges.partition_point(|&(lo, _)| lo <= c);
    i > 0 && c <= ranges[i - 1].1
}

/// A code point as the generic regexes see it: non-ASCII white space becomes `\v`.
#[inline]
fn generic_view(c: u32) -> u32 {
    if c > 0x7F && is_whitespace(c) {
        0x0B
    } else {
        c
    }
}

/// `\s` of the generic regexes (after [`generic_view`]).
#[inline]
fn generic_space(c: u32) -> bool {
    matches!(c, 0x09..=0x0D | 0x20)
}

impl Class {
    #[inline]
    fn matches(self, raw: u32) -> bool {
        let c = generic_view(raw);
        let ascii = c < 0x80;
        match self {
            Class::Number => {
                if ascii {
                    ascii_digit(c)
                } else {
                    category(c) == Category::Number
                }
            }
            Class::Letter => {
                if ascii {
                    (c as u8).is_ascii_alphabetic()
                } else {
                    category(c) == Category::Letter
                }
            }
            Class::Punct => {
                if ascii {
                    (c as u8).is_ascii_punctuation() && !b"$+<=>^`|~".contains(&(c as u8))
                } else {
                    category(c) == Category::Punctuation
                }
            }
            Class::DefaultPunct | Class::FalconPunct => {
                if ascii {
                    let b = c as u8;
                    (b.is_ascii_punctuation() && b != b'`')
                        || (b == b'`' && matches!(self, Class::FalconPunct))
                } else {
                    category(c) == Category::Punctuation
                }
            }
            Class::AsciiDigit => ascii_digit(c),
            Class::CrLf => c == 0x0A || c == 0x0D,
            Class::Cjk => {
                (0x4E00..=0x9FA5).contains(&c)
                    || (0x0800..=0x4E00).contains(&c)
                    || (0xAC00..=0xD7FF).contains(&c)
            }
            Class::DsLetter => in_ranges(&DS_LETTERS, c),
            Class::DsPunct => {
                (0x21..=0x2F).contains(&c)
                    || (0x3A..=0x7E).contains(&c)
                    || (0xFF01..=0xFF0F).contains(&c)
                    || (0xFF1A..=0xFF5E).contains(&c)
                    || (0x2018..=0x201F).contains(&c)
                    || (0x3000..=0x3002).contains(&c)
            }
        }
    }
}

/// `[0-9]`
#[inline]
fn ascii_digit(c: u32) -> bool {
    (0x30..=0x39).contains(&c)
}

/// Pushes `r` unless empty.
#[inline]
fn push(out: &mut Vec<Range<usize>>, r: Range<usize>) {
    if r.start < r.end {
        out.push(r);
    }
}

impl Stage {
    fn split(self, cps: &[u32], frag: Range<usize>, out: &mut Vec<Range<usize>>) {
        match self {
            Stage::Gpt2 => split_gpt2(cps, frag, out),
            Stage::Llama3 { digits, marks } => split_llama3(cps, frag, digits, marks, out),
            _ => self.split_generic(cps, frag, out),
        }
    }

    /// Leftmost match starting at or after `from`, within `..end`.
    fn find(self, cps: &[u32], from: usize, end: usize) -> Option<Range<usize>> {
        let run_end = |c: Class, mut j: usize| {
            while j < end && c.matches(cps[j]) {
                j += 1;
            }
            j
        };
        match self {
            Stage::Run(c) => {
                let i = (from..end).find(|&i| c.matches(cps[i]))?;
                Some(i..run_end(c, i))
            }
            Stage::PrefixRun(c) => (from..end).find_map(|i| {
                if generic_space(generic_view(cps[i])) && i + 1 < end && c.matches(cps[i + 1]) {
                    Some(i..run_end(c, i + 1))
                } else if c.matches(cps[i]) {
                    Some(i..run_end(c, i))
                } else {
                    None
                }
            }),
            Stage::Single(c) => {
                let i = (from..end).find(|&i| c.matches(cps[i]))?;
                Some(i..i + 1)
            }
            Stage::Triple(c) => (from..end.saturating_sub(2))
                .find(|&i| c.matches(cps[i]) && c.matches(cps[i + 1]) && c.matches(cps[i + 2]))
                .map(|i| i..i + 3),
            Stage::TrailingSpace => {
                let mut i = end;
                while i > from && generic_space(generic_view(cps[i - 1])) {
                    i -= 1;
                }
                (i < end).then_some(i..end)
            }
            Stage::Gpt2 | Stage::Llama3 { .. } => None,
        }
    }

    fn split_generic(self, cps: &[u32], frag: Range<usize>, out: &mut Vec<Range<usize>>) {
        let mut pos = frag.start;
        while let Some(m) = self.find(cps, pos, frag.end) {
            push(out, pos..m.start);
            pos = m.end;
            push(out, m);
        }
        push(out, pos..frag.end);
    }
}

/// The GPT-2 regex over `cps[frag]` (llama.cpp `unicode_regex_split_custom_gpt2`).
fn split_gpt2(cps: &[u32], frag: Range<usize>, out: &mut Vec<Range<usize>>) {
    let end = frag.end;
    let get = |p: usize| (p < end).then(|| cps[p]);
    let cat = |p: usize| get(p).map(category);
    let letter = |p: usize| cat(p) == Some(Category::Letter);
    let number = |p: usize| cat(p) == Some(Category::Number);
    let space = |p: usize| get(p).is_some_and(is_whitespace);
    // [^\s\p{L}\p{N}]: any code point in range that is none of those.
    let other = |p: usize| get(p).is_some() && !space(p) && !letter(p) && !number(p);
    let mut pos = frag.start;
    while pos < end {
        let start = pos;
        let c = cps[pos];
        if c == u32::from(b'\'') && pos + 1 < end {
            let n = cps[pos + 1];
            if [b's', b't', b'm', b'd'].iter().any(|&x| n == u32::from(x)) {
                out.push(start..pos + 2);
                pos += 2;
                continue;
            }
            if pos + 2 < end {
                let pair = (n, cps[pos + 2]);
                let is = |a: u8, b: u8| pair == (u32::from(a), u32::from(b));
                if is(b'r', b'e') || is(b'v', b'e') || is(b'l', b'l') {
                    out.push(start..pos + 3);
                    pos += 3;
                    continue;
                }
            }
        }
        let look = if c == 0x20 { pos + 1 } else { pos };
        let class_run = |pred: &dyn Fn(usize) -> bool| {
            if pred(look) {
                let mut p = look;
                while pred(p) {
                    p += 1;
                }
                Some(p)
            } else {
                None
            }
        };
        if let Some(p) = class_run(&letter)
            .or_else(|| class_run(&number))
            .or_else(|| class_run(&other))
        {
            out.push(start..p);
            pos = p;
            continue;
        }
        let mut n_space = 0;
        while space(pos + n_space) {
            n_space += 1;
        }
        if n_space > 1 && pos + n_space < end {
            // \s+(?!\S): leave the last space to prefix the next word.
            pos += n_space - 1;
        } else if n_space > 0 {
            pos += n_space;
        } else {
            pos += 1;
        }
        out.push(start..pos);
    }
}

/// The Llama 3 regex over `cps[frag]` (llama.cpp `unicode_regex_split_custom_llama3`), with
/// numbers cut into groups of at most `digits`; with `marks`, combining marks count as
/// letters (`unicode_regex_split_custom_qwen35`).
fn split_llama3(
    cps: &[u32],
    frag: Range<usize>,
    digits: usize,
    marks: bool,
    out: &mut Vec<Range<usize>>,
) {
    let end = frag.end;
    let get = |p: usize| (p < end).then(|| cps[p]);
    let cat = |p: usize| get(p).map(category);
    let letter = |p: usize| {
        let c = cat(p);
        c == Some(Category::Letter) || (marks && c == Some(Category::Mark))
    };
    let number = |p: usize| cat(p) == Some(Category::Number);
    let space = |p: usize| get(p).is_some_and(is_whitespace);
    let crlf = |p: usize| matches!(get(p), Some(0x0A | 0x0D));
    let mut pos = frag.start;
    while pos < end {
        let start = pos;
        let c = cps[pos];
        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if c == u32::from(b'\'') && pos + 1 < end {
            let lower = |x: u32| {
                if (0x41..=0x5A).contains(&x) {
                    x + 32
                } else {
                    x
                }
            };
            let n = lower(cps[pos + 1]);
            if [b's', b't', b'm', b'd'].iter().any(|&x| n == u32::from(x)) {
                out.push(start..pos + 2);
                pos += 2;
                continue;
            }
            if pos + 2 < end {
                let pair = (n, lower(cps[pos + 2]));
                let is = |a: u8, b: u8| pair == (u32::from(a), u32::from(b));
                if is(b'r', b'e') || is(b'v', b'e') || is(b'l', b'l') {
                    out.push(start..pos + 3);
                    pos += 3;
                    continue;
                }
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(crlf(pos) || number(pos)) && (letter(pos) || letter(pos + 1)) {
            pos += 1;
            while letter(pos) {
                pos += 1;
            }
            out.push(start..pos);
            continue;
        }
        // \p{N}{1,digits}
        if number(pos) {
            let mut group = pos;
            while number(pos) {
                pos += 1;
                if pos - group >= digits {
                    out.push(group..pos);
                    group = pos;
                }
            }
            push(out, group..pos);
            continue;
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        let look = if c == 0x20 { pos + 1 } else { pos };
        let other = |p: usize| get(p).is_some() && !space(p) && !letter(p) && !number(p);
        // llama.cpp tests the class at `look` but validity at `pos`, so a lone trailing space
        // is taken here too (the same word either way).
        if !(space(look) || letter(look) || number(look)) {
            pos = look;
            while other(pos) {
                pos += 1;
            }
            while crlf(pos) {
                pos += 1;
            }
            out.push(start..pos);
            continue;
        }
        let mut n_space = 0;
        let mut last_crlf_end = None;
        while space(pos + n_space) {
            if crlf(pos + n_space) {
                last_crlf_end = Some(pos + n_space + 1);
            }
            n_space += 1;
        }
        if let Some(e) = last_crlf_end {
            // \s*[\r\n]+
            pos = e;
        } else if n_space > 1 && pos + n_space < end {
            // \s+(?!\S)
            pos += n_space - 1;
        } else if n_space > 0 {
            pos += n_space;
        } else {
            pos += 1;
        }
        out.push(start..pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(p: PreTokenizer, s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        p.split(s, &mut SplitScratch::default(), &mut out);
        let mut end = 0;
        for r in &out {
            assert_eq!(r.start, end, "gap or overlap in {out:?}");
            assert!(r.start < r.end);
            end = r.end;
        }
        assert_eq!(end, s.len());
        out.into_iter().map(|r| &s[r]).collect()
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            words(PreTokenizer::Gpt2, "Hello world's  3.14 !!\n\n x"),
            ["Hello", " world", "'s", " ", " 3", ".", "14", " !!", "\n\n", " x"]
        );
    }

    #[test]
    fn qwen35_letter_runs_take_combining_marks() {
        // "café" with a combining acute accent (U+0301), and a word that starts with a mark.
        let s = "cafe\u{301} \u{301}x";
        assert_eq!(
            words(PreTokenizer::Qwen2, s),
            ["cafe", "\u{301}", " \u{301}", "x"]
        );
        assert_eq!(words(PreTokenizer::Qwen35, s), ["cafe\u{301}", " \u{301}x"]);
    }

    #[test]
    fn llama3_words() {
        assert_eq!(
            words(PreTokenizer::Llama3, "I'M 12345 ok?!\n\n  x"),
            ["I", "'M", " ", "123", "45", " ok", "?!\n\n", " ", " x"]
        );
        assert_eq!(
            words(PreTokenizer::Qwen2, "a 123"),
            ["a", " ", "1", "2", "3"]
        );
    }

    #[test]
    fn generic_stages() {
        assert_eq!(
            words(PreTokenizer::Default, "a+b=12345"),
            ["a", "+", "b", "=", "123", "45"]
        );
        assert_eq!(words(PreTokenizer::Starcoder, "x 42"), ["x", " ", "4", "2"]);
        assert_eq!(
            words(PreTokenizer::DeepseekCoder, "def f():\n  return 10"),
            ["def", " f", "():", "\n", " ", " return", " ", "1", "0"]
        );
    }
}
