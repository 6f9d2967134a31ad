//! Result codes, the thread-local last error, and the panic boundary every export runs in.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pocketlora_core::Error;
use pocketlora_core::{ModelError, QuantError, TokenizerError};

/// `plora_status`: stable numbers, only ever appended to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok = 0,
    InvalidArgument = 1,
    Io = 2,
    Format = 3,
    Unsupported = 4,
    Budget = 5,
    Cancelled = 6,
    Numeric = 7,
    State = 8,
    Panic = 9,
    BufferTooSmall = 10,
}

impl Status {
    /// Every status with its C name, in number order.
    pub const ALL: [(Status, &'static str); 11] = [
        (Status::Ok, "PLORA_OK"),
        (Status::InvalidArgument, "PLORA_ERR_INVALID_ARGUMENT"),
        (Status::Io, "PLORA_ERR_IO"),
        (Status::Format, "PLORA_ERR_FORMAT"),
        (Status::Unsupported, "PLORA_ERR_UNSUPPORTED"),
        (Status::Budget, "PLORA_ERR_BUDGET"),
        (Status::Cancelled, "PLORA_ERR_CANCELLED"),
        (Status::Numeric, "PLORA_ERR_NUMERIC"),
        (Status::State, "PLORA_ERR_STATE"),
        (Status::Panic, "PLORA_ERR_PANIC"),
        (Status::BufferTooSmall, "PLORA_ERR_BUFFER_TOO_SMALL"),
    ];
}

/// A failed call: its code and message.
#[derive(Debug)]
pub struct Failure {
    pub status: Status,
    pub msg: String,
}

pub type FResult<T> = Result<T, Failure>;

pub fn fail(status: Status, msg: impl Into<String>) -> Failure {
    Failure {
        status,
        msg: msg.into(),
    }
}

pub fn invalid(msg: impl Into<String>) -> Failure {
    fail(Status::InvalidArgument, msg)
}

pub fn state(msg: impl Into<String>) -> Failure {
    fail(Status::State, msg)
}

/// The status of a library error.
pub fn status_of(e: &Error) -> Status {
    match e {
        Error::Io { .. } => Status::Io,
        Error::Gguf(_) | Error::GgufFile { .. } => Status::Format,
        Error::Quant(QuantError::Unsupported { .. }) => Status::Unsupported,
        Error::Quant(_) => Status::Format,
        Error::Model(m) => match m {
            ModelError::UnsupportedArchitecture { .. } => Status::Unsupported,
            ModelError::TokenOutOfRange { .. } | ModelError::ContextOverflow { .. } => {
                Status::InvalidArgument
            }
            _ => Status::Format,
        },
        Error::Tokenizer(t) => match t {
            TokenizerError::UnknownModel { .. }
            | TokenizerError::UnknownPre { .. }
            | TokenizerError::UnknownChatTemplate { .. } => Status::Unsupported,
            TokenizerError::TokenOutOfRange { .. }
            | TokenizerError::Conversation { .. }
            | TokenizerError::BadCustomTemplate { .. } => Status::InvalidArgument,
            _ => Status::Format,
        },
        Error::InvalidArgument(_) | Error::Setting { .. } | Error::Resume(_) => {
            Status::InvalidArgument
        }
        Error::Adapter { .. } | Error::Data { .. } => Status::Format,
        Error::Budget(_) => Status::Budget,
        Error::Cancelled => Status::Cancelled,
        Error::Numeric(_) => Status::Numeric,
        // A variant added to the library later: its message still says what happened.
        #[allow(unreachable_patterns)]
        _ => Status::InvalidArgument,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure {
            status: status_of(&e),
            msg: e.to_string(),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    // Interior NULs would cut the message short; show them as spaces.
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|e| {
        let mut e = e.borrow_mut();
        if !e.as_bytes().is_empty() {
            *e = CString::default();
        }
    });
}

/// The last error's text, NUL-terminated, owned by this thread's slot.
pub fn last_error_ptr() -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(EMPTY.as_ptr().cast())
}

/// The last error's text as bytes (without the NUL).
pub fn last_error_bytes() -> Vec<u8> {
    LAST_ERROR
        .try_with(|e| e.borrow().as_bytes().to_vec())
        .unwrap_or_default()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("internal error (a bug in pocketlora; please report it): {what}")
}

/// Runs an export's body: clears the last error, catches panics, records the failure.
pub fn guard(f: impl FnOnce() -> FResult<()>) -> Status {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            // A call made from inside this one (from a callback) may have set it.
            clear_last_error();
            Status::Ok
        }
        Ok(Err(failure)) => {
            set_last_error(&failure.msg);
            failure.status
        }
        Err(payload) => {
            set_last_error(&panic_message(&*payload));
            Status::Panic
        }
    }
}

/// [`guard`] for exports that return nothing (the failure is only in `plora_last_error`).
pub fn guard_void(f: impl FnOnce() -> FResult<()>) {
    let _ = guard(f);
}

/// Runs a body that cannot fail, returning `fallback` if it panics anyway.
pub fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let st = guard(|| panic!("boom {}", 7));
        assert_eq!(st, Status::Panic);
        // SAFETY: the slot holds a valid C string until the next call on this thread.
        let msg = unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_str()
            .unwrap();
        assert!(
            msg.contains("boom 7") && msg.contains("internal error"),
            "{msg}"
        );
        assert_eq!(guard(|| Ok(())), Status::Ok);
        assert!(last_error_bytes().is_empty());
        assert_eq!(guard(|| Err(state("later"))), Status::State);
        assert_eq!(last_error_bytes(), b"later");
        assert_eq!(guard_value(5, || panic!("x")), 5);
    }

    #[test]
    fn library_errors_map_to_their_codes() {
        assert_eq!(status_of(&Error::Cancelled), Status::Cancelled);
        assert_eq!(status_of(&Error::Budget("b".into())), Status::Budget);
        assert_eq!(status_of(&Error::Numeric("n".into())), Status::Numeric);
        assert_eq!(
            status_of(&Error::io("x", std::io::Error::other("e"))),
            Status::Io
        );
        assert_eq!(
            status_of(&Error::InvalidArgument("a".into())),
            Status::InvalidArgument
        );
        assert_eq!(
            status_of(
                &ModelError::UnsupportedArchitecture {
                    arch: "gpt".into(),
                    supported: "llama".to_string()
                }
                .into()
            ),
            Status::Unsupported
        );
        for (i, (s, _)) in Status::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }
}
