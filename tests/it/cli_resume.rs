//! Checkpoints and resume from the command line: a run killed with SIGKILL (or stopped
//! with Ctrl-C) and resumed ends with an adapter bit-identical to an uninterrupted run;
//! `--resume` refuses flags that disagree with the recorded run; validation, early stopping
//! and config files.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{asset, golden, scratch_dir};

const STEPS: &str = "150";

fn base_args(out: &Path) -> Vec<String> {
    let model = asset("stories260K-q4_0.gguf");
    let data = golden("oracle/eval_records.jsonl");
    [
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        STEPS,
        "--batch",
        "2",
        "--rank",
        "4",
        "--lr",
        "3e-3",
        "--shuffle",
        "--seed",
        "5",
        "--dropout",
        "0.05",
        "--save-every",
        "10",
        "--threads",
        "2",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pocketlora"))
}

fn run(args: &[String]) -> Output {
    bin().args(args).output().unwrap()
}

/// Sets the value following `flag`.
fn set(args: &mut [String], flag: &str, value: &str) {
    let i = args.iter().position(|a| a == flag).unwrap();
    args[i + 1] = value.to_string();
}

fn adapter_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("adapter_model.safetensors")).unwrap()
}

/// Starts a run, waits for its first checkpoint event, then stops it with `signal`;
/// returns the exit status and the JSON lines printed after the checkpoint.
fn start_and_stop(
    out: &Path,
    signal: Option<&str>,
) -> (std::process::ExitStatus, Vec<String>, String) {
    let mut child = bin()
        .args(base_args(out))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("the run ended before a checkpoint")
            .unwrap();
        if line.contains("\"event\":\"checkpoint\"") {
            break;
        }
    }
    match signal {
        None => child.kill().unwrap(), // SIGKILL
        Some(sig) => {
            let ok = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill {sig}");
        }
    }
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let o = child.wait_with_output().unwrap();
    (
        o.status,
        rest,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn killed_and_resumed_equals_uninterrupted() {
    let dir = scratch_dir("resume-kill");
    let whole = dir.join("whole");
    assert!(run(&base_args(&whole)).status.success());
    let cut = dir.join("cut");
    let (status, _, _) = start_and_stop(&cut, None);
    assert!(!status.success(), "SIGKILL must have stopped the run early");
    assert!(
        !cut.join("adapter_model.safetensors").exists(),
        "the killed run never finished"
    );
    // A stale temporary from a killed checkpoint write is swept on resume.
    std::fs::create_dir_all(cut.join("checkpoints/.tmp-step-00099999-1")).unwrap();
    let mut args = base_args(&cut);
    args.extend(["--resume".to_string(), cut.to_str().unwrap().to_string()]);
    let o = run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        adapter_bytes(&cut),
        adapter_bytes(&whole),
        "resumed adapter differs from the uninterrupted one"
    );
    assert!(!cut.join("checkpoints/.tmp-step-00099999-1").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ctrl_c_checkpoints_and_exits_cleanly_then_resumes() {
    let dir = scratch_dir("resume-int");
    let whole = dir.join("whole");
    assert!(run(&base_args(&whole)).status.success());
    let cut = dir.join("cut");
    let (status, lines, stderr) = start_and_stop(&cut, Some("-INT"));
    // Saved, then the status a shell gives a SIGINT (130), so `train && export` stops.
    assert_eq!(status.code(), Some(130), "{stderr}");
    let done: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(done["finish"], "interrupted");
    assert!(done["steps"].as_u64().unwrap() < 150);
    let mut args = base_args(&cut);
    args.extend(["--resume".to_string(), cut.to_str().unwrap().to_string()]);
    assert!(run(&args).status.success());
    assert_eq!(adapter_bytes(&cut), adapter_bytes(&whole));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn resume_refuses_flags_that_disagree() {
    let dir = scratch_dir("resume-flags");
    let out = dir.join("r");
    let mut args = base_args(&out);
    set(&mut args, "--steps", "20");
    assert!(run(&args).status.success());
    let mut again = args.clone();
    set(&mut again, "--lr", "1e-3");
    again.extend(["--resume".to_string(), out.to_str().unwrap().to_string()]);
    let o = run(&again);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("--lr"), "{e}");
    // More steps may be asked for.
    let mut more = args.clone();
    set(&mut more, "--steps", "30");
    more.extend(["--resume".to_string(), out.to_str().unwrap().to_string()]);
    let o = run(&more);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["steps"], 30);
    let o = run(&[
        "train".into(),
        "--resume".into(),
        dir.join("nothing").to_str().unwrap().into(),
        "--model".into(),
        asset("stories260K-q4_0.gguf").to_str().unwrap().into(),
        "--data".into(),
        golden("oracle/eval_records.jsonl").to_str().unwrap().into(),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no checkpoint"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn validation_early_stopping_and_config_files() {
    let dir = scratch_dir("valid");
    let cfg = dir.join("run.toml");
    let model = asset("aidreams260K-q8_0.gguf");
    let data = golden("facts/aidreams_facts.jsonl");
    // The facts file has {"text"} records; hold one out.
    std::fs::write(
        &cfg,
        format!(
            "model = \"{}\"\ndata = \"{}\"\nsteps = 200\nbatch = 5\nlr = 2e-2\nrank = 8\nvalid-split = 0.2\neval_every = 5\npatience = 2\njson = true\n",
            model.display(),
            data.display()
        ),
    )
    .unwrap();
    let out = dir.join("o");
    let o = run(&[
        "train".into(),
        "--config".into(),
        cfg.to_str().unwrap().into(),
        "--out".into(),
        out.to_str().unwrap().into(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let evals: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "eval").collect();
    assert!(evals.len() >= 3, "validation every 5 steps");
    let done = events.last().unwrap();
    // Memorising five facts cannot generalise to the held-out one: validation stops improving.
    assert_eq!(done["finish"], "earlystopped", "{done}");
    assert!(done["steps"].as_u64().unwrap() < 200);
    let best = evals
        .iter()
        .map(|e| e["loss"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(done["best_valid_loss"].as_f64().unwrap(), best);
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pocketlora_config.json")).unwrap())
            .unwrap();
    assert_eq!(recorded["config"]["lr"].as_f64().unwrap() as f32, 2e-2f32);
    assert_eq!(recorded["config"]["patience"], 2);
    assert!(recorded["pocketlora_version"].is_string());
    std::fs::remove_dir_all(&dir).ok();
}
