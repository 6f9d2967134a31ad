//! Shared helpers of the integration tests.
#![allow(dead_code)]

pub mod cli;
pub mod synth;

use std::path::PathBuf;

/// A bundled model under `assets/`.
pub fn asset(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name)
}

/// A committed golden file under `tests/golden/`.
pub fn golden(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(rel)
}

/// A fresh, empty scratch directory for one test.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pocketlora-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// Relative difference, safe around zero.
pub fn rel_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// A real model fetched by `tools/fetch-real.sh DIR` into `$POCKETLORA_REAL_MODELS`, or
/// `None` (the test skips, saying so) when that variable is unset outside CI. Under
/// `CI=true`, or when the variable is set, a missing file fails the test.
pub fn real_model(file: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("POCKETLORA_REAL_MODELS") {
        Some(d) => PathBuf::from(d),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true: set POCKETLORA_REAL_MODELS to the directory of tools/fetch-real.sh")
        }
        None => {
            eprintln!("skipped: POCKETLORA_REAL_MODELS is not set (tools/fetch-real.sh DIR)");
            return None;
        }
    };
    let p = dir.join(file);
    assert!(
        p.is_file(),
        "{} is missing (tools/fetch-real.sh {})",
        p.display(),
        dir.display()
    );
    Some(p)
}
