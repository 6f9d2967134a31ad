//! The validating GGUF reader: parses and checks the whole header, metadata and tensor table
//! up front (see the module docs of [`crate::gguf`] for the list of checks and limits), then
//! hands out zero-copy views of tensor data.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::parse;
use super::types::{Array, Value};
use crate::error::{Error, GgufError};
use crate::quant::GgmlType;

/// A parsed, validated GGUF file. Owns its bytes (a read-only memory map or a vector); every
/// check runs once, when it is opened, and tensor views borrow from it without copying.
/// `Send + Sync`: share it between threads behind an `Arc`. A mapped file must not be
/// modified by another process while it is open (see the `SAFETY` note in [`GgufFile::open`]).
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
    /// the path (a directory is one, of kind [`std::io::ErrorKind::IsADirectory`], saying a
    /// GGUF file is expected); format errors become [`Error::GgufFile`], naming the path too.
    pub fn open(path: impl AsRef<Path>) -> crate::Result<GgufFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        // Mapping a directory fails with ENODEV ("No such device"), which says nothing useful.
        if meta.is_dir() {
            return Err(Error::io(path, directory_error(path)));
        }
        let len = meta.len();
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
        GgufFile::from_backing(backing, Some(path.to_path_buf())).map_err(|source| {
            Error::GgufFile {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Validates an in-memory GGUF image (tests, fixtures, data received over the network).
    pub fn from_bytes(bytes: Vec<u8>) -> crate::Result<GgufFile> {
        Ok(GgufFile::from_backing(Backing::Bytes(bytes), None)?)
    }

    fn from_backing(backing: Backing, path: Option<PathBuf>) -> Result<GgufFile, GgufError> {
        let p = parse::parse(backing.bytes())?;
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

/// The error for a directory given where a GGUF file is expected, naming the GGUF files in
/// it (a few) when there are any.
fn directory_error(dir: &Path) -> std::io::Error {
    let mut ggufs: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    ggufs.sort();
    let hint = match ggufs.as_slice() {
        [] => String::new(),
        [one] => format!(" (it holds {one})"),
        many => {
            let shown = many.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            let more = if many.len() > 3 { ", …" } else { "" };
            format!(" (it holds {shown}{more})")
        }
    };
    std::io::Error::new(
        std::io::ErrorKind::IsADirectory,
        format!("is a directory; a GGUF file is expected{hint}"),
    )
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

pub(crate) fn key_type(key: &str, expected: &'static str, found: &Value) -> GgufError {
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
