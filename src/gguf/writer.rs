//! The GGUF writer: metadata and tensors in memory, written as a version 3 file with every
//! tensor at an aligned offset (in insertion order) and padded to the alignment.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use super::parse::tensor_size;
use super::reader::GgufFile;
use super::types::{scalar_bytes, ItemRef, Value};
use super::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, MAX_KEY_LEN, MAX_TENSOR_NAME_LEN,
};
use crate::error::GgufError;
use crate::quant::GgmlType;

/// Builds a GGUF file: metadata pairs in first-insertion order, then tensors in insertion order.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<PendingTensor>,
    tensor_index: HashMap<String, usize>,
}

#[derive(Clone, Debug)]
struct PendingTensor {
    name: String,
    ty: GgmlType,
    dims: Vec<u64>,
    n_bytes: u64,
    /// `None` for a tensor declared with [`GgufWriter::declare_tensor`], whose bytes come
    /// from the `fill` callback of [`GgufWriter::write_streaming`].
    data: Option<Vec<u8>>,
}

/// A tensor the `fill` callback of [`GgufWriter::write_streaming`] must write: exactly
/// `n_bytes` bytes of `ty` with dims `dims` (ggml order).
#[derive(Clone, Copy, Debug)]
pub struct StreamedTensor<'a> {
    /// Position in insertion order.
    pub index: usize,
    pub name: &'a str,
    pub ty: GgmlType,
    pub dims: &'a [u64],
    pub n_bytes: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl GgufWriter {
    /// An empty version 3 file with the default alignment (32).
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            key_index: HashMap::new(),
            tensors: Vec::new(),
            tensor_index: HashMap::new(),
        }
    }

    /// An empty file with data alignment `alignment`, a power of two that fits a u32.
    /// Anything but 32 is recorded as the first metadata key, `general.alignment`.
    pub fn with_alignment(alignment: u64) -> crate::Result<Self> {
        let mut w = GgufWriter::new();
        match u32::try_from(alignment) {
            Ok(a) if a.is_power_of_two() => {
                if alignment != DEFAULT_ALIGNMENT {
                    w.set(ALIGNMENT_KEY, Value::U32(a));
                }
                Ok(w)
            }
            _ => Err(GgufError::BadAlignment { value: alignment }.into()),
        }
    }

    /// The data alignment the file will be written with.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Sets `key`, replacing an existing value in place (the key keeps its first position).
    ///
    /// Setting `general.alignment` to a valid u32 changes the alignment. Invalid values (an
    /// array whose items do not match its item type, a bad alignment) are kept and reported
    /// by [`GgufWriter::validate`] and the write methods; [`GgufWriter::try_set`] refuses them.
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        if key == ALIGNMENT_KEY {
            if let Value::U32(a) = value {
                if a.is_power_of_two() {
                    self.alignment = a.into();
                }
            }
        }
        match self.key_index.get(&key) {
            Some(&i) => {
                if let Some(slot) = self.metadata.get_mut(i) {
                    slot.1 = value;
                }
            }
            None => {
                self.key_index.insert(key.clone(), self.metadata.len());
                self.metadata.push((key, value));
            }
        }
    }

    /// Like [`GgufWriter::set`], but refuses a value [`GgufWriter::validate`] would refuse.
    pub fn try_set(&mut self, key: impl Into<String>, value: Value) -> Result<(), GgufError> {
        let key = key.into();
        check_value(&key, &value)?;
        self.set(key, value);
        Ok(())
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let &i = self.key_index.get(key)?;
        self.metadata.get(i).map(|(_, v)| v)
    }

    /// The metadata pairs, in the order they will be written.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// A writer holding every metadata pair and tensor of `file`, in the file's order: to
    /// change a few and write a new file (written unchanged, it is the same file).
    pub fn copy_of(file: &GgufFile) -> crate::Result<Self> {
        let mut w = GgufWriter::new();
        for (k, v) in file.metadata() {
            w.set(k.clone(), v.clone());
        }
        for tv in file.tensor_views() {
            w.add_tensor(
                tv.info.name.clone(),
                tv.info.ty,
                &tv.info.dims,
                tv.data.to_vec(),
            )?;
        }
        Ok(w)
    }

    /// Adds a tensor. `dims` are in ggml order (`dims[0]` is the row length); `data` must
    /// hold exactly the bytes of that many elements of `ty`. Refuses what the reader refuses
    /// ([`GgufError::InvalidTensor`] naming the reason), names llama.cpp cannot load (longer
    /// than [`MAX_TENSOR_NAME_LEN`] bytes), and repeated names ([`GgufError::DuplicateTensor`]).
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        dims: &[u64],
        data: Vec<u8>,
    ) -> crate::Result<()> {
        self.push_tensor(name.into(), ty, dims, Some(data))
    }

    /// Declares a tensor without its bytes: [`GgufWriter::write_streaming`] asks for them
    /// when the file is written, so a large file never has to be held in memory. The same
    /// checks as [`GgufWriter::add_tensor`] apply. A writer with declared tensors can only be
    /// written by [`GgufWriter::write_streaming`] / [`GgufWriter::write_file_streaming`].
    pub fn declare_tensor(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        dims: &[u64],
    ) -> crate::Result<()> {
        self.push_tensor(name.into(), ty, dims, None)
    }

    fn push_tensor(
        &mut self,
        name: String,
        ty: GgmlType,
        dims: &[u64],
        data: Option<Vec<u8>>,
    ) -> crate::Result<()> {
        let invalid = |reason: String| GgufError::InvalidTensor {
            name: name.clone(),
            reason,
        };
        if self.tensor_index.contains_key(&name) {
            return Err(GgufError::DuplicateTensor { name }.into());
        }
        if name.len() > MAX_TENSOR_NAME_LEN {
            let reason = format!(
                "the name is {} bytes long; llama.cpp loads at most {MAX_TENSOR_NAME_LEN}",
                name.len()
            );
            return Err(invalid(reason).into());
        }
        let n_bytes = tensor_size(&name, ty, dims).map_err(|e| invalid(e.to_string()))?;
        if let Some(data) = &data {
            if data.len() as u64 != n_bytes {
                let reason = format!(
                    "{} bytes of data, but {ty} {dims:?} takes {n_bytes}",
                    data.len()
                );
                return Err(invalid(reason).into());
            }
        }
        self.tensor_index.insert(name.clone(), self.tensors.len());
        self.tensors.push(PendingTensor {
            name,
            ty,
            dims: dims.to_vec(),
            n_bytes,
            data,
        });
        Ok(())
    }

    /// Checks what [`GgufWriter::set`] accepted without checking: every key is 1 to
    /// [`MAX_KEY_LEN`](super::MAX_KEY_LEN) bytes of ASCII ([`GgufError::InvalidKey`]), every
    /// array's items have its item type ([`GgufError::KeyType`]), `general.alignment` is a
    /// power-of-two u32.
    pub fn validate(&self) -> Result<(), GgufError> {
        self.metadata
            .iter()
            .try_for_each(|(key, value)| check_value(key, value))
    }

    /// Writes the file to `w` (buffer it: this issues many small writes). Fails with
    /// [`io::ErrorKind::InvalidInput`] when [`GgufWriter::validate`] fails, before writing,
    /// or when a tensor was only declared (use [`GgufWriter::write_streaming`]).
    pub fn write_to<W: Write>(&self, w: W) -> io::Result<()> {
        if let Some(t) = self.tensors.iter().find(|t| t.data.is_none()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "tensor {:?} was declared without data; write the file with write_streaming",
                    t.name
                ),
            ));
        }
        self.write_streaming(w, |_, _| Ok(())).map_err(|e| match e {
            crate::Error::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
        })
    }

    /// Writes the file to `w`, asking `fill` for the bytes of every tensor declared with
    /// [`GgufWriter::declare_tensor`], in insertion order, as they are due: `fill` must write
    /// exactly [`StreamedTensor::n_bytes`] bytes to the sink it is given (in as many pieces
    /// as it likes), or the write fails with [`GgufError::InvalidTensor`]. Tensors added
    /// with their data are written as they are. Only the header is ever held in memory.
    pub fn write_streaming<W: Write>(
        &self,
        mut w: W,
        mut fill: impl FnMut(StreamedTensor<'_>, &mut dyn Write) -> crate::Result<()>,
    ) -> crate::Result<()> {
        let io_err = |e| crate::Error::io("<gguf output>", e);
        self.validate()?;
        let (meta, offsets) = self.encode_meta();
        w.write_all(&meta).map_err(io_err)?;
        let mut pos = meta.len() as u64;
        for (i, (t, &offset)) in self.tensors.iter().zip(&offsets).enumerate() {
            let start = meta.len() as u64 + offset;
            write_zeros(&mut w, start - pos).map_err(io_err)?;
            match &t.data {
                Some(d) => w.write_all(d).map_err(io_err)?,
                None => {
                    let mut sink = CountingWriter {
                        inner: &mut w,
                        written: 0,
                        limit: t.n_bytes,
                    };
                    let info = StreamedTensor {
                        index: i,
                        name: &t.name,
                        ty: t.ty,
                        dims: &t.dims,
                        n_bytes: t.n_bytes,
                    };
                    fill(info, &mut sink)?;
                    if sink.written != t.n_bytes {
                        return Err(GgufError::InvalidTensor {
                            name: t.name.clone(),
                            reason: format!(
                                "{} bytes were streamed, but {} {:?} takes {}",
                                sink.written, t.ty, t.dims, t.n_bytes
                            ),
                        }
                        .into());
                    }
                }
            }
            pos = start + t.n_bytes;
        }
        write_zeros(&mut w, pos.next_multiple_of(self.alignment) - pos).map_err(io_err)?;
        w.flush().map_err(io_err)
    }

    /// [`GgufWriter::write_streaming`] into `path`, atomically (see
    /// [`GgufWriter::write_file`]): a failure leaves any existing file untouched.
    pub fn write_file_streaming(
        &self,
        path: impl AsRef<Path>,
        fill: impl FnMut(StreamedTensor<'_>, &mut dyn Write) -> crate::Result<()>,
    ) -> crate::Result<()> {
        let path = path.as_ref();
        self.validate()?;
        let mut failure = None;
        let written = crate::fsutil::write_atomic(path, |w| {
            self.write_streaming(w, fill).map_err(|e| {
                let text = e.to_string();
                failure = Some(e);
                io::Error::other(text)
            })
        });
        match (written, failure) {
            (Err(_), Some(e)) => Err(e),
            (r, _) => r,
        }
    }

    /// The whole file in memory.
    ///
    /// # Panics
    ///
    /// When [`GgufWriter::validate`] fails (metadata built with an inconsistent [`Array`]);
    /// use [`GgufWriter::write_to`] to get an error instead.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = self.write_to(&mut out) {
            panic!("GgufWriter::to_bytes: {e}");
        }
        out
    }

    /// Writes the file to `path` atomically: into a temporary file in the same directory,
    /// fsynced, then renamed over `path`. An existing file is never left half-written.
    pub fn write_file(&self, path: impl AsRef<Path>) -> crate::Result<()> {
        self.validate()?;
        crate::fsutil::write_atomic(path.as_ref(), |w| self.write_to(w))
    }

    /// Header, metadata, tensor infos and padding; and each tensor's offset in the data section.
    fn encode_meta(&self) -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        out.extend_from_slice(GGUF_MAGIC);
        out.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.n_bytes).next_multiple_of(self.alignment);
        }
        let padded = (out.len() as u64).next_multiple_of(self.alignment);
        out.resize(padded as usize, 0);
        (out, offsets)
    }
}

fn check_value(key: &str, value: &Value) -> Result<(), GgufError> {
    // The reader's key rules (see `parse.rs`).
    let bad_key = |reason: String| GgufError::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() {
        return Err(bad_key("a GGUF key is not empty".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(bad_key(format!(
            "it is {} bytes long; a GGUF key is at most {MAX_KEY_LEN}",
            key.len()
        )));
    }
    if !key.is_ascii() {
        return Err(bad_key("a GGUF key is ASCII".into()));
    }
    if key == ALIGNMENT_KEY {
        match *value {
            Value::U32(a) if a.is_power_of_two() => {}
            Value::U32(a) => return Err(GgufError::BadAlignment { value: a.into() }),
            ref other => {
                return Err(GgufError::KeyType {
                    key: key.to_owned(),
                    expected: "u32",
                    found: other.describe(),
                })
            }
        }
    }
    if let Value::Array(a) = value {
        if let Some((index, expected, found)) = a.first_mismatch() {
            return Err(GgufError::KeyType {
                key: key.to_owned(),
                expected: expected.name(),
                found: format!("{found} at array index {index}"),
            });
        }
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A value without its type id (which precedes top-level values only).
fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => put_str(out, s),
        Value::Array(a) => {
            out.extend_from_slice(&a.elem_type.id().to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for i in 0..a.len() {
                match a.item(i) {
                    Some(ItemRef::Str(s)) => put_str(out, s),
                    Some(ItemRef::Scalar(b)) => out.extend_from_slice(b),
                    Some(ItemRef::Value(v)) => put_value(out, v),
                    None => {}
                }
            }
        }
        scalar => scalar_bytes(scalar, out),
    }
}

/// Passes bytes through and counts them; refuses to go past `limit`.
struct CountingWriter<'a, W> {
    inner: &'a mut W,
    written: u64,
    limit: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "tensor data overflows: {} bytes past its {} bytes",
                    self.written + buf.len() as u64 - self.limit,
                    self.limit
                ),
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_zeros<W: Write>(w: &mut W, mut n: u64) -> io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let chunk = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..chunk])?;
        n -= chunk as u64;
    }
    Ok(())
}
