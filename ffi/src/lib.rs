//! The C ABI of pocketlora (`include/pocketlora.h`): `libpocketlora.so` and
//! `libpocketlora.a` for apps that reach pocketlora through C — Kotlin via JNI on Android,
//! Swift on iOS.
//!
//! Conventions (rustls-ffi style), as the header documents them per function:
//! - opaque handles (`plora_model`, `plora_trainer`, `plora_adapter`) with `_open`/`_new`
//!   and `_free`, registered in a table of live handles and tagged, so a NULL, freed or
//!   foreign handle is an error code, not a crash ([`handles`]);
//! - every export runs inside a panic boundary ([`status::guard`]); result codes are a
//!   `#[repr(C)]` enum with stable numbers; the message goes to a thread-local
//!   `plora_last_error()` and into caller buffers on request;
//! - structs the caller fills carry their own size (`struct_size`), checked;
//! - long calls (training) take a progress callback with `void *user_data` and honour a
//!   cancel from any thread within one micro-step; generation streams tokens to a callback.
//!
//! Memory: this library installs pocketlora's counting allocator as its global allocator,
//! so its heap (not the app's malloc) is measured: `plora_heap_stats`, the progress
//! reports, and the budget plans use it. The counting costs two relaxed atomic additions
//! per allocation. (A Rust app linking the pocketlora crate directly decides for itself.)

#![deny(unsafe_op_in_unsafe_fn)]

pub mod adapter;
pub mod cstr;
pub mod generate;
pub mod handles;
pub mod model;
pub mod plan;
pub mod status;
pub mod trainer;

#[cfg(test)]
mod layout_tests;

use std::ffi::c_char;

use pocketlora_core::{heap, CountingAlloc};

use status::guard_value;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// `PLORA_ABI_VERSION`.
pub const ABI_VERSION: u32 = 1;

/// `plora_abi_version`
#[no_mangle]
pub extern "C" fn plora_abi_version() -> u32 {
    ABI_VERSION
}

/// `plora_version`
#[no_mangle]
pub extern "C" fn plora_version() -> *const c_char {
    static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

/// `plora_last_error`
#[no_mangle]
pub extern "C" fn plora_last_error() -> *const c_char {
    guard_value(c"".as_ptr(), status::last_error_ptr)
}

/// `plora_last_error_copy`
///
/// # Safety
/// `buf` is NULL or valid for `size` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn plora_last_error_copy(buf: *mut c_char, size: usize) -> usize {
    guard_value(0, || {
        let msg = status::last_error_bytes();
        // SAFETY: caller contract.
        unsafe { cstr::copy_truncated(&msg, buf, size) }
    })
}

/// `plora_status_name` (takes the number, so any value from C is safe).
#[no_mangle]
pub extern "C" fn plora_status_name(status: i32) -> *const c_char {
    static NAMES: [&str; 11] = [
        "PLORA_OK\0",
        "PLORA_ERR_INVALID_ARGUMENT\0",
        "PLORA_ERR_IO\0",
        "PLORA_ERR_FORMAT\0",
        "PLORA_ERR_UNSUPPORTED\0",
        "PLORA_ERR_BUDGET\0",
        "PLORA_ERR_CANCELLED\0",
        "PLORA_ERR_NUMERIC\0",
        "PLORA_ERR_STATE\0",
        "PLORA_ERR_PANIC\0",
        "PLORA_ERR_BUFFER_TOO_SMALL\0",
    ];
    let name = usize::try_from(status)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("PLORA_UNKNOWN\0");
    name.as_ptr().cast()
}

/// `plora_heap_stats`
///
/// # Safety
/// Each pointer is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn plora_heap_stats(current_bytes: *mut u64, peak_bytes: *mut u64) {
    // SAFETY: caller contract.
    unsafe {
        cstr::put_opt(current_bytes, heap::current() as u64);
        cstr::put_opt(peak_bytes, heap::peak() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;

    #[test]
    fn status_names_follow_the_numbers() {
        for (s, name) in Status::ALL {
            // SAFETY: static NUL-terminated strings.
            let got = unsafe { std::ffi::CStr::from_ptr(plora_status_name(s as i32)) };
            assert_eq!(got.to_str().unwrap(), name);
        }
        // SAFETY: as above.
        let unknown = unsafe { std::ffi::CStr::from_ptr(plora_status_name(99)) };
        assert_eq!(unknown.to_str().unwrap(), "PLORA_UNKNOWN");
    }
}
