//! The memory plan's kernel scratch per thread covers what the kernels' grow-only buffers
//! really reach in a training pass (one worker thread, so every buffer is that thread's),
//! slot by slot, in both precisions and for plain and chunked shapes.

use crate::common;

use common::golden;
use pocketlora::internals::data::{read_ids_jsonl, TokenRecord};
use pocketlora::internals::kernels::scratch::ScratchNeed;
use pocketlora::internals::kernels::Precision;
use pocketlora::internals::lora::{Adapter, LoraConfig};
use pocketlora::internals::memory::plan::kernel_scratch_need;
use pocketlora::internals::model::backward::{SavedDtype, WorkspaceShape};
use pocketlora::internals::model::Model;
use pocketlora::internals::train::{TrainConfig, Trainer};
use std::sync::Arc;

fn reached(path: &str, precision: Precision, shape: WorkspaceShape) -> (ScratchNeed, ScratchNeed) {
    let mut model = Model::open(common::asset(path), 1).unwrap();
    model.set_precision(precision);
    let model = Arc::new(model);
    let records: Vec<TokenRecord> = read_ids_jsonl(golden("oracle/eval_records.jsonl")).unwrap();
    let lora = LoraConfig {
        r: 8,
        ..LoraConfig::default()
    };
    let rank = lora.r;
    let adapter = Adapter::new(&model.cfg, lora).unwrap();
    let mut t = Trainer::with_shape(model.clone(), adapter, TrainConfig::default(), shape).unwrap();
    let batch: Vec<&TokenRecord> = records.iter().take(4).collect();
    t.step(&batch).unwrap();
    let got = model.install(ScratchNeed::current);
    let planned = kernel_scratch_need(
        &model.cfg,
        rank,
        shape.chunk,
        shape.capacity,
        shape.loss_rows.min(shape.capacity),
        precision,
        true,
    );
    (got, planned)
}

#[test]
fn planned_kernel_scratch_covers_a_training_step() {
    for path in [
        "stories260K-q8_0.gguf",
        "stories260K-q4_0.gguf",
        "stories260K-f32.gguf",
    ] {
        for precision in [Precision::Exact, Precision::Fast] {
            for shape in [
                WorkspaceShape::plain(256),
                WorkspaceShape {
                    loss_rows: 8,
                    ..WorkspaceShape::chunked(256, 16, SavedDtype::F32)
                },
            ] {
                let (got, planned) = reached(path, precision, shape);
                let slots = |n: &ScratchNeed| {
                    n.f32
                        .iter()
                        .chain(&n.u8)
                        .chain(&n.i32)
                        .copied()
                        .collect::<Vec<_>>()
                };
                for (i, (g, p)) in slots(&got).iter().zip(slots(&planned)).enumerate() {
                    assert!(
                        *g <= p,
                        "{path} {precision} {shape:?}: slot {i} reached {g} > planned {p}\n{got:?}\n{planned:?}"
                    );
                }
                assert!(got.bytes() > 0, "the kernels used no scratch?");
            }
        }
    }
}
