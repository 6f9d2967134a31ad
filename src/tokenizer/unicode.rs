//! Unicode character classes for the pre-tokenizers: general categories (`\p{L}`, `\p{N}`,
//! `\p{P}`, ...) from the generated range table, and the `White_Space` property (`\s`).
//!
//! References: UAX #44 (General_Category values) and the Unicode Character Database's
//! PropList.txt (`White_Space`). The range table is produced by `tools/gen_unicode_tables.py`
//! from Python's `unicodedata`; no dependency is needed for it.

use super::unicode_tables::CATEGORY_RANGES;

/// A code point's general category, grouped by its first letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// `Cn`: not assigned.
    Unassigned,
    /// `L*`
    Letter,
    /// `M*`
    Mark,
    /// `N*`
    Number,
    /// `P*`
    Punctuation,
    /// `S*`
    Symbol,
    /// `Z*`
    Separator,
    /// `Cc`, `Cf`, `Co`, `Cs`
    Control,
}

impl Category {
    const fn from_code(c: u8) -> Category {
        match c {
            1 => Category::Letter,
            2 => Category::Mark,
            3 => Category::Number,
            4 => Category::Punctuation,
            5 => Category::Symbol,
            6 => Category::Separator,
            7 => Category::Control,
            _ => Category::Unassigned,
        }
    }
}

const fn ascii_table() -> [Category; 128] {
    let mut t = [Category::Control; 128];
    let mut i = 0;
    while i < CATEGORY_RANGES.len() && CATEGORY_RANGES[i].0 < 128 {
        let start = CATEGORY_RANGES[i].0 as usize;
        let end = if i + 1 < CATEGORY_RANGES.len() && (CATEGORY_RANGES[i + 1].0 as usize) < 128 {
            CATEGORY_RANGES[i + 1].0 as usize
        } else {
            128
        };
        let mut c = start;
        while c < end {
            t[c] = Category::from_code(CATEGORY_RANGES[i].1);
            c += 1;
        }
        i += 1;
    }
    t
}

static ASCII: [Category; 128] = ascii_table();

/// The general category of `cp` (code points past U+10FFFF are unassigned).
#[inline]
pub fn category(cp: u32) -> Category {
    if cp < 128 {
        return ASCII[cp as usize];
    }
    if cp > 0x10FFFF {
        return Category::Unassigned;
    }
    let i = CATEGORY_RANGES.partition_point(|&(start, _)| start <= cp);
    // i >= 1 because the first range starts at 0.
    Category::from_code(CATEGORY_RANGES[i - 1].1)
}

/// The Unicode `White_Space` property (PropList.txt): what the pre-tokenizer regexes call `\s`.
#[inline]
pub fn is_whitespace(cp: u32) -> bool {
    match cp {
        0x09..=0x0D | 0x20 => true,
        0..=0x84 => false,
        0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000 => true,
        _ => false,
    }
}

/// `\p{L}`
#[inline]
pub fn is_letter(cp: u32) -> bool {
    category(cp) == Category::Letter
}

/// `\p{N}`
#[inline]
pub fn is_number(cp: u32) -> bool {
    category(cp) == Category::Number
}

/// Length of the UTF-8 sequence a lead byte announces, as llama.cpp counts it: continuation and
/// invalid lead bytes count 1, so a symbol never runs past a malformed byte.
#[inline]
pub fn utf8_len(lead: u8) -> usize {
    match lead >> 4 {
        0xC | 0xD => 2,
        0xE => 3,
        0xF => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_of_known_code_points() {
        assert_eq!(category('a' as u32), Category::Letter);
        assert_eq!(category('Z' as u32), Category::Letter);
        assert_eq!(category('7' as u32), Category::Number);
        assert_eq!(category('!' as u32), Category::Punctuation);
        assert_eq!(category('$' as u32), Category::Symbol);
        assert_eq!(category(' ' as u32), Category::Separator);
        assert_eq!(category('\n' as u32), Category::Control);
        assert_eq!(category('é' as u32), Category::Letter);
        assert_eq!(category('ж' as u32), Category::Letter);
        assert_eq!(category('中' as u32), Category::Letter);
        assert_eq!(category('٣' as u32), Category::Number); // Arabic-Indic three
        assert_eq!(category('Ⅻ' as u32), Category::Number); // Nl
        assert_eq!(category('\u{301}' as u32), Category::Mark);
        assert_eq!(category('€' as u32), Category::Symbol);
        assert_eq!(category('🦙' as u32), Category::Symbol);
        assert_eq!(category('«' as u32), Category::Punctuation);
        assert_eq!(category(0xE000), Category::Control); // private use
        assert_eq!(category(0x0378), Category::Unassigned);
        assert_eq!(category(0x10FFFF), Category::Unassigned);
        assert_eq!(category(0x110000), Category::Unassigned);
    }

    #[test]
    fn white_space_property() {
        for c in [
            '\t', '\n', '\u{b}', '\u{c}', '\r', ' ', '\u{85}', '\u{a0}', '\u{3000}',
        ] {
            assert!(is_whitespace(c as u32), "{c:?}");
        }
        for c in ['a', '\u{1c}', '\u{200b}', '_', '\0'] {
            assert!(!is_whitespace(c as u32), "{c:?}");
        }
    }
}
