//! Ctrl-C (SIGINT) and SIGTERM set a flag the training loop polls, so an interrupted run
//! writes a checkpoint and exits cleanly instead of dying mid-write. Unix only; elsewhere
//! the default handling stays. The run then exits with 128 + the signal's number (130 for
//! SIGINT, 143 for SIGTERM), as a shell reports a process the signal killed, so
//! `train && export` does not go on with a partial adapter.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that arrived (0: none).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// Whether an interrupt arrived since [`install`].
pub fn requested() -> bool {
    INTERRUPTED.load(Ordering::Relaxed) != 0
}

/// The number of the signal that interrupted the process, if one did.
pub fn signal() -> Option<i32> {
    Some(INTERRUPTED.load(Ordering::Relaxed)).filter(|&s| s != 0)
}

#[cfg(unix)]
mod unix {
    use super::{Ordering, INTERRUPTED};

    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;

    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }

    extern "C" fn on_signal(sig: i32) {
        // Only an atomic store: async-signal-safe.
        INTERRUPTED.store(sig, Ordering::Relaxed);
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
