//! Packing (document masking) does not change the loss or the gradient a record gets:
//! a packed sequence's loss and adapter gradients equal the sum over its records trained
//! alone (1e-5 relative), each record's own loss is unchanged inside a pack, and without
//! the document starts the same concatenation gives a different loss (the masking matters).

use crate::common;

use common::{asset, golden};
use pocketlora::internals::data::{pack, read_ids_jsonl, TokenRecord};
use pocketlora::internals::lora::{Adapter, LoraConfig};
use pocketlora::internals::model::backward::{
    forward_backward_packed, TrainWorkspace, WorkspaceShape,
};
use pocketlora::internals::model::Model;

fn adapter(model: &Model) -> Adapter {
    let mut a: Adapter = Adapter::new(&model.cfg, LoraConfig::default()).unwrap();
    // Non-zero B, so the adapter changes the loss and every gradient flows.
    let mut s = 12345u64;
    for p in a.pairs_mut() {
        for b in p.b.iter_mut() {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2;
        }
    }
    a
}

fn run(model: &Model, a: &Adapter, recs: &[TokenRecord], shape: WorkspaceShape) -> (f64, Adapter) {
    let mut ws = TrainWorkspace::with_shape(model, a, shape);
    let mut g = a.zeros_like();
    let mut loss = 0.0;
    for r in recs {
        loss += forward_backward_packed(
            model,
            a,
            &mut g,
            &r.ids,
            &r.targets,
            &r.doc_starts,
            1.0,
            0,
            &mut ws,
        )
        .unwrap();
    }
    (loss, g)
}

fn flat(a: &Adapter) -> Vec<f32> {
    a.pairs()
        .flat_map(|p| p.a.iter().chain(&p.b).copied())
        .collect()
}

fn rel(x: &[f32], y: &[f32]) -> f64 {
    let d: f64 = x.iter().zip(y).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let n: f64 = y.iter().map(|b| (*b as f64).powi(2)).sum();
    (d / n.max(1e-30)).sqrt()
}

#[test]
fn packed_sequences_get_the_losses_and_gradients_of_their_records() {
    let records = read_ids_jsonl(golden("oracle/eval_records.jsonl")).unwrap();
    for path in ["stories260K-f32.gguf", "stories260K-q8_0.gguf"] {
        let model = Model::open(asset(path), 2).unwrap();
        let a = adapter(&model);
        let packed = pack(records.clone(), 256);
        assert!(packed.len() < records.len(), "nothing was packed");
        assert!(packed.iter().any(|r| r.doc_starts.len() >= 2));
        for shape in [
            WorkspaceShape::plain(256),
            WorkspaceShape {
                loss_rows: 8,
                segment: 2,
                ..WorkspaceShape::chunked(
                    256,
                    16,
                    pocketlora::internals::model::backward::SavedDtype::F32,
                )
            },
        ] {
            let (alone, g_alone) = run(&model, &a, &records, shape);
            let (together, g_together) = run(&model, &a, &packed, shape);
            assert!(
                ((alone - together) / alone).abs() < 1e-5,
                "{path}: loss alone {alone} packed {together}"
            );
            let r = rel(&flat(&g_together), &flat(&g_alone));
            assert!(r < 1e-5, "{path}: gradients differ by {r:e}");

            // Without document masking the same concatenation is another computation.
            let unmasked: Vec<TokenRecord> = packed
                .iter()
                .map(|p| TokenRecord::new(p.ids.clone(), p.targets.clone()))
                .collect();
            let (cross, _) = run(&model, &a, &unmasked, shape);
            assert!(
                ((alone - cross) / alone).abs() > 1e-3,
                "{path}: document masking made no difference ({alone} vs {cross})"
            );
        }
    }
}

#[test]
fn each_record_keeps_its_own_loss_inside_a_pack() {
    let records = read_ids_jsonl(golden("oracle/eval_records.jsonl")).unwrap();
    let model = Model::open(asset("stories260K-q8_0.gguf"), 1).unwrap();
    let a = adapter(&model);
    let shape = WorkspaceShape::plain(512);
    let seq: Vec<TokenRecord> = records.iter().take(6).cloned().collect();
    let packed = pack(seq.clone(), 512);
    assert_eq!(packed.len(), 1);
    let starts: Vec<usize> = std::iter::once(0)
        .chain(packed[0].doc_starts.iter().map(|&d| d as usize))
        .chain(std::iter::once(packed[0].ids.len()))
        .collect();
    for (k, r) in seq.iter().enumerate() {
        let (alone, _) = run(&model, &a, std::slice::from_ref(r), shape);
        // Only record k's targets count in the pack.
        let mut only = packed[0].clone();
        for (i, t) in only.targets.iter_mut().enumerate() {
            if i < starts[k] || i >= starts[k + 1] {
                *t = false;
            }
        }
        let (inside, _) = run(&model, &a, &[only], shape);
        assert!(
            ((alone - inside) / alone.abs().max(1e-12)).abs() < 1e-5,
            "record {k}: alone {alone}, inside the pack {inside}"
        );
    }
}

/// The same for the newer mixers: a packed sequence's short convolutions (lfm2) and sliding
/// windows (gemma3) stop at each document's start, so every record keeps its loss and its
/// gradient (the synthetic models' records, packed into sequences of 128).
#[test]
fn short_convolutions_and_windows_stay_inside_their_documents() {
    use common::synth;
    for spec in [synth::lfm2(), synth::gemma3()] {
        let file = pocketlora::internals::gguf::GgufFile::from_bytes(synth::build(&spec)).unwrap();
        let model = Model::from_file(std::sync::Arc::new(file), 2).unwrap();
        let text = synth::records(spec.n_vocab, spec.seed);
        let records: Vec<TokenRecord> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let ids: Vec<u32> = v["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect();
                let targets = (0..ids.len()).map(|i| i > 0).collect();
                TokenRecord::new(ids, targets)
            })
            .collect();
        let a = adapter(&model);
        let packed = pack(records.clone(), 128);
        assert!(packed.iter().any(|r| r.doc_starts.len() >= 2));
        let shape = WorkspaceShape::plain(128);
        let (alone, g_alone) = run(&model, &a, &records, shape);
        let (together, g_together) = run(&model, &a, &packed, shape);
        assert!(
            ((alone - together) / alone).abs() < 1e-5,
            "{}: loss alone {alone} packed {together}",
            spec.name
        );
        let r = rel(&flat(&g_together), &flat(&g_alone));
        assert!(r < 1e-5, "{}: gradients differ by {r:e}", spec.name);
    }
}
