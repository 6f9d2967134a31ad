//! Training and evaluation data: JSONL records of token ids with target masks.

pub mod jsonl;

pub use jsonl::{parse_ids_record, read_ids_jsonl, TokenRecord};
