//! Forward matmul `Y = X · W0ᵀ` over quantized weights, reported as GFLOP/s (criterion's
//! element throughput is set to the flop count, so "Gelem/s" reads as GFLOP/s).
//!
//! Shapes (out × in) are those of SmolLM2-135M (576-wide) and TinyLlama-1.1B (2048-wide);
//! K-quants only at the 2048-wide shapes (their rows must be multiples of 256).
//! Threads: `POCKETLORA_BENCH_THREADS` (default: all cores).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pocketlora::kernels::{matmul_forward, QMatrix};
use pocketlora::quant::{quantize, GgmlType};

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

fn bench_matmul(c: &mut Criterion) {
    let threads = std::env::var("POCKETLORA_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let small = [(576usize, 576usize), (1536, 576)];
    let wide = [(2048usize, 2048usize), (5632, 2048)];
    let mut cases: Vec<(GgmlType, (usize, usize))> = Vec::new();
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0] {
        for s in small.iter().chain(&wide) {
            cases.push((ty, *s));
        }
    }
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        for s in wide {
            cases.push((ty, s));
        }
    }
    let mut group = c.benchmark_group("matmul_forward");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(500));
    group.measurement_time(std::time::Duration::from_secs(2));
    for (ty, (out, inp)) in cases {
        let w_bytes = quantize(ty, &random(out * inp, 1), inp).expect("quantize");
        let w = QMatrix::new(ty, out, inp, &w_bytes).expect("matrix");
        for t in [128usize, 512] {
            let x = random(t * inp, 2);
            let mut y = vec![0f32; t * out];
            group.throughput(Throughput::Elements((2 * t * out * inp) as u64));
            let id = BenchmarkId::new(format!("{ty}/{out}x{inp}"), format!("T{t}"));
            group.bench_function(id, |b| {
                b.iter(|| pool.install(|| matmul_forward(&mut y, &x, &w)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_matmul);
criterion_main!(benches);
