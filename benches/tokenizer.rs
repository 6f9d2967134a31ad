//! Tokenizer throughput: 1 MiB of mixed text (English prose, code, numbers, accented Latin,
//! Cyrillic, CJK, emoji, blank lines) encoded on one thread, reported in bytes/s — the MB/s
//! per core of each tokenizer kind. Vocabularies from tests/data/vocab: llama-spm
//! (SentencePiece BPE, 32k), gpt-2 (byte-level BPE, 50k merges) and starcoder (byte-level BPE
//! with a digit-splitting pre-tokenizer).

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pocketlora::internals::tokenizer::Tokenizer;

const WORDS: [&str; 40] = [
    "the",
    "model",
    "learns",
    "from",
    "your",
    "notes",
    "and",
    "messages",
    "on",
    "device",
    "without",
    "sending",
    "anything",
    "to",
    "a",
    "server",
    "it",
    "adapts",
    "quickly",
    "while",
    "staying",
    "small",
    "enough",
    "for",
    "phones",
    "laptops",
    "personal",
    "words",
    "matter",
    "here",
    "naïve",
    "café",
    "Äpfel",
    "жизнь",
    "日本語",
    "の",
    "テキスト",
    "🦙",
    "don't",
    "I'm",
];

const CODE: &str = "fn main() {\n    let xs: Vec<u32> = (0..10).map(|i| i * 2).collect();\n    println!(\"{:?} {}\", xs, xs.len());\n}\n\n";

/// Deterministic mixed text of at least `n` bytes.
fn mixed_text(n: usize) -> String {
    let mut s = String::with_capacity(n + 256);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    while s.len() < n {
        match next() % 50 {
            0 => s.push_str(CODE),
            1 => s.push_str("\n\n"),
            2 => s.push_str(&format!(" {}", next() % 100_000)),
            3 => s.push_str(", "),
            4 => s.push_str(". "),
            _ => {
                s.push(' ');
                s.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
            }
        }
    }
    s
}

fn bench_encode(c: &mut Criterion) {
    let text = mixed_text(1 << 20);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vocab");
    let mut g = c.benchmark_group("tokenize_1MiB");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(text.len() as u64));
    for (name, file) in [
        ("spm_llama", "ggml-vocab-llama-spm.gguf"),
        ("bpe_gpt2", "ggml-vocab-gpt-2.gguf"),
        ("bpe_starcoder", "ggml-vocab-starcoder.gguf"),
    ] {
        let tok = Tokenizer::open(dir.join(file)).expect("vocabulary");
        g.bench_with_input(BenchmarkId::new("encode", name), &text, |b, t| {
            b.iter(|| tok.encode(t, true, false))
        });
    }
    let tok = Tokenizer::open(dir.join("ggml-vocab-gpt-2.gguf")).expect("vocabulary");
    let ids = tok.encode(&text, false, false);
    g.bench_with_input(BenchmarkId::new("decode", "bpe_gpt2"), &ids, |b, ids| {
        b.iter(|| tok.decode(ids).expect("decode"))
    });
    g.finish();
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
