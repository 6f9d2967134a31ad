//! The validating parser behind [`GgufFile`](super::GgufFile): a bounds-checked cursor over
//! the file's bytes and the checks listed in the [`crate::gguf`] module docs. Kept apart from
//! `reader.rs` (the public API over the parsed file) so each reads in one sitting.

use std::collections::HashMap;

use super::reader::{key_type, TensorInfo};
use super::types::{Array, Value, ValueType};
use super::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_ITEMS_TOTAL, MAX_ARRAY_LEN, MAX_DIMS,
    MAX_KEY_LEN, MAX_KV_COUNT, MAX_NESTING, MAX_STRING_LEN, MAX_TENSOR_COUNT, MAX_TENSOR_NAME_LEN,
};
use crate::error::GgufError;
use crate::quant::types::ggml_type_name;
use crate::quant::GgmlType;

/// Fewest bytes a metadata pair can take: key length, empty key, value type, a one-byte value.
const MIN_KV_LEN: u64 = 8 + 4 + 1;
/// Fewest bytes a tensor info can take: name length, empty name, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_LEN: u64 = 8 + 4 + 8 + 4 + 8;

/// Everything [`parse`] finds, before it is joined with the bytes into a `GgufFile`.
pub(crate) struct Parsed {
    pub(crate) version: u32,
    pub(crate) alignment: u64,
    pub(crate) data_offset: u64,
    pub(crate) metadata: Vec<(String, Value)>,
    pub(crate) key_index: HashMap<String, usize>,
    pub(crate) tensors: Vec<TensorInfo>,
    pub(crate) tensor_index: HashMap<String, usize>,
}

/// A bounds-checked little-endian cursor. Every read names what it was reading, for errors.
struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Array items read so far, across all keys (bounded by [`MAX_ARRAY_ITEMS_TOTAL`]).
    array_items: u64,
}

type What<'w> = &'w dyn Fn() -> String;

impl<'a> Parser<'a> {
    fn remaining(&self) -> u64 {
        self.buf.len().saturating_sub(self.pos) as u64
    }

    fn take(&mut self, n: usize, what: What<'_>) -> Result<&'a [u8], GgufError> {
        let bytes = self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end));
        let Some(bytes) = bytes else {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                need: n as u64,
                file_len: self.buf.len() as u64,
            });
        };
        self.pos += n;
        Ok(bytes)
    }

    fn fixed<const N: usize>(&mut self, what: What<'_>) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: What<'_>) -> Result<u32, GgufError> {
        self.fixed(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: What<'_>) -> Result<u64, GgufError> {
        self.fixed(what).map(u64::from_le_bytes)
    }

    /// Reads a u64 count of things each at least `min_size` bytes long and checks it (see
    /// [`Parser::check_count`]).
    fn count(&mut self, min_size: u64, limit: u64, what: What<'_>) -> Result<u64, GgufError> {
        let offset = self.pos as u64;
        let count = self.u64(what)?;
        self.check_count(count, offset, min_size, limit, what)
    }

    /// Refuses `count` things of at least `min_size` bytes each when the bytes left cannot hold
    /// them (so nothing is allocated for them), then when `count` is over `limit`.
    fn check_count(
        &self,
        count: u64,
        offset: u64,
        min_size: u64,
        limit: u64,
        what: What<'_>,
    ) -> Result<u64, GgufError> {
        let remaining = self.remaining();
        if count > remaining / min_size.max(1) {
            return Err(GgufError::CountTooLarge {
                what: what(),
                count,
                offset,
                remaining,
            });
        }
        if count > limit {
            return Err(GgufError::LimitExceeded {
                what: what(),
                value: count,
                limit,
            });
        }
        Ok(count)
    }

    fn string(&mut self, what: What<'_>) -> Result<String, GgufError> {
        let len = self.count(1, MAX_STRING_LEN, &|| format!("length of {}", what()))?;
        let offset = self.pos as u64;
        // `len` fits in the bytes left, hence in usize.
        let bytes = self.take(len as usize, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                what: what(),
                offset,
            }),
        }
    }

    /// Metadata key #`index`: 1 to [`MAX_KEY_LEN`] bytes of ASCII (the GGUF spec; llama.cpp
    /// itself refuses only the empty key).
    fn key(&mut self, index: u64) -> Result<String, GgufError> {
        let what = || format!("metadata key #{index}");
        let offset = self.pos as u64;
        let len = self.count(1, MAX_STRING_LEN, &|| format!("length of {}", what()))?;
        if len == 0 {
            return Err(GgufError::EmptyKey { index, offset });
        }
        if len > MAX_KEY_LEN as u64 {
            return Err(GgufError::KeyTooLong {
                index,
                offset,
                len,
                max: MAX_KEY_LEN,
            });
        }
        let bytes_at = self.pos as u64;
        // `len` fits in the bytes left, hence in usize.
        let bytes = self.take(len as usize, &what)?;
        let Ok(key) = std::str::from_utf8(bytes) else {
            return Err(GgufError::InvalidUtf8 {
                what: what(),
                offset: bytes_at,
            });
        };
        if !key.is_ascii() {
            return Err(GgufError::NonAsciiKey {
                key: abbreviate(key, 64),
                offset,
            });
        }
        Ok(key.to_owned())
    }

    /// A bool byte: 0 or 1, as the GGUF spec says ("anything else is invalid"). llama.cpp
    /// reads any non-zero byte as true; no writer we know of writes anything but 0 and 1.
    fn bool(&mut self, key: &str) -> Result<bool, GgufError> {
        let offset = self.pos as u64;
        let [byte] = self.fixed::<1>(&|| format!("value of key {key:?}"))?;
        check_bool(key, byte, offset)
    }

    fn value_type(&mut self, key: &str, what: What<'_>) -> Result<ValueType, GgufError> {
        let offset = self.pos as u64;
        let type_id = self.u32(what)?;
        ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_owned(),
            type_id,
            offset,
        })
    }

    /// A value of type `ty`; `level` is the number of arrays around it.
    fn value(&mut self, ty: ValueType, key: &str, level: usize) -> Result<Value, GgufError> {
        let what = || format!("value of key {key:?}");
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.fixed(&what)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.fixed(&what)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.fixed(&what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.fixed(&what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.fixed(&what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.fixed(&what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.fixed(&what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.fixed(&what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.fixed(&what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.fixed(&what)?)),
            ValueType::Bool => Value::Bool(self.bool(key)?),
            ValueType::String => Value::String(self.string(&what)?),
            ValueType::Array => Value::Array(self.array(key, level + 1)?),
        })
    }

    fn array(&mut self, key: &str, level: usize) -> Result<Array, GgufError> {
        if level > MAX_NESTING {
            return Err(GgufError::NestingTooDeep {
                key: key.to_owned(),
                max_depth: MAX_NESTING,
            });
        }
        let elem_type = self.value_type(key, &|| format!("item type of array {key:?}"))?;
        let min_size = elem_type.min_encoded_size() as u64;
        let count = self.count(min_size, MAX_ARRAY_LEN, &|| {
            format!("length of array {key:?}")
        })?;
        self.array_items = self.array_items.saturating_add(count);
        if self.array_items > MAX_ARRAY_ITEMS_TOTAL {
            return Err(GgufError::LimitExceeded {
                what: format!("array items in all metadata (at key {key:?})"),
                value: self.array_items,
                limit: MAX_ARRAY_ITEMS_TOTAL,
            });
        }
        // `count` was checked against the bytes left: every allocation below is bounded by
        // the file. Strings and scalars are stored compactly (see `Array`).
        let what = || format!("value of key {key:?}");
        match elem_type {
            ValueType::String => {
                let mut ends = Vec::with_capacity(count as usize);
                let mut text = String::new();
                for _ in 0..count {
                    let len = self.count(1, MAX_STRING_LEN, &|| format!("length of {}", what()))?;
                    let offset = self.pos as u64;
                    let bytes = self.take(len as usize, &what)?;
                    let s = std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 {
                        what: what(),
                        offset,
                    })?;
                    text.push_str(s);
                    ends.push(text.len());
                }
                Ok(Array::strings(text, ends))
            }
            ValueType::Array => {
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_type, key, level)?);
                }
                Ok(Array::new(elem_type, items))
            }
            scalar => {
                let size = scalar.fixed_size().unwrap_or(1);
                let start = self.pos as u64;
                // count × size ≤ the bytes left (checked above).
                let bytes = self.take(count as usize * size, &what)?.to_vec();
                if scalar == ValueType::Bool {
                    for (i, &b) in bytes.iter().enumerate() {
                        check_bool(key, b, start + i as u64)?;
                    }
                }
                Ok(Array::scalars(scalar, bytes))
            }
        }
    }

    fn tensor_info(&mut self, i: u64) -> Result<TensorInfo, GgufError> {
        let offset = self.pos as u64;
        let name = self.string(&|| format!("name of tensor info #{i}"))?;
        if name.len() > MAX_TENSOR_NAME_LEN {
            return Err(GgufError::TensorNameTooLong {
                name: abbreviate(&name, 64),
                index: i,
                offset,
                len: name.len(),
                max: MAX_TENSOR_NAME_LEN,
            });
        }
        let what = || format!("tensor info #{i} ({name:?})");
        let n_dims = self.u32(&what)?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(GgufError::InvalidNDims {
                tensor: name,
                n_dims,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64(&what)?);
        }
        let type_id = self.u32(&what)?;
        let offset = self.u64(&what)?;
        let Some(ty) = GgmlType::from_id(type_id) else {
            return Err(match ggml_type_name(type_id) {
                Some((type_name, removed)) => GgufError::UnsupportedTensorType {
                    tensor: name,
                    type_id,
                    name: type_name,
                    removed,
                },
                None => GgufError::UnknownTensorType {
                    tensor: name,
                    type_id,
                },
            });
        };
        let n_bytes = tensor_size(&name, ty, &dims)?;
        Ok(TensorInfo {
            name,
            ty,
            dims,
            offset,
            n_bytes,
        })
    }
}

/// A bool byte at `offset`, 0 or 1 (see [`Parser::bool`]).
fn check_bool(key: &str, byte: u8, offset: u64) -> Result<bool, GgufError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(GgufError::BadBool {
            key: key.to_owned(),
            byte,
            offset,
        }),
    }
}

/// The first `max` characters of `s`, with "…" when it is cut (for names in errors).
fn abbreviate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// Checks a tensor's dims against its type and returns its size in bytes. Shared with the
/// writer, so that it refuses exactly what the reader refuses.
pub(crate) fn tensor_size(name: &str, ty: GgmlType, dims: &[u64]) -> Result<u64, GgufError> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(GgufError::InvalidNDims {
            tensor: name.to_owned(),
            n_dims: u32::try_from(dims.len()).unwrap_or(u32::MAX),
        });
    }
    if let Some(index) = dims.iter().position(|&d| d == 0) {
        return Err(GgufError::ZeroDim {
            tensor: name.to_owned(),
            index,
        });
    }
    let overflow = || GgufError::DimsOverflow {
        tensor: name.to_owned(),
        dims: dims.to_vec(),
    };
    // ggml counts elements in an i64.
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| i64::try_from(n).is_ok())
        .ok_or_else(overflow)?;
    let row_len = dims.first().copied().unwrap_or(1);
    let block = ty.block_size();
    if row_len % block as u64 != 0 {
        return Err(GgufError::RowNotBlockMultiple {
            tensor: name.to_owned(),
            ty,
            row_len,
            block,
        });
    }
    ty.bytes_for(n_elements).ok_or_else(overflow)
}

/// Parses and validates a whole GGUF image.
pub(crate) fn parse(buf: &[u8]) -> Result<Parsed, GgufError> {
    let mut p = Parser {
        buf,
        pos: 0,
        array_items: 0,
    };
    let file_len = buf.len() as u64;

    // Header.
    if !GGUF_MAGIC.starts_with(buf.get(..4).unwrap_or(buf)) {
        let mut found = [0u8; 4];
        for (dst, src) in found.iter_mut().zip(buf) {
            *dst = *src;
        }
        return Err(GgufError::BadMagic { found });
    }
    let _magic: [u8; 4] = p.fixed(&|| "header (magic)".to_owned())?;
    let version = p.u32(&|| "header (version)".to_owned())?;
    if version != 0 && version & 0xFFFF == 0 {
        return Err(GgufError::BigEndian {
            version: version.swap_bytes(),
        });
    }
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion { version });
    }
    // Each count is checked against the bytes left just before its table is allocated.
    let n_tensors = p.u64(&|| "header (tensor count)".to_owned())?;
    let n_kv = p.u64(&|| "header (metadata count)".to_owned())?;
    p.check_count(n_kv, 16, MIN_KV_LEN, MAX_KV_COUNT, &|| {
        "header (metadata count)".to_owned()
    })?;

    // Metadata.
    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut key_index = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = p.key(i)?;
        if key_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        let ty = p.value_type(&key, &|| format!("value type of key {key:?}"))?;
        let value = p.value(ty, &key, 0)?;
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }
    let alignment = match key_index.get(ALIGNMENT_KEY).and_then(|&i| metadata.get(i)) {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
        Some((_, Value::U32(a))) => return Err(GgufError::BadAlignment { value: (*a).into() }),
        Some((key, other)) => return Err(key_type(key, "u32", other)),
    };

    // Tensor infos.
    p.check_count(n_tensors, 8, MIN_TENSOR_INFO_LEN, MAX_TENSOR_COUNT, &|| {
        "header (tensor count)".to_owned()
    })?;
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let info = p.tensor_info(i)?;
        if tensor_index.contains_key(&info.name) {
            return Err(GgufError::DuplicateTensor { name: info.name });
        }
        tensor_index.insert(info.name.clone(), tensors.len());
        tensors.push(info);
    }

    // Data section: starts at the next multiple of the alignment.
    let meta_end = p.pos as u64;
    // Cannot overflow (`meta_end` is at most the file length, the alignment at most 2^31),
    // but saturate rather than trust that.
    let data_offset = meta_end
        .checked_next_multiple_of(alignment)
        .unwrap_or(u64::MAX);
    if !tensors.is_empty() && data_offset > file_len {
        return Err(GgufError::Truncated {
            what: "padding before the tensor data".to_owned(),
            offset: meta_end,
            need: data_offset - meta_end,
            file_len,
        });
    }
    check_layout(&tensors, alignment, data_offset, file_len)?;

    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}

/// Every tensor aligned, inside the data section, and not overlapping another.
fn check_layout(
    tensors: &[TensorInfo],
    alignment: u64,
    data_offset: u64,
    file_len: u64,
) -> Result<(), GgufError> {
    let data_len = file_len.saturating_sub(data_offset);
    let out_of_bounds = |t: &TensorInfo| GgufError::TensorOutOfBounds {
        tensor: t.name.clone(),
        offset: t.offset,
        size: t.n_bytes,
        data_len,
    };
    for t in tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::Misaligned {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        if t.offset.checked_add(t.n_bytes).is_none() {
            return Err(out_of_bounds(t));
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| (t.offset, t.n_bytes));
    for t in &by_offset {
        if t.offset.saturating_add(t.n_bytes) > data_len {
            // A tensor starting inside the file but ending past it: the file was cut short.
            return Err(if t.offset < data_len {
                GgufError::Truncated {
                    what: format!("tensor data of {:?}", t.name),
                    offset: data_offset + t.offset,
                    need: t.n_bytes,
                    file_len,
                }
            } else {
                out_of_bounds(t)
            });
        }
    }
    // Sorted by offset, any overlap shows up between neighbours.
    for pair in by_offset.windows(2) {
        if let [a, b] = pair {
            if a.offset + a.n_bytes > b.offset {
                return Err(GgufError::TensorOverlap {
                    first: a.name.clone(),
                    second: b.name.clone(),
                });
            }
        }
    }
    Ok(())
}
