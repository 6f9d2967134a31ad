//! The `pocketlora` command-line tool. Errors end the process with one line on stderr.

use clap::Parser;

fn main() {
    let cli = match pocketlora::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            eprintln!("{} (see --help)", first.trim_end());
            std::process::exit(2);
        }
    };
    if let Err(e) = pocketlora::cli::run(cli) {
        let one_line = e.to_string().replace('\n', " ");
        eprintln!("error: {one_line}");
        std::process::exit(1);
    }
}
