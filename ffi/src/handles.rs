//! Opaque handles: reference-counted objects registered in a table of live handles.
//!
//! The pointer a C caller holds is `Arc::into_raw` of a [`Handle`]. Creation registers the
//! address with its kind; every call looks the address up in the table (under its lock)
//! before touching the memory, takes a reference of its own, and checks the handle's tag;
//! `_free` removes the address, clears the tag and drops the table's reference. So:
//!
//! - NULL, a freed handle, a pointer that never was a handle, or a handle of another type
//!   gives an error without the memory being read;
//! - a call in progress on another thread keeps the object alive until it returns, so
//!   `_free` during a call is safe (the object goes with the call's reference);
//! - best effort: once freed, an address can be reused by a new handle of the same kind,
//!   and the stale pointer then names that new handle.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::status::{invalid, FResult};

/// The type of a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Model,
    Trainer,
    Adapter,
}

impl Kind {
    fn c_name(self) -> &'static str {
        match self {
            Kind::Model => "plora_model",
            Kind::Trainer => "plora_trainer",
            Kind::Adapter => "plora_adapter",
        }
    }

    fn tag(self) -> u64 {
        match self {
            Kind::Model => 0x504c_4f52_414d_4f44,   // "PLORAMOD"
            Kind::Trainer => 0x504c_4f52_4154_524e, // "PLORATRN"
            Kind::Adapter => 0x504c_4f52_4141_4450, // "PLORAADP"
        }
    }
}

/// An object behind a C handle.
pub trait Object: Send + Sync + 'static {
    const KIND: Kind;
}

/// What a C handle points to: a tag, then the object.
pub struct Handle<T> {
    tag: AtomicU64,
    pub obj: T,
}

/// Live handles: address → kind.
static LIVE: Mutex<BTreeMap<usize, Kind>> = Mutex::new(BTreeMap::new());

fn live() -> std::sync::MutexGuard<'static, BTreeMap<usize, Kind>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers `obj` and returns the pointer to give to C.
pub fn register<T: Object, P>(obj: T) -> *mut P {
    let h = Arc::new(Handle {
        tag: AtomicU64::new(T::KIND.tag()),
        obj,
    });
    let p = Arc::into_raw(h);
    live().insert(p as usize, T::KIND);
    p as *mut P
}

fn lookup_failure(found: Option<Kind>, want: Kind, what: &str) -> crate::status::Failure {
    match found {
        Some(k) => invalid(format!(
            "{what} is a {} handle, not a {}",
            k.c_name(),
            want.c_name()
        )),
        None => invalid(format!(
            "{what} is not a live {} handle (freed already?)",
            want.c_name()
        )),
    }
}

/// A reference to the live handle at `p`, or an error naming `what`.
pub fn get<T: Object, P>(p: *const P, what: &str) -> FResult<Arc<Handle<T>>> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    let table = live();
    let found = table.get(&(p as usize)).copied();
    if found != Some(T::KIND) {
        return Err(lookup_failure(found, T::KIND, what));
    }
    let raw = p as *const Handle<T>;
    // SAFETY: `raw` is registered as a live handle of kind T::KIND, which means it came
    // from `Arc::into_raw` of an `Arc<Handle<T>>` in `register` and the table still owns
    // that strong reference (it is dropped only in `release`, which removes the entry
    // under the same lock we hold). So the allocation is alive and taking another strong
    // reference is sound.
    let h = unsafe {
        Arc::increment_strong_count(raw);
        Arc::from_raw(raw)
    };
    drop(table);
    if h.tag.load(Ordering::Acquire) != T::KIND.tag() {
        return Err(invalid(format!(
            "{what} is a {} being freed",
            T::KIND.c_name()
        )));
    }
    Ok(h)
}

/// Unregisters the handle at `p` and returns the table's reference (dropping it releases
/// the object unless a call in progress still holds one). NULL: `Ok(None)`.
pub fn release<T: Object, P>(p: *mut P, what: &str) -> FResult<Option<Arc<Handle<T>>>> {
    if p.is_null() {
        return Ok(None);
    }
    let mut table = live();
    let found = table.get(&(p as usize)).copied();
    if found != Some(T::KIND) {
        return Err(lookup_failure(found, T::KIND, what));
    }
    table.remove(&(p as usize));
    let raw = p as *const Handle<T>;
    // SAFETY: as in `get`, the entry we just removed owned the strong reference created by
    // `Arc::into_raw` in `register`; we take that reference back exactly once.
    let h = unsafe { Arc::from_raw(raw) };
    h.tag.store(0, Ordering::Release);
    drop(table);
    Ok(Some(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Thing(u32);
    impl Object for Thing {
        const KIND: Kind = Kind::Model;
    }
    struct Other;
    impl Object for Other {
        const KIND: Kind = Kind::Trainer;
    }

    #[test]
    fn handles_are_checked_and_released_once() {
        let p: *mut u8 = register(Thing(7));
        assert_eq!(get::<Thing, u8>(p, "m").unwrap().obj.0, 7);
        let e = get::<Other, u8>(p, "t").err().unwrap();
        assert!(
            e.msg.contains("plora_model handle, not a plora_trainer"),
            "{}",
            e.msg
        );
        let held = get::<Thing, u8>(p, "m").unwrap();
        assert!(release::<Thing, u8>(p, "m").unwrap().is_some());
        // A call in progress keeps the object alive after free.
        assert_eq!(held.obj.0, 7);
        let e = get::<Thing, u8>(p, "m").err().unwrap();
        assert!(e.msg.contains("not a live plora_model"), "{}", e.msg);
        assert!(release::<Thing, u8>(p, "m").is_err());
        assert!(get::<Thing, u8>(std::ptr::null(), "m").is_err());
        assert!(release::<Thing, u8>(std::ptr::null_mut(), "m")
            .unwrap()
            .is_none());
        let bogus = 0x1234usize as *const u8;
        assert!(get::<Thing, u8>(bogus, "m").is_err());
    }
}
