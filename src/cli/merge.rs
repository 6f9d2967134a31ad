//! `pocketlora merge`: fold an adapter into the base model's weights (or take it out with
//! `--unmerge`), re-quantizing tensor by tensor; reports each merged tensor's
//! re-quantization error and, with `--data`, the eval loss of adapter-at-run-time vs merged.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};

use super::adapters::load_all;
use pocketlora::read_ids_jsonl;
use pocketlora::GgmlType;
use pocketlora::GgufFile;
use pocketlora::{combine, Adapter};
use pocketlora::{evaluate_with, EvalReport};
use pocketlora::{merge_file, MergeOptions};
use pocketlora::{Error, Result};
use pocketlora::{Model, ModelConfig};

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The base GGUF model (with --unmerge: the merged model).
    #[arg(long)]
    model: PathBuf,
    /// Adapter: PEFT directory or GGUF adapter, optionally PATH:WEIGHT; repeat to merge the
    /// weighted sum of several.
    #[arg(long, required = true)]
    adapter: Vec<String>,
    /// S in W0 + S·(α/r)·B·A.
    #[arg(long, default_value_t = 1.0)]
    scale: f32,
    /// Output GGUF file.
    #[arg(long)]
    out: PathBuf,
    /// Type of the merged tensors: same (each keeps its own), f32, f16, bf16, q8_0, q4_0,
    /// q4_k, q6_k. Other tensors are copied as they are.
    #[arg(long = "type", default_value = "same")]
    ty: String,
    /// Subtract the adapter instead (undo an earlier merge).
    #[arg(long)]
    unmerge: bool,
    /// With --unmerge: the original base, to report the largest difference from it.
    #[arg(long)]
    original: Option<PathBuf>,
    /// Token records (as for eval): compare the loss of the adapter applied at run time
    /// with the merged model's.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn parse_type(s: &str) -> Result<Option<GgmlType>> {
    if s.eq_ignore_ascii_case("same") {
        return Ok(None);
    }
    GgmlType::from_name(s).map(Some).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "--type {s:?}: expected same, f32, f16, bf16, q8_0, q4_0, q4_k or q6_k"
        ))
    })
}

pub fn run(a: MergeArgs) -> Result<()> {
    let out_type = parse_type(&a.ty)?;
    if a.original.is_some() && !a.unmerge {
        return Err(Error::InvalidArgument(
            "--original is for --unmerge (the base the adapter was merged into)".into(),
        ));
    }
    let base = GgufFile::open(&a.model)?;
    let cfg = ModelConfig::from_gguf(&base)?;
    let Some(adapter) = load_all(&a.adapter, &cfg)? else {
        return Err(Error::InvalidArgument("give at least one --adapter".into()));
    };
    let original = match &a.original {
        Some(p) => Some(GgufFile::open(p)?),
        None => None,
    };
    let opts = MergeOptions {
        scale: a.scale,
        out_type,
        unmerge: a.unmerge,
        threads: a.threads,
    };
    let report = merge_file(&base, &adapter, &opts, original.as_ref(), &a.out)?;
    drop(base);
    let eval = match &a.data {
        Some(d) => Some(compare(&a, &adapter, d)?),
        None => None,
    };
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("<stdout>", e);
    let num = |x: f64| if x.is_finite() { json!(x) } else { Value::Null };
    if a.json {
        let tensors: Vec<Value> = report
            .tensors
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "type_in": t.ty_in.name(),
                    "type_out": t.ty_out.name(),
                    "requant_rel_rms": num(t.requant_rel_rms),
                    "delta_rel_rms": num(t.delta_rel_rms),
                    "max_abs_diff_original": t.max_abs_diff_original.map(num),
                })
            })
            .collect();
        let eval = eval.as_ref().map(|(rt, merged)| {
            json!({
                "runtime_adapter": {"loss": num(rt.loss), "per_record": rt.per_record.iter().map(|&x| num(x)).collect::<Vec<_>>()},
                "merged": {"loss": num(merged.loss), "per_record": merged.per_record.iter().map(|&x| num(x)).collect::<Vec<_>>()},
                "max_abs_diff": num(max_diff(rt, merged)),
            })
        });
        let v = json!({
            "out": a.out.display().to_string(),
            "unmerge": a.unmerge,
            "tensors": tensors,
            "copied": report.copied,
            "max_requant_rel_rms": num(report.max_requant_rel_rms()),
            "max_abs_diff_original": report.max_abs_diff_original().map(num),
            "eval": eval,
        });
        writeln!(out, "{v}").map_err(io)?;
        return Ok(());
    }
    for t in &report.tensors {
        let orig = t
            .max_abs_diff_original
            .map_or(String::new(), |d| format!("  max |Δ original| {d:.3e}"));
        writeln!(
            out,
            "{:<28} {:>4} → {:<4}  re-quantization error {:.3e} (rel RMS)  update {:.3e} (rel RMS){orig}",
            t.name,
            t.ty_in.name(),
            t.ty_out.name(),
            t.requant_rel_rms,
            t.delta_rel_rms
        )
        .map_err(io)?;
    }
    writeln!(
        out,
        "{} {} tensors, copied {}; largest re-quantization error {:.3e}; wrote {}",
        if a.unmerge { "unmerged" } else { "merged" },
        report.tensors.len(),
        report.copied,
        report.max_requant_rel_rms(),
        a.out.display()
    )
    .map_err(io)?;
    if let Some(d) = report.max_abs_diff_original() {
        writeln!(out, "largest difference from the original base: {d:.3e}").map_err(io)?;
    } else if a.unmerge {
        writeln!(
            out,
            "(unmerging is approximate; pass --original BASE.gguf to measure the difference from the original base)"
        )
        .map_err(io)?;
    }
    if let Some((rt, merged)) = &eval {
        writeln!(
            out,
            "eval loss: adapter at run time {:.6}, merged {:.6} over {} targets; largest per-record difference {:.3e}",
            rt.loss,
            merged.loss,
            rt.n_targets,
            max_diff(rt, merged)
        )
        .map_err(io)?;
    }
    Ok(())
}

/// (adapter applied at run time, adapter merged in) over the records of `data`: for a
/// merge, base + adapter vs the output; for an unmerge, the input vs output + adapter.
fn compare(a: &MergeArgs, adapter: &Adapter, data: &PathBuf) -> Result<(EvalReport, EvalReport)> {
    let records = read_ids_jsonl(data)?;
    let scaled = combine(&[(adapter, a.scale)])?;
    let input = Model::open(&a.model, a.threads)?;
    let output = Model::open(&a.out, a.threads)?;
    if a.unmerge {
        let rt = evaluate_with(&output, Some(&scaled), &records)?;
        Ok((rt, evaluate_with(&input, None, &records)?))
    } else {
        let rt = evaluate_with(&input, Some(&scaled), &records)?;
        Ok((rt, evaluate_with(&output, None, &records)?))
    }
}

fn max_diff(x: &EvalReport, y: &EvalReport) -> f64 {
    x.per_record
        .iter()
        .zip(&y.per_record)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}
