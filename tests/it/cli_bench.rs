//! `pocketlora bench` end to end on the bundled model: the report's fields, its training run
//! planned under `--budget` (and kept inside it), and an impossible budget refused before
//! anything is measured. Speeds are reported, never asserted.

use crate::common;

use common::asset;
use common::cli::{run, stderr, stdout};
use serde_json::Value;

fn bench(extra: &[&str]) -> std::process::Output {
    let model = asset("aidreams260K-q8_0.gguf");
    let mut args = vec![
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--seq-len",
        "64",
        "--steps",
        "1",
        "--kernel-shape",
        "64x96",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn the_json_report_has_every_figure_and_training_stays_inside_the_budget() {
    let budget = 3u64 << 20;
    let o = bench(&["--budget", "3M", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    for key in [
        "train_tokens_per_s",
        "forward_tokens_per_s",
        "generate_tokens_per_s",
        "fp32_peak_gflops",
    ] {
        let v = r[key].as_f64().unwrap_or(0.0);
        assert!(v > 0.0 && v.is_finite(), "{key} = {}", r[key]);
    }
    assert!(r["peak_heap_bytes"].as_u64().unwrap() > 0);
    assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0);
    // Every quant type's kernels at the asked shape (96 columns: no K-quants).
    let kernels = r["kernels"].as_array().unwrap();
    let types: Vec<&str> = kernels
        .iter()
        .map(|k| k["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Q8_0", "Q4_0", "F16", "BF16", "F32"]);
    for k in kernels {
        assert_eq!(k["shape"], "64x96");
        let (f, b) = (
            k["forward_gflops"].as_f64().unwrap(),
            k["backward_gflops"].as_f64().unwrap(),
        );
        assert!(f > 0.0 && b > 0.0, "{k}");
        // Fractions are of the peak measured in bursts between the kernel's own passes.
        let peak = k["fp32_peak_gflops_alongside"].as_f64().unwrap();
        assert!(peak > 0.0 && peak.is_finite(), "{k}");
        let fraction = k["forward_fraction_of_peak"].as_f64().unwrap();
        assert!((fraction - f / peak).abs() <= 1e-9 * fraction, "{k}");
        // Each round's pass over that round's burst: no burst exceeds the best one, so the
        // median of those fractions is at least the median speed over the best burst.
        for pass in ["forward", "backward"] {
            let paired = k[format!("{pass}_fraction_of_peak_paired_median")]
                .as_f64()
                .unwrap();
            let median = k[format!("{pass}_gflops_median")].as_f64().unwrap();
            assert!(
                paired.is_finite() && paired >= median / peak * (1.0 - 1e-9),
                "{k}"
            );
        }
    }
    let alongside = &r["fp32_peak_gflops_alongside"];
    for pass in ["forward", "train", "generate"] {
        let peak = alongside[pass].as_f64().unwrap_or(0.0);
        assert!(peak > 0.0 && peak.is_finite(), "{alongside}");
    }
    let fwd_gflops = r["forward_gflops"].as_f64().unwrap();
    let fwd_fraction = r["forward_fraction_of_peak"].as_f64().unwrap();
    let fwd_peak = alongside["forward"].as_f64().unwrap();
    assert!((fwd_fraction - fwd_gflops / fwd_peak).abs() <= 1e-9 * fwd_fraction);
    // The training run was planned under the budget, and its heap stayed inside it.
    assert_eq!(r["budget_bytes"].as_u64(), Some(budget));
    assert_eq!(r["budget_source"], "--budget");
    let plan = &r["plan"];
    assert!(plan["total_bytes"].as_u64().unwrap() <= budget, "{plan}");
    assert_eq!(plan["seq_len"].as_u64(), Some(64));
    // 3 MiB does not fit the plain plan of this model (4 MiB with two threads): the
    // planner had to choose something smaller.
    assert_eq!(plan["keep_activations"], false, "{plan}");
    let plain = plan["chunk"].as_u64() == Some(64)
        && plan["loss_rows"].as_u64() == Some(256)
        && plan["threads"].as_u64() == Some(2);
    assert!(!plain, "{plan}");
    let peak = r["train_peak_heap_bytes"].as_u64().unwrap();
    assert!(
        peak <= budget,
        "training peak heap {peak} > budget {budget}"
    );
    assert_eq!(r["train_within_budget"], true);
    let loss = &r["train_loss"];
    assert!(loss["first"].as_f64().unwrap().is_finite());
}

#[test]
fn the_kernel_sections_buffers_do_not_count_against_the_training_budget() {
    // A large kernel shape grows the kernel section's per-thread buffers (dequantized
    // panels, packed tokens) to several MiB, more than the slack of a 3 MiB training plan:
    // they must be gone before the training run is measured.
    let o = bench(&["--budget", "3M", "--json", "--kernel-shape", "1024x1024"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let peak = r["train_peak_heap_bytes"].as_u64().unwrap();
    assert!(peak <= 3 << 20, "training peak heap {peak} > budget");
    assert_eq!(r["train_within_budget"], true);
}

#[test]
fn without_a_budget_the_plan_fits_the_available_memory() {
    let o = bench(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("memory plan of the training run (budget from available memory)"),
        "{out}"
    );
    assert!(out.contains("training peak heap"), "{out}");
    assert!(!out.contains("OVER the budget"), "{out}");
    // The available memory is far more than this model needs: the fastest plan, which
    // keeps every block's activations.
    assert!(
        out.contains(
            "sequence length 64, every block's activations kept (no recompute), 256 logit rows"
        ),
        "{out}"
    );
}

#[test]
fn an_impossible_budget_is_refused_before_measuring() {
    let o = bench(&["--budget", "64K"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("memory budget of 64.0 KiB is too small")
            && err.contains("smallest plan needs"),
        "{err}"
    );
    // Refused up front: no measurement began.
    assert!(!err.contains("measuring"), "{err}");
    assert!(stdout(&o).is_empty());
}
