//! The order records are visited in: file order, step after step, wrapping around at the
//! end; or, with shuffling, a fresh seeded permutation every epoch (an epoch is one pass
//! over the records; a step that runs past the end continues into the next epoch).

use crate::util::rng::SplitMix64;

#[derive(Clone, Debug)]
pub struct RecordOrder {
    n: usize,
    shuffle: bool,
    seed: u64,
    epoch: u64,
    pos: usize,
    perm: Vec<usize>,
}

impl RecordOrder {
    pub fn new(n: usize, shuffle: bool, seed: u64) -> RecordOrder {
        let mut o = RecordOrder {
            n,
            shuffle,
            seed,
            epoch: 0,
            pos: 0,
            perm: (0..n).collect(),
        };
        o.reshuffle();
        o
    }

    fn reshuffle(&mut self) {
        for (i, p) in self.perm.iter_mut().enumerate() {
            *p = i;
        }
        if self.shuffle {
            // Fisher–Yates with a per-epoch seed.
            let mut rng =
                SplitMix64::new(self.seed ^ self.epoch.wrapping_mul(0xD6E8_FEB8_6659_FD93));
            for i in (1..self.n).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                self.perm.swap(i, j);
            }
        }
    }

    /// The next `k` record indices.
    pub fn take(&mut self, k: usize) -> Vec<usize> {
        (0..k).map_while(|_| self.next_index()).collect()
    }

    /// The next record index (`None` without records). Allocates nothing.
    pub fn next_index(&mut self) -> Option<usize> {
        if self.n == 0 {
            return None;
        }
        let i = self.perm[self.pos];
        self.pos += 1;
        if self.pos == self.n {
            self.pos = 0;
            self.epoch += 1;
            self.reshuffle();
        }
        Some(i)
    }

    /// Completed passes over the records.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Index of the next record within the current epoch's order.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Moves to `pos` in epoch `epoch` (as recorded by a checkpoint).
    pub fn seek(&mut self, epoch: u64, pos: usize) {
        self.epoch = epoch;
        self.pos = if self.n == 0 { 0 } else { pos % self.n };
        self.reshuffle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_order_wraps_around() {
        let mut o = RecordOrder::new(5, false, 0);
        assert_eq!(o.take(2), vec![0, 1]);
        assert_eq!(o.take(2), vec![2, 3]);
        assert_eq!(o.take(2), vec![4, 0]);
        assert_eq!(o.epoch(), 1);
    }

    #[test]
    fn seeking_reproduces_the_sequence() {
        let mut a = RecordOrder::new(7, true, 3);
        a.take(9);
        let (e, p) = (a.epoch(), a.position());
        let rest = a.take(20);
        let mut b = RecordOrder::new(7, true, 3);
        b.seek(e, p);
        assert_eq!(b.take(20), rest);
    }

    #[test]
    fn shuffling_permutes_each_epoch_reproducibly() {
        let mut a = RecordOrder::new(50, true, 7);
        let mut b = RecordOrder::new(50, true, 7);
        let (e1, e2) = (a.take(50), a.take(50));
        assert_eq!(e1, b.take(50));
        let mut s1 = e1.clone();
        s1.sort();
        assert_eq!(s1, (0..50).collect::<Vec<_>>());
        assert_ne!(e1, e2);
        assert_ne!(e1, (0..50).collect::<Vec<_>>());
        assert_ne!(RecordOrder::new(50, true, 8).take(50), e1);
    }
}
