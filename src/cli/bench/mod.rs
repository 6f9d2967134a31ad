//! `pocketlora bench`: speed and memory of this machine on a model — the fp32 FMA peak
//! (measured in the same run), matmul kernel GFLOP/s per quant type, prompt processing,
//! a LoRA training step, generation, peak heap and peak RSS. This file sets up and measures;
//! `text` renders the report as text.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde_json::{json, Value};

use pocketlora::heap;
use pocketlora::internals::bench::{self, PeakBurst, Shape};
use pocketlora::internals::kernels::{matmul_backward_input, matmul_forward, Precision, QMatrix};
use pocketlora::internals::model::{Activations, KvCache, Model};
use pocketlora::internals::quant::{quantize, GgmlType};
use pocketlora::internals::simd::Kernels;
use pocketlora::LoraConfig;
use pocketlora::Plan;
use pocketlora::TokenRecord;
use pocketlora::{generate, GenerateParams, SamplerConfig};
use pocketlora::{AdapterInit, Length, Resume, Schedule, Session, TrainSpec};
use pocketlora::{Error, Result};

mod text;

use text::{stdout_error, write_memory_text, write_text_report, Machine};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// GGUF model to measure.
    #[arg(long, conflicts_with = "shape", required_unless_present_any = ["shape", "kernels_only"])]
    model: Option<PathBuf>,
    /// Write and measure a random-weight model of this shape: smollm2-135m, tinyllama-1.1b,
    /// qwen2.5-0.5b.
    #[arg(long, requires = "quant")]
    shape: Option<String>,
    /// Quantization of the written model's matrices: q8_0, q4_0, q4_k, f16 (K-quants fall
    /// back per tensor as llama.cpp does: Q4_K → Q5_0 on rows that are not multiples of 256).
    #[arg(long)]
    quant: Option<String>,
    /// Keep the written model at this path (reused when it exists), so peers can run on the
    /// very same file.
    #[arg(long, requires = "shape")]
    write_model: Option<PathBuf>,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 512)]
    seq_len: usize,
    /// LoRA rank (all seven linear targets of every block).
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// exact (f32 on dequantized panels) or fast (int8 activations).
    #[arg(long, default_value = "exact", value_parser = crate::cli::args::parse_precision)]
    precision: Precision,
    /// Memory budget (K/M/G suffixes) for the training measurement: the memory planner picks
    /// the fastest plan inside it (or refuses, naming the smallest that fits); without it,
    /// the fastest plan that fits in the machine's available memory.
    #[arg(long, value_parser = crate::cli::args::parse_size)]
    budget: Option<u64>,
    /// Training steps to time (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Matmul shapes (rows x cols, e.g. 5632x2048) for the kernel section; default: the
    /// model's ffn_down shape.
    #[arg(long = "kernel-shape")]
    kernel_shapes: Vec<String>,
    /// Only the FMA peak and the kernel section (no model).
    #[arg(long)]
    kernels_only: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Times of each of `passes`, run in turn round after round (after one warm-up round) for
/// at least `min_rounds` rounds and `seconds`. Interleaving lets every pass see the same
/// machine conditions, so ratios of their times hold even where the machine's speed drifts
/// over seconds (other tenants of a VM, thermal limits).
fn interleaved_times(
    min_rounds: usize,
    seconds: f64,
    passes: &mut [&mut dyn FnMut()],
) -> Vec<Vec<f64>> {
    for p in passes.iter_mut() {
        p();
    }
    let start = Instant::now();
    let mut times = vec![Vec::new(); passes.len()];
    let mut rounds = 0;
    while rounds < min_rounds || start.elapsed().as_secs_f64() < seconds {
        for (p, ts) in passes.iter_mut().zip(times.iter_mut()) {
            let t = Instant::now();
            p();
            ts.push(t.elapsed().as_secs_f64());
        }
        rounds += 1;
    }
    times
}

/// Seconds of one FMA-peak burst run between the passes of a measurement.
const BURST_SECONDS: f64 = 0.02;

/// The best (smallest) and the median of some times.
fn best_and_median(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[0], times[times.len() / 2])
}

fn parse_shape(s: &str) -> Result<(usize, usize)> {
    let bad = || Error::InvalidArgument(format!("--kernel-shape {s:?}: expected ROWSxCOLS"));
    let (r, c) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok((
        r.trim().parse().map_err(|_| bad())?,
        c.trim().parse().map_err(|_| bad())?,
    ))
}

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

/// Forward and backward matmul GFLOP/s of each quant type at `shapes`, `t` tokens, and as
/// fractions of the FMA peak measured in bursts between their passes.
fn kernel_section(
    pool: &rayon::ThreadPool,
    shapes: &[(usize, usize)],
    t: usize,
    precision: Precision,
    burst: &PeakBurst,
) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for &(rows, cols) in shapes {
        let x = random(t * cols, 2);
        let dy = random(t * rows, 3);
        let w = random(rows * cols, 1);
        for ty in [
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::F32,
        ] {
            if cols % ty.block_size() != 0 {
                continue;
            }
            let bytes = quantize(ty, &w, cols)?;
            let m = QMatrix::new(ty, rows, cols, &bytes)?.with_precision(precision);
            let mut y = vec![0f32; t * rows];
            let mut dx = vec![0f32; t * cols];
            let flops = 2.0 * (t * rows * cols) as f64;
            let mut peaks = Vec::new();
            let mut times = interleaved_times(
                6,
                1.2,
                &mut [
                    &mut || pool.install(|| matmul_forward(&mut y, &x, &m)),
                    &mut || pool.install(|| matmul_backward_input(&mut dx, &dy, &m)),
                    &mut || peaks.push(burst.on_pool(pool)),
                ],
            );
            let (tb, tf) = (times.swap_remove(1), times.swap_remove(0));
            // Each round's fractions against that round's burst (the warm-up round's burst
            // has no timed passes). Where a neighbour slows memory-bound code but not the
            // burst, which touches no memory, their median falls below the best-of ratio.
            let round_peaks = &peaks[peaks.len() - tf.len()..];
            let paired = |ts: &[f64]| {
                let fr: Vec<f64> = ts
                    .iter()
                    .zip(round_peaks)
                    .map(|(t, p)| flops / t / 1e9 / p)
                    .collect();
                best_and_median(fr).1
            };
            let (paired_f, paired_b) = (paired(&tf), paired(&tb));
            let ((fwd, fwd_median), (bwd, bwd_median)) = (best_and_median(tf), best_and_median(tb));
            let (gf, gb) = (flops / fwd / 1e9, flops / bwd / 1e9);
            // The best burst of the same rounds: the peak under the conditions the passes saw.
            let peak = peaks.iter().cloned().fold(0f64, f64::max);
            out.push(json!({
                "type": ty.name(),
                "shape": format!("{rows}x{cols}"),
                "tokens": t,
                "forward_gflops": gf,
                "backward_gflops": gb,
                "fp32_peak_gflops_alongside": peak,
                "forward_fraction_of_peak": gf / peak,
                "backward_fraction_of_peak": gb / peak,
                "backward_over_forward_time": bwd / fwd,
                "forward_gflops_median": flops / fwd_median / 1e9,
                "backward_gflops_median": flops / bwd_median / 1e9,
                "backward_over_forward_time_median": bwd_median / fwd_median,
                "forward_fraction_of_peak_paired_median": paired_f,
                "backward_fraction_of_peak_paired_median": paired_b,
            }));
        }
    }
    Ok(out)
}

pub fn run(a: BenchArgs) -> Result<()> {
    let precision = a.precision;
    if a.seq_len < 2 {
        return Err(Error::InvalidArgument(
            "--seq-len must be at least 2".into(),
        ));
    }
    let (threads, pool) = worker_pool(a.threads)?;
    let kernels = pocketlora::internals::simd::kernels();
    let progress = |msg: &str| {
        if !a.json {
            eprintln!("bench: {msg}");
        }
    };

    // The model file (written first, so that its memory does not count below).
    let (model_path, shape) = model_file(&a, &progress)?;
    let rss_reset = bench::reset_peak_rss();
    bench::reset_peak_heap();

    let mut report = json!({
        "device": device_report(kernels, threads),
        "precision": precision.name(),
        "seq_len": a.seq_len,
        "rank": a.rank,
    });

    let heap_before_model = heap::current();
    let mut model = match &model_path {
        Some(p) => Some(open_model(p, shape, threads, precision, &mut report)?),
        None => None,
    };
    let heap_model = heap::current().saturating_sub(heap_before_model);

    // Plan the training run's memory before measuring anything, so an impossible budget is
    // refused up front.
    let (planned, plan_text) = match (model.as_mut(), a.kernels_only) {
        (Some(model), false) => {
            let (run, text) = plan_training_run(&a, model, heap_model, &mut report)?;
            (Some(run), Some(text))
        }
        _ => (None, None),
    };

    progress("measuring the fp32 FMA peak");
    let (peak, peak_level) = bench::fp32_peak_gflops(threads, 1.0);
    report["fp32_peak_gflops"] = json!(peak);
    report["fp32_peak_isa"] = json!(peak_level.name());

    // Kernel section.
    let shapes = kernel_shapes(&a.kernel_shapes, model.as_deref())?;
    progress("measuring matmul kernels");
    let burst = PeakBurst::calibrated(BURST_SECONDS);
    report["kernels"] = Value::Array(kernel_section(
        &pool, &shapes, a.seq_len, precision, &burst,
    )?);
    // The section's threads stay (for the peak bursts) but their kernel buffers go: the
    // training measurement's heap is to hold what its memory plan counts.
    pool.broadcast(|_| pocketlora::internals::kernels::scratch::release());

    if let (Some(model), Some(run)) = (model.as_ref(), planned) {
        measure_model(model, run, &a, &burst, &progress, &mut report)?;
    }
    report["peak_heap_bytes"] = json!(bench::peak_heap_bytes());
    report["peak_rss_bytes"] = json!(bench::peak_rss_bytes());
    report["peak_rss_reset_after_model_write"] = json!(rss_reset);

    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{report}").map_err(stdout_error)?;
        return Ok(());
    }
    let machine = Machine {
        threads,
        kernels,
        peak_level,
    };
    write_text_report(&mut out, &report, &a, &machine)?;
    write_memory_text(&mut out, &report, rss_reset, plan_text.as_deref())
}

// ------------------------------------------------------------------------------------------
// Setup: threads, the model file, the model, the planned training run.

/// The worker count (`0` = one per core) and a pool of that many threads.
fn worker_pool(asked: usize) -> Result<(usize, rayon::ThreadPool)> {
    let threads = if asked == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        asked
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start {threads} threads: {e}")))?;
    Ok((threads, pool))
}

/// The model to measure: `--model`, or a random-weight model of `--shape` written (unless it
/// already exists) to `--write-model` or a temporary path; neither with `--kernels-only`.
fn model_file(
    a: &BenchArgs,
    progress: &dyn Fn(&str),
) -> Result<(Option<PathBuf>, Option<&'static Shape>)> {
    Ok(match (&a.model, &a.shape) {
        (Some(p), _) => (Some(p.clone()), None),
        (None, Some(name)) => {
            let shape = bench::shape(name).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "--shape {name:?}: expected one of {}",
                    bench::SHAPES.map(|s| s.name).join(", ")
                ))
            })?;
            let quant = written_quant(a.quant.as_deref())?;
            let path = a.write_model.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!(
                    "pocketlora-bench-{}-{}.gguf",
                    shape.name,
                    quant.name().to_lowercase()
                ))
            });
            if !path.exists() {
                progress(&format!(
                    "writing a random {} {} model to {}",
                    shape.name,
                    quant,
                    path.display()
                ));
                bench::write_random_model(shape, quant, &path)?;
            }
            (Some(path), Some(shape))
        }
        (None, None) => (None, None),
    })
}

/// The `--quant` of a written model (q8_0 when not given).
fn written_quant(asked: Option<&str>) -> Result<GgmlType> {
    let q = asked.unwrap_or("q8_0");
    GgmlType::from_name(q)
        .filter(|t| {
            matches!(
                t,
                GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_K | GgmlType::F16
            )
        })
        .ok_or_else(|| {
            Error::InvalidArgument(format!("--quant {q:?}: expected q8_0, q4_0, q4_k or f16"))
        })
}

/// The report's `device` object: CPU, threads, ISA level and int8 layout.
fn device_report(kernels: &Kernels, threads: usize) -> Value {
    json!({
        "cpu": bench::cpu_model(),
        "threads": threads,
        "isa_level": kernels.level.name(),
        "isa_features": kernels.level.features(),
        "int8_layout": format!("{} lanes × {}-byte groups{}", kernels.int8.nt, kernels.int8.group,
            if kernels.int8.unsigned_weights { ", u8 weights" } else { "" }),
    })
}

/// Opens the model at `path` in `precision` and records it in the report's `model` object.
fn open_model(
    path: &Path,
    shape: Option<&Shape>,
    threads: usize,
    precision: Precision,
    report: &mut Value,
) -> Result<Arc<Model>> {
    let mut m = Model::open(path, threads)?;
    m.set_precision(precision);
    let m = Arc::new(m);
    report["model"] = json!({
        "path": path.display().to_string(),
        "shape": shape.map(|s| s.name),
        "arch": format!("{:?}", m.cfg.arch),
        "n_layer": m.cfg.n_layer,
        "n_embd": m.cfg.n_embd,
        "n_vocab": m.cfg.n_vocab,
        "file_bytes": std::fs::metadata(path).map(|m| m.len()).ok(),
    });
    Ok(m)
}

/// The training run the bench measures, planned (and its session set up) before anything is
/// measured.
struct PlannedRun {
    /// The one record's tokens (T), also the prompt of the prompt-processing measurement.
    ids: Vec<u32>,
    rec: TokenRecord,
    session: Session,
    budget: Option<u64>,
    plan: Option<Plan>,
}

/// Plans the training run of one `--seq-len` record under `--budget` (else the machine's
/// available memory), records the plan in the report, and switches `model` to the plan's
/// threads. Returns the run and the plan's text.
fn plan_training_run(
    a: &BenchArgs,
    model: &mut Arc<Model>,
    heap_model: usize,
    report: &mut Value,
) -> Result<(PlannedRun, String)> {
    let t = a.seq_len;
    let cfg = &model.cfg;
    let ids: Vec<u32> = (0..t)
        .map(|i| 3 + (i as u32 * 7919) % (cfg.n_vocab as u32 - 3))
        .collect();
    let rec = TokenRecord::new(ids.clone(), (0..t).map(|i| i > 0).collect());
    let lora = LoraConfig {
        r: a.rank,
        alpha: 2.0 * a.rank as f32,
        ..LoraConfig::default()
    };
    // The memory plan: under --budget, else under what the machine has available.
    let (budget, budget_source) = match a.budget {
        Some(b) => (Some(b), "--budget"),
        None => (bench::available_memory_bytes(), "available memory"),
    };
    let spec = TrainSpec {
        adapter: AdapterInit::New(lora),
        lr: 1e-4,
        schedule: Schedule::Constant,
        length: Length::Steps(1_000_000),
        batch: 1,
        seq_len: Some(t),
        budget,
        base_name: report["model"]["path"].as_str().unwrap_or("").to_string(),
        ..TrainSpec::default()
    };
    // Everything the bench holds now besides its record: the model's metadata, the
    // report.
    let live = heap::current() as u64;
    let mut session = Session::new(model.clone(), spec)?;
    session.count_resident(live.max(heap_model as u64));
    session.add(vec![rec.clone()], false)?;
    let plan = session.plan()?.cloned();
    // The plan's threads for every measurement.
    *model = session.model().clone();
    report["budget_bytes"] = json!(budget);
    report["budget_source"] = json!(budget_source);
    report["plan"] = plan.as_ref().map_or(Value::Null, Plan::to_json);
    let plan_text = match &plan {
        Some(p) => p.to_text(),
        None => {
            "  no plan: this platform does not report available memory; plain buffers\n".to_string()
        }
    };
    let run = PlannedRun {
        ids,
        rec,
        session,
        budget,
        plan,
    };
    Ok((run, plan_text))
}

/// The kernel section's shapes: `--kernel-shape`, else the model's ffn_down shape, else two
/// fixed ones.
fn kernel_shapes(asked: &[String], model: Option<&Model>) -> Result<Vec<(usize, usize)>> {
    let mut shapes = asked
        .iter()
        .map(|s| parse_shape(s))
        .collect::<Result<Vec<_>>>()?;
    if shapes.is_empty() {
        match model {
            Some(m) => shapes.push((m.cfg.n_embd, m.cfg.n_ff)),
            None => shapes.extend([(2048, 2048), (5632, 2048)]),
        }
    }
    Ok(shapes)
}

// ------------------------------------------------------------------------------------------
// Model measurements: prompt processing, training steps, generation.

/// Measures the planned run's prompt processing, training steps and generation, and records
/// their speeds (and fractions of the FMA peak measured alongside) in the report.
fn measure_model(
    model: &Arc<Model>,
    mut run: PlannedRun,
    a: &BenchArgs,
    burst: &PeakBurst,
    progress: &dyn Fn(&str),
    report: &mut Value,
) -> Result<()> {
    let cfg = &model.cfg;
    let t = a.seq_len;
    let kept = run.plan.as_ref().map_or(0, |p| p.shape.kept);
    let flops = bench::flops(cfg, t, a.rank, kept);

    progress("measuring prompt processing");
    let (fwd, fwd_peak) = measure_prompt_processing(model, &run.ids, burst)?;
    let fwd_tps = t as f64 / fwd;

    progress("measuring training steps");
    let train = measure_training(model, &mut run.session, &run.rec, a.steps, burst)?;
    report["train_peak_heap_bytes"] = json!(train.peak_heap);
    if let (Some(p), Some(b)) = (train.peak_heap, run.budget) {
        report["train_within_budget"] = json!(p <= b);
    }
    let times = train.step_seconds;
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let best = times.iter().cloned().fold(f64::INFINITY, f64::min);
    let train_tps = t as f64 / mean;

    progress("measuring generation");
    let (gen_tps, gen_peak) = measure_generation(model, burst)?;

    report["forward_tokens_per_s"] = json!(fwd_tps);
    report["forward_gflops"] = json!(flops.forward / fwd / 1e9);
    report["forward_fraction_of_peak"] = json!(flops.forward / fwd / 1e9 / fwd_peak);
    report["train_tokens_per_s"] = json!(train_tps);
    report["train_step_seconds"] = json!({ "mean": mean, "best": best, "all": times });
    report["train_gflops"] = json!(flops.train / mean / 1e9);
    report["train_fraction_of_peak"] = json!(flops.train / mean / 1e9 / train.peak_gflops);
    report["train_loss"] = json!({ "first": train.first_loss, "last": train.last_loss });
    report["generate_tokens_per_s"] = json!(gen_tps);
    report["generate_fraction_of_peak"] =
        json!(gen_tps * 2.0 * (flops.forward / t as f64) / 1e9 / gen_peak);
    report["fp32_peak_gflops_alongside"] = json!({
        "forward": fwd_peak,
        "train": train.peak_gflops,
        "generate": gen_peak,
    });
    report["flops_per_token"] = json!({
        "forward": flops.forward / t as f64,
        "train_executed": flops.train / t as f64,
    });
    Ok(())
}

/// The best time of a forward pass over `ids` (interleaved with FMA-peak bursts on as many
/// threads as the model uses), and the best of those bursts.
fn measure_prompt_processing(
    model: &Arc<Model>,
    ids: &[u32],
    burst: &PeakBurst,
) -> Result<(f64, f64)> {
    let t = ids.len();
    let mut cache = KvCache::new(&model.cfg, t)?;
    let mut act = Activations::for_model(model, t);
    let mut err = None;
    // Bursts of the FMA peak between the passes, on as many threads as the model uses.
    let mut peaks = Vec::new();
    let times = interleaved_times(
        2,
        2.0,
        &mut [
            &mut || {
                cache.clear();
                if let Err(e) = model.forward(ids, &mut cache, &mut act) {
                    err = Some(e);
                }
            },
            &mut || peaks.push(burst.on_threads(model.threads())),
        ],
    );
    if let Some(e) = err {
        return Err(e);
    }
    drop((cache, act));
    let fwd = best_and_median(times[0].clone()).0;
    let fwd_peak = peaks.iter().cloned().fold(0f64, f64::max);
    Ok((fwd, fwd_peak))
}

/// What the training measurement saw.
struct TrainTimes {
    first_loss: f64,
    last_loss: f64,
    /// Seconds of each timed step (after the warm-up step).
    step_seconds: Vec<f64>,
    /// The best FMA-peak burst between the steps.
    peak_gflops: f64,
    /// Peak heap from the start of the run (when the counting allocator is installed).
    peak_heap: Option<u64>,
}

/// One warm-up step and `steps` timed training steps of the session on `rec`, each followed
/// by an FMA-peak burst.
fn measure_training(
    model: &Model,
    session: &mut Session,
    rec: &TokenRecord,
    steps: usize,
    burst: &PeakBurst,
) -> Result<TrainTimes> {
    bench::reset_peak_heap();
    let mut started = session.start(Resume::No)?;
    let trainer = started.run.trainer_mut();
    let first = trainer.step(&[rec])?;
    let mut times = Vec::new();
    let mut last_loss = first.loss;
    let mut train_peak_gflops = 0f64;
    for _ in 0..steps.max(1) {
        let s = Instant::now();
        last_loss = trainer.step(&[rec])?.loss;
        times.push(s.elapsed().as_secs_f64());
        train_peak_gflops = train_peak_gflops.max(burst.on_threads(model.threads()));
    }
    drop(started);
    let peak_heap = heap::installed().then(|| heap::peak() as u64);
    Ok(TrainTimes {
        first_loss: first.loss,
        last_loss,
        step_seconds: times,
        peak_gflops: train_peak_gflops,
        peak_heap,
    })
}

/// Greedy generation of up to 64 tokens: tokens per second, and the best FMA-peak burst of
/// those just before and after.
fn measure_generation(model: &Arc<Model>, burst: &PeakBurst) -> Result<(f64, f64)> {
    let n_gen = 64usize.min(model.cfg.n_ctx.saturating_sub(2)).max(1);
    let params = GenerateParams {
        max_new: n_gen,
        sampler: SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        },
        stop_ids: Vec::new(),
    };
    let gen_peak_before = burst.on_threads(model.threads());
    let s = Instant::now();
    let (gen_ids, _) = generate(model, &[1], &params, |_| true)?;
    let gen_tps = gen_ids.len() as f64 / s.elapsed().as_secs_f64();
    let gen_peak = gen_peak_before.max(burst.on_threads(model.threads()));
    Ok((gen_tps, gen_peak))
}
