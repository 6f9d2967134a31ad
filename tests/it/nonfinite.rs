//! Non-finite numbers in training: a NaN/Inf loss or gradient stops the step with
//! `Error::Numeric` naming the block and tensor, applies nothing, and leaves the last good
//! checkpoint as it was; with skipping on, such batches are skipped and counted.

use crate::common;

use std::path::Path;
use std::sync::Arc;

use common::synth;
use pocketlora::internals::data::TokenRecord;
use pocketlora::internals::error::Error;
use pocketlora::internals::gguf::GgufFile;
use pocketlora::internals::lora::{Adapter, LoraConfig, Target};
use pocketlora::internals::model::Model;
use pocketlora::internals::train::run::{Run, RunOptions};
use pocketlora::internals::train::{checkpoint, Schedule, TrainConfig, Trainer};

/// Token whose embedding row is +inf in [`poisoned_model`].
const POISON: u32 = 3;

/// The untied synthetic Llama with token [`POISON`]'s embedding row set to +inf.
fn poisoned_model() -> Model {
    let mut bytes = synth::build(&synth::llama_untied());
    let (at, row_bytes) = {
        let f = GgufFile::from_bytes(bytes.clone()).unwrap();
        let t = f.tensor_info("token_embd.weight").unwrap();
        let row = t.row_bytes().unwrap();
        (f.data_offset() + t.offset + row * u64::from(POISON), row)
    };
    for c in bytes[at as usize..(at + row_bytes) as usize].chunks_exact_mut(4) {
        c.copy_from_slice(&f32::INFINITY.to_le_bytes());
    }
    Model::from_file(Arc::new(GgufFile::from_bytes(bytes).unwrap()), 1).unwrap()
}

fn record(ids: &[u32]) -> TokenRecord {
    TokenRecord::new(ids.to_vec(), (0..ids.len()).map(|i| i > 0).collect())
}

fn good() -> TokenRecord {
    record(&[1, 10, 11, 12, 13, 14])
}

fn bad() -> TokenRecord {
    record(&[1, 10, POISON, 12, 13, 14])
}

fn train_cfg(steps: usize) -> TrainConfig {
    TrainConfig {
        lr: 1e-2,
        schedule: Schedule::Constant,
        total_steps: steps,
        ..TrainConfig::default()
    }
}

fn adapter(model: &Model) -> Adapter {
    let mut a = Adapter::new(&model.cfg, LoraConfig::default()).unwrap();
    // Non-zero B, so that every tensor gets a gradient.
    for p in a.pairs_mut() {
        for (i, v) in p.b.iter_mut().enumerate() {
            *v = (i as f32 * 0.37).sin() * 0.01;
        }
    }
    a
}

#[test]
fn find_non_finite_names_block_target_and_tensor() {
    let model = Arc::new(poisoned_model());
    let mut a = adapter(&model);
    assert_eq!(a.find_non_finite(), None);
    a.layers[0][Target::Up.index()].as_mut().unwrap().a[7] = f32::NAN;
    a.layers[1][Target::V.index()].as_mut().unwrap().b[5] = f32::NEG_INFINITY;
    let nf = a.find_non_finite().unwrap();
    // Backward order: the last block first.
    assert_eq!((nf.layer, nf.target, nf.tensor), (1, Target::V, "lora_b"));
    assert_eq!((nf.index, nf.value), (5, f64::NEG_INFINITY));
    assert_eq!(nf.n_tensors, 2);
    assert!(
        nf.to_string().starts_with("blk.1.attn_v.lora_b[5] = -inf"),
        "{nf}"
    );
}

#[test]
fn a_non_finite_step_errors_and_changes_nothing() {
    let model = Arc::new(poisoned_model());
    let mut t = Trainer::new(model.clone(), adapter(&model), train_cfg(10), 16).unwrap();
    let g = good();
    t.step(&[&g]).unwrap();
    let (before, t_before) = (t.adapter().clone(), t.optimizer().t);
    let b = bad();
    match t.step(&[&g, &b]) {
        Err(Error::Numeric(msg)) => {
            assert!(msg.starts_with("step 2: the loss is NaN"), "{msg}");
            assert!(msg.contains("blk.1."), "names the block: {msg}");
            assert!(msg.contains(".lora_"), "names the tensor: {msg}");
        }
        other => panic!("expected Error::Numeric, got {other:?}"),
    }
    assert_eq!(t.steps_done(), 1);
    assert_eq!(t.optimizer().t, t_before);
    assert!(t.adapter() == &before, "the adapter was changed");
    // The next good step goes on from there, as step 2.
    assert_eq!(t.step(&[&g]).unwrap().step, 2);
    assert!(t.adapter().find_non_finite().is_none());
}

fn run_opts(out: &Path) -> RunOptions {
    RunOptions {
        batch: 1,
        grad_accum: 1,
        shuffle: false,
        seed: 1,
        eval_every: 0,
        patience: None,
        save_every: 1,
        out: Some(out.to_path_buf()),
        config: serde_json::json!({"test": "nonfinite"}),
        base_name: "synth".into(),
        shape: None,
    }
}

/// A 3-step run over `data` (batches of one record, a checkpoint after every step).
fn new_run(model: &Arc<Model>, data: Vec<TokenRecord>, out: &Path, skip: bool) -> Run {
    let mut run = Run::new(
        model.clone(),
        adapter(model),
        train_cfg(3),
        data,
        vec![],
        run_opts(out),
    )
    .unwrap();
    run.set_skip_nonfinite(skip);
    run
}

#[test]
fn a_run_stops_and_keeps_the_last_good_checkpoint() {
    let model = Arc::new(poisoned_model());
    let out = common::scratch_dir("nonfinite-stop");
    let data = vec![good(), bad(), good()];
    let mut run = new_run(&model, data, &out, false);
    match run.run(|_| true) {
        Err(Error::Numeric(msg)) => assert!(msg.starts_with("step 2:"), "{msg}"),
        other => panic!("expected Error::Numeric, got {other:?}"),
    }
    let root = out.join("checkpoints");
    let cps = checkpoint::list(&root).unwrap();
    assert_eq!(cps.len(), 1, "{cps:?}");
    assert!(cps[0].ends_with("step-00000001"));
    let l = checkpoint::load(&cps[0], run.trainer().adapter(), run.trainer().optimizer()).unwrap();
    assert_eq!(l.state.step, 1);
    assert!(
        l.adapter == *run.trainer().adapter(),
        "the checkpoint holds step 1"
    );
    assert!(l.adapter.find_non_finite().is_none());
    // No final adapter was written from a failed run.
    assert!(!out.join("adapter_model.safetensors").exists());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn skipping_counts_non_finite_batches() {
    let model = Arc::new(poisoned_model());
    let out = common::scratch_dir("nonfinite-skip");
    let data = vec![good(), bad(), good(), good()];
    let mut run = new_run(&model, data, &out, true);
    let s = run.run(|_| true).unwrap();
    assert_eq!((s.steps, s.skipped_nonfinite), (3, 1));
    assert!(s.last_loss.is_finite());
    assert!(run.trainer().adapter().find_non_finite().is_none());
    assert!(out.join("adapter_model.safetensors").exists());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn skipping_gives_up_after_a_whole_epoch_of_bad_batches() {
    let model = Arc::new(poisoned_model());
    let out = common::scratch_dir("nonfinite-epoch");
    let data = vec![bad(), bad()];
    let mut run = new_run(&model, data, &out, true);
    match run.run(|_| true) {
        Err(Error::Numeric(msg)) => assert!(msg.contains("2 batches in a row"), "{msg}"),
        other => panic!("expected Error::Numeric, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&out);
}
