//! Trainer handles: the same training loop as the command line ([`Run`]), fed record by
//! record, planned against the model's budget when it starts, run in slices with a
//! progress callback and a cancel flag, checkpointed and resumed.

use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use serde_json::{json, Map};

use pocketlora_core::heap;
use pocketlora_core::Dtype;
use pocketlora_core::Plan;
use pocketlora_core::SavedDtype;
use pocketlora_core::{peft, LayerSelection, LoraConfig, LoraInit, Target};
use pocketlora_core::{AdapterInit, Counts, Length, Resume, Schedule, Session, TrainSpec};
use pocketlora_core::{EncodeOptions, Encoder, LoadOptions, RawRecord, TokenRecord};
use pocketlora_core::{Event, Finish, Run};
use pocketlora_core::{Message, Role};

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
    pub flags: u32,
}

/// `PLORA_TRAIN_*` bits of [`TrainConfigC::flags`].
const TRAIN_OVERWRITE: u32 = 1;
const TRAIN_ALLOW_DATA_CHANGE: u32 = 2;
const TRAIN_ALLOW_LONG_CONTEXT: u32 = 4;

impl Default for TrainConfigC {
    fn default() -> Self {
        let lora = LoraConfig::default();
        let t = TrainSpec::default();
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
            flags: 0,
        }
    }
}

/// Every `PLORA_TARGET_*` bit.
const TARGET_BITS: u32 = (1 << Target::EVERY.len()) - 1;
/// `PLORA_TARGET_ALL`: every linear layer the architecture has.
const TARGET_ALL: u32 = 0x7f;

fn targets_of(mask: u32) -> FResult<Vec<Target>> {
    if mask == 0 || mask & !TARGET_BITS != 0 {
        return Err(invalid(format!(
            "targets is {mask:#x}: give PLORA_TARGET_* bits (some of {TARGET_BITS:#x})"
        )));
    }
    if mask == TARGET_ALL {
        return Ok(Target::ALL.to_vec());
    }
    Ok(Target::EVERY
        .iter()
        .copied()
        .filter(|t| mask & (1 << t.index()) != 0)
        .collect())
}

/// What the C configuration says beside the run's spec: how records are read.
struct Reading {
    encode: EncodeOptions,
    skip_bad_lines: bool,
}

/// Translates the C configuration into the library's [`TrainSpec`] (a field of 0 means
/// "the default" where the header says so).
///
/// # Safety
/// The config's string pointers are NULL or valid C strings.
unsafe fn spec_of(c: &TrainConfigC, model: &ModelObj) -> FResult<(TrainSpec, Reading)> {
    let known = TRAIN_OVERWRITE | TRAIN_ALLOW_DATA_CHANGE | TRAIN_ALLOW_LONG_CONTEXT;
    if c.flags & !known != 0 {
        return Err(invalid(format!(
            "flags 0x{:x} has bits that are not PLORA_TRAIN_* values",
            c.flags
        )));
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
    let adapter = match init_adapter {
        Some(p) => AdapterInit::From(p),
        None => AdapterInit::New(LoraConfig {
            r: c.rank as usize,
            alpha: c.alpha,
            rslora: c.rslora != 0,
            dropout: c.dropout,
            targets: targets_of(c.targets)?,
            layers: LayerSelection::parse(layers)?,
            init,
            seed: c.seed,
        }),
    };
    let mut extra = Map::new();
    extra.insert("mask_prompt".into(), json!(c.mask_prompt != 0));
    let positive = |v: u32| (v > 0).then_some(v as usize);
    let spec = TrainSpec {
        adapter,
        lr: c.lr,
        schedule,
        warmup: c.warmup as usize,
        clip: c.clip,
        weight_decay: c.weight_decay,
        length: match c.steps {
            0 => Length::Epochs(c.epochs as usize),
            n => Length::Steps(n as usize),
        },
        batch: c.batch as usize,
        grad_accum: c.grad_accum as usize,
        shuffle: c.shuffle != 0,
        seed: c.seed,
        seq_len: positive(c.seq_len),
        pack: false,
        valid_split: (c.valid_split > 0.0).then_some(c.valid_split as f64),
        eval_every: positive(c.eval_every),
        patience: positive(c.patience),
        save_every: c.save_every as usize,
        out: checkpoint_dir,
        // Always planned: without a budget the plan is the unconstrained one.
        budget: Some(model.budget_or_max()),
        saved,
        skip_nonfinite: false,
        base_name: model.name.clone(),
        overwrite: c.flags & TRAIN_OVERWRITE != 0,
        allow_data_change: c.flags & TRAIN_ALLOW_DATA_CHANGE != 0,
        allow_long_context: c.flags & TRAIN_ALLOW_LONG_CONTEXT != 0,
        invocation: None,
        // A C caller's length and rate are explicit (the struct has no "not given").
        auto_small_data: false,
        extra,
    };
    let reading = Reading {
        encode: EncodeOptions {
            mask_prompt: c.mask_prompt != 0,
        },
        skip_bad_lines: c.skip_bad_lines != 0,
    };
    Ok((spec, reading))
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
    /// The library's session: records until the run starts, then spent.
    session: Session,
    /// The run once started.
    run: Option<Run>,
    shared: Arc<Handle<ModelObj>>,
    reading: Reading,
    n_params: usize,
    plan: Option<Plan>,
    /// Record counts and target tokens (fixed once started).
    counts: Counts,
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

    fn add(&mut self, recs: Vec<TokenRecord>, valid: bool) -> FResult<()> {
        self.records_fixed()?;
        Ok(self.session.add(recs, valid)?)
    }

    fn encode(&self, raw: RawRecord) -> FResult<TokenRecord> {
        let m = &self.shared.obj;
        let enc = Encoder {
            tok: m.tokenizer()?,
            chat: m.chat.as_ref(),
            opts: self.reading.encode,
        };
        enc.encode(&raw).map_err(invalid)
    }

    fn no_records(&self) -> FResult<()> {
        if self.session.counts().train == 0 {
            return Err(state(
                "no training records: add some with plora_trainer_add_* first",
            ));
        }
        Ok(())
    }

    /// Plans, fixes the data and builds the run (once); returns the step a resumed run
    /// continues at.
    fn start(&mut self, cancel: &Arc<AtomicBool>, resume: Resume) -> FResult<Option<usize>> {
        if let Some(why) = &self.broken {
            return Err(state(format!(
                "the trainer could not start ({why}); free it"
            )));
        }
        if self.run.is_some() {
            return Ok(None);
        }
        self.no_records()?;
        match self.session.start(resume) {
            Ok(started) => {
                let mut run = started.run;
                run.set_cancel_flag(Some(cancel.clone()));
                self.run = Some(run);
                self.plan = started.plan;
                self.counts = started.counts;
                Ok(started.resumed)
            }
            Err(e) => {
                // Refusals leave the data with the session; later failures spend it.
                if self.session.adapter().is_none() {
                    self.broken = Some(e.to_string());
                }
                Err(e.into())
            }
        }
    }

    fn started(&mut self) -> FResult<&mut Run> {
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
        let (spec, reading) = unsafe { spec_of(&c, &m.obj)? };
        let mut session = Session::new(m.obj.model.clone(), spec)?;
        session.count_resident(m.obj.loaded_bytes);
        let obj = TrainerObj {
            cancel: Arc::new(AtomicBool::new(false)),
            state: Mutex::new(State {
                n_params: session.adapter().map_or(0, |a| a.n_params()),
                session,
                run: None,
                shared: m,
                reading,
                plan: None,
                counts: Counts::default(),
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
            let ids = check_ids(raw, st.shared.obj.model.cfg.n_vocab, "ids")?;
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
            let shared = st.shared.clone();
            let m = &shared.obj;
            let opts = LoadOptions {
                encode: st.reading.encode,
                skip_bad_lines: st.reading.skip_bad_lines,
            };
            st.session
                .loading(|s| s.load_file(&path, m.tok.as_ref(), m.chat.as_ref(), opts, valid))?;
            Ok(())
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
                None => {
                    st.no_records()?;
                    match st.session.plan()? {
                        Some(p) => p.clone(),
                        None => return Err(state("the trainer has no plan")),
                    }
                }
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
            if st.session.spec().out.is_none() {
                return Err(invalid(
                    "the trainer has no checkpoint_dir (plora_train_config) to resume from",
                ));
            }
            let at = st.start(cancel, Resume::IfAny)?.unwrap_or(0);
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
            st.start(cancel, Resume::No)?;
            let has_dir = st.session.spec().out.is_some();
            let State {
                run,
                last_loss,
                last_valid,
                checkpointed_at,
                finished,
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
            if has_dir && done > *checkpointed_at {
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
            if st.session.spec().out.is_none() {
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

fn trained(st: &mut State) -> FResult<&mut Run> {
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
            let run = trained(st)?;
            peft::save(
                run.result_adapter(),
                &run.model().cfg,
                &dir,
                &name,
                Dtype::F32,
            )?;
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
            let c = match &st.run {
                Some(_) => st.counts,
                None => st.session.counts(),
            };
            let (n, nv, targets) = (c.train, c.valid, c.target_tokens);
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
