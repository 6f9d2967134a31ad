//! The `pocketlora` command-line tool. Errors end the process with one line on stderr.

use std::alloc::{GlobalAlloc, Layout, System};

use clap::Parser;

/// The system allocator, counting live and peak heap bytes for `pocketlora bench`.
struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are plain
// atomics and never affect the returned memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            pocketlora::bench::heap_add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        pocketlora::bench::heap_sub(layout.size());
        // SAFETY: `ptr` was allocated by `System` with `layout` (through `alloc` above).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            pocketlora::bench::heap_add(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, which we pass on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            pocketlora::bench::heap_sub(layout.size());
            pocketlora::bench::heap_add(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    pocketlora::bench::HEAP_COUNTING.store(true, std::sync::atomic::Ordering::Relaxed);
    let cli = match pocketlora::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return;
        }
        Err(e) => {
            let text = e.to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines.next().unwrap_or("invalid arguments").to_owned();
            // "...were not provided:" is followed by the arguments on the next line.
            if first.ends_with(':') {
                if let Some(next) = lines.next() {
                    first = format!("{first} {next}");
                }
            }
            eprintln!("{first} (see --help)");
            std::process::exit(2);
        }
    };
    if let Err(e) = pocketlora::cli::run(cli) {
        let one_line = e.to_string().replace('\n', " ");
        eprintln!("error: {one_line}");
        std::process::exit(1);
    }
}
