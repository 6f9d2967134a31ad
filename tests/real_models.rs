//! Real models people fine-tune on devices, fetched by `tools/fetch-real.sh DIR` (hash-
//! checked; `POCKETLORA_REAL_MODELS=DIR`; skipped without it outside CI). Goldens in
//! tests/golden/real/, made by tools/oracle/real_gemma3_goldens.sh with Hugging Face
//! transformers (`gguf_file=` on the same file) and llama.cpp built from the source
//! vendored in the llama-cpp-python sdist.
//!
//! Gemma 3 270M (gemma-3-270m-q4_k_m.gguf, a Q4_K/Q5_0/Q6_K/Q8_0 mix):
//! - eval loss of fixed texts (ids by llama.cpp's tokenizer; one longer than the 512-token
//!   window) within 1e-3 relative of transformers;
//! - greedy continuations over 32 tokens equal to transformers' up to the first step whose
//!   top-2 margin is below 1e-4 (there is none), one of them after a 560-token prompt (the
//!   sliding-window layers' cache), and equal to llama.cpp's (F32 KV cache, flash attention
//!   off) for as long as transformers and llama.cpp agree with each other;
//! - personalization end to end at `--budget 256M`: six one-line facts as text records, the
//!   trained adapter continues at least four of them from their first three words, the base
//!   model none; RssAnon and the counted heap stay inside the budget.
//!
//! SmolLM2-135M-Instruct (Q4_1): answers a chat question as the reference runs do.

mod common;

use common::cli::{run, run_sampled, stdout};
use common::{golden, real_model, rel_diff, scratch_dir};
use pocketlora::data::read_ids_jsonl;
use pocketlora::eval::evaluate;
use pocketlora::gguf::GgufFile;
use pocketlora::infer::{generate, GenerateParams, SamplerConfig};
use pocketlora::model::Model;
use pocketlora::tokenizer::Tokenizer;

const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(golden(rel)).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn gemma3_270m_eval_matches_transformers() {
    let Some(path) = real_model(GEMMA3) else {
        return;
    };
    let model = Model::open(&path, 2).unwrap();
    let records = read_ids_jsonl(golden("real/gemma3_records.jsonl")).unwrap();
    assert!(
        records.last().unwrap().ids.len() > 512,
        "one text is longer than the window"
    );
    let report = evaluate(&model, &records).unwrap();
    let want = json("real/gemma3_loss.json");
    for (i, (got, w)) in report
        .per_record
        .iter()
        .zip(want["per_record"].as_array().unwrap())
        .enumerate()
    {
        let w = w.as_f64().unwrap();
        let d = rel_diff(*got, w);
        eprintln!("gemma3 record {i}: ours {got}, transformers {w}, relative {d:e}");
        assert!(d < 1e-3, "record {i}: {got} vs {w}");
    }
}

#[test]
fn gemma3_270m_greedy_matches_transformers_and_llama_cpp() {
    let Some(path) = real_model(GEMMA3) else {
        return;
    };
    let file = std::sync::Arc::new(GgufFile::open(&path).unwrap());
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let model = Model::from_file(file, 2).unwrap();
    let params = GenerateParams {
        max_new: 32,
        sampler: SamplerConfig::greedy(),
        stop_ids: vec![],
    };
    for p in json("real/gemma3_gen.json").as_array().unwrap() {
        let prompt = ids(&p["ids"]);
        let (hf, margins) = (ids(&p["hf_ids"]), &p["hf_margins"]);
        let n = margins
            .as_array()
            .unwrap()
            .iter()
            .position(|m| m.as_f64().unwrap() < 1e-4)
            .unwrap_or(hf.len());
        assert!(n >= 20, "a tie in the reference at step {n}");
        let (ours, _) = generate(&model, &prompt, &params, |_| true).unwrap();
        assert_eq!(ours[..n], hf[..n], "prompt of {} tokens", prompt.len());
        // llama.cpp: its text, for as long as it agrees with transformers'.
        if let Some(l) = p["llama_cpp_text"].as_str() {
            let hf_text = tok.decode(&hf).unwrap();
            let ours_text = tok.decode(&ours).unwrap();
            let agree = hf_text
                .chars()
                .zip(l.chars())
                .take_while(|(a, b)| a == b)
                .count();
            let ours_prefix: String = ours_text.chars().take(agree).collect();
            let l_prefix: String = l.chars().take(agree).collect();
            eprintln!(
                "gemma3 {:?}: transformers and llama.cpp agree on {agree} characters of {}",
                p["text"].as_str().unwrap(),
                l.chars().count()
            );
            assert!(agree >= 40, "llama.cpp and transformers part early: {l:?}");
            assert_eq!(ours_prefix, l_prefix);
        }
    }
}

#[cfg(target_os = "linux")]
#[test]
fn gemma3_270m_learns_six_facts_inside_256m() {
    let Some(path) = real_model(GEMMA3) else {
        return;
    };
    let dir = scratch_dir("real-gemma3-facts");
    let facts =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo/facts.jsonl");
    let out = dir.join("adapter");
    let (m, o, a) = (
        path.to_str().unwrap(),
        out.to_str().unwrap(),
        facts.to_str().unwrap(),
    );
    let (rss, r) = run_sampled(&[
        "train", "--model", m, "--data", a, "--out", o, "--rank", "16", "--alpha", "32", "--lr",
        "2e-3", "--batch", "6", "--steps", "40", "--budget", "256M", "--json",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let done: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&r.stdout).lines().last().unwrap()).unwrap();
    let heap = done["peak_heap_bytes"].as_u64().unwrap();
    eprintln!(
        "gemma3 facts: loss {} -> {}, RssAnon peak {:.1} MiB, heap peak {:.1} MiB, plan {:.1} MiB",
        done["first_loss"],
        done["final_loss"],
        rss as f64 / 1048576.0,
        heap as f64 / 1048576.0,
        done["plan"]["total_bytes"].as_u64().unwrap() as f64 / 1048576.0
    );
    assert!(rss > 0 && rss <= 256 << 20 && heap <= 256 << 20);
    let (mut base, mut tuned) = (0, 0);
    for line in std::fs::read_to_string(&facts).unwrap().lines() {
        let text = serde_json::from_str::<serde_json::Value>(line).unwrap()["text"]
            .as_str()
            .unwrap()
            .to_string();
        let first: Vec<&str> = text.split(' ').take(3).collect();
        let prompt = first.join(" ");
        let gen = |adapter: Option<&str>| {
            let mut args = vec![
                "generate", "--model", m, "--prompt", &prompt, "-n", "16", "--temp", "0",
            ];
            if let Some(a) = adapter {
                args.extend(["--adapter", a]);
            }
            let g = run(&args);
            assert!(g.status.success());
            stdout(&g)
        };
        let recalled = |s: String| s.starts_with(&text);
        base += usize::from(recalled(gen(None)));
        tuned += usize::from(recalled(gen(Some(o))));
    }
    eprintln!("gemma3 facts recalled: base {base} of 6, trained {tuned} of 6");
    assert!(tuned >= 4 && base == 0, "base {base}, trained {tuned}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn smollm2_135m_instruct_answers_in_chat() {
    let Some(path) = real_model(SMOLLM2) else {
        return;
    };
    let o = run(&[
        "generate",
        "--model",
        path.to_str().unwrap(),
        "--chat",
        "What is the capital of France?",
        "-n",
        "16",
        "--temp",
        "0",
    ]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("Paris"), "{}", stdout(&o));
}

/// The tokenizers of both real files (Gemma 3: 262,144-piece SentencePiece without a space
/// prefix; SmolLM2: byte-level BPE, pre-tokenizer `smollm`) give llama.cpp's ids
/// (`llama-tokenize --no-bos --no-parse-special` on the same file) for llama.cpp's test
/// strings and a few more, and decode back to the text.
#[test]
fn real_tokenizers_match_llama_cpp() {
    for (file, golden_file) in [
        (GEMMA3, "real/gemma3_tokenizer.json"),
        (SMOLLM2, "real/smollm2_tokenizer.json"),
    ] {
        let Some(path) = real_model(file) else {
            return;
        };
        let tok = Tokenizer::open(&path).unwrap();
        let cases = json(golden_file);
        let mut failed = Vec::new();
        for c in cases.as_array().unwrap() {
            let text = c[0].as_str().unwrap();
            let want = ids(&c[1]);
            let got = tok.encode(text, false, false);
            if got != want {
                failed.push(format!("{text:?}: ours {got:?}, llama.cpp {want:?}"));
            } else if tok.decode(&got).unwrap() != text {
                failed.push(format!("{text:?} does not decode back"));
            }
        }
        assert!(failed.is_empty(), "{file}:\n{}", failed.join("\n"));
        eprintln!(
            "{file}: {} strings match llama.cpp",
            cases.as_array().unwrap().len()
        );
    }
}
