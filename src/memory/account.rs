//! What a training run's plan counts besides its own buffers, measured one way for every
//! front end: the model's metadata and tokenizer as measured while they were built, the
//! transient peaks of loading and preparing the data, and the records themselves, counted
//! exactly from their capacities (not from process-wide heap totals, so that other work in
//! the same process — another trainer, an app's own allocations — does not move a plan:
//! each operation is planned on its own, as the C ABI promises).
//!
//! The measurements read the counting allocator ([`super::heap`]); in a process without it
//! they read zero and only the record bytes are counted.

use super::heap;
use crate::data::TokenRecord;

/// Heap growth while a closure ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Growth {
    /// Bytes still held after it (never negative: freed memory counts as 0).
    pub kept: u64,
    /// How far the peak rose above the start while it ran.
    pub peak: u64,
}

impl Growth {
    /// The part of the peak that was released again before the closure ended.
    pub fn transient(&self) -> u64 {
        self.peak.saturating_sub(self.kept)
    }
}

/// Runs `f` and measures its heap growth. Resets the process's peak counter to the current
/// use first (the peak is only ever read as "since the last reset").
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Growth) {
    let before = heap::current();
    heap::reset_peak();
    let out = f();
    let g = Growth {
        kept: heap::current().saturating_sub(before) as u64,
        peak: heap::peak().saturating_sub(before) as u64,
    };
    (out, g)
}

/// Exact heap bytes of a vector of records: the vector's slots and each record's buffers.
pub fn records_bytes(records: &Vec<TokenRecord>) -> u64 {
    let slots = records.capacity() * std::mem::size_of::<TokenRecord>();
    let inner: usize = records
        .iter()
        .map(|r| r.ids.capacity() * 4 + r.targets.capacity() + r.doc_starts.capacity() * 4)
        .sum();
    (slots + inner) as u64
}

/// What a plan counts as held outside the trainer: the two fields of
/// [`super::plan::TrainRequest`] it fills.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// The model's metadata and tokenizer, plus the transient peaks of loading and
    /// preparing the data (the run's peak includes them).
    pub resident: u64,
    /// The records, training and validation.
    pub data: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_bytes_follow_capacities() {
        let mut v = Vec::with_capacity(3);
        v.push(TokenRecord::new(vec![1, 2, 3], vec![false, true, true]));
        let mut r = TokenRecord::new(Vec::with_capacity(10), Vec::with_capacity(7));
        r.doc_starts = Vec::with_capacity(2);
        v.push(r);
        let slot = std::mem::size_of::<TokenRecord>() as u64;
        assert_eq!(records_bytes(&v), 3 * slot + 12 + 3 + 40 + 7 + 8);
    }

    #[test]
    fn growth_splits_kept_from_transient() {
        let g = Growth { kept: 10, peak: 25 };
        assert_eq!(g.transient(), 15);
        let g = Growth { kept: 10, peak: 5 };
        assert_eq!(g.transient(), 0);
    }
}
