//! `pocketlora train`: LoRA fine-tuning from the command line — data in any supported
//! format, validation and early stopping, checkpoints and exact resume, a progress bar or
//! JSON events.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Map, Value};

use super::interrupt;
use crate::data::{hold_out, load_dataset, EncodeOptions, LoadOptions, TokenRecord};
use crate::error::{Error, Result};
use crate::lora::{peft, Adapter, LayerSelection, LoraConfig, LoraInit, Target};
use crate::memory::heap;
use crate::memory::plan::{human, plan_training, TrainRequest};
use crate::model::backward::{SavedDtype, WorkspaceShape};
use crate::model::Model;
use crate::tokenizer::chat::ChatTemplate;
use crate::tokenizer::Tokenizer;
use crate::train::run::{Event, Finish, Run, RunOptions};
use crate::train::{AdamWConfig, Schedule, TrainConfig};

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// GGUF base model (stays frozen).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Training data: JSONL ({"text"}, {"prompt","completion"}, {"messages"}, {"ids","mask"}) or .txt.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory: the adapter (PEFT format), its configuration, checkpoints.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// TOML or JSON file of flags (command-line flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the interrupted run in this directory from its newest checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// LoRA rank r.
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha (scale α/r, or α/√r with --rslora).
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f32,
    /// Rank-stabilised scale α/√r.
    #[arg(long)]
    pub rslora: bool,
    /// Dropout on the LoRA input path.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// all-linear, or a list of q,k,v,o,gate,up,down.
    #[arg(long, default_value = "all-linear")]
    pub targets: String,
    /// all, last:N, or a list of block indices like 0,3,5.
    #[arg(long, default_value = "all")]
    pub layers: String,
    /// Initialisation of A: kaiming (PEFT's default) or gaussian.
    #[arg(long, default_value = "kaiming")]
    pub init: String,
    /// Start from this PEFT adapter (its rank, alpha and targets are used).
    #[arg(long)]
    pub init_adapter: Option<PathBuf>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f32,
    /// cosine, linear or constant (after warmup).
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Optimizer steps (default: --epochs passes over the data).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Passes over the data (when --steps is not given).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Records per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Truncate records to this many tokens (default: the model's context length).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Pack several short records into each sequence of --seq-len tokens, attention kept
    /// inside each record (document masking: no record's loss changes). With --budget, the
    /// plan keeps --seq-len (give a shorter one to fit a smaller budget).
    #[arg(long)]
    pub pack: bool,
    /// Reshuffle the records every epoch (seeded by --seed).
    #[arg(long)]
    pub shuffle: bool,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f32,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Seed of the initialisation, shuffling, validation split and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Validation data (any training format).
    #[arg(long, conflicts_with = "valid_split")]
    pub valid: Option<PathBuf>,
    /// Hold out this fraction of the training records (seeded) for validation.
    #[arg(long)]
    pub valid_split: Option<f64>,
    /// Validate every N steps (default: 10 times per run, and at the end).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Stop after N validations without improvement; keep the best adapter.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Train on prompt tokens of prompt/completion records too.
    #[arg(long)]
    pub no_mask_prompt: bool,
    /// Skip (and count) malformed data lines instead of failing.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// Skip (and count) batches whose loss or gradient is not a finite number instead of
    /// stopping with an error (a whole epoch of them in a row still stops the run).
    #[arg(long)]
    pub skip_nonfinite: bool,
    /// Memory budget (K/M/G suffixes): the run is planned to stay inside it, or refused.
    #[arg(long, value_parser = super::args::parse_size)]
    pub budget: Option<u64>,
    /// Store saved activations as f32 (exact), bf16 or f16 (lossy; default: f32 unless the
    /// budget needs less).
    #[arg(long)]
    pub saved_activations: Option<String>,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Arithmetic of the products with the frozen weights: exact (f32) or fast (int8).
    #[arg(long, default_value = "exact", value_parser = crate::cli::args::parse_precision)]
    pub precision: crate::kernels::Precision,
    /// One JSON object per line: step, eval, checkpoint and done events.
    #[arg(long)]
    pub json: bool,
    /// No progress bar, only the final line.
    #[arg(long)]
    pub quiet: bool,
}

/// The settings that define a run's result: recorded in checkpoints and beside the adapter;
/// `--resume` must agree with them (only steps/epochs may grow).
fn recorded(a: &TrainArgs, model: &Path, threads: usize) -> Value {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    json!({
        "model": name(model), "data": a.data.as_deref().and_then(name), "rank": a.rank, "alpha": a.alpha, "rslora": a.rslora,
        "dropout": a.dropout, "targets": a.targets, "layers": a.layers, "init": a.init,
        "init_adapter": a.init_adapter.as_ref().map(|p| p.display().to_string()), "lr": a.lr, "schedule": a.schedule,
        "warmup": a.warmup, "steps": a.steps, "epochs": a.epochs, "batch": a.batch, "grad_accum": a.grad_accum,
        "seq_len": a.seq_len, "pack": a.pack, "shuffle": a.shuffle, "clip": a.clip, "weight_decay": a.weight_decay, "seed": a.seed,
        "valid": a.valid.as_deref().and_then(name), "valid_split": a.valid_split, "eval_every": a.eval_every,
        "patience": a.patience, "no_mask_prompt": a.no_mask_prompt, "skip_bad_lines": a.skip_bad_lines, "threads": threads,
        "precision": a.precision.name(),
    })
}

/// Names the first flag whose value differs from the recorded run.
fn check_agrees(recorded: &Value, now: &Value) -> Result<()> {
    let (Some(r), Some(n)) = (recorded.as_object(), now.as_object()) else {
        return Ok(());
    };
    for (k, v) in n {
        if k == "steps" || k == "epochs" {
            continue;
        }
        let was = r.get(k).unwrap_or(&Value::Null);
        if was != v {
            return Err(Error::InvalidArgument(format!(
                "--resume: --{} is {v} now but the interrupted run used {was}; give the same value",
                k.replace('_', "-")
            )));
        }
    }
    Ok(())
}

/// Re-reads the command line with the config file's flags first, so explicit flags win.
pub(super) fn with_config_file(a: TrainArgs) -> Result<TrainArgs> {
    let Some(cfg) = &a.config else { return Ok(a) };
    // The subcommand as given (train or plan), then the file's flags, then the command line's.
    let sub = std::env::args().nth(1).unwrap_or_else(|| "train".into());
    let mut argv: Vec<String> = vec!["pocketlora".into(), sub];
    argv.extend(super::config_file::expand(cfg)?);
    argv.extend(std::env::args().skip(2));
    match super::Cli::try_parse_from_args(&argv) {
        Ok(super::Command::Train(t)) | Ok(super::Command::Plan(t)) => {
            Ok(TrainArgs { config: None, ..*t })
        }
        Ok(_) => Err(Error::InvalidArgument(
            "--config: not a train command".into(),
        )),
        Err(e) => Err(Error::InvalidArgument(format!(
            "--config {}: {e}",
            cfg.display()
        ))),
    }
}

pub(super) fn load_records(
    path: &Path,
    model: &Model,
    a: &TrainArgs,
    seq_len: usize,
    quiet: bool,
) -> Result<Vec<TokenRecord>> {
    let file = model.weights.file();
    // Token-id files need no tokenizer (building one for a large vocabulary costs memory).
    let ids_only = !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("txt"))
        && std::fs::read_to_string(path)
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| crate::data::DataFormat::detect(l) == Ok(crate::data::DataFormat::Ids))
            })
            .unwrap_or(false);
    let tok = if ids_only {
        None
    } else {
        Tokenizer::from_gguf(file).ok()
    };
    let chat = if ids_only {
        None
    } else {
        ChatTemplate::from_gguf(file).ok()
    };
    let opts = LoadOptions {
        encode: EncodeOptions {
            mask_prompt: !a.no_mask_prompt,
        },
        skip_bad_lines: a.skip_bad_lines,
    };
    let mut d = load_dataset(path, tok.as_ref(), chat.as_ref(), opts)?;
    if !d.skipped.is_empty() && !quiet {
        eprintln!(
            "{}: skipped {} malformed lines (first: line {}: {})",
            path.display(),
            d.skipped.len(),
            d.skipped[0].0,
            d.skipped[0].1
        );
    }
    for r in &mut d.records {
        r.ids.truncate(seq_len);
        r.targets.truncate(seq_len);
    }
    Ok(d.records)
}

pub fn run(a: TrainArgs) -> Result<()> {
    let mut a = with_config_file(a)?;
    if let Some(dir) = &a.resume {
        match &a.out {
            Some(o) if o != dir => return Err(Error::InvalidArgument("--resume DIR continues the run whose --out is DIR; give the same directory or leave --out out".into())),
            _ => a.out = Some(dir.clone()),
        }
    }
    let (Some(model_path), Some(data), Some(out)) =
        (a.model.clone(), a.data.clone(), a.out.clone())
    else {
        return Err(Error::InvalidArgument(
            "train needs --model, --data and --out (or --resume DIR)".into(),
        ));
    };
    if a.batch == 0 || a.grad_accum == 0 {
        return Err(Error::InvalidArgument(
            "--batch and --grad-accum must be at least 1".into(),
        ));
    }
    if let Some(f) = a.valid_split {
        if !(f > 0.0 && f < 1.0) {
            return Err(Error::InvalidArgument(format!(
                "--valid-split {f} must be between 0 and 1"
            )));
        }
    }
    let quiet = a.quiet || a.json;
    let saved = a
        .saved_activations
        .as_deref()
        .map(SavedDtype::parse)
        .transpose()?;
    let heap_start = heap::current();
    let mut model = Model::open(&model_path, a.threads)?;
    let heap_model = heap::current();
    heap::reset_peak();
    model.set_precision(a.precision);
    let seq_len = a.seq_len.unwrap_or(model.cfg.n_ctx);
    if seq_len < 2 {
        return Err(Error::InvalidArgument(format!(
            "--seq-len {seq_len} must be at least 2"
        )));
    }
    let mut records = load_records(&data, &model, &a, seq_len, quiet)?;
    let mut valid = match &a.valid {
        Some(p) => load_records(p, &model, &a, seq_len, quiet)?,
        None => Vec::new(),
    };
    if let Some(f) = a.valid_split {
        (records, valid) = hold_out(records, f, a.seed);
    }
    if records.iter().all(|r| r.n_targets() == 0) {
        return Err(Error::InvalidArgument(format!(
            "{}: no records with target tokens to train on",
            data.display()
        )));
    }
    if a.pack {
        let before = records.len();
        records = crate::data::pack(records, seq_len);
        if !quiet {
            eprintln!(
                "packed {before} records into {} sequences of up to {seq_len} tokens",
                records.len()
            );
        }
    }
    // What loading cost, before the adapter exists (the plan counts the adapter itself).
    let heap_data = heap::current();
    let loading_peak = heap::peak();
    let adapter = match &a.init_adapter {
        Some(dir) => peft::load(dir, &model.cfg)?,
        None => Adapter::new(
            &model.cfg,
            LoraConfig {
                r: a.rank,
                alpha: a.alpha,
                rslora: a.rslora,
                dropout: a.dropout,
                targets: Target::parse_list(&a.targets)?,
                layers: LayerSelection::parse(&a.layers)?,
                init: LoraInit::parse(&a.init)?,
                seed: a.seed,
            },
        )?,
    };
    let per_step = a.batch * a.grad_accum;
    let steps = a
        .steps
        .unwrap_or_else(|| (records.len() * a.epochs.unwrap_or(1)).div_ceil(per_step));
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
    // Plan the memory before anything big is allocated.
    let plan = match a.budget {
        Some(budget) => {
            let longest = records
                .iter()
                .chain(&valid)
                .map(|r| r.ids.len())
                .max()
                .unwrap_or(1);
            let req = TrainRequest {
                model: &model.cfg,
                lora: &adapter.config,
                seq_len: if a.pack {
                    Some(seq_len.min(longest))
                } else {
                    a.seq_len.map(|s| s.min(longest))
                },
                max_seq_len: longest,
                threads: model.threads(),
                budget,
                tokenizer_bytes: (heap_model.saturating_sub(heap_start)
                    + loading_peak.saturating_sub(heap_data))
                    as u64,
                data_bytes: heap_data.saturating_sub(heap_model) as u64,
                validation: !valid.is_empty(),
                keep_best: a.patience.is_some(),
                saved,
                precision: a.precision,
            };
            let plan = plan_training(&req)?;
            if plan.threads < model.threads() {
                model.set_threads(plan.threads)?;
            }
            for r in records.iter_mut().chain(valid.iter_mut()) {
                r.ids.truncate(plan.shape.capacity);
                r.targets.truncate(plan.shape.capacity);
            }
            Some(plan)
        }
        None => None,
    };
    let shape = match (&plan, saved) {
        (Some(p), _) => Some(p.shape),
        (None, Some(s)) => {
            let longest = records
                .iter()
                .chain(&valid)
                .map(|r| r.ids.len())
                .max()
                .unwrap_or(1);
            Some(WorkspaceShape::chunked(longest, longest, s))
        }
        (None, None) => None,
    };
    // Per-thread kernel buffers now, not during the first steps.
    if let (Some(p), false) = (&plan, quiet) {
        eprintln!("memory plan:\n{}", p.to_text());
    }
    let config = recorded(&a, &model_path, model.threads());
    if a.resume.is_some() {
        match Run::recorded_config(&out)? {
            Some(r) => check_agrees(&r, &config)?,
            None => {
                return Err(Error::InvalidArgument(format!(
                    "--resume {}: no checkpoint found there",
                    out.display()
                )))
            }
        }
    }
    let n_params = adapter.n_params();
    let n_targets: usize = records.iter().map(|r| r.n_targets()).sum();
    let opts = RunOptions {
        batch: a.batch,
        grad_accum: a.grad_accum,
        shuffle: a.shuffle,
        seed: a.seed,
        eval_every: a.eval_every.unwrap_or((steps / 10).max(1)),
        patience: a.patience,
        save_every: a.save_every,
        out: out.clone(),
        config,
        base_name: model_path.file_name().map_or_else(
            || model_path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        shape,
    };
    let n_records = records.len();
    let n_valid = valid.len();
    let mut run = Run::new(&model, adapter, cfg, records, valid, opts)?;
    run.set_skip_nonfinite(a.skip_nonfinite);
    let resumed = if a.resume.is_some() {
        run.resume()?
    } else {
        None
    };
    interrupt::install();
    let mut stdout = std::io::stdout().lock();
    if !quiet {
        eprintln!(
            "training {n_params} LoRA parameters on {n_records} records ({n_targets} target tokens{}) for {steps} steps of {per_step} records{}",
            if n_valid > 0 { format!(", {n_valid} held out") } else { String::new() },
            resumed.map_or(String::new(), |s| format!(", resuming at step {s}"))
        );
    }
    let pb = (!quiet).then(|| super::progress::bar(steps as u64, resumed.unwrap_or(0) as u64));
    let mut last_valid = None;
    let mut write_err = None;
    let mut emit = |v: Value| {
        if let Err(e) = writeln!(stdout, "{v}") {
            write_err.get_or_insert(e);
        }
    };
    let summary = run.run(|ev| {
        match ev {
            Event::Step { stats, epoch, tokens_per_s } => {
                if a.json {
                    emit(json!({"event": "step", "step": stats.step, "loss": stats.loss, "lr": stats.lr, "grad_norm": stats.grad_norm,
                                "tokens": stats.tokens, "seen_tokens": stats.seen_tokens, "tokens_per_s": tokens_per_s, "epoch": epoch,
                                "heap_bytes": heap::current()}));
                }
                if let Some(pb) = &pb {
                    let val = last_valid.map_or(String::new(), |v: f64| format!("  val {v:.4}"));
                    pb.set_message(format!("loss {:.4}{val}  {:.0} tok/s  heap {}", stats.loss, tokens_per_s, super::progress::mib(heap::current())));
                    pb.set_position(stats.step as u64);
                }
            }
            Event::Eval { step, loss, best } => {
                last_valid = Some(loss);
                if a.json {
                    emit(json!({"event": "eval", "step": step, "loss": loss, "best": best}));
                }
            }
            Event::Checkpoint { step, dir } => {
                if a.json {
                    emit(json!({"event": "checkpoint", "step": step, "dir": dir.display().to_string()}));
                }
            }
        }
        !interrupt::requested()
    })?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    if let Some(e) = write_err {
        return Err(Error::io("<stdout>", e));
    }
    let mut out_lock = std::io::stdout().lock();
    let io = |e| Error::io("<stdout>", e);
    if a.json {
        let mut m = Map::new();
        m.insert("event".into(), json!("done"));
        m.insert("adapter".into(), json!(out.display().to_string()));
        m.insert("steps".into(), json!(summary.steps));
        m.insert(
            "finish".into(),
            json!(format!("{:?}", summary.finish).to_lowercase()),
        );
        m.insert("first_loss".into(), json!(summary.first_loss));
        m.insert("final_loss".into(), json!(summary.last_loss));
        m.insert("best_valid_loss".into(), json!(summary.best_valid));
        m.insert("seconds".into(), json!(summary.seconds));
        m.insert("tokens_per_s".into(), json!(summary.tokens_per_s));
        m.insert("skipped_nonfinite".into(), json!(summary.skipped_nonfinite));
        m.insert("parameters".into(), json!(n_params));
        m.insert("peak_heap_bytes".into(), json!(heap::peak()));
        m.insert("budget_bytes".into(), json!(a.budget));
        if let Some(p) = &plan {
            m.insert("plan".into(), p.to_json());
        }
        writeln!(out_lock, "{}", Value::Object(m)).map_err(io)?;
    } else {
        let how = match summary.finish {
            Finish::Completed => String::new(),
            Finish::EarlyStopped => {
                " (stopped early: validation loss stopped improving; best adapter kept)".into()
            }
            Finish::Interrupted => {
                format!(" (interrupted; resume with --resume {})", out.display())
            }
        };
        let mut val = summary
            .best_valid
            .map_or(String::new(), |v| format!(", best validation loss {v:.4}"));
        if summary.skipped_nonfinite > 0 {
            val += &format!(", {} non-finite batches skipped", summary.skipped_nonfinite);
        }
        writeln!(
            out_lock,
            "saved adapter to {} after {} steps{how}: loss {:.4} → {:.4}{val}, {:.1} s, {:.0} tokens/s",
            out.display(),
            summary.steps,
            summary.first_loss,
            summary.last_loss,
            summary.seconds,
            summary.tokens_per_s
        )
        .map_err(io)?;
    }
    if let Some(b) = a.budget {
        let peak = heap::peak() as u64;
        if peak > b {
            return Err(Error::InvalidArgument(format!(
                "the run's peak heap {} exceeded its budget of {} (the adapter was saved; this is a planning bug, please report it)",
                human(peak),
                human(b)
            )));
        }
    }
    Ok(())
}
