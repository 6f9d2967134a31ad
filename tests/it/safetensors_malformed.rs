//! Malformed safetensors files: each case asserts the specific error (variant and fields) the
//! reader returns, never a panic and never an allocation sized by the file's claims.

use crate::common;

use pocketlora::internals::error::{Error, SafetensorsError as E};
use pocketlora::internals::safetensors::{self as st, Dtype, MAX_DIMS};

/// A file from a header text and a data section.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

fn err(bytes: &[u8]) -> E {
    match st::parse(bytes) {
        Ok(_) => panic!("a malformed file was accepted"),
        Err(e) => e,
    }
}

/// One F32 tensor `t` of `shape` at `offsets`, over `data_len` zero bytes.
fn one(shape: &str, offsets: &str, data_len: usize) -> Vec<u8> {
    file(
        &format!(r#"{{"t": {{"dtype": "F32", "shape": {shape}, "data_offsets": {offsets}}}}}"#),
        &vec![0u8; data_len],
    )
}

fn valid() -> Vec<u8> {
    let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [7.0f32, 8.0];
    st::encode(
        &[
            ("a".to_string(), vec![2, 3], &a[..]),
            ("b".to_string(), vec![2], &b[..]),
        ],
        Dtype::F32,
        &Default::default(),
    )
}

#[test]
fn the_fixture_is_valid() {
    let (t, _) = st::parse(&valid()).unwrap();
    assert_eq!(t["a"].shape, vec![2, 3]);
    assert_eq!(t["b"].data, vec![7.0, 8.0]);
}

#[test]
fn empty_and_shorter_than_the_length_field() {
    assert!(matches!(err(&[]), E::TooShort { len: 0 }));
    assert!(matches!(
        err(&[1, 0, 0, 0, 0, 0, 0]),
        E::TooShort { len: 7 }
    ));
}

#[test]
fn header_length_past_the_end() {
    let mut v = valid();
    let len = v.len() as u64;
    v[..8].copy_from_slice(&(len - 7).to_le_bytes());
    assert!(matches!(
        err(&v),
        E::HeaderPastEnd { header_len, file_len } if header_len == len - 7 && file_len == len
    ));
}

#[test]
fn header_length_of_u64_max() {
    let mut v = valid();
    v[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        err(&v),
        E::HeaderPastEnd {
            header_len: u64::MAX,
            ..
        }
    ));
}

#[test]
fn header_not_json() {
    assert!(matches!(
        err(&file("{\"t\": ", &[])),
        E::HeaderJson { header_len: 6, .. }
    ));
}

#[test]
fn header_not_utf8() {
    let mut v = file("{\"t\": \"xx\"}", &[]);
    v[8 + 8] = 0xff;
    assert!(matches!(err(&v), E::HeaderJson { .. }));
}

#[test]
fn header_not_an_object() {
    assert!(matches!(err(&file("[1, 2]", &[])), E::HeaderNotObject));
    assert!(matches!(err(&file("null", &[])), E::HeaderNotObject));
}

#[test]
fn metadata_not_an_object() {
    assert!(matches!(
        err(&file(r#"{"__metadata__": "pt"}"#, &[])),
        E::BadMetadata
    ));
}

#[test]
fn tensor_entry_not_an_object() {
    assert!(matches!(
        err(&file(r#"{"t": 5}"#, &[])),
        E::BadField { field: "dtype", ref tensor, .. } if tensor == "t"
    ));
}

#[test]
fn dtype_missing_or_not_a_string() {
    for h in [
        r#"{"t": {"shape": [1], "data_offsets": [0, 4]}}"#,
        r#"{"t": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}}"#,
    ] {
        assert!(
            matches!(err(&file(h, &[0; 4])), E::BadField { field: "dtype", .. }),
            "{h}"
        );
    }
}

#[test]
fn unsupported_dtype() {
    let h = r#"{"t": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}"#;
    assert!(matches!(
        err(&file(h, &[0; 8])),
        E::UnsupportedDtype { ref dtype, .. } if dtype == "I64"
    ));
}

#[test]
fn shape_missing_negative_or_fractional() {
    for shape in ["null", "[-1]", "[1.5]", "\"2x2\"", "[[2]]"] {
        let e = err(&one(shape, "[0, 4]", 4));
        assert!(
            matches!(e, E::BadField { field: "shape", .. }),
            "{shape}: {e}"
        );
    }
}

#[test]
fn too_many_dimensions() {
    let shape = format!("[{}]", ["1"; MAX_DIMS + 1].join(", "));
    assert!(matches!(
        err(&one(&shape, "[0, 4]", 4)),
        E::TooManyDims { n_dims, limit: MAX_DIMS, .. } if n_dims == MAX_DIMS + 1
    ));
}

#[test]
fn data_offsets_malformed() {
    for offs in ["[0]", "[0, 4, 8]", "[-4, 0]", "\"0-4\"", "[0, 4.0]"] {
        let e = err(&one("[1]", offs, 4));
        assert!(
            matches!(
                e,
                E::BadField {
                    field: "data_offsets",
                    ..
                }
            ),
            "{offs}: {e}"
        );
    }
}

#[test]
fn data_offsets_reversed() {
    assert!(matches!(
        err(&one("[1]", "[8, 4]", 8)),
        E::OffsetsOutOfBounds {
            begin: 8,
            end: 4,
            ..
        }
    ));
}

#[test]
fn data_offsets_past_the_end() {
    assert!(matches!(
        err(&one("[4]", "[0, 16]", 12)),
        E::OffsetsOutOfBounds {
            end: 16,
            data_len: 12,
            ..
        }
    ));
    // An offset near u64::MAX: refused before anything is sized by it.
    assert!(matches!(
        err(&one(
            "[1]",
            "[18446744073709551612, 18446744073709551615]",
            4
        )),
        E::OffsetsOutOfBounds { .. }
    ));
}

#[test]
fn shape_product_overflows() {
    assert!(matches!(
        err(&one("[4294967296, 4294967296]", "[0, 4]", 4)),
        E::ShapeOverflow { .. }
    ));
}

#[test]
fn shape_and_offsets_disagree() {
    assert!(matches!(
        err(&one("[2, 3]", "[0, 20]", 20)),
        E::SizeMismatch {
            need: 24,
            have: 20,
            ..
        }
    ));
}

#[test]
fn huge_shape_with_small_offsets_allocates_nothing() {
    // 2^40 elements claimed, 4 bytes given: the size check comes before any allocation.
    assert!(matches!(
        err(&one("[1099511627776]", "[0, 4]", 4)),
        E::SizeMismatch {
            need: 4398046511104,
            have: 4,
            ..
        }
    ));
}

#[test]
fn overlapping_tensors() {
    let h = r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#;
    assert!(matches!(
        err(&file(h, &[0; 12])),
        E::Overlap { ref first, ref second } if first == "a" && second == "b"
    ));
}

#[test]
fn every_strict_prefix_of_a_valid_file_is_refused() {
    let v = valid();
    for n in 0..v.len() {
        let e = err(&v[..n]);
        assert!(
            matches!(
                e,
                E::TooShort { .. } | E::HeaderPastEnd { .. } | E::OffsetsOutOfBounds { .. }
            ),
            "prefix {n}: {e}"
        );
    }
}

#[test]
fn read_names_the_file() {
    let dir = common::scratch_dir("st-malformed");
    let p = dir.join("bad.safetensors");
    std::fs::write(&p, one("[2, 3]", "[0, 20]", 20)).unwrap();
    match st::read(&p) {
        Err(Error::Safetensors {
            path,
            source: E::SizeMismatch { .. },
        }) => assert_eq!(path, p),
        other => panic!("{other:?}"),
    }
    match st::read(&dir.join("missing.safetensors")) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
        }
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
