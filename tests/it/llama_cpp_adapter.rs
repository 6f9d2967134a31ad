//! Our llama.cpp GGUF adapters against llama.cpp itself (references made once by
//! tests/golden/llama_cpp/make_goldens.sh; see the README there):
//! - for plain LoRA adapters, tensor for tensor what `convert_lora_to_gguf.py` writes for the
//!   same PEFT adapter: metadata, names, shapes, types and bytes (q/k `lora_b` permuted);
//! - for an rsLoRA adapter with patterns, α·√r as `adapter.lora.alpha` and B scaled by
//!   exactly the ratio llama.cpp's α/r misses;
//! - `llama_adapter_lora_init` accepted every exported file, and llama.cpp's logits with it
//!   (one adapter F32 or F16, alpha/rank patterns, rsLoRA, two adapters at scales 1 and 0.5)
//!   equal ours with the PEFT adapters they came from.

use crate::common;

use std::collections::BTreeMap;

use common::synth::fnv1a64;
use common::{asset, golden};
use pocketlora::internals::gguf::{GgufFile, Value};
use pocketlora::internals::lora::{combine, gguf_adapter, peft, Adapter, Target};
use pocketlora::internals::model::{Activations, KvCache, Model};
use pocketlora::internals::quant::{dequantize_row, GgmlType};

fn export(model: &Model, arch: &str, src: &str, name: &str, dtype: GgmlType) -> GgufFile {
    let a = peft::load(&golden(src), &model.cfg).unwrap();
    let (w, _) = gguf_adapter::to_writer(&a, &model.cfg, arch, name, dtype).unwrap();
    GgufFile::from_bytes(w.to_bytes()).unwrap()
}

fn metadata(f: &GgufFile) -> BTreeMap<String, Value> {
    f.metadata().iter().cloned().collect()
}

fn values(f: &GgufFile, name: &str) -> Vec<f32> {
    let t = f.require_tensor(name).unwrap();
    let mut v = vec![0f32; t.info.n_elements() as usize];
    dequantize_row(t.info.ty, t.data, &mut v).unwrap();
    v
}

/// Same metadata and, tensor for tensor, the same dims, type and bytes.
fn assert_identical(ours: &GgufFile, theirs: &GgufFile, what: &str) {
    assert_eq!(metadata(ours), metadata(theirs), "{what}: metadata");
    assert_eq!(ours.tensors().len(), theirs.tensors().len(), "{what}");
    for t in theirs.tensors() {
        let o = ours
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("{what}: we lack {}", t.name));
        assert_eq!(
            (&o.info.dims, o.info.ty),
            (&t.dims, t.ty),
            "{what}: {}",
            t.name
        );
        assert!(
            o.data == theirs.tensor(&t.name).unwrap().data,
            "{what}: {} bytes differ",
            t.name
        );
    }
}

#[test]
fn plain_adapters_match_the_converter_tensor_for_tensor() {
    let model = Model::open(asset("stories260K-f32.gguf"), 1).unwrap();
    for (src, reference) in [
        (
            "oracle/train/stories260K-f32/trained",
            "converter_stories260K-f32_trained.gguf",
        ),
        (
            "oracle/peft_patterns/plain-subset",
            "converter_plain-subset.gguf",
        ),
    ] {
        let theirs = GgufFile::open(golden(&format!("llama_cpp/{reference}"))).unwrap();
        let name = theirs.get_str("general.name").unwrap().to_string();
        let ours = export(&model, "llama", src, &name, GgmlType::F32);
        assert_identical(&ours, &theirs, reference);
    }
}

#[test]
fn rslora_writes_alpha_times_root_r_and_folds_what_llama_cpp_would_miss() {
    let model = Model::open(asset("aidreams260K-f32.gguf"), 1).unwrap();
    let src = "oracle/peft_patterns/rslora-subset";
    let theirs = GgufFile::open(golden("llama_cpp/converter_rslora-subset.gguf")).unwrap();
    let name = theirs.get_str("general.name").unwrap().to_string();
    let ours = export(&model, "llama", src, &name, GgmlType::F32);
    let adapter = peft::load(&golden(src), &model.cfg).unwrap();
    // use_rslora, r = 8, lora_alpha = 4; the converter writes 4.
    let (a_ours, a_theirs) = (
        ours.get_f32("adapter.lora.alpha").unwrap(),
        theirs.get_f32("adapter.lora.alpha").unwrap(),
    );
    assert_eq!(a_theirs, 4.0);
    assert_eq!(a_ours, 4.0 * 8f32.sqrt());
    let mut folded = 0;
    for (i, t, p) in adapter.entries() {
        let (an, bn) = (
            gguf_adapter::tensor_name(i, t, 'a'),
            gguf_adapter::tensor_name(i, t, 'b'),
        );
        assert_eq!(values(&ours, &an), values(&theirs, &an), "{an}");
        // llama.cpp applies alpha/r to each file; our B carries the rest of our scale.
        let factor = p.scale / (a_ours / p.r as f32);
        let (bo, bt) = (values(&ours, &bn), values(&theirs, &bn));
        for (x, y) in bo.iter().zip(&bt) {
            assert!((x - y * factor).abs() <= 1e-6 * y.abs().max(1e-3), "{bn}");
        }
        // The converter's α/r is our α/√r only for the modules at the config's rank and alpha.
        let plain = t == Target::Q;
        assert_eq!((factor - 1.0).abs() < 1e-6, plain, "{bn}: factor {factor}");
        folded += usize::from(!plain);
    }
    assert_eq!(
        folded, 4,
        "v_proj (rank_pattern) and up_proj (alpha_pattern) in 2 blocks"
    );
}

/// Logits (T, V) of `model` with `adapter` for `ids`.
fn our_logits(model: &Model, adapter: Option<&Adapter>, ids: &[u32]) -> Vec<f32> {
    let mut act = Activations::for_adapter(&model.cfg, adapter, ids.len());
    let mut cache = KvCache::new(&model.cfg, ids.len()).unwrap();
    model
        .forward_with(ids, &mut cache, &mut act, adapter)
        .unwrap();
    let mut logits = vec![0f32; ids.len() * model.cfg.n_vocab];
    model.logits(act.hidden(), &mut logits);
    logits
}

fn reference(file: &str) -> serde_json::Value {
    let p = golden(&format!("llama_cpp/{file}"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn flat(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect()
}

fn max_abs_diff(x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len());
    x.iter()
        .zip(y)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// One adapter as llama.cpp was given it: the PEFT source, how it was exported, its scale.
struct Part {
    src: &'static str,
    name: &'static str,
    dtype: GgmlType,
    weight: f32,
}

/// How far llama.cpp's F32 logits may be from ours, relative to their range: f32 rounding
/// (1e-5), except where ggml's CPU GELU looks its values up in an F16 table (input and
/// output rounded to F16: `GGML_GELU_FP16` in ggml-cpu/vec.h), as in gemma's GeGLU: 1e-3
/// (transformers, which computes the tanh GELU in f32, agrees with us within 3e-7 there).
fn llama_cpp_rounding(model: &Model) -> f32 {
    match model.cfg.arch.activation {
        pocketlora::internals::kernels::Glu::GeluTanh => 1e-3,
        pocketlora::internals::kernels::Glu::Silu => 1e-5,
    }
}

fn check_logits(model_file: &str, golden_file: &str, parts: &[Part]) {
    check_logits_at(&asset(model_file), golden_file, parts)
}

fn check_logits_at(model_path: &std::path::Path, golden_file: &str, parts: &[Part]) {
    let model = Model::open(model_path, 1).unwrap();
    let arch = model.cfg.arch.name();
    let want = reference(golden_file);
    let ids: Vec<u32> = want["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let hashes = want["adapter_fnv1a64"].as_array().unwrap();
    assert_eq!(hashes.len(), parts.len(), "{golden_file}");
    let mut loaded = Vec::new();
    for (p, h) in parts.iter().zip(hashes) {
        // The file llama.cpp was given is the one we export today.
        let a = peft::load(&golden(p.src), &model.cfg).unwrap();
        let (w, _) = gguf_adapter::to_writer(&a, &model.cfg, arch, p.name, p.dtype).unwrap();
        let bytes = w.to_bytes();
        assert_eq!(
            fnv1a64(&bytes),
            h.as_u64().unwrap(),
            "{golden_file}: export of {} changed",
            p.src
        );
        // An F16 export is the adapter rounded to F16: compare with that adapter, as read
        // back from the exported file.
        let a = if p.dtype == GgmlType::F32 {
            a
        } else {
            let dir = common::scratch_dir("llama-cpp-f16");
            let path = dir.join("a.gguf");
            std::fs::write(&path, &bytes).unwrap();
            let back = pocketlora::internals::lora::load(&path, &model.cfg).unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            back
        };
        loaded.push((a, p.weight));
    }
    let mixed = if loaded.is_empty() {
        None
    } else {
        let refs: Vec<(&Adapter, f32)> = loaded.iter().map(|(a, w)| (a, *w)).collect();
        Some(combine(&refs).unwrap())
    };
    let ours = our_logits(&model, mixed.as_ref(), &ids);
    let theirs = flat(&want["logits"]);
    let base = our_logits(&model, None, &ids);
    let d = max_abs_diff(&ours, &theirs);
    let effect = max_abs_diff(&base, &theirs);
    let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs()));
    eprintln!("{golden_file}: max |ours − llama.cpp| {d:e} (logits up to {scale}); adapter moves logits by up to {effect}");
    // F32 adapters: llama.cpp and we differ by f32 rounding only. With F16 adapter tensors
    // ggml's CPU matmul also rounds the activations entering them to F16 (its vec_dot_type
    // for F16 weights), which we do not: 2.7e-4 of the logits' range when measured.
    let f16 = parts.iter().any(|p| p.dtype == GgmlType::F16);
    let tolerance = if f16 {
        5e-4
    } else {
        llama_cpp_rounding(&model)
    };
    assert!(
        d < tolerance * scale.max(1.0),
        "{golden_file}: {d} (tolerance {tolerance} × {scale})"
    );
    if !parts.is_empty() {
        // The adapter moves the logits far more than the two engines differ by.
        let factor = if tolerance > 1e-5 { 1000.0 } else { 100.0 };
        assert!(
            effect > factor * d,
            "{golden_file}: the adapter must matter"
        );
    }
}

#[test]
fn llama_cpp_logits_without_an_adapter() {
    check_logits(
        "stories260K-f32.gguf",
        "logits_stories260K-f32_base.json",
        &[],
    );
}

#[test]
fn llama_cpp_q8_0_logits_differ_by_its_activation_quantization() {
    // ggml's Q8_0 matmul quantizes the activations to Q8_0 too; we multiply by the
    // dequantized weights in f32 (as Hugging Face does: our Q8_0 losses match it within
    // 1.3e-6). On this 64-wide model that alone moves llama.cpp's logits this far.
    let model = Model::open(asset("stories260K-q8_0.gguf"), 1).unwrap();
    let want = reference("logits_stories260K-q8_0_base.json");
    let ids: Vec<u32> = want["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let d = max_abs_diff(&our_logits(&model, None, &ids), &flat(&want["logits"]));
    eprintln!("stories260K-q8_0 without an adapter: max |ours − llama.cpp| {d:e}");
    assert!(d < 1.5, "{d}");
}

#[test]
fn llama_cpp_logits_with_our_f32_and_f16_exports() {
    for (file, dtype) in [
        ("logits_stories260K-f32_trained-f32.json", GgmlType::F32),
        ("logits_stories260K-f32_trained-f16.json", GgmlType::F16),
    ] {
        let part = Part {
            src: "oracle/train/stories260K-f32/trained",
            name: "Trained",
            dtype,
            weight: 1.0,
        };
        check_logits("stories260K-f32.gguf", file, &[part]);
    }
}

#[test]
fn llama_cpp_logits_with_rank_and_alpha_patterns_folded() {
    let part = Part {
        src: "oracle/peft_patterns/patterns",
        name: "patterns",
        dtype: GgmlType::F32,
        weight: 1.0,
    };
    check_logits(
        "stories260K-f32.gguf",
        "logits_stories260K-f32_patterns.json",
        &[part],
    );
}

#[test]
fn llama_cpp_logits_with_rslora_on_a_subset() {
    let part = Part {
        src: "oracle/peft_patterns/rslora-subset",
        name: "rslora-subset",
        dtype: GgmlType::F32,
        weight: 1.0,
    };
    check_logits(
        "aidreams260K-f32.gguf",
        "logits_aidreams260K-f32_rslora-subset.json",
        &[part],
    );
}

#[test]
fn llama_cpp_logits_with_two_adapters_match_our_rank_concatenation() {
    let parts = [
        Part {
            src: "oracle/train/stories260K-f32/trained",
            name: "Trained",
            dtype: GgmlType::F32,
            weight: 1.0,
        },
        Part {
            src: "oracle/peft_patterns/plain-subset",
            name: "plain-subset",
            dtype: GgmlType::F32,
            weight: 0.5,
        },
    ];
    check_logits(
        "stories260K-f32.gguf",
        "logits_stories260K-f32_mix.json",
        &parts,
    );
}

/// Merges `src` into `model_file` as `pocketlora merge` does by default, checks the file is
/// the one llama.cpp ran, and compares our logits on it with llama.cpp's.
fn check_merged(model_file: &str, src: &str, golden_file: &str, tolerance: f32) -> Vec<f32> {
    use pocketlora::internals::lora::merge::{merge_file, MergeOptions};
    let dir = common::scratch_dir(&format!("llama-cpp-{golden_file}"));
    let out = dir.join("merged.gguf");
    let base = GgufFile::open(asset(model_file)).unwrap();
    let m = Model::open(asset(model_file), 1).unwrap();
    let adapter = peft::load(&golden(src), &m.cfg).unwrap();
    merge_file(&base, &adapter, &MergeOptions::default(), None, &out).unwrap();
    let want = reference(golden_file);
    assert_eq!(
        fnv1a64(&std::fs::read(&out).unwrap()),
        want["model_fnv1a64"].as_u64().unwrap(),
        "{golden_file}: the merged file changed"
    );
    let merged = Model::open(&out, 1).unwrap();
    let ids: Vec<u32> = want["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let ours = our_logits(&merged, None, &ids);
    let theirs = flat(&want["logits"]);
    let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs()));
    let d = max_abs_diff(&ours, &theirs);
    eprintln!(
        "{golden_file}: max |ours − llama.cpp| on the merged model {d:e} (logits up to {scale})"
    );
    assert!(d < tolerance * scale, "{golden_file}: {d}");
    let _ = std::fs::remove_dir_all(&dir);
    theirs
}

#[test]
fn merged_models_run_in_llama_cpp_as_the_adapter_does() {
    // F32: llama.cpp on the merged file = llama.cpp with the adapter file = us.
    let merged = check_merged(
        "stories260K-f32.gguf",
        "oracle/train/stories260K-f32/trained",
        "logits_merged-f32_stories260K-f32_trained.json",
        1e-5,
    );
    let runtime = flat(&reference("logits_stories260K-f32_trained-f32.json")["logits"]);
    let d = max_abs_diff(&merged, &runtime);
    eprintln!("llama.cpp, F32: merged vs adapter at run time {d:e}");
    assert!(d < 1e-4, "{d}");
    // Q8_0 re-quantized: llama.cpp also quantizes activations to Q8_0 in Q8_0 matmuls,
    // which we do not; merged vs run-time adapter differs by the re-quantization.
    let merged = check_merged(
        "stories260K-q8_0.gguf",
        "oracle/train/stories260K-q8_0/trained",
        "logits_merged-q8_0_stories260K-q8_0_trained.json",
        0.05,
    );
    let runtime = flat(&reference("logits_stories260K-q8_0_trained.json")["logits"]);
    eprintln!(
        "llama.cpp, Q8_0: merged vs adapter at run time {:e}",
        max_abs_diff(&merged, &runtime)
    );
}

/// The synthetic qwen2 (q/k/v biases, half-split RoPE, q/k rows not permuted), written as
/// when its oracle goldens were made.
fn synth_qwen2(dir: &std::path::Path) -> std::path::PathBuf {
    let bytes = common::synth::build(&common::synth::qwen2_biases());
    let want = std::fs::read_to_string(golden("oracle/synth-qwen2.fnv1a64")).unwrap();
    assert_eq!(format!("{:016x}", fnv1a64(&bytes)), want.trim());
    let path = dir.join("synth-qwen2.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn qwen2_adapters_match_the_converter_and_llama_cpp_unpermuted() {
    let dir = common::scratch_dir("llama-cpp-qwen2");
    let path = synth_qwen2(&dir);
    let model = Model::open(&path, 1).unwrap();
    let theirs = GgufFile::open(golden("llama_cpp/converter_synth-qwen2_trained.gguf")).unwrap();
    let ours = export(
        &model,
        "qwen2",
        "oracle/train/synth-qwen2/trained",
        "Trained",
        GgmlType::F32,
    );
    assert_identical(&ours, &theirs, "synth-qwen2");
    let part = Part {
        src: "oracle/train/synth-qwen2/trained",
        name: "Trained",
        dtype: GgmlType::F32,
        weight: 1.0,
    };
    check_logits_at(&path, "logits_synth-qwen2_trained.json", &[part]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gguf_adapters_load_back_as_they_were_exported() {
    let model = Model::open(asset("stories260K-f32.gguf"), 1).unwrap();
    let src = peft::load(&golden("oracle/peft_patterns/patterns"), &model.cfg).unwrap();
    let dir = common::scratch_dir("gguf-adapter-load");
    let path = dir.join("patterns.gguf");
    gguf_adapter::save(&src, &model.cfg, "llama", "patterns", GgmlType::F32, &path).unwrap();
    let back = pocketlora::internals::lora::load(&path, &model.cfg).unwrap();
    let ids = [1u32, 461, 461, 401, 401, 401, 461, 378];
    let (x, y) = (
        our_logits(&model, Some(&src), &ids),
        our_logits(&model, Some(&back), &ids),
    );
    let d = max_abs_diff(&x, &y);
    assert!(d < 1e-4, "{d}");
    // Shapes are checked against the base, naming the tensor.
    let other = Model::open(asset("aidreams260K-f32.gguf"), 1).unwrap();
    let e = pocketlora::internals::lora::load(&path, &other.cfg)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("blk.") && e.contains("another base model"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The newer architectures in llama.cpp: the synthetic gemma3 (every feature: QK-norm,
/// post-norms, GeGLU, √d embeddings, sliding windows of 8 over 24 tokens with their own
/// RoPE base, soft-capped logits), qwen3 (QK-norm, head size 24), smollm3 (a layer
/// without RoPE) and phi3 (fused qkv and gate/up — its adapter on the fused tensors —,
/// partial rotary, LongRoPE) and lfm2 (short-convolution blocks on three of four
/// layers, their in/out projections adapted), all F32: llama.cpp's logits without an adapter, with our GGUF export of
/// the PEFT-trained adapter, and on our merged model equal ours (made by
/// make_goldens.sh with llama.cpp from the llama-cpp-python 0.3.36 sdist).
#[test]
fn new_architectures_run_in_llama_cpp_as_here() {
    use pocketlora::internals::lora::merge::{merge_file, MergeOptions};
    let dir = common::scratch_dir("llama-cpp-arch");
    for (spec, arch) in [
        (common::synth::gemma3_f32(), "gemma3"),
        (common::synth::qwen3_f32(), "qwen3"),
        (common::synth::smollm3(), "smollm3"),
        (common::synth::phi3_f32(), "phi"),
        (common::synth::lfm2_f32(), "lfm2"),
    ] {
        let path = dir.join(format!("{}.gguf", spec.name));
        std::fs::write(&path, common::synth::build(&spec)).unwrap();
        let src = format!("oracle/train/synth-{arch}/trained");
        let base_golden = format!("logits_{}_base.json", spec.name);
        assert_eq!(
            fnv1a64(&std::fs::read(&path).unwrap()),
            reference(&base_golden)["model_fnv1a64"].as_u64().unwrap(),
            "{}: not the model llama.cpp ran",
            spec.name
        );
        check_logits_at(&path, &base_golden, &[]);
        let part = Part {
            src: Box::leak(src.clone().into_boxed_str()),
            name: "Trained",
            dtype: GgmlType::F32,
            weight: 1.0,
        };
        check_logits_at(
            &path,
            &format!("logits_{}_trained.json", spec.name),
            &[part],
        );
        // Merged into the F32 base: llama.cpp on the merged file = us on it.
        let merged = dir.join(format!("{}-merged.gguf", spec.name));
        let m = Model::open(&path, 1).unwrap();
        let adapter = peft::load(&golden(&src), &m.cfg).unwrap();
        let base = GgufFile::open(&path).unwrap();
        merge_file(&base, &adapter, &MergeOptions::default(), None, &merged).unwrap();
        let want = reference(&format!("logits_{}_merged.json", spec.name));
        assert_eq!(
            fnv1a64(&std::fs::read(&merged).unwrap()),
            want["model_fnv1a64"].as_u64().unwrap(),
            "{}: the merged file changed",
            spec.name
        );
        let ids: Vec<u32> = want["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let merged_model = Model::open(&merged, 1).unwrap();
        let ours = our_logits(&merged_model, None, &ids);
        let theirs = flat(&want["logits"]);
        let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = max_abs_diff(&ours, &theirs);
        eprintln!(
            "{} merged: max |ours − llama.cpp| {d:e} (logits up to {scale})",
            spec.name
        );
        let tol = llama_cpp_rounding(&merged_model);
        assert!(d < tol * scale.max(1.0), "{}: {d}", spec.name);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
