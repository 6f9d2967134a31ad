//! Stopping training from outside: the trainer's cancel flag is checked before every record
//! (one micro-step), a cancelled step changes nothing (adapter, optimizer, step count, data
//! cursor), and a run that was cancelled mid-step and then continued ends bit-identical to
//! one that never was. A step whose loss is not finite is refused without an update.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use common::{asset, scratch_dir};
use pocketlora::internals::data::TokenRecord;
use pocketlora::internals::lora::{Adapter, LoraConfig};
use pocketlora::internals::model::Model;
use pocketlora::internals::train::run::{Event, Finish, Run, RunOptions};
use pocketlora::internals::train::{Schedule, TrainConfig, Trainer};
use pocketlora::Error;

/// `n` synthetic records of `len` tokens, every token after the first a target.
fn records(model: &Model, n: usize, len: usize) -> Vec<TokenRecord> {
    let v = model.cfg.n_vocab as u32;
    (0..n as u32)
        .map(|i| {
            TokenRecord::new(
                (0..len as u32).map(|j| (1 + i * 7 + j * 13) % v).collect(),
                (0..len).map(|j| j > 0).collect(),
            )
        })
        .collect()
}

fn lora() -> LoraConfig {
    LoraConfig {
        r: 4,
        alpha: 8.0,
        ..LoraConfig::default()
    }
}

fn train_cfg(lr: f32) -> TrainConfig {
    TrainConfig {
        lr,
        schedule: Schedule::Constant,
        total_steps: 3,
        ..TrainConfig::default()
    }
}

#[test]
fn a_raised_flag_cancels_the_step_before_anything_changes() {
    let model = Arc::new(Model::open(asset("stories260K-q8_0.gguf"), 1).unwrap());
    let recs = records(&model, 4, 32);
    let batch: Vec<&TokenRecord> = recs.iter().collect();
    let adapter: Adapter = Adapter::new(&model.cfg, lora()).unwrap();
    let mut t = Trainer::new(model.clone(), adapter.clone(), train_cfg(1e-2), 32).unwrap();
    let flag = Arc::new(AtomicBool::new(true));
    t.set_cancel_flag(Some(flag.clone()));
    assert!(matches!(t.step(&batch), Err(Error::Cancelled)));
    assert_eq!(t.steps_done(), 0);
    assert_eq!(t.adapter(), &adapter);
    assert_eq!(t.optimizer().t, 0);
    flag.store(false, Ordering::Relaxed);
    let s = t.step(&batch).unwrap();
    assert_eq!((s.step, t.steps_done()), (1, 1));
    assert_ne!(t.adapter(), &adapter);
}

fn run_opts(out: &std::path::Path, batch: usize) -> RunOptions {
    RunOptions {
        batch,
        grad_accum: 1,
        shuffle: true,
        seed: 3,
        eval_every: 0,
        patience: None,
        save_every: 0,
        out: Some(out.to_path_buf()),
        config: serde_json::Value::Null,
        base_name: "stories260K-q8_0.gguf".into(),
        shape: None,
    }
}

#[test]
fn cancel_from_another_thread_ends_the_step_mid_batch_and_the_run_continues_exactly() {
    let dir = scratch_dir("train-cancel");
    let model = Arc::new(Model::open(asset("stories260K-q8_0.gguf"), 2).unwrap());
    // 32 records per step, so a step is many micro-steps long.
    let recs = records(&model, 48, 96);
    let adapter: Adapter = Adapter::new(&model.cfg, lora()).unwrap();
    let new_run = || {
        Run::new(
            model.clone(),
            adapter.clone(),
            train_cfg(1e-2),
            recs.clone(),
            Vec::new(),
            run_opts(&dir, 32),
        )
        .unwrap()
    };
    let mut reference = new_run();
    let t0 = Instant::now();
    let done = reference.run_until(3, |_| true).unwrap();
    let step_time = t0.elapsed() / 3;
    assert_eq!(done.finish, Finish::Completed);

    let mut run = new_run();
    let flag = Arc::new(AtomicBool::new(false));
    run.set_cancel_flag(Some(flag.clone()));
    let (tx, rx) = mpsc::channel::<()>();
    let canceller = {
        let flag = flag.clone();
        std::thread::spawn(move || {
            // Step 1 is done; step 2 (32 records) is under way: cancel it partway.
            rx.recv().unwrap();
            std::thread::sleep(step_time / 8);
            let at = Instant::now();
            flag.store(true, Ordering::Relaxed);
            at
        })
    };
    let mut tx = Some(tx);
    let got = run
        .run_until(3, |ev| {
            if let Event::Step { .. } = ev {
                if let Some(tx) = tx.take() {
                    tx.send(()).unwrap();
                }
            }
            true
        })
        .unwrap();
    let returned = Instant::now();
    let raised = canceller.join().unwrap();
    assert_eq!(got.finish, Finish::Interrupted);
    assert_eq!(
        run.trainer().steps_done(),
        1,
        "step 2 was cancelled, not finished"
    );
    eprintln!(
        "cancel took effect {:?} after the flag was raised; a step takes {step_time:?} ({:?} per record)",
        returned.saturating_duration_since(raised),
        step_time / 32
    );
    // Continue: the same three steps as the uninterrupted run, bit for bit.
    flag.store(false, Ordering::Relaxed);
    let rest = run.run_until(3, |_| true).unwrap();
    assert_eq!(rest.finish, Finish::Completed);
    assert_eq!(run.trainer().steps_done(), 3);
    assert_eq!(run.trainer().adapter(), reference.trainer().adapter());
    assert_eq!(
        run.trainer().optimizer().m,
        reference.trainer().optimizer().m
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_step_that_diverges_is_refused_without_an_update() {
    let model = Arc::new(Model::open(asset("stories260K-q8_0.gguf"), 1).unwrap());
    let recs = records(&model, 2, 32);
    let batch: Vec<&TokenRecord> = recs.iter().collect();
    let adapter: Adapter = Adapter::new(&model.cfg, lora()).unwrap();
    let mut cfg = train_cfg(1e30);
    cfg.clip = 0.0;
    cfg.total_steps = 10;
    let mut t = Trainer::new(model.clone(), adapter, cfg, 32).unwrap();
    let mut refused = None;
    for _ in 0..5 {
        let before = t.adapter().clone();
        match t.step(&batch) {
            Ok(s) => assert!(s.loss.is_finite()),
            Err(Error::Numeric(msg)) => {
                assert_eq!(t.adapter(), &before, "nothing applied");
                refused = Some((msg, t.steps_done()));
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (msg, done) = refused.expect("a learning rate of 1e30 diverges");
    assert!(msg.contains("not applied"), "{msg}");
    assert!(done >= 1);
}
