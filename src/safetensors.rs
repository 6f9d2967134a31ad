//! The safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON
//! header `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`,
//! then the tensor bytes. Reading validates every offset and size before use and converts
//! F32/F16/BF16 to f32; writing produces F32 or F16 tensors, atomically.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::error::{Error, Result, SafetensorsError};
use crate::fsutil::write_atomic;

/// Headers larger than this are refused before they are read (the reference implementation
/// uses the same limit).
pub const MAX_HEADER: u64 = 100 << 20;

/// A tensor read from a safetensors file, converted to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Tensors by name, and the `__metadata__` map.
pub type Contents = (BTreeMap<String, Tensor>, BTreeMap<String, String>);

/// Element types this crate writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
}

/// Most dimensions a tensor may have.
pub const MAX_DIMS: usize = 8;

/// Reads every tensor of `path` (and the `__metadata__` map).
pub fn read(path: &Path) -> Result<Contents> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|source| Error::Safetensors {
        path: path.into(),
        source,
    })
}

/// Parses a safetensors image. Every length, offset and shape is checked (in u64, against
/// the bytes present) before anything is allocated for it; each malformation has its own
/// [`SafetensorsError`].
pub fn parse(bytes: &[u8]) -> std::result::Result<Contents, SafetensorsError> {
    let (header_len, head, data) = split_header(bytes)?;
    let header: Value = serde_json::from_slice(head).map_err(|e| SafetensorsError::HeaderJson {
        header_len,
        reason: e.to_string(),
    })?;
    let obj = header
        .as_object()
        .ok_or(SafetensorsError::HeaderNotObject)?;
    let data_start = 8 + header_len;
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    let mut spans = Vec::new();
    for (name, info) in obj {
        if name == "__metadata__" {
            let m = info.as_object().ok_or(SafetensorsError::BadMetadata)?;
            for (k, v) in m {
                metadata.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
            continue;
        }
        let entry = header_entry(name, info, data_start, data.len() as u64)?;
        // Both offsets are inside `data`, hence fit in usize.
        let raw = &data[entry.begin as usize..entry.end as usize];
        spans.push((entry.begin, entry.end, name.clone()));
        let values = decode_values(entry.dtype, raw);
        let shape = usize_shape(name, &entry.shape)?;
        tensors.insert(
            name.clone(),
            Tensor {
                shape,
                data: values,
            },
        );
    }
    check_disjoint(spans)?;
    Ok((tensors, metadata))
}

/// The header length, the JSON header's bytes and the data bytes of a safetensors image,
/// the header checked to fit the image and [`MAX_HEADER`].
fn split_header(bytes: &[u8]) -> std::result::Result<(u64, &[u8], &[u8]), SafetensorsError> {
    let file_len = bytes.len() as u64;
    let Some((len_bytes, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(SafetensorsError::TooShort { len: file_len });
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    if header_len > rest.len() as u64 {
        return Err(SafetensorsError::HeaderPastEnd {
            header_len,
            file_len,
        });
    }
    if header_len > MAX_HEADER {
        return Err(SafetensorsError::HeaderTooLarge {
            header_len,
            limit: MAX_HEADER,
        });
    }
    // `header_len` fits in the bytes present, hence in usize.
    let (head, data) = rest.split_at(header_len as usize);
    Ok((header_len, head, data))
}

/// One tensor's header entry, validated: a supported dtype, a shape whose size matches its
/// data offsets, and offsets inside the data.
struct HeaderEntry<'h> {
    dtype: &'h str,
    shape: Vec<u64>,
    /// Offsets of its bytes in the data (after the header).
    begin: u64,
    end: u64,
}

/// Reads and checks the header entry `info` of tensor `name` against `data_len` bytes of
/// data at `data_start`.
fn header_entry<'h>(
    name: &str,
    info: &'h Value,
    data_start: u64,
    data_len: u64,
) -> std::result::Result<HeaderEntry<'h>, SafetensorsError> {
    let field = |field: &'static str, expected: &'static str| SafetensorsError::BadField {
        tensor: name.to_string(),
        field,
        expected,
    };
    let dtype = info
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| field("dtype", "a string"))?;
    let dims = info
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| field("shape", "a list of non-negative integers"))?;
    if dims.len() > MAX_DIMS {
        return Err(SafetensorsError::TooManyDims {
            tensor: name.to_string(),
            shape: dims.iter().filter_map(Value::as_u64).collect(),
            n_dims: dims.len(),
            limit: MAX_DIMS,
        });
    }
    let shape: Vec<u64> = dims
        .iter()
        .map(|d| {
            d.as_u64()
                .ok_or_else(|| field("shape", "a list of non-negative integers"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let offs = info
        .get("data_offsets")
        .and_then(Value::as_array)
        .and_then(|a| match a.as_slice() {
            [b, e] => Some((b.as_u64()?, e.as_u64()?)),
            _ => None,
        })
        .ok_or_else(|| field("data_offsets", "[begin, end] (two non-negative integers)"))?;
    let (b, e) = offs;
    if b > e || e > data_len {
        return Err(SafetensorsError::OffsetsOutOfBounds {
            tensor: name.to_string(),
            begin: b,
            end: e,
            data_start,
            data_len,
        });
    }
    let elem: u64 = match dtype {
        "F32" => 4,
        "F16" | "BF16" => 2,
        other => {
            return Err(SafetensorsError::UnsupportedDtype {
                tensor: name.to_string(),
                dtype: other.to_string(),
            })
        }
    };
    let need = shape
        .iter()
        .try_fold(elem, |a, &d| a.checked_mul(d))
        .ok_or_else(|| SafetensorsError::ShapeOverflow {
            tensor: name.to_string(),
            shape: shape.clone(),
        })?;
    if need != e - b {
        return Err(SafetensorsError::SizeMismatch {
            tensor: name.to_string(),
            shape,
            dtype: dtype.to_string(),
            need,
            have: e - b,
        });
    }
    Ok(HeaderEntry {
        dtype,
        shape,
        begin: b,
        end: e,
    })
}

/// The f32 values of `raw`, little-endian elements of `dtype` (F32, F16, else BF16).
fn decode_values(dtype: &str, raw: &[u8]) -> Vec<f32> {
    match dtype {
        "F32" => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "F16" => raw
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => raw
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}

/// `shape` in usize: a dim can still exceed usize on 32-bit targets when another dim is
/// zero.
fn usize_shape(name: &str, shape: &[u64]) -> std::result::Result<Vec<usize>, SafetensorsError> {
    shape
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| SafetensorsError::ShapeOverflow {
            tensor: name.to_string(),
            shape: shape.to_vec(),
        })
}

/// Refuses tensors whose bytes (`begin`, `end`, name) overlap; empty tensors take no bytes
/// and overlap nothing.
fn check_disjoint(mut spans: Vec<(u64, u64, String)>) -> std::result::Result<(), SafetensorsError> {
    spans.retain(|(b, e, _)| b < e);
    spans.sort();
    for w in spans.windows(2) {
        if let [(_, end0, first), (b1, _, second)] = w {
            if b1 < end0 {
                return Err(SafetensorsError::Overlap {
                    first: first.clone(),
                    second: second.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The bytes of a safetensors file holding `tensors` (name, shape, values) in `dtype`.
pub fn encode(
    tensors: &[(String, Vec<usize>, &[f32])],
    dtype: Dtype,
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = encode_to(&mut out, tensors, dtype, metadata);
    out
}

/// Streams a safetensors file into `w`: the header, then each tensor's values converted on
/// the way (no copy of the data is held).
pub fn encode_to(
    w: &mut dyn std::io::Write,
    tensors: &[(String, Vec<usize>, &[f32])],
    dtype: Dtype,
    metadata: &BTreeMap<String, String>,
) -> std::io::Result<()> {
    // The header is written as text directly (a JSON value tree of a thousand tensors would
    // cost megabytes of heap for a moment), keys sorted as serde_json sorts them.
    let mut head = String::from("{");
    if !metadata.is_empty() {
        head.push_str("\"__metadata__\":");
        head.push_str(&json!(metadata).to_string());
    }
    let mut offset = 0usize;
    let elem = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 => 2,
    };
    let mut sorted: Vec<&(String, Vec<usize>, &[f32])> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let dt = if dtype == Dtype::F32 { "F32" } else { "F16" };
    for (name, shape, data) in &sorted {
        let n = data.len() * elem;
        if head.len() > 1 {
            head.push(',');
        }
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        head.push_str(&format!(
            "{}:{{\"data_offsets\":[{offset},{}],\"dtype\":\"{dt}\",\"shape\":[{}]}}",
            Value::String(name.clone()),
            offset + n,
            dims.join(",")
        ));
        offset += n;
    }
    head.push('}');
    let mut head = head.into_bytes();
    // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
    while (head.len() + 8) % 8 != 0 {
        head.push(b' ');
    }
    w.write_all(&(head.len() as u64).to_le_bytes())?;
    w.write_all(&head)?;
    let mut buf = [0u8; 4096];
    for (_, _, data) in &sorted {
        for chunk in data.chunks(4096 / elem) {
            let mut n = 0;
            for &v in chunk {
                match dtype {
                    Dtype::F32 => buf[n..n + 4].copy_from_slice(&v.to_le_bytes()),
                    Dtype::F16 => {
                        buf[n..n + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes())
                    }
                }
                n += elem;
            }
            w.write_all(&buf[..n])?;
        }
    }
    Ok(())
}

/// Writes `tensors` to `path` atomically, streaming (memory stays small whatever the size).
pub fn write(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    dtype: Dtype,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    write_atomic(path, |w| encode_to(w, tensors, dtype, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_f32_and_f16() {
        let a = [1.0f32, -2.5, 3.25, 0.0, 1e-3, 65504.0];
        let b = [7.0f32];
        let t = vec![
            ("x.a".to_string(), vec![2, 3], &a[..]),
            ("b".to_string(), vec![1], &b[..]),
        ];
        let meta: BTreeMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        for dt in [Dtype::F32, Dtype::F16] {
            let bytes = encode(&t, dt, &meta);
            assert_eq!(
                (8 + u64::from_le_bytes(bytes[..8].try_into().unwrap())) % 8,
                0
            );
            let (got, m) = parse(&bytes).unwrap();
            assert_eq!(m, meta);
            assert_eq!(got["x.a"].shape, vec![2, 3]);
            let tol = if dt == Dtype::F32 { 0.0 } else { 1e-3 };
            for (x, y) in got["x.a"].data.iter().zip(&a) {
                assert!((x - y).abs() <= tol * y.abs());
            }
            assert_eq!(got["b"].data, vec![7.0]);
        }
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        let good = encode(
            &[("t".to_string(), vec![2], &[1.0f32, 2.0][..])],
            Dtype::F32,
            &BTreeMap::new(),
        );
        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_err(), "prefix {cut}");
        }
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            parse(&huge),
            Err(SafetensorsError::HeaderPastEnd { .. })
        ));
        let with = |h: &str| {
            let mut v = (h.len() as u64).to_le_bytes().to_vec();
            v.extend_from_slice(h.as_bytes());
            v.extend_from_slice(&[0u8; 16]);
            v
        };
        for (h, needle) in [
            (
                r#"{"t": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}"#,
                "not supported",
            ),
            (
                r#"{"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#,
                "needs 12 bytes",
            ),
            (
                r#"{"t": {"dtype": "F32", "shape": [2], "data_offsets": [8, 40]}}"#,
                "outside",
            ),
            (
                r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#,
                "overlap",
            ),
            (
                r#"{"t": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 8]}}"#,
                "overflows",
            ),
            // The element count fits but its size in bytes does not: refused, not wrapped.
            (
                r#"{"t": {"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 8]}}"#,
                "overflows",
            ),
            (r#"[1, 2]"#, "not a JSON object"),
        ] {
            let e = parse(&with(h)).unwrap_err().to_string();
            assert!(e.contains(needle), "{h}: {e}");
        }
    }
}
