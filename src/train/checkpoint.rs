//! Training checkpoints: everything needed to continue a run exactly — adapter, AdamW
//! moments and step count, data cursor, early-stopping state, the run's configuration —
//! in `OUT/checkpoints/step-NNNNNNNN/`. A checkpoint is written into a hidden temporary
//! directory, each file fsynced, then the directory is renamed into place, so a killed
//! write never damages the previous checkpoint; leftovers of killed writes are swept at
//! the next start. The newest two checkpoints are kept.

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
    Ok(())
}

/// Complete checkpoints under `root`, oldest first.
pub fn list(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(root, e)),
    };
    for e in rd.flatten() {
        let p = e.path();
        let is_step = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("step-"));
        if is_step && p.join(STATE).exists() && p.join(TENSORS).exists() {
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

fn prune(root: &Path) -> Result<()> {
    let all = list(root)?;
    for old in all.iter().take(all.len().saturating_sub(KEEP)) {
        std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
    }
    Ok(())
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
}
