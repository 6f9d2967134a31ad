//! Quantized matmul over W0, reported as GFLOP/s (criterion's element throughput is set to
//! the flop count, so "Gelem/s" reads as GFLOP/s): forward `X · W0ᵀ` and backward `dY · W0`,
//! in both precisions (`exact`: f32 on dequantized panels; `fast`: int8).
//!
//! Shapes (out × in) are those of SmolLM2-135M (576-wide) and TinyLlama-1.1B (2048-wide);
//! K-quants only at the 2048-wide shapes (their rows must be multiples of 256).
//! Threads: `POCKETLORA_BENCH_THREADS` (default: all cores). Tokens: 128 and 512
//! (`POCKETLORA_BENCH_TOKENS=512` for one). `POCKETLORA_DISABLE` selects the ISA.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pocketlora::internals::kernels::{matmul_backward_input, matmul_forward, Precision, QMatrix};
use pocketlora::internals::quant::{quantize, GgmlType};

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

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn bench_matmul(c: &mut Criterion) {
    let threads = env_list("POCKETLORA_BENCH_THREADS", &[0])[0];
    let tokens = env_list("POCKETLORA_BENCH_TOKENS", &[128, 512]);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let small = [(576usize, 576usize), (1536, 576)];
    let wide = [(2048usize, 2048usize), (5632, 2048)];
    let mut cases: Vec<(GgmlType, (usize, usize))> = Vec::new();
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::F16, GgmlType::F32] {
        for s in small.iter().chain(&wide) {
            cases.push((ty, *s));
        }
    }
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        for s in wide {
            cases.push((ty, s));
        }
    }
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(300));
    group.measurement_time(std::time::Duration::from_secs(1));
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a.contains('/'))
        .collect();
    for (ty, (out, inp)) in cases {
        // Quantize only for cases the command line selects (K-quant quantization is slow).
        let wanted = |kind: &str, p: Precision| {
            let id = format!("matmul/{kind}/{p}/{ty}/{out}x{inp}");
            filter.is_empty()
                || filter
                    .iter()
                    .any(|f| id.contains(f.as_str()) || regex_like(f, &id))
        };
        if ![Precision::Exact, Precision::Fast]
            .iter()
            .any(|&p| wanted("fwd", p) || wanted("bwd", p))
        {
            continue;
        }
        let w_bytes = quantize(ty, &random(out * inp, 1), inp).expect("quantize");
        for precision in [Precision::Exact, Precision::Fast] {
            let w = QMatrix::new(ty, out, inp, &w_bytes)
                .expect("matrix")
                .with_precision(precision);
            for &t in &tokens {
                let x = random(t * inp, 2);
                let mut y = vec![0f32; t * out];
                group.throughput(Throughput::Elements((2 * t * out * inp) as u64));
                let id =
                    BenchmarkId::new(format!("fwd/{precision}/{ty}/{out}x{inp}"), format!("T{t}"));
                group.bench_function(id, |b| {
                    b.iter(|| pool.install(|| matmul_forward(&mut y, &x, &w)))
                });
                let dy = random(t * out, 3);
                let mut dx = vec![0f32; t * inp];
                let id =
                    BenchmarkId::new(format!("bwd/{precision}/{ty}/{out}x{inp}"), format!("T{t}"));
                group.bench_function(id, |b| {
                    b.iter(|| pool.install(|| matmul_backward_input(&mut dx, &dy, &w)))
                });
            }
        }
    }
    group.finish();
}

/// A tiny matcher for criterion-style filters: `(a|b)` alternatives and plain text, enough to
/// skip setting up cases a filter cannot select.
fn regex_like(filter: &str, id: &str) -> bool {
    fn expand(f: &str) -> Vec<String> {
        match (f.find('('), f.find(')')) {
            (Some(a), Some(b)) if a < b => f[a + 1..b]
                .split('|')
                .flat_map(|alt| expand(&format!("{}{}{}", &f[..a], alt, &f[b + 1..])))
                .collect(),
            _ => vec![f.to_string()],
        }
    }
    expand(filter)
        .iter()
        .any(|e| id.starts_with(e.as_str()) || e.starts_with(id) || id.contains(e.as_str()))
}

criterion_group!(benches, bench_matmul);
criterion_main!(benches);
