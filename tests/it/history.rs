//! The training history (`OUT/history.jsonl`, `OUT/loss.svg`): one line per optimizer step
//! with its fields and the validation loss where validation ran; a run interrupted and
//! resumed records each step once, the same steps as a run that never was; the picture
//! is SVG that renders (through `rsvg-convert`, which must be installed: Debian package
//! `librsvg2-bin`); the command line shows a loss sparkline, except with `--json`.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{asset, scratch_dir};
use pocketlora::history::{self, Record};
use pocketlora::internals::data::TokenRecord;
use pocketlora::internals::lora::{Adapter, LoraConfig};
use pocketlora::internals::model::Model;
use pocketlora::internals::train::run::{Run, RunOptions};
use pocketlora::internals::train::{Schedule, TrainConfig};

const MODEL: &str = "aidreams260K-q8_0.gguf";

/// `n` synthetic records of `len` tokens, every token after the first a target.
fn records(model: &Model, n: usize, len: usize, salt: u32) -> Vec<TokenRecord> {
    let v = model.cfg.n_vocab as u32;
    (0..n as u32)
        .map(|i| {
            TokenRecord::new(
                (0..len as u32)
                    .map(|j| (1 + salt + i * 7 + j * 13) % v)
                    .collect(),
                (0..len).map(|j| j > 0).collect(),
            )
        })
        .collect()
}

fn new_run(model: &Arc<Model>, out: &Path, total_steps: usize, save_every: usize) -> Run {
    let adapter = Adapter::new(
        &model.cfg,
        LoraConfig {
            r: 4,
            alpha: 8.0,
            ..LoraConfig::default()
        },
    )
    .unwrap();
    let cfg = TrainConfig {
        lr: 1e-2,
        schedule: Schedule::Cosine,
        total_steps,
        ..TrainConfig::default()
    };
    let opts = RunOptions {
        batch: 2,
        grad_accum: 1,
        shuffle: true,
        seed: 7,
        eval_every: 2,
        patience: None,
        save_every,
        out: Some(out.to_path_buf()),
        config: serde_json::Value::Null,
        base_name: MODEL.into(),
        shape: None,
    };
    let train = records(model, 6, 24, 0);
    let valid = records(model, 2, 24, 5);
    Run::new(model.clone(), adapter, cfg, train, valid, opts).unwrap()
}

fn model() -> Arc<Model> {
    Arc::new(Model::open(asset(MODEL), 2).unwrap())
}

fn lines(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join(history::FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// What a resumed run must reproduce of each step (not its speed or heap).
fn trajectory(out: &Path) -> Vec<(usize, u64, u64, u32, u64, Option<u64>)> {
    history::read(&out.join(history::FILE))
        .unwrap()
        .iter()
        .map(|r: &Record| {
            (
                r.step,
                r.epoch,
                r.loss.to_bits(),
                r.lr.to_bits(),
                r.grad_norm.to_bits(),
                r.valid_loss.map(f64::to_bits),
            )
        })
        .collect()
}

#[test]
fn every_step_has_one_line_with_its_fields_and_validation_where_it_ran() {
    let dir = scratch_dir("history-lines");
    let model = model();
    let mut run = new_run(&model, &dir, 7, 3);
    let summary = run.run(|_| true).unwrap();
    assert_eq!(summary.steps, 7);
    let lines = lines(&dir);
    assert_eq!(lines.len(), 7, "{lines:?}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["step"], i + 1, "{l}");
        for k in ["epoch", "loss", "lr", "grad_norm", "tokens_per_s"] {
            assert!(l[k].is_number(), "line {} lacks {k}: {l}", i + 1);
        }
        // This test binary does not count its heap: the field is there, as null.
        assert!(l.get("heap_bytes").is_some_and(|h| h.is_null()), "{l}");
        // Validation every 2 steps and at the end (step 7, added to its line afterwards).
        let validated = (i + 1) % 2 == 0 || i + 1 == 7;
        assert_eq!(l["valid_loss"].is_number(), validated, "{l}");
    }
    // The end-of-run validation's loss is that of the final adapter.
    assert_eq!(
        lines[6]["valid_loss"].as_f64(),
        Some(run.validate().unwrap())
    );
    assert!(lines.iter().all(|l| l["loss"].as_f64().unwrap() > 0.0));
    let svg = std::fs::read_to_string(dir.join(history::SVG)).unwrap();
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    for text in [
        ">train loss<",
        ">validation loss<",
        ">step<",
        ">loss<",
        "7 steps",
    ] {
        assert!(svg.contains(text), "the picture lacks {text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_resumed_run_records_each_step_once_like_an_uninterrupted_one() {
    let dir = scratch_dir("history-resume");
    let model = model();
    let (whole, parts) = (dir.join("whole"), dir.join("parts"));
    new_run(&model, &whole, 8, 3).run(|_| true).unwrap();

    // Killed after step 5 (the newest checkpoint is step 3), midway through writing a line.
    let mut first = new_run(&model, &parts, 8, 3);
    first.run_until(5, |_| true).unwrap();
    drop(first);
    assert_eq!(lines(&parts).len(), 5);
    let mut torn = std::fs::read(parts.join(history::FILE)).unwrap();
    torn.extend_from_slice(b"{\"step\":6,\"epoch\":2,\"lo");
    std::fs::write(parts.join(history::FILE), torn).unwrap();

    let mut second = new_run(&model, &parts, 8, 3);
    assert_eq!(second.resume().unwrap(), Some(3));
    second.run(|_| true).unwrap();
    let steps: Vec<u64> = lines(&parts)
        .iter()
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=8).collect::<Vec<u64>>());
    // Resume is exact, so the redone steps are the uninterrupted run's, bit for bit.
    assert_eq!(trajectory(&parts), trajectory(&whole));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_picture_is_svg_that_renders_to_a_png() {
    let dir = scratch_dir("history-svg");
    let model = model();
    new_run(&model, &dir, 12, 0).run(|_| true).unwrap();
    let svg = dir.join(history::SVG);
    let png = dir.join("loss.png");
    let out = Command::new("rsvg-convert")
        .arg("--format=png")
        .arg("--output")
        .arg(&png)
        .arg(&svg)
        .output()
        .unwrap_or_else(|e| {
            panic!("rsvg-convert could not be run ({e}): install it (Debian: apt-get install librsvg2-bin)")
        });
    assert!(
        out.status.success(),
        "rsvg-convert failed on {}: {}",
        svg.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // IHDR: width and height as drawn; a picture with text and curves, not a blank.
    let dim = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!((&bytes[12..16], dim(16), dim(20)), (&b"IHDR"[..], 720, 400));
    assert!(bytes.len() > 8000, "PNG of only {} bytes", bytes.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_command_line_shows_a_sparkline_but_not_in_json_mode() {
    let dir = scratch_dir("history-cli");
    let model = asset(MODEL);
    let data = asset("demo/facts.jsonl");
    let train = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "12",
            "--batch",
            "3",
            "--rank",
            "4",
            "--lr",
            "1e-2",
            "--threads",
            "2",
        ];
        args.extend_from_slice(extra);
        let o = common::cli::run(&args);
        assert!(o.status.success(), "{}", common::cli::stderr(&o));
        common::cli::stderr(&o)
    };
    let human = dir.join("human");
    let err = train(&human, &[]);
    let line = err
        .lines()
        .find(|l| l.starts_with("loss "))
        .unwrap_or_else(|| panic!("no sparkline in {err:?}"));
    let spark: String = line.chars().filter(|c| ('▁'..='█').contains(c)).collect();
    assert_eq!(spark.chars().count(), 12, "{line}");
    assert!(line.contains("loss.svg"), "{line}");
    // The binary counts its heap, so the history has it.
    assert!(lines(&human)
        .iter()
        .all(|l| l["heap_bytes"].as_u64().is_some_and(|b| b > 0)));
    let json = dir.join("json");
    let err = train(&json, &["--json"]);
    assert!(!err.contains('▁') && !err.contains('█'), "{err}");
    assert_eq!(lines(&json).len(), 12);
    std::fs::remove_dir_all(&dir).unwrap();
}
