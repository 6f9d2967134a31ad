//! Generation with a streaming token callback, adapters with weights, and its memory plan.

use std::ffi::{c_char, c_void, CString};
use std::time::Instant;

use pocketlora_core::Message;
use pocketlora_core::Model;
use pocketlora_core::{
    generate_limited, GenerateLimits, GenerateParams, SamplerConfig, StopReason,
};
use pocketlora_core::{lora_load, Adapter};
use pocketlora_core::{plan_generation, GeneratePlan, GenerateRequest};

use crate::adapter::{self, plora_adapter};
use crate::cstr;
use crate::model::{self, plora_model, ModelObj};
use crate::plan::{MemoryPlan, Shape};
use crate::status::{fail, guard, guard_void, invalid, FResult, Status};

/// `plora_token_fn`
pub type TokenFn = Option<unsafe extern "C" fn(*const c_char, i32, *mut c_void) -> i32>;

/// `plora_generate_config` (C struct)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenerateConfig {
    pub struct_size: u32,
    pub max_tokens: u32,
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub seed: u64,
    pub chat: i32,
    pub parse_special: i32,
    pub adapters: *const *const plora_adapter,
    pub scales: *const f32,
    pub n_adapters: u32,
    pub reserved: u32,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        let s = SamplerConfig::default();
        GenerateConfig {
            struct_size: std::mem::size_of::<GenerateConfig>() as u32,
            max_tokens: 128,
            temperature: s.temperature,
            top_k: s.top_k as u32,
            top_p: s.top_p,
            min_p: s.min_p,
            seed: 0,
            chat: 0,
            parse_special: 0,
            adapters: std::ptr::null(),
            scales: std::ptr::null(),
            n_adapters: 0,
            reserved: 0,
        }
    }
}

/// `plora_generate_result` (C struct)
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct GenerateResult {
    pub struct_size: u32,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub stop_reason: u32,
    pub tokens_per_s: f32,
    pub reserved: u32,
}

/// Plans a generation against the model's budget (the unconstrained plan without one).
fn plan(m: &ModelObj, prompt_len: usize, max_new: usize, max_rank: usize) -> FResult<GeneratePlan> {
    let req = GenerateRequest {
        model: &m.model.cfg,
        prompt_len,
        max_new,
        max_rank,
        threads: m.model.threads(),
        budget: m.budget_or_max(),
        loaded_bytes: m.loaded_bytes,
        precision: m.model.precision(),
    };
    Ok(plan_generation(&req)?)
}

fn max_rank(a: Option<&Adapter>) -> usize {
    a.map_or(0, |a| a.pairs().map(|p| p.r).max().unwrap_or(0))
}

/// Tokenizes the prompt (text or one chat message), generates, streams pieces to `cb`.
///
/// # Safety
/// `cb` is a valid function pointer (or None) that may be called with `user_data`.
unsafe fn run(
    m: &ModelObj,
    adapter: Option<&Adapter>,
    prompt: &str,
    cfg: &GenerateConfig,
    cb: TokenFn,
    user_data: *mut c_void,
) -> FResult<GenerateResult> {
    let tok = m.tokenizer()?;
    let with_bos = |mut ids: Vec<u32>| {
        if let (true, Some(b)) = (tok.add_bos(), tok.bos()) {
            ids.insert(0, b);
        }
        ids
    };
    let prompt_ids = if cfg.chat != 0 {
        let tmpl = m.chat.as_ref().ok_or_else(|| {
            fail(
                Status::Unsupported,
                "chat is set but the model has no chat template (tokenizer.chat_template)",
            )
        })?;
        let r = tmpl.render(&[Message::user(prompt)], true);
        with_bos(tok.encode(&r.text, false, true))
    } else {
        with_bos(tok.encode(prompt, false, cfg.parse_special != 0))
    };
    let sampler = SamplerConfig {
        temperature: cfg.temperature,
        top_k: cfg.top_k as usize,
        top_p: cfg.top_p,
        min_p: cfg.min_p,
        seed: cfg.seed,
    };
    sampler.validate().map_err(invalid)?;
    let params = GenerateParams {
        max_new: cfg.max_tokens as usize,
        sampler,
        stop_ids: tok.eog_ids().to_vec(),
    };
    // Inside the budget: a prompt chunk, a KV cache limit, maybe fewer threads (then on a
    // model of its own over the same file, for this call).
    let (limits, own_model) = if m.budget > 0 {
        let p = plan(m, prompt_ids.len(), params.max_new, max_rank(adapter))?;
        let own = if p.threads < m.model.threads() {
            Some(Model::from_file(m.file().clone(), p.threads)?)
        } else {
            None
        };
        (p.limits, own)
    } else {
        (GenerateLimits::default(), None)
    };
    let model: &Model = own_model.as_ref().unwrap_or(&m.model);
    let mut dec = tok.decoder();
    for &id in &prompt_ids {
        dec.push(id)?;
    }
    let start = Instant::now();
    let mut failure = None;
    let (new, why) = generate_limited(model, adapter, &prompt_ids, &params, limits, |id| {
        let Some(f) = cb else { return true };
        match dec.push(id) {
            Ok(piece) => {
                let c = CString::new(piece.replace('\0', "")).unwrap_or_default();
                // SAFETY: the caller's callback, with its user_data; `c` outlives the call.
                unsafe { f(c.as_ptr(), id as i32, user_data) == 0 }
            }
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    let rest = dec.finish();
    if let (Some(f), false, false) = (cb, rest.is_empty(), why == StopReason::Cancelled) {
        let c = CString::new(rest.replace('\0', "")).unwrap_or_default();
        // SAFETY: as above.
        unsafe { f(c.as_ptr(), -1, user_data) };
    }
    Ok(GenerateResult {
        struct_size: std::mem::size_of::<GenerateResult>() as u32,
        prompt_tokens: prompt_ids.len() as u32,
        generated_tokens: new.len() as u32,
        stop_reason: match why {
            StopReason::Length => 0,
            StopReason::EndOfGeneration => 1,
            StopReason::ContextFull => 2,
            StopReason::Cancelled => 3,
        },
        tokens_per_s: (new.len() as f64 / start.elapsed().as_secs_f64().max(1e-9)) as f32,
        reserved: 0,
    })
}

fn stopped(r: &GenerateResult) -> FResult<()> {
    if r.stop_reason == 3 {
        Err(fail(
            Status::Cancelled,
            format!(
                "the token callback stopped the generation after {} tokens",
                r.generated_tokens
            ),
        ))
    } else {
        Ok(())
    }
}

/// `plora_generate`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_generate(
    model: *mut plora_model,
    adapter_dir: *const c_char,
    prompt: *const c_char,
    max_tokens: u32,
    temperature: f32,
    seed: u64,
    cb: TokenFn,
    user_data: *mut c_void,
) -> Status {
    guard(|| {
        let m = model::get(model, "model")?;
        // SAFETY: caller contract.
        let prompt = unsafe { cstr::text(prompt, "prompt")? };
        // SAFETY: caller contract.
        let adapter = match unsafe { cstr::opt_path(adapter_dir, "adapter_dir")? } {
            Some(p) => Some(lora_load(&p, &m.obj.model.cfg)?),
            None => None,
        };
        let cfg = GenerateConfig {
            max_tokens,
            temperature,
            seed,
            ..GenerateConfig::default()
        };
        // SAFETY: caller contract for cb/user_data.
        let r = unsafe { run(&m.obj, adapter.as_ref(), prompt, &cfg, cb, user_data)? };
        stopped(&r)
    })
}

/// `plora_generate_config_default`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_generate_config_default(cfg: *mut GenerateConfig) {
    guard_void(|| {
        if !cfg.is_null() {
            // SAFETY: caller contract: a plora_generate_config of this header.
            unsafe { cfg.write_unaligned(GenerateConfig::default()) };
        }
        Ok(())
    });
}

/// `plora_generate_ex`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_generate_ex(
    model: *mut plora_model,
    cfg: *const GenerateConfig,
    prompt: *const c_char,
    cb: TokenFn,
    user_data: *mut c_void,
    result: *mut GenerateResult,
) -> Status {
    guard(|| {
        let m = model::get(model, "model")?;
        // SAFETY: caller contract.
        let cfg = unsafe { cstr::read_sized(cfg, "plora_generate_config")? };
        if !result.is_null() {
            // SAFETY: caller contract.
            unsafe {
                cstr::check_size(
                    result.cast_const().cast(),
                    std::mem::size_of::<GenerateResult>(),
                    "plora_generate_result",
                )?
            };
        }
        // SAFETY: caller contract.
        let prompt = unsafe { cstr::text(prompt, "prompt")? };
        // SAFETY: caller contract: the config's arrays hold n_adapters items.
        let adapter = unsafe {
            adapter::combined(cfg.adapters, cfg.scales, cfg.n_adapters as usize, &m.obj)?
        };
        // SAFETY: caller contract for cb/user_data.
        let r = unsafe { run(&m.obj, adapter.as_deref(), prompt, &cfg, cb, user_data)? };
        if !result.is_null() {
            // SAFETY: checked above.
            unsafe { result.write_unaligned(r) };
        }
        stopped(&r)
    })
}

/// `plora_generate_plan`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_generate_plan(
    model: *const plora_model,
    prompt_tokens: u32,
    max_tokens: u32,
    max_rank: u32,
    out: *mut MemoryPlan,
) -> Status {
    guard(|| {
        let m = model::get(model, "model")?;
        if prompt_tokens == 0 {
            return Err(invalid(
                "prompt_tokens is 0: a prompt has at least one token",
            ));
        }
        let p = plan(
            &m.obj,
            prompt_tokens as usize,
            max_tokens as usize,
            max_rank as usize,
        )?;
        let shape = Shape {
            threads: p.threads,
            seq_len: p.limits.context.min(m.obj.model.cfg.n_ctx),
            chunk: p.limits.prompt_chunk,
            saved_activations: 0,
            segment: 0,
            loss_rows: 0,
        };
        let value = MemoryPlan::new(m.obj.budget, p.total, shape, &p.items);
        // SAFETY: caller contract.
        unsafe { cstr::write_sized(out, value, "plora_memory_plan") }
    })
}
