//! Model handles: open, describe, tokenize, detokenize.

use std::ffi::c_char;
use std::sync::Arc;

use pocketlora_core::heap;
use pocketlora_core::ChatTemplate;
use pocketlora_core::GgufFile;
use pocketlora_core::Model;
use pocketlora_core::Tokenizer;
use pocketlora_core::{plan_generation, GenerateRequest};

use crate::cstr;
use crate::handles::{self, Handle, Kind, Object};
use crate::status::{fail, guard, guard_void, invalid, FResult, Status};

/// Opaque C type `plora_model`.
#[allow(non_camel_case_types)]
pub enum plora_model {}

/// A loaded model and what every operation on it shares. Immutable after open.
pub struct ModelObj {
    pub model: Arc<Model>,
    pub tok: Option<Tokenizer>,
    /// Why there is no tokenizer.
    pub tok_error: String,
    pub chat: Option<ChatTemplate>,
    pub budget: u64,
    /// The file's name, recorded in adapters as their base model.
    pub name: String,
    pub arch: String,
    /// Heap held by the model's metadata and tokenizer (measured while opening).
    pub loaded_bytes: u64,
}

impl Object for ModelObj {
    const KIND: Kind = Kind::Model;
}

impl ModelObj {
    pub fn file(&self) -> &Arc<GgufFile> {
        self.model.weights.file()
    }

    /// The tokenizer, or an error saying why there is none.
    pub fn tokenizer(&self) -> FResult<&Tokenizer> {
        self.tok.as_ref().ok_or_else(|| {
            fail(
                Status::Unsupported,
                format!(
                    "the model has no usable tokenizer ({}): use token ids",
                    self.tok_error
                ),
            )
        })
    }

    /// The budget, `u64::MAX` without one.
    pub fn budget_or_max(&self) -> u64 {
        if self.budget == 0 {
            u64::MAX
        } else {
            self.budget
        }
    }
}

pub fn get(p: *const plora_model, what: &str) -> FResult<Arc<Handle<ModelObj>>> {
    handles::get::<ModelObj, _>(p, what)
}

/// `plora_model_open`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_model_open(
    gguf_path: *const c_char,
    threads: i32,
    budget_bytes: u64,
    out: *mut *mut plora_model,
) -> Status {
    guard(|| {
        // SAFETY: caller contract.
        unsafe { cstr::put(out, std::ptr::null_mut(), "out")? };
        // SAFETY: caller contract.
        let path = unsafe { cstr::path(gguf_path, "gguf_path")? };
        if threads < 0 {
            return Err(invalid(format!(
                "threads is {threads}: give 0 (one per core) or more"
            )));
        }
        let before = heap::current();
        let model = Model::open(&path, threads as usize)?;
        let file = model.weights.file().clone();
        let (tok, tok_error) = match Tokenizer::from_gguf(&file) {
            Ok(t) => (Some(t), String::new()),
            Err(e) => (None, e.to_string()),
        };
        let chat = ChatTemplate::from_gguf(&file).ok();
        let loaded_bytes = heap::current().saturating_sub(before) as u64;
        let obj = ModelObj {
            tok,
            tok_error,
            chat,
            budget: budget_bytes,
            name: path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            arch: model.cfg.arch.name().to_string(),
            loaded_bytes,
            model: Arc::new(model),
        };
        if budget_bytes > 0 {
            // Fail fast: not even one token can be generated inside this budget.
            let req = GenerateRequest {
                model: &obj.model.cfg,
                prompt_len: 1,
                max_new: 1,
                max_rank: 0,
                threads: 1,
                budget: budget_bytes,
                loaded_bytes,
                precision: obj.model.precision(),
            };
            plan_generation(&req)?;
        }
        let p = handles::register::<ModelObj, plora_model>(obj);
        // SAFETY: caller contract (checked non-NULL above).
        unsafe { cstr::put(out, p, "out") }
    })
}

/// `plora_model_free`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_model_free(model: *mut plora_model) {
    guard_void(|| handles::release::<ModelObj, _>(model, "model").map(drop));
}

/// `plora_model_info` (C struct)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModelInfo {
    pub struct_size: u32,
    pub n_vocab: u32,
    pub n_ctx: u32,
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_ff: u32,
    pub threads: u32,
    pub bos: i32,
    pub eos: i32,
    pub has_tokenizer: i32,
    pub has_chat_template: i32,
    pub budget_bytes: u64,
    pub file_bytes: u64,
    pub n_params: u64,
    pub architecture: [c_char; 16],
}

/// `plora_model_get_info`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_model_get_info(
    model: *const plora_model,
    info: *mut ModelInfo,
) -> Status {
    guard(|| {
        let h = get(model, "model")?;
        let m = &h.obj;
        let c = &m.model.cfg;
        let id = |x: Option<u32>| x.map_or(-1, |v| v as i32);
        let value = ModelInfo {
            struct_size: std::mem::size_of::<ModelInfo>() as u32,
            n_vocab: c.n_vocab as u32,
            n_ctx: c.n_ctx as u32,
            n_embd: c.n_embd as u32,
            n_layer: c.n_layer as u32,
            n_head: c.n_head as u32,
            n_head_kv: c.n_head_kv as u32,
            n_ff: c.n_ff as u32,
            threads: m.model.threads() as u32,
            bos: id(m.tok.as_ref().and_then(|t| t.bos())),
            eos: id(m.tok.as_ref().and_then(|t| t.eos())),
            has_tokenizer: m.tok.is_some() as i32,
            has_chat_template: m.chat.is_some() as i32,
            budget_bytes: m.budget,
            file_bytes: m.file().file_len(),
            n_params: m.file().tensors().iter().map(|t| t.n_elements()).sum(),
            architecture: cstr::fixed(&m.arch),
        };
        // SAFETY: caller contract.
        unsafe { cstr::write_sized(info, value, "plora_model_info") }
    })
}

/// `plora_tokenize`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_tokenize(
    model: *const plora_model,
    text: *const c_char,
    add_special: i32,
    parse_special: i32,
    ids: *mut i32,
    capacity: usize,
    n_ids: *mut usize,
) -> Status {
    guard(|| {
        let h = get(model, "model")?;
        // SAFETY: caller contract.
        let s = unsafe { cstr::text(text, "text")? };
        if n_ids.is_null() {
            return Err(invalid("n_ids is NULL"));
        }
        let tok = h.obj.tokenizer()?;
        let out = tok.encode(s, add_special != 0, parse_special != 0);
        // SAFETY: caller contract; checked non-NULL.
        unsafe { n_ids.write(out.len()) };
        if out.len() > capacity {
            return Err(fail(
                Status::BufferTooSmall,
                format!(
                    "the text has {} tokens; the buffer holds {capacity}",
                    out.len()
                ),
            ));
        }
        if out.is_empty() {
            return Ok(());
        }
        if ids.is_null() {
            return Err(invalid(format!("ids is NULL but capacity is {capacity}")));
        }
        for (i, &t) in out.iter().enumerate() {
            // SAFETY: i < out.len() <= capacity elements of the caller's buffer.
            unsafe { ids.add(i).write(t as i32) };
        }
        Ok(())
    })
}

/// Token ids from C, checked against the vocabulary.
pub fn check_ids(ids: &[i32], n_vocab: usize, what: &str) -> FResult<Vec<u32>> {
    ids.iter()
        .enumerate()
        .map(|(i, &t)| {
            if t < 0 || t as usize >= n_vocab {
                Err(invalid(format!(
                    "{what}[{i}] = {t} is not a token id of this model (0 ..= {})",
                    n_vocab - 1
                )))
            } else {
                Ok(t as u32)
            }
        })
        .collect()
}

/// `plora_detokenize`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_detokenize(
    model: *const plora_model,
    ids: *const i32,
    n_ids: usize,
    text: *mut c_char,
    capacity: usize,
    length: *mut usize,
) -> Status {
    guard(|| {
        let h = get(model, "model")?;
        // SAFETY: caller contract.
        let raw = unsafe { cstr::slice(ids, n_ids, "ids")? };
        let tok = h.obj.tokenizer()?;
        let ids = check_ids(raw, tok.n_vocab(), "ids")?;
        let s = tok.decode(&ids)?;
        // SAFETY: caller contract.
        unsafe { cstr::copy_exact(s.as_bytes(), text, capacity, length) }
    })
}
