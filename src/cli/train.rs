//! `pocketlora train`: LoRA fine-tuning from the command line — data in any supported
//! format, validation and early stopping, checkpoints and exact resume, a progress bar or
//! JSON events.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Map, Value};

use super::interrupt;
use std::sync::Arc;

use pocketlora::human_bytes as human;
use pocketlora::Model;
use pocketlora::SavedDtype;
use pocketlora::{account, heap};
use pocketlora::{AdapterInit, Length, Resume, Schedule, Session, Started, TrainSpec};
use pocketlora::{EncodeOptions, LoadOptions};
use pocketlora::{Error, Result};
use pocketlora::{Event, Finish};
use pocketlora::{LayerSelection, LoraConfig, LoraInit, Target};

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
    /// Continue the run in this directory from its newest intact checkpoint (every flag is
    /// taken from the run's record; flags given again must agree), or from a checkpoint
    /// DIR/checkpoints/step-N: in place with --overwrite, or into a new --out as a fork.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Replace a non-empty --out (only when the run ends, recoverably); with --resume of an
    /// older checkpoint in place, discard the newer ones.
    #[arg(long)]
    pub overwrite: bool,
    /// Resume although the data changed since the checkpointed run.
    #[arg(long)]
    pub allow_data_change: bool,
    /// Allow a --seq-len above the model's trained context.
    #[arg(long)]
    pub allow_long_context: bool,
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
    /// Peak learning rate (default 2e-4; for small data with neither --lr nor a length
    /// given, 2e-3 and enough epochs to learn the records, said when chosen).
    #[arg(long)]
    pub lr: Option<f32>,
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
    pub precision: pocketlora::Precision,
    /// One JSON object per line: step, eval, checkpoint and done events.
    #[arg(long)]
    pub json: bool,
    /// No progress bar, only the final line.
    #[arg(long)]
    pub quiet: bool,
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
        // clap's first line says what is wrong; its usage text does not belong in one line.
        Err(e) => Err(Error::InvalidArgument(format!(
            "--config {}: {}",
            cfg.display(),
            e.to_string()
                .lines()
                .next()
                .unwrap_or("invalid flags")
                .trim_start_matches("error: ")
        ))),
    }
}

/// The run the flags describe (data are added to the session separately).
pub(super) fn spec(a: &TrainArgs, model: &Path) -> Result<TrainSpec> {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let adapter = match &a.init_adapter {
        Some(dir) => AdapterInit::From(dir.clone()),
        None => AdapterInit::New(LoraConfig {
            r: a.rank,
            alpha: a.alpha,
            rslora: a.rslora,
            dropout: a.dropout,
            targets: Target::parse_list(&a.targets)?,
            layers: LayerSelection::parse(&a.layers)?,
            init: LoraInit::parse(&a.init)?,
            seed: a.seed,
        }),
    };
    let mut extra = Map::new();
    extra.insert("data".into(), json!(a.data.as_deref().and_then(name)));
    extra.insert("valid".into(), json!(a.valid.as_deref().and_then(name)));
    extra.insert("no_mask_prompt".into(), json!(a.no_mask_prompt));
    extra.insert("skip_bad_lines".into(), json!(a.skip_bad_lines));
    Ok(TrainSpec {
        adapter,
        lr: a.lr.unwrap_or(2e-4),
        schedule: Schedule::parse(&a.schedule)?,
        warmup: a.warmup,
        clip: a.clip,
        weight_decay: a.weight_decay,
        length: match a.steps {
            Some(s) => Length::Steps(s),
            None => Length::Epochs(a.epochs.unwrap_or(1)),
        },
        batch: a.batch,
        grad_accum: a.grad_accum,
        shuffle: a.shuffle,
        seed: a.seed,
        seq_len: a.seq_len,
        pack: a.pack,
        valid_split: a.valid_split,
        eval_every: a.eval_every,
        patience: a.patience,
        save_every: a.save_every,
        out: a.out.clone(),
        budget: a.budget,
        saved: a
            .saved_activations
            .as_deref()
            .map(SavedDtype::parse)
            .transpose()?,
        skip_nonfinite: a.skip_nonfinite,
        base_name: name(model).unwrap_or_else(|| model.display().to_string()),
        overwrite: a.overwrite,
        allow_data_change: a.allow_data_change,
        allow_long_context: a.allow_long_context,
        invocation: Some(json!(invocation()?)),
        auto_small_data: a.lr.is_none() && a.steps.is_none() && a.epochs.is_none(),
        extra,
    })
}

/// Opens the model (its heap counted as resident) and builds the session for the flags.
pub(super) fn open_session(a: &TrainArgs, model_path: &Path) -> Result<Session> {
    let (model, open) = account::measure(|| Model::open(model_path, a.threads));
    let mut model = model?;
    model.set_precision(a.precision);
    let mut session = Session::new(Arc::new(model), spec(a, model_path)?)?;
    session.count_resident(open.kept);
    Ok(session)
}

/// Reads a data file into the session; returns the number of lines skipped (and says so
/// unless `quiet`).
pub(super) fn load_into(
    session: &mut Session,
    path: &Path,
    a: &TrainArgs,
    valid: bool,
    quiet: bool,
) -> Result<usize> {
    let opts = LoadOptions {
        encode: EncodeOptions {
            mask_prompt: !a.no_mask_prompt,
        },
        skip_bad_lines: a.skip_bad_lines,
    };
    let skipped = session.load_data(path, opts, valid)?;
    if !skipped.is_empty() && !quiet {
        eprintln!(
            "{}: skipped {} malformed lines (first: line {}: {})",
            path.display(),
            skipped.len(),
            skipped[0].0,
            skipped[0].1
        );
    }
    Ok(skipped.len())
}

/// The flags of this invocation (a config file's first), as recorded for `--resume DIR`
/// alone: paths made absolute; where the run goes and how it may treat what is there left
/// out (they belong to each invocation).
fn invocation() -> Result<Vec<String>> {
    const PATHS: [&str; 4] = ["--model", "--data", "--valid", "--init-adapter"];
    const DROP_VALUE: [&str; 3] = ["--resume", "--out", "--config"];
    const DROP: [&str; 5] = [
        "--overwrite",
        "--allow-data-change",
        "--json",
        "--quiet",
        "--allow-long-context",
    ];
    let abs = |p: &str| {
        std::path::absolute(p).map_or_else(|_| p.to_string(), |q| q.display().to_string())
    };
    let given = given_flags()?;
    let mut out = Vec::new();
    let mut it = given.into_iter();
    while let Some(f) = it.next() {
        let (name, inline) = match f.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (f.clone(), None),
        };
        if DROP.contains(&name.as_str()) {
            continue;
        }
        if DROP_VALUE.contains(&name.as_str()) {
            if inline.is_none() {
                it.next();
            }
            continue;
        }
        if PATHS.contains(&name.as_str()) {
            let v = match inline {
                Some(v) => v,
                None => it.next().unwrap_or_default(),
            };
            out.extend([name, abs(&v)]);
            continue;
        }
        out.push(f);
    }
    Ok(out)
}

/// The flags as given: a `--config` file's, then the command line's.
fn given_flags() -> Result<Vec<String>> {
    let cli: Vec<String> = std::env::args().skip(2).collect();
    let mut flags = Vec::new();
    let mut it = cli.iter();
    while let Some(f) = it.next() {
        if f == "--config" {
            if let Some(p) = it.next() {
                flags.extend(super::config_file::expand(Path::new(p))?);
            }
        } else if let Some(p) = f.strip_prefix("--config=") {
            flags.extend(super::config_file::expand(Path::new(p))?);
        }
    }
    flags.extend(cli);
    Ok(flags)
}

/// Whether `dir` is one checkpoint (`RUN/checkpoints/step-N`) rather than a run.
fn is_checkpoint(dir: &Path) -> bool {
    dir.join("state.json").is_file()
}

/// `--resume`: where the run goes, how it resumes, and the flags completed from the run's
/// record (the record's flags first, so that flags given again win, then are checked
/// against the record by the session).
fn resolve_resume(mut a: TrainArgs) -> Result<(TrainArgs, Resume)> {
    let Some(dir) = a.resume.clone() else {
        return Ok((a, Resume::No));
    };
    let (resume, run_dir, recorded) = if is_checkpoint(&dir) {
        let run_dir = dir
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.clone());
        let cfg = pocketlora::checkpoint::recorded_config(&dir)?;
        (Resume::At(dir.clone()), run_dir, Some(cfg))
    } else {
        if let Some(o) = a.out.as_ref().filter(|o| *o != &dir) {
            return Err(Error::InvalidArgument(format!(
                "--resume {} continues the run there; --out {} is another directory (to fork a run, resume from one of its checkpoints: --resume {}/checkpoints/step-N --out NEW)",
                dir.display(),
                o.display(),
                dir.display()
            )));
        }
        let cfg = pocketlora::Run::recorded_config(&dir)?;
        (Resume::Required, dir.clone(), cfg)
    };
    if a.out.is_none() {
        a.out = Some(run_dir);
    }
    let flags = recorded
        .as_ref()
        .and_then(|c| c.get(pocketlora::INVOCATION))
        .and_then(|v| v.as_array())
        .map(|v| {
            v.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        });
    if let Some(flags) = flags {
        let mut argv: Vec<String> = vec!["pocketlora".into(), "train".into()];
        argv.extend(flags);
        argv.extend(given_flags()?);
        match super::Cli::try_parse_from_args(&argv) {
            Ok(super::Command::Train(t)) => {
                a = TrainArgs {
                    config: None,
                    resume: a.resume,
                    out: a.out,
                    ..*t
                }
            }
            Ok(_) => {}
            Err(e) => {
                return Err(Error::InvalidArgument(format!(
                    "--resume: the run's recorded flags do not parse with these: {e}"
                )))
            }
        }
    }
    Ok((a, resume))
}

/// The library's refusals in the command line's words (flags, not settings).
pub(super) fn in_flags(e: Error) -> Error {
    match e {
        Error::Setting { setting, msg } => {
            Error::InvalidArgument(format!("--{} {msg}", setting.replace('_', "-")))
        }
        Error::Resume(m) if pocketlora::DATA_SETTINGS.contains(&m.setting.as_str()) => {
            Error::InvalidArgument(format!(
                "--resume: the data differ from the checkpointed run's ({} {} now, {} then); give the same data, or --allow-data-change to continue on the new data",
                m.setting.replace('_', " "),
                m.now,
                m.was
            ))
        }
        Error::Resume(m) => Error::InvalidArgument(format!(
            "--resume: --{} is {} now but the interrupted run used {}; give the same value",
            m.setting.replace('_', "-"),
            m.now,
            m.was
        )),
        e => e,
    }
}

/// Runs `train`; returns the exit status (0, or 128 + the signal that interrupted it).
pub fn run(a: TrainArgs) -> Result<i32> {
    let a = with_config_file(a)?;
    let (a, resume) = resolve_resume(a)?;
    let (Some(model_path), Some(data), Some(out)) =
        (a.model.clone(), a.data.clone(), a.out.clone())
    else {
        return Err(Error::InvalidArgument(
            "train needs --model, --data and --out (or --resume DIR of a run started by `pocketlora train`)".into(),
        ));
    };
    let quiet = a.quiet || a.json;
    let mut session = open_session(&a, &model_path).map_err(in_flags)?;
    let mut skipped_lines = load_into(&mut session, &data, &a, false, quiet)?;
    if let Some(v) = &a.valid {
        skipped_lines += load_into(&mut session, v, &a, true, quiet)?;
    }
    let added = session.counts();
    let n_params = session.adapter().map_or(0, |x| x.n_params());
    let Started {
        mut run,
        plan,
        resumed,
        total_steps: steps,
        counts,
        truncated,
        notices,
    } = session.start(resume).map_err(in_flags)?;
    for n in &notices {
        if a.json {
            println!("{}", json!({"event": "notice", "message": n}));
        } else {
            eprintln!("note: {n}");
        }
    }
    if truncated.records > 0 {
        let msg = format!(
            "cut {} records to {} tokens (the longest had {}); give a longer --seq-len, or split long records, to train on all of them",
            truncated.records, truncated.to, truncated.longest
        );
        if a.json {
            println!(
                "{}",
                json!({"event": "truncated", "records": truncated.records, "longest": truncated.longest, "to": truncated.to})
            );
        } else {
            eprintln!("warning: {msg}");
        }
    }
    if a.pack && !quiet {
        eprintln!(
            "packed {} records into {} sequences of up to {} tokens",
            added.train - (counts.valid - added.valid),
            counts.train,
            session.seq_cap()
        );
    }
    if let (Some(p), false) = (&plan, quiet) {
        eprintln!("memory plan:\n{}", p.to_text());
    }
    let per_step = a.batch * a.grad_accum;
    let (n_records, n_valid, n_targets) = (counts.train, counts.valid, counts.target_tokens);
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
    if !quiet {
        eprintln!("{}", super::progress::loss_line(&out)?);
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
        m.insert("skipped_lines".into(), json!(skipped_lines));
        m.insert("warnings".into(), json!(summary.warnings()));
        m.insert("truncated_records".into(), json!(truncated.records));
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
        if skipped_lines > 0 {
            val += &format!(", {skipped_lines} malformed lines skipped");
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
    if !a.json {
        for w in summary.warnings() {
            eprintln!("warning: {w}");
        }
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
    Ok(match (summary.finish, interrupt::signal()) {
        (Finish::Interrupted, Some(sig)) => 128 + sig,
        _ => 0,
    })
}
