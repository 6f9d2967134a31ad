//! Training checkpoints: everything needed to continue a run exactly — adapter, AdamW
//! moments and step count, data cursor, early-stopping state, the run's configuration —
//! in `OUT/checkpoints/step-NNNNNNNN/`. A checkpoint is written into a hidden temporary
//! directory, each file fsynced, then the directory is renamed into place, so a killed
//! write never damages the previous checkpoint; leftovers of killed writes are swept at
//! the next start. Every file's xxh3-128 checksum is written last, into `checksums.json`,
//! and verified before a checkpoint is used: a damaged one is named and passed over, and
//! only intact checkpoints count towards the newest two that are kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::adamw::AdamW;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::lora::Adapter;
use crate::safetensors::{self, Dtype};

const STATE: &str = "state.json";
const TENSORS: &str = "trainer_state.safetensors";
const SUMS: &str = "checksums.json";
const KEEP: usize = 2;

/// The scalar state of a run at a step boundary.
#[derive(Clone, Debug, PartialEq)]
pub struct RunState {
    /// Optimizer steps done.
    pub step: usize,
    pub adam_t: u64,
    /// Data cursor: epoch and position in its order.
    pub epoch: u64,
    pub pos: usize,
    /// Best validation loss so far and evaluations since it improved.
    pub best_valid: Option<f64>,
    pub evals_since_best: usize,
    /// The run's configuration, as recorded (flags and their values).
    pub config: Value,
}

fn tensor_entries<'a>(
    prefix: &str,
    a: &'a Adapter,
    out: &mut Vec<(String, Vec<usize>, &'a [f32])>,
) {
    for (i, t, p) in a.entries() {
        out.push((
            format!("{prefix}.{i}.{}.a", t.short()),
            vec![p.a.len()],
            &p.a,
        ));
        out.push((
            format!("{prefix}.{i}.{}.b", t.short()),
            vec![p.b.len()],
            &p.b,
        ));
    }
}

fn fill_from(
    prefix: &str,
    into: &mut Adapter,
    tensors: &BTreeMap<String, safetensors::Tensor>,
) -> std::result::Result<(), String> {
    let keys: Vec<(usize, crate::lora::Target)> = into.entries().map(|(i, t, _)| (i, t)).collect();
    for (i, t) in keys {
        let p = into.layers[i][t.index()].as_mut().ok_or("adapter layout")?;
        for (which, dst) in [("a", &mut p.a), ("b", &mut p.b)] {
            let name = format!("{prefix}.{i}.{}.{which}", t.short());
            let src = tensors
                .get(&name)
                .ok_or_else(|| format!("missing tensor {name}"))?;
            if src.data.len() != dst.len() {
                return Err(format!(
                    "tensor {name} has {} values, the run's adapter needs {}",
                    src.data.len(),
                    dst.len()
                ));
            }
            dst.copy_from_slice(&src.data);
        }
    }
    Ok(())
}

/// Writes a checkpoint of step `state.step` under `root`; returns its directory.
pub fn save(
    root: &Path,
    state: &RunState,
    adapter: &Adapter,
    opt: &AdamW,
    best: Option<&Adapter>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
    let name = format!("step-{:08}", state.step);
    let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    // A failed write (a full disk, say) leaves no temporary behind, and the checkpoints
    // already there as they were.
    if let Err(e) = write_files(&tmp, state, adapter, opt, best) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let dst = root.join(&name);
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    if let Ok(d) = std::fs::File::open(root) {
        let _ = d.sync_all();
    }
    prune(root)?;
    Ok(dst)
}

/// The files of a checkpoint, into the directory `tmp`.
fn write_files(
    tmp: &Path,
    state: &RunState,
    adapter: &Adapter,
    opt: &AdamW,
    best: Option<&Adapter>,
) -> Result<()> {
    let mut entries = Vec::new();
    tensor_entries("param", adapter, &mut entries);
    tensor_entries("m", &opt.m, &mut entries);
    tensor_entries("v", &opt.v, &mut entries);
    if let Some(b) = best {
        tensor_entries("best", b, &mut entries);
    }
    safetensors::write(&tmp.join(TENSORS), &entries, Dtype::F32, &BTreeMap::new())?;
    let st = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "step": state.step,
        "adam_t": state.adam_t,
        "epoch": state.epoch,
        "pos": state.pos,
        "best_valid": state.best_valid,
        "evals_since_best": state.evals_since_best,
        "has_best": best.is_some(),
        "config": state.config,
    });
    let text = serde_json::to_string_pretty(&st).unwrap_or_default();
    write_atomic(&tmp.join(STATE), |w| w.write_all(text.as_bytes()))?;
    // Checksums of the files as they are on disk, written last: a checkpoint without them
    // is incomplete.
    let mut sums = serde_json::Map::new();
    for f in [STATE, TENSORS] {
        sums.insert(f.into(), json!(file_sum(&tmp.join(f))?));
    }
    let text = serde_json::to_string_pretty(&Value::Object(sums)).unwrap_or_default();
    write_atomic(&tmp.join(SUMS), |w| w.write_all(text.as_bytes()))?;
    Ok(())
}

/// The xxh3-128 checksum of a file's bytes, in hex: read in small pieces, so that
/// checking a checkpoint holds no more heap than one buffer (the memory plan counts
/// none).
fn file_sum(p: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(p, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:032x}", h.digest128()))
}

/// Whether the checkpoint in `dir` is intact: every file it lists is there with its
/// checksum. `Err` says what is wrong.
pub fn verify(dir: &Path) -> std::result::Result<(), String> {
    let text = std::fs::read_to_string(dir.join(SUMS)).map_err(|_| {
        format!("{SUMS} is missing (an incomplete write, or an older version's checkpoint)")
    })?;
    let sums: Value =
        serde_json::from_str(&text).map_err(|e| format!("{SUMS} is not valid JSON: {e}"))?;
    for f in [STATE, TENSORS] {
        let want = sums
            .get(f)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{SUMS} does not list {f}"))?;
        match file_sum(&dir.join(f)) {
            Ok(got) if got == want => {}
            Ok(_) => return Err(format!("{f} is damaged (its checksum differs from {SUMS})")),
            Err(_) => return Err(format!("{f} is missing")),
        }
    }
    Ok(())
}

/// A checkpoint that is not intact: its directory and what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct Damaged {
    pub dir: PathBuf,
    pub why: String,
}

/// The newest intact checkpoint under `root`, and each newer one that is damaged.
pub fn newest_intact(root: &Path) -> Result<(Option<PathBuf>, Vec<Damaged>)> {
    let mut damaged = Vec::new();
    for dir in list(root)?.into_iter().rev() {
        match verify(&dir) {
            Ok(()) => return Ok((Some(dir), damaged)),
            Err(why) => damaged.push(Damaged { dir, why }),
        }
    }
    Ok((None, damaged))
}

/// The step of a checkpoint directory `step-NNNNNNNN`.
pub fn step_of(dir: &Path) -> Option<usize> {
    dir.file_name()?
        .to_str()?
        .strip_prefix("step-")?
        .parse()
        .ok()
}

/// Removes the checkpoints newer than step `step` (resuming from an older one in place);
/// returns their directories.
pub fn discard_after(root: &Path, step: usize) -> Result<Vec<PathBuf>> {
    let mut gone = Vec::new();
    for dir in list(root)? {
        if step_of(&dir).is_some_and(|s| s > step) {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            gone.push(dir);
        }
    }
    Ok(gone)
}

/// Checkpoint directories under `root` (intact or not: see [`verify`]), oldest first.
pub fn list(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(root, e)),
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() && step_of(&p).is_some() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Removes temporary directories of checkpoint writes that were killed midway.
pub fn sweep_temporaries(root: &Path) -> Result<usize> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in rd.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|s| s.starts_with(".tmp-"))
        {
            std::fs::remove_dir_all(e.path()).map_err(|err| Error::io(e.path(), err))?;
            n += 1;
        }
    }
    Ok(n)
}

/// After a checkpoint was written: keeps the newest [`KEEP`] intact checkpoints, removes
/// older intact ones and every damaged or incomplete one (the run has moved on from them;
/// an intact checkpoint is never removed in their favour).
fn prune(root: &Path) -> Result<()> {
    let mut intact = 0;
    for dir in list(root)?.into_iter().rev() {
        let keep = verify(&dir).is_ok() && {
            intact += 1;
            intact <= KEEP
        };
        if !keep {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
    }
    Ok(())
}

/// The run configuration recorded in the checkpoint in `dir`.
pub fn recorded_config(dir: &Path) -> Result<Value> {
    let p = dir.join(STATE);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::Adapter {
        path: p.clone(),
        msg: format!("not valid JSON: {e}"),
    })?;
    Ok(v.get("config").cloned().unwrap_or(Value::Null))
}

/// A loaded checkpoint.
pub struct Loaded {
    pub state: RunState,
    pub adapter: Adapter,
    pub opt: AdamW,
    pub best: Option<Adapter>,
}

/// Reads the checkpoint in `dir` into adapters shaped like `template` (the run's adapter).
pub fn load(dir: &Path, template: &Adapter, opt_template: &AdamW) -> Result<Loaded> {
    verify(dir).map_err(|msg| Error::Adapter {
        path: dir.to_path_buf(),
        msg: format!("checkpoint not intact: {msg}"),
    })?;
    let sp = dir.join(STATE);
    let text = std::fs::read_to_string(&sp).map_err(|e| Error::io(&sp, e))?;
    let bad = |msg: String| Error::Adapter {
        path: sp.clone(),
        msg,
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let num = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(format!("missing {k}")))
    };
    let state = RunState {
        step: num("step")? as usize,
        adam_t: num("adam_t")?,
        epoch: num("epoch")?,
        pos: num("pos")? as usize,
        best_valid: v.get("best_valid").and_then(Value::as_f64),
        evals_since_best: num("evals_since_best")? as usize,
        config: v.get("config").cloned().unwrap_or(Value::Null),
    };
    let tp = dir.join(TENSORS);
    let (tensors, _) = safetensors::read(&tp)?;
    let tbad = |msg: String| Error::Adapter {
        path: tp.clone(),
        msg,
    };
    let mut adapter = template.clone();
    fill_from("param", &mut adapter, &tensors).map_err(tbad)?;
    let mut opt = opt_template.clone();
    fill_from("m", &mut opt.m, &tensors).map_err(tbad)?;
    fill_from("v", &mut opt.v, &tensors).map_err(tbad)?;
    opt.t = state.adam_t;
    let best = if v.get("has_best").and_then(Value::as_bool) == Some(true) {
        let mut b = template.clone();
        fill_from("best", &mut b, &tensors).map_err(tbad)?;
        Some(b)
    } else {
        None
    };
    Ok(Loaded {
        state,
        adapter,
        opt,
        best,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::{LoraConfig, LoraPair, Target};
    use crate::train::AdamWConfig;

    fn adapter(v: f32) -> Adapter {
        let mut layer: crate::lora::LayerAdapter = Default::default();
        layer[Target::V.index()] = Some(LoraPair {
            a: vec![v, v + 1.0],
            b: vec![v * 2.0; 3],
            r: 1,
            in_dim: 2,
            out_dim: 3,
            scale: 1.0,
        });
        Adapter {
            config: LoraConfig::default(),
            layers: vec![layer],
        }
    }

    #[test]
    fn saves_load_back_exactly_and_only_two_are_kept() {
        let root = std::env::temp_dir().join(format!("plora-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let a = adapter(0.1);
        let mut opt = AdamW::new(AdamWConfig::default(), &a);
        opt.m = adapter(0.3);
        opt.v = adapter(0.7);
        opt.t = 5;
        let state = RunState {
            step: 5,
            adam_t: 5,
            epoch: 1,
            pos: 3,
            best_valid: Some(1.25),
            evals_since_best: 2,
            config: json!({"lr": 0.1}),
        };
        for s in [1usize, 3, 5] {
            save(
                &root,
                &RunState {
                    step: s,
                    ..state.clone()
                },
                &a,
                &opt,
                Some(&adapter(9.0)),
            )
            .unwrap();
        }
        let all = list(&root).unwrap();
        assert_eq!(
            all.iter()
                .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
                .collect::<Vec<_>>(),
            vec!["step-00000003", "step-00000005"]
        );
        let l = load(
            all.last().unwrap(),
            &adapter(0.0),
            &AdamW::new(AdamWConfig::default(), &a),
        )
        .unwrap();
        assert_eq!(l.state, state);
        assert_eq!(l.adapter, a);
        assert_eq!(
            (l.opt.m.clone(), l.opt.v.clone(), l.opt.t),
            (adapter(0.3), adapter(0.7), 5)
        );
        assert_eq!(l.best, Some(adapter(9.0)));
        // A write killed midway leaves a temporary directory, which is swept, and the last
        // complete checkpoint stays loadable.
        std::fs::create_dir_all(root.join(".tmp-step-00000007-1")).unwrap();
        std::fs::write(
            root.join(".tmp-step-00000007-1/trainer_state.safetensors"),
            b"partial",
        )
        .unwrap();
        assert_eq!(list(&root).unwrap().len(), 2);
        assert_eq!(sweep_temporaries(&root).unwrap(), 1);
        assert!(load(&list(&root).unwrap()[1], &adapter(0.0), &opt).is_ok());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_damaged_checkpoint_is_named_passed_over_and_never_kept_instead_of_an_intact_one() {
        let root = std::env::temp_dir().join(format!("plora-ckpt-dmg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let a = adapter(0.5);
        let opt = AdamW::new(AdamWConfig::default(), &a);
        let state = |step| RunState {
            step,
            adam_t: step as u64,
            epoch: 0,
            pos: step,
            best_valid: None,
            evals_since_best: 0,
            config: json!({}),
        };
        for s in [1, 2] {
            save(&root, &state(s), &a, &opt, None).unwrap();
        }
        // Flip bytes inside the newest checkpoint's tensors.
        let newest = root.join("step-00000002");
        let t = newest.join(TENSORS);
        let mut bytes = std::fs::read(&t).unwrap();
        let n = bytes.len();
        for b in &mut bytes[n - 8..] {
            *b ^= 0x5a;
        }
        std::fs::write(&t, &bytes).unwrap();
        let (ok, damaged) = newest_intact(&root).unwrap();
        assert_eq!(ok, Some(root.join("step-00000001")));
        assert_eq!(damaged.len(), 1);
        assert_eq!(damaged[0].dir, newest);
        assert!(damaged[0].why.contains(TENSORS), "{}", damaged[0].why);
        let e = load(&newest, &a, &opt).err().unwrap().to_string();
        assert!(e.contains("step-00000002") && e.contains("damaged"), "{e}");
        // An empty step directory (a kill) is incomplete, not intact.
        std::fs::create_dir_all(root.join("step-00000009")).unwrap();
        assert!(verify(&root.join("step-00000009")).is_err());
        // The next save keeps the intact ones and removes the damaged and incomplete.
        save(&root, &state(3), &a, &opt, None).unwrap();
        let names: Vec<String> = list(&root)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["step-00000001", "step-00000003"]);
        assert_eq!(discard_after(&root, 1).unwrap().len(), 1);
        assert_eq!(list(&root).unwrap().len(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
