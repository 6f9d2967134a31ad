//! Faults: an adapter for another base model or architecture, mismatched shapes, missing
//! files, a failing writer, a disk that fills while saving and a read-only output directory.
//! Each gives a clear error, and nothing saved earlier is damaged.
//!
//! The disk-full and read-only cases mount a small tmpfs in a private user and mount
//! namespace (`unshare -rm`, no privileges needed where user namespaces are enabled) and run
//! the command-line binary there; where `unshare` cannot do that they say so and pass.

use crate::common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{asset, golden, scratch_dir, synth};
use pocketlora::history;
use pocketlora::internals::error::{Error, ModelError};
use pocketlora::internals::fsutil::write_atomic;
use pocketlora::internals::gguf::{GgufFile, Value};
use pocketlora::internals::lora::{self, gguf_adapter, peft, Adapter, LoraConfig};
use pocketlora::internals::model::{Model, ModelConfig};
use pocketlora::internals::quant::GgmlType;
use pocketlora::internals::safetensors::{self as st, Dtype};
use pocketlora::internals::train::{TrainConfig, Trainer};

fn stories() -> Model {
    Model::open(asset("stories260K-q4_0.gguf"), 1).unwrap()
}

fn synth_model() -> Model {
    let f = GgufFile::from_bytes(synth::build(&synth::llama_untied())).unwrap();
    Model::from_file(Arc::new(f), 1).unwrap()
}

fn adapter_for(cfg: &ModelConfig, r: usize) -> Adapter {
    let mut a = Adapter::new(
        cfg,
        LoraConfig {
            r,
            ..LoraConfig::default()
        },
    )
    .unwrap();
    for p in a.pairs_mut() {
        for (i, v) in p.b.iter_mut().enumerate() {
            *v = (i as f32 * 0.1).cos() * 0.01;
        }
    }
    a
}

fn adapter_msg(r: pocketlora::Result<Adapter>) -> (PathBuf, String) {
    match r {
        Err(Error::Adapter { path, msg }) => (path, msg),
        Err(e) => panic!("expected Error::Adapter, got {e}"),
        Ok(_) => panic!("expected an error, the adapter loaded"),
    }
}

/// Every file under `dir` with its bytes, and every directory (empty).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                // Directories count too (an empty temporary one is debris).
                out.insert(p.strip_prefix(dir).unwrap().join(""), Vec::new());
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn peft_adapter_for_another_base_model() {
    let (stories, other) = (stories(), synth_model());
    let dir = scratch_dir("faults-wrong-base");
    peft::save(
        &adapter_for(&stories.cfg, 4),
        &stories.cfg,
        &dir,
        "stories",
        Dtype::F32,
    )
    .unwrap();
    let (path, msg) = adapter_msg(peft::load(&dir, &other.cfg));
    assert_eq!(path, dir.join(peft::WEIGHTS_FILE));
    assert!(msg.contains("trained for another base model?"), "{msg}");
    // The dispatching loader says the same.
    let (_, msg2) = adapter_msg(lora::load(&dir, &other.cfg));
    assert_eq!(msg, msg2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gguf_adapter_for_another_base_or_architecture() {
    let (stories, other) = (stories(), synth_model());
    let dir = scratch_dir("faults-gguf-adapter");
    let a = adapter_for(&stories.cfg, 2);
    let (w, _) = gguf_adapter::to_writer(&a, &stories.cfg, "llama", "s", GgmlType::F32).unwrap();
    let p = dir.join("a.gguf");
    w.write_file(&p).unwrap();
    gguf_adapter::load(&p, &stories.cfg).unwrap();
    let (path, msg) = adapter_msg(gguf_adapter::load(&p, &other.cfg));
    assert_eq!(path, p);
    assert!(msg.contains("trained for another base model?"), "{msg}");
    // The same tensors declared for qwen2.
    let (mut w, _) =
        gguf_adapter::to_writer(&a, &stories.cfg, "llama", "s", GgmlType::F32).unwrap();
    w.set("general.architecture", Value::from("qwen2"));
    let q = dir.join("q.gguf");
    w.write_file(&q).unwrap();
    let (_, msg) = adapter_msg(gguf_adapter::load(&q, &stories.cfg));
    assert!(
        msg.contains("architecture \"qwen2\" but the model is \"llama\""),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn model_of_an_unsupported_architecture() {
    let mut w = synth::writer(&synth::llama_untied());
    w.set("general.architecture", Value::from("gpt2"));
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    match Model::from_file(Arc::new(f), 1) {
        Err(Error::Model(ModelError::UnsupportedArchitecture { .. })) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a gpt2 file was read as a model"),
    }
}

#[test]
fn peft_tensor_of_the_wrong_shape() {
    let m = stories();
    let dir = scratch_dir("faults-shape");
    peft::save(&adapter_for(&m.cfg, 4), &m.cfg, &dir, "stories", Dtype::F32).unwrap();
    let wp = dir.join(peft::WEIGHTS_FILE);
    let (mut tensors, meta) = st::read(&wp).unwrap();
    let key = tensors
        .keys()
        .find(|k| k.contains("layers.1.self_attn.v_proj.lora_A"))
        .unwrap()
        .clone();
    let t = tensors.get_mut(&key).unwrap();
    // [4, in] → [2, 2·in]: the same number of values, another shape.
    t.shape = vec![2, t.shape[1] * 2];
    let owned: Vec<(String, Vec<usize>, &[f32])> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.shape.clone(), &t.data[..]))
        .collect();
    st::write(&wp, &owned, Dtype::F32, &meta).unwrap();
    let (_, msg) = adapter_msg(peft::load(&dir, &m.cfg));
    assert!(msg.contains(&key) && msg.contains("do not fit"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn checkpoint_of_another_rank_is_refused_and_changes_nothing() {
    let m = Arc::new(stories());
    let mut t = Trainer::new(
        m.clone(),
        adapter_for(&m.cfg, 4),
        TrainConfig::default(),
        16,
    )
    .unwrap();
    let before = t.adapter().clone();
    let other = adapter_for(&m.cfg, 8);
    let opt = pocketlora::internals::train::AdamW::new(Default::default(), &other);
    match t.restore(other, opt, 7) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("shape"), "{msg}"),
        other => panic!("{:?}", other.err()),
    }
    assert_eq!(t.steps_done(), 0);
    assert!(*t.adapter() == before);
}

#[test]
fn missing_files_name_the_path() {
    let dir = scratch_dir("faults-missing");
    let not_found = |r: pocketlora::Result<()>, want: &Path| match r {
        Err(Error::Io { path, source }) => {
            assert_eq!(path, want);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        Err(e) => panic!(
            "expected a not-found I/O error on {}, got {e}",
            want.display()
        ),
        Ok(()) => panic!("no error"),
    };
    let model = dir.join("model.gguf");
    not_found(Model::open(&model, 1).map(drop), &model);
    let m = stories();
    // A PEFT directory without its config, then without its weights.
    not_found(
        peft::load(&dir, &m.cfg).map(drop),
        &dir.join(peft::CONFIG_FILE),
    );
    peft::save(&adapter_for(&m.cfg, 2), &m.cfg, &dir, "s", Dtype::F32).unwrap();
    std::fs::remove_file(dir.join(peft::WEIGHTS_FILE)).unwrap();
    not_found(
        peft::load(&dir, &m.cfg).map(drop),
        &dir.join(peft::WEIGHTS_FILE),
    );
    let g = dir.join("none.gguf");
    match gguf_adapter::load(&g, &m.cfg) {
        Err(e) => assert!(e.to_string().contains("none.gguf"), "{e}"),
        Ok(_) => panic!("a missing file loaded"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A writer that fails with "no space left on device" after `left` bytes.
struct Full {
    left: usize,
}

impl Write for Full {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_writer_leaves_the_earlier_file_and_no_temporary() {
    let dir = scratch_dir("faults-writer");
    let p = dir.join("adapter_model.safetensors");
    let a = [1.0f32; 1000];
    let tensors = vec![("x".to_string(), vec![1000], &a[..])];
    st::write(&p, &tensors, Dtype::F32, &BTreeMap::new()).unwrap();
    let before = snapshot(&dir);
    for fail_after in [0, 7, 100, 3000] {
        let r = write_atomic(&p, |w| {
            // Stream into the file and into a writer that fills up; the first error wins.
            let mut full = Full { left: fail_after };
            st::encode_to(&mut full, &tensors, Dtype::F32, &BTreeMap::new())?;
            st::encode_to(w, &tensors, Dtype::F16, &BTreeMap::new())
        });
        match r {
            Err(Error::Io { path, source }) => {
                assert_eq!(path, p);
                assert_eq!(source.raw_os_error(), Some(28));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(snapshot(&dir), before, "failing after {fail_after} bytes");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// A full disk and a read-only directory, through the binary in a private mount namespace.

/// Runs `script` under `sh` as root of a new user and mount namespace; `None` when this
/// machine cannot (no `unshare`, or user namespaces disabled).
fn in_namespace(script: &str) -> Option<std::process::Output> {
    let probe = Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            "mount -t tmpfs none /mnt 2>/dev/null || mount -t tmpfs none /tmp",
        ])
        .output()
        .ok()?;
    if !probe.status.success() {
        eprintln!("unshare -rm cannot mount a tmpfs here; case skipped");
        return None;
    }
    Some(
        Command::new("unshare")
            .args(["-rm", "sh", "-c", script])
            .output()
            .unwrap(),
    )
}

fn train_args(out: &Path, steps: &str) -> String {
    format!(
        "train --model {} --data {} --out {} --steps {steps} --batch 2 --rank 4 --save-every 1 --threads 1 --quiet",
        asset("stories260K-q4_0.gguf").display(),
        golden("oracle/eval_records.jsonl").display(),
        out.display()
    )
}

/// A run of 2 steps written into `dir/base` (checkpoints at steps 1 and 2, the adapter).
fn first_run(dir: &Path) -> PathBuf {
    let base = dir.join("base");
    let o = Command::new(env!("CARGO_BIN_EXE_pocketlora"))
        .args(train_args(&base, "2").split(' '))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    base
}

#[test]
fn disk_full_while_saving_keeps_earlier_saves() {
    let dir = scratch_dir("faults-disk-full");
    let base = first_run(&dir);
    let before = snapshot(&base);
    let size_kb: usize = before.values().map(|v| v.len()).sum::<usize>() / 1024 + 64;
    let (mnt, after) = (dir.join("mnt"), dir.join("after"));
    std::fs::create_dir_all(&mnt).unwrap();
    let out = mnt.join("run");
    // Resume for 2 more steps on a tmpfs with 64 KiB to spare: the step-3 checkpoint does
    // not fit. Then copy what is left out of the tmpfs, which goes with the namespace.
    let script = format!(
        "set -e; mount -t tmpfs -o size={size_kb}k none {mnt}; cp -a {base} {out}; trap '' XFSZ; \
         set +e; {bin} {args} --resume {out} 2>{dir}/stderr; echo $? > {dir}/rc; cp -a {out} {after}",
        mnt = mnt.display(),
        base = base.display(),
        out = out.display(),
        bin = env!("CARGO_BIN_EXE_pocketlora"),
        args = train_args(&out, "4"),
        dir = dir.display(),
        after = after.display(),
    );
    let Some(o) = in_namespace(&script) else {
        return;
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rc = std::fs::read_to_string(dir.join("rc")).unwrap();
    let err = std::fs::read_to_string(dir.join("stderr")).unwrap();
    assert_ne!(rc.trim(), "0", "the run succeeded on a full disk: {err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    // Everything written before is there, byte for byte, and nothing half-written is —
    // but for the history, a log: the step that did run before the checkpoint failed is
    // a whole line more (a resume cuts it back to the checkpoint's step).
    let (mut after, mut before) = (snapshot(&after), before);
    let (log_after, log_before) = (
        after.remove(Path::new(history::FILE)).unwrap_or_default(),
        before.remove(Path::new(history::FILE)).unwrap_or_default(),
    );
    assert_eq!(after, before);
    let more = log_after
        .strip_prefix(&log_before[..])
        .expect("the earlier history is kept");
    assert!(
        more.is_empty() || more.ends_with(b"\n"),
        "a torn history line"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn read_only_output_directory() {
    let dir = scratch_dir("faults-read-only");
    let base = first_run(&dir);
    let before = snapshot(&base);
    let (mnt, after) = (dir.join("mnt"), dir.join("after"));
    std::fs::create_dir_all(&mnt).unwrap();
    let out = mnt.join("run");
    let script = format!(
        "set -e; mount -t tmpfs none {mnt}; cp -a {base} {out}; mount -o remount,ro {mnt}; \
         set +e; {bin} {args} --resume {out} 2>{dir}/stderr1; echo $? > {dir}/rc1; \
         {bin} {fresh} 2>{dir}/stderr2; echo $? > {dir}/rc2; cp -a {out} {after}",
        mnt = mnt.display(),
        base = base.display(),
        out = out.display(),
        bin = env!("CARGO_BIN_EXE_pocketlora"),
        args = train_args(&out, "4"),
        fresh = train_args(&mnt.join("new"), "2"),
        dir = dir.display(),
        after = after.display(),
    );
    let Some(o) = in_namespace(&script) else {
        return;
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for n in ["1", "2"] {
        let rc = std::fs::read_to_string(dir.join(format!("rc{n}"))).unwrap();
        let err = std::fs::read_to_string(dir.join(format!("stderr{n}"))).unwrap();
        assert_ne!(rc.trim(), "0", "run {n} succeeded on a read-only directory");
        assert!(err.contains("Read-only file system"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    assert_eq!(snapshot(&after), before);
    let _ = std::fs::remove_dir_all(&dir);
}
