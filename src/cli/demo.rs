//! `pocketlora demo`: the first thing to run. Fine-tunes the bundled aidreams260K model
//! (embedded in the binary, so it works from any directory and offline) on six bundled
//! one-line personal facts, and shows the difference: evaluation loss and greedy
//! continuations of each fact's first words, before and after; then writes the adapter.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use pocketlora::evaluate_with;
use pocketlora::heap;
use pocketlora::Event;
use pocketlora::GgufFile;
use pocketlora::Model;
use pocketlora::Tokenizer;
use pocketlora::{generate_with, GenerateParams, SamplerConfig};
use pocketlora::{Adapter, LoraConfig};
use pocketlora::{AdapterInit, Length, Resume, Schedule, Session, TrainSpec};
use pocketlora::{EncodeOptions, Encoder, RawRecord, TokenRecord};
use pocketlora::{Error, Result};

const MODEL: &[u8] = include_bytes!("../../assets/aidreams260K-q8_0.gguf");
const FACTS: &str = include_str!("../../assets/demo/facts.jsonl");
/// Words of each fact given as the prompt.
const PROMPT_WORDS: usize = 3;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where to write the adapter.
    #[arg(long, default_value = "pocketlora-demo-adapter")]
    out: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print one JSON object with the figures instead of the story.
    #[arg(long)]
    json: bool,
}

fn facts() -> Vec<String> {
    FACTS
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect()
}

/// Greedy continuation of the first words of `fact`, as text (prompt included).
fn continue_fact(
    model: &Model,
    adapter: Option<&Adapter>,
    tok: &Tokenizer,
    fact: &str,
) -> Result<String> {
    let prompt: Vec<&str> = fact.split_whitespace().take(PROMPT_WORDS).collect();
    let prompt = prompt.join(" ");
    let ids = tok.encode(&prompt, true, false);
    let params = GenerateParams {
        max_new: 48,
        sampler: SamplerConfig::greedy(),
        stop_ids: tok.eog_ids().to_vec(),
    };
    let (new, _) = generate_with(model, adapter, &ids, &params, |_| true)?;
    // Decode prompt and continuation together so the space between them survives.
    let body: Vec<u32> = ids
        .iter()
        .chain(&new)
        .copied()
        .filter(|&t| Some(t) != tok.bos() && !tok.is_eog(t))
        .collect();
    tok.decode(&body)
}

pub fn run(a: DemoArgs) -> Result<()> {
    let file = Arc::new(GgufFile::from_bytes(MODEL.to_vec())?);
    let model = Arc::new(Model::from_file(file.clone(), a.threads)?);
    let tok = Tokenizer::from_gguf(&file)?;
    let facts = facts();
    let enc = Encoder {
        tok: &tok,
        chat: None,
        opts: EncodeOptions::default(),
    };
    let records: Vec<TokenRecord> = facts
        .iter()
        .map(|f| enc.encode(&RawRecord::Text(f.clone())))
        .collect::<std::result::Result<_, _>>()
        .map_err(Error::InvalidArgument)?;
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("<stdout>", e);
    let say = !a.json;
    let before_loss = evaluate_with(&model, None, &records)?.loss;
    let before: Vec<String> = facts
        .iter()
        .map(|f| continue_fact(&model, None, &tok, f))
        .collect::<Result<_>>()?;
    if say {
        let base_params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
        writeln!(
            out,
            "pocketlora demo: teaching the bundled aidreams260K model ({base_params} parameters, trained on machine-written \"AI dream\" texts) six personal facts.\n"
        )
        .map_err(io)?;
        writeln!(
            out,
            "before: loss on the facts {before_loss:.3}; the model continues their first words as:"
        )
        .map_err(io)?;
        for t in &before {
            writeln!(out, "  {t}").map_err(io)?;
        }
    }
    let mut extra = serde_json::Map::new();
    extra.insert("demo".into(), json!(true));
    let spec = TrainSpec {
        adapter: AdapterInit::New(LoraConfig {
            r: 16,
            alpha: 32.0,
            ..LoraConfig::default()
        }),
        lr: 5e-3,
        schedule: Schedule::Constant,
        length: Length::Steps(a.steps),
        batch: records.len(),
        out: Some(a.out.clone()),
        // Running the demo again replaces its own earlier output (and nothing else).
        overwrite: is_demo_output(&a.out),
        base_name: "aidreams260K-q8_0.gguf".into(),
        extra,
        ..TrainSpec::default()
    };
    let mut session = Session::new(model.clone(), spec)?;
    let n_params = session.adapter().map_or(0, |x| x.n_params());
    session.add(records.clone(), false)?;
    let mut run = session.start(Resume::No)?.run;
    let pb = say.then(|| super::progress::bar(a.steps as u64, 0));
    if say {
        writeln!(out, "\ntraining a rank-16 LoRA adapter ({n_params} parameters; the base stays frozen) for {} steps ...", a.steps).map_err(io)?;
    }
    let summary = run.run(|ev| {
        if let (
            Event::Step {
                stats,
                tokens_per_s,
                ..
            },
            Some(pb),
        ) = (&ev, &pb)
        {
            pb.set_message(format!(
                "loss {:.3}  {:.0} tok/s  heap {}",
                stats.loss,
                tokens_per_s,
                super::progress::mib(heap::current())
            ));
            pb.set_position(stats.step as u64);
        }
        true
    })?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let trained = run.trainer().adapter();
    let after_loss = evaluate_with(&model, Some(trained), &records)?.loss;
    let after: Vec<String> = facts
        .iter()
        .map(|f| continue_fact(&model, Some(trained), &tok, f))
        .collect::<Result<_>>()?;
    let recalled = |outs: &[String]| {
        outs.iter()
            .zip(&facts)
            .filter(|(o, f)| o.trim() == f.trim())
            .count()
    };
    let (r_before, r_after) = (recalled(&before), recalled(&after));
    if a.json {
        let v = json!({"loss_before": before_loss, "loss_after": after_loss, "recalled_before": r_before, "recalled_after": r_after,
                       "facts": facts.len(), "steps": summary.steps, "seconds": summary.seconds, "peak_heap_bytes": heap::peak(),
                       "adapter": a.out.display().to_string(), "before": before, "after": after});
        writeln!(out, "{v}").map_err(io)?;
        return Ok(());
    }
    writeln!(
        out,
        "done in {:.1} s (peak heap {}).\n\nafter: loss on the facts {after_loss:.3}; the model continues their first words as:",
        summary.seconds,
        super::progress::mib(heap::peak())
    )
    .map_err(io)?;
    for (t, f) in after.iter().zip(&facts) {
        let mark = if t.trim() == f.trim() { "✓" } else { " " };
        writeln!(out, "{mark} {t}").map_err(io)?;
    }
    writeln!(
        out,
        "\n{r_after} of {} facts recalled verbatim (before: {r_before}). The adapter is in {}/ (PEFT format); try\n  {} generate --model assets/aidreams260K-q8_0.gguf --adapter {} --prompt \"Our wifi password\" -n 20 --temp 0",
        facts.len(),
        a.out.display(),
        this_program(),
        a.out.display()
    )
    .map_err(io)?;
    Ok(())
}

/// Whether `dir` holds an earlier demo's run (which the demo may replace).
fn is_demo_output(dir: &std::path::Path) -> bool {
    std::fs::read_to_string(dir.join("pocketlora_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["config"]["demo"] == json!(true))
}

/// How to run this program again from here: `pocketlora` when that is what is on the
/// PATH, else this executable's path (relative to the working directory when inside it:
/// `cargo run` puts nothing on the PATH).
fn this_program() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "pocketlora".into();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            d.join("pocketlora")
                .canonicalize()
                .is_ok_and(|c| exe.canonicalize().is_ok_and(|e| e == c))
        })
    });
    if on_path {
        return "pocketlora".into();
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    match exe.strip_prefix(&cwd) {
        Ok(rel) => format!("./{}", rel.display()),
        Err(_) => exe.display().to_string(),
    }
}
