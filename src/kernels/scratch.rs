//! Per-thread scratch buffers for the kernels' temporaries. Kernel calls only grow them, so
//! steady-state calls do not allocate once each thread has seen the largest shape; a
//! trainer's [`reserve`] sets them to its planned sizes up front (shrinking what an earlier,
//! bigger call grew), and [`release`] frees them.
//!
//! Slots by convention: 0 = a call's operand packed by the calling thread (read by its
//! tasks), 1 and 2 = one task's temporaries, 3 = a second call-level buffer. A task never
//! runs nested parallel work while it holds a slot, so a rayon worker that steals a task
//! while its caller holds slot 0 uses different slots. A worker can also run a whole other
//! call while it waits (several callers on one pool); a slot still held then is not shared:
//! that call allocates its own buffer.

use std::cell::RefCell;

thread_local! {
    static F32_BUFS: [RefCell<Vec<f32>>; 4] = const {
        [RefCell::new(Vec::new()), RefCell::new(Vec::new()), RefCell::new(Vec::new()), RefCell::new(Vec::new())]
    };
    static U8_BUFS: [RefCell<Vec<u8>>; 2] = const { [RefCell::new(Vec::new()), RefCell::new(Vec::new())] };
    static I32_BUFS: [RefCell<Vec<i32>>; 2] = const { [RefCell::new(Vec::new()), RefCell::new(Vec::new())] };
}

/// Grows `b` to `n` elements with a capacity of exactly `n` (`resize` alone grows the
/// capacity amortized, to twice the old one when that is more, past what the memory plan
/// counts); a longer `b` is left as it is.
fn grow_exactly<T: Default + Clone>(b: &mut Vec<T>, n: usize) {
    if b.len() < n {
        let len = b.len();
        b.reserve_exact(n - len);
        b.resize(n, T::default());
    }
}

macro_rules! with_buf {
    ($(#[$doc:meta])* $name:ident, $tl:ident, $t:ty) => {
        $(#[$doc])*
        pub fn $name<R>(slot: usize, n: usize, f: impl FnOnce(&mut [$t]) -> R) -> R {
            $tl.with(|cells| match cells[slot].try_borrow_mut() {
                Ok(mut buf) => {
                    grow_exactly(&mut buf, n);
                    f(&mut buf[..n])
                }
                // The slot is held further up this thread's stack: a rayon worker waiting
                // inside one kernel call ran another caller's job (two trainers, or a
                // trainer and a generation, on one model's pool). That call gets a buffer
                // of its own.
                Err(_) => f(&mut vec![<$t>::default(); n]),
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

/// Elements each per-thread buffer slot grows to for some set of kernel calls: what the
/// memory plan counts per worker thread. Each kernel module says what one call needs
/// (`scratch_need`); a thread's buffers reach the slot-wise maximum over the calls it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScratchNeed {
    pub f32: [usize; 4],
    pub u8: [usize; 2],
    pub i32: [usize; 2],
}

impl ScratchNeed {
    /// The slot-wise maximum of two needs.
    pub fn max(mut self, o: ScratchNeed) -> ScratchNeed {
        for (a, b) in self.f32.iter_mut().zip(o.f32) {
            *a = (*a).max(b);
        }
        for (a, b) in self.u8.iter_mut().zip(o.u8) {
            *a = (*a).max(b);
        }
        for (a, b) in self.i32.iter_mut().zip(o.i32) {
            *a = (*a).max(b);
        }
        self
    }

    /// Bytes of all slots.
    pub fn bytes(&self) -> usize {
        4 * self.f32.iter().sum::<usize>()
            + self.u8.iter().sum::<usize>()
            + 4 * self.i32.iter().sum::<usize>()
    }

    /// What this thread's buffers hold now (for tests of the accounting).
    pub fn current() -> ScratchNeed {
        let mut n = ScratchNeed::default();
        F32_BUFS.with(|c| {
            for (d, b) in n.f32.iter_mut().zip(c.iter()) {
                *d = b.try_borrow().map_or(0, |b| b.capacity());
            }
        });
        U8_BUFS.with(|c| {
            for (d, b) in n.u8.iter_mut().zip(c.iter()) {
                *d = b.try_borrow().map_or(0, |b| b.capacity());
            }
        });
        I32_BUFS.with(|c| {
            for (d, b) in n.i32.iter_mut().zip(c.iter()) {
                *d = b.try_borrow().map_or(0, |b| b.capacity());
            }
        });
        n
    }
}

/// Frees this thread's buffers (those not held further up its stack).
pub fn release() {
    reserve(&ScratchNeed::default());
}

/// Sets this thread's buffers to exactly `need` now (grown, or shrunk when earlier calls had
/// grown them further), so that later kernel calls within it do not allocate and the
/// buffers hold what the memory plan counts (a trainer reserves its planned scratch on
/// every worker up front).
pub fn reserve(need: &ScratchNeed) {
    fn grow<T: Default + Clone>(cells: &[RefCell<Vec<T>>], sizes: &[usize]) {
        for (c, &n) in cells.iter().zip(sizes) {
            // A slot held further up this thread's stack (this worker ran the reservation
            // while waiting inside another caller's kernel call) is skipped: it grows when
            // next used, as it would without a reservation.
            if let Ok(mut b) = c.try_borrow_mut() {
                // Exactly `n`, also when an earlier call (a prompt's forward pass, say) had
                // grown the slot past it: what the memory plan counts is this need.
                b.truncate(n);
                grow_exactly(&mut b, n);
                b.shrink_to_fit();
            }
        }
    }
    F32_BUFS.with(|c| grow(c, &need.f32));
    U8_BUFS.with(|c| grow(c, &need.u8));
    I32_BUFS.with(|c| grow(c, &need.i32));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserving_sets_each_slot_to_exactly_the_need() {
        // A bigger earlier call (a prompt's forward pass before training) grew slot 2; the
        // reservation brings it back to the need, and grows slot 3 without over-allocating.
        std::thread::spawn(|| {
            with_f32(2, 10_000, |b| b[0] = 1.0);
            with_f32(3, 100, |_| {});
            let need = ScratchNeed {
                f32: [0, 0, 300, 150],
                ..ScratchNeed::default()
            };
            reserve(&need);
            let have = ScratchNeed::current();
            assert_eq!(have.f32[2], 300);
            assert_eq!(have.f32[3], 150);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn reserving_while_a_slot_is_held_grows_the_others() {
        // As when a worker runs a trainer's reservation while waiting inside a generation's
        // kernel call on the same pool.
        with_f32(0, 4, |held| {
            held[0] = 1.0;
            reserve(&ScratchNeed {
                f32: [1000, 800, 0, 0],
                ..ScratchNeed::default()
            });
            let now = ScratchNeed::current();
            assert_eq!(now.f32[0], 0, "a held slot reads as 0");
            assert!(now.f32[1] >= 800);
            // A nested call on the held slot gets a buffer of its own.
            with_f32(0, 16, |inner| assert_eq!(inner.len(), 16));
            assert_eq!(held[0], 1.0);
        });
        assert!(ScratchNeed::current().f32[0] >= 4);
    }
}
