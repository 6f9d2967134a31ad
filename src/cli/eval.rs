//! `pocketlora eval`: mean cross-entropy of token records.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use pocketlora::evaluate;
use pocketlora::read_ids_jsonl;
use pocketlora::Model;
use pocketlora::{Error, Result};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// JSONL records {"ids": [...], "mask": [...]}; mask[i] = 1 scores token i.
    #[arg(long)]
    data: PathBuf,
    /// Apply a LoRA adapter: PEFT directory or llama.cpp GGUF adapter, optionally
    /// PATH:WEIGHT; repeat to apply the weighted sum of several.
    #[arg(long)]
    adapter: Vec<String>,
    /// Print one JSON object {"per_record": [...], "loss": x, "n_targets": n}.
    #[arg(long)]
    json: bool,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Arithmetic of the products with the frozen weights: exact (f32) or fast (int8).
    #[arg(long, default_value = "exact", value_parser = crate::cli::args::parse_precision)]
    precision: pocketlora::Precision,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let records = read_ids_jsonl(&a.data)?;
    let mut model = Model::open(&a.model, a.threads)?;
    model.set_precision(a.precision);
    if let Some(adapter) = super::adapters::load_all(&a.adapter, &model.cfg)? {
        model.set_adapter(Some(std::sync::Arc::new(adapter)))?;
    }
    let report = evaluate(&model, &records)?;
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("<stdout>", e);
    if a.json {
        // NaN (a record without targets) has no JSON form: write null.
        let num = |x: f64| {
            if x.is_finite() {
                json!(x)
            } else {
                serde_json::Value::Null
            }
        };
        let v = json!({
            "per_record": report.per_record.iter().map(|&x| num(x)).collect::<Vec<_>>(),
            "loss": num(report.loss),
            "n_targets": report.n_targets,
        });
        writeln!(out, "{v}").map_err(io)?;
    } else {
        for (i, (l, r)) in report.per_record.iter().zip(&records).enumerate() {
            writeln!(
                out,
                "record {i}: loss {l:.6} over {} targets",
                r.n_targets()
            )
            .map_err(io)?;
        }
        writeln!(
            out,
            "mean loss {:.6} over {} target tokens",
            report.loss, report.n_targets
        )
        .map_err(io)?;
    }
    Ok(())
}
