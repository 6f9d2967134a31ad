//! GGUF v2/v3: a validating reader over memmap2 with zero-copy tensor views, and a writer.
//!
//! # Format
//!
//! Little-endian throughout: the magic `"GGUF"`, a u32 version, a u64 tensor count, a u64
//! metadata count; the metadata pairs (key as a string — u64 length and UTF-8 bytes — a u32
//! [`ValueType`] id, the value; arrays carry a u32 item type and a u64 count and may nest);
//! the tensor infos (name, u32 n_dims, n_dims u64 dims in ggml order with `dims[0]` the row
//! length, u32 [`GgmlType`](crate::quant::GgmlType) id, u64 offset relative to the data
//! section); zero padding up to `general.alignment` (a u32, 32 when absent); the data section.
//! Version 1 (u32 counts) is refused, as is any version other than 2 and 3.
//!
//! # Validation
//!
//! [`GgufFile::open`] and [`GgufFile::from_bytes`] check the whole file before returning, so
//! the rest of the crate can trust it. Each malformation has its own [`GgufError`] variant:
//!
//! - the magic ([`GgufError::BadMagic`]); a byte-swapped version, i.e. a big-endian file
//!   ([`GgufError::BigEndian`]); versions other than 2 and 3
//!   ([`GgufError::UnsupportedVersion`]);
//! - a fixed-size field cut off by the end of the file ([`GgufError::Truncated`], naming what
//!   was being read: `header (version)`, `metadata key #3`, `value of key "x"`,
//!   `tensor info #2 ("name")`, `tensor data of "name"`, …);
//! - every count and length (tensor count, metadata count, string lengths, array lengths) is
//!   checked against the bytes left *before anything is allocated for it*, counting the fewest
//!   bytes each entry can take ([`GgufError::CountTooLarge`]); a count of 2^62 is refused, not
//!   allocated. The metadata count is checked after the header, the tensor count after the
//!   metadata. So a file cut short is reported as `Truncated` only when the cut falls in a
//!   fixed-size field that the count check let through; a cut inside a string or an array of
//!   fixed-size items, or early in a table, is `CountTooLarge`: the reader cannot tell a
//!   truncated file from a corrupt length, and both messages give the offset and bytes left;
//! - invalid UTF-8 in keys, strings and tensor names ([`GgufError::InvalidUtf8`]); unknown
//!   value types ([`GgufError::UnknownValueType`]); arrays nested more than [`MAX_NESTING`]
//!   deep ([`GgufError::NestingTooDeep`]; parsing recurses, so this also bounds the stack);
//!   a bool byte other than 0 and 1 ([`GgufError::BadBool`]), alone or in an array;
//! - keys: empty ([`GgufError::EmptyKey`]), longer than [`MAX_KEY_LEN`] (65,535) bytes
//!   ([`GgufError::KeyTooLong`]), not ASCII ([`GgufError::NonAsciiKey`]; invalid UTF-8 is
//!   `InvalidUtf8`), repeated ([`GgufError::DuplicateKey`]); a `general.alignment` that is
//!   not a u32 ([`GgufError::KeyType`]) or not a non-zero power of two
//!   ([`GgufError::BadAlignment`]);
//! - per tensor: a name of at most [`MAX_TENSOR_NAME_LEN`] (63) bytes, llama.cpp's limit
//!   ([`GgufError::TensorNameTooLong`]), 1 to 4 dims ([`GgufError::InvalidNDims`]), none zero
//!   ([`GgufError::ZeroDim`]), their product and byte size fitting an i64/u64
//!   ([`GgufError::DimsOverflow`]), a type this crate reads
//!   ([`GgufError::UnsupportedTensorType`] names a ggml type it does not, such as `IQ4_NL`;
//!   [`GgufError::UnknownTensorType`] is an id ggml does not know), a row length that is a
//!   whole number of blocks ([`GgufError::RowNotBlockMultiple`]), unique
//!   names ([`GgufError::DuplicateTensor`]), an aligned offset ([`GgufError::Misaligned`]),
//!   data inside the data section ([`GgufError::TensorOutOfBounds`], or `Truncated` when the
//!   tensor starts inside the file but ends past it), no overlap with another tensor
//!   ([`GgufError::TensorOverlap`]).
//!
//! Hard limits ([`GgufError::LimitExceeded`], checked after the bytes-left check):
//! at most [`MAX_TENSOR_COUNT`] (2^20) tensors, [`MAX_KV_COUNT`] (2^20) metadata pairs,
//! strings of [`MAX_STRING_LEN`] (2^30) bytes, arrays of [`MAX_ARRAY_LEN`] (2^24) items and
//! [`MAX_ARRAY_ITEMS_TOTAL`] (2^25) array items in all. Metadata is decoded into [`Value`]s of
//! ~40 bytes each, so these bound the memory a hostile file can make the reader allocate.
//!
//! The rules are the GGUF spec's structural ones. llama.cpp's loader (ggml/src/gguf.cpp)
//! enforces them all but the bool and key rules: it reads any non-zero bool byte as true and
//! takes any non-empty key (no writer we know of produces anything else). Accepted, as
//! llama.cpp does: tensors in any order and with gaps
//! between them, empty tensor names, and — for files without tensors, such as
//! vocabulary-only files — a file that ends before the padding. The spec's naming advice
//! (which keys, of which types, which architecture names) is not checked here: llama.cpp does
//! not check it, and real files go beyond it (`{arch}.block_count`, a u32
//! `general.file_type`, hyphenated architecture names such as `command-r`). What a model
//! needs of its metadata is checked where it is read, in [`crate::model`].
//!
//! A file with zero tensors is valid; its data section is empty.
//!
//! # Writing
//!
//! [`GgufWriter`] builds version 3 files with the same rules; files it writes always read
//! back. [`GgufWriter::write_file`] replaces files atomically (temporary file, fsync, rename).
//! Its layout (tensors in insertion order, each padded to the alignment) is llama.cpp's: a
//! llama.cpp file read and written back through it comes out byte-identical. Tensors can
//! also be declared without their bytes ([`GgufWriter::declare_tensor`]) and streamed when
//! the file is written ([`GgufWriter::write_streaming`]), so a file larger than memory (a
//! merged model) is produced piece by piece.
//!
//! ```
//! use pocketlora::internals::gguf::{GgufFile, GgufWriter, Value};
//! use pocketlora::internals::quant::GgmlType;
//!
//! let mut w = GgufWriter::new();
//! w.set("general.architecture", Value::from("llama"));
//! let data = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
//! w.add_tensor("t", GgmlType::F32, &[2], data)?;
//!
//! let f = GgufFile::from_bytes(w.to_bytes())?;
//! assert_eq!(f.get_str("general.architecture")?, "llama");
//! assert_eq!(f.require_tensor("t")?.data.len(), 8);
//! # Ok::<(), pocketlora::Error>(())
//! ```

mod parse;
pub mod reader;
pub mod types;
pub mod writer;

pub use reader::{GgufFile, TensorInfo, TensorView};
pub use types::{Array, Value, ValueType};
pub use writer::{GgufWriter, StreamedTensor};

pub use crate::error::GgufError;

/// The first four bytes of every GGUF file.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// The version [`GgufWriter`] writes.
pub const GGUF_VERSION: u32 = 3;
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key holding the data alignment (a u32).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Longest metadata key, in bytes (the GGUF spec: "at most 2^16-1 bytes").
pub const MAX_KEY_LEN: usize = 65_535;
/// Longest tensor name, in bytes. llama.cpp's `gguf_init_from_file_impl` (ggml/src/gguf.cpp)
/// refuses a name when `name.length() >= GGML_MAX_NAME`, and `GGML_MAX_NAME` is 64 (ggml.h):
/// the 64 counts the NUL of ggml's fixed `char name[64]`, so 63 bytes is the most it loads.
/// This reader and the writer use the same limit.
pub const MAX_TENSOR_NAME_LEN: usize = 63;
/// Most tensors a file may declare.
pub const MAX_TENSOR_COUNT: u64 = 1 << 20;
/// Most metadata pairs a file may declare.
pub const MAX_KV_COUNT: u64 = 1 << 20;
/// Longest string (key, value or tensor name), in bytes.
pub const MAX_STRING_LEN: u64 = 1 << 30;
/// Most items in one array (real vocabularies have up to ~300k tokens).
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Most array items across all metadata.
pub const MAX_ARRAY_ITEMS_TOTAL: u64 = 1 << 25;
/// Deepest array nesting (an array of arrays is depth 2).
pub const MAX_NESTING: usize = 8;
