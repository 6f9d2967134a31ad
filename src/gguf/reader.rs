//! The validating GGUF reader: parses and checks the whole header, metadata and tensor table
//! up front (see the module docs of [`crate::gguf`] for the list of checks and limits), then
//! hands out zero-copy views of tensor data.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::types::{Array, Value, ValueType};
use super::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_ITEMS_TOTAL, MAX_ARRAY_LEN, MAX_DIMS,
    MAX_KV_COUNT, MAX_NESTING, MAX_STRING_LEN, MAX_TENSOR_COUNT,
};
use crate::error::{Error, GgufError};
use crate::quant::GgmlType;

/// Fewest bytes a metadata pair can take: key length, empty key, value type, a one-byte value.
const MIN_KV_LEN: u64 = 8 + 4 + 1;
/// Fewest bytes a tensor info can take: name length, empty name, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_LEN: u64 = 8 + 4 + 8 + 4 + 8;

/// A parsed, validated GGUF file. Owns its bytes (a read-only memory map or a vector).
pub struct GgufFile {
    backing: Backing,
    path: Option<PathBuf>,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

enum Backing {
    Mmap(Mmap),
    Bytes(Vec<u8>),
}

/// A tensor's entry in the tensor table. `dims` are in ggml order: `dims[0]` is the row length
/// (fastest varying).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    pub dims: Vec<u64>,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
    /// Bytes of data (validated to lie inside the data section for a reader's tensors).
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The number of elements (product of the dims; saturates for hand-built infos).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// The row length, `dims[0]` (1 for a dimensionless info).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// The number of rows: the product of the dims after the first.
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Bytes per row, or `None` when the row length is not a whole number of blocks.
    pub fn row_bytes(&self) -> Option<u64> {
        self.ty.bytes_for(self.row_len())
    }
}

/// A tensor's info and its bytes, borrowed from the file (no copy).
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// The bytes of row `i` (rows as in [`TensorInfo::n_rows`]), or `None` past the end.
    pub fn row(&self, i: u64) -> Option<&'a [u8]> {
        let row_bytes = usize::try_from(self.info.row_bytes()?).ok()?;
        let start = usize::try_from(i).ok()?.checked_mul(row_bytes)?;
        self.data.get(start..start.checked_add(row_bytes)?)
    }
}

impl GgufFile {
    /// Memory-maps and validates the file at `path`. I/O errors become [`Error::Io`] naming
    /// the path; format errors become [`Error::Gguf`].
    pub fn open(path: impl AsRef<Path>) -> crate::Result<GgufFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let backing = if len == 0 {
            // Mapping an empty file fails on some platforms; it is invalid anyway.
            Backing::Bytes(Vec::new())
        } else {
            // SAFETY: the map is read-only and only ever read through `&[u8]`. The file is
            // treated as immutable while it is open: if another process truncates or rewrites
            // it meanwhile, reads may fault (SIGBUS) or see changed bytes. That is the
            // documented hazard of memory-mapping (see memmap2::Mmap) and is accepted, as in
            // llama.cpp; our own writer replaces files by rename, never in place.
            let map = unsafe { Mmap::map(&file) };
            Backing::Mmap(map.map_err(|e| Error::io(path, e))?)
        };
        Ok(GgufFile::from_backing(backing, Some(path.to_path_buf()))?)
    }

    /// Validates an in-memory GGUF image (tests, fixtures, data received over the network).
    pub fn from_bytes(bytes: Vec<u8>) -> crate::Result<GgufFile> {
        Ok(GgufFile::from_backing(Backing::Bytes(bytes), None)?)
    }

    fn from_backing(backing: Backing, path: Option<PathBuf>) -> Result<GgufFile, GgufError> {
        let p = parse(backing.bytes())?;
        Ok(GgufFile {
            backing,
            path,
            version: p.version,
            alignment: p.alignment,
            data_offset: p.data_offset,
            metadata: p.metadata,
            key_index: p.key_index,
            tensors: p.tensors,
            tensor_index: p.tensor_index,
        })
    }

    /// The path the file was opened from (`None` for [`GgufFile::from_bytes`]).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// The data alignment (`general.alignment`, 32 when absent).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the data section starts, in bytes from the start of the file. For a file without
    /// tensors this may equal or exceed [`GgufFile::file_len`] (the data section is empty).
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata pairs, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let &i = self.key_index.get(key)?;
        self.metadata.get(i).map(|(_, v)| v)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    /// An integer key whose value fits a `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        to_u32(key, self.require(key)?)
    }

    /// A non-negative integer key.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        to_u64(key, self.require(key)?)
    }

    /// An integer key whose value fits an `i64`.
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        to_i64(key, self.require(key)?)
    }

    /// An F32 or F64 key.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        to_f32(key, self.require(key)?)
    }

    /// A bool key.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        to_bool(key, self.require(key)?)
    }

    /// A string key.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        to_str(key, self.require(key)?)
    }

    /// An array key.
    pub fn get_array(&self, key: &str) -> Result<&Array, GgufError> {
        to_array(key, self.require(key)?)
    }

    /// Like [`GgufFile::get_u32`], `None` when absent.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.get(key).map(|v| to_u32(key, v)).transpose()
    }

    /// Like [`GgufFile::get_u64`], `None` when absent.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.get(key).map(|v| to_u64(key, v)).transpose()
    }

    /// Like [`GgufFile::get_i64`], `None` when absent.
    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>, GgufError> {
        self.get(key).map(|v| to_i64(key, v)).transpose()
    }

    /// Like [`GgufFile::get_f32`], `None` when absent.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.get(key).map(|v| to_f32(key, v)).transpose()
    }

    /// Like [`GgufFile::get_bool`], `None` when absent.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.get(key).map(|v| to_bool(key, v)).transpose()
    }

    /// Like [`GgufFile::get_str`], `None` when absent.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.get(key).map(|v| to_str(key, v)).transpose()
    }

    /// Like [`GgufFile::get_array`], `None` when absent.
    pub fn opt_array(&self, key: &str) -> Result<Option<&Array>, GgufError> {
        self.get(key).map(|v| to_array(key, v)).transpose()
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of tensor `name`, if present.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        let &i = self.tensor_index.get(name)?;
        self.tensors.get(i)
    }

    /// Tensor `name` and its bytes, if present.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        self.view(self.tensor_info(name)?)
    }

    /// Tensor `name`, or [`GgufError::MissingTensor`].
    pub fn require_tensor(&self, name: &str) -> Result<TensorView<'_>, GgufError> {
        self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            name: name.to_owned(),
        })
    }

    /// Every tensor with its bytes, in file order.
    pub fn tensor_views(&self) -> impl Iterator<Item = TensorView<'_>> + '_ {
        self.tensors.iter().filter_map(|info| self.view(info))
    }

    fn view<'a>(&'a self, info: &'a TensorInfo) -> Option<TensorView<'a>> {
        let start = self.data_offset.checked_add(info.offset)?;
        let end = start.checked_add(info.n_bytes)?;
        let range = usize::try_from(start).ok()?..usize::try_from(end).ok()?;
        let data = self.bytes().get(range)?;
        Some(TensorView { info, data })
    }
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("file_len", &self.file_len())
            .field("metadata_len", &self.metadata.len())
            .field("tensor_count", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Bytes(v) => v,
        }
    }
}

fn key_type(key: &str, expected: &'static str, found: &Value) -> GgufError {
    GgufError::KeyType {
        key: key.to_owned(),
        expected,
        found: found.describe(),
    }
}

fn to_u32(key: &str, v: &Value) -> Result<u32, GgufError> {
    let n = v.as_u64().and_then(|n| u32::try_from(n).ok());
    n.ok_or_else(|| key_type(key, "an integer fitting u32", v))
}

fn to_u64(key: &str, v: &Value) -> Result<u64, GgufError> {
    v.as_u64()
        .ok_or_else(|| key_type(key, "a non-negative integer", v))
}

fn to_i64(key: &str, v: &Value) -> Result<i64, GgufError> {
    v.as_i64()
        .ok_or_else(|| key_type(key, "an integer fitting i64", v))
}

fn to_f32(key: &str, v: &Value) -> Result<f32, GgufError> {
    match *v {
        Value::F32(x) => Ok(x),
        // An f64 outside the f32 range would silently become infinite; refuse it.
        Value::F64(x) if !x.is_finite() || (x as f32).is_finite() => Ok(x as f32),
        _ => Err(key_type(key, "f32 (or f64 in f32 range)", v)),
    }
}

fn to_bool(key: &str, v: &Value) -> Result<bool, GgufError> {
    v.as_bool().ok_or_else(|| key_type(key, "bool", v))
}

fn to_str<'a>(key: &str, v: &'a Value) -> Result<&'a str, GgufError> {
    v.as_str().ok_or_else(|| key_type(key, "string", v))
}

fn to_array<'a>(key: &str, v: &'a Value) -> Result<&'a Array, GgufError> {
    v.as_array().ok_or_else(|| key_type(key, "array", v))
}

/// Everything [`parse`] finds, before it is joined with the bytes into a [`GgufFile`].
struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
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

    /// Reads a u64 count of things each at least `min_size` bytes long; refuses it when the
    /// bytes left cannot hold that many (before anything is allocated), then when over `limit`.
    fn count(&mut self, min_size: u64, limit: u64, what: What<'_>) -> Result<u64, GgufError> {
        let offset = self.pos as u64;
        let count = self.u64(what)?;
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
            // Any non-zero byte reads as true, as in llama.cpp.
            ValueType::Bool => Value::Bool(self.fixed::<1>(&what)? != [0]),
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
        // `count` was checked against the bytes left: the allocation is bounded by the file.
        let mut items = Vec::with_capacity(count as usize);
        for _ in 0..count {
            items.push(self.value(elem_type, key, level)?);
        }
        Ok(Array { elem_type, items })
    }

    fn tensor_info(&mut self, i: u64) -> Result<TensorInfo, GgufError> {
        let name = self.string(&|| format!("name of tensor info #{i}"))?;
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
            return Err(GgufError::UnknownTensorType {
                tensor: name,
                type_id,
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

fn parse(buf: &[u8]) -> Result<Parsed, GgufError> {
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
    let n_tensors = p.count(MIN_TENSOR_INFO_LEN, MAX_TENSOR_COUNT, &|| {
        "header (tensor count)".to_owned()
    })?;
    let n_kv = p.count(MIN_KV_LEN, MAX_KV_COUNT, &|| {
        "header (metadata count)".to_owned()
    })?;

    // Metadata. Counts are bounded by the bytes left, so these allocations are too.
    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut key_index = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = p.string(&|| format!("metadata key #{i}"))?;
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
    let n_tensors_left = p.remaining() / MIN_TENSOR_INFO_LEN;
    if n_tensors > n_tensors_left {
        return Err(GgufError::CountTooLarge {
            what: "header (tensor count), checked after the metadata".to_owned(),
            count: n_tensors,
            offset: 8,
            remaining: p.remaining(),
        });
    }
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
