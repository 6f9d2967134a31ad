//! Ctrl-C (SIGINT) and SIGTERM set a flag the training loop polls, so an interrupted run
//! writes a checkpoint and exits cleanly instead of dying mid-write. Unix only; elsewhere
//! the default handling stays.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether an interrupt arrived since [`install`].
pub fn requested() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

#[cfg(unix)]
mod unix {
    use super::{Ordering, INTERRUPTED};

    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;

    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }

    extern "C" fn on_signal(_: i32) {
        // Only an atomic store: async-signal-safe.
        INTERRUPTED.store(true, Ordering::Relaxed);
    }

    pub fn install() {
        // SAFETY: `signal` is the C library's; the handler is an `extern "C" fn(i32)` that
        // only performs an atomic store, which is async-signal-safe. SIGINT and SIGTERM
        // have these numbers on Linux, Android, macOS and iOS.
        unsafe {
            signal(SIGINT, on_signal);
            signal(SIGTERM, on_signal);
        }
    }
}

/// Routes SIGINT/SIGTERM to the flag.
pub fn install() {
    #[cfg(unix)]
    unix::install();
}
