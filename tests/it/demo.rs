//! `pocketlora demo` keeps its promise: from any directory, offline, it fine-tunes the
//! bundled model so that the eval loss on the bundled facts falls below 1.0 and greedy
//! generation recalls at least 3 of them from their first words, which the base model does
//! not; and it writes a loadable adapter where it says.

use crate::common;

use std::process::Command;

use common::{asset, scratch_dir};

#[test]
fn demo_learns_the_bundled_facts() {
    let dir = scratch_dir("demo");
    let out = dir.join("adapter");
    // Run from an unrelated directory: the model and the facts are inside the binary.
    let o = Command::new(env!("CARGO_BIN_EXE_pocketlora"))
        .args([
            "demo",
            "--json",
            "--threads",
            "2",
            "--out",
            out.to_str().unwrap(),
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["loss_before"].as_f64().unwrap() > 3.0, "{v}");
    assert!(v["loss_after"].as_f64().unwrap() < 1.0, "{v}");
    assert_eq!(v["recalled_before"], 0, "{v}");
    assert!(v["recalled_after"].as_u64().unwrap() >= 3, "{v}");
    // The adapter it wrote works with the model file in the repository.
    let g = Command::new(env!("CARGO_BIN_EXE_pocketlora"))
        .args([
            "generate",
            "--model",
            asset("aidreams260K-q8_0.gguf").to_str().unwrap(),
            "--adapter",
            out.to_str().unwrap(),
        ])
        .args(["--prompt", "Our wifi password", "-n", "30", "--temp", "0"])
        .output()
        .unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    assert!(
        String::from_utf8_lossy(&g.stdout).contains("orange tiger seven"),
        "{}",
        String::from_utf8_lossy(&g.stdout)
    );
    // The human-readable form says where the adapter went.
    let t = Command::new(env!("CARGO_BIN_EXE_pocketlora"))
        .args(["demo", "--steps", "5", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&t.stdout).contains(out.to_str().unwrap()));
    std::fs::remove_dir_all(&dir).ok();
}
