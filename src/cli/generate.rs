//! `pocketlora generate`: continue a prompt of token ids.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::args::parse_ids;
use crate::error::{Error, Result};
use crate::infer::{end_of_generation_ids, generate, GenerateParams, SamplerConfig};
use crate::model::Model;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// Prompt as token ids: 1,2,3
    #[arg(long)]
    prompt_ids: String,
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
    /// Print the whole sequence (prompt and generated) as space-separated ids on one line.
    #[arg(long)]
    ids: bool,
    /// Apply this LoRA adapter (PEFT directory).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let prompt = parse_ids(&a.prompt_ids)
        .map_err(|e| Error::InvalidArgument(format!("--prompt-ids: {e}")))?;
    let mut model = Model::open(&a.model, a.threads)?;
    if let Some(dir) = &a.adapter {
        let adapter = crate::lora::peft::load(dir, &model.cfg)?;
        model.set_adapter(Some(std::sync::Arc::new(adapter)))?;
    }
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
        stop_ids: end_of_generation_ids(model.weights.file())?,
    };
    let (new, _) = generate(&model, &prompt, &params, |_| true)?;
    let all: Vec<String> = prompt.iter().chain(&new).map(|t| t.to_string()).collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", all.join(" ")).map_err(|e| Error::io("<stdout>", e))?;
    Ok(())
}
