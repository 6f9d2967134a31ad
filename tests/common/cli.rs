//! Running the `pocketlora` binary from integration tests.

use std::process::{Command, Output, Stdio};

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

/// Peak RssAnon (bytes) of a process, sampled from /proc while it runs, and its output.
#[cfg(target_os = "linux")]
pub fn run_sampled(args: &[&str]) -> (u64, std::process::Output) {
    let child = Command::new(env!("CARGO_BIN_EXE_pocketlora"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let sampler = std::thread::spawn(move || {
        let mut peak = 0u64;
        while let Ok(s) = std::fs::read_to_string(&status_path) {
            if let Some(kb) = s
                .lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak = peak.max(kb * 1024);
            }
            if s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
        peak
    });
    let out = child.wait_with_output().unwrap();
    (sampler.join().unwrap(), out)
}
