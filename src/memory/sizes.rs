//! One size list per workspace (llm.c's `fill_in_activation_sizes` feeding
//! `malloc_and_point_activations`): a workspace is built by one function that takes every
//! buffer from a [`Sizer`]. Run with [`Sizer::allocating`], it builds the workspace; run
//! with [`Sizer::counting`], it allocates nothing and adds up the bytes it would have
//! allocated. The memory planner's number and the allocation are the same code, so a
//! buffer cannot be allocated without being counted.
//!
//! A leaf module: it knows nothing of models or kernels.

/// Hands out a workspace's buffers, or only counts them.
#[derive(Debug)]
pub struct Sizer {
    allocate: bool,
    bytes: usize,
}

impl Sizer {
    /// Buffers are allocated (and counted).
    pub fn allocating() -> Sizer {
        Sizer {
            allocate: true,
            bytes: 0,
        }
    }

    /// Nothing is allocated; only the bytes are added up.
    pub fn counting() -> Sizer {
        Sizer {
            allocate: false,
            bytes: 0,
        }
    }

    /// Bytes the builder `f` allocates, without allocating them.
    pub fn bytes_of<T>(f: impl FnOnce(&mut Sizer) -> T) -> usize {
        let mut s = Sizer::counting();
        drop(f(&mut s));
        s.bytes
    }

    /// Bytes handed out (or counted) so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// `n` default values (zeros for numbers).
    pub fn zeros<T: Clone + Default>(&mut self, n: usize) -> Vec<T> {
        self.bytes += n * std::mem::size_of::<T>();
        if self.allocate {
            vec![T::default(); n]
        } else {
            Vec::new()
        }
    }

    /// An empty vector with room for `n` values (filled per call, e.g. positions).
    pub fn room<T>(&mut self, n: usize) -> Vec<T> {
        self.bytes += n * std::mem::size_of::<T>();
        if self.allocate {
            Vec::with_capacity(n)
        } else {
            Vec::new()
        }
    }

    /// `n` values built by `f` from this sizer (their own buffers are counted by `f`),
    /// plus the vector holding them.
    pub fn each<T>(&mut self, n: usize, mut f: impl FnMut(&mut Sizer) -> T) -> Vec<T> {
        self.bytes += n * std::mem::size_of::<T>();
        if self.allocate {
            (0..n).map(|_| f(self)).collect()
        } else {
            for _ in 0..n {
                drop(f(self));
            }
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Two {
        a: Vec<f32>,
        b: Vec<u16>,
    }

    fn build(s: &mut Sizer, n: usize) -> Vec<Two> {
        s.each(n, |s| Two {
            a: s.zeros(10),
            b: s.zeros(3),
        })
    }

    #[test]
    fn counting_adds_what_allocating_hands_out() {
        let counted = Sizer::bytes_of(|s| build(s, 4));
        let mut s = Sizer::allocating();
        let built = build(&mut s, 4);
        assert_eq!(s.bytes(), counted);
        assert_eq!(counted, 4 * (40 + 6) + 4 * std::mem::size_of::<Two>());
        assert_eq!(built.len(), 4);
        assert!(built.iter().all(|t| t.a.len() == 10 && t.b.len() == 3));
        let mut s = Sizer::counting();
        let room: Vec<u64> = s.room(5);
        assert_eq!((room.capacity(), s.bytes()), (0, 40));
        let mut s = Sizer::allocating();
        let room: Vec<u64> = s.room(5);
        assert!(room.capacity() >= 5 && room.is_empty());
    }
}
