//! A training session: the one place a run is set up, for every front end. It owns the
//! model (`Arc<Model>`) and the starting adapter, takes records (training and validation),
//! counts what the plan must cover the one way [`crate::memory::account`] measures it,
//! builds the single [`TrainRequest`], and starts a [`Run`] with the plan applied: worker
//! threads, the validation split, packing, truncation to the planned length, the number of
//! steps, the checks a resumed run must pass (its checkpoint intact, its settings and data
//! the same), and the output directory claimed ([`super::outdir`]) before the first step.
//! The command line and the C ABI only translate their inputs into a [`TrainSpec`] and
//! records.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::checkpoint;
use super::outdir::{Claim, OutDir};
use super::run::{Run, RunOptions};
use super::spec::{check_agrees, AdapterInit, TrainSpec};
use crate::data::{held_out, load_dataset, load_for_model, pack, LoadOptions, TokenRecord};
use crate::error::{Error, Result};
use crate::lora::{self, Adapter};
use crate::memory::account::{self, records_bytes};
use crate::memory::plan::{plan_training, Plan, TrainRequest};
use crate::model::backward::WorkspaceShape;
use crate::model::Model;
use crate::tokenizer::chat::ChatTemplate;
use crate::tokenizer::Tokenizer;
use xxhash_rust::xxh3::Xxh3;

/// Whether [`Session::start`] continues from a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resume {
    /// A fresh run.
    No,
    /// From the newest intact checkpoint in the output directory when there is one, else
    /// a fresh run.
    IfAny,
    /// From the newest intact checkpoint in the output directory; none is an error.
    Required,
    /// From this checkpoint directory (`RUN/checkpoints/step-N`): in place when the output
    /// directory is `RUN` (with [`TrainSpec::overwrite`]: the newer checkpoints are
    /// discarded), else as a fork into a new output directory.
    At(PathBuf),
}

/// Records cut to fit the sequence length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Truncation {
    /// How many records were cut.
    pub records: usize,
    /// The longest of them before the cut, in tokens.
    pub longest: usize,
    /// The length they were cut to.
    pub to: usize,
}

/// What [`Session::start`] gives: the run, the plan it follows, where it resumed.
pub struct Started {
    pub run: Run,
    /// The memory plan (with a budget).
    pub plan: Option<Plan>,
    /// The step a resumed run continues at.
    pub resumed: Option<usize>,
    /// Optimizer steps of the whole run.
    pub total_steps: usize,
    /// Training and validation records, and target tokens, as the run takes them.
    pub counts: Counts,
    /// Records cut to fit (none when `records` is 0).
    pub truncated: Truncation,
    /// What the front end should tell its user: a damaged checkpoint passed over, newer
    /// checkpoints discarded, an interrupted replacement recovered.
    pub notices: Vec<String>,
}

/// Record counts of a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub train: usize,
    pub valid: usize,
    pub target_tokens: usize,
}

/// A training run being set up.
pub struct Session {
    model: Arc<Model>,
    /// Worker threads of the model as given (a plan may use fewer).
    threads: usize,
    spec: TrainSpec,
    /// The starting adapter, until the run takes it.
    adapter: Option<Adapter>,
    train: Vec<TokenRecord>,
    valid: Vec<TokenRecord>,
    /// Records are cut to this many tokens when added.
    seq_cap: usize,
    /// Heap the plan counts beside the trainer and the records: the model's metadata and
    /// tokenizer, and the transient peaks of loading and preparing the data.
    resident: u64,
    /// The data is split and packed (then no record can be added).
    fixed: bool,
    /// The counts (and the recorded ones) before splitting and packing.
    counts_added: Counts,
    plan: Option<Plan>,
    truncated: Truncation,
    /// Content hashes of the training and validation records as added.
    hash_train: Xxh3,
    hash_valid: Xxh3,
}

impl Session {
    /// A session for `spec` on `model`: checks the settings, then creates (or loads) the
    /// starting adapter.
    pub fn new(model: Arc<Model>, spec: TrainSpec) -> Result<Session> {
        spec.validate()?;
        if let Some(s) = spec.seq_len {
            let ctx = model.cfg.n_ctx;
            if s > ctx && !spec.allow_long_context {
                return Err(Error::Setting {
                    setting: "seq_len",
                    msg: format!(
                        "{s} is above the model's trained context of {ctx} tokens: positions past it were never trained and quality drops; allow it explicitly (allow_long_context) or give at most {ctx}"
                    ),
                });
            }
        }
        let adapter = match &spec.adapter {
            AdapterInit::New(l) => Adapter::new(&model.cfg, l.clone())?,
            AdapterInit::From(p) => lora::load(p, &model.cfg)?,
        };
        let seq_cap = spec.seq_len.unwrap_or(model.cfg.n_ctx).max(1);
        Ok(Session {
            threads: model.threads(),
            model,
            spec,
            adapter: Some(adapter),
            train: Vec::new(),
            valid: Vec::new(),
            seq_cap,
            resident: 0,
            fixed: false,
            counts_added: Counts::default(),
            plan: None,
            truncated: Truncation::default(),
            hash_train: Xxh3::new(),
            hash_valid: Xxh3::new(),
        })
    }

    /// Counts `bytes` more as held for the whole run: what the model's metadata and
    /// tokenizer took when they were built ([`account::measure`] around opening them).
    pub fn count_resident(&mut self, bytes: u64) {
        self.resident += bytes;
        self.plan = None;
    }

    /// The model the run will train on (with the plan's threads once planned).
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn spec(&self) -> &TrainSpec {
        &self.spec
    }

    /// The starting adapter (`None` once the run took it).
    pub fn adapter(&self) -> Option<&Adapter> {
        self.adapter.as_ref()
    }

    /// Records are cut to this many tokens (the sequence length, or the model's context).
    pub fn seq_cap(&self) -> usize {
        self.seq_cap
    }

    /// Training and validation records so far, and their target tokens.
    pub fn counts(&self) -> Counts {
        if self.fixed {
            return self.counts_added;
        }
        Counts {
            train: self.train.len(),
            valid: self.valid.len(),
            target_tokens: self
                .train
                .iter()
                .chain(&self.valid)
                .map(|r| r.n_targets())
                .sum(),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.adapter.is_none() {
            return Err(Error::InvalidArgument(
                "the session has started its run (or failed to): records can no longer be added"
                    .into(),
            ));
        }
        if self.fixed {
            return Err(Error::InvalidArgument(
                "the records were split and packed when the run was planned: add records before planning".into(),
            ));
        }
        Ok(())
    }

    /// Adds records (to the validation set with `valid`): token ids are checked against the
    /// vocabulary and each record is cut to [`Session::seq_cap`] tokens.
    pub fn add(&mut self, mut records: Vec<TokenRecord>, valid: bool) -> Result<()> {
        self.check_open()?;
        let n_vocab = self.model.cfg.n_vocab;
        for r in &mut records {
            if let Some(&bad) = r.ids.iter().find(|&&t| t as usize >= n_vocab) {
                return Err(Error::InvalidArgument(format!(
                    "token id {bad} is outside the model's vocabulary of {n_vocab}"
                )));
            }
            self.truncated.note(r, self.seq_cap);
            truncate(r, self.seq_cap);
        }
        let (to, hash) = if valid {
            (&mut self.valid, &mut self.hash_valid)
        } else {
            (&mut self.train, &mut self.hash_train)
        };
        for r in &records {
            hash_record(hash, r);
        }
        to.extend(records);
        to.shrink_to_fit();
        self.plan = None;
        Ok(())
    }

    /// Runs `f` (which loads or builds data) and counts its transient heap — the peak above
    /// the records it added — as held: the run's peak includes it.
    pub fn loading<T>(&mut self, f: impl FnOnce(&mut Session) -> T) -> T {
        let before = records_bytes(&self.train) + records_bytes(&self.valid);
        let (out, g) = account::measure(|| f(&mut *self));
        let after = records_bytes(&self.train) + records_bytes(&self.valid);
        self.resident += g.peak.saturating_sub(after.saturating_sub(before));
        self.plan = None;
        out
    }

    /// Reads a data file in any supported format ([`load_dataset`]) and adds its records;
    /// returns the lines skipped under `opts.skip_bad_lines`.
    pub fn load_file(
        &mut self,
        path: &Path,
        tok: Option<&Tokenizer>,
        chat: Option<&ChatTemplate>,
        opts: LoadOptions,
        valid: bool,
    ) -> Result<Vec<(usize, String)>> {
        self.check_open()?;
        let d = load_dataset(path, tok, chat, opts)?;
        self.add_dataset(path, d, valid)
    }

    /// Reads a data file with the model's own tokenizer and chat template (built only when
    /// the format needs them: [`crate::data::load_for_model`]), counting the transient as
    /// [`Session::loading`] does; returns the lines skipped under `opts.skip_bad_lines`.
    pub fn load_data(
        &mut self,
        path: &Path,
        opts: LoadOptions,
        valid: bool,
    ) -> Result<Vec<(usize, String)>> {
        self.check_open()?;
        self.loading(|s| {
            let d = load_for_model(path, s.model.weights.file(), opts)?;
            s.add_dataset(path, d, valid)
        })
    }

    /// Adds a file's records; a token id outside the vocabulary names the file and line.
    fn add_dataset(
        &mut self,
        path: &Path,
        d: crate::data::Dataset,
        valid: bool,
    ) -> Result<Vec<(usize, String)>> {
        let n_vocab = self.model.cfg.n_vocab;
        for (r, &line) in d.records.iter().zip(&d.lines) {
            if let Some(&bad) = r.ids.iter().find(|&&t| t as usize >= n_vocab) {
                return Err(Error::Data {
                    path: path.into(),
                    line,
                    msg: format!("token id {bad} is outside the model's vocabulary of {n_vocab}"),
                });
            }
        }
        self.add(d.records, valid)?;
        Ok(d.skipped)
    }

    /// Splits off the validation records and packs the training ones, as the spec says
    /// (once; its transient counted as [`Session::loading`] counts it).
    fn fix_data(&mut self) {
        if self.fixed {
            return;
        }
        self.counts_added = self.counts();
        self.loading(|s| {
            if let Some(f) = s.spec.valid_split {
                let held = held_out(s.train.len(), f, s.spec.seed);
                let all = std::mem::take(&mut s.train);
                for (r, h) in all.into_iter().zip(held) {
                    if h {
                        s.valid.push(r);
                    } else {
                        s.train.push(r);
                    }
                }
            }
            if s.spec.pack {
                s.train = pack(std::mem::take(&mut s.train), s.seq_cap);
                for r in &mut s.train {
                    r.ids.shrink_to_fit();
                    r.targets.shrink_to_fit();
                    r.doc_starts.shrink_to_fit();
                }
            }
            s.train.shrink_to_fit();
            s.valid.shrink_to_fit();
        });
        self.fixed = true;
    }

    /// The longest record (at least 1).
    fn longest(&self) -> usize {
        self.train
            .iter()
            .chain(&self.valid)
            .map(|r| r.ids.len())
            .max()
            .unwrap_or(self.seq_cap)
            .max(1)
    }

    /// The memory plan under the spec's budget (`None` without one) for the records as they
    /// are (packed first when the spec packs: the records are then fixed), and the model
    /// with the plan's threads. Without records, the plan for records of
    /// [`Session::seq_cap`] tokens.
    pub fn plan(&mut self) -> Result<Option<&Plan>> {
        let Some(budget) = self.spec.budget else {
            return Ok(None);
        };
        if self.plan.is_none() {
            if self.spec.pack {
                self.fix_data();
            }
            let Some(adapter) = &self.adapter else {
                return Err(Error::InvalidArgument(
                    "the session's run has started: its plan is the run's".into(),
                ));
            };
            let longest = self.longest();
            let req = TrainRequest {
                model: &self.model.cfg,
                lora: &adapter.config,
                seq_len: if self.spec.pack {
                    Some(self.seq_cap.min(longest))
                } else {
                    self.spec.seq_len.map(|s| s.min(longest))
                },
                max_seq_len: longest,
                threads: self.threads,
                budget,
                tokenizer_bytes: self.resident,
                data_bytes: records_bytes(&self.train) + records_bytes(&self.valid),
                validation: !self.valid.is_empty() || self.spec.valid_split.is_some(),
                keep_best: self.spec.patience.is_some(),
                saved: self.spec.saved,
                precision: self.model.precision(),
            };
            let plan = plan_training(&req)?;
            self.use_threads(plan.threads)?;
            self.plan = Some(plan);
        }
        Ok(self.plan.as_ref())
    }

    /// Makes the session's model run on `threads` workers (a new model over the same file
    /// when the current one is shared).
    fn use_threads(&mut self, threads: usize) -> Result<()> {
        if threads == self.model.threads() {
            return Ok(());
        }
        match Arc::get_mut(&mut self.model) {
            Some(m) => m.set_threads(threads),
            None => {
                let mut m = Model::from_file(self.model.weights.file().clone(), threads)?;
                m.set_precision(self.model.precision());
                self.model = Arc::new(m);
                Ok(())
            }
        }
    }

    /// The settings that define the run's result (the spec's, the model's threads and
    /// precision, and the record counts as added).
    pub fn recorded(&self) -> Value {
        let mut v = self
            .spec
            .recorded(self.threads, self.model.precision().name());
        let c = self.counts();
        let hex = |h: &Xxh3| format!("{:032x}", h.digest128());
        if let Some(o) = v.as_object_mut() {
            o.insert("data_hash".into(), json!(hex(&self.hash_train)));
            o.insert("valid_hash".into(), json!(hex(&self.hash_valid)));
            o.insert("records".into(), json!(c.train));
            o.insert("valid_records".into(), json!(c.valid));
            o.insert("target_tokens".into(), json!(c.target_tokens));
        }
        v
    }

    /// Plans, fixes the data and starts the run (resuming as asked). Everything that can
    /// be refused (the budget, no trainable record, a resumed run's settings) is refused
    /// before the records are handed over; after that the session is spent.
    pub fn start(&mut self, resume: Resume) -> Result<Started> {
        if self.adapter.is_none() {
            return Err(Error::InvalidArgument(
                "the session has started its run (or failed to) already".into(),
            ));
        }
        if self.train.is_empty() {
            return Err(Error::InvalidArgument(
                "no training records: add some first".into(),
            ));
        }
        let mut notices = Vec::new();
        if let Some(said) = self.spec.for_small_data(self.train.len()) {
            notices.push(said);
        }
        let recorded = self.recorded();
        let from = self.checkpoint_to_resume(&resume, &recorded, &mut notices)?;
        let plan = self.plan()?.cloned();
        let out_dir = self.claim_out(&resume, from.as_deref(), &mut notices)?;
        self.fix_data();
        if !self.train.iter().any(|r| r.n_targets() > 0) {
            return Err(Error::InvalidArgument(format!(
                "no training record has target tokens to train on{}",
                if self.spec.valid_split.is_some() {
                    " (after the validation split)"
                } else {
                    ""
                }
            )));
        }
        let shape = match (&plan, self.spec.saved) {
            (Some(p), _) => Some(p.shape),
            (None, Some(s)) => {
                let longest = self.longest();
                Some(WorkspaceShape::chunked(longest, longest, s))
            }
            (None, None) => None,
        };
        let mut train = std::mem::take(&mut self.train);
        let mut valid = std::mem::take(&mut self.valid);
        if let Some(s) = shape {
            for r in train.iter_mut().chain(valid.iter_mut()) {
                self.truncated.note(r, s.capacity);
                truncate(r, s.capacity);
            }
        }
        let counts = Counts {
            train: train.len(),
            valid: valid.len(),
            target_tokens: train.iter().map(|r| r.n_targets()).sum(),
        };
        let Some(adapter) = self.adapter.take() else {
            return Err(Error::InvalidArgument("the session has no adapter".into()));
        };
        let spec = &self.spec;
        let per_step = spec.batch * spec.grad_accum;
        let total_steps = spec.length.steps(train.len(), per_step);
        let opts = RunOptions {
            batch: spec.batch,
            grad_accum: spec.grad_accum,
            shuffle: spec.shuffle,
            seed: spec.seed,
            eval_every: spec.eval_every.unwrap_or((total_steps / 10).max(1)),
            patience: spec.patience,
            save_every: if spec.out.is_some() {
                spec.save_every
            } else {
                0
            },
            out: spec.out.clone(),
            config: recorded,
            base_name: spec.base_name.clone(),
            shape,
        };
        let cfg = spec.train_config(total_steps);
        let mut run = Run::new(self.model.clone(), adapter, cfg, train, valid, opts)?;
        run.set_skip_nonfinite(spec.skip_nonfinite);
        if let Some(d) = out_dir {
            run.claim_out(d);
        }
        let resumed = match &from {
            Some(dir) => Some(run.resume_from(dir)?),
            None => None,
        };
        Ok(Started {
            run,
            plan,
            resumed,
            total_steps,
            counts,
            truncated: self.truncated,
            notices,
        })
    }

    /// The checkpoint a resumed run continues from (`None`: a fresh run): intact, and
    /// recorded with the settings and data of this session. A damaged newest checkpoint is
    /// passed over with a notice.
    fn checkpoint_to_resume(
        &self,
        resume: &Resume,
        recorded: &Value,
        notices: &mut Vec<String>,
    ) -> Result<Option<PathBuf>> {
        let dir = match resume {
            Resume::No => return Ok(None),
            Resume::At(dir) => {
                checkpoint::verify(dir).map_err(|why| {
                    Error::InvalidArgument(format!(
                        "resume {}: the checkpoint is not intact: {why}",
                        dir.display()
                    ))
                })?;
                dir.clone()
            }
            Resume::IfAny | Resume::Required => {
                let Some(out) = &self.spec.out else {
                    return Err(Error::InvalidArgument(
                        "resume: the run has no output directory to resume from".into(),
                    ));
                };
                let root = out.join("checkpoints");
                let (intact, damaged) = checkpoint::newest_intact(&root)?;
                let named = |d: &[checkpoint::Damaged]| {
                    d.iter()
                        .map(|x| format!("{}: {}", x.dir.display(), x.why))
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                match intact {
                    Some(dir) => {
                        if !damaged.is_empty() {
                            notices.push(format!(
                                "passed over damaged checkpoints ({}); resuming from {}, the newest intact one",
                                named(&damaged),
                                dir.display()
                            ));
                        }
                        dir
                    }
                    None if !damaged.is_empty() => {
                        return Err(Error::InvalidArgument(format!(
                            "resume {}: no intact checkpoint ({}); restore the files, or start the run again with overwrite",
                            out.display(),
                            named(&damaged)
                        )))
                    }
                    None if *resume == Resume::Required => {
                        return Err(Error::InvalidArgument(format!(
                            "resume {}: no checkpoint found there",
                            out.display()
                        )))
                    }
                    None => return Ok(None),
                }
            }
        };
        let was = checkpoint::recorded_config(&dir)?;
        check_agrees(&was, recorded, self.spec.allow_data_change).map_err(Error::Resume)?;
        Ok(Some(dir))
    }

    /// Claims the output directory (none: the run writes nothing) for the way the run
    /// starts: fresh or replacing it, continuing in it, or forking from a checkpoint.
    fn claim_out(
        &self,
        resume: &Resume,
        from: Option<&Path>,
        notices: &mut Vec<String>,
    ) -> Result<Option<OutDir>> {
        let Some(out) = &self.spec.out else {
            return Ok(None);
        };
        let fresh = if self.spec.overwrite {
            Claim::Overwrite
        } else {
            Claim::Fresh
        };
        let in_place = |ckpt: &Path| {
            let run = ckpt.parent().and_then(Path::parent);
            let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
                (Ok(x), Ok(y)) => x == y,
                _ => a == b,
            };
            run.is_some_and(|r| same(r, out))
        };
        let how = match (resume, from) {
            (_, None) => fresh,
            (Resume::At(dir), Some(_)) if in_place(dir) => {
                if !self.spec.overwrite {
                    return Err(Error::InvalidArgument(format!(
                        "resume {}: continuing from an older checkpoint in place discards the newer ones; allow it with overwrite, or give another output directory to fork the run there",
                        dir.display()
                    )));
                }
                Claim::Continue
            }
            (Resume::At(_), Some(_)) => fresh,
            (_, Some(_)) => Claim::Continue,
        };
        let d = OutDir::claim(out, how)?;
        notices.extend(d.recovered().iter().cloned());
        if let (Resume::At(dir), Claim::Continue) = (resume, how) {
            let step = checkpoint::step_of(dir).unwrap_or(usize::MAX);
            let gone = checkpoint::discard_after(&out.join("checkpoints"), step)?;
            if !gone.is_empty() {
                notices.push(format!(
                    "discarded {} newer checkpoints ({}) to continue from step {step}",
                    gone.len(),
                    gone.iter()
                        .filter_map(|p| p.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Ok(Some(d))
    }
}

impl Truncation {
    /// Counts `r` if it is longer than `cap`.
    fn note(&mut self, r: &TokenRecord, cap: usize) {
        if r.ids.len() > cap {
            self.records += 1;
            self.longest = self.longest.max(r.ids.len());
            self.to = cap;
        }
    }
}

/// Feeds a record's tokens and targets (and its length, so records cannot run together)
/// into a content hash.
fn hash_record(h: &mut Xxh3, r: &TokenRecord) {
    let mut bytes = Vec::with_capacity(8 + r.ids.len() * 5);
    bytes.extend_from_slice(&(r.ids.len() as u64).to_le_bytes());
    bytes.extend(r.ids.iter().flat_map(|t| t.to_le_bytes()));
    bytes.extend(r.targets.iter().map(|&t| t as u8));
    h.update(&bytes);
}

fn truncate(r: &mut TokenRecord, cap: usize) {
    r.ids.truncate(cap);
    r.targets.truncate(cap);
    r.doc_starts.retain(|&d| (d as usize) < cap);
}
