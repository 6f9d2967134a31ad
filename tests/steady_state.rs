//! Steady-state training steps allocate nothing: after the first steps have grown every
//! buffer (workspace, per-thread kernel scratch), the counting allocator records no
//! allocation between step 2 and step N — in both precisions, with 1 and 2 threads.
//! (The only test in this binary, so the process-wide counter sees nothing else.)

mod common;

use common::{asset, golden};
use pocketlora::internals::data::{read_ids_jsonl, TokenRecord};
use pocketlora::internals::kernels::Precision;
use pocketlora::internals::lora::{Adapter, LoraConfig};
use pocketlora::internals::memory::heap::{self, CountingAlloc};
use pocketlora::internals::model::backward::{SavedDtype, WorkspaceShape, ALL_BLOCKS};
use pocketlora::internals::model::Model;
use pocketlora::internals::train::{RecordOrder, TrainConfig, Trainer};
use std::sync::Arc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn training_steps_after_the_second_allocate_nothing() {
    let records: Vec<TokenRecord> = read_ids_jsonl(golden("oracle/eval_records.jsonl")).unwrap();
    for threads in [1, 2] {
        for precision in [Precision::Exact, Precision::Fast] {
            for shape in [
                WorkspaceShape::plain(128),
                WorkspaceShape {
                    segment: 2,
                    loss_rows: 16,
                    ..WorkspaceShape::chunked(128, 32, SavedDtype::BF16)
                },
                WorkspaceShape::keeping(128, ALL_BLOCKS),
                WorkspaceShape {
                    segment: 2,
                    ..WorkspaceShape::keeping(128, 2)
                },
            ] {
                let mut model = Model::open(asset("stories260K-q8_0.gguf"), threads).unwrap();
                model.set_precision(precision);
                let model = Arc::new(model);
                let lora = LoraConfig {
                    r: 8,
                    dropout: 0.05,
                    ..LoraConfig::default()
                };
                let adapter = Adapter::new(&model.cfg, lora).unwrap();
                let cfg = TrainConfig {
                    total_steps: 12,
                    ..TrainConfig::default()
                };
                let mut t = Trainer::with_shape(model.clone(), adapter, cfg, shape).unwrap();
                let mut order = RecordOrder::new(records.len(), true, 7);
                let mut batch: Vec<&TokenRecord> = Vec::with_capacity(4);
                for _ in 0..2 {
                    step(&mut t, &mut batch, &records, &mut order);
                }
                let before = heap::allocations();
                for _ in 2..12 {
                    step(&mut t, &mut batch, &records, &mut order);
                }
                let made = heap::allocations() - before;
                assert_eq!(
                    made, 0,
                    "{threads} threads, {precision}, {shape:?}: {made} allocations in 10 steady-state steps"
                );
            }
        }
    }
}

fn step<'a>(
    t: &mut Trainer,
    batch: &mut Vec<&'a TokenRecord>,
    records: &'a [TokenRecord],
    order: &mut RecordOrder,
) {
    batch.clear();
    for _ in 0..4 {
        batch.push(&records[order.next_index().unwrap()]);
    }
    t.step(batch).unwrap();
}
