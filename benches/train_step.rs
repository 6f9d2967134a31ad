//! One training step (forward + backward + AdamW) of LoRA r 8 on all seven targets, at
//! sequence lengths 128 and 512, on the bundled stories260K (Q8_0) and on a
//! SmolLM2-135M-shaped llama with random Q8_0 weights written by the bench itself
//! (576 wide, 30 blocks, 9 heads / 3 KV heads, SwiGLU 1536, vocabulary 49152, tied head).
//! Throughput is reported in tokens (criterion's "elem/s"), for both precisions
//! (`exact`, `fast`).
//! Threads: `POCKETLORA_BENCH_THREADS` (default: all cores).

#[path = "../tests/common/synth.rs"]
#[allow(dead_code)]
mod synth;

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pocketlora::internals::data::TokenRecord;
use pocketlora::internals::kernels::Precision;
use pocketlora::internals::lora::{Adapter, LoraConfig};
use pocketlora::internals::model::Model;
use pocketlora::internals::quant::GgmlType;
use pocketlora::internals::train::{Schedule, TrainConfig, Trainer};

fn smollm2_shape() -> synth::Spec {
    synth::Spec {
        name: "smollm2-135m-shape",
        arch: "llama",
        n_vocab: 49152,
        n_embd: 576,
        n_layer: 30,
        n_head: 9,
        n_head_kv: 3,
        n_ff: 1536,
        n_ctx: 2048,
        tied: true,
        qkv_bias: false,
        rope_base: 100000.0,
        embd_ty: GgmlType::Q8_0,
        output_ty: GgmlType::Q8_0,
        matrix_types: [GgmlType::Q8_0; 7],
        rope_linear: None,
        rope_freqs: None,
        features: synth::Features::NONE,
        seed: 1,
    }
}

fn bench_train_step(c: &mut Criterion) {
    let threads = std::env::var("POCKETLORA_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let smol = std::env::temp_dir().join("pocketlora-bench-smollm2-135m-q8_0.gguf");
    if !smol.exists() {
        std::fs::write(&smol, synth::build(&smollm2_shape()))
            .expect("write the SmolLM2-shaped model");
    }
    let stories = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/stories260K-q8_0.gguf");
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    for (name, path) in [
        ("stories260K-q8_0", stories),
        ("smollm2-135m-shape-q8_0", smol),
    ] {
        let mut model = Arc::new(Model::open(&path, threads).expect("open model"));
        for (precision, seq) in [
            (Precision::Exact, 128usize),
            (Precision::Exact, 512),
            (Precision::Fast, 128),
            (Precision::Fast, 512),
        ] {
            Arc::get_mut(&mut model)
                .expect("no trainer holds the model")
                .set_precision(precision);
            let ids: Vec<u32> = (0..seq)
                .map(|i| 1 + (i * 7919 % (model.cfg.n_vocab - 1)) as u32)
                .collect();
            let rec = TokenRecord::new(ids, (0..seq).map(|i| i > 0).collect());
            let lora = LoraConfig {
                r: 8,
                alpha: 16.0,
                ..LoraConfig::default()
            };
            let adapter = Adapter::new(&model.cfg, lora).expect("adapter");
            let cfg = TrainConfig {
                lr: 1e-4,
                schedule: Schedule::Constant,
                total_steps: 1_000_000,
                ..TrainConfig::default()
            };
            let mut trainer = Trainer::new(model.clone(), adapter, cfg, seq).expect("trainer");
            group.throughput(Throughput::Elements(seq as u64));
            let id = BenchmarkId::new(format!("{name}/{precision}"), format!("seq{seq}"));
            group.bench_function(id, |b| b.iter(|| trainer.step(&[&rec]).expect("step")));
        }
    }
    group.finish();
}

criterion_group!(benches, bench_train_step);
criterion_main!(benches);
