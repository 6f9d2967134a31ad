//! Malformed GGUF files: each built from a valid file by byte surgery, each refused with its
//! specific `GgufError` variant, and none of them (nor any prefix of them, nor random
//! mutations of the valid file) making the reader panic.

use pocketlora::internals::error::{Error, GgufError};
use pocketlora::internals::gguf::{Array, GgufFile, GgufWriter, Value, ValueType};
use pocketlora::internals::quant::GgmlType;

// ---------------------------------------------------------------------------------------------
// Fixture: a valid file, and helpers to find and patch its parts.

/// Three tensors (the last one ends exactly at the end of the file, so every strict prefix of
/// the file is invalid) and a few metadata pairs, keys of equal length so they can be swapped.
/// Truncations are tested in the last entry of each table: a file cut early in a table fails
/// the up-front count check instead (`CountTooLarge`), as the reader's docs say.
fn valid_with(mut w: GgufWriter) -> Vec<u8> {
    w.set("general.architecture", Value::from("llama"));
    let ints = (0..5).map(Value::I32).collect();
    w.set("test.ints", Value::Array(Array::new(ValueType::I32, ints)));
    w.set(
        "test.strs",
        Value::Array(Array::from_strings(["héllo", "wörld"])),
    );
    w.set("test.pad", Value::from("abc"));
    w.set("test.k2", Value::U32(8));
    w.set("test.k1", Value::U32(7));
    let f32s = |n: usize| (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.add_tensor("tensor.aa", GgmlType::F32, &[8, 2], f32s(16))
        .unwrap();
    w.add_tensor("tensor.bb", GgmlType::Q8_0, &[32, 2], vec![1; 68])
        .unwrap();
    w.add_tensor("tensor.cc", GgmlType::F32, &[8], f32s(8))
        .unwrap();
    w.to_bytes()
}

fn valid() -> Vec<u8> {
    valid_with(GgufWriter::new())
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present in fixture")
}

/// Offset of the length prefix of the GGUF string `s`.
fn str_at(bytes: &[u8], s: &str) -> usize {
    let mut needle = (s.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(s.as_bytes());
    find(bytes, &needle)
}

/// Where metadata pair `key` lies: its key length, its value type, its value.
struct KeyAt {
    at: usize,
    ty: usize,
    value: usize,
}

fn key_at(bytes: &[u8], key: &str) -> KeyAt {
    let at = str_at(bytes, key);
    let ty = at + 8 + key.len();
    KeyAt {
        at,
        ty,
        value: ty + 4,
    }
}

/// Where tensor info `name` lies.
struct InfoAt {
    n_dims: usize,
    dims: usize,
    ty: usize,
    offset: usize,
}

fn info_at(bytes: &[u8], name: &str) -> InfoAt {
    let n_dims = str_at(bytes, name) + 8 + name.len();
    let nd = u32::from_le_bytes(bytes[n_dims..n_dims + 4].try_into().unwrap()) as usize;
    let dims = n_dims + 4;
    let ty = dims + 8 * nd;
    InfoAt {
        n_dims,
        dims,
        ty,
        offset: ty + 4,
    }
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// `bytes` (a file of `valid_with`, alignment 32) with the `remove` bytes at `at` replaced
/// by `insert`, somewhere in the header: the padding is redone so that the data section
/// keeps its bytes (tensor offsets are relative to it), and the result is otherwise valid.
fn splice_meta(bytes: &[u8], at: usize, remove: usize, insert: &[u8]) -> Vec<u8> {
    let data_offset = GgufFile::from_bytes(bytes.to_vec()).unwrap().data_offset() as usize;
    let meta_end = info_at(bytes, "tensor.cc").offset + 8;
    assert!(at + remove <= meta_end);
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(insert);
    out.extend_from_slice(&bytes[at + remove..meta_end]);
    out.resize(out.len().next_multiple_of(32), 0);
    out.extend_from_slice(&bytes[data_offset..]);
    out
}

/// `bytes` with the GGUF string `old` (its length prefix and bytes) replaced by `new`.
fn replace_str(bytes: &[u8], old: &str, new: &[u8]) -> Vec<u8> {
    let mut s = (new.len() as u64).to_le_bytes().to_vec();
    s.extend_from_slice(new);
    splice_meta(bytes, str_at(bytes, old), 8 + old.len(), &s)
}

/// The reader's error for `bytes`; panics if the file is accepted.
fn gguf_err(bytes: Vec<u8>) -> GgufError {
    match GgufFile::from_bytes(bytes) {
        Err(Error::Gguf(e)) => e,
        Err(other) => panic!("expected a GGUF error, got {other}"),
        Ok(f) => panic!("malformed file accepted: {f:?}"),
    }
}

/// The error for `bytes`, after checking that every strict prefix is refused too.
fn reject(bytes: &[u8]) -> GgufError {
    for len in 0..bytes.len() {
        let r = GgufFile::from_bytes(bytes[..len].to_vec());
        assert!(r.is_err(), "prefix of {len} bytes accepted");
    }
    gguf_err(bytes.to_vec())
}

fn truncated_at(len: usize) -> GgufError {
    let bytes = valid();
    assert!(len < bytes.len());
    reject(&bytes[..len])
}

// ---------------------------------------------------------------------------------------------
// The valid file itself.

#[test]
fn fixture_is_valid_and_every_strict_prefix_is_refused() {
    let bytes = valid();
    let f = reject(&bytes[..bytes.len() - 1]);
    assert!(matches!(f, GgufError::Truncated { ref what, .. } if what.contains("tensor.cc")));
    let file = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(file.tensors().len(), 3);
    assert_eq!(file.file_len(), bytes.len() as u64);
}

#[test]
fn version_2_is_accepted() {
    let mut b = valid();
    put_u32(&mut b, 4, 2);
    assert_eq!(GgufFile::from_bytes(b).unwrap().version(), 2);
}

#[test]
fn zero_tensor_file_is_valid_with_or_without_final_padding() {
    let mut w = GgufWriter::new();
    w.set("tokenizer.ggml.model", Value::from("llama"));
    let bytes = w.to_bytes();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.data_offset(), bytes.len() as u64);
    assert!(f.tensors().is_empty());
    // Vocabulary-only files written by llama.cpp may stop right after the metadata.
    let meta_end = key_at(&bytes, "tokenizer.ggml.model").value + 8 + 5;
    let f = GgufFile::from_bytes(bytes[..meta_end].to_vec()).unwrap();
    assert!(f.data_offset() >= f.file_len());
}

// ---------------------------------------------------------------------------------------------
// Header.

#[test]
fn bad_magic() {
    let mut b = valid();
    b[..4].copy_from_slice(b"GGUX");
    assert!(matches!(reject(&b), GgufError::BadMagic { found } if &found == b"GGUX"));
    let zip = b"PK\x03\x04rest of a zip file".to_vec();
    assert!(matches!(gguf_err(zip), GgufError::BadMagic { .. }));
    // Too short to hold a magic, but already not a GGUF file.
    assert!(matches!(
        gguf_err(b"GX".to_vec()),
        GgufError::BadMagic { .. }
    ));
}

#[test]
fn big_endian_file() {
    let mut b = valid();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(matches!(reject(&b), GgufError::BigEndian { version: 3 }));
}

#[test]
fn versions_1_and_4_are_unsupported() {
    for version in [1, 4, 0] {
        let mut b = valid();
        put_u32(&mut b, 4, version);
        let e = reject(&b);
        assert!(
            matches!(e, GgufError::UnsupportedVersion { version: v } if v == version),
            "{e}"
        );
    }
}

#[test]
fn truncated_inside_header() {
    let e = truncated_at(6);
    assert!(
        matches!(e, GgufError::Truncated { ref what, need: 4, .. } if what == "header (version)")
    );
    let e = truncated_at(2);
    assert!(matches!(e, GgufError::Truncated { ref what, .. } if what == "header (magic)"));
}

#[test]
fn truncated_in_kv_count() {
    let e = truncated_at(20);
    assert!(
        matches!(e, GgufError::Truncated { ref what, offset: 16, .. } if what == "header (metadata count)")
    );
}

#[test]
fn tensor_count_of_2_pow_62() {
    let mut b = valid();
    put_u64(&mut b, 8, 1 << 62);
    let e = reject(&b);
    assert!(matches!(e, GgufError::CountTooLarge { count, offset: 8, .. } if count == 1 << 62));
}

#[test]
fn kv_count_of_2_pow_62() {
    let mut b = valid();
    put_u64(&mut b, 16, 1 << 62);
    let e = reject(&b);
    assert!(matches!(e, GgufError::CountTooLarge { count, offset: 16, .. } if count == 1 << 62));
}

#[test]
fn kv_count_over_the_limit() {
    // Enough bytes for 2^20 + 1 minimal pairs, so only the hard limit refuses the count.
    let n: u64 = (1 << 20) + 1;
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&n.to_le_bytes());
    b.resize(b.len() + 13 * n as usize, 0);
    let e = gguf_err(b);
    assert!(
        matches!(e, GgufError::LimitExceeded { value, limit, .. } if value == n && limit == 1 << 20)
    );
}

// ---------------------------------------------------------------------------------------------
// Metadata.

#[test]
fn truncated_inside_a_key_length() {
    let k = key_at(&valid(), "test.k1");
    let e = truncated_at(k.at + 3);
    assert!(matches!(e, GgufError::Truncated { ref what, .. } if what.contains("metadata key #5")));
}

#[test]
fn cut_inside_key_bytes_is_a_length_past_the_end() {
    let k = key_at(&valid(), "test.k1");
    let e = truncated_at(k.at + 8 + 3);
    assert!(
        matches!(e, GgufError::CountTooLarge { count: 7, remaining: 3, ref what, .. } if what.contains("metadata key #5"))
    );
}

#[test]
fn truncated_in_value_type() {
    let k = key_at(&valid(), "test.k1");
    let e = truncated_at(k.ty + 2);
    assert!(
        matches!(e, GgufError::Truncated { ref what, .. } if what.contains("value type of key \"test.k1\""))
    );
}

#[test]
fn truncated_inside_a_value() {
    let k = key_at(&valid(), "test.k1");
    let e = truncated_at(k.value + 2);
    assert!(
        matches!(e, GgufError::Truncated { ref what, need: 4, .. } if what == "value of key \"test.k1\"")
    );
}

#[test]
fn truncated_inside_an_array_item() {
    // In the length of the second string of a string array.
    let k = key_at(&valid(), "test.strs");
    let first = 8 + "héllo".len();
    let e = truncated_at(k.value + 12 + first + 4);
    assert!(
        matches!(e, GgufError::Truncated { ref what, .. } if what == "length of value of key \"test.strs\"")
    );
    // An array of fixed-size items is checked whole against the bytes left.
    let k = key_at(&valid(), "test.ints");
    let e = truncated_at(k.value + 12 + 4 * 4 + 1);
    assert!(matches!(
        e,
        GgufError::CountTooLarge {
            count: 5,
            remaining: 17,
            ..
        }
    ));
}

#[test]
fn string_length_past_the_end() {
    let mut b = valid();
    let k = key_at(&b, "general.architecture");
    let remaining = (b.len() - (k.value + 8)) as u64;
    put_u64(&mut b, k.value, remaining + 1);
    let e = reject(&b);
    assert!(
        matches!(e, GgufError::CountTooLarge { count, remaining: r, ref what, .. }
        if count == remaining + 1 && r == remaining && what.contains("general.architecture"))
    );
}

#[test]
fn string_length_of_2_pow_62() {
    let mut b = valid();
    let k = key_at(&b, "test.pad");
    put_u64(&mut b, k.value, 1 << 62);
    let e = reject(&b);
    assert!(matches!(e, GgufError::CountTooLarge { count, .. } if count == 1 << 62));
}

#[test]
fn key_length_of_2_pow_62() {
    let mut b = valid();
    let k = key_at(&b, "test.k2");
    put_u64(&mut b, k.at, 1 << 62);
    let e = reject(&b);
    assert!(
        matches!(e, GgufError::CountTooLarge { count, ref what, .. } if count == 1 << 62 && what.contains("metadata key #4"))
    );
}

#[test]
fn array_count_past_the_end() {
    let mut b = valid();
    let k = key_at(&b, "test.ints");
    let remaining = (b.len() - (k.value + 12)) as u64;
    // i32 items: a quarter of the bytes left is the most that can fit.
    put_u64(&mut b, k.value + 4, remaining / 4 + 1);
    let e = reject(&b);
    assert!(matches!(e, GgufError::CountTooLarge { ref what, .. } if what.contains("test.ints")));
}

#[test]
fn array_count_of_2_pow_62() {
    for key in ["test.ints", "test.strs"] {
        let mut b = valid();
        let k = key_at(&b, key);
        put_u64(&mut b, k.value + 4, 1 << 62);
        let e = reject(&b);
        assert!(
            matches!(e, GgufError::CountTooLarge { count, .. } if count == 1 << 62),
            "{key}: {e}"
        );
    }
}

#[test]
fn unknown_value_type() {
    let mut b = valid();
    let k = key_at(&b, "test.k1");
    put_u32(&mut b, k.ty, 13);
    let e = reject(&b);
    assert!(
        matches!(e, GgufError::UnknownValueType { ref key, type_id: 13, offset } if key == "test.k1" && offset == k.ty as u64)
    );
}

#[test]
fn unknown_array_item_type() {
    let mut b = valid();
    let k = key_at(&b, "test.ints");
    put_u32(&mut b, k.value, 99);
    let e = reject(&b);
    assert!(
        matches!(e, GgufError::UnknownValueType { ref key, type_id: 99, .. } if key == "test.ints")
    );
}

#[test]
fn duplicate_keys() {
    let mut b = valid();
    let k2 = key_at(&b, "test.k2");
    b[k2.at + 8..k2.ty].copy_from_slice(b"test.k1");
    let e = reject(&b);
    assert!(matches!(e, GgufError::DuplicateKey { ref key } if key == "test.k1"));
}

#[test]
fn splice_meta_keeps_the_file_valid() {
    let b = valid();
    let same = replace_str(&b, "test.k1", b"test.k1");
    assert_eq!(same, b);
    let f = GgufFile::from_bytes(replace_str(&b, "test.k1", b"a.much.longer.key")).unwrap();
    assert_eq!(f.get_u32("a.much.longer.key").unwrap(), 7);
    assert_eq!(
        f.require_tensor("tensor.cc").unwrap().data[4..8],
        1f32.to_le_bytes()
    );
}

#[test]
fn empty_key() {
    let b = replace_str(&valid(), "test.k1", b"");
    let e = reject(&b);
    assert!(matches!(e, GgufError::EmptyKey { index: 5, .. }), "{e}");
    assert!(e.to_string().contains("is empty"), "{e}");
}

#[test]
fn non_ascii_key() {
    let b = replace_str(&valid(), "test.k1", "tést.k1".as_bytes());
    let e = reject(&b);
    assert!(
        matches!(e, GgufError::NonAsciiKey { ref key, .. } if key == "tést.k1"),
        "{e}"
    );
    // The writer refuses it too, so the files it writes read back.
    let mut w = GgufWriter::new();
    w.set("tést", Value::U8(1));
    assert!(matches!(w.validate(), Err(GgufError::InvalidKey { .. })));
    let mut w = GgufWriter::new();
    w.set("", Value::U8(1));
    assert!(matches!(w.validate(), Err(GgufError::InvalidKey { .. })));
}

#[test]
fn key_of_65535_bytes_reads_and_of_65536_is_too_long() {
    let b = valid();
    let longest = "k".repeat(65_535);
    let f = GgufFile::from_bytes(replace_str(&b, "test.k1", longest.as_bytes())).unwrap();
    assert_eq!(f.get_u32(&longest).unwrap(), 7);
    // (No prefix check: 65k prefixes of a 65k file take too long.)
    let e = gguf_err(replace_str(&b, "test.k1", "k".repeat(65_536).as_bytes()));
    assert!(
        matches!(
            e,
            GgufError::KeyTooLong {
                index: 5,
                len: 65_536,
                max: 65_535,
                ..
            }
        ),
        "{e}"
    );
    let mut w = GgufWriter::new();
    w.set("k".repeat(65_536), Value::U8(1));
    assert!(matches!(w.validate(), Err(GgufError::InvalidKey { .. })));
}

#[test]
fn bool_bytes_other_than_0_and_1() {
    let mut w = GgufWriter::new();
    w.set("test.flag", Value::Bool(true));
    let bools = vec![Value::Bool(false), Value::Bool(true), Value::Bool(false)];
    w.set(
        "test.flags",
        Value::Array(Array::new(ValueType::Bool, bools)),
    );
    let b = valid_with(w);
    let f = GgufFile::from_bytes(b.clone()).unwrap();
    assert!(f.get_bool("test.flag").unwrap());
    for byte in [2u8, 0xFF] {
        let mut bad = b.clone();
        let k = key_at(&bad, "test.flag");
        bad[k.value] = byte;
        let e = reject(&bad);
        assert!(
            matches!(e, GgufError::BadBool { ref key, byte: got, offset } if key == "test.flag" && got == byte && offset == k.value as u64),
            "{e}"
        );
        // An array item: item type (4 bytes), count (8 bytes), then the bools.
        let mut bad = b.clone();
        let k = key_at(&bad, "test.flags");
        let item = k.value + 4 + 8 + 2;
        bad[item] = byte;
        let e = reject(&bad);
        assert!(
            matches!(e, GgufError::BadBool { ref key, byte: got, offset } if key == "test.flags" && got == byte && offset == item as u64),
            "{e}"
        );
    }
}

#[test]
fn invalid_utf8_in_key_and_tensor_name() {
    let mut b = valid();
    let k = key_at(&b, "test.k1");
    b[k.at + 8] = 0xFF;
    assert!(
        matches!(reject(&b), GgufError::InvalidUtf8 { ref what, .. } if what.contains("metadata key"))
    );
    let mut b = valid();
    let at = str_at(&b, "tensor.bb");
    b[at + 8 + 3] = 0xC3; // a lone UTF-8 lead byte
    assert!(
        matches!(reject(&b), GgufError::InvalidUtf8 { ref what, .. } if what.contains("tensor info #1"))
    );
}

/// One metadata pair holding `depth` arrays nested in each other, built by hand.
fn nested_by_hand(depth: usize) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&4u64.to_le_bytes());
    b.extend_from_slice(b"deep");
    b.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..depth - 1 {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    b.extend_from_slice(&0u32.to_le_bytes()); // innermost: an array of u8
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(42);
    b
}

#[test]
fn arrays_nested_too_deep() {
    // Built with the writer: 8 levels are fine, 9 are not.
    let nested = |depth: usize| {
        let mut v = Value::Array(Array::new(ValueType::U8, vec![Value::U8(1)]));
        for _ in 1..depth {
            v = Value::Array(Array::new(ValueType::Array, vec![v]));
        }
        let mut w = GgufWriter::new();
        w.set("deep", v);
        w.to_bytes()
    };
    assert!(GgufFile::from_bytes(nested(8)).is_ok());
    let e = reject(&nested(9));
    assert!(matches!(e, GgufError::NestingTooDeep { ref key, max_depth: 8 } if key == "deep"));
    // Far deeper than any stack would survive if the reader recursed without a limit.
    assert!(GgufFile::from_bytes(nested_by_hand(8)).is_ok());
    let e = gguf_err(nested_by_hand(1_000_000));
    assert!(matches!(e, GgufError::NestingTooDeep { .. }));
}

#[test]
fn alignment_zero_or_not_a_power_of_two() {
    for bad in [0u32, 48, 3] {
        let mut b = valid_with(GgufWriter::with_alignment(64).unwrap());
        let k = key_at(&b, "general.alignment");
        put_u32(&mut b, k.value, bad);
        let e = reject(&b);
        assert!(
            matches!(e, GgufError::BadAlignment { value } if value == u64::from(bad)),
            "{e}"
        );
    }
}

#[test]
fn alignment_of_the_wrong_type() {
    let mut b = valid_with(GgufWriter::with_alignment(64).unwrap());
    let k = key_at(&b, "general.alignment");
    put_u32(&mut b, k.ty, ValueType::I32.id());
    let e = reject(&b);
    assert!(
        matches!(e, GgufError::KeyType { ref key, expected: "u32", .. } if key == "general.alignment")
    );
}

// ---------------------------------------------------------------------------------------------
// Tensor infos.

#[test]
fn truncated_inside_tensor_infos() {
    let t = info_at(&valid(), "tensor.cc");
    let e = truncated_at(t.dims + 5);
    assert!(
        matches!(e, GgufError::Truncated { ref what, .. } if what == "tensor info #2 (\"tensor.cc\")")
    );
}

#[test]
fn truncated_in_padding_before_data() {
    let b = valid();
    let meta_end = info_at(&b, "tensor.cc").offset + 8;
    let data_offset = GgufFile::from_bytes(b.clone()).unwrap().data_offset() as usize;
    assert!(data_offset > meta_end + 1, "fixture needs padding");
    let e = truncated_at(meta_end + 1);
    assert!(matches!(e, GgufError::Truncated { ref what, .. } if what.contains("padding")));
}

#[test]
fn zero_five_and_too_many_dims() {
    for n in [0u32, 5, u32::MAX] {
        let mut b = valid();
        let t = info_at(&b, "tensor.aa");
        put_u32(&mut b, t.n_dims, n);
        let e = reject(&b);
        assert!(
            matches!(e, GgufError::InvalidNDims { ref tensor, n_dims } if n_dims == n && tensor == "tensor.aa"),
            "{e}"
        );
    }
}

#[test]
fn zero_dim() {
    let mut b = valid();
    let t = info_at(&b, "tensor.aa");
    put_u64(&mut b, t.dims + 8, 0);
    assert!(
        matches!(reject(&b), GgufError::ZeroDim { ref tensor, index: 1 } if tensor == "tensor.aa")
    );
}

#[test]
fn overflowing_dims() {
    // 2^64 overflows a u64; 2^63 overflows ggml's i64 element count; 2^62 f32s overflow bytes.
    for (d0, d1) in [
        (1u64 << 32, 1u64 << 32),
        (1 << 32, 1 << 31),
        (1 << 31, 1 << 31),
    ] {
        let mut b = valid();
        let t = info_at(&b, "tensor.aa");
        put_u64(&mut b, t.dims, d0);
        put_u64(&mut b, t.dims + 8, d1);
        let e = reject(&b);
        assert!(
            matches!(e, GgufError::DimsOverflow { ref dims, .. } if dims == &[d0, d1]),
            "{e}"
        );
    }
}

#[test]
fn unknown_tensor_type() {
    for id in [43u32, 1000, u32::MAX] {
        let mut b = valid();
        let t = info_at(&b, "tensor.aa");
        put_u32(&mut b, t.ty, id);
        let e = reject(&b);
        assert!(matches!(e, GgufError::UnknownTensorType { type_id, .. } if type_id == id));
    }
}

#[test]
fn unsupported_tensor_type_is_named() {
    for (id, want, gone) in [
        (20u32, "IQ4_NL", false),
        (39, "MXFP4", false),
        (16, "IQ2_XXS", false),
        (4, "Q4_2", true),
        (31, "Q4_0_4_4", true),
    ] {
        let mut b = valid();
        let t = info_at(&b, "tensor.aa");
        put_u32(&mut b, t.ty, id);
        let e = reject(&b);
        assert!(
            matches!(e, GgufError::UnsupportedTensorType { ref tensor, type_id, name, removed } if tensor == "tensor.aa" && type_id == id && name == want && removed == gone),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains(&format!("{want} (type id {id}")) && text.contains("Q8_0"),
            "{text}"
        );
    }
}

#[test]
fn row_not_a_block_multiple() {
    let mut b = valid();
    let t = info_at(&b, "tensor.bb");
    put_u64(&mut b, t.dims, 16);
    put_u64(&mut b, t.dims + 8, 4);
    let e = reject(&b);
    assert!(matches!(
        e,
        GgufError::RowNotBlockMultiple {
            ty: GgmlType::Q8_0,
            row_len: 16,
            block: 32,
            ..
        }
    ));
}

#[test]
fn duplicate_tensor_names() {
    let mut b = valid();
    let at = str_at(&b, "tensor.bb");
    b[at + 8..at + 8 + 9].copy_from_slice(b"tensor.aa");
    let e = reject(&b);
    assert!(matches!(e, GgufError::DuplicateTensor { ref name } if name == "tensor.aa"));
}

#[test]
fn tensor_name_of_63_bytes_reads_and_of_64_is_too_long() {
    // llama.cpp refuses `name.length() >= GGML_MAX_NAME` (64): 63 bytes is the most.
    let b = valid();
    let longest = "n".repeat(63);
    let f = GgufFile::from_bytes(replace_str(&b, "tensor.cc", longest.as_bytes())).unwrap();
    assert_eq!(f.require_tensor(&longest).unwrap().data.len(), 32);
    let e = reject(&replace_str(&b, "tensor.cc", "n".repeat(64).as_bytes()));
    assert!(
        matches!(
            e,
            GgufError::TensorNameTooLong {
                index: 2,
                len: 64,
                max: 63,
                ..
            }
        ),
        "{e}"
    );
    // A long name is cut in the message.
    let e = gguf_err(replace_str(&b, "tensor.cc", "n".repeat(5000).as_bytes()));
    assert!(e.to_string().len() < 400, "{e}");
}

#[test]
fn tensor_count_past_the_end_of_the_infos() {
    // One more tensor than the bytes after the metadata can describe.
    let mut b = valid();
    let infos_at = str_at(&b, "tensor.aa");
    let n = ((b.len() - infos_at) / 32 + 1) as u64;
    put_u64(&mut b, 8, n);
    let e = reject(&b);
    assert!(
        matches!(e, GgufError::CountTooLarge { count, offset: 8, .. } if count == n),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tensor data.

#[test]
fn truncated_inside_the_data() {
    let b = valid();
    let data_offset = GgufFile::from_bytes(b.clone()).unwrap().data_offset() as usize;
    // tensor.bb starts at 64 in the data section.
    let e = truncated_at(data_offset + 64 + 10);
    assert!(
        matches!(e, GgufError::Truncated { ref what, need: 68, .. } if what == "tensor data of \"tensor.bb\"")
    );
}

#[test]
fn tensor_offset_past_the_end() {
    let mut b = valid();
    let t = info_at(&b, "tensor.cc");
    put_u64(&mut b, t.offset, 1 << 40);
    let e = reject(&b);
    assert!(
        matches!(e, GgufError::TensorOutOfBounds { ref tensor, offset, size: 32, .. } if tensor == "tensor.cc" && offset == 1 << 40)
    );
}

#[test]
fn tensor_offset_plus_size_overflows() {
    let mut b = valid();
    let t = info_at(&b, "tensor.cc");
    put_u64(&mut b, t.offset, u64::MAX - 31);
    assert!(matches!(reject(&b), GgufError::TensorOutOfBounds { .. }));
}

#[test]
fn misaligned_offset() {
    let mut b = valid();
    let t = info_at(&b, "tensor.bb");
    let offset = get_u64(&b, t.offset);
    put_u64(&mut b, t.offset, offset + 4);
    let e = reject(&b);
    assert!(
        matches!(e, GgufError::Misaligned { ref tensor, alignment: 32, .. } if tensor == "tensor.bb")
    );
}

#[test]
fn overlapping_tensors() {
    let mut b = valid();
    let t = info_at(&b, "tensor.bb");
    put_u64(&mut b, t.offset, 32); // inside tensor.aa (0..64)
    let e = reject(&b);
    assert!(
        matches!(e, GgufError::TensorOverlap { ref first, ref second } if first == "tensor.aa" && second == "tensor.bb")
    );
    // Same start.
    put_u64(&mut b, t.offset, 0);
    assert!(matches!(reject(&b), GgufError::TensorOverlap { .. }));
}

// ---------------------------------------------------------------------------------------------
// No panics on arbitrary damage.

#[test]
fn single_byte_mutations_never_panic() {
    let b = valid();
    for i in 0..b.len() {
        for v in [
            0x00,
            0xFF,
            b[i] ^ 0x80,
            b[i].wrapping_add(1),
            b[i].wrapping_sub(1),
        ] {
            let mut m = b.clone();
            m[i] = v;
            if let Ok(f) = GgufFile::from_bytes(m) {
                // Whatever is accepted must be self-consistent.
                assert_eq!(f.tensor_views().count(), f.tensors().len());
            }
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    let b = valid();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut m = b.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % m.len() as u64) as usize;
            m[i] = next() as u8;
        }
        let cut = if next() % 4 == 0 {
            (next() % m.len() as u64) as usize
        } else {
            m.len()
        };
        m.truncate(cut);
        if let Ok(f) = GgufFile::from_bytes(m) {
            assert_eq!(f.tensor_views().count(), f.tensors().len());
        }
    }
}
