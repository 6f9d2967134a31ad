//! The crate's error type: one enum with a variant per subsystem, each subsystem's own enum
//! naming the file, key, tensor or offset involved. The library never panics on bad input;
//! it returns one of these.

use std::io;
use std::path::PathBuf;

use crate::quant::GgmlType;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the library returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read, written or mapped.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A GGUF image is malformed, or a metadata key is missing or of the wrong type.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A GGUF file on disk is malformed (the error names the file).
    #[error("{}: {source}", path.display())]
    GgufFile {
        path: PathBuf,
        #[source]
        source: GgufError,
    },
    /// A quantization or dequantization request that cannot be honoured.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// A model that cannot be built or run from the file given.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A tokenizer or chat template that cannot be built from the metadata, or misused.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A caller-supplied argument is out of range or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An adapter or safetensors file that cannot be used (names the file and what is wrong).
    #[error("{}: {msg}", path.display())]
    Adapter { path: PathBuf, msg: String },
    /// A safetensors file is malformed (the error names the file, the tensor and the field).
    #[error("{}: {source}", path.display())]
    Safetensors {
        path: PathBuf,
        #[source]
        source: SafetensorsError,
    },
    /// A data file (JSONL, text) could not be understood.
    #[error("{}:{line}: {msg}", path.display())]
    Data {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    /// A memory budget that cannot be met (the message names the smallest one that would).
    #[error("{0}")]
    Budget(String),
    /// The work was cancelled (a cancel flag was raised) before it finished; nothing was
    /// half-applied.
    #[error("cancelled")]
    Cancelled,
    /// Training diverged: a loss or gradient that is not a finite number (the message names
    /// the step, the block and the tensor; nothing was applied).
    #[error("{0}")]
    Numeric(String),
    /// A setting of a run that no run can have; `setting` is its name in
    /// [`crate::train::TrainSpec`] (front ends name it their way: `--grad-accum`).
    #[error("invalid argument: {setting} {msg}")]
    Setting { setting: &'static str, msg: String },
    /// A run asked to resume differs from the checkpointed one in a setting that defines
    /// its result (or in its data).
    #[error("resume: {} is {} now, but the checkpointed run had {}; use the same settings and data", .0.setting, .0.now, .0.was)]
    Resume(crate::train::spec::Mismatch),
}

impl Error {
    /// The GGUF format error inside this error, with or without a file path.
    pub fn as_gguf(&self) -> Option<&GgufError> {
        match self {
            Error::Gguf(e) | Error::GgufFile { source: e, .. } => Some(e),
            _ => None,
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Errors of the GGUF reader, writer and metadata accessors.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file: magic bytes are {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("big-endian GGUF files are not supported (version field reads {version} when byte-swapped); convert the file on a little-endian machine")]
    BigEndian { version: u32 },
    #[error("unsupported GGUF version {version}: only versions 2 and 3 are read")]
    UnsupportedVersion { version: u32 },
    #[error("file truncated while reading {what}: need {need} bytes at offset {offset}, but the file has {file_len} bytes — truncated download?")]
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        file_len: u64,
    },
    #[error("{what} at offset {offset} claims {count} entries/bytes, more than the {remaining} bytes left in the file")]
    CountTooLarge {
        what: String,
        count: u64,
        offset: u64,
        remaining: u64,
    },
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },
    #[error("metadata key {key:?}: unknown value type id {type_id} at offset {offset}")]
    UnknownValueType {
        key: String,
        type_id: u32,
        offset: u64,
    },
    #[error("metadata key {key:?}: arrays nested deeper than {max_depth} levels")]
    NestingTooDeep { key: String, max_depth: usize },
    #[error("tensor {tensor:?}: type id {type_id} is not a ggml tensor type (ggml's ids are 0 to {}) — a corrupt file?", crate::quant::types::GGML_TYPE_NAMES.len() - 1)]
    UnknownTensorType { tensor: String, type_id: u32 },
    #[error("tensor {tensor:?}: tensor type {name} (type id {type_id}{}) is not supported; supported: {}", if *removed { ", since removed from ggml" } else { "" }, crate::quant::types::supported_type_names())]
    UnsupportedTensorType {
        tensor: String,
        type_id: u32,
        /// ggml's name for the type (from [`crate::quant::types::GGML_TYPE_NAMES`]).
        name: &'static str,
        /// Whether ggml itself has removed the type.
        removed: bool,
    },
    #[error("tensor {tensor:?}: {n_dims} dimensions; a GGUF tensor has 1 to 4")]
    InvalidNDims { tensor: String, n_dims: u32 },
    #[error("tensor {tensor:?}: dimension {index} is zero")]
    ZeroDim { tensor: String, index: usize },
    #[error("tensor {tensor:?}: the product of its dimensions {dims:?} overflows")]
    DimsOverflow { tensor: String, dims: Vec<u64> },
    #[error(
        "tensor {tensor:?}: row length {row_len} is not a multiple of the {ty} block size {block}"
    )]
    RowNotBlockMultiple {
        tensor: String,
        ty: GgmlType,
        row_len: u64,
        block: usize,
    },
    #[error("tensor {tensor:?}: offset {offset} + {size} bytes is past the end of the {data_len}-byte data section — truncated download?")]
    TensorOutOfBounds {
        tensor: String,
        offset: u64,
        size: u64,
        data_len: u64,
    },
    #[error("tensors {first:?} and {second:?} overlap in the data section")]
    TensorOverlap { first: String, second: String },
    #[error(
        "tensor {tensor:?}: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    Misaligned {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    #[error("general.alignment = {value}: must be a non-zero power of two")]
    BadAlignment { value: u64 },
    #[error("metadata key {key:?} appears more than once")]
    DuplicateKey { key: String },
    #[error(
        "metadata key #{index} at offset {offset} is empty; a GGUF key is 1 to 65535 ASCII bytes"
    )]
    EmptyKey { index: u64, offset: u64 },
    #[error("metadata key #{index} at offset {offset} is {len} bytes long; a GGUF key is at most {max} bytes")]
    KeyTooLong {
        index: u64,
        offset: u64,
        len: u64,
        max: usize,
    },
    #[error("metadata key {key:?} at offset {offset} is not ASCII; GGUF keys are ASCII")]
    NonAsciiKey {
        /// The key's first 64 characters (and "…" when cut).
        key: String,
        offset: u64,
    },
    #[error("metadata key {key:?}: bool byte {byte} at offset {offset}; a GGUF bool is 0 (false) or 1 (true)")]
    BadBool { key: String, byte: u8, offset: u64 },
    #[error("tensor name {name:?} (tensor info #{index}, offset {offset}) is {len} bytes long; llama.cpp loads names of at most {max} bytes (GGML_MAX_NAME is 64, counting the NUL)")]
    TensorNameTooLong {
        /// The name's first 64 characters (and "…" when cut).
        name: String,
        index: u64,
        offset: u64,
        len: usize,
        max: usize,
    },
    #[error("tensor {name:?} appears more than once")]
    DuplicateTensor { name: String },
    #[error("metadata key {key:?} is missing")]
    MissingKey { key: String },
    #[error("metadata key {key:?}: expected {expected}, found {found}")]
    KeyType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("tensor {name:?} is missing")]
    MissingTensor { name: String },
    #[error("cannot write tensor {name:?}: {reason}")]
    InvalidTensor { name: String, reason: String },
    #[error("cannot write metadata key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("limit exceeded: {what} is {value}, the most this reader accepts is {limit}")]
    LimitExceeded {
        what: String,
        value: u64,
        limit: u64,
    },
}

/// Errors of the safetensors reader. Offsets are counted from the start of the file.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    #[error("{len} bytes is too short for a safetensors file (the header length alone is 8)")]
    TooShort { len: u64 },
    #[error("header length {header_len} at offset 0 is past the end of the {file_len}-byte file — truncated download?")]
    HeaderPastEnd { header_len: u64, file_len: u64 },
    #[error(
        "header length {header_len} at offset 0 is over the {limit} bytes this reader accepts"
    )]
    HeaderTooLarge { header_len: u64, limit: u64 },
    #[error("the header (offset 8, {header_len} bytes) is not valid JSON: {reason}")]
    HeaderJson { header_len: u64, reason: String },
    #[error("the header is not a JSON object")]
    HeaderNotObject,
    #[error("\"__metadata__\" is not an object of strings")]
    BadMetadata,
    #[error("tensor {tensor:?}: field {field:?} is missing or not {expected}")]
    BadField {
        tensor: String,
        field: &'static str,
        expected: &'static str,
    },
    #[error("tensor {tensor:?}: dtype {dtype} is not supported (F32, F16, BF16)")]
    UnsupportedDtype { tensor: String, dtype: String },
    #[error("tensor {tensor:?}: shape {shape:?} has {n_dims} dimensions, more than {limit}")]
    TooManyDims {
        tensor: String,
        shape: Vec<u64>,
        n_dims: usize,
        limit: usize,
    },
    #[error("tensor {tensor:?}: the size of shape {shape:?} overflows")]
    ShapeOverflow { tensor: String, shape: Vec<u64> },
    #[error("tensor {tensor:?}: data_offsets [{begin}, {end}] are outside the {data_len}-byte data section (which starts at offset {data_start}) — truncated download?")]
    OffsetsOutOfBounds {
        tensor: String,
        begin: u64,
        end: u64,
        data_start: u64,
        data_len: u64,
    },
    #[error("tensor {tensor:?}: shape {shape:?} of {dtype} needs {need} bytes, data_offsets give {have}")]
    SizeMismatch {
        tensor: String,
        shape: Vec<u64>,
        dtype: String,
        need: u64,
        have: u64,
    },
    #[error("tensors {first:?} and {second:?} overlap in the data section")]
    Overlap { first: String, second: String },
}

/// Errors of quantization and dequantization.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("{op} is not supported for type {ty}")]
    Unsupported { ty: GgmlType, op: &'static str },
    #[error("{ty}: {n} elements is not a multiple of the block size {block}")]
    RowLength {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    #[error("{what}: buffer holds {found} bytes/elements, expected {expected}")]
    BufferSize {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("a matrix of {len} elements cannot be split into rows of {row_len} elements")]
    MatrixShape { len: usize, row_len: usize },
}

/// Errors building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("architecture {arch:?} is not supported; supported: {supported}")]
    UnsupportedArchitecture { arch: String, supported: String },
    #[error("tensor {tensor:?}: shape {found:?}, expected {expected:?}")]
    TensorShape {
        tensor: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor {tensor:?}: type {ty} cannot be used as {role}")]
    TensorType {
        tensor: String,
        ty: GgmlType,
        role: &'static str,
    },
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("metadata key {key:?} = {value} is more than the {limit} this engine accepts")]
    Limit { key: String, value: u64, limit: u64 },
    #[error("token id {token} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange { token: u32, vocab: usize },
    #[error("sequence of {len} tokens exceeds the context of {context} tokens")]
    ContextOverflow { len: usize, context: usize },
}

/// Errors building a tokenizer from GGUF metadata, encoding, decoding and chat templates.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer.ggml.model = {model:?} is not supported; supported: \"llama\" (SentencePiece BPE), \"gpt2\" (byte-level BPE)")]
    UnknownModel { model: String },
    #[error("tokenizer.ggml.pre = {pre:?} is not a known pre-tokenizer; known: {known}")]
    UnknownPre { pre: String, known: String },
    #[error("the vocabulary (tokenizer.ggml.tokens) is empty")]
    EmptyVocab,
    #[error("the vocabulary (tokenizer.ggml.tokens) has {n} tokens, more than the {limit} this reader accepts")]
    VocabTooLarge { n: usize, limit: u64 },
    #[error("metadata key {key:?} has {found} items, but the vocabulary has {expected} tokens")]
    ArrayLength {
        key: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("metadata key {key:?}: item {index} is {found}, expected {expected}")]
    ArrayItem {
        key: &'static str,
        index: usize,
        expected: &'static str,
        found: String,
    },
    #[error("tokenizer.ggml.merges[{index}] = {merge:?} is not two tokens separated by a space")]
    BadMerge { index: usize, merge: String },
    #[error("token id {token} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange { token: u32, vocab: usize },
    #[error("the tokenizer should add a {what} token, but the vocabulary defines none")]
    NoSpecialToken { what: &'static str },
    #[error("chat template not recognised: {hint}")]
    UnknownChatTemplate { hint: String },
    #[error("custom chat template: {reason}")]
    BadCustomTemplate { reason: String },
    #[error("chat template {template}: {reason}")]
    Conversation {
        template: &'static str,
        reason: String,
    },
}
