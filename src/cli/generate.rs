//! `pocketlora generate`: continue a prompt — text (`--prompt`), one chat message rendered with
//! the model's template (`--chat`), or token ids (`--prompt-ids`) — and print the text as it is
//! generated, or all ids at the end (`--ids`).

use std::io::Write;
use std::path::PathBuf;

use clap::{ArgGroup, Args};

use super::args::parse_ids;
use pocketlora::heap;
use pocketlora::Model;
use pocketlora::Tokenizer;
use pocketlora::{
    end_of_generation_ids, generate_limited, GenerateLimits, GenerateParams, SamplerConfig,
};
use pocketlora::{plan_generation, GenerateRequest};
use pocketlora::{ChatTemplate, Message};
use pocketlora::{Error, Result};

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["prompt", "chat", "prompt_ids"])))]
pub struct GenerateArgs {
    /// GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// Prompt text, tokenized with the model's tokenizer (BOS added if the model asks for it).
    #[arg(long)]
    prompt: Option<String>,
    /// A user message, rendered with the model's chat template and the assistant's turn opened.
    #[arg(long)]
    chat: Option<String>,
    /// Prompt as token ids: 1,2,3
    #[arg(long)]
    prompt_ids: Option<String>,
    /// New tokens at most (generation also stops at an end-of-generation token or a full context).
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n: usize,
    /// Temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling threshold (1 = off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens below this fraction of the best token's probability (0 = off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Random seed (default: different every run).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the whole sequence (prompt and generated) as space-separated ids on one line
    /// instead of text.
    #[arg(long)]
    ids: bool,
    /// Apply a LoRA adapter: PEFT directory or llama.cpp GGUF adapter, optionally
    /// PATH:WEIGHT; repeat to apply the weighted sum of several.
    #[arg(long)]
    adapter: Vec<String>,
    /// Memory budget (K/M/G suffixes): prompt chunk and KV cache are planned to fit, or the
    /// run is refused.
    #[arg(long, value_parser = super::args::parse_size)]
    budget: Option<u64>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Arithmetic of the products with the frozen weights: exact (f32) or fast (int8).
    #[arg(long, default_value = "exact", value_parser = crate::cli::args::parse_precision)]
    precision: pocketlora::Precision,
}

fn io_err(e: std::io::Error) -> Error {
    Error::io("<stdout>", e)
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let mut model = Model::open(&a.model, a.threads)?;
    model.set_precision(a.precision);
    if let Some(adapter) = super::adapters::load_all(&a.adapter, &model.cfg)? {
        model.set_adapter(Some(std::sync::Arc::new(adapter)))?;
    }
    let file = model.weights.file();
    // The tokenizer is needed for text in or out; `--prompt-ids --ids` works without one.
    let needs_tok = a.prompt_ids.is_none() || !a.ids;
    let tok = if needs_tok {
        Some(Tokenizer::from_gguf(file)?)
    } else {
        None
    };
    let with_bos = |tok: &Tokenizer, mut ids: Vec<u32>| {
        if let (true, Some(b)) = (tok.add_bos(), tok.bos()) {
            ids.insert(0, b);
        }
        ids
    };
    // (prompt ids, whether the prompt is echoed as text)
    let (prompt, echo) = match (&a.prompt, &a.chat, &a.prompt_ids, &tok) {
        (Some(p), _, _, Some(t)) => (with_bos(t, t.encode(p, false, false)), true),
        (_, Some(c), _, Some(t)) => {
            let tmpl = ChatTemplate::from_gguf(file)?;
            let r = tmpl.render(&[Message::user(c.as_str())], true);
            (with_bos(t, t.encode(&r.text, false, true)), false)
        }
        (_, _, Some(ids), _) => (
            parse_ids(ids).map_err(|e| Error::InvalidArgument(format!("--prompt-ids: {e}")))?,
            true,
        ),
        _ => {
            return Err(Error::InvalidArgument(
                "give one of --prompt, --chat, --prompt-ids".into(),
            ))
        }
    };
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let params = GenerateParams {
        max_new: a.n,
        sampler: SamplerConfig {
            temperature: a.temp,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            seed,
        },
        stop_ids: match &tok {
            Some(t) => t.eog_ids().to_vec(),
            None => end_of_generation_ids(file)?,
        },
    };
    let limits = match a.budget {
        Some(budget) => {
            let max_rank = model
                .adapter()
                .map_or(0, |ad| ad.pairs().map(|p| p.r).max().unwrap_or(0));
            let req = GenerateRequest {
                model: &model.cfg,
                prompt_len: prompt.len(),
                max_new: a.n,
                max_rank,
                threads: model.threads(),
                budget,
                loaded_bytes: heap::current() as u64,
                precision: a.precision,
            };
            let plan = plan_generation(&req)?;
            if plan.threads < model.threads() {
                model.set_threads(plan.threads)?;
            }
            for n in &plan.notes {
                eprintln!("memory plan: {n}");
            }
            plan.limits
        }
        None => GenerateLimits::default(),
    };
    let adapter = model.adapter().cloned();
    let generate = |prompt: &[u32], params: &GenerateParams, f: &mut dyn FnMut(u32) -> bool| {
        generate_limited(&model, adapter.as_deref(), prompt, params, limits, f)
    };
    let mut out = std::io::stdout().lock();
    if a.ids {
        let (new, _) = generate(&prompt, &params, &mut |_| true)?;
        let all: Vec<String> = prompt.iter().chain(&new).map(|t| t.to_string()).collect();
        writeln!(out, "{}", all.join(" ")).map_err(io_err)?;
        return Ok(());
    }
    let Some(tok) = tok else {
        return Err(Error::InvalidArgument("no tokenizer".into()));
    };
    let mut dec = tok.decoder();
    for &id in &prompt {
        let piece = dec.push(id)?;
        if echo {
            out.write_all(piece.as_bytes()).map_err(io_err)?;
        }
    }
    out.flush().map_err(io_err)?;
    let mut failure: Option<Error> = None;
    generate(&prompt, &params, &mut |id| {
        let step = dec.push(id).and_then(|p| {
            out.write_all(p.as_bytes())
                .and_then(|()| out.flush())
                .map_err(io_err)
        });
        match step {
            Ok(()) => true,
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    let rest = dec.finish();
    writeln!(out, "{rest}").map_err(io_err)?;
    Ok(())
}
