//! The text report of `pocketlora bench` (without `--json`): the device, kernel, speed and
//! memory lines, read from the JSON report.

use std::io::Write;

use serde_json::Value;

use super::BenchArgs;
use pocketlora::human_bytes as human;
use pocketlora::internals::simd::{Kernels, Level};
use pocketlora::{Error, Result};

/// What the text report says of the machine besides the JSON report.
pub(super) struct Machine {
    pub(super) threads: usize,
    pub(super) kernels: &'static Kernels,
    /// The ISA level the FMA peak was measured with.
    pub(super) peak_level: Level,
}

pub(super) fn stdout_error(e: std::io::Error) -> Error {
    Error::io("<stdout>", e)
}

/// A number with one decimal, or `-`.
fn one_decimal(v: &Value) -> String {
    v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"))
}

/// A fraction as a whole percentage, or `-`.
fn percent(v: &Value) -> String {
    v.as_f64()
        .map_or("-".to_string(), |x| format!("{:.0}%", 100.0 * x))
}

/// Bytes in MiB with one decimal, or `-`.
fn mib(v: &Value) -> String {
    v.as_u64().map_or("-".to_string(), |b| {
        format!("{:.1} MiB", b as f64 / 1048576.0)
    })
}

/// The device, model, kernel and speed lines of the text report.
pub(super) fn write_text_report(
    out: &mut impl Write,
    report: &Value,
    a: &BenchArgs,
    machine: &Machine,
) -> Result<()> {
    let (f, pct) = (one_decimal, percent);
    let io = stdout_error;
    let kernels = machine.kernels;
    let d = &report["device"];
    writeln!(
        out,
        "device: {} — {} threads, ISA {} ({}); fp32 FMA peak {} GFLOP/s ({})",
        d["cpu"].as_str().unwrap_or("?"),
        machine.threads,
        kernels.level.name(),
        kernels.level.features().join("+"),
        f(&report["fp32_peak_gflops"]),
        machine.peak_level.name()
    )
    .map_err(io)?;
    writeln!(out, "precision: {}", a.precision.name()).map_err(io)?;
    if let Some(m) = report.get("model") {
        writeln!(
            out,
            "model: {} ({})",
            m["path"].as_str().unwrap_or("?"),
            pocketlora::human_bytes(m["file_bytes"].as_u64().unwrap_or(0))
        )
        .map_err(io)?;
    }
    if let Some(ks) = report["kernels"].as_array() {
        for k in ks {
            writeln!(
                out,
                "kernel {:>5} {:>10} T={}: forward {:>6} GFLOP/s ({}), backward {:>6} GFLOP/s ({}) of {} measured alongside, backward/forward time {:.2} (medians {} / {} GFLOP/s, {:.2}; of each round's burst {} / {})",
                k["type"].as_str().unwrap_or("?"),
                k["shape"].as_str().unwrap_or("?"),
                k["tokens"],
                f(&k["forward_gflops"]),
                pct(&k["forward_fraction_of_peak"]),
                f(&k["backward_gflops"]),
                pct(&k["backward_fraction_of_peak"]),
                f(&k["fp32_peak_gflops_alongside"]),
                k["backward_over_forward_time"].as_f64().unwrap_or(0.0),
                f(&k["forward_gflops_median"]),
                f(&k["backward_gflops_median"]),
                k["backward_over_forward_time_median"].as_f64().unwrap_or(0.0),
                pct(&k["forward_fraction_of_peak_paired_median"]),
                pct(&k["backward_fraction_of_peak_paired_median"])
            )
            .map_err(io)?;
        }
    }
    if report.get("train_tokens_per_s").is_some() {
        writeln!(
            out,
            "forward (prompt processing): {} tokens/s ({} GFLOP/s, {} of {} measured alongside)",
            f(&report["forward_tokens_per_s"]),
            f(&report["forward_gflops"]),
            pct(&report["forward_fraction_of_peak"]),
            f(&report["fp32_peak_gflops_alongside"]["forward"])
        )
        .map_err(io)?;
        writeln!(
            out,
            "training (forward + backward + AdamW, LoRA r {} all linear, seq {}): {} tokens/s ({} GFLOP/s executed, {} of {} measured alongside)",
            a.rank,
            a.seq_len,
            f(&report["train_tokens_per_s"]),
            f(&report["train_gflops"]),
            pct(&report["train_fraction_of_peak"]),
            f(&report["fp32_peak_gflops_alongside"]["train"])
        )
        .map_err(io)?;
        writeln!(
            out,
            "generation: {} tokens/s ({} of {} measured alongside)",
            f(&report["generate_tokens_per_s"]),
            pct(&report["generate_fraction_of_peak"]),
            f(&report["fp32_peak_gflops_alongside"]["generate"])
        )
        .map_err(io)?;
    }
    Ok(())
}

/// The memory lines of the text report: peaks, and the training run's plan and peak heap.
pub(super) fn write_memory_text(
    out: &mut impl Write,
    report: &Value,
    rss_reset: bool,
    plan_text: Option<&str>,
) -> Result<()> {
    let io = stdout_error;
    writeln!(
        out,
        "memory: peak heap {}, peak RSS {}{}",
        mib(&report["peak_heap_bytes"]),
        mib(&report["peak_rss_bytes"]),
        if rss_reset {
            ""
        } else {
            " (includes writing the model)"
        }
    )
    .map_err(io)?;
    if let Some(text) = plan_text {
        writeln!(
            out,
            "memory plan of the training run (budget from {}):\n{}",
            report["budget_source"].as_str().unwrap_or("?"),
            text.trim_end()
        )
        .map_err(io)?;
        if let Some(p) = report["train_peak_heap_bytes"].as_u64() {
            writeln!(
                out,
                "training peak heap {}{}",
                human(p),
                match report["train_within_budget"].as_bool() {
                    Some(true) => " (within the budget)",
                    Some(false) => " (OVER the budget: a planning bug)",
                    None => "",
                }
            )
            .map_err(io)?;
        }
    }
    Ok(())
}
