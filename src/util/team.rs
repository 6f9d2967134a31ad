//! A spinning team of threads for many small parallel loops in a row.
//!
//! Generating one token runs about seven matrix–vector products per layer, each a few tens
//! of microseconds of work. Rayon parks an idle worker and wakes it for every parallel
//! call; on a VM a wake-up costs about as much as the work itself, so a second thread
//! barely helped generation (45 tokens/s on one thread, 47 on two). Inside [`with_team`]
//! the pool's other workers instead spin on a shared word and take tasks the moment the
//! caller publishes them (what llama.cpp does with its spinning thread pool), and
//! [`crate::simd::SharedColumns::par_parts`] hands its parts to the team instead of rayon.
//!
//! The calling thread always takes tasks too, so a loop completes even when no helper has
//! started (yet): the team changes who runs a task, never whether it runs. Every task index
//! is claimed exactly once, by a compare-and-swap on one word holding the loop's epoch, its
//! task count and the next index; a task from an earlier loop can therefore never be
//! claimed by a late helper.

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Most tasks one published loop may have (the claim word keeps 16 bits for each of the
/// count and the next index).
pub const MAX_TASKS: usize = 0xffff;

/// Spin iterations before a waiting helper starts yielding its core.
const SPINS_BEFORE_YIELD: u32 = 1 << 14;

/// The loop being run: its body (the erased lifetime is the caller's stack frame, see
/// [`Team::run`]).
struct Job {
    body: *const (dyn Fn(usize) + Sync + 'static),
}

/// The shared state of one team.
pub struct Team {
    /// `epoch << 32 | count << 16 | next`: the loop published last, its task count and the
    /// next task index to claim (`next == count`: all claimed).
    claim: AtomicU64,
    /// The loop of the current epoch; written before the epoch is published.
    job: AtomicPtr<Job>,
    /// Tasks of the current loop that have finished.
    done: AtomicUsize,
    /// Set when the team is over: helpers return once no task is left.
    stop: AtomicBool,
    /// Set while a loop runs (a nested `run` on the same team runs inline instead).
    busy: AtomicBool,
    /// The first panic of a task, re-raised on the calling thread.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

thread_local! {
    /// The team whose caller this thread is, if any.
    static CURRENT: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
}

fn unpack(w: u64) -> (u64, usize, usize) {
    (
        w >> 32,
        ((w >> 16) & 0xffff) as usize,
        (w & 0xffff) as usize,
    )
}

impl Team {
    fn new() -> Team {
        Team {
            claim: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            panic: Mutex::new(None),
        }
    }

    /// Claims one task of the current loop: its index, or `None` when all are claimed.
    fn claim_one(&self) -> Option<usize> {
        let mut w = self.claim.load(Ordering::Acquire);
        loop {
            let (_, count, next) = unpack(w);
            if next >= count {
                return None;
            }
            match self
                .claim
                .compare_exchange_weak(w, w + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(next),
                Err(now) => w = now,
            }
        }
    }

    /// Runs task `i` of the current loop (claimed by this thread) and counts it done.
    fn run_claimed(&self, i: usize) {
        let job = self.job.load(Ordering::Acquire);
        // SAFETY: this thread claimed task `i` of the current epoch, whose count was not yet
        // reached, so the loop's caller is still inside `run` (it returns only after `done`
        // counts every task, this one included) and the `Job` it published before the epoch
        // (release store of `claim`, acquired by our compare-and-swap) is alive on its stack.
        let body = unsafe { &*(*job).body };
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| body(i))) {
            let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(p);
        }
        self.done.fetch_add(1, Ordering::Release);
    }

    /// Runs `body(i)` for every `i < count` on the team (this thread included) and returns
    /// when all have finished. More than [`MAX_TASKS`] tasks, or a nested call, run inline.
    pub fn run(&self, count: usize, body: &(dyn Fn(usize) + Sync)) {
        if count == 0 {
            return;
        }
        if count > MAX_TASKS || self.busy.swap(true, Ordering::Acquire) {
            (0..count).for_each(body);
            return;
        }
        // SAFETY (lifetime erasure): the pointer is dereferenced only by a thread that has
        // claimed a task of this epoch, and this function does not return before every
        // task has finished (`done == count` below), so `body` outlives every use.
        let body: *const (dyn Fn(usize) + Sync + '_) = body;
        let body: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(body) };
        let mut job = Job { body };
        self.done.store(0, Ordering::Relaxed);
        self.job.store(&mut job, Ordering::Relaxed);
        let (epoch, _, _) = unpack(self.claim.load(Ordering::Relaxed));
        let epoch = (epoch + 1) & 0xffff_ffff;
        self.claim
            .store(epoch << 32 | (count as u64) << 16, Ordering::Release);
        while let Some(i) = self.claim_one() {
            self.run_claimed(i);
        }
        while self.done.load(Ordering::Acquire) < count {
            std::hint::spin_loop();
        }
        self.job.store(std::ptr::null_mut(), Ordering::Relaxed);
        self.busy.store(false, Ordering::Release);
        let panicked = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(p) = panicked {
            resume_unwind(p);
        }
    }

    /// A helper's life: take tasks as they are published until the team stops.
    fn help(&self) {
        if std::ptr::eq(CURRENT.with(Cell::get), self) {
            // The caller itself picked up this helper job (rayon runs local jobs while a
            // join waits): spinning here would wait for its own frame to end.
            return;
        }
        let mut idle = 0u32;
        loop {
            if let Some(i) = self.claim_one() {
                self.run_claimed(i);
                idle = 0;
                continue;
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            if idle < SPINS_BEFORE_YIELD {
                idle += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// The team this thread is the caller of, if it is inside [`with_team`].
pub fn current() -> Option<&'static Team> {
    let p = CURRENT.with(Cell::get);
    // SAFETY: `CURRENT` points to a team only while the `with_team` frame that owns it is
    // on this thread's stack (the guard below restores the previous value before the team
    // is dropped), and callers use the reference only within their own (nested) frame.
    unsafe { p.as_ref() }
}

/// Restores the previous `CURRENT` and stops the team, also when `f` panics.
struct Guard<'a> {
    team: &'a Team,
    previous: *const Team,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
        self.team.stop.store(true, Ordering::Release);
    }
}

/// Runs `f` with the current rayon pool's other workers spinning as a [`Team`] that
/// `SharedColumns::par_parts` calls inside `f` use. Meant for short stretches of many small
/// loops (one generation step); rayon's own parallel iterators inside `f` find the helpers
/// busy and run on the calling thread. With one thread, or inside another team, just runs
/// `f`.
pub fn with_team<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let helpers = rayon::current_num_threads().saturating_sub(1);
    if helpers == 0 || current().is_some() || rayon::current_thread_index().is_none() {
        return f();
    }
    let team = Team::new();
    let team = &team;
    rayon::in_place_scope(|s| {
        let _guard = Guard {
            team,
            previous: CURRENT.with(|c| c.replace(team)),
        };
        for _ in 0..helpers {
            s.spawn(move |_| team.help());
        }
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn every_task_runs_exactly_once_over_many_loops_of_varied_sizes() {
        for threads in [1, 2, 4] {
            pool(threads).install(|| {
                with_team(|| {
                    let team = current();
                    assert_eq!(team.is_some(), threads > 1, "{threads} threads");
                    for round in 0..2000usize {
                        let count = [1, 2, 3, 7, 64, 300][round % 6];
                        let hits: Vec<AtomicU32> = (0..count).map(|_| AtomicU32::new(0)).collect();
                        let body = |i: usize| {
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        };
                        match team {
                            Some(t) => t.run(count, &body),
                            None => (0..count).for_each(body),
                        }
                        for (i, h) in hits.iter().enumerate() {
                            assert_eq!(h.load(Ordering::Relaxed), 1, "round {round} task {i}");
                        }
                    }
                })
            });
        }
    }

    #[test]
    fn helpers_take_tasks_while_the_caller_is_busy() {
        // Task 0 (taken by the caller, which claims first) waits until another task ran on
        // a different thread: only a helper can have run it.
        pool(2).install(|| {
            with_team(|| {
                let team = current().unwrap();
                let me = std::thread::current().id();
                let elsewhere = AtomicBool::new(false);
                team.run(2, &|i| {
                    if i == 0 {
                        let t0 = std::time::Instant::now();
                        while !elsewhere.load(Ordering::Acquire) {
                            assert!(t0.elapsed().as_secs() < 20, "no helper ever came");
                            std::hint::spin_loop();
                        }
                    } else {
                        assert_ne!(std::thread::current().id(), me);
                        elsewhere.store(true, Ordering::Release);
                    }
                });
            })
        });
    }

    #[test]
    fn a_task_panic_reaches_the_caller_after_every_task_finished() {
        let finished = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool(2).install(|| {
                with_team(|| {
                    current().unwrap().run(16, &|i| {
                        if i == 5 {
                            panic!("task five");
                        }
                        finished.fetch_add(1, Ordering::Relaxed);
                    })
                })
            })
        }));
        let msg = r.unwrap_err();
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"task five"));
        assert_eq!(finished.load(Ordering::Relaxed), 15);
    }

    #[test]
    fn nested_runs_and_rayon_inside_a_team_complete() {
        pool(2).install(|| {
            let total = with_team(|| {
                let team = current().unwrap();
                let sum = AtomicUsize::new(0);
                team.run(4, &|i| {
                    // A nested run on the same team runs inline.
                    team.run(3, &|j| {
                        sum.fetch_add(10 * i + j, Ordering::Relaxed);
                    });
                });
                // Rayon inside the team still completes (on the caller).
                use rayon::prelude::*;
                let s: usize = (0..1000usize).into_par_iter().sum();
                sum.load(Ordering::Relaxed) + s
            });
            assert_eq!(total, 3 * 60 + 4 * 3 + 499_500);
            assert!(current().is_none(), "the team ends with its frame");
        });
    }
}
