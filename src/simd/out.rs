//! Kernel outputs: [`Out`], a strided view of an f32 buffer that a kernel overwrites or
//! accumulates into, and [`SharedColumns`], a matrix split into disjoint column ranges
//! ([`ColumnPart`]) that parallel tasks write at once. Every write is bounds- and
//! window-checked here, so the per-ISA kernels only see in-bounds addresses.

use std::marker::PhantomData;

/// Output of a kernel: element `(i, j)` at `c[i·rs + j·cs]`, overwritten or accumulated
/// into. Built from a mutable slice ([`Out::new`]) or from a [`ColumnPart`] (then every
/// element a kernel may write must lie in the part's columns; checked per call).
#[derive(Debug)]
pub struct Out<'a> {
    ptr: *mut f32,
    len: usize,
    pub rs: usize,
    pub cs: usize,
    pub accumulate: bool,
    /// Set for an output inside a [`ColumnPart`]: only its columns may be written.
    window: Option<Window>,
    _marker: PhantomData<&'a mut [f32]>,
}

impl<'a> Out<'a> {
    pub fn new(c: &'a mut [f32], rs: usize, cs: usize, accumulate: bool) -> Self {
        Out {
            ptr: c.as_mut_ptr(),
            len: c.len(),
            rs,
            cs,
            accumulate,
            window: None,
            _marker: PhantomData,
        }
    }

    /// Whether the (m × n) view lies inside the buffer (and the window).
    pub(super) fn fits(&self, m: usize, n: usize) -> bool {
        if m == 0 || n == 0 {
            return true;
        }
        let last = (m - 1) * self.rs + (n - 1) * self.cs;
        if last >= self.len {
            return false;
        }
        let Some(w) = self.window else {
            return true;
        };
        // Only axis-aligned views: a dimension moves along the row (stride 1) or across rows
        // (a multiple of the row length).
        let mut span = 1;
        for (count, stride) in [(m, self.rs), (n, self.cs)] {
            if count <= 1 {
                continue;
            }
            if stride % w.ld == 0 {
                continue;
            }
            if stride == 1 && span == 1 {
                span = count;
            } else {
                return false;
            }
        }
        w.col + span <= w.c1
    }

    /// Whether element `idx` is in the window (always, without one).
    #[inline]
    fn in_window(&self, idx: usize) -> bool {
        self.window.is_none_or(|w| {
            let c = (w.col + idx) % w.ld;
            w.c0 <= c && c < w.c1
        })
    }

    /// Writes `v` (or adds it, when accumulating) at `idx` (bounds- and window-checked).
    #[inline]
    pub fn put(&mut self, idx: usize, v: f32) {
        assert!(
            idx < self.len && self.in_window(idx),
            "Out: index out of bounds"
        );
        // SAFETY: idx < len and the buffer is valid for `len` floats for 'a; the element is
        // in this output's window, which no other task writes (a `ColumnPart` owns its
        // columns).
        unsafe {
            let p = self.ptr.add(idx);
            *p = if self.accumulate { *p + v } else { v };
        }
    }

    /// Writes (or adds) `vals` at `idx ..`, a run of elements adjacent in memory and in one
    /// row of the window, checked once for the whole run.
    pub fn put_run(&mut self, idx: usize, vals: &[f32]) {
        let fits = idx <= self.len && vals.len() <= self.len - idx;
        let in_window = vals.is_empty()
            || self.window.is_none_or(|w| {
                let c = (w.col + idx) % w.ld;
                w.c0 <= c && c + vals.len() <= w.c1
            });
        assert!(fits && in_window, "Out: run out of bounds");
        // SAFETY: idx + vals.len() ≤ len, so the run lies in the buffer, valid for 'a; it lies
        // in one row of this output's window, which no other task writes.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(idx), vals.len()) };
        if self.accumulate {
            dst.iter_mut().zip(vals).for_each(|(d, &v)| *d += v);
        } else {
            dst.copy_from_slice(vals);
        }
    }

    /// The base pointer, for the per-ISA kernels (after `fits` was checked).
    #[inline]
    pub(crate) fn ptr(&mut self) -> *mut f32 {
        self.ptr
    }
}

/// The columns an [`Out`] may write: `c0..c1` of rows `ld` apart, `ptr` being at column
/// `col`.
#[derive(Clone, Copy, Debug)]
struct Window {
    ld: usize,
    col: usize,
    c0: usize,
    c1: usize,
}

/// A row-major matrix (rows `ld` apart) shared by parallel tasks that each own a disjoint
/// range of columns.
#[derive(Debug)]
pub struct SharedColumns<'a> {
    ptr: *mut f32,
    len: usize,
    ld: usize,
    _marker: PhantomData<&'a mut [f32]>,
}

/// The columns `c0..c1` of a [`SharedColumns`], owned by one task.
#[derive(Debug)]
pub struct ColumnPart<'a> {
    ptr: *mut f32,
    len: usize,
    ld: usize,
    c0: usize,
    c1: usize,
    _marker: PhantomData<&'a mut [f32]>,
}

// SAFETY: a part only writes its own columns (checked by `Out::fits` and `Out::put`), which
// no other part of the same matrix owns; the matrix is borrowed mutably for the parts'
// lifetime.
unsafe impl Send for ColumnPart<'_> {}

/// A [`SharedColumns`] pointer handed to the tasks that build its disjoint parts.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

// SAFETY: the pointer is only turned into `ColumnPart`s of disjoint columns (see above).
unsafe impl Send for SendPtr {}
// SAFETY: as for `Send`: shared only to build disjoint parts.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl<'a> SharedColumns<'a> {
    pub fn new(c: &'a mut [f32], ld: usize) -> Self {
        assert!(ld > 0 && c.len() % ld == 0, "SharedColumns: not whole rows");
        SharedColumns {
            ptr: c.as_mut_ptr(),
            len: c.len(),
            ld,
            _marker: PhantomData,
        }
    }

    /// Runs `f(i, part)` in parallel for the column ranges `i·chunk .. min((i+1)·chunk,
    /// end)` covering `0 .. end` (`end` at most the row length). Allocates nothing. Inside
    /// a [`crate::util::team`] the parts go to the spinning team, else to rayon.
    pub fn par_parts<F>(&mut self, end: usize, chunk: usize, f: F)
    where
        F: Fn(usize, ColumnPart<'_>) + Sync + Send,
    {
        let parts = self.split(end, chunk);
        if let Some(team) = crate::util::team::current() {
            // The team runs every index below `n` exactly once, so the parts stay disjoint.
            team.run(parts.n, &|i| f(i, parts.part(i)));
            return;
        }
        use rayon::prelude::*;
        (0..parts.n)
            .into_par_iter()
            .for_each(|i| f(i, parts.part(i)));
    }

    /// As [`SharedColumns::par_parts`] (always on rayon), handing part `i` also the `i`-th
    /// item of `items` (exactly one per part).
    pub fn par_parts_zip<I, F>(&mut self, end: usize, chunk: usize, items: I, f: F)
    where
        I: rayon::iter::IndexedParallelIterator,
        F: Fn(usize, ColumnPart<'_>, I::Item) + Sync + Send,
    {
        use rayon::prelude::*;
        let parts = self.split(end, chunk);
        assert_eq!(items.len(), parts.n, "SharedColumns: one item per part");
        items
            .enumerate()
            .for_each(|(i, item)| f(i, parts.part(i), item));
    }

    /// The split of columns `0 .. end` into parts of `chunk`, each to be built once.
    fn split(&mut self, end: usize, chunk: usize) -> Parts<'_> {
        assert!(
            end <= self.ld,
            "SharedColumns: parts must lie within the row"
        );
        let chunk = chunk.max(1);
        Parts {
            ptr: SendPtr(self.ptr),
            len: self.len,
            ld: self.ld,
            chunk,
            end,
            n: end.div_ceil(chunk),
            _marker: PhantomData,
        }
    }
}

/// The parts of a [`SharedColumns`] borrowed by one parallel call: part `i` is columns
/// `i·chunk .. min((i+1)·chunk, end)`, and each index is handed to exactly one task.
#[derive(Clone, Copy)]
struct Parts<'a> {
    ptr: SendPtr,
    len: usize,
    ld: usize,
    chunk: usize,
    end: usize,
    n: usize,
    _marker: PhantomData<&'a mut [f32]>,
}

impl<'a> Parts<'a> {
    fn part(&self, i: usize) -> ColumnPart<'a> {
        ColumnPart {
            ptr: self.ptr.get(),
            len: self.len,
            ld: self.ld,
            c0: i * self.chunk,
            c1: ((i + 1) * self.chunk).min(self.end),
            _marker: PhantomData,
        }
    }
}

impl ColumnPart<'_> {
    /// Columns `c0..c1` of this part.
    pub fn columns(&self) -> (usize, usize) {
        (self.c0, self.c1)
    }

    /// A kernel output starting at (`row`, `col`) with strides (`rs`, `cs`); a kernel call
    /// on it checks that it writes only this part's columns.
    pub fn out(
        &mut self,
        row: usize,
        col: usize,
        rs: usize,
        cs: usize,
        accumulate: bool,
    ) -> Out<'_> {
        assert!(
            col >= self.c0 && col <= self.c1,
            "ColumnPart: column outside the part"
        );
        let at = row * self.ld + col;
        assert!(at <= self.len, "ColumnPart: row outside the matrix");
        Out {
            // SAFETY: at ≤ len, so the pointer stays inside (or one past) the allocation.
            ptr: unsafe { self.ptr.add(at) },
            len: self.len - at,
            rs,
            cs,
            accumulate,
            window: Some(Window {
                ld: self.ld,
                col,
                c0: self.c0,
                c1: self.c1,
            }),
            _marker: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_written_whole_inside_their_part_and_refused_across_its_edge() {
        // 3 rows of 10 columns in parts of 3: part 1 owns columns 3..6, part 2 6..9.
        let mut m = vec![0f32; 30];
        let mut shared = SharedColumns::new(&mut m, 10);
        let parts = shared.split(10, 3);
        let mut part = parts.part(1);
        assert_eq!(part.columns(), (3, 6));
        let mut part_b = parts.part(2);
        assert_eq!(part_b.columns(), (6, 9));
        {
            let mut out = part.out(1, 3, 10, 1, false);
            out.put_run(0, &[1.0, 2.0, 3.0]);
            out.put_run(10, &[4.0]);
            let mut acc = part.out(1, 4, 10, 1, true);
            acc.put_run(0, &[10.0, 20.0]);
            acc.put_run(0, &[]);
        }
        part_b.out(0, 6, 10, 1, false).put_run(0, &[7.0, 8.0, 9.0]);
        let mut want = vec![0f32; 30];
        want[13..16].copy_from_slice(&[1.0, 12.0, 23.0]);
        want[23] = 4.0;
        want[6..9].copy_from_slice(&[7.0, 8.0, 9.0]);
        assert_eq!(m, want);
        // Past the part's last column, before its first, or past the matrix: refused.
        let mut m = vec![0f32; 30];
        let mut shared = SharedColumns::new(&mut m, 10);
        let parts = shared.split(10, 3);
        for (col, idx, len) in [
            (3usize, 1usize, 3usize),
            (3, 0, 4),
            (4, 8, 1),
            (3, 27, 1),
            (3, 17, 9),
        ] {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut part = parts.part(1);
                part.out(0, col, 10, 1, false).put_run(idx, &vec![1.0; len]);
            }));
            assert!(caught.is_err(), "column {col}, index {idx}, {len} values");
        }
        assert!(m.iter().all(|&x| x == 0.0), "a refused run wrote: {m:?}");
    }
}
