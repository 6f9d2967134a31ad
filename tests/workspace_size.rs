//! The memory planner's size of a training workspace is exactly what gets allocated (the
//! only test in this binary, so the process-wide heap counter sees nothing else).

mod common;

use common::asset;
use pocketlora::internals::lora::{Adapter, LayerSelection, LoraConfig};
use pocketlora::internals::memory::heap::{self, CountingAlloc};
use pocketlora::internals::model::backward::{
    workspace_bytes, AdapterGeometry, SavedDtype, TrainWorkspace, WorkspaceShape, ALL_BLOCKS,
};
use pocketlora::internals::model::{Activations, KvCache, Model};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn the_planned_workspace_is_what_gets_allocated() {
    let model = Model::open(asset("stories260K-q8_0.gguf"), 1).unwrap();
    // Let the worker thread finish starting (its own allocations) before measuring: a job
    // on the model's pool returns only once a worker has run it.
    {
        let mut cache = KvCache::new(&model.cfg, 4).unwrap();
        let mut act = Activations::for_model(&model, 4);
        model.forward(&[1], &mut cache, &mut act).unwrap();
    }
    for (lora, shape) in [
        (LoraConfig::default(), WorkspaceShape::plain(200)),
        (
            LoraConfig {
                dropout: 0.1,
                r: 4,
                ..LoraConfig::default()
            },
            WorkspaceShape {
                segment: 2,
                loss_rows: 8,
                ..WorkspaceShape::chunked(256, 16, SavedDtype::BF16)
            },
        ),
        (
            LoraConfig {
                layers: LayerSelection::parse("2,3,4").unwrap(),
                ..LoraConfig::default()
            },
            WorkspaceShape::keeping(96, ALL_BLOCKS),
        ),
        (
            LoraConfig {
                layers: LayerSelection::parse("1,2,3,4").unwrap(),
                ..LoraConfig::default()
            },
            WorkspaceShape {
                segment: 2,
                saved: SavedDtype::BF16,
                ..WorkspaceShape::keeping(96, 1)
            },
        ),
    ] {
        let adapter: Adapter = Adapter::new(&model.cfg, lora).unwrap();
        let planned = workspace_bytes(&model.cfg, AdapterGeometry::of(&model.cfg, &adapter), shape);
        let before = heap::current();
        let ws = TrainWorkspace::<f32>::with_shape(&model, &adapter, shape);
        let got = heap::current() - before;
        drop(ws);
        assert_eq!(got, planned, "{shape:?}");
    }
}
