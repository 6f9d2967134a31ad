//! `pocketlora train`: LoRA fine-tuning on token records.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use crate::data::{read_ids_jsonl, TokenRecord};
use crate::error::{Error, Result};
use crate::lora::{peft, Adapter, LayerSelection, LoraConfig, LoraInit, Target};
use crate::model::Model;
use crate::safetensors::Dtype;
use crate::train::{AdamWConfig, RecordOrder, Schedule, TrainConfig, Trainer};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// GGUF base model (stays frozen).
    #[arg(long)]
    model: PathBuf,
    /// JSONL records {"ids": [...], "mask": [...]}; mask[i] = 1 trains on token i.
    #[arg(long)]
    data: PathBuf,
    /// Output directory for the adapter (PEFT format).
    #[arg(long)]
    out: PathBuf,
    /// LoRA rank r.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// LoRA alpha (scale α/r, or α/√r with --rslora).
    #[arg(long, default_value_t = 16.0)]
    alpha: f32,
    /// Rank-stabilised scale α/√r.
    #[arg(long)]
    rslora: bool,
    /// Dropout on the LoRA input path.
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// all-linear, or a list of q,k,v,o,gate,up,down.
    #[arg(long, default_value = "all-linear")]
    targets: String,
    /// all, last:N, or a list of block indices like 0,3,5.
    #[arg(long, default_value = "all")]
    layers: String,
    /// Initialisation of A: kaiming (PEFT's default) or gaussian.
    #[arg(long, default_value = "kaiming")]
    init: String,
    /// Start from this PEFT adapter (its rank, alpha and targets are used).
    #[arg(long)]
    init_adapter: Option<PathBuf>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    lr: f32,
    /// cosine, linear or constant (after warmup).
    #[arg(long, default_value = "cosine")]
    schedule: String,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Optimizer steps (default: --epochs passes over the data).
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<usize>,
    /// Passes over the data (when --steps is not given).
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Records per micro-batch.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Truncate records to this many tokens (default: the model's context length).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Reshuffle the records every epoch (seeded by --seed).
    #[arg(long)]
    shuffle: bool,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    clip: f32,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Seed of the initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Arithmetic of the products with the frozen weights: exact (f32) or fast (int8).
    #[arg(long, default_value = "exact", value_parser = crate::cli::args::parse_precision)]
    precision: crate::kernels::Precision,
    /// One JSON object per line: {"event": "step", ...} and a final {"event": "done", ...}.
    #[arg(long)]
    json: bool,
}

pub fn run(a: TrainArgs) -> Result<()> {
    if a.batch == 0 || a.grad_accum == 0 {
        return Err(Error::InvalidArgument(
            "--batch and --grad-accum must be at least 1".into(),
        ));
    }
    let mut model = Model::open(&a.model, a.threads)?;
    model.set_precision(a.precision);
    let seq_len = a.seq_len.unwrap_or(model.cfg.n_ctx);
    if seq_len < 2 {
        return Err(Error::InvalidArgument(format!(
            "--seq-len {seq_len} must be at least 2"
        )));
    }
    let mut records = read_ids_jsonl(&a.data)?;
    for r in &mut records {
        r.ids.truncate(seq_len);
        r.targets.truncate(seq_len);
    }
    let n_targets: usize = records.iter().map(|r| r.n_targets()).sum();
    if records.is_empty() || n_targets == 0 {
        return Err(Error::InvalidArgument(format!(
            "{}: no records with target tokens to train on",
            a.data.display()
        )));
    }
    let adapter = match &a.init_adapter {
        Some(dir) => peft::load(dir, &model.cfg)?,
        None => {
            let cfg = LoraConfig {
                r: a.rank,
                alpha: a.alpha,
                rslora: a.rslora,
                dropout: a.dropout,
                targets: Target::parse_list(&a.targets)?,
                layers: LayerSelection::parse(&a.layers)?,
                init: LoraInit::parse(&a.init)?,
                seed: a.seed,
            };
            Adapter::new(&model.cfg, cfg)?
        }
    };
    let per_step = a.batch * a.grad_accum;
    let steps = a
        .steps
        .unwrap_or_else(|| (records.len() * a.epochs).div_ceil(per_step));
    let cfg = TrainConfig {
        lr: a.lr,
        schedule: Schedule::parse(&a.schedule)?,
        warmup: a.warmup,
        total_steps: steps,
        clip: a.clip,
        adamw: AdamWConfig {
            weight_decay: a.weight_decay,
            ..AdamWConfig::default()
        },
        seed: a.seed,
    };
    let longest = records.iter().map(|r| r.ids.len()).max().unwrap_or(1);
    let n_params = adapter.n_params();
    let mut trainer = Trainer::new(&model, adapter, cfg, longest)?;
    let mut order = RecordOrder::new(records.len(), a.shuffle, a.seed);
    let mut out = std::io::stdout().lock();
    let io = |e| Error::io("<stdout>", e);
    let progress = (!a.json).then(|| progress_bar(steps as u64));
    if !a.json {
        eprintln!(
            "training {} LoRA parameters on {} records ({} target tokens) for {steps} steps of {per_step} records",
            n_params,
            records.len(),
            n_targets
        );
    }
    let start = Instant::now();
    let (mut first, mut last, mut seen) = (f64::NAN, f64::NAN, 0usize);
    for _ in 0..steps {
        let batch: Vec<&TokenRecord> = order
            .take(per_step)
            .into_iter()
            .map(|i| &records[i])
            .collect();
        let st = trainer.step(&batch)?;
        seen += st.seen_tokens;
        if first.is_nan() {
            first = st.loss;
        }
        last = st.loss;
        let tps = seen as f64 / start.elapsed().as_secs_f64().max(1e-9);
        if a.json {
            let v = json!({"event": "step", "step": st.step, "loss": st.loss, "lr": st.lr, "grad_norm": st.grad_norm,
                           "tokens": st.tokens, "seen_tokens": st.seen_tokens, "tokens_per_s": tps, "epoch": order.epoch()});
            writeln!(out, "{v}").map_err(io)?;
        } else if let Some(pb) = &progress {
            pb.set_message(format!(
                "loss {:.4}  lr {:.2e}  {:.0} tok/s",
                st.loss, st.lr, tps
            ));
            pb.inc(1);
        }
    }
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let secs = start.elapsed().as_secs_f64();
    let base = a.model.file_name().map_or_else(
        || a.model.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    peft::save(trainer.adapter(), &model.cfg, &a.out, &base, Dtype::F32)?;
    let tps = seen as f64 / secs.max(1e-9);
    if a.json {
        let v = json!({"event": "done", "adapter": a.out.display().to_string(), "steps": steps, "first_loss": first,
                       "final_loss": last, "seconds": secs, "tokens_per_s": tps, "parameters": n_params});
        writeln!(out, "{v}").map_err(io)?;
    } else {
        writeln!(
            out,
            "saved adapter to {} ({steps} steps, loss {first:.4} → {last:.4}, {secs:.1} s, {tps:.0} tokens/s)",
            a.out.display()
        )
        .map_err(io)?;
    }
    Ok(())
}

fn progress_bar(steps: u64) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(steps);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}
