//! Grow-only per-thread scratch buffers for the kernels' temporaries, so steady-state calls
//! do not allocate once each thread has seen the largest shape.
//!
//! Slots by convention: 0 = a call's operand packed by the calling thread (read by its
//! tasks), 1 and 2 = one task's temporaries, 3 = a second call-level buffer. A task never
//! runs nested parallel work while it holds a slot, so a rayon worker that steals a task
//! while its caller holds slot 0 uses different slots.

use std::cell::RefCell;

thread_local! {
    static F32_BUFS: [RefCell<Vec<f32>>; 4] = const {
        [RefCell::new(Vec::new()), RefCell::new(Vec::new()), RefCell::new(Vec::new()), RefCell::new(Vec::new())]
    };
    static U8_BUFS: [RefCell<Vec<u8>>; 2] = const { [RefCell::new(Vec::new()), RefCell::new(Vec::new())] };
    static I32_BUFS: [RefCell<Vec<i32>>; 2] = const { [RefCell::new(Vec::new()), RefCell::new(Vec::new())] };
}

macro_rules! with_buf {
    ($(#[$doc:meta])* $name:ident, $tl:ident, $t:ty) => {
        $(#[$doc])*
        pub fn $name<R>(slot: usize, n: usize, f: impl FnOnce(&mut [$t]) -> R) -> R {
            $tl.with(|cells| {
                let mut buf = cells[slot].borrow_mut();
                if buf.len() < n {
                    buf.resize(n, Default::default());
                }
                f(&mut buf[..n])
            })
        }
    };
}
with_buf!(
    /// Runs `f` with this thread's f32 buffer `slot` (0..4) of at least `n` elements.
    with_f32, F32_BUFS, f32
);
with_buf!(
    /// Runs `f` with this thread's byte buffer `slot` (0..2).
    with_u8, U8_BUFS, u8
);
with_buf!(
    /// Runs `f` with this thread's i32 buffer `slot` (0..2).
    with_i32, I32_BUFS, i32
);
