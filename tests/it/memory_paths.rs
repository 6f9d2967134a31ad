//! The memory-saving choices a plan can make: token-chunked recompute is exact (same loss
//! and adapter after 5 steps as the plain path, 1e-5 relative); f16/bf16 storage of the
//! saved activations is the one lossy option (loss after 20 steps within 1% of exact).
//! Keeping every block's activations (no recompute, the fastest shape) is exact too.

use crate::common;

use common::{asset, golden};
use pocketlora::internals::data::{read_ids_jsonl, TokenRecord};
use pocketlora::internals::lora::{Adapter, LoraConfig};
use pocketlora::internals::model::backward::{SavedDtype, WorkspaceShape, ALL_BLOCKS};
use pocketlora::internals::model::Model;
use pocketlora::internals::train::{RecordOrder, Schedule, TrainConfig, Trainer};
use std::sync::Arc;

fn train(
    model: &Arc<Model>,
    records: &[TokenRecord],
    shape: WorkspaceShape,
    steps: usize,
    lr: f32,
) -> (Vec<f64>, Adapter) {
    let lora = LoraConfig {
        r: 8,
        dropout: 0.1,
        ..LoraConfig::default()
    };
    let adapter = Adapter::new(&model.cfg, lora).unwrap();
    let cfg = TrainConfig {
        lr,
        schedule: Schedule::Constant,
        total_steps: steps,
        ..TrainConfig::default()
    };
    let mut t = Trainer::with_shape(model.clone(), adapter, cfg, shape).unwrap();
    let mut order = RecordOrder::new(records.len(), false, 0);
    let losses = (0..steps)
        .map(|_| {
            let b: Vec<&TokenRecord> = order.take(4).into_iter().map(|i| &records[i]).collect();
            t.step(&b).unwrap().loss
        })
        .collect();
    (losses, t.into_adapter())
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    d / b
        .iter()
        .map(|y| (*y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
        .max(1e-30)
}

#[test]
fn chunked_recompute_equals_the_plain_path() {
    let model = Arc::new(Model::open(asset("stories260K-q8_0.gguf"), 2).unwrap());
    let records = read_ids_jsonl(golden("oracle/eval_records.jsonl")).unwrap();
    // At the default learning rate (2e-4): AdamW turns float rounding in near-zero
    // gradients into update differences proportional to the rate.
    let (plain_losses, plain) = train(&model, &records, WorkspaceShape::plain(128), 5, 2e-4);
    // Token chunks of 7 and 32; √L checkpointing (every 2 and 3 blocks) with 8 logit rows;
    // every block's activations kept (no recompute), whole and in chunks of 7; the top 2
    // (of 5) blocks kept and the others checkpointed per block (the top checkpointed
    // block's attention state reused), or the top 1 kept and the others in segments of 2.
    for (chunk, segment, loss_rows, keep) in [
        (7usize, 1usize, 64usize, 0usize),
        (32, 1, 64, 0),
        (128, 2, 8, 0),
        (7, 3, 8, 0),
        (128, 1, 256, ALL_BLOCKS),
        (7, 1, 64, ALL_BLOCKS),
        (128, 1, 256, 2),
        (7, 2, 64, 1),
    ] {
        let shape = WorkspaceShape {
            segment,
            loss_rows,
            kept: keep,
            ..WorkspaceShape::chunked(128, chunk, SavedDtype::F32)
        };
        let (losses, a) = train(&model, &records, shape, 5, 2e-4);
        for (x, y) in losses.iter().zip(&plain_losses) {
            assert!(
                (x - y).abs() / y.abs() < 1e-5,
                "chunk {chunk} keep {keep}: loss {x} vs {y}"
            );
        }
        // The whole adapter, as one vector.
        let flat = |x: &Adapter| {
            x.pairs()
                .flat_map(|p| p.a.iter().chain(&p.b).copied())
                .collect::<Vec<f32>>()
        };
        let d = rel(&flat(&a), &flat(&plain));
        eprintln!("chunk {chunk}: adapter after 5 steps differs by {d:e} (relative norm)");
        assert!(
            d < 1e-5,
            "chunk {chunk} keep {keep}: adapter differs by {d:e}"
        );
    }
}

/// One step's gradients, chunked vs plain: the same to float rounding, tensor by tensor
/// (AdamW then amplifies rounding in elements whose gradient is near its eps, which is why
/// the 5-step comparison above is on the whole adapter).
#[test]
fn chunked_gradients_equal_plain_gradients_per_tensor() {
    let model = Arc::new(Model::open(asset("stories260K-q8_0.gguf"), 2).unwrap());
    let records = read_ids_jsonl(golden("oracle/eval_records.jsonl")).unwrap();
    let grads = |shape: WorkspaceShape| {
        let lora = LoraConfig {
            r: 8,
            ..LoraConfig::default()
        };
        let mut adapter: Adapter = Adapter::new(&model.cfg, lora).unwrap();
        for p in adapter.pairs_mut() {
            p.b.iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = ((i * 7919 % 200) as f32 - 100.0) * 1e-4);
        }
        let cfg = TrainConfig {
            lr: 0.0,
            clip: 0.0,
            ..TrainConfig::default()
        };
        let mut t = Trainer::with_shape(model.clone(), adapter, cfg, shape).unwrap();
        let batch: Vec<&TokenRecord> = records.iter().collect();
        t.step(&batch).unwrap();
        t.grads().clone()
    };
    let plain = grads(WorkspaceShape::plain(128));
    for (chunk, keep) in [
        (5usize, 0usize),
        (16, 0),
        (33, 0),
        (128, ALL_BLOCKS),
        (5, ALL_BLOCKS),
        (128, 3),
        (16, 1),
    ] {
        let g = grads(WorkspaceShape {
            kept: keep,
            ..WorkspaceShape::chunked(128, chunk, SavedDtype::F32)
        });
        for (p, q) in g.pairs().zip(plain.pairs()) {
            let (ea, eb) = (rel(&p.a, &q.a), rel(&p.b, &q.b));
            assert!(
                ea < 1e-5 && eb < 1e-5,
                "chunk {chunk} keep {keep}: gradient differs by {ea:e} / {eb:e}"
            );
        }
    }
}

#[test]
fn half_precision_checkpoints_stay_within_one_percent() {
    let model = Arc::new(Model::open(asset("aidreams260K-q8_0.gguf"), 2).unwrap());
    let records = read_ids_jsonl(golden("oracle/eval_records.jsonl")).unwrap();
    let (exact, _) = train(&model, &records, WorkspaceShape::plain(128), 20, 3e-3);
    for saved in [SavedDtype::BF16, SavedDtype::F16] {
        let (lossy, _) = train(
            &model,
            &records,
            WorkspaceShape::chunked(128, 128, saved),
            20,
            3e-3,
        );
        let (a, b) = (*lossy.last().unwrap(), *exact.last().unwrap());
        let d = (a - b).abs() / b;
        eprintln!(
            "{saved:?}: loss after 20 steps {a:.5} vs exact {b:.5} ({:.3}%)",
            d * 100.0
        );
        assert!(d < 0.01, "{saved:?}: {a} vs {b}");
        assert_ne!(lossy, exact, "{saved:?} storage must actually be in effect");
    }
}
