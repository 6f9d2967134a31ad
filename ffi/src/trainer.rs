//! Trainer handles: the same training loop as the command line ([`Run`]), fed record by
//! record, planned against the model's budget when it starts, run in slices with a
//! progress callback and a cancel flag, checkpointed and resumed.

use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use serde_json::{json, Value};

use pocketlora_core::data::{
    held_out, load_dataset, EncodeOptions, Encoder, LoadOptions, RawRecord, TokenRecord,
};
use pocketlora_core::lora::{self, peft, Adapter, LayerSelection, LoraConfig, LoraInit, Target};
use pocketlora_core::memory::heap;
use pocketlora_core::memory::plan::{plan_training, Plan, TrainRequest};
use pocketlora_core::model::backward::SavedDtype;
use pocketlora_core::model::Model;
use pocketlora_core::safetensors::Dtype;
use pocketlora_core::tokenizer::chat::{Message, Role};
use pocketlora_core::train::run::{Event, Finish, Run, RunOptions};
use pocketlora_core::train::{AdamWConfig, Schedule, TrainConfig};

use crate::adapter::{self, plora_adapter};
use crate::cstr;
use crate::handles::{self, Handle, Kind, Object};
use crate::model::{self, check_ids, plora_model, ModelObj};
use crate::plan::{MemoryPlan, Shape};
use crate::status::{fail, guard, guard_void, invalid, state, FResult, Status};

/// Opaque C type `plora_trainer`.
#[allow(non_camel_case_types)]
pub enum plora_trainer {}

/// `plora_progress_fn`
pub type ProgressFn = Option<unsafe extern "C" fn(*const Progress, *mut c_void) -> i32>;

/// `plora_progress` (C struct)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Progress {
    pub step: u32,
    pub total_steps: u32,
    pub loss: f32,
    pub tokens_per_s: f32,
    pub heap_bytes: u64,
    pub lr: f32,
    pub grad_norm: f32,
    pub valid_loss: f32,
    pub epoch: u32,
}

/// `plora_train_config` (C struct)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TrainConfigC {
    pub struct_size: u32,
    pub rank: u32,
    pub alpha: f32,
    pub rslora: i32,
    pub dropout: f32,
    pub targets: u32,
    pub layers: *const c_char,
    pub init: u32,
    pub init_adapter: *const c_char,
    pub lr: f32,
    pub schedule: u32,
    pub warmup: u32,
    pub clip: f32,
    pub weight_decay: f32,
    pub steps: u32,
    pub epochs: u32,
    pub batch: u32,
    pub grad_accum: u32,
    pub seq_len: u32,
    pub shuffle: i32,
    pub seed: u64,
    pub mask_prompt: i32,
    pub skip_bad_lines: i32,
    pub valid_split: f32,
    pub eval_every: u32,
    pub patience: u32,
    pub checkpoint_dir: *const c_char,
    pub save_every: u32,
    pub saved_activations: u32,
}

impl Default for TrainConfigC {
    fn default() -> Self {
        let lora = LoraConfig::default();
        let t = TrainConfig::default();
        TrainConfigC {
            struct_size: std::mem::size_of::<TrainConfigC>() as u32,
            rank: lora.r as u32,
            alpha: lora.alpha,
            rslora: 0,
            dropout: 0.0,
            targets: 0x7f,
            layers: std::ptr::null(),
            init: 0,
            init_adapter: std::ptr::null(),
            lr: t.lr,
            schedule: 0,
            warmup: 0,
            clip: t.clip,
            weight_decay: 0.0,
            steps: 0,
            epochs: 1,
            batch: 4,
            grad_accum: 1,
            seq_len: 0,
            shuffle: 0,
            seed: 0,
            mask_prompt: 1,
            skip_bad_lines: 0,
            valid_split: 0.0,
            eval_every: 0,
            patience: 0,
            checkpoint_dir: std::ptr::null(),
            save_every: 0,
            saved_activations: 0,
        }
    }
}

/// The settings of a trainer, owned and checked.
struct Settings {
    /// `None` with an initial adapter (its own configuration is used).
    lora: Option<LoraConfig>,
    init_adapter: Option<PathBuf>,
    lr: f32,
    schedule: Schedule,
    warmup: usize,
    clip: f32,
    weight_decay: f32,
    steps: usize,
    epochs: usize,
    batch: usize,
    grad_accum: usize,
    /// Records are cut to this many tokens.
    seq_cap: usize,
    /// The seq_len asked for (0: the model's context).
    seq_len: usize,
    shuffle: bool,
    seed: u64,
    encode: EncodeOptions,
    skip_bad_lines: bool,
    valid_split: Option<f64>,
    eval_every: usize,
    patience: Option<usize>,
    checkpoint_dir: Option<PathBuf>,
    save_every: usize,
    saved: Option<SavedDtype>,
    /// The settings as recorded in checkpoints (resume must agree).
    recorded: Value,
}

fn targets_of(mask: u32) -> FResult<Vec<Target>> {
    if mask == 0 || mask & !0x7f != 0 {
        return Err(invalid(format!(
            "targets is {mask:#x}: give PLORA_TARGET_* bits (some of 0x7f)"
        )));
    }
    Ok(Target::ALL
        .iter()
        .copied()
        .filter(|t| mask & (1 << t.index()) != 0)
        .collect())
}

impl Settings {
    /// # Safety
    /// The config's string pointers are NULL or valid C strings.
    unsafe fn from_c(c: &TrainConfigC, model: &ModelObj) -> FResult<Settings> {
        let finite_nonneg = |v: f32, what: &str| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(invalid(format!("{what} is {v}: must be a number ≥ 0")))
            }
        };
        finite_nonneg(c.lr, "lr")?;
        finite_nonneg(c.clip, "clip")?;
        finite_nonneg(c.weight_decay, "weight_decay")?;
        if c.batch == 0 || c.grad_accum == 0 {
            return Err(invalid("batch and grad_accum must be at least 1"));
        }
        if c.steps == 0 && c.epochs == 0 {
            return Err(invalid("steps and epochs are both 0: give one of them"));
        }
        if c.seq_len == 1 {
            return Err(invalid(
                "seq_len 1 is too short: give 0 (the model's context) or at least 2",
            ));
        }
        if !(c.valid_split.is_finite() && (0.0..1.0).contains(&c.valid_split)) {
            return Err(invalid(format!(
                "valid_split is {}: must be in [0, 1)",
                c.valid_split
            )));
        }
        let schedule = match c.schedule {
            0 => Schedule::Cosine,
            1 => Schedule::Linear,
            2 => Schedule::Constant,
            s => {
                return Err(invalid(format!(
                    "schedule {s} is not a PLORA_SCHEDULE_* value"
                )))
            }
        };
        let saved = match c.saved_activations {
            0 => None,
            1 => Some(SavedDtype::F32),
            2 => Some(SavedDtype::BF16),
            3 => Some(SavedDtype::F16),
            s => {
                return Err(invalid(format!(
                    "saved_activations {s} is not a PLORA_SAVED_* value"
                )))
            }
        };
        // SAFETY: caller contract.
        let init_adapter = unsafe { cstr::opt_path(c.init_adapter, "init_adapter")? };
        // SAFETY: caller contract.
        let checkpoint_dir = unsafe { cstr::opt_path(c.checkpoint_dir, "checkpoint_dir")? };
        // SAFETY: caller contract.
        let layers = unsafe { cstr::opt_text(c.layers, "layers")? }.unwrap_or("all");
        let init = match c.init {
            0 => LoraInit::Kaiming,
            1 => LoraInit::Gaussian,
            i => return Err(invalid(format!("init {i} is not a PLORA_INIT_* value"))),
        };
        let lora = LoraConfig {
            r: c.rank as usize,
            alpha: c.alpha,
            rslora: c.rslora != 0,
            dropout: c.dropout,
            targets: targets_of(c.targets)?,
            layers: LayerSelection::parse(layers)?,
            init,
            seed: c.seed,
        };
        lora.validate()?;
        lora.layers.resolve(model.model.cfg.n_layer)?;
        let seq_cap = if c.seq_len == 0 {
            model.model.cfg.n_ctx
        } else {
            c.seq_len as usize
        };
        let recorded = json!({
            "model": model.name, "rank": c.rank, "alpha": c.alpha, "rslora": c.rslora != 0,
            "dropout": c.dropout, "targets": c.targets, "layers": layers, "init": c.init,
            "init_adapter": init_adapter.as_ref().map(|p| p.display().to_string()),
            "lr": c.lr, "schedule": c.schedule, "warmup": c.warmup, "clip": c.clip,
            "weight_decay": c.weight_decay, "steps": c.steps, "epochs": c.epochs, "batch": c.batch,
            "grad_accum": c.grad_accum, "seq_len": c.seq_len, "shuffle": c.shuffle != 0,
            "seed": c.seed, "mask_prompt": c.mask_prompt != 0, "valid_split": c.valid_split,
            "eval_every": c.eval_every, "patience": c.patience,
            "saved_activations": c.saved_activations, "threads": model.model.threads(),
        });
        Ok(Settings {
            lora: if init_adapter.is_some() {
                None
            } else {
                Some(lora)
            },
            init_adapter,
            lr: c.lr,
            schedule,
            warmup: c.warmup as usize,
            clip: c.clip,
            weight_decay: c.weight_decay,
            steps: c.steps as usize,
            epochs: c.epochs as usize,
            batch: c.batch as usize,
            grad_accum: c.grad_accum as usize,
            seq_cap,
            seq_len: c.seq_len as usize,
            shuffle: c.shuffle != 0,
            seed: c.seed,
            encode: EncodeOptions {
                mask_prompt: c.mask_prompt != 0,
            },
            skip_bad_lines: c.skip_bad_lines != 0,
            valid_split: (c.valid_split > 0.0).then_some(c.valid_split as f64),
            eval_every: c.eval_every as usize,
            patience: (c.patience > 0).then_some(c.patience as usize),
            save_every: if checkpoint_dir.is_some() {
                c.save_every as usize
            } else {
                0
            },
            checkpoint_dir,
            saved,
            recorded,
        })
    }
}

/// A trainer: its state behind a lock (one call at a time) and a cancel flag outside it.
pub struct TrainerObj {
    cancel: Arc<AtomicBool>,
    state: Mutex<State>,
}

impl Object for TrainerObj {
    const KIND: Kind = Kind::Trainer;
}

struct State {
    /// The run once started. Declared first, so it is dropped before `model`, which it
    /// borrows (see `start`).
    run: Option<Run<'static>>,
    /// The model the run trains on: the handle's, or one over the same file with fewer
    /// threads when the memory plan needs that. Never replaced once `run` is set.
    model: Arc<Model>,
    shared: Arc<Handle<ModelObj>>,
    s: Settings,
    /// The adapter to start from, until the run takes it.
    adapter: Option<Adapter>,
    n_params: usize,
    /// Records, until the run takes them.
    train: Vec<TokenRecord>,
    valid: Vec<TokenRecord>,
    plan: Option<Plan>,
    /// Record counts and target tokens (fixed once started).
    counts: (usize, usize, usize),
    last_loss: f64,
    last_valid: Option<f64>,
    checkpointed_at: usize,
    finished: bool,
    /// Why the run could not be built after its data was handed over (the trainer is then
    /// unusable).
    broken: Option<String>,
}

impl TrainerObj {
    fn lock(&self) -> FResult<MutexGuard<'_, State>> {
        match self.state.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => Err(state(
                "the trainer is busy: another call on it is running (on another thread, or this call comes from inside its progress callback)",
            )),
            Err(TryLockError::Poisoned(_)) => Err(fail(
                Status::Panic,
                "an earlier call on this trainer failed with an internal error; it cannot be used any more: free it",
            )),
        }
    }
}

fn get(p: *const plora_trainer, what: &str) -> FResult<Arc<Handle<TrainerObj>>> {
    handles::get::<TrainerObj, _>(p, what)
}

fn data_bytes(recs: &[TokenRecord]) -> u64 {
    recs.iter()
        .map(|r| (r.ids.capacity() * 4 + r.targets.capacity() + 48) as u64)
        .sum()
}

/// Names the first setting that differs from the recorded run (steps and epochs may grow).
fn check_agrees(recorded: &Value, now: &Value) -> FResult<()> {
    let (Some(r), Some(n)) = (recorded.as_object(), now.as_object()) else {
        return Ok(());
    };
    for (k, v) in n {
        if k == "steps" || k == "epochs" {
            continue;
        }
        let was = r.get(k).unwrap_or(&Value::Null);
        if was != v {
            return Err(invalid(format!(
                "resume: {k} is {v} now, but the checkpointed run had {was}; use the same settings and data"
            )));
        }
    }
    Ok(())
}

impl State {
    fn records_fixed(&self) -> FResult<()> {
        if self.run.is_some() || self.broken.is_some() {
            Err(state(
                "the data is fixed once training has started (plora_trainer_run or plora_trainer_resume): add records before",
            ))
        } else {
            Ok(())
        }
    }

    fn add(&mut self, mut recs: Vec<TokenRecord>, valid: bool) -> FResult<()> {
        self.records_fixed()?;
        let n_vocab = self.model.cfg.n_vocab;
        for r in &mut recs {
            if let Some(&bad) = r.ids.iter().find(|&&t| t as usize >= n_vocab) {
                return Err(invalid(format!(
                    "token id {bad} is outside the model's vocabulary of {n_vocab}"
                )));
            }
            r.ids.truncate(self.s.seq_cap);
            r.targets.truncate(self.s.seq_cap);
        }
        if valid {
            self.valid.extend(recs);
        } else {
            self.train.extend(recs);
        }
        Ok(())
    }

    fn encode(&self, raw: RawRecord) -> FResult<TokenRecord> {
        let m = &self.shared.obj;
        let enc = Encoder {
            tok: m.tokenizer()?,
            chat: m.chat.as_ref(),
            opts: self.s.encode,
        };
        enc.encode(&raw).map_err(invalid)
    }

    fn recorded(&self) -> Value {
        let mut v = self.s.recorded.clone();
        let all = self.train.iter().chain(&self.valid);
        let targets: usize = all.map(|r| r.n_targets()).sum();
        if let Some(o) = v.as_object_mut() {
            o.insert("records".into(), json!(self.train.len()));
            o.insert("valid_records".into(), json!(self.valid.len()));
            o.insert("target_tokens".into(), json!(targets));
        }
        v
    }

    fn lora_config(&self) -> &LoraConfig {
        match (&self.adapter, &self.run) {
            (Some(a), _) => &a.config,
            (None, Some(r)) => &r.trainer().adapter().config,
            // Unreachable: the adapter is handed to the run.
            (None, None) => self.s.lora.as_ref().expect("a LoRA configuration"),
        }
    }

    /// The memory plan for the data as it is (before the run), against the budget.
    fn make_plan(&self) -> FResult<Plan> {
        if self.train.is_empty() {
            return Err(state(
                "no training records: add some with plora_trainer_add_* first",
            ));
        }
        let m = &self.shared.obj;
        let longest = self
            .train
            .iter()
            .chain(&self.valid)
            .map(|r| r.ids.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let req = TrainRequest {
            model: &m.model.cfg,
            lora: self.lora_config(),
            seq_len: (self.s.seq_len > 0).then_some(self.s.seq_len.min(longest)),
            max_seq_len: longest,
            threads: m.model.threads(),
            budget: m.budget_or_max(),
            tokenizer_bytes: m.loaded_bytes,
            data_bytes: data_bytes(&self.train) + data_bytes(&self.valid),
            validation: !self.valid.is_empty() || self.s.valid_split.is_some(),
            keep_best: self.s.patience.is_some(),
            saved: self.s.saved,
            precision: m.model.precision(),
        };
        Ok(plan_training(&req)?)
    }

    /// Plans the memory, fixes the data and builds the run (once).
    fn start(&mut self, cancel: &Arc<AtomicBool>) -> FResult<()> {
        if let Some(why) = &self.broken {
            return Err(state(format!(
                "the trainer could not start ({why}); free it"
            )));
        }
        if self.run.is_some() {
            return Ok(());
        }
        let plan = self.make_plan()?;
        let held = match self.s.valid_split {
            Some(f) => held_out(self.train.len(), f, self.s.seed),
            None => vec![false; self.train.len()],
        };
        let trainable = self
            .train
            .iter()
            .zip(&held)
            .any(|(r, &h)| !h && r.n_targets() > 0);
        if !trainable {
            return Err(invalid(
                "no training record has target tokens to train on (after the validation split)",
            ));
        }
        if plan.threads < self.model.threads() {
            let m = Model::from_file(self.shared.obj.file().clone(), plan.threads)?;
            self.model = Arc::new(m);
        }
        // Everything that can be refused was; hand the data over.
        let recorded = self.recorded();
        let mut train = Vec::with_capacity(self.train.len());
        let mut valid = std::mem::take(&mut self.valid);
        for (r, h) in std::mem::take(&mut self.train).into_iter().zip(held) {
            if h {
                valid.push(r);
            } else {
                train.push(r);
            }
        }
        let cap = plan.shape.capacity;
        for r in train.iter_mut().chain(valid.iter_mut()) {
            r.ids.truncate(cap);
            r.targets.truncate(cap);
        }
        let targets = train.iter().map(|r| r.n_targets()).sum();
        self.counts = (train.len(), valid.len(), targets);
        let s = &self.s;
        let per_step = s.batch * s.grad_accum;
        let total = if s.steps > 0 {
            s.steps
        } else {
            (train.len() * s.epochs).div_ceil(per_step).max(1)
        };
        let cfg = TrainConfig {
            lr: s.lr,
            schedule: s.schedule,
            warmup: s.warmup,
            total_steps: total,
            clip: s.clip,
            adamw: AdamWConfig {
                weight_decay: s.weight_decay,
                ..AdamWConfig::default()
            },
            seed: s.seed,
        };
        let opts = RunOptions {
            batch: s.batch,
            grad_accum: s.grad_accum,
            shuffle: s.shuffle,
            seed: s.seed,
            eval_every: if s.eval_every > 0 {
                s.eval_every
            } else {
                (total / 10).max(1)
            },
            patience: s.patience,
            save_every: s.save_every,
            out: s.checkpoint_dir.clone().unwrap_or_default(),
            config: recorded,
            base_name: self.shared.obj.name.clone(),
            shape: Some(plan.shape),
        };
        let Some(adapter) = self.adapter.take() else {
            return Err(state(
                "the trainer has no adapter (an earlier start failed)",
            ));
        };
        // SAFETY: `self.model` is an `Arc` whose allocation does not move and outlives the
        // run: `run` is declared before `model` in `State`, so it is dropped first, and
        // `model` is never reassigned once `run` is set (it is only assigned above, before
        // the run exists). The run only reads the model through this shared reference.
        let model: &'static Model = unsafe { &*Arc::as_ptr(&self.model) };
        match Run::new(model, adapter, cfg, train, valid, opts) {
            Ok(mut run) => {
                run.set_cancel_flag(Some(cancel.clone()));
                self.run = Some(run);
                self.plan = Some(plan);
                Ok(())
            }
            Err(e) => {
                self.broken = Some(e.to_string());
                Err(e.into())
            }
        }
    }

    fn started(&mut self) -> FResult<&mut Run<'static>> {
        self.run.as_mut().ok_or_else(|| {
            state("nothing trained yet: call plora_trainer_run (or plora_trainer_resume) first")
        })
    }
}

/// `plora_train_config_default`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_train_config_default(cfg: *mut TrainConfigC) {
    guard_void(|| {
        if !cfg.is_null() {
            // SAFETY: caller contract: a plora_train_config of this header.
            unsafe { cfg.write_unaligned(TrainConfigC::default()) };
        }
        Ok(())
    });
}

/// `plora_trainer_new`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_new(
    model: *mut plora_model,
    cfg: *const TrainConfigC,
    out: *mut *mut plora_trainer,
) -> Status {
    guard(|| {
        // SAFETY: caller contract.
        unsafe { cstr::put(out, std::ptr::null_mut(), "out")? };
        let m = model::get(model, "model")?;
        // SAFETY: caller contract.
        let c = unsafe { cstr::read_sized(cfg, "plora_train_config")? };
        // SAFETY: caller contract (the config's strings).
        let s = unsafe { Settings::from_c(&c, &m.obj)? };
        let cfg = &m.obj.model.cfg;
        let adapter = match (&s.init_adapter, &s.lora) {
            (Some(p), _) => lora::load(p, cfg)?,
            (None, Some(l)) => Adapter::new(cfg, l.clone())?,
            (None, None) => return Err(invalid("no adapter configuration")),
        };
        let obj = TrainerObj {
            cancel: Arc::new(AtomicBool::new(false)),
            state: Mutex::new(State {
                run: None,
                model: m.obj.model.clone(),
                n_params: adapter.n_params(),
                adapter: Some(adapter),
                shared: m,
                s,
                train: Vec::new(),
                valid: Vec::new(),
                plan: None,
                counts: (0, 0, 0),
                last_loss: f64::NAN,
                last_valid: None,
                checkpointed_at: 0,
                finished: false,
                broken: None,
            }),
        };
        let p = handles::register::<TrainerObj, plora_trainer>(obj);
        // SAFETY: caller contract.
        unsafe { cstr::put(out, p, "out") }
    })
}

/// Runs `f` on the trainer's locked state.
fn with_state<T>(
    t: *const plora_trainer,
    f: impl FnOnce(&mut State, &Arc<AtomicBool>) -> FResult<T>,
) -> FResult<T> {
    let h = get(t, "t")?;
    let mut st = h.obj.lock()?;
    f(&mut st, &h.obj.cancel)
}

/// `plora_trainer_add_text`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_add_text(
    t: *mut plora_trainer,
    text: *const c_char,
) -> Status {
    guard(|| {
        with_state(t, |st, _| {
            st.records_fixed()?;
            // SAFETY: caller contract.
            let text = unsafe { cstr::text(text, "text")? };
            let r = st.encode(RawRecord::Text(text.to_string()))?;
            st.add(vec![r], false)
        })
    })
}

/// `plora_trainer_add_prompt_completion`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_add_prompt_completion(
    t: *mut plora_trainer,
    prompt: *const c_char,
    completion: *const c_char,
) -> Status {
    guard(|| {
        with_state(t, |st, _| {
            st.records_fixed()?;
            // SAFETY: caller contract.
            let (prompt, completion) = unsafe {
                (
                    cstr::text(prompt, "prompt")?,
                    cstr::text(completion, "completion")?,
                )
            };
            let r = st.encode(RawRecord::PromptCompletion {
                prompt: prompt.to_string(),
                completion: completion.to_string(),
            })?;
            st.add(vec![r], false)
        })
    })
}

/// `plora_message` (C struct)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MessageC {
    pub role: u32,
    pub content: *const c_char,
}

/// `plora_trainer_add_chat`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_add_chat(
    t: *mut plora_trainer,
    messages: *const MessageC,
    n: usize,
) -> Status {
    guard(|| {
        with_state(t, |st, _| {
            st.records_fixed()?;
            // SAFETY: caller contract.
            let msgs = unsafe { cstr::slice(messages, n, "messages")? };
            if msgs.is_empty() {
                return Err(invalid("a conversation needs at least one message"));
            }
            let mut conv = Vec::with_capacity(n);
            for (i, m) in msgs.iter().enumerate() {
                let role = match m.role {
                    0 => Role::System,
                    1 => Role::User,
                    2 => Role::Assistant,
                    r => {
                        return Err(invalid(format!(
                            "messages[{i}].role is {r}: not a PLORA_ROLE_* value"
                        )))
                    }
                };
                // SAFETY: caller contract.
                let content = unsafe { cstr::text(m.content, &format!("messages[{i}].content"))? };
                conv.push(Message::new(role, content));
            }
            if !conv.iter().any(|m| m.role == Role::Assistant) {
                return Err(invalid(
                    "the conversation has no assistant message to train on",
                ));
            }
            if st.shared.obj.chat.is_none() {
                return Err(fail(
                    Status::Unsupported,
                    "the model has no chat template (tokenizer.chat_template) to render conversations with",
                ));
            }
            let r = st.encode(RawRecord::Chat(conv))?;
            st.add(vec![r], false)
        })
    })
}

/// `plora_trainer_add_ids`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_add_ids(
    t: *mut plora_trainer,
    ids: *const i32,
    mask: *const u8,
    n: usize,
) -> Status {
    guard(|| {
        with_state(t, |st, _| {
            st.records_fixed()?;
            // SAFETY: caller contract.
            let raw = unsafe { cstr::slice(ids, n, "ids")? };
            if raw.is_empty() {
                return Err(invalid("a record needs at least one token (n is 0)"));
            }
            let ids = check_ids(raw, st.model.cfg.n_vocab, "ids")?;
            let targets: Vec<bool> = if mask.is_null() {
                (0..n).map(|i| i > 0).collect()
            } else {
                // SAFETY: caller contract: n mask bytes.
                let m = unsafe { cstr::slice(mask, n, "mask")? };
                m.iter()
                    .enumerate()
                    .map(|(i, &b)| i > 0 && b != 0)
                    .collect()
            };
            st.add(vec![TokenRecord::new(ids, targets)], false)
        })
    })
}

/// # Safety
/// `path` is a C string.
unsafe fn add_file(t: *mut plora_trainer, path: *const c_char, valid: bool) -> Status {
    guard(|| {
        with_state(t, |st, _| {
            st.records_fixed()?;
            // SAFETY: caller contract.
            let path = unsafe { cstr::path(path, "path")? };
            let m = &st.shared.obj;
            let opts = LoadOptions {
                encode: st.s.encode,
                skip_bad_lines: st.s.skip_bad_lines,
            };
            let d = load_dataset(&path, m.tok.as_ref(), m.chat.as_ref(), opts)?;
            st.add(d.records, valid)
        })
    })
}

/// `plora_trainer_add_jsonl`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_add_jsonl(
    t: *mut plora_trainer,
    path: *const c_char,
) -> Status {
    // SAFETY: forwarded.
    unsafe { add_file(t, path, false) }
}

/// `plora_trainer_add_valid_jsonl`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_add_valid_jsonl(
    t: *mut plora_trainer,
    path: *const c_char,
) -> Status {
    // SAFETY: forwarded.
    unsafe { add_file(t, path, true) }
}

fn saved_code(s: SavedDtype) -> u32 {
    match s {
        SavedDtype::F32 => 1,
        SavedDtype::BF16 => 2,
        SavedDtype::F16 => 3,
    }
}

/// `plora_trainer_plan`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_plan(t: *mut plora_trainer, out: *mut MemoryPlan) -> Status {
    guard(|| {
        with_state(t, |st, _| {
            // SAFETY: caller contract.
            unsafe {
                cstr::check_size(
                    out.cast_const().cast(),
                    std::mem::size_of::<MemoryPlan>(),
                    "plora_memory_plan",
                )?
            };
            let plan = match &st.plan {
                Some(p) => p.clone(),
                None => st.make_plan()?,
            };
            let shape = Shape {
                threads: plan.threads,
                seq_len: plan.shape.capacity,
                chunk: plan.shape.chunk,
                saved_activations: saved_code(plan.shape.saved),
                segment: plan.shape.segment,
                loss_rows: plan.shape.loss_rows,
            };
            let value = MemoryPlan::new(st.shared.obj.budget, plan.total, shape, &plan.items);
            // SAFETY: caller contract; size checked.
            unsafe { out.write_unaligned(value) };
            Ok(())
        })
    })
}

/// `plora_trainer_resume`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_resume(t: *mut plora_trainer, step: *mut u32) -> Status {
    guard(|| {
        with_state(t, |st, cancel| {
            if st.run.is_some() {
                return Err(state(
                    "plora_trainer_resume must come before the first plora_trainer_run",
                ));
            }
            let Some(dir) = st.s.checkpoint_dir.clone() else {
                return Err(invalid(
                    "the trainer has no checkpoint_dir (plora_train_config) to resume from",
                ));
            };
            let recorded = Run::recorded_config(&dir)?;
            if let Some(r) = &recorded {
                check_agrees(r, &st.recorded())?;
            }
            st.start(cancel)?;
            let run = st.started()?;
            let at = match recorded {
                Some(_) => run.resume()?.unwrap_or(0),
                None => 0,
            };
            st.finished = at >= st.started()?.total_steps();
            st.checkpointed_at = at;
            // SAFETY: caller contract.
            unsafe { cstr::put_opt(step, at.min(u32::MAX as usize) as u32) };
            Ok(())
        })
    })
}

/// `plora_trainer_run`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_run(
    t: *mut plora_trainer,
    steps: u32,
    cb: ProgressFn,
    user_data: *mut c_void,
) -> Status {
    guard(|| {
        with_state(t, |st, cancel| {
            st.start(cancel)?;
            let State {
                run,
                last_loss,
                last_valid,
                checkpointed_at,
                finished,
                s,
                ..
            } = st;
            let Some(run) = run.as_mut() else {
                return Err(state("the run did not start"));
            };
            let total = run.total_steps();
            if *finished {
                // Every step is done, or validation stopped the run early.
                return Ok(());
            }
            let before = run.trainer().steps_done();
            let until = if steps == 0 {
                total
            } else {
                before.saturating_add(steps as usize).min(total)
            };
            let mut stopped_by_callback = false;
            let res = run.run_until(until, |ev| match ev {
                Event::Step {
                    stats,
                    epoch,
                    tokens_per_s,
                } => {
                    *last_loss = stats.loss;
                    let Some(f) = cb else { return true };
                    let p = Progress {
                        step: stats.step as u32,
                        total_steps: total as u32,
                        loss: stats.loss as f32,
                        tokens_per_s: tokens_per_s as f32,
                        heap_bytes: heap::current() as u64,
                        lr: stats.lr,
                        grad_norm: stats.grad_norm as f32,
                        valid_loss: last_valid.map_or(f32::NAN, |v| v as f32),
                        epoch: epoch as u32,
                    };
                    // SAFETY: the caller's callback with its user_data; `p` outlives the call.
                    let go = unsafe { f(&p, user_data) } == 0;
                    stopped_by_callback |= !go;
                    go
                }
                Event::Eval { loss, .. } => {
                    *last_valid = Some(loss);
                    true
                }
                Event::Checkpoint { step, .. } => {
                    *checkpointed_at = step;
                    true
                }
            });
            let done = run.trainer().steps_done();
            // The run is over: validate at its end, as the command line does.
            let res = match res {
                Ok(steps_out) if done >= total || steps_out.finish == Finish::EarlyStopped => run
                    .final_validation(&steps_out, |ev| {
                        if let Event::Eval { loss, .. } = ev {
                            *last_valid = Some(loss);
                        }
                        true
                    })
                    .map(|()| steps_out),
                other => other,
            };
            // Checkpoint what this call did, whatever ended it.
            if s.checkpoint_dir.is_some() && done > *checkpointed_at {
                match run.checkpoint() {
                    Ok(_) => *checkpointed_at = done,
                    Err(e) if res.is_ok() => return Err(e.into()),
                    Err(_) => {}
                }
            }
            let steps_out = res?;
            *finished = done >= total || steps_out.finish == Finish::EarlyStopped;
            if steps_out.finish == Finish::Interrupted {
                let cancelled = cancel.swap(false, Ordering::SeqCst);
                let why = if cancelled && !stopped_by_callback {
                    "cancelled by plora_trainer_cancel() (or plora_trainer_free)"
                } else {
                    "stopped by the progress callback"
                };
                return Err(fail(
                    Status::Cancelled,
                    format!("{why} after step {done} of {total}"),
                ));
            }
            Ok(())
        })
    })
}

/// `plora_trainer_cancel`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_cancel(t: *mut plora_trainer) {
    guard_void(|| {
        let h = get(t, "t")?;
        h.obj.cancel.store(true, Ordering::SeqCst);
        Ok(())
    });
}

/// `plora_trainer_checkpoint`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_checkpoint(t: *mut plora_trainer) -> Status {
    guard(|| {
        with_state(t, |st, _| {
            if st.s.checkpoint_dir.is_none() {
                return Err(invalid(
                    "the trainer has no checkpoint_dir (plora_train_config) to write to",
                ));
            }
            let run = st.started()?;
            run.checkpoint()?;
            st.checkpointed_at = st.started()?.trainer().steps_done();
            Ok(())
        })
    })
}

fn trained(st: &mut State) -> FResult<&mut Run<'static>> {
    let run = st.started()?;
    if run.trainer().steps_done() == 0 {
        return Err(state("nothing trained yet: call plora_trainer_run first"));
    }
    Ok(run)
}

/// `plora_trainer_save_adapter`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_save_adapter(
    t: *const plora_trainer,
    dir: *const c_char,
) -> Status {
    guard(|| {
        with_state(t, |st, _| {
            // SAFETY: caller contract.
            let dir = unsafe { cstr::path(dir, "dir")? };
            let name = st.shared.obj.name.clone();
            let model = st.model.clone();
            let run = trained(st)?;
            peft::save(run.result_adapter(), &model.cfg, &dir, &name, Dtype::F32)?;
            Ok(())
        })
    })
}

/// `plora_trainer_adapter`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_adapter(
    t: *const plora_trainer,
    out: *mut *mut plora_adapter,
) -> Status {
    guard(|| {
        // SAFETY: caller contract.
        unsafe { cstr::put(out, std::ptr::null_mut(), "out")? };
        with_state(t, |st, _| {
            let shared = st.shared.clone();
            let a = trained(st)?.result_adapter().clone();
            let p = adapter::register(a, shared);
            // SAFETY: caller contract.
            unsafe { cstr::put(out, p, "out") }
        })
    })
}

/// `plora_trainer_info` (C struct)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TrainerInfo {
    pub struct_size: u32,
    pub started: u32,
    pub steps_done: u32,
    pub total_steps: u32,
    pub finished: u32,
    pub reserved: u32,
    pub n_records: u64,
    pub n_valid_records: u64,
    pub target_tokens: u64,
    pub n_params: u64,
    pub last_loss: f32,
    pub best_valid_loss: f32,
}

/// `plora_trainer_get_info`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_get_info(
    t: *const plora_trainer,
    info: *mut TrainerInfo,
) -> Status {
    guard(|| {
        with_state(t, |st, _| {
            let (n, nv, targets) = match &st.run {
                Some(_) => st.counts,
                None => (
                    st.train.len(),
                    st.valid.len(),
                    st.train.iter().map(|r| r.n_targets()).sum(),
                ),
            };
            let (done, total, best) = match &st.run {
                Some(r) => (r.trainer().steps_done(), r.total_steps(), r.best_valid()),
                None => (0, 0, None),
            };
            let value = TrainerInfo {
                struct_size: std::mem::size_of::<TrainerInfo>() as u32,
                started: st.run.is_some() as u32,
                steps_done: done as u32,
                total_steps: total as u32,
                finished: st.finished as u32,
                reserved: 0,
                n_records: n as u64,
                n_valid_records: nv as u64,
                target_tokens: targets as u64,
                n_params: st.n_params as u64,
                last_loss: st.last_loss as f32,
                best_valid_loss: best.map_or(f32::NAN, |v| v as f32),
            };
            // SAFETY: caller contract.
            unsafe { cstr::write_sized(info, value, "plora_trainer_info") }
        })
    })
}

/// `plora_trainer_free`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_trainer_free(t: *mut plora_trainer) {
    guard_void(|| {
        if let Some(h) = handles::release::<TrainerObj, _>(t, "t")? {
            // A run in progress on another thread stops at its next record; the object
            // goes when that call drops its reference.
            h.obj.cancel.store(true, Ordering::SeqCst);
        }
        Ok(())
    });
}
