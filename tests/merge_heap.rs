//! A merge streams: its heap stays at a few row bands per thread plus the adapter, however
//! large the model. Measured with a counting global allocator (this test binary only).
//! - `merge_streams_in_bounded_heap`: a synthetic Q4_0 llama whose adapted matrices are 90 MiB
//!   in f32 merges in under 16 MiB of heap.
//! - `tinyllama_q4_0_merge_peaks_below_256_mib` (ignored: writes a ~600 MB model to the temp
//!   directory and takes minutes): TinyLlama's shape (embedding 2048, 22 blocks, 32 heads / 4
//!   KV heads, ff 5632, vocabulary 32000) in Q4_0, an adapter of rank 16 on every target:
//!   the merge (opening the file, building the adapter, merging, writing) peaks below
//!   256 MiB of heap. Run with
//!   `cargo test --release --test merge_heap -- --ignored --nocapture`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::synth::{self, Lcg, Spec};
use pocketlora::internals::gguf::GgufFile;
use pocketlora::internals::lora::merge::{merge_file, MergeOptions};
use pocketlora::internals::lora::{Adapter, LoraConfig};
use pocketlora::internals::model::ModelConfig;
use pocketlora::internals::quant::GgmlType;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are only
// bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` was allocated by this allocator (i.e. by System) with layout `l`.
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and `new` is the caller's valid new size.
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                grew(new - l.size());
            } else {
                CURRENT.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak heap (bytes above what was in use before) while merging a rank-`r` adapter on
/// every target into `path`.
fn merge_peak(path: &Path, r: usize, threads: usize) -> (usize, f64) {
    let out = path.with_extension("merged.gguf");
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let t0 = std::time::Instant::now();
    let base = GgufFile::open(path).unwrap();
    let cfg = ModelConfig::from_gguf(&base).unwrap();
    let mut adapter = Adapter::new(
        &cfg,
        LoraConfig {
            r,
            alpha: 2.0 * r as f32,
            ..LoraConfig::default()
        },
    )
    .unwrap();
    let mut lcg = Lcg::new(3);
    for p in adapter.pairs_mut() {
        p.b = lcg.vec(p.b.len(), 0.02);
    }
    let opts = MergeOptions {
        threads,
        ..MergeOptions::default()
    };
    let report = merge_file(&base, &adapter, &opts, None, &out).unwrap();
    drop((base, adapter));
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(report.tensors.len(), 7 * cfg.n_layer);
    let written = std::fs::metadata(&out).unwrap().len();
    assert_eq!(written, std::fs::metadata(path).unwrap().len());
    eprintln!(
        "{}: merged {} tensors in {secs:.1} s on {threads} threads, peak heap {:.1} MiB, worst re-quantization error {:.3e}",
        path.display(),
        report.tensors.len(),
        peak as f64 / (1 << 20) as f64,
        report.max_requant_rel_rms()
    );
    let _ = std::fs::remove_file(&out);
    (peak, secs)
}

fn q4_0_llama(
    name: &'static str,
    vocab: usize,
    embd: usize,
    layers: usize,
    heads: (usize, usize),
    ff: usize,
) -> Spec {
    Spec {
        name,
        arch: "llama",
        n_vocab: vocab,
        n_embd: embd,
        n_layer: layers,
        n_head: heads.0,
        n_head_kv: heads.1,
        n_ff: ff,
        n_ctx: 2048,
        tied: false,
        qkv_bias: false,
        rope_base: 10000.0,
        embd_ty: GgmlType::Q4_0,
        output_ty: GgmlType::Q4_0,
        matrix_types: [GgmlType::Q4_0; 7],
        rope_linear: None,
        rope_freqs: None,
        features: common::synth::Features::NONE,
        seed: 7,
    }
}

#[test]
fn merge_streams_in_bounded_heap() {
    let dir = common::scratch_dir("merge-heap");
    let spec = q4_0_llama("heap-small", 2048, 1024, 2, (16, 4), 2816);
    let path = dir.join("small.gguf");
    std::fs::write(&path, synth::build(&spec)).unwrap();
    // Adapted matrices in f32: 2 × (2·1024² + 2·256·1024 + 3·2816·1024) × 4 bytes = 90 MiB.
    let (peak, _) = merge_peak(&path, 8, 2);
    assert!(peak < 16 << 20, "peak heap {peak} bytes");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore]
fn tinyllama_q4_0_merge_peaks_below_256_mib() {
    let spec = q4_0_llama("tinyllama-shaped", 32000, 2048, 22, (32, 4), 5632);
    let path = std::env::temp_dir().join("pocketlora-tinyllama-shaped-q4_0.gguf");
    if !path.exists() {
        let bytes = synth::build(&spec);
        std::fs::write(&path, bytes).unwrap();
    }
    let (peak, _) = merge_peak(&path, 16, 2);
    assert!(peak < 256 << 20, "peak heap {peak} bytes");
}
