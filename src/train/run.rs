//! A whole training run: steps over the records in order, periodic validation with early
//! stopping, periodic checkpoints, the final adapter — reported through events, so the
//! command line, the C ABI and tests drive the same loop.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::checkpoint::{self, RunState};
use super::history::{History, Record};
use super::order::RecordOrder;
use super::outdir::OutDir;
use super::trainer::{StepStats, TrainConfig, Trainer};
use crate::data::TokenRecord;
use crate::error::{Error, Result};
use crate::eval::evaluate_with;
use crate::fsutil::write_atomic;
use crate::lora::{peft, Adapter};
use crate::model::backward::WorkspaceShape;
use crate::model::Model;
use crate::safetensors::Dtype;

/// Loop settings besides the optimizer's.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub batch: usize,
    pub grad_accum: usize,
    pub shuffle: bool,
    pub seed: u64,
    /// Validate every N steps (0: only at the end).
    pub eval_every: usize,
    /// Stop after this many validations without improvement; the best adapter is kept.
    pub patience: Option<usize>,
    /// Checkpoint every N steps (0: only at the end).
    pub save_every: usize,
    /// Output directory: the adapter, `pocketlora_config.json`, `checkpoints/`, the
    /// history (`history.jsonl`, `loss.svg`: [`super::history`]). `None`:
    /// the run writes nothing (its adapter is taken from [`Run::result_adapter`]).
    pub out: Option<PathBuf>,
    /// The run's configuration as recorded in checkpoints and beside the adapter.
    pub config: Value,
    /// `base_model_name_or_path` written into the adapter config.
    pub base_name: String,
    /// Workspace shape from a memory plan; `None`: unchunked, exact, sized to the longest
    /// record.
    pub shape: Option<WorkspaceShape>,
}

/// What happened, as it happens.
#[derive(Debug)]
pub enum Event<'a> {
    Step {
        stats: StepStats,
        epoch: u64,
        tokens_per_s: f64,
    },
    Eval {
        step: usize,
        loss: f64,
        best: f64,
    },
    Checkpoint {
        step: usize,
        dir: &'a Path,
    },
}

/// Why the run ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Finish {
    Completed,
    /// Validation loss stopped improving.
    EarlyStopped,
    /// The event handler asked to stop (Ctrl-C, a cancel from an app).
    Interrupted,
}

/// What [`Run::run_until`] did.
#[derive(Clone, Copy, Debug)]
pub struct Steps {
    pub finish: Finish,
    /// Losses of the first and last step taken (NaN if none).
    pub first_loss: f64,
    pub last_loss: f64,
    /// Tokens run through the model.
    pub seen_tokens: usize,
    /// The step validation last ran at, if it ran.
    pub evaluated_at: Option<usize>,
    /// Batches skipped because their loss or gradient was not finite (`--skip-nonfinite`).
    pub skipped_nonfinite: usize,
}

/// How a run went.
#[derive(Clone, Debug)]
pub struct Summary {
    pub finish: Finish,
    pub steps: usize,
    pub first_loss: f64,
    pub last_loss: f64,
    pub best_valid: Option<f64>,
    pub seconds: f64,
    pub tokens_per_s: f64,
    /// Where the adapter was written (`None` for a run without an output directory).
    pub adapter_dir: Option<PathBuf>,
    /// Batches skipped because their loss or gradient was not finite (with
    /// [`Run::set_skip_nonfinite`]).
    pub skipped_nonfinite: usize,
}

impl Summary {
    /// What the user should hear about how the run went: a final training loss above 1.0
    /// means the adapter has most likely not learned its records.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.steps > 0 && self.last_loss > 1.0 {
            w.push(format!(
                "the final training loss {:.3} is above 1.0: the adapter has most likely not learned the records yet; train longer (more epochs or steps) or at a higher learning rate",
                self.last_loss
            ));
        }
        w
    }
}

/// A training run in progress.
pub struct Run {
    trainer: Trainer,
    order: RecordOrder,
    train: Vec<TokenRecord>,
    valid: Vec<TokenRecord>,
    opts: RunOptions,
    total_steps: usize,
    best: Option<(f64, Adapter)>,
    evals_since_best: usize,
    skip_nonfinite: bool,
    /// The claimed output directory (locked while the run lives).
    out_dir: Option<OutDir>,
    /// `OUT/history.jsonl` and `OUT/loss.svg` (with an output directory).
    history: Option<History>,
}

impl Run {
    pub fn new(
        model: Arc<Model>,
        adapter: Adapter,
        cfg: TrainConfig,
        train: Vec<TokenRecord>,
        valid: Vec<TokenRecord>,
        opts: RunOptions,
    ) -> Result<Run> {
        if opts.batch == 0 || opts.grad_accum == 0 {
            return Err(Error::InvalidArgument(
                "batch and grad-accum must be at least 1".into(),
            ));
        }
        if train.iter().all(|r| r.n_targets() == 0) {
            return Err(Error::InvalidArgument(
                "no records with target tokens to train on".into(),
            ));
        }
        let longest = train
            .iter()
            .chain(&valid)
            .map(|r| r.ids.len())
            .max()
            .unwrap_or(1);
        let total_steps = cfg.total_steps;
        let order = RecordOrder::new(train.len(), opts.shuffle, opts.seed);
        let shape = opts.shape.unwrap_or(WorkspaceShape::plain(longest));
        if shape.capacity < longest {
            return Err(Error::InvalidArgument(format!(
                "records of up to {longest} tokens do not fit the planned sequence length {}; truncate them first",
                shape.capacity
            )));
        }
        let trainer = Trainer::with_shape(model, adapter, cfg, shape)?;
        let history = opts.out.as_deref().map(History::new);
        Ok(Run {
            trainer,
            order,
            train,
            valid,
            opts,
            total_steps,
            best: None,
            evals_since_best: 0,
            skip_nonfinite: false,
            out_dir: None,
            history,
        })
    }

    /// Skip (and count, in [`Summary::skipped_nonfinite`]) batches whose loss or gradient is
    /// not finite instead of ending the run with [`Error::Numeric`]. A whole epoch of such
    /// batches in a row still ends it: the adapter itself has diverged then.
    pub fn set_skip_nonfinite(&mut self, on: bool) {
        self.skip_nonfinite = on;
    }

    /// Makes the run write into the claimed directory `dir` (held, and so locked, as long
    /// as the run lives; a replacement is put in place when the run finishes).
    pub fn claim_out(&mut self, dir: OutDir) {
        self.opts.out = Some(dir.write_to().to_path_buf());
        self.history = Some(History::new(dir.write_to()));
        self.out_dir = Some(dir);
    }

    /// Continues from the newest intact checkpoint in `out/checkpoints` (temporaries of
    /// killed writes are swept first; damaged checkpoints are passed over). Returns the
    /// step it resumes at, or `None` when there is no intact checkpoint.
    pub fn resume(&mut self) -> Result<Option<usize>> {
        let Some(out) = &self.opts.out else {
            return Ok(None);
        };
        let root = out.join("checkpoints");
        checkpoint::sweep_temporaries(&root)?;
        let Some(dir) = checkpoint::newest_intact(&root)?.0 else {
            return Ok(None);
        };
        self.resume_from(&dir).map(Some)
    }

    /// Continues from the checkpoint in `dir` (verified first); returns its step.
    pub fn resume_from(&mut self, dir: &Path) -> Result<usize> {
        if let Some(out) = &self.opts.out {
            checkpoint::sweep_temporaries(&out.join("checkpoints"))?;
        }
        let l = checkpoint::load(dir, self.trainer.adapter(), self.trainer.optimizer())?;
        self.trainer.restore(l.adapter, l.opt, l.state.step)?;
        self.order.seek(l.state.epoch, l.state.pos);
        self.evals_since_best = l.state.evals_since_best;
        self.best = match (l.state.best_valid, l.best) {
            (Some(v), Some(a)) => Some((v, a)),
            _ => None,
        };
        Ok(l.state.step)
    }

    /// The recorded configuration of the newest intact checkpoint in `out`, if any.
    pub fn recorded_config(out: &Path) -> Result<Option<Value>> {
        match checkpoint::newest_intact(&out.join("checkpoints"))?.0 {
            Some(dir) => checkpoint::recorded_config(&dir).map(Some),
            None => Ok(None),
        }
    }

    /// Writes a checkpoint of the run as it is now (at a step boundary) under
    /// `out/checkpoints`; returns its directory.
    pub fn checkpoint(&self) -> Result<PathBuf> {
        let Some(out) = &self.opts.out else {
            return Err(Error::InvalidArgument(
                "the run has no output directory to checkpoint into".into(),
            ));
        };
        let state = RunState {
            step: self.trainer.steps_done(),
            adam_t: self.trainer.optimizer().t,
            epoch: self.order.epoch(),
            pos: self.order.position(),
            best_valid: self.best.as_ref().map(|b| b.0),
            evals_since_best: self.evals_since_best,
            config: self.opts.config.clone(),
        };
        let best = self.best.as_ref().map(|b| &b.1);
        let dir = checkpoint::save(
            &out.join("checkpoints"),
            &state,
            self.trainer.adapter(),
            self.trainer.optimizer(),
            best,
        )?;
        if let Some(h) = &self.history {
            h.draw(state.step)?;
        }
        Ok(dir)
    }

    /// Mean validation loss with the adapter as it is now.
    pub fn validate(&self) -> Result<f64> {
        Ok(evaluate_with(
            self.trainer.model(),
            Some(self.trainer.adapter()),
            &self.valid,
        )?
        .loss)
    }

    /// Validates, tracks the best adapter; returns (loss, whether to stop).
    fn eval_step(&mut self) -> Result<(f64, bool)> {
        let loss = self.validate()?;
        let improved = self.best.as_ref().is_none_or(|b| loss < b.0);
        if improved {
            self.best = Some((loss, self.trainer.adapter().clone()));
            self.evals_since_best = 0;
        } else {
            self.evals_since_best += 1;
        }
        let stop = self
            .opts
            .patience
            .is_some_and(|p| self.evals_since_best >= p);
        Ok((loss, stop))
    }

    /// Runs to the end (or until `on_event` returns false, or the cancel flag is raised),
    /// then writes the adapter ([`Run::run_until`], then [`Run::finish`]).
    pub fn run(&mut self, mut on_event: impl FnMut(Event<'_>) -> bool) -> Result<Summary> {
        let start = Instant::now();
        let steps = self.run_until(self.total_steps, &mut on_event)?;
        self.finish(steps, start, on_event)
    }

    /// A flag that, raised from any thread, ends the current step before its next record
    /// (nothing of that step is applied, and the data cursor stays where the step began):
    /// [`Run::run_until`] then returns with [`Finish::Interrupted`] at the last step
    /// boundary. The run never lowers the flag; its owner does.
    pub fn set_cancel_flag(&mut self, flag: Option<Arc<AtomicBool>>) {
        self.trainer.set_cancel_flag(flag);
    }

    /// Optimizer steps the run was configured for.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// Takes steps until `until` steps are done (at most the run's total), the event
    /// handler returns false, validation stops improving, or the cancel flag is raised.
    /// Validates and checkpoints as configured along the way, and records each step in the
    /// history (with an output directory); writes nothing else. Can be called again to
    /// continue.
    pub fn run_until(
        &mut self,
        until: usize,
        mut on_event: impl FnMut(Event<'_>) -> bool,
    ) -> Result<Steps> {
        let start = Instant::now();
        let until = until.min(self.total_steps);
        let per_step = self.opts.batch * self.opts.grad_accum;
        let mut out = Steps {
            finish: Finish::Completed,
            first_loss: f64::NAN,
            last_loss: f64::NAN,
            seen_tokens: 0,
            evaluated_at: None,
            skipped_nonfinite: 0,
        };
        let mut skipped_in_a_row = 0usize;
        let per_epoch = self.train.len().div_ceil(per_step).max(1);
        if let Some(h) = &mut self.history {
            // A resumed run's later steps are redone: cut them from the history.
            h.start(self.trainer.steps_done())?;
        }
        while self.trainer.steps_done() < until {
            let cursor = self.order.clone();
            let idx = self.order.take(per_step);
            let batch: Vec<&TokenRecord> = idx.iter().map(|&i| &self.train[i]).collect();
            let stats = match self.trainer.step(&batch) {
                Ok(s) => s,
                Err(Error::Cancelled) => {
                    self.order = cursor;
                    out.finish = Finish::Interrupted;
                    break;
                }
                Err(Error::Numeric(msg)) if self.skip_nonfinite => {
                    out.skipped_nonfinite += 1;
                    skipped_in_a_row += 1;
                    if skipped_in_a_row >= per_epoch {
                        return Err(Error::Numeric(format!(
                            "{msg}; {skipped_in_a_row} batches in a row (a whole epoch) were not finite, so the adapter itself has diverged"
                        )));
                    }
                    continue;
                }
                Err(e) => {
                    self.order = cursor;
                    return Err(e);
                }
            };
            skipped_in_a_row = 0;
            out.seen_tokens += stats.seen_tokens;
            if out.first_loss.is_nan() {
                out.first_loss = stats.loss;
            }
            out.last_loss = stats.loss;
            let tps = out.seen_tokens as f64 / start.elapsed().as_secs_f64().max(1e-9);
            let epoch = self.order.epoch();
            let mut go = on_event(Event::Step {
                stats,
                epoch,
                tokens_per_s: tps,
            });
            let step = stats.step;
            let mut valid_loss = None;
            if !self.valid.is_empty()
                && self.opts.eval_every > 0
                && step % self.opts.eval_every == 0
            {
                let (loss, stop) = self.eval_step()?;
                valid_loss = Some(loss);
                out.evaluated_at = Some(step);
                let best = self.best.as_ref().map_or(loss, |b| b.0);
                go &= on_event(Event::Eval { step, loss, best });
                if stop {
                    out.finish = Finish::EarlyStopped;
                }
            }
            if let Some(h) = &mut self.history {
                h.append(&Record::of_step(&stats, epoch, tps, valid_loss))?;
            }
            if self.opts.save_every > 0 && step % self.opts.save_every == 0 {
                let dir = self.checkpoint()?;
                go &= on_event(Event::Checkpoint { step, dir: &dir });
            }
            if out.finish == Finish::EarlyStopped {
                break;
            }
            if !go {
                out.finish = Finish::Interrupted;
                break;
            }
        }
        Ok(out)
    }

    /// Ends the run after [`Run::run_until`]: a last validation (unless interrupted or just
    /// done), a checkpoint, the adapter (the best one under early stopping) and
    /// `pocketlora_config.json` written to the output directory.
    pub fn finish(
        &mut self,
        steps: Steps,
        start: Instant,
        mut on_event: impl FnMut(Event<'_>) -> bool,
    ) -> Result<Summary> {
        let finish = steps.finish;
        let step = self.trainer.steps_done();
        self.final_validation(&steps, &mut on_event)?;
        if let Some(out) = self.opts.out.clone() {
            let dir = self.checkpoint()?;
            on_event(Event::Checkpoint { step, dir: &dir });
            peft::save(
                self.result_adapter(),
                &self.trainer.model().cfg,
                &out,
                &self.opts.base_name,
                Dtype::F32,
            )?;
            let record = json!({"pocketlora_version": env!("CARGO_PKG_VERSION"), "config": self.opts.config, "steps": step,
                                "finish": format!("{finish:?}"), "best_valid_loss": self.best.as_ref().map(|b| b.0)});
            let text = serde_json::to_string_pretty(&record).unwrap_or_default();
            write_atomic(&out.join("pocketlora_config.json"), |w| {
                w.write_all(text.as_bytes())
            })?;
        }
        if let Some(d) = &mut self.out_dir {
            d.commit()?;
            self.opts.out = Some(d.write_to().to_path_buf());
        }
        let seconds = start.elapsed().as_secs_f64();
        Ok(Summary {
            finish,
            steps: step,
            first_loss: steps.first_loss,
            last_loss: steps.last_loss,
            best_valid: self.best.as_ref().map(|b| b.0),
            seconds,
            tokens_per_s: steps.seen_tokens as f64 / seconds.max(1e-9),
            adapter_dir: self.opts.out.clone(),
            skipped_nonfinite: steps.skipped_nonfinite,
        })
    }

    /// The validation at the end of a run: unless [`Run::run_until`] was interrupted or
    /// has just validated at this step (or there is no validation data), validates and
    /// reports it (the best adapter is tracked as during the run).
    pub fn final_validation(
        &mut self,
        steps: &Steps,
        mut on_event: impl FnMut(Event<'_>) -> bool,
    ) -> Result<()> {
        let step = self.trainer.steps_done();
        if !self.valid.is_empty()
            && steps.evaluated_at != Some(step)
            && steps.finish != Finish::Interrupted
        {
            let (loss, _) = self.eval_step()?;
            if let Some(h) = &mut self.history {
                h.set_valid_loss(step, loss)?;
            }
            let best = self.best.as_ref().map_or(loss, |b| b.0);
            on_event(Event::Eval { step, loss, best });
        }
        Ok(())
    }

    /// The run's result: with early stopping, the best adapter so far; otherwise the
    /// current one.
    pub fn result_adapter(&self) -> &Adapter {
        match (&self.best, self.opts.patience) {
            (Some((_, b)), Some(_)) => b,
            _ => self.trainer.adapter(),
        }
    }

    /// The best validation loss so far.
    pub fn best_valid(&self) -> Option<f64> {
        self.best.as_ref().map(|b| b.0)
    }

    /// The trainer (its adapter can be used for generation meanwhile).
    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// The trainer, to take steps outside the loop (the bench times single steps).
    pub fn trainer_mut(&mut self) -> &mut Trainer {
        &mut self.trainer
    }

    /// The model the run trains on.
    pub fn model(&self) -> &Arc<Model> {
        self.trainer.model()
    }

    /// The records the run trains on, as the memory plan fixed them.
    pub fn records(&self) -> (&[TokenRecord], &[TokenRecord]) {
        (&self.train, &self.valid)
    }
}
