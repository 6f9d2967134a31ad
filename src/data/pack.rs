//! Packing: several short records in one training sequence, with attention kept inside
//! each record (document masking, [`crate::model::backward::forward_backward_packed`]), so
//! packing changes how many sequences a step runs, never the loss a record gets.

use super::TokenRecord;

/// Packs `records`, in order, into sequences of at most `seq_len` tokens: each record joins
/// the current sequence if it fits, else starts the next one. Records longer than
/// `seq_len` are truncated to it first. Each record's first token stays a non-target (no
/// token of the previous record predicts it).
pub fn pack(records: Vec<TokenRecord>, seq_len: usize) -> Vec<TokenRecord> {
    let seq_len = seq_len.max(1);
    let mut out: Vec<TokenRecord> = Vec::new();
    let mut cur: Option<TokenRecord> = None;
    for mut r in records {
        r.ids.truncate(seq_len);
        r.targets.truncate(seq_len);
        r.doc_starts.retain(|&d| (d as usize) < seq_len);
        if r.ids.is_empty() {
            continue;
        }
        if let Some(t) = r.targets.first_mut() {
            *t = false;
        }
        match cur.as_mut() {
            Some(c) if c.ids.len() + r.ids.len() <= seq_len => {
                let base = c.ids.len() as u32;
                c.doc_starts.push(base);
                c.doc_starts.extend(r.doc_starts.iter().map(|&d| base + d));
                c.ids.extend_from_slice(&r.ids);
                c.targets.extend_from_slice(&r.targets);
            }
            _ => {
                if let Some(c) = cur.replace(r) {
                    out.push(c);
                }
            }
        }
    }
    out.extend(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u32) -> TokenRecord {
        let ids: Vec<u32> = (1..=n).collect();
        let targets = (0..n).map(|i| i > 0).collect();
        TokenRecord::new(ids, targets)
    }

    #[test]
    fn records_fill_sequences_in_order_with_their_starts() {
        let p = pack(vec![rec(3), rec(4), rec(2), rec(6), rec(1)], 8);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].ids, vec![1, 2, 3, 1, 2, 3, 4]);
        assert_eq!(p[0].doc_starts, vec![3]);
        assert_eq!(
            p[0].targets,
            vec![false, true, true, false, true, true, true]
        );
        assert_eq!(p[1].ids, vec![1, 2, 1, 2, 3, 4, 5, 6]);
        assert_eq!(p[1].doc_starts, vec![2]);
        assert_eq!(p[2].ids, vec![1]);
        assert!(p[2].doc_starts.is_empty());
        let total: usize = p.iter().map(|r| r.n_targets()).sum();
        assert_eq!(total, 2 + 3 + 1 + 5);
    }

    #[test]
    fn long_records_are_truncated_and_empty_ones_dropped() {
        let p = pack(vec![rec(10), TokenRecord::new(vec![], vec![]), rec(2)], 4);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].ids, vec![1, 2, 3, 4]);
        assert_eq!(p[1].ids, vec![1, 2]);
        // Packed twice: the starts compose.
        let again = pack(vec![p[1].clone(), p[1].clone()], 8);
        assert_eq!(again[0].doc_starts, vec![2]);
    }
}
