//! Training and evaluation data: the formats users write (text, prompt/completion, chat,
//! token ids, plain text files), detected per file, tokenized into [`TokenRecord`]s with
//! a target mask; packing of short records into longer sequences.

pub mod encode;
pub mod jsonl;
pub mod load;
pub mod pack;
pub mod raw;

pub use encode::{EncodeOptions, Encoder};
pub use jsonl::{parse_ids_record, read_ids_jsonl, TokenRecord};
pub use load::{
    held_out, hold_out, load_dataset, load_for_model, parse_dataset, read_text, Dataset,
    LoadOptions,
};
pub use pack::pack;
pub use raw::{DataFormat, RawRecord};
