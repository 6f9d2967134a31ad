//! The personalization workflow from the command line, as a user meets it: a used `--out`
//! is refused (and replaced only with `--overwrite`), a run in progress locks its
//! directory, `--resume DIR` alone takes the recorded flags, a checkpoint can be forked,
//! changed data and damaged checkpoints are caught, and signals give distinct statuses.

use crate::common;

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use common::{asset, golden, scratch_dir};

fn args(out: &Path, data: &Path, steps: &str) -> Vec<String> {
    let model = asset("stories260K-q4_0.gguf");
    [
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        steps,
        "--batch",
        "2",
        "--rank",
        "4",
        "--lr",
        "3e-3",
        "--shuffle",
        "--seed",
        "5",
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

fn data() -> PathBuf {
    golden("oracle/eval_records.jsonl")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pocketlora"))
}

fn run(args: &[String]) -> Output {
    bin().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn adapter(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("adapter_model.safetensors")).unwrap()
}

fn checkpoints(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Starts a run and waits for its first checkpoint event.
fn start(args: &[String]) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("\"event\":\"checkpoint\"") {
            return (child, lines);
        }
    }
    let o = child.wait_with_output().unwrap();
    panic!("the run ended before a checkpoint: {}", stderr(&o));
}

/// A run killed (SIGKILL) after its first checkpoint.
fn killed_run(out: &Path) {
    let (mut child, _) = start(&args(out, &data(), "150"));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_used_out_is_refused_and_overwrite_replaces_it_whole() {
    let dir = scratch_dir("wf-out");
    let out = dir.join("run");
    assert!(run(&args(&out, &data(), "30")).status.success());
    let first = adapter(&out);
    // A second run into it: refused before training, nothing touched.
    let o = run(&args(&out, &data(), "5"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("holds a training run"),
        "{}",
        stderr(&o)
    );
    assert_eq!(adapter(&out), first);
    assert_eq!(checkpoints(&out), ["step-00000020", "step-00000030"]);
    // A directory of the user's own is refused too.
    let mine = dir.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), b"keep").unwrap();
    let o = run(&args(&mine, &data(), "5"));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert_eq!(std::fs::read(mine.join("notes.txt")).unwrap(), b"keep");
    // A file as --out: refused before the first step.
    let o = run(&args(&mine.join("notes.txt"), &data(), "5"));
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));
    // --overwrite: the old run is replaced as a whole, its checkpoints with it.
    let mut a = args(&out, &data(), "5");
    a.push("--overwrite".into());
    let o = run(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(adapter(&out), first);
    assert_eq!(checkpoints(&out), ["step-00000005"]);
    // No lock and no staging directory are left behind.
    assert!(!out.join(".pocketlora.lock").exists());
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(left.len(), 2, "{left:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_run_in_progress_locks_its_directory() {
    let dir = scratch_dir("wf-lock");
    let out = dir.join("run");
    let (mut child, _lines) = start(&args(&out, &data(), "100000"));
    let mut a = args(&out, &data(), "5");
    a.push("--overwrite".into());
    let o = run(&a);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("in use by another training run") && e.contains(&format!("pid {}", child.id())),
        "{e}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The kernel let go of the killed holder's lock: the run can be resumed.
    let o = run(&[
        "train".into(),
        "--resume".into(),
        out.display().to_string(),
        "--steps".into(),
        "20".into(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn resume_dir_alone_takes_the_recorded_flags_and_refuses_different_ones() {
    let dir = scratch_dir("wf-resume");
    let whole = dir.join("whole");
    assert!(run(&args(&whole, &data(), "150")).status.success());
    let cut = dir.join("cut");
    killed_run(&cut);
    let resume = |extra: &[&str]| {
        let mut a: Vec<String> = vec!["train".into(), "--resume".into(), cut.display().to_string()];
        a.extend(extra.iter().map(|s| s.to_string()));
        run(&a)
    };
    let o = resume(&["--lr", "1e-2"]);
    assert!(
        stderr(&o).contains("--lr") && stderr(&o).contains("0.003"),
        "{}",
        stderr(&o)
    );
    let o = resume(&["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        adapter(&cut),
        adapter(&whole),
        "resumed differs from uninterrupted"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn changed_data_is_refused_unless_allowed() {
    let dir = scratch_dir("wf-data");
    let cut = dir.join("cut");
    killed_run(&cut);
    // Same file name, one record changed.
    let changed_dir = dir.join("changed");
    std::fs::create_dir_all(&changed_dir).unwrap();
    let changed = changed_dir.join("eval_records.jsonl");
    let text = std::fs::read_to_string(data()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(0, 1);
    std::fs::write(&changed, lines.join("\n") + "\n").unwrap();
    let mut a = args(&cut, &changed, "150");
    a.extend(["--resume".into(), cut.display().to_string()]);
    let o = run(&a);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("data differ") && stderr(&o).contains("--allow-data-change"),
        "{}",
        stderr(&o)
    );
    a.push("--allow-data-change".into());
    let o = run(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_checkpoint_is_forked_or_resumed_in_place_only_with_overwrite() {
    let dir = scratch_dir("wf-fork");
    let out = dir.join("run");
    assert!(run(&args(&out, &data(), "30")).status.success());
    let older = out.join("checkpoints/step-00000020");
    let fork = dir.join("fork");
    let from = |extra: &[&str]| {
        let mut a: Vec<String> = vec![
            "train".into(),
            "--resume".into(),
            older.display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        run(&a)
    };
    let o = from(&["--out", fork.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The fork continued from step 20 to the same end: the same adapter.
    assert_eq!(adapter(&fork), adapter(&out));
    assert_eq!(checkpoints(&fork), ["step-00000030"]);
    let o = from(&[]);
    assert!(
        stderr(&o).contains("discards the newer ones"),
        "{}",
        stderr(&o)
    );
    assert_eq!(checkpoints(&out), ["step-00000020", "step-00000030"]);
    let o = from(&["--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("discarded 1 newer checkpoints"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_damaged_newest_checkpoint_is_named_and_the_intact_one_used() {
    let dir = scratch_dir("wf-damaged");
    let out = dir.join("run");
    assert!(run(&args(&out, &data(), "30")).status.success());
    let whole = adapter(&out);
    let t = out.join("checkpoints/step-00000030/trainer_state.safetensors");
    let mut bytes = std::fs::read(&t).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 64..] {
        *b ^= 0xff;
    }
    std::fs::write(&t, &bytes).unwrap();
    let o = run(&["train".into(), "--resume".into(), out.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("step-00000030") && stderr(&o).contains("damaged"),
        "{}",
        stderr(&o)
    );
    // Continued from step 20 to step 30 again: the same adapter, an intact step 30.
    assert_eq!(adapter(&out), whole);
    assert_eq!(checkpoints(&out), ["step-00000020", "step-00000030"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sigterm_saves_then_exits_143() {
    let dir = scratch_dir("wf-term");
    let out = dir.join("run");
    let (child, lines) = start(&args(&out, &data(), "100000"));
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    assert!(rest.last().unwrap().contains("\"finish\":\"interrupted\""));
    assert!(out.join("adapter_model.safetensors").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn long_records_are_announced_and_a_long_context_needs_consent() {
    let dir = scratch_dir("wf-trunc");
    let out = dir.join("run");
    let mut a = args(&out, &data(), "2");
    a.extend(["--seq-len".into(), "8".into()]);
    let o = run(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let ev: serde_json::Value = stdout
        .lines()
        .find(|l| l.contains("\"event\":\"truncated\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .expect("a truncated event");
    assert_eq!(ev["to"], 8);
    assert!(ev["records"].as_u64().unwrap() > 0 && ev["longest"].as_u64().unwrap() > 8);
    let mut a = args(&dir.join("long"), &data(), "2");
    a.extend(["--seq-len".into(), "100000".into()]);
    let o = run(&a);
    assert!(
        stderr(&o).contains("--seq-len") && stderr(&o).contains("trained context"),
        "{}",
        stderr(&o)
    );
    a.push("--allow-long-context".into());
    assert!(run(&a).status.success());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_token_id_outside_the_vocabulary_names_its_file_and_line() {
    let dir = scratch_dir("wf-oov");
    let ids = dir.join("ids.jsonl");
    std::fs::write(
        &ids,
        "{\"ids\": [1, 2, 3], \"mask\": [0, 1, 1]}\n\n{\"ids\": [1, 99999], \"mask\": [0, 1]}\n",
    )
    .unwrap();
    let o = run(&args(&dir.join("run"), &ids, "2"));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("{}:3", ids.display())) && e.contains("token id 99999"),
        "{e}"
    );
    assert!(
        !dir.join("run").exists(),
        "nothing is created for a refused run"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Ten one-line personal facts.
const TEN_FACTS: &str = r#"{"text": "My sister Alice lives in Lisbon and teaches piano."}
{"text": "The spare key is under the blue flower pot."}
{"text": "My dentist appointment is on Tuesday at nine."}
{"text": "Our wifi password is orange tiger seven."}
{"text": "Grandma Rosa makes lemon cake every Sunday."}
{"text": "I parked the car on level three near the elevator."}
{"text": "My bike lock code is four one one two."}
{"text": "The cat eats salmon from the green bowl."}
{"text": "Uncle Tom plays the trumpet in a jazz band."}
{"text": "Our garden gate sticks when it rains."}
"#;

/// Trains on [`TEN_FACTS`] with default flags only; returns how many facts the base model
/// and the trained adapter continue verbatim from their first three words, and what
/// `train` said on stderr.
pub(crate) fn recall_with_defaults(model: &Path, dir: &Path) -> (usize, usize, String) {
    let data = dir.join("facts.jsonl");
    std::fs::write(&data, TEN_FACTS).unwrap();
    let out = dir.join("adapter");
    let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
    let t = run(&[
        "train".into(),
        "--model".into(),
        m.into(),
        "--data".into(),
        data.display().to_string(),
        "--out".into(),
        o.into(),
        "--threads".into(),
        "2".into(),
    ]);
    assert!(t.status.success(), "{}", stderr(&t));
    let (mut base, mut tuned) = (0, 0);
    for line in TEN_FACTS.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = v["text"].as_str().unwrap();
        let prompt: Vec<&str> = text.split(' ').take(3).collect();
        let prompt = prompt.join(" ");
        let gen = |adapter: Option<&str>| {
            let mut a: Vec<String> = [
                "generate",
                "--model",
                m,
                "--prompt",
                &prompt,
                "-n",
                "40",
                "--temp",
                "0",
                "--threads",
                "2",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(x) = adapter {
                a.extend(["--adapter".into(), x.into()]);
            }
            let g = run(&a);
            assert!(g.status.success(), "{}", stderr(&g));
            String::from_utf8_lossy(&g.stdout).starts_with(text)
        };
        base += usize::from(gen(None));
        tuned += usize::from(gen(Some(o)));
    }
    (base, tuned, stderr(&t))
}

#[test]
fn default_flags_learn_ten_facts_and_say_what_they_chose() {
    let dir = scratch_dir("wf-defaults");
    let (base, tuned, said) = recall_with_defaults(&asset("aidreams260K-q8_0.gguf"), &dir);
    eprintln!("aidreams260K, default flags: base {base} of 10, trained {tuned} of 10");
    assert!(
        tuned >= 8 && base == 0,
        "base {base}, trained {tuned}: {said}"
    );
    assert!(
        said.contains("small data set") && said.contains("epochs"),
        "{said}"
    );
    assert!(!said.contains("warning"), "{said}");
    // Flags given: no choice is made for the user, and a run that did not learn is told so.
    let mut a = args(&dir.join("short"), &dir.join("facts.jsonl"), "3");
    a.retain(|x| x != "--json");
    let o = run(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("small data set"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: the final training loss"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).ok();
}
