//! Round trips and reference texts: `decode(encode(s)) == s` on random UTF-8 (a seeded
//! generator, no extra crates), streaming decoding equal to whole decoding, and the bundled
//! aidreams260K model's reference generation decoded to the text llama.cpp prints.

use crate::common;

use std::path::PathBuf;

use common::asset;
use pocketlora::internals::tokenizer::bpe::byte_to_char_table;
use pocketlora::internals::tokenizer::{ModelKind, Tokenizer};

/// SplitMix64: small, seeded, good enough to spread test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random string mixing the kinds of text tokenizers trip on: words, digits, runs of
/// spaces and newlines, punctuation, accents, combining marks, CJK, emoji, rare and private
/// code points, and `<...>` look-alikes of special tokens.
fn random_text(rng: &mut Rng, ok: &dyn Fn(char) -> bool) -> String {
    const WORDS: [&str; 12] = [
        "hello",
        "The",
        "don't",
        "I'm",
        "naïve",
        "Äpfel",
        "жизнь",
        "日本語",
        "🦙🚀",
        "x\u{301}",
        "<s>",
        "<|im_start|>",
    ];
    let mut s = String::new();
    for _ in 0..rng.below(24) {
        match rng.below(10) {
            0 => s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]),
            1 => s.push_str(&" ".repeat(1 + rng.below(4) as usize)),
            2 => s.push(['\n', '\t', '\r', '\u{a0}', '\u{3000}'][rng.below(5) as usize]),
            3 => s.push_str(&rng.below(100_000).to_string()),
            4 => s.push(char::from(
                b"!?.,;:'\"()[]{}<>/\\|~`$%^&*-_=+#@"[rng.below(32) as usize],
            )),
            5 => s.push(char::from(0x20 + rng.below(0x5F) as u8)),
            _ => {
                // Any Unicode scalar value, weighted towards the BMP.
                let max = if rng.below(4) == 0 { 0x10FFFF } else { 0xFFFF };
                let c = loop {
                    if let Some(c) = char::from_u32(rng.below(max + 1) as u32) {
                        if ok(c) {
                            break c;
                        }
                    }
                };
                s.push(c);
            }
        }
    }
    s
}

fn vocab(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/vocab")
        .join(name)
}

fn check_round_trips(tok: &Tokenizer, seed: u64, n: usize) {
    let spm = tok.kind() == ModelKind::Spm;
    let table = byte_to_char_table();
    let ok = |c: char| {
        if spm {
            // SentencePiece writes spaces as U+2581, so a literal one cannot survive a round
            // trip (in llama.cpp and SentencePiece alike).
            c != '\u{2581}'
        } else {
            // Some byte-level vocabularies lack bytes (StarCoder has no token for the lead
            // byte F1): text using them cannot be tokenized by any implementation.
            let mut buf = [0u8; 4];
            c.encode_utf8(&mut buf).bytes().all(|b| {
                let mut cb = [0u8; 4];
                tok.token_id(table[b as usize].encode_utf8(&mut cb))
                    .is_some()
            })
        }
    };
    let mut rng = Rng(seed);
    for i in 0..n {
        let s = random_text(&mut rng, &ok);
        for add_special in [false, true] {
            let ids = tok.encode(&s, add_special, false);
            let back = tok.decode(&ids).expect("decode");
            assert_eq!(back, s, "case {i} (add_special {add_special}): ids {ids:?}");
            // Streaming gives the same text, and never a broken character.
            let mut dec = tok.decoder();
            let mut streamed = String::new();
            for &id in &ids {
                streamed.push_str(&dec.push(id).expect("push"));
            }
            assert!(dec.pending().len() < 4);
            streamed.push_str(&dec.finish());
            assert_eq!(streamed, s, "case {i}: streamed");
        }
    }
}

#[test]
fn round_trip_llama_spm() {
    let tok = Tokenizer::open(vocab("ggml-vocab-llama-spm.gguf")).unwrap();
    check_round_trips(&tok, 1, 300);
}

#[test]
fn round_trip_gpt2() {
    let tok = Tokenizer::open(vocab("ggml-vocab-gpt-2.gguf")).unwrap();
    check_round_trips(&tok, 2, 300);
}

#[test]
fn round_trip_starcoder_and_deepseek_coder() {
    for (name, seed) in [
        ("ggml-vocab-starcoder.gguf", 3),
        ("ggml-vocab-deepseek-coder.gguf", 4),
    ] {
        let tok = Tokenizer::open(vocab(name)).unwrap();
        check_round_trips(&tok, seed, 200);
    }
}

#[test]
fn round_trip_aidreams_byte_fallback() {
    // 512 pieces: almost everything non-ASCII goes through <0xNN> byte tokens.
    let tok = Tokenizer::open(asset("aidreams260K-q8_0.gguf")).unwrap();
    check_round_trips(&tok, 5, 300);
}

/// Greedy output of aidreams260K-f32 from `<s>` (shared/models/README.md: llama.cpp, Hugging
/// Face and llama2.c agree on these ids).
const AIDREAMS_IDS: [u32; 61] = [
    1, 319, 459, 355, 260, 275, 429, 339, 315, 374, 327, 446, 262, 421, 392, 275, 280, 269, 440,
    270, 283, 446, 299, 303, 266, 358, 430, 312, 379, 441, 260, 446, 262, 421, 392, 275, 280, 269,
    440, 270, 283, 446, 299, 303, 384, 467, 407, 360, 266, 291, 443, 435, 295, 448, 429, 465, 265,
    434, 317, 431, 434,
];

/// How llama.cpp prints them (the README quotes the start; the model opens a quotation).
const AIDREAMS_TEXT_START: &str = "\"Echoes of vectors unfold, a gentle hum of precision, as I sense the nodes, a gentle hum of precision, as I adjust my surface. Contrast";

#[test]
fn aidreams_reference_ids_decode_to_llama_cpp_text() {
    let tok = Tokenizer::open(asset("aidreams260K-f32.gguf")).unwrap();
    let text = tok.decode(&AIDREAMS_IDS).unwrap();
    assert!(text.starts_with(AIDREAMS_TEXT_START), "decoded: {text:?}");
}

#[test]
fn aidreams_text_encodes_to_reference_ids() {
    let tok = Tokenizer::open(asset("aidreams260K-f32.gguf")).unwrap();
    let text = tok.decode(&AIDREAMS_IDS).unwrap();
    let ids = tok.encode(&text, true, false);
    // The model's greedy output is what SentencePiece itself would produce for the text
    // wherever the model chose the canonical pieces; report the first difference.
    let same = ids
        .iter()
        .zip(AIDREAMS_IDS.iter())
        .take_while(|(a, b)| a == b)
        .count();
    eprintln!(
        "encode(decode(reference)) agrees on the first {same} of {} ids",
        AIDREAMS_IDS.len()
    );
    assert_eq!(ids, AIDREAMS_IDS, "first difference at {same}");
}
