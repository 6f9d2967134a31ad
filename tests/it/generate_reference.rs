//! Greedy generation against reference ids: the bundled models' sequences from
//! shared/models/README.md (llama.cpp, llama2.c's run.c and Hugging Face agree on them), and
//! Hugging Face's greedy continuations of the synthetic models (oracle `generate`).

use crate::common;

use common::synth;
use common::{asset, golden, scratch_dir};
use pocketlora::internals::infer::{generate, GenerateParams, SamplerConfig, StopReason};
use pocketlora::internals::model::Model;

const STORIES_F32: &str = "1 461 461 401 401 401 461 378 455 473 456 435 299 362 409 283 264 283 452 288 13 431 431 431 431 431 431 431 431 431 431 431 431 431 293 430 417 363 416 315 342";
const AIDREAMS_F32: &str = "1 319 459 355 260 275 429 339 315 374 327 446 262 421 392 275 280 269 440 270 283 446 299 303 266 358 430 312 379 441 260 446 262 421 392 275 280 269 440 270 283 446 299 303 384 467 407 360 266 291 443 435 295 448 429 465 265 434 317 431 434";

fn ids(s: &str) -> Vec<u32> {
    s.split_whitespace()
        .map(|x| x.parse().expect("id"))
        .collect()
}

fn greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let params = GenerateParams {
        max_new: n,
        sampler: SamplerConfig::greedy(),
        stop_ids: vec![],
    };
    let (new, stop) = generate(model, prompt, &params, |_| true).expect("generate");
    assert_eq!(stop, StopReason::Length);
    prompt.iter().copied().chain(new).collect()
}

#[test]
fn bundled_f32_models_reproduce_the_reference_ids_on_one_and_two_threads() {
    for threads in [1, 2] {
        let m = Model::open(asset("stories260K-f32.gguf"), threads).unwrap();
        assert_eq!(
            greedy(&m, &[1], 40),
            ids(STORIES_F32),
            "stories260K, {threads} threads"
        );
        let m = Model::open(asset("aidreams260K-f32.gguf"), threads).unwrap();
        assert_eq!(
            greedy(&m, &[1], 60),
            ids(AIDREAMS_F32),
            "aidreams260K, {threads} threads"
        );
    }
}

#[test]
fn aidreams_q8_0_keeps_the_first_30_reference_ids() {
    let m = Model::open(asset("aidreams260K-q8_0.gguf"), 2).unwrap();
    assert_eq!(greedy(&m, &[1], 29), ids(AIDREAMS_F32)[..30].to_vec());
}

#[test]
fn synthetic_models_match_hugging_face_greedy_continuations() {
    let dir = scratch_dir("synth-generate");
    for spec in [
        synth::llama_untied(),
        synth::qwen2_biases(),
        synth::llama_kquants(),
        synth::gemma3(),
        synth::qwen3(),
        synth::smollm3(),
        synth::llama3(),
        synth::phi3(),
        synth::lfm2(),
    ] {
        let path = dir.join(format!("{}.gguf", spec.name));
        std::fs::write(&path, synth::build(&spec)).unwrap();
        let text =
            std::fs::read_to_string(golden(&format!("oracle/gen_{}.json", spec.name))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let want: Vec<u32> = v["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        // Equal up to the first step where the reference's top-2 logit margin is below
        // 1e-4 (a tie within rounding), which must come after at least 20 tokens; the
        // older goldens carry no margins and are compared in full.
        let margins: Vec<f64> = v["margins"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_f64().unwrap()).collect())
            .unwrap_or_default();
        let n = margins
            .iter()
            .position(|&m| m < 1e-4)
            .unwrap_or(want.len() - 3);
        assert!(
            n >= 20.min(want.len() - 3),
            "{}: tie at step {n}",
            spec.name
        );
        let m = Model::open(&path, 2).unwrap();
        let got = greedy(&m, &want[..3], want.len() - 3);
        assert_eq!(got[..3 + n], want[..3 + n], "{}", spec.name);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn generation_stops_at_end_of_generation_ids_and_at_the_context() {
    let m = Model::open(asset("aidreams260K-f32.gguf"), 1).unwrap();
    let reference = ids(AIDREAMS_F32);
    // Declare the 6th generated token an end-of-generation id: output stops right after it.
    let params = GenerateParams {
        max_new: 60,
        sampler: SamplerConfig::greedy(),
        stop_ids: vec![reference[6]],
    };
    let (new, stop) = generate(&m, &[1], &params, |_| true).unwrap();
    assert_eq!(stop, StopReason::EndOfGeneration);
    assert_eq!(new, reference[1..7].to_vec());
    // The callback can stop it.
    let mut seen = 0;
    let (new, stop) = generate(&m, &[1], &params, |_| {
        seen += 1;
        seen < 3
    })
    .unwrap();
    assert_eq!((new.len(), stop), (3, StopReason::Cancelled));
    // aidreams260K's context is 128 tokens: 28 generated tokens fill it, and the logits of the
    // last position still give a 29th (predicted from 128 tokens, never fed back).
    let params = GenerateParams {
        max_new: 500,
        sampler: SamplerConfig::greedy(),
        stop_ids: vec![],
    };
    let (new, stop) = generate(&m, &[1; 100], &params, |_| true).unwrap();
    assert_eq!((new.len(), stop), (29, StopReason::ContextFull));
}

#[test]
fn seeded_sampling_is_reproducible_and_seeds_differ() {
    let m = Model::open(asset("aidreams260K-q8_0.gguf"), 2).unwrap();
    let run = |seed| {
        let sampler = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
        };
        let params = GenerateParams {
            max_new: 30,
            sampler,
            stop_ids: vec![],
        };
        generate(&m, &[1], &params, |_| true).unwrap().0
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn bad_prompts_are_errors() {
    let m = Model::open(asset("stories260K-q4_0.gguf"), 1).unwrap();
    let params = GenerateParams {
        max_new: 4,
        sampler: SamplerConfig::greedy(),
        stop_ids: vec![],
    };
    let e = generate(&m, &[1, 512], &params, |_| true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("512") && e.contains("vocabulary"), "{e}");
    assert!(generate(&m, &[], &params, |_| true).is_err());
    let e = generate(&m, &vec![1; 600], &params, |_| true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("context"), "{e}");
    let bad = GenerateParams {
        sampler: SamplerConfig {
            top_p: 1.5,
            ..SamplerConfig::default()
        },
        ..params
    };
    assert!(generate(&m, &[1], &bad, |_| true)
        .unwrap_err()
        .to_string()
        .contains("top-p"));
}

/// Generation steps of one or two tokens run in a spinning team of the pool's workers
/// (kernels::team) instead of rayon: their logits must be bit-for-bit those of one thread,
/// for every weight type and both precisions, at every step.
#[test]
fn generation_steps_give_the_same_logits_on_one_two_and_three_threads() {
    use pocketlora::internals::kernels::Precision;
    use pocketlora::internals::model::{Activations, KvCache};
    let steps: &[&[u32]] = &[&[1], &[319, 459], &[355], &[260], &[275, 429], &[339]];
    for name in [
        "aidreams260K-f32.gguf",
        "aidreams260K-q8_0.gguf",
        "aidreams260K-q4_0.gguf",
    ] {
        for precision in [Precision::Exact, Precision::Fast] {
            let mut runs: Vec<Vec<f32>> = Vec::new();
            for threads in [1, 2, 3] {
                let mut m = Model::open(asset(name), threads).unwrap();
                m.set_precision(precision);
                let mut cache = KvCache::new(&m.cfg, 64).unwrap();
                let mut act = Activations::new(&m.cfg, 4, 0);
                let mut all = Vec::new();
                for s in steps {
                    m.forward(s, &mut cache, &mut act).unwrap();
                    let mut logits = vec![0f32; s.len() * m.cfg.n_vocab];
                    m.logits(act.hidden(), &mut logits);
                    all.extend(logits);
                }
                runs.push(all);
            }
            for (i, r) in runs.iter().enumerate().skip(1) {
                let same = r
                    .iter()
                    .zip(&runs[0])
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{name} {precision:?}: {} threads differ from one",
                    i + 1
                );
            }
        }
    }
}

/// The sliding-window KV cache keeps only what each local layer's window still sees (its
/// rows move to the front when full). A 600-token sequence on the synthetic gemma3 (window
/// 8; the cache's local layers hold 8 − 1 + 512 rows, so they compact from position 519
/// on), and on the synthetic lfm2 (its conv layers' state: 3 taps, compacting from 514):
/// every position's logits from a prompt read in chunks of 512 and then one token at a
/// time must give the cross-entropy the uncached training pass (window starts over the
/// whole sequence) gives the same position, before and after the compaction.
#[test]
fn sliding_window_cache_matches_the_uncached_training_pass() {
    for spec in [synth::gemma3(), synth::lfm2()] {
        window_cache_matches(&spec);
    }
}

fn window_cache_matches(spec: &synth::Spec) {
    use pocketlora::internals::kernels::loss::cross_entropy;
    use pocketlora::internals::lora::{Adapter, LoraConfig};
    use pocketlora::internals::model::backward::{forward_backward, TrainWorkspace};
    use pocketlora::internals::model::{Activations, KvCache};

    let model = Model::from_file(
        std::sync::Arc::new(
            pocketlora::internals::gguf::GgufFile::from_bytes(synth::build(spec)).unwrap(),
        ),
        2,
    )
    .unwrap();
    let (t, v) = (600usize, spec.n_vocab);
    let mut r = synth::Lcg::new(3);
    let ids: Vec<u32> = (0..t)
        .map(|_| 3 + ((r.next() + 1.0) * 0.5 * (v - 4) as f32) as u32)
        .collect();
    // Cached: 512 tokens at once, then one at a time; logits at every position.
    let mut cache = KvCache::new(&model.cfg, t).unwrap();
    let mut act = Activations::for_model(&model, 512);
    let mut logits = vec![0f32; v];
    let mut cached_ce = vec![0f64; t];
    model.forward(&ids[..512], &mut cache, &mut act).unwrap();
    let c = model.cfg.n_embd;
    for p in 0..511 {
        model.logits(&act.hidden()[p * c..(p + 1) * c], &mut logits);
        cached_ce[p] = cross_entropy(&logits, ids[p + 1] as usize);
    }
    for p in 511..t - 1 {
        if p > 511 {
            model.forward(&ids[p..p + 1], &mut cache, &mut act).unwrap();
        }
        let h = act.hidden();
        model.logits(&h[h.len() - c..], &mut logits);
        cached_ce[p] = cross_entropy(&logits, ids[p + 1] as usize);
    }
    // Uncached: the training pass over all 600 tokens, one target position at a time.
    let adapter: Adapter = Adapter::new(&model.cfg, LoraConfig::default()).unwrap();
    let mut grads = adapter.zeros_like();
    let mut ws = TrainWorkspace::new(&model, &adapter, t);
    for p in [
        0usize, 7, 300, 510, 511, 513, 514, 517, 518, 519, 520, 530, 598,
    ] {
        let mut targets = vec![false; t];
        targets[p + 1] = true;
        let ce = forward_backward(
            &model, &adapter, &mut grads, &ids, &targets, 1.0, 0, &mut ws,
        )
        .unwrap();
        assert!(
            (ce - cached_ce[p]).abs() <= 1e-4 * ce.abs().max(1.0),
            "{} position {p}: cached {} vs uncached {ce}",
            spec.name,
            cached_ce[p]
        );
    }
}
