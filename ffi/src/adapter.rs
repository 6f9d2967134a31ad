//! Adapter handles: load, save (PEFT), export (llama.cpp GGUF), merge into the base.

use std::ffi::c_char;
use std::sync::Arc;

use pocketlora_core::Dtype;
use pocketlora_core::GgmlType;
use pocketlora_core::{combine, gguf_adapter, lora_load, peft, Adapter};
use pocketlora_core::{merge_file, MergeOptions};

use crate::cstr;
use crate::handles::{self, Handle, Kind, Object};
use crate::model::{self, plora_model, ModelObj};
use crate::status::{guard, guard_void, invalid, FResult, Status};

/// Opaque C type `plora_adapter`.
#[allow(non_camel_case_types)]
pub enum plora_adapter {}

/// An adapter and the model it was made for (kept alive with it).
pub struct AdapterObj {
    pub adapter: Arc<Adapter>,
    pub model: Arc<Handle<ModelObj>>,
}

impl Object for AdapterObj {
    const KIND: Kind = Kind::Adapter;
}

pub fn get(p: *const plora_adapter, what: &str) -> FResult<Arc<Handle<AdapterObj>>> {
    handles::get::<AdapterObj, _>(p, what)
}

pub fn register(adapter: Adapter, model: Arc<Handle<ModelObj>>) -> *mut plora_adapter {
    handles::register::<AdapterObj, plora_adapter>(AdapterObj {
        adapter: Arc::new(adapter),
        model,
    })
}

/// The adapters and weights of a C array pair, combined into one (Σ wᵢ·adapterᵢ), or
/// `None` when `n` is 0. A single adapter of weight 1 is shared, not copied.
///
/// # Safety
/// `adapters` (and `scales`, if not NULL) point to `n` items.
pub unsafe fn combined(
    adapters: *const *const plora_adapter,
    scales: *const f32,
    n: usize,
    model: &ModelObj,
) -> FResult<Option<Arc<Adapter>>> {
    // SAFETY: caller contract.
    let ptrs = unsafe { cstr::slice(adapters, n, "adapters")? };
    let ws: Vec<f32> = if scales.is_null() {
        vec![1.0; n]
    } else {
        // SAFETY: caller contract.
        unsafe { cstr::slice(scales, n, "scales")? }.to_vec()
    };
    let mut held = Vec::with_capacity(n);
    for (i, &p) in ptrs.iter().enumerate() {
        let h = get(p, &format!("adapters[{i}]"))?;
        h.obj.adapter.check_fits(&model.model.cfg)?;
        held.push(h);
    }
    if let Some((i, w)) = ws.iter().enumerate().find(|(_, w)| !w.is_finite()) {
        return Err(invalid(format!("scales[{i}] = {w} is not finite")));
    }
    match held.as_slice() {
        [] => Ok(None),
        [one] if ws[0] == 1.0 => Ok(Some(one.obj.adapter.clone())),
        _ => {
            let parts: Vec<(&Adapter, f32)> = held
                .iter()
                .zip(&ws)
                .map(|(h, &w)| (&*h.obj.adapter, w))
                .collect();
            Ok(Some(Arc::new(combine(&parts)?)))
        }
    }
}

/// `plora_adapter_load`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_adapter_load(
    model: *const plora_model,
    path: *const c_char,
    out: *mut *mut plora_adapter,
) -> Status {
    guard(|| {
        // SAFETY: caller contract.
        unsafe { cstr::put(out, std::ptr::null_mut(), "out")? };
        let m = model::get(model, "model")?;
        // SAFETY: caller contract.
        let path = unsafe { cstr::path(path, "path")? };
        let a = lora_load(&path, &m.obj.model.cfg)?;
        let p = register(a, m);
        // SAFETY: caller contract.
        unsafe { cstr::put(out, p, "out") }
    })
}

/// `plora_adapter_free`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_adapter_free(adapter: *mut plora_adapter) {
    guard_void(|| handles::release::<AdapterObj, _>(adapter, "adapter").map(drop));
}

/// `plora_adapter_save`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_adapter_save(
    adapter: *const plora_adapter,
    dir: *const c_char,
) -> Status {
    guard(|| {
        let a = get(adapter, "adapter")?;
        // SAFETY: caller contract.
        let dir = unsafe { cstr::path(dir, "dir")? };
        let m = &a.obj.model.obj;
        peft::save(&a.obj.adapter, &m.model.cfg, &dir, &m.name, Dtype::F32)?;
        Ok(())
    })
}

/// `plora_adapter_export_gguf`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_adapter_export_gguf(
    adapter: *const plora_adapter,
    path: *const c_char,
    dtype: u32,
) -> Status {
    guard(|| {
        let a = get(adapter, "adapter")?;
        // SAFETY: caller contract.
        let path = unsafe { cstr::path(path, "path")? };
        let dtype = match dtype {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            d => {
                return Err(invalid(format!(
                    "dtype {d}: expected PLORA_DTYPE_F32 (0) or PLORA_DTYPE_F16 (1)"
                )))
            }
        };
        let m = &a.obj.model.obj;
        let name = path
            .file_stem()
            .map_or("adapter".into(), |s| s.to_string_lossy().into_owned());
        gguf_adapter::save(&a.obj.adapter, &m.model.cfg, &m.arch, &name, dtype, &path)?;
        Ok(())
    })
}

/// The merge output type of a `PLORA_TYPE_*` value.
fn merge_type(t: u32) -> FResult<Option<GgmlType>> {
    Ok(match t {
        0 => None,
        1 => Some(GgmlType::F32),
        2 => Some(GgmlType::F16),
        3 => Some(GgmlType::BF16),
        4 => Some(GgmlType::Q8_0),
        5 => Some(GgmlType::Q4_0),
        6 => Some(GgmlType::Q4_K),
        7 => Some(GgmlType::Q6_K),
        other => {
            return Err(invalid(format!(
                "out_type {other} is not a PLORA_TYPE_* value (0 ..= 7)"
            )))
        }
    })
}

/// `plora_merge`
///
/// # Safety
/// C caller contract of the header.
#[no_mangle]
pub unsafe extern "C" fn plora_merge(
    model: *const plora_model,
    adapters: *const *const plora_adapter,
    scales: *const f32,
    n: usize,
    out_path: *const c_char,
    out_type: u32,
    max_requant_error: *mut f64,
) -> Status {
    guard(|| {
        let m = model::get(model, "model")?;
        // SAFETY: caller contract.
        let out = unsafe { cstr::path(out_path, "out_path")? };
        let out_type = merge_type(out_type)?;
        // SAFETY: caller contract.
        let Some(adapter) = (unsafe { combined(adapters, scales, n, &m.obj)? }) else {
            return Err(invalid("no adapters to merge (n is 0)"));
        };
        let opts = MergeOptions {
            out_type,
            threads: m.obj.model.threads(),
            ..MergeOptions::default()
        };
        let report = merge_file(m.obj.file(), &adapter, &opts, None, &out)?;
        // SAFETY: caller contract.
        unsafe { cstr::put_opt(max_requant_error, report.max_requant_rel_rms()) };
        Ok(())
    })
}
