//! `pocketlora eval`: loss and perplexity of records in any format `train` takes (text,
//! prompt/completion, chat, token ids), scored with the same masking; with `--compare`,
//! several adapters (and the base) side by side on the same records.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};

use pocketlora::Model;
use pocketlora::{evaluate_with, load_for_model, EncodeOptions, EvalReport, LoadOptions};
use pocketlora::{Error, Result};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// Records in any training format: JSONL ({"text"}, {"prompt","completion"},
    /// {"messages"}, {"ids","mask"}) or .txt.
    #[arg(long)]
    data: PathBuf,
    /// Apply a LoRA adapter: PEFT directory or llama.cpp GGUF adapter, optionally
    /// PATH:WEIGHT; repeat to apply the weighted sum of several.
    #[arg(long)]
    adapter: Vec<String>,
    /// Evaluate the base model and each of these adapters separately (PATH[:WEIGHT] each),
    /// side by side on the same records.
    #[arg(long, num_args = 1.., conflicts_with = "adapter")]
    compare: Vec<String>,
    /// Score prompt tokens of prompt/completion records too (as `train --no-mask-prompt`).
    #[arg(long)]
    no_mask_prompt: bool,
    /// Print JSON: {"loss", "perplexity", "n_targets", "per_record": [losses],
    /// "per_record_perplexity": [...]} (with
    /// --compare, {"compare": [...]} with one such object per adapter).
    #[arg(long)]
    json: bool,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Arithmetic of the products with the frozen weights: exact (f32) or fast (int8).
    #[arg(long, default_value = "exact", value_parser = crate::cli::args::parse_precision)]
    precision: pocketlora::Precision,
}

/// NaN (a record without targets) has no JSON form: null.
fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

fn report_json(r: &EvalReport) -> Value {
    json!({
        "loss": num(r.loss),
        "perplexity": num(r.loss.exp()),
        "n_targets": r.n_targets,
        "per_record": r.per_record.iter().map(|&l| num(l)).collect::<Vec<_>>(),
        "per_record_perplexity": r.per_record.iter().map(|&l| num(l.exp())).collect::<Vec<_>>(),
    })
}

pub fn run(a: EvalArgs) -> Result<()> {
    let mut model = Model::open(&a.model, a.threads)?;
    model.set_precision(a.precision);
    let opts = LoadOptions {
        encode: EncodeOptions {
            mask_prompt: !a.no_mask_prompt,
        },
        skip_bad_lines: false,
    };
    let records = load_for_model(&a.data, model.weights.file(), opts)?.records;
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("<stdout>", e);
    if !a.compare.is_empty() {
        let mut rows = vec![("base".to_string(), evaluate_with(&model, None, &records)?)];
        for spec in &a.compare {
            let adapter = super::adapters::load_all(std::slice::from_ref(spec), &model.cfg)?;
            rows.push((
                spec.clone(),
                evaluate_with(&model, adapter.as_ref(), &records)?,
            ));
        }
        if a.json {
            let v: Vec<Value> = rows
                .iter()
                .map(|(name, r)| {
                    let mut j = report_json(r);
                    j["adapter"] = json!(name);
                    j
                })
                .collect();
            writeln!(out, "{}", json!({ "compare": v })).map_err(io)?;
        } else {
            let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(4);
            writeln!(
                out,
                "{:width$}  {:>10}  {:>12}",
                "adapter", "loss", "perplexity"
            )
            .map_err(io)?;
            for (name, r) in &rows {
                writeln!(
                    out,
                    "{name:width$}  {:>10.6}  {:>12.4}",
                    r.loss,
                    r.loss.exp()
                )
                .map_err(io)?;
            }
            let n = rows[0].1.n_targets;
            writeln!(out, "over {} records, {n} target tokens", records.len()).map_err(io)?;
        }
        return Ok(());
    }
    if let Some(adapter) = super::adapters::load_all(&a.adapter, &model.cfg)? {
        model.set_adapter(Some(std::sync::Arc::new(adapter)))?;
    }
    let report = evaluate_with(&model, model.adapter().map(|x| &**x), &records)?;
    if a.json {
        writeln!(out, "{}", report_json(&report)).map_err(io)?;
    } else {
        for (i, (l, r)) in report.per_record.iter().zip(&records).enumerate() {
            writeln!(
                out,
                "record {i}: loss {l:.6}, perplexity {:.4} over {} targets",
                l.exp(),
                r.n_targets()
            )
            .map_err(io)?;
        }
        writeln!(
            out,
            "mean loss {:.6}, perplexity {:.4} over {} target tokens",
            report.loss,
            report.loss.exp(),
            report.n_targets
        )
        .map_err(io)?;
    }
    Ok(())
}
