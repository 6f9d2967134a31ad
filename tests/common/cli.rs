//! Running the `pocketlora` binary from integration tests.

use std::process::{Command, Output};

/// Runs `pocketlora ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pocketlora"))
        .args(args)
        .output()
        .expect("run pocketlora")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

/// Fails unless the command failed with exactly one line on stderr containing `needle`.
pub fn assert_one_line_error(o: &Output, needle: &str) {
    let e = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, stdout: {}",
        stdout(o)
    );
    assert_eq!(
        e.trim_end().lines().count(),
        1,
        "stderr is not one line: {e:?}"
    );
    assert!(e.contains(needle), "stderr {e:?} lacks {needle:?}");
}
