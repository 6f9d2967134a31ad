//! Writer → reader round trips, the typed accessors, atomic file writes, and the real GGUF
//! files: the bundled models in `assets/` and (when present) the vocabulary-only files in
//! /work/shared/vocab.

use std::path::{Path, PathBuf};

use pocketlora::internals::error::{Error, GgufError};
use pocketlora::internals::gguf::{Array, GgufFile, GgufWriter, Value, ValueType};
use pocketlora::internals::quant::GgmlType;

fn read(w: &GgufWriter) -> GgufFile {
    GgufFile::from_bytes(w.to_bytes()).expect("writer output reads back")
}

fn gguf_err<T: std::fmt::Debug>(r: pocketlora::Result<T>) -> GgufError {
    match r {
        Err(Error::Gguf(e)) | Err(Error::GgufFile { source: e, .. }) => e,
        other => panic!("expected a GGUF error, got {other:?}"),
    }
}

/// A fresh empty directory under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pocketlora-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// Metadata.

fn every_value_type() -> Vec<(&'static str, Value)> {
    let nested = Array::new(
        ValueType::Array,
        vec![
            Value::Array(Array::new(
                ValueType::U16,
                vec![Value::U16(1), Value::U16(65535)],
            )),
            Value::Array(Array::from_strings(["é", "", "日本語"])),
            Value::Array(Array::new(ValueType::Array, vec![])),
        ],
    );
    vec![
        ("t.u8", Value::U8(255)),
        ("t.i8", Value::I8(-128)),
        ("t.u16", Value::U16(65535)),
        ("t.i16", Value::I16(-32768)),
        ("t.u32", Value::U32(u32::MAX)),
        ("t.i32", Value::I32(i32::MIN)),
        ("t.f32", Value::F32(-1.5e-30)),
        ("t.bool.t", Value::Bool(true)),
        ("t.bool.f", Value::Bool(false)),
        ("t.string", Value::from("naïve café ☕ — 𝄞")),
        ("t.empty", Value::from("")),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        (
            "t.arr.f32",
            Value::Array(Array::new(ValueType::F32, vec![Value::F32(0.25); 3])),
        ),
        (
            "t.arr.bool",
            Value::Array(Array::new(
                ValueType::Bool,
                vec![Value::Bool(true), Value::Bool(false)],
            )),
        ),
        (
            "t.arr.empty",
            Value::Array(Array::new(ValueType::I64, vec![])),
        ),
        ("t.arr.nested", Value::Array(nested)),
        // Keys are ASCII (non-ASCII keys are refused: gguf_malformed::non_ascii_key); the
        // longest key there is, 65,535 bytes, is tested there too.
        ("t.key-with_all.sorts~of!ascii", Value::U8(1)),
    ]
}

#[test]
fn every_value_type_round_trips_in_order() {
    let mut w = GgufWriter::new();
    for (k, v) in every_value_type() {
        w.set(k, v);
    }
    let f = read(&w);
    assert_eq!(f.version(), 3);
    assert_eq!(f.metadata(), w.metadata());
    for (k, v) in every_value_type() {
        assert_eq!(f.get(k), Some(&v), "{k}");
        assert_eq!(f.get(k).unwrap().value_type(), v.value_type());
    }
    assert!(f.tensors().is_empty());
    assert_eq!(f.data_offset(), f.file_len());
}

#[test]
fn file_and_writer_can_cross_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<GgufFile>();
    assert_send_sync::<GgufWriter>();
}

#[test]
fn set_replaces_in_place() {
    let mut w = GgufWriter::new();
    w.set("a", Value::U32(1));
    w.set("b", Value::U32(2));
    w.set("a", Value::from("one"));
    let f = read(&w);
    let keys: Vec<_> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(f.get_str("a").unwrap(), "one");
}

#[test]
fn typed_accessors_convert_or_name_the_key() {
    let mut w = GgufWriter::new();
    w.set("small", Value::U8(7));
    w.set("neg", Value::I32(-1));
    w.set("big", Value::U64(u64::MAX));
    w.set("f64", Value::F64(0.5));
    w.set("huge.f64", Value::F64(1e300));
    w.set("s", Value::from("text"));
    w.set("flag", Value::Bool(true));
    w.set("list", Value::Array(Array::from_strings(["x", "y"])));
    let f = read(&w);

    assert_eq!(f.get_u32("small").unwrap(), 7);
    assert_eq!(f.get_u64("small").unwrap(), 7);
    assert_eq!(f.get_i64("neg").unwrap(), -1);
    assert_eq!(f.get_u64("big").unwrap(), u64::MAX);
    assert_eq!(f.get_f32("f64").unwrap(), 0.5);
    assert_eq!(f.get_str("s").unwrap(), "text");
    assert!(f.get_bool("flag").unwrap());
    assert_eq!(f.get_array("list").unwrap().as_strs().unwrap(), ["x", "y"]);

    let wrong = [
        f.get_u32("neg").unwrap_err(),
        f.get_u32("big").unwrap_err(),
        f.get_u64("neg").unwrap_err(),
        f.get_i64("big").unwrap_err(),
        f.get_f32("small").unwrap_err(),
        f.get_f32("huge.f64").unwrap_err(),
        f.get_str("small").unwrap_err(),
        f.get_bool("s").unwrap_err(),
        f.get_array("s").unwrap_err(),
    ];
    for e in wrong {
        let GgufError::KeyType { ref key, .. } = e else {
            panic!("expected KeyType, got {e}");
        };
        assert!(e.to_string().contains(&format!("{key:?}")), "{e}");
    }
    let e = f.get_str("neg").unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key \"neg\": expected string, found i32 -1"
    );

    let e = f.get_u32("absent").unwrap_err();
    assert!(matches!(e, GgufError::MissingKey { ref key } if key == "absent"));
    assert!(e.to_string().contains("\"absent\""));

    assert_eq!(f.opt_u32("absent").unwrap(), None);
    assert_eq!(f.opt_u64("absent").unwrap(), None);
    assert_eq!(f.opt_f32("absent").unwrap(), None);
    assert_eq!(f.opt_bool("absent").unwrap(), None);
    assert_eq!(f.opt_str("absent").unwrap(), None);
    assert_eq!(f.opt_u32("small").unwrap(), Some(7));
    assert_eq!(f.opt_str("s").unwrap(), Some("text"));
    assert!(matches!(f.opt_u32("s"), Err(GgufError::KeyType { .. })));
    assert!(matches!(
        f.opt_bool("small"),
        Err(GgufError::KeyType { .. })
    ));
}

#[test]
fn inconsistent_arrays_are_refused_at_write_time() {
    let bad = Value::Array(Array::new(
        ValueType::U32,
        vec![Value::U32(1), Value::I8(2)],
    ));
    let mut w = GgufWriter::new();
    assert!(matches!(
        w.try_set("bad", bad.clone()),
        Err(GgufError::KeyType { .. })
    ));
    assert!(w.get("bad").is_none());
    w.set("bad", bad);
    let e = w.validate().unwrap_err();
    assert!(matches!(e, GgufError::KeyType { ref key, expected: "u32", .. } if key == "bad"));
    let mut out = Vec::new();
    let e = w.write_to(&mut out).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(out.is_empty());
    let dir = temp_dir("bad-array");
    assert!(matches!(
        w.write_file(dir.join("x.gguf")),
        Err(Error::Gguf(GgufError::KeyType { .. }))
    ));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
#[should_panic(expected = "GgufWriter::to_bytes")]
fn to_bytes_panics_on_an_inconsistent_array() {
    let mut w = GgufWriter::new();
    w.set(
        "bad",
        Value::Array(Array::new(ValueType::String, vec![Value::U8(1)])),
    );
    let _ = w.to_bytes();
}

// ---------------------------------------------------------------------------------------------
// Tensors and alignment.

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn tensors_round_trip_aligned_at_32_and_64() {
    for alignment in [32u64, 64, 1] {
        let mut w = GgufWriter::with_alignment(alignment).unwrap();
        w.set("general.architecture", Value::from("llama"));
        let specs: [(&str, GgmlType, &[u64]); 4] = [
            ("odd.f32", GgmlType::F32, &[3]),
            ("q4", GgmlType::Q4_0, &[32, 1]),
            ("f16", GgmlType::F16, &[5, 3]),
            ("k4d", GgmlType::Q4_K, &[256, 1, 2, 1]),
        ];
        for (i, (name, ty, dims)) in specs.iter().enumerate() {
            let n = ty.bytes_for(dims.iter().product()).unwrap() as usize;
            w.add_tensor(*name, *ty, dims, pattern(n, i as u8)).unwrap();
        }
        let f = read(&w);
        assert_eq!(f.alignment(), alignment);
        assert_eq!(f.get("general.alignment").is_some(), alignment != 32);
        assert_eq!(f.data_offset() % alignment, 0);
        assert_eq!(f.file_len() % alignment, 0);
        assert_eq!(f.tensors().len(), specs.len());
        for (i, (info, (name, ty, dims))) in f.tensors().iter().zip(&specs).enumerate() {
            assert_eq!(
                (info.name.as_str(), info.ty, info.dims.as_slice()),
                (*name, *ty, *dims)
            );
            assert_eq!(info.offset % alignment, 0);
            let view = f.require_tensor(name).unwrap();
            assert_eq!(
                view.data,
                pattern(info.n_bytes as usize, i as u8).as_slice()
            );
            assert_eq!(info.n_elements(), dims.iter().product::<u64>());
        }
        let f16 = f.tensor_info("f16").unwrap();
        assert_eq!(
            (f16.row_len(), f16.n_rows(), f16.row_bytes()),
            (5, 3, Some(10))
        );
        let view = f.tensor("f16").unwrap();
        assert_eq!(view.row(2), Some(&view.data[20..30]));
        assert_eq!(view.row(3), None);
        assert!(f.tensor("absent").is_none());
        assert!(
            matches!(f.require_tensor("absent"), Err(GgufError::MissingTensor { ref name }) if name == "absent")
        );
    }
}

#[test]
fn bad_alignments_are_refused_by_the_writer() {
    for bad in [0u64, 48, 3, 1 << 32] {
        let e = gguf_err(GgufWriter::with_alignment(bad));
        assert!(matches!(e, GgufError::BadAlignment { value } if value == bad));
    }
    let mut w = GgufWriter::new();
    w.set("general.alignment", Value::U32(64));
    assert_eq!(w.alignment(), 64);
    w.set("general.alignment", Value::U32(48));
    assert!(matches!(
        w.validate(),
        Err(GgufError::BadAlignment { value: 48 })
    ));
    w.set("general.alignment", Value::U64(64));
    assert!(matches!(w.validate(), Err(GgufError::KeyType { .. })));
}

#[test]
fn add_tensor_validates() {
    let mut w = GgufWriter::new();
    w.add_tensor("ok", GgmlType::F32, &[2], vec![0; 8]).unwrap();
    let invalid =
        |r: pocketlora::Result<()>| matches!(gguf_err(r), GgufError::InvalidTensor { .. });
    let mut w2 = w.clone();
    assert!(invalid(w2.add_tensor(
        "no.dims",
        GgmlType::F32,
        &[],
        vec![]
    )));
    assert!(invalid(w2.add_tensor(
        "five",
        GgmlType::F32,
        &[1; 5],
        vec![0; 4]
    )));
    assert!(invalid(w2.add_tensor(
        "zero",
        GgmlType::F32,
        &[2, 0],
        vec![]
    )));
    assert!(invalid(w2.add_tensor(
        "rows",
        GgmlType::Q8_0,
        &[16, 2],
        vec![0; 34]
    )));
    assert!(invalid(w2.add_tensor(
        "short",
        GgmlType::F32,
        &[4],
        vec![0; 15]
    )));
    assert!(invalid(w2.add_tensor(
        "huge",
        GgmlType::F32,
        &[1 << 62, 4],
        vec![]
    )));
    assert!(invalid(w2.add_tensor(
        "x".repeat(64),
        GgmlType::F32,
        &[1],
        vec![0; 4]
    )));
    let e = gguf_err(w2.add_tensor("ok", GgmlType::F32, &[2], vec![0; 8]));
    assert!(matches!(e, GgufError::DuplicateTensor { ref name } if name == "ok"));
    // Nothing refused was added.
    assert_eq!(read(&w2).tensors(), read(&w).tensors());
}

// ---------------------------------------------------------------------------------------------
// Files.

#[test]
fn write_file_replaces_atomically_and_open_reads_it() {
    let dir = temp_dir("write-file");
    let path = dir.join("model.gguf");
    let mut w = GgufWriter::new();
    w.set("general.name", Value::from("first"));
    w.add_tensor("t", GgmlType::F32, &[4], pattern(16, 1))
        .unwrap();
    w.write_file(&path).unwrap();
    w.set("general.name", Value::from("second"));
    w.write_file(&path).unwrap();

    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.path(), Some(path.as_path()));
    assert_eq!(f.get_str("general.name").unwrap(), "second");
    assert_eq!(f.tensor("t").unwrap().data, pattern(16, 1).as_slice());
    assert_eq!(std::fs::read(&path).unwrap(), w.to_bytes());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["model.gguf"], "no temporary files left behind");

    let e = w.write_file(dir.join("missing-dir/x.gguf")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn open_reports_io_and_format_errors() {
    let dir = temp_dir("open-errors");
    let missing = dir.join("nope.gguf");
    let e = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(e, Error::Io { ref path, .. } if path == &missing));
    assert!(e.to_string().contains("nope.gguf"));

    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let e = gguf_err(GgufFile::open(&empty));
    assert!(matches!(e, GgufError::Truncated { file_len: 0, .. }));

    let text = dir.join("text.gguf");
    std::fs::write(&text, b"hello, world").unwrap();
    let e = GgufFile::open(&text).unwrap_err().to_string();
    assert!(
        e.contains("text.gguf") && e.contains("not a GGUF file"),
        "{e}"
    );
    assert!(matches!(
        gguf_err(GgufFile::open(&text)),
        GgufError::BadMagic { .. }
    ));

    // A directory, not "No such device (os error 19)" from mapping it.
    let e = GgufFile::open(&dir).unwrap_err();
    assert!(
        matches!(e, Error::Io { ref path, ref source } if path == &dir && source.kind() == std::io::ErrorKind::IsADirectory),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("is a directory; a GGUF file is expected (it holds empty.gguf, text.gguf)"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Real files.

fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(name)
}

/// Every tensor's bytes lie in the file, sized by its type and dims.
fn check_tensors_in_file(f: &GgufFile) {
    for t in f.tensors() {
        assert_eq!(
            Some(t.n_bytes),
            t.ty.bytes_for(t.n_elements()),
            "{}",
            t.name
        );
        assert_eq!(t.offset % f.alignment(), 0);
        assert!(
            f.data_offset() + t.offset + t.n_bytes <= f.file_len(),
            "{}",
            t.name
        );
        assert_eq!(f.tensor(&t.name).unwrap().data.len() as u64, t.n_bytes);
    }
}

#[test]
fn bundled_models() {
    let models = [("stories260K", 47, 5), ("aidreams260K", 38, 4)];
    for (model, n_tensors, n_layers) in models {
        for (quant, ty) in [
            ("f32", GgmlType::F32),
            ("q8_0", GgmlType::Q8_0),
            ("q4_0", GgmlType::Q4_0),
        ] {
            let path = asset(&format!("{model}-{quant}.gguf"));
            let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(f.version(), 3);
            assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
            assert_eq!(f.get_u32("llama.embedding_length").unwrap(), 64);
            assert_eq!(f.get_u32("llama.block_count").unwrap(), n_layers);
            assert!(f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap() > 0.0);
            assert_eq!(f.get_array("tokenizer.ggml.tokens").unwrap().len(), 512);
            assert_eq!(f.tensors().len(), n_tensors);
            let embd = f.tensor_info("token_embd.weight").unwrap();
            assert_eq!((embd.dims.as_slice(), embd.ty), (&[64, 512][..], ty));
            assert_eq!(
                f.tensor_info("output_norm.weight").unwrap().ty,
                GgmlType::F32
            );
            assert!(f.tensor("output.weight").is_none(), "tied embeddings");
            check_tensors_in_file(&f);
        }
    }
}

#[test]
fn bundled_model_rewritten_by_the_writer_is_byte_identical() {
    let original = std::fs::read(asset("stories260K-q8_0.gguf")).unwrap();
    let f = GgufFile::from_bytes(original.clone()).unwrap();
    let w = GgufWriter::copy_of(&f).unwrap();
    assert!(
        w.to_bytes() == original,
        "the writer reproduces llama.cpp's layout"
    );
}

#[test]
fn vocabulary_only_files() {
    let dir = Path::new("/work/shared/vocab");
    if !dir.is_dir() {
        eprintln!("skipping: {} is not present", dir.display());
        return;
    }
    for (file, model, n_tokens) in [
        ("ggml-vocab-llama-spm.gguf", "llama", 32000),
        ("ggml-vocab-gpt-2.gguf", "gpt2", 50257),
    ] {
        let path = dir.join(file);
        if !path.exists() {
            eprintln!("skipping: {} is not present", path.display());
            continue;
        }
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(f.tensors().is_empty());
        assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), model);
        let tokens = f.get_array("tokenizer.ggml.tokens").unwrap();
        assert_eq!(tokens.elem_type, ValueType::String);
        assert_eq!(tokens.len(), n_tokens);
        assert!(tokens.as_strs().is_some());
        check_tensors_in_file(&f);
    }
}
