//! Merging adapters into the base file and taking them out again, checked against sums
//! computed here in f64 and against the adapter applied at run time:
//! - an F32 merge's per-record eval loss equals base + adapter within 1e-5;
//! - the merged weights equal W0 + S·s·B·A (f64) and the reported re-quantization error of
//!   Q8_0/Q4_0/F16 merges is what the written tensors show;
//! - every other tensor and all metadata are copied byte for byte;
//! - unmerging an F32 or F16 merge comes back to the original within rounding, and the
//!   report says how far;
//! - a K-quant synthetic model merges with `--type same`, qwen2 (unpermuted q/k) too;
//! - the CLI prints the report and, with `--data`, both losses.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::synth;
use common::{asset, golden, scratch_dir};
use pocketlora::internals::data::read_ids_jsonl;
use pocketlora::internals::eval::evaluate_with;
use pocketlora::internals::gguf::GgufFile;
use pocketlora::internals::lora::merge::{merge_file, MergeOptions, MergeReport};
use pocketlora::internals::lora::{peft, Adapter, LoraConfig, Target};
use pocketlora::internals::model::{Model, ModelConfig};
use pocketlora::internals::quant::{dequantize_row, GgmlType};

fn values(f: &GgufFile, name: &str) -> Vec<f32> {
    let t = f.require_tensor(name).unwrap();
    let mut v = vec![0f32; t.info.n_elements() as usize];
    dequantize_row(t.info.ty, t.data, &mut v).unwrap();
    v
}

fn merge(base: &Path, adapter: &Adapter, opts: MergeOptions, out: &Path) -> MergeReport {
    let f = GgufFile::open(base).unwrap();
    merge_file(&f, adapter, &opts, None, out).unwrap()
}

/// W0 + S·s·B·A of `name`, in f64, from the base file and the adapter.
fn expected(base: &GgufFile, adapter: &Adapter, layer: usize, t: Target, s: f64) -> Vec<f64> {
    let p = adapter.layers[layer][t.index()].as_ref().unwrap();
    let w0 = values(base, &format!("blk.{layer}.{}.weight", t.gguf_tensor()));
    let mut w: Vec<f64> = w0.iter().map(|&x| x as f64).collect();
    for o in 0..p.out_dim {
        for i in 0..p.in_dim {
            let d: f64 = (0..p.r)
                .map(|k| p.b[o * p.r + k] as f64 * p.a[k * p.in_dim + i] as f64)
                .sum();
            w[o * p.in_dim + i] += s * p.scale as f64 * d;
        }
    }
    w
}

fn rel_rms(x: &[f32], reference: &[f64]) -> f64 {
    let e: f64 = x
        .iter()
        .zip(reference)
        .map(|(a, b)| (*a as f64 - b).powi(2))
        .sum();
    let n: f64 = reference.iter().map(|b| b * b).sum();
    (e / n).sqrt()
}

/// Every tensor not adapted is byte-identical, and so is all metadata.
fn assert_copied(base: &GgufFile, out: &GgufFile, report: &MergeReport) {
    assert_eq!(base.metadata(), out.metadata());
    assert_eq!(base.tensors().len(), out.tensors().len());
    let merged: Vec<&str> = report.tensors.iter().map(|t| t.name.as_str()).collect();
    for t in base.tensors() {
        let o = out.tensor_info(&t.name).unwrap();
        assert_eq!(o.dims, t.dims, "{}", t.name);
        if !merged.contains(&t.name.as_str()) {
            assert_eq!(o.ty, t.ty);
            assert!(
                base.tensor(&t.name).unwrap().data == out.tensor(&t.name).unwrap().data,
                "{} was not copied",
                t.name
            );
        }
    }
    assert_eq!(report.copied + report.tensors.len(), base.tensors().len());
}

#[test]
fn f32_merge_equals_base_plus_adapter_in_weights_and_loss() {
    let base_path = asset("stories260K-q8_0.gguf");
    let model = Model::open(&base_path, 2).unwrap();
    let adapter = peft::load(&golden("oracle/train/stories260K-q8_0/trained"), &model.cfg).unwrap();
    let dir = scratch_dir("merge-f32");
    let out = dir.join("merged.gguf");
    let opts = MergeOptions {
        out_type: Some(GgmlType::F32),
        ..MergeOptions::default()
    };
    let report = merge(&base_path, &adapter, opts, &out);
    assert_eq!(report.tensors.len(), 35);
    let (bf, of) = (
        GgufFile::open(&base_path).unwrap(),
        GgufFile::open(&out).unwrap(),
    );
    assert_copied(&bf, &of, &report);
    for (l, t) in [
        (0, Target::Q),
        (2, Target::K),
        (4, Target::Down),
        (1, Target::Gate),
    ] {
        let name = format!("blk.{l}.{}.weight", t.gguf_tensor());
        let got = values(&of, &name);
        let e = rel_rms(&got, &expected(&bf, &adapter, l, t, 1.0));
        assert!(e < 1e-6, "{name}: {e}");
        assert_eq!(of.tensor_info(&name).unwrap().ty, GgmlType::F32);
    }
    assert!(report.tensors.iter().all(|t| t.requant_rel_rms == 0.0));
    assert!(report.tensors.iter().all(|t| t.delta_rel_rms > 1e-4));

    // Per-record loss: merged model vs the base with the adapter at run time.
    let records = read_ids_jsonl(golden("oracle/eval_records.jsonl")).unwrap();
    let with = evaluate_with(&model, Some(&adapter), &records).unwrap();
    let merged = Model::open(&out, 2).unwrap();
    let m = evaluate_with(&merged, None, &records).unwrap();
    let worst = with
        .per_record
        .iter()
        .zip(&m.per_record)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    eprintln!("F32 merge: largest per-record loss difference {worst:e}");
    assert!(worst < 1e-5, "{worst}");
    let without = evaluate_with(&model, None, &records).unwrap();
    assert!(
        (without.loss - with.loss).abs() > 1e-2,
        "the adapter must matter"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn quantized_merges_report_the_error_their_tensors_show() {
    let base_path = asset("stories260K-f32.gguf");
    let model = Model::open(&base_path, 2).unwrap();
    let adapter = peft::load(&golden("oracle/train/stories260K-f32/trained"), &model.cfg).unwrap();
    let bf = GgufFile::open(&base_path).unwrap();
    let dir = scratch_dir("merge-quant");
    let records = read_ids_jsonl(golden("oracle/eval_records.jsonl")).unwrap();
    let with = evaluate_with(&model, Some(&adapter), &records).unwrap();
    for (ty, lo, hi) in [
        (GgmlType::F16, 1e-5, 1e-3),
        (GgmlType::Q8_0, 1e-3, 2e-2),
        (GgmlType::Q4_0, 2e-2, 0.3),
    ] {
        let out = dir.join(format!("{ty}.gguf"));
        let opts = MergeOptions {
            scale: 0.5,
            out_type: Some(ty),
            threads: 2,
            ..MergeOptions::default()
        };
        let report = merge(&base_path, &adapter, opts, &out);
        let of = GgufFile::open(&out).unwrap();
        assert_copied(&bf, &of, &report);
        for t in &report.tensors {
            let (l, tg) = parse(&t.name);
            let got = values(&of, &t.name);
            let e = rel_rms(&got, &expected(&bf, &adapter, l, tg, 0.5));
            if t.ty_out != ty {
                // ffn_down's rows of 172 are not whole blocks of 32: it keeps its own type.
                assert_eq!(
                    (tg, t.ty_out, ty == GgmlType::F16),
                    (Target::Down, GgmlType::F32, false)
                );
                assert!(e < 1e-6);
                continue;
            }
            assert!(
                (e - t.requant_rel_rms).abs() < 1e-3 * e,
                "{ty} {}: reported {} vs {e}",
                t.name,
                t.requant_rel_rms
            );
            assert!(e > lo && e < hi, "{ty} {}: {e}", t.name);
            assert_eq!((t.ty_in, t.ty_out), (GgmlType::F32, ty));
        }
        let merged = Model::open(&out, 2).unwrap();
        let m = evaluate_with(&merged, None, &records).unwrap();
        let half = pocketlora::internals::lora::combine(&[(&adapter, 0.5)]).unwrap();
        let w = evaluate_with(&model, Some(&half), &records).unwrap();
        eprintln!(
            "{ty} merge: worst re-quantization error {:.3e}; loss merged {:.6} vs base + 0.5·adapter {:.6} (full adapter {:.6})",
            report.max_requant_rel_rms(),
            m.loss,
            w.loss,
            with.loss
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn parse(name: &str) -> (usize, Target) {
    let rest = name.strip_prefix("blk.").unwrap();
    let (l, rest) = rest.split_once('.').unwrap();
    let stem = rest.strip_suffix(".weight").unwrap();
    let t = Target::ALL
        .into_iter()
        .find(|t| t.gguf_tensor() == stem)
        .unwrap();
    (l.parse().unwrap(), t)
}

#[test]
fn unmerging_comes_back_to_the_original_within_rounding() {
    let base_path = asset("stories260K-f32.gguf");
    let model = Model::open(&base_path, 1).unwrap();
    let adapter = peft::load(&golden("oracle/train/stories260K-f32/trained"), &model.cfg).unwrap();
    let dir = scratch_dir("unmerge");
    // An F16 base: the F32 model re-encoded by a merge at scale 0.
    let f16_base = dir.join("f16.gguf");
    let to_f16 = MergeOptions {
        scale: 0.0,
        out_type: Some(GgmlType::F16),
        ..MergeOptions::default()
    };
    merge(&base_path, &adapter, to_f16, &f16_base);
    for (base, what, bound) in [(&base_path, "F32", 1e-6), (&f16_base, "F16", 2e-3)] {
        let merged = dir.join(format!("{what}-merged.gguf"));
        merge(base, &adapter, MergeOptions::default(), &merged);
        let back = dir.join(format!("{what}-back.gguf"));
        let mf = GgufFile::open(&merged).unwrap();
        let of = GgufFile::open(base).unwrap();
        let opts = MergeOptions {
            unmerge: true,
            ..MergeOptions::default()
        };
        let report = merge_file(&mf, &adapter, &opts, Some(&of), &back).unwrap();
        // The reported difference is the one the files show.
        let bf = GgufFile::open(&back).unwrap();
        let mut worst = 0f64;
        for t in &report.tensors {
            let d = values(&bf, &t.name)
                .iter()
                .zip(values(&of, &t.name))
                .map(|(a, b)| (a - b).abs() as f64)
                .fold(0.0, f64::max);
            assert_eq!(Some(d), t.max_abs_diff_original, "{}", t.name);
            worst = worst.max(d);
        }
        eprintln!("{what}: unmerge leaves at most {worst:e} from the original");
        assert!(worst > 0.0 && worst < bound, "{what}: {worst}");
        assert_eq!(report.max_abs_diff_original(), Some(worst));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn synthetic_adapter(cfg: &ModelConfig, r: usize) -> Adapter {
    let mut a = Adapter::new(
        cfg,
        LoraConfig {
            r,
            alpha: 2.0 * r as f32,
            ..LoraConfig::default()
        },
    )
    .unwrap();
    let mut lcg = synth::Lcg::new(5);
    for p in a.pairs_mut() {
        p.b = lcg.vec(p.b.len(), 0.05);
    }
    a
}

#[test]
fn kquant_and_qwen2_bases_merge_with_their_own_types() {
    let dir = scratch_dir("merge-synth");
    for spec in [synth::llama_kquants(), synth::qwen2_biases()] {
        let path = dir.join(format!("{}.gguf", spec.name));
        std::fs::write(&path, synth::build(&spec)).unwrap();
        let bf = GgufFile::open(&path).unwrap();
        let cfg = ModelConfig::from_gguf(&bf).unwrap();
        let adapter = synthetic_adapter(&cfg, 4);
        let out = dir.join(format!("{}-merged.gguf", spec.name));
        let report = merge(&path, &adapter, MergeOptions::default(), &out);
        let of = GgufFile::open(&out).unwrap();
        assert_copied(&bf, &of, &report);
        for t in &report.tensors {
            assert_eq!(t.ty_in, t.ty_out, "{}", t.name);
            let (l, tg) = parse(&t.name);
            let e = rel_rms(&values(&of, &t.name), &expected(&bf, &adapter, l, tg, 1.0));
            assert!(
                (e - t.requant_rel_rms).abs() <= 1e-3 * e + 1e-7,
                "{} {}: reported {} vs {e}",
                t.name,
                t.ty_out,
                t.requant_rel_rms
            );
        }
        // Run-time adapter vs merged on the synthetic records.
        let rec_path = dir.join(format!("{}.jsonl", spec.name));
        std::fs::write(&rec_path, synth::records(spec.n_vocab, spec.seed)).unwrap();
        let records = read_ids_jsonl(&rec_path).unwrap();
        let base = Model::open(&path, 2).unwrap();
        let rt = evaluate_with(&base, Some(&adapter), &records).unwrap();
        let m = evaluate_with(&Model::open(&out, 2).unwrap(), None, &records).unwrap();
        eprintln!(
            "{}: {} tensors merged, worst re-quantization error {:.3e}; loss run-time {:.6}, merged {:.6}",
            spec.name,
            report.tensors.len(),
            report.max_requant_rel_rms(),
            rt.loss,
            m.loss
        );
        assert!((rt.loss - m.loss).abs() < 0.05 * rt.loss);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn merges_refuse_what_they_cannot_write_before_writing() {
    let base_path = asset("stories260K-q4_0.gguf");
    let model = Model::open(&base_path, 1).unwrap();
    let adapter = peft::load(&golden("oracle/train/stories260K-q4_0/trained"), &model.cfg).unwrap();
    let dir = scratch_dir("merge-refuse");
    let out = dir.join("x.gguf");
    let f = GgufFile::open(&base_path).unwrap();
    let e = merge_file(
        &f,
        &adapter,
        &MergeOptions {
            out_type: Some(GgmlType::Q5_1),
            ..MergeOptions::default()
        },
        None,
        &out,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("Q5_1") && e.contains("--type"), "{e}");
    assert!(!out.exists());
    // An adapter for another model.
    let other = Model::open(asset("aidreams260K-q4_0.gguf"), 1).unwrap();
    let foreign = Adapter::new(&other.cfg, LoraConfig::default()).unwrap();
    let e = merge_file(&f, &foreign, &MergeOptions::default(), None, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another base model"), "{e}");
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cli_reports_errors_and_losses() {
    let dir = scratch_dir("merge-cli");
    let out = dir.join("m.gguf");
    let o = Command::new(env!("CARGO_BIN_EXE_pocketlora"))
        .args(["merge", "--model"])
        .arg(asset("stories260K-q8_0.gguf"))
        .arg("--adapter")
        .arg(golden("oracle/train/stories260K-q8_0/trained"))
        .args(["--type", "q8_0", "--data"])
        .arg(golden("oracle/eval_records.jsonl"))
        .args(["--json", "--threads", "2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tensors"].as_array().unwrap().len(), 35);
    assert_eq!(v["tensors"][0]["type_out"], "Q8_0");
    let rt = v["eval"]["runtime_adapter"]["loss"].as_f64().unwrap();
    let mg = v["eval"]["merged"]["loss"].as_f64().unwrap();
    eprintln!(
        "CLI Q8_0 merge: run-time {rt}, merged {mg}, max re-quantization error {}",
        v["max_requant_rel_rms"]
    );
    assert!((rt - mg).abs() < 0.05 * rt, "{rt} vs {mg}");
    let text = Command::new(env!("CARGO_BIN_EXE_pocketlora"))
        .args(["merge", "--model"])
        .arg(&out)
        .arg("--adapter")
        .arg(golden("oracle/train/stories260K-q8_0/trained"))
        .args(["--unmerge", "--out"])
        .arg(dir.join("back.gguf"))
        .output()
        .unwrap();
    assert!(text.status.success());
    let s = String::from_utf8_lossy(&text.stdout);
    assert!(
        s.contains("unmerged 35 tensors") && s.contains("--original"),
        "{s}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_pocketlora"))
        .args(["merge", "--model"])
        .arg(asset("stories260K-q8_0.gguf"))
        .args(["--adapter", "/nonexistent/adapter", "--out"])
        .arg(dir.join("never.gguf"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert_eq!(String::from_utf8_lossy(&bad.stderr).lines().count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
