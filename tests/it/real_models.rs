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
//!   model none; RssAnon and the counted heap stay inside the budget;
//! - adapters both ways: a PEFT adapter evaluates here as in PEFT, ours in PEFT as here;
//!   ours exported as a llama.cpp adapter and merged into the base give llama.cpp's greedy
//!   text; its tokenizer gives llama-tokenize's ids; Gemma's chat template renders and
//!   trains on a copy of the file that carries it.
//!
//! SmolLM2-135M-Instruct (Q4_1): answers a chat question as the reference runs do.

use crate::common;

use common::cli::{run, run_sampled, stdout};
use common::{golden, real_model, rel_diff, scratch_dir};
use pocketlora::internals::data::read_ids_jsonl;
use pocketlora::internals::eval::evaluate;
use pocketlora::internals::gguf::GgufFile;
use pocketlora::internals::infer::{generate, GenerateParams, SamplerConfig};
use pocketlora::internals::model::Model;
use pocketlora::internals::tokenizer::Tokenizer;

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

/// Adapters travel between PEFT and here on the real Gemma 3 270M (r 2 on q and v): a PEFT
/// adapter (made by PEFT, B non-zero) evaluates here as in PEFT, and one trained here
/// (saved as a PEFT directory) evaluates in PEFT as here — six fact records, each within
/// 1e-3 relative.
#[test]
fn gemma3_270m_peft_adapters_evaluate_as_in_peft() {
    let Some(path) = real_model(GEMMA3) else {
        return;
    };
    let mut model = Model::open(&path, 2).unwrap();
    let records = read_ids_jsonl(golden("real/gemma3_facts_records.jsonl")).unwrap();
    for name in ["gemma3_peft_qv", "gemma3_ours_qv"] {
        let a = pocketlora::internals::lora::load(&golden(&format!("real/{name}")), &model.cfg)
            .unwrap();
        model.set_adapter(Some(std::sync::Arc::new(a))).unwrap();
        let report = evaluate(&model, &records).unwrap();
        let want = json(&format!("real/{name}.peft_loss.json"));
        for (i, (got, w)) in report
            .per_record
            .iter()
            .zip(want["per_record"].as_array().unwrap())
            .enumerate()
        {
            let w = w.as_f64().unwrap();
            assert!(
                rel_diff(*got, w) < 1e-3,
                "{name} record {i}: {got} vs PEFT {w}"
            );
        }
    }
}

/// The adapter trained here, exported as a llama.cpp GGUF adapter and merged into the
/// base, gives the greedy text llama.cpp gives with them (`--lora`, and the merged file;
/// F32 KV cache, flash attention off), for the very bytes llama.cpp ran (FNV-1a checked).
#[test]
fn gemma3_270m_exported_and_merged_adapters_run_as_in_llama_cpp() {
    let Some(path) = real_model(GEMMA3) else {
        return;
    };
    let dir = scratch_dir("real-gemma3-export");
    let (adapter, merged) = (dir.join("qv.gguf"), dir.join("qv-merged.gguf"));
    let m = path.to_str().unwrap();
    let ours = golden("real/gemma3_ours_qv");
    let a = ours.to_str().unwrap();
    for args in [
        vec![
            "export",
            "--model",
            m,
            "--adapter",
            a,
            "--out",
            adapter.to_str().unwrap(),
        ],
        vec![
            "merge",
            "--model",
            m,
            "--adapter",
            a,
            "--out",
            merged.to_str().unwrap(),
        ],
    ] {
        let o = run(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let want = json("real/gemma3_ours_qv.llama_cpp.json");
    let fnv = |p: &std::path::Path| {
        format!(
            "{:016x}",
            common::synth::fnv1a64(&std::fs::read(p).unwrap())
        )
    };
    assert_eq!(
        fnv(&adapter),
        want["adapter_gguf_fnv1a64"].as_str().unwrap()
    );
    assert_eq!(fnv(&merged), want["merged_gguf_fnv1a64"].as_str().unwrap());
    let llama_text = |v: &serde_json::Value| {
        let s = v.as_str().unwrap();
        s[..s.find(" [end of text]").unwrap_or(s.len())]
            .trim_end()
            .to_string()
    };
    for r in want["runs"].as_array().unwrap() {
        let prompt = r["prompt"].as_str().unwrap();
        let gen = |model: &str, adapter: Option<&str>| {
            let mut args = vec![
                "generate", "--model", model, "--prompt", prompt, "-n", "16", "--temp", "0",
            ];
            if let Some(a) = adapter {
                args.extend(["--adapter", a]);
            }
            stdout(&run(&args)).trim_end().to_string()
        };
        let with_adapter = gen(m, Some(adapter.to_str().unwrap()));
        let with_merged = gen(merged.to_str().unwrap(), None);
        assert_eq!(
            with_adapter,
            format!("{prompt}{}", llama_text(&r["llama_cpp_with_adapter"]))
        );
        assert_eq!(
            with_merged,
            format!("{prompt}{}", llama_text(&r["llama_cpp_merged"]))
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Gemma's chat template on a Gemma 3 file that carries it (the real 270M is a base model
/// without one: a copy of it with `tokenizer.chat_template` set to Gemma's template, as
/// llama.cpp ships it in models/templates/google-gemma-2-2b-it.jinja): `--chat` renders
/// `<start_of_turn>user … <end_of_turn>` and opens the model's turn, and chat records
/// train the model's turns — after training, `--chat` with a trained question answers as
/// trained.
#[test]
fn gemma3_270m_chat_template_renders_and_trains() {
    const GEMMA_TEMPLATE: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";
    let Some(path) = real_model(GEMMA3) else {
        return;
    };
    let dir = scratch_dir("real-gemma3-chat");
    let with_template = dir.join("gemma3-chat.gguf");
    let mut w =
        pocketlora::internals::gguf::GgufWriter::copy_of(&GgufFile::open(&path).unwrap()).unwrap();
    w.set(
        "tokenizer.chat_template",
        pocketlora::internals::gguf::Value::String(GEMMA_TEMPLATE.into()),
    );
    w.write_file(&with_template).unwrap();
    let m = with_template.to_str().unwrap();
    let q = "Where does my sister Alice live?";
    // The rendered prompt, as ids, is Gemma's turn format.
    let o = run(&[
        "generate", "--model", m, "--chat", q, "-n", "1", "--temp", "0", "--ids",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Vec<u32> = stdout(&o)
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let tok = Tokenizer::open(&with_template).unwrap();
    let want = tok.encode(
        &format!("<start_of_turn>user\n{q}<end_of_turn>\n<start_of_turn>model\n"),
        true,
        true,
    );
    assert_eq!(got[..got.len() - 1], want[..], "the rendered chat prompt");
    // Chat records train the model's turns.
    let data = dir.join("chat.jsonl");
    let rec = |q: &str, a: &str| {
        serde_json::json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
            .to_string()
    };
    std::fs::write(
        &data,
        [
            rec(q, "Alice lives in Lisbon."),
            rec("What is our wifi password?", "Orange tiger seven."),
            rec("Where is the spare key?", "Under the blue flower pot."),
        ]
        .join("\n"),
    )
    .unwrap();
    let out = dir.join("adapter");
    let o = run(&[
        "train",
        "--model",
        m,
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--rank",
        "8",
        "--lr",
        "2e-3",
        "--batch",
        "3",
        "--steps",
        "30",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&[
        "generate",
        "--model",
        m,
        "--adapter",
        out.to_str().unwrap(),
        "--chat",
        "What is our wifi password?",
        "-n",
        "12",
        "--temp",
        "0",
    ]);
    let answer = stdout(&o);
    assert!(
        answer.trim_start().starts_with("Orange tiger seven."),
        "{answer:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn smollm2_135m_learns_ten_facts_with_default_flags() {
    let Some(path) = real_model(SMOLLM2) else {
        return;
    };
    let dir = scratch_dir("real-smollm2-defaults");
    let (base, tuned, said) = crate::workflow::recall_with_defaults(&path, &dir);
    eprintln!("SmolLM2-135M-Instruct, default flags: base {base} of 10, trained {tuned} of 10");
    assert!(
        tuned >= 8 && base == 0,
        "base {base}, trained {tuned}: {said}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
