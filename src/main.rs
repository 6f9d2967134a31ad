//! The `pocketlora` command-line tool. Errors end the process with one line on stderr.

use clap::Parser;

mod cli;

/// Heap accounting for progress displays and memory reports.
#[global_allocator]
static ALLOC: pocketlora::internals::memory::heap::CountingAlloc =
    pocketlora::internals::memory::heap::CountingAlloc;

fn main() {
    pocketlora::internals::memory::heap::tune_system_allocator();
    let cli = match cli::Cli::try_parse() {
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
    match cli::run(cli) {
        Ok(0) => {}
        Ok(status) => {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            std::process::exit(status);
        }
        Err(e) => {
            let one_line = e.to_string().replace('\n', " ");
            eprintln!("error: {one_line}");
            std::process::exit(1);
        }
    }
}
