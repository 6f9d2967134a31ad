//! Run-time ISA dispatch for the hot kernels, and their scalar twins.
//!
//! Why a module of its own (DESIGN.md suggested `quant/x86.rs`): the SIMD kernels are not
//! only quant kernels — the f32 micro-gemm serves the matmul, attention and LoRA, and the
//! element-wise ops (exp, RMSNorm, SwiGLU, AdamW, …) are compiled per ISA too. So all
//! `unsafe` for vector code lives here, in one file per architecture:
//!
//! - [`scalar`]: the scalar twin of every kernel (safe code; the truth the others are tested
//!   against, and the fallback on CPUs without the features below);
//! - `x86.rs`: AVX2 + FMA, AVX-512 (F/BW/VL/DQ) and AVX-512 VNNI (`vpdpbusd`) kernels;
//! - `aarch64.rs`: NEON kernels, `sdot` (dotprod) and `smmla` (i8mm) through `asm!`.
//!
//! Detection runs once ([`kernels`] caches a [`Kernels`] table of function pointers in a
//! `OnceLock`). `POCKETLORA_DISABLE=avx512,vnni,avx2,dotprod,i8mm,neon` (comma-separated,
//! or `all`) switches features off so the fallbacks can be compared on the same machine;
//! [`Kernels::for_level`] builds any table the CPU supports, which is how the tests run every
//! available path against [`scalar`].
//!
//! # The two kernel families
//!
//! Both compute `C[i][j] = Σ_p R(i, p) · L(p, j)` with the "row" operand `R` broadcast one
//! element (f32) or one 4-byte group (int8) at a time and the "lane" operand `L` loaded as
//! vectors across `j`, register-tiled over several rows and several lane vectors:
//!
//! - [`Sgemm`] (f32): `R` strided (`rs`, `cs`), `L` row-major (`ldb`), `C` strided, with
//!   masked tails, so it serves the dequantized-panel matmul (`R` = a panel of W, `L` =
//!   tokens packed transposed), its input gradient (`R` = dY, `L` = W rows), attention tiles
//!   and the LoRA products.
//! - [`I8Gemm`] (int8): per 32-element block, integer dot products (`vpdpbusd`,
//!   `vpmaddubsw`/`vpmaddwd`, `sdot`, `smmla`) scaled into f32 accumulators. `R` is
//!   row-major blocks ([`I8Rows`]), `L` is packed lane-interleaved ([`I8Lanes`], layout
//!   chosen by the table: [`Int8Layout`]).
//!
//! A third product serves generation: [`gemv`] reads Q8_0 / Q4_0 blocks straight into one or
//! two tokens' f32 dot products, and [`gemv_i8`] (`--precision fast`) into integer dot
//! products with the tokens quantized to int8; each is bit-identical on every level.
//!
//! Kernels never allocate; all bounds are checked here, once per call, so the per-ISA code
//! only sees in-bounds addresses.

/// Calls `f::<BYTES, T>(args)` for Q8_0 (`BYTES` 34) or Q4_0 (18) and one or two tokens
/// `t`, evaluating to true; false, calling nothing, for anything else. The per-ISA GEMVs
/// are generic over the block size and the token count.
macro_rules! by_block_and_tokens {
    ($ty:expr, $t:expr, $f:ident($($arg:expr),*)) => {
        match ($ty, $t) {
            (crate::quant::GgmlType::Q8_0, 1) => { $f::<34, 1>($($arg),*); true }
            (crate::quant::GgmlType::Q8_0, 2) => { $f::<34, 2>($($arg),*); true }
            (crate::quant::GgmlType::Q4_0, 1) => { $f::<18, 1>($($arg),*); true }
            (crate::quant::GgmlType::Q4_0, 2) => { $f::<18, 2>($($arg),*); true }
            _ => false,
        }
    };
}

pub mod ew;
pub mod gemv;
pub mod gemv_i8;
pub mod scalar;

/// The element-wise kernels of [`ew`], listed once: `$m!` receives every kernel's name and
/// signature (after the extra tokens given).
macro_rules! ew_list {
    ($m:ident $(, $x:tt)*) => {
        $m! { $($x,)*
            exp_slice(x: &mut [f32]);
            softmax_tile(st: &mut [f32], rows: usize, n: usize, ld: usize, m: &mut [f32], l: &mut [f32], corr: &mut [f32], fast: bool);
            probs_tile(st: &mut [f32], rows: usize, n: usize, ld: usize, lse: &[f32], fast: bool);
            dsoftmax_tile(ds: &mut [f32], p: &[f32], rows: usize, n: usize, ld: usize, delta: &[f32]);
            scale_rows(y: &mut [f32], rows: usize, n: usize, ld: usize, scale: &[f32]);
            swiglu(h: &mut [f32], g: &[f32], u: &[f32], fast: bool);
            swiglu_back(dg: &mut [f32], du: &mut [f32], dh: &[f32], g: &[f32], u: &[f32], fast: bool);
            geglu(h: &mut [f32], g: &[f32], u: &[f32], fast: bool);
            geglu_back(dg: &mut [f32], du: &mut [f32], dh: &[f32], g: &[f32], u: &[f32], fast: bool);
            adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: [f32; 6]);
            rmsnorm_row(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) -> f32;
            rmsnorm_back_row(dx: &mut [f32], dy: &[f32], x: &[f32], w: &[f32], r: f32);
            lse_exp_rows(x: &mut [f32], rows: usize, n: usize, ld: usize, m: &mut [f32], s: &mut [f64], corr: &mut [f32], fast: bool);
            pack_lanes(lay: Int8Layout, x: &[f32], rows: usize, ldx: usize, offset: i32, vals: &mut [u8], d: &mut [f32], sum: &mut [f32], corr: &mut [i32]);
            quantize_row(x: &[f32], v: &mut [u8], d: &mut [f32], offset: i32);
            decode_q8_0(src: &[u8], v: &mut [u8], d: &mut [f32], offset: i32);
            decode_q4_0(src: &[u8], v: &mut [u8], d: &mut [f32], offset: i32);
        }
    };
}

macro_rules! ew_struct {
    ($($name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {
        /// Element-wise kernels of one level: the bodies of [`ew`], compiled with the level's
        /// features. Slices are indexed safely inside; sizes are the caller's contract (a
        /// short slice panics).
        #[derive(Clone, Copy)]
        pub struct Ew {
            $(pub $name: fn($($ty),*) $(-> $ret)?,)*
        }

        impl Ew {
            /// The bodies compiled for the baseline target (the scalar twins).
            pub fn plain() -> Ew {
                Ew { $($name: ew::$name,)* }
            }
        }
    };
}
ew_list!(ew_struct);

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::marker::PhantomData;
use std::sync::OnceLock;

/// A vector instruction-set level of the f32 kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    Scalar,
    /// x86-64 AVX2 + FMA (int8: `vpmaddubsw`/`vpmaddwd`).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL/DQ (int8 as AVX2 unless VNNI is there).
    Avx512,
    /// AVX-512 with VNNI `vpdpbusd`.
    Avx512Vnni,
    /// ARM64 NEON (int8: `smull`/`sadalp`).
    Neon,
    /// NEON with the dot-product extension `sdot`.
    NeonDotprod,
    /// NEON with `sdot` and the int8 matrix multiply `smmla`.
    NeonI8mm,
}

impl Level {
    /// Every level, weakest first.
    pub const ALL: [Level; 7] = [
        Level::Scalar,
        Level::Avx2,
        Level::Avx512,
        Level::Avx512Vnni,
        Level::Neon,
        Level::NeonDotprod,
        Level::NeonI8mm,
    ];

    /// The feature names this level uses (as `POCKETLORA_DISABLE` spells them).
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Level::Scalar => &[],
            Level::Avx2 => &["avx2", "fma"],
            Level::Avx512 => &["avx2", "fma", "avx512"],
            Level::Avx512Vnni => &["avx2", "fma", "avx512", "vnni"],
            Level::Neon => &["neon"],
            Level::NeonDotprod => &["neon", "dotprod"],
            Level::NeonI8mm => &["neon", "dotprod", "i8mm"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Avx512Vnni => "avx512-vnni",
            Level::Neon => "neon",
            Level::NeonDotprod => "neon-dotprod",
            Level::NeonI8mm => "neon-i8mm",
        }
    }

    /// Whether this CPU has every feature of the level (ignoring `POCKETLORA_DISABLE`).
    pub fn supported(self) -> bool {
        match self {
            Level::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 | Level::Avx512 | Level::Avx512Vnni => x86::supported(self),
            #[cfg(target_arch = "aarch64")]
            Level::Neon | Level::NeonDotprod | Level::NeonI8mm => aarch64::supported(self),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The levels this CPU supports, weakest first (for tests and `bench`).
    pub fn available() -> Vec<Level> {
        Level::ALL.into_iter().filter(|l| l.supported()).collect()
    }
}

/// Features switched off by `POCKETLORA_DISABLE` (lower-case names; `all` or `simd` means
/// every one).
fn disabled() -> Vec<String> {
    std::env::var("POCKETLORA_DISABLE")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The strongest supported level none of whose features is disabled.
fn detect() -> Level {
    let off = disabled();
    if off.iter().any(|s| s == "all" || s == "simd") {
        return Level::Scalar;
    }
    Level::ALL
        .into_iter()
        .rev()
        .find(|l| l.supported() && !l.features().iter().any(|f| off.iter().any(|o| o == f)))
        .unwrap_or(Level::Scalar)
}

/// How a level packs the lane operand of the int8 kernel (see [`I8Lanes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int8Layout {
    /// Lanes per packed lane block (tokens per block in the forward).
    pub nt: usize,
    /// Bytes of one lane kept together (4 for dot-product instructions, 8 for `smmla`).
    pub group: usize,
    /// Whether weights must be unsigned bytes (x86 VNNI: `vpdpbusd` multiplies u8 by i8):
    /// then weight values carry an offset that a per-block correction removes. Otherwise
    /// both operands are i8 in −127..=127.
    pub unsigned_weights: bool,
}

/// `C[i·c_rs + j·c_cs] (+)= alpha · Σ_p R[i·rs + p·cs] · L[p·ldb + j]` for `i < m`, `j < n`,
/// `p < k`.
#[derive(Clone, Copy, Debug)]
pub struct Sgemm<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub r: &'a [f32],
    pub rs: usize,
    pub cs: usize,
    pub l: &'a [f32],
    pub ldb: usize,
    pub alpha: f32,
}

/// The row operand of the int8 kernel: `rows` rows of `blocks` blocks of 32 bytes, block
/// `(i, b)` at `vals[i·stride + 32·b ..]`, with scale `d[i·d_stride + b]` (f32). Bytes are
/// u8 when `unsigned`, else i8. With `corr`, `corr[i·d_stride + b]` is added to the block's
/// integer sum (it removes the offset of unsigned lane values: −offset · Σ of the row
/// block). With `min`, each block also subtracts `min[i·d_stride + b] · sum` of the lane
/// (Q4_K-style minimums).
#[derive(Clone, Copy, Debug)]
pub struct I8Rows<'a> {
    pub rows: usize,
    pub blocks: usize,
    pub vals: &'a [u8],
    pub stride: usize,
    pub unsigned: bool,
    pub d: &'a [f32],
    pub d_stride: usize,
    pub corr: Option<&'a [i32]>,
    pub min: Option<&'a [f32]>,
}

/// The lane operand of the int8 kernel: `blocks` blocks for `nt` lanes (the table's
/// [`Int8Layout::nt`]). Byte `e` (0..32) of lane `j` in block `b` sits at
/// `vals[b·32·nt + ((e / g)·nt + j)·g + e % g]` (`g` = [`Int8Layout::group`]), u8 when
/// `unsigned`, else i8; per (block, lane): scale `d[b·nt + j]`, the float sum
/// `sum[b·nt + j]` (scale · Σ values, for row minimums) and, with `corr`, an integer added to
/// the block's sum (it removes the offset of unsigned row values).
#[derive(Clone, Copy, Debug)]
pub struct I8Lanes<'a> {
    pub blocks: usize,
    pub vals: &'a [u8],
    pub unsigned: bool,
    pub d: &'a [f32],
    pub sum: &'a [f32],
    pub corr: Option<&'a [i32]>,
}

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
    fn fits(&self, m: usize, n: usize) -> bool {
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

/// f32 micro-gemm (bounds already checked).
pub(crate) type SgemmFn = fn(&Sgemm<'_>, &mut Out<'_>);
/// int8 micro-gemm over `n ≤ nt` valid lanes of one lane block (bounds already checked).
pub(crate) type I8GemmFn = fn(&I8Rows<'_>, &I8Lanes<'_>, usize, &mut Out<'_>);
/// Dot product of equal-length slices.
pub(crate) type DotFn = fn(&[f32], &[f32]) -> f32;
/// Dequantizes one row (length-checked) or returns false for types it does not handle.
pub(crate) type DequantFn = fn(crate::quant::GgmlType, &[u8], &mut [f32]) -> bool;
/// [`gemv::gemv_body`] compiled for a level.
pub(crate) type GemvFn =
    fn(crate::quant::GgmlType, &[u8], usize, &[f32], usize, &mut [f32]) -> bool;
/// [`gemv_i8::gemv_i8_body`] compiled for a level (or a function returning false on levels
/// without one).
pub(crate) type GemvI8Fn =
    fn(crate::quant::GgmlType, &[u8], usize, &gemv_i8::QuantTokens<'_>, usize, &mut [f32]) -> bool;
/// Row interleave (bounds already checked), see [`Kernels::interleave_rows`].
pub(crate) type InterleaveFn = fn(&[f32], usize, usize, &mut [f32], usize);
/// [`pack_cols_body`] compiled for a level.
pub(crate) type PackColsFn = fn(Int8Layout, ColSource<'_>, PackTarget<'_>);

/// The kernels of one ISA level.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub level: Level,
    pub int8: Int8Layout,
    /// Register tile of the f32 kernel: rows × lanes (for callers that size panels).
    pub f32_tile: (usize, usize),
    sgemm: SgemmFn,
    i8gemm: I8GemmFn,
    dot: DotFn,
    dequant: DequantFn,
    pack_cols: PackColsFn,
    interleave: InterleaveFn,
    gemv: GemvFn,
    gemv_i8: GemvI8Fn,
    /// FMA chains of the peak microbenchmark and FLOPs per iteration.
    peak: (fn(usize) -> f32, usize),
    /// Element-wise kernels.
    pub ew: Ew,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels")
            .field("level", &self.level)
            .field("int8", &self.int8)
            .finish()
    }
}

/// The kernels of the strongest enabled level, detected once.
pub fn kernels() -> &'static Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    K.get_or_init(|| Kernels::for_level(detect()).unwrap_or_else(scalar::kernels))
}

impl Kernels {
    /// The table of `level`, or `None` when this CPU lacks one of its features.
    pub fn for_level(level: Level) -> Option<Kernels> {
        if !level.supported() {
            return None;
        }
        match level {
            Level::Scalar => Some(scalar::kernels()),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 | Level::Avx512 | Level::Avx512Vnni => x86::kernels(level),
            #[cfg(target_arch = "aarch64")]
            Level::Neon | Level::NeonDotprod | Level::NeonI8mm => aarch64::kernels(level),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// `C (+)= alpha · R · L`, see [`Sgemm`]. Panics when a view is out of bounds.
    pub fn sgemm(&self, g: &Sgemm<'_>, out: &mut Out<'_>) {
        if g.m == 0 || g.n == 0 {
            return;
        }
        assert!(out.fits(g.m, g.n), "sgemm: output view out of bounds");
        if g.k == 0 {
            if !out.accumulate {
                for i in 0..g.m {
                    for j in 0..g.n {
                        let idx = i * out.rs + j * out.cs;
                        out.put(idx, 0.0);
                    }
                }
            }
            return;
        }
        assert!(
            (g.m - 1) * g.rs + (g.k - 1) * g.cs < g.r.len(),
            "sgemm: row operand out of bounds"
        );
        assert!(
            g.ldb >= g.n && (g.k - 1) * g.ldb + g.n <= g.l.len(),
            "sgemm: lane operand out of bounds"
        );
        (self.sgemm)(g, out)
    }

    /// One lane block of the int8 kernel: `C[i][j] (+)= Σ_b (Σ_e R·L + corrections) ·
    /// dR·dL − minR·sumL` for rows `i < r.rows` and the first `n ≤ nt` lanes.
    pub fn i8gemm(&self, r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
        let nt = self.int8.nt;
        assert!(n <= nt, "i8gemm: {n} lanes exceed the block of {nt}");
        if r.rows == 0 || n == 0 {
            return;
        }
        assert!(out.fits(r.rows, n), "i8gemm: output view out of bounds");
        let nb = r.blocks;
        assert_eq!(l.blocks, nb, "i8gemm: block counts differ");
        assert!(
            r.stride >= 32 * nb && (r.rows - 1) * r.stride + 32 * nb <= r.vals.len(),
            "i8gemm: row values out of bounds"
        );
        let dn = (r.rows - 1) * r.d_stride + nb;
        assert!(r.d_stride >= nb && r.d.len() >= dn, "i8gemm: row scales");
        if let Some(c) = r.corr {
            assert!(c.len() >= dn, "i8gemm: row corrections");
        }
        if let Some(m) = r.min {
            assert!(m.len() >= dn, "i8gemm: row minimums");
        }
        assert!(l.vals.len() >= nb * 32 * nt, "i8gemm: lane values");
        assert!(
            l.d.len() >= nb * nt && l.sum.len() >= nb * nt,
            "i8gemm: lane scales"
        );
        if let Some(c) = l.corr {
            assert!(c.len() >= nb * nt, "i8gemm: lane corrections");
        }
        if nb == 0 {
            if !out.accumulate {
                for i in 0..r.rows {
                    for j in 0..n {
                        let idx = i * out.rs + j * out.cs;
                        out.put(idx, 0.0);
                    }
                }
            }
            return;
        }
        (self.i8gemm)(r, l, n, out)
    }

    /// `Σ a[i]·b[i]` (equal lengths).
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot: lengths differ");
        (self.dot)(a, b)
    }

    /// Dequantizes one row with this level's kernel, or the reference one.
    pub fn dequantize_row(&self, ty: crate::quant::GgmlType, src: &[u8], dst: &mut [f32]) {
        let ok = ty.bytes_for(dst.len() as u64) == Some(src.len() as u64);
        assert!(ok, "dequantize_row: {ty} row of {} bytes", src.len());
        if !(self.dequant)(ty, src, dst) {
            if let Err(e) = crate::quant::dequantize_row(ty, src, dst) {
                unreachable!("row geometry was checked: {e}");
            }
        }
    }

    /// Packs `rows` rows of `x` (`ldx` apart) column by column, each column's values
    /// adjacent: `dst[c·width + j] = x[j·ldx + c]` for `j < rows`, 0 for `rows ≤ j < width`,
    /// over the `dst.len() / width` columns (the exact forward's blocks of tokens).
    pub fn interleave_rows(
        &self,
        x: &[f32],
        rows: usize,
        ldx: usize,
        dst: &mut [f32],
        width: usize,
    ) {
        assert!(
            width > 0 && rows <= width && dst.len() % width == 0,
            "interleave_rows: shape"
        );
        let cols = dst.len() / width;
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * ldx + cols <= x.len(),
            "interleave_rows: x"
        );
        (self.interleave)(x, rows, ldx, dst, width)
    }

    /// Re-quantizes `blocks · 32` rows × `ld` columns of W (read from `src`, `ld` a multiple
    /// of the lane block `nt`) per 32 rows of each column into the i8 lane blocks of `dst`,
    /// which holds `total` blocks per lane block: block `b0 + b` of lane block `lb` at
    /// `vals[(lb · total + b0 + b) · 32 · nt ..]`, its scales and corrections at
    /// `[(lb · total + b0 + b) · nt ..]`. The correction is `−128 · Σ q` when the level wants
    /// unsigned row values (they then carry a +128 offset that it removes), else 0.
    pub fn pack_cols(&self, src: ColSource<'_>, dst: PackTarget<'_>) {
        let nt = self.int8.nt;
        let (blocks, ld, total) = (dst.blocks, dst.ld, dst.total);
        assert!(ld % nt == 0 && nt % 16 == 0, "pack_cols: lane blocks");
        assert!(dst.b0 + blocks <= total, "pack_cols: blocks");
        assert!(
            dst.vals.len() >= total * 32 * ld
                && dst.d.len() >= total * ld
                && dst.corr.len() >= total * ld,
            "pack_cols: buffers"
        );
        match src {
            ColSource::Panel(p) => assert!(p.len() >= blocks * 32 * ld, "pack_cols: panel"),
            ColSource::Quant(q) => {
                use crate::quant::GgmlType;
                assert!(
                    matches!(q.ty, GgmlType::Q8_0 | GgmlType::Q4_0),
                    "pack_cols: {} rows",
                    q.ty
                );
                let end = (q.c0 + q.cw).div_ceil(32) * q.ty.type_size();
                assert!(
                    q.c0 % 32 == 0 && q.cw % 16 == 0 && q.cw <= ld && end <= q.row_bytes,
                    "pack_cols: columns"
                );
                let n = q.rows.min(32 * blocks);
                assert!(
                    n == 0 || (n - 1) * q.row_bytes + end <= q.data.len(),
                    "pack_cols: rows"
                );
            }
        }
        (self.pack_cols)(self.int8, src, dst)
    }

    /// `y[tok · n + i] = Σ_c W[i][c] · x[tok][c]` for the `n = y.len() / t` rows of `w`
    /// (`cols` wide) and `t` tokens of `x`, straight from the blocks (see [`gemv`]). Returns
    /// false, writing nothing, unless `w` is Q8_0 or Q4_0 and `t` is 1 or 2.
    pub fn gemv(
        &self,
        ty: crate::quant::GgmlType,
        w: &[u8],
        cols: usize,
        x: &[f32],
        t: usize,
        y: &mut [f32],
    ) -> bool {
        if !gemv::gemv_supports(ty) || !(1..=2).contains(&t) {
            return false;
        }
        assert!(cols % 32 == 0 && y.len() % t == 0, "gemv: shape");
        let n = y.len() / t;
        assert_eq!(w.len(), n * (cols / 32) * ty.type_size(), "gemv: weights");
        assert!(x.len() >= t * cols, "gemv: x");
        (self.gemv)(ty, w, cols, x, t, y)
    }

    /// [`Kernels::gemv`] for int8 tokens (see [`gemv_i8`]): `y[tok · n + i] = Σ_b d_w·d_x ·
    /// Σ q_w·q_x`. Returns false, writing nothing, unless `w` is Q8_0 or Q4_0, `t` is 1 or 2
    /// and this level has an int8 GEMV.
    pub fn gemv_i8(
        &self,
        ty: crate::quant::GgmlType,
        w: &[u8],
        cols: usize,
        x: &gemv_i8::QuantTokens<'_>,
        t: usize,
        y: &mut [f32],
    ) -> bool {
        if !gemv_i8::gemv_i8_supports(ty) || !(1..=2).contains(&t) {
            return false;
        }
        assert!(cols % 32 == 0 && y.len() % t == 0, "gemv_i8: shape");
        let (n, nb) = (y.len() / t, cols / 32);
        assert_eq!(w.len(), n * nb * ty.type_size(), "gemv_i8: weights");
        assert!(
            x.q.len() >= t * cols && x.d.len() >= t * nb && x.sum.len() >= t * nb,
            "gemv_i8: tokens"
        );
        (self.gemv_i8)(ty, w, cols, x, t, y)
    }

    /// Quantizes `rows` rows of `x` (`k` = `d.len() / nt` blocks of 32 values each, rows `ldx`
    /// apart) into the lane operand of the int8 kernel for this level (i8, lane `j` = row `j`;
    /// lanes past `rows` are zero): per 32 values, scale max|x|/127, round half to even.
    /// `offset` is the weights' value offset; the lane correction is `−offset · Σ q`.
    #[allow(clippy::too_many_arguments)]
    pub fn pack_lanes(
        &self,
        x: &[f32],
        rows: usize,
        ldx: usize,
        offset: i32,
        vals: &mut [u8],
        d: &mut [f32],
        sum: &mut [f32],
        corr: &mut [i32],
    ) {
        let nt = self.int8.nt;
        let nb = d.len() / nt;
        assert!(
            rows <= nt && (self.int8.group == 4 || self.int8.group == 8),
            "pack_lanes: shape"
        );
        assert!(
            rows == 0 || (rows - 1) * ldx + 32 * nb <= x.len(),
            "pack_lanes: x"
        );
        assert!(
            vals.len() >= nb * 32 * nt && sum.len() >= nb * nt && corr.len() >= nb * nt,
            "pack_lanes: buffers"
        );
        (self.ew.pack_lanes)(self.int8, x, rows, ldx, offset, vals, d, sum, corr)
    }

    /// Runs `iters` iterations of independent fused multiply-add chains in this level's
    /// widest registers (the FMA peak microbenchmark); see [`Kernels::fma_peak_flops_per_iter`].
    pub fn fma_peak(&self, iters: usize) -> f32 {
        (self.peak.0)(iters)
    }

    /// FLOPs one [`Kernels::fma_peak`] iteration performs.
    pub fn fma_peak_flops_per_iter(&self) -> usize {
        self.peak.1
    }

    /// `x ← exp(x)` element-wise (≤ 2 ulp; exp(−∞) = 0).
    pub fn exp(&self, x: &mut [f32]) {
        (self.ew.exp_slice)(x)
    }
}

pub use ew::quantize_block;

/// Where [`Kernels::pack_cols`] reads W: row `e` of block `b` is row `32·b + e`.
#[derive(Clone, Copy, Debug)]
pub enum ColSource<'a> {
    /// A zero-padded f32 panel of `ld` floats per row.
    Panel(&'a [f32]),
    /// Q8_0 or Q4_0 rows, read straight from their blocks.
    Quant(QuantCols<'a>),
}

/// Rows of a Q8_0 or Q4_0 matrix as a [`ColSource`]: `rows` rows of `row_bytes` bytes from
/// `data` exist (later ones read as zero); panel column `j < cw` is column `c0 + j`
/// (`c0` a multiple of 32), later ones read as zero.
#[derive(Clone, Copy, Debug)]
pub struct QuantCols<'a> {
    pub ty: crate::quant::GgmlType,
    pub data: &'a [u8],
    pub row_bytes: usize,
    pub rows: usize,
    pub c0: usize,
    pub cw: usize,
}

/// Where [`Kernels::pack_cols`] writes: `blocks` blocks of `ld` columns into buffers of
/// `total` blocks per lane block, starting at block `b0`.
#[derive(Debug)]
pub struct PackTarget<'a> {
    pub blocks: usize,
    pub ld: usize,
    pub total: usize,
    pub b0: usize,
    pub vals: &'a mut [u8],
    pub d: &'a mut [f32],
    pub corr: &'a mut [i32],
}

/// The body of [`Kernels::pack_cols`] (sizes checked), compiled per level: each source
/// monomorphizes [`pack_cols_from`].
#[inline(always)]
pub(crate) fn pack_cols_body(lay: Int8Layout, src: ColSource<'_>, dst: PackTarget<'_>) {
    match src {
        ColSource::Panel(p) => pack_cols_from(lay, dst, PanelCols(p)),
        ColSource::Quant(q) if q.ty == crate::quant::GgmlType::Q8_0 => {
            pack_cols_from(lay, dst, Q8Cols(q))
        }
        ColSource::Quant(q) => pack_cols_from(lay, dst, Q4Cols(q)),
    }
}

/// Reads 16 consecutive columns of a block of 32 rows of W as f32 (inlined into each
/// level's body).
trait ColReader {
    /// Columns `col .. col + 16` of rows `row0 .. row0 + 32` into `x`.
    fn load(&self, ld: usize, row0: usize, col: usize, x: &mut [[f32; 16]; 32]);
}

struct PanelCols<'a>(&'a [f32]);
struct Q8Cols<'a>(QuantCols<'a>);
struct Q4Cols<'a>(QuantCols<'a>);

impl ColReader for PanelCols<'_> {
    #[inline(always)]
    fn load(&self, ld: usize, row0: usize, col: usize, x: &mut [[f32; 16]; 32]) {
        for (e, r) in x.iter_mut().enumerate() {
            r.copy_from_slice(&self.0[(row0 + e) * ld + col..][..16]);
        }
    }
}

/// Hints that `bytes[at]` will be read soon (nothing past the end, or without a hint
/// instruction).
#[inline(always)]
pub(crate) fn prefetch(bytes: &[u8], at: usize) {
    if let Some(b) = bytes.get(at) {
        #[cfg(target_arch = "x86_64")]
        x86::prefetch(b);
        #[cfg(target_arch = "aarch64")]
        aarch64::prefetch(b);
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let _ = b;
    }
}

impl QuantCols<'_> {
    /// For columns `c0 + col ..` of rows `row0 ..` in blocks of `BYTES` bytes: the number of
    /// rows that exist (0 past the valid columns), each row's block offset in `data`, the
    /// blocks' scales and the column's position in its block. Fetches the same blocks 32
    /// rows down (the next call's) while these are worked.
    #[inline(always)]
    fn blocks<const BYTES: usize>(
        &self,
        row0: usize,
        col: usize,
    ) -> (usize, [usize; 32], [f32; 32], usize) {
        let mut offs = [0usize; 32];
        let mut d = [0f32; 32];
        let n = if col < self.cw {
            self.rows.saturating_sub(row0).min(32)
        } else {
            0
        };
        let c = self.c0 + col;
        let mut h = [0u16; 32];
        for e in 0..n {
            let s = (row0 + e) * self.row_bytes + c / 32 * BYTES;
            offs[e] = s;
            h[e] = u16::from_le_bytes([self.data[s], self.data[s + 1]]);
            if c % 32 == 0 {
                let ahead = s + 32 * self.row_bytes;
                prefetch(self.data, ahead);
            }
        }
        // Branch-free: this loop vectorizes.
        for (o, &h) in d.iter_mut().zip(&h) {
            *o = crate::quant::reference::f16_to_f32(h);
        }
        (n, offs, d, c % 32)
    }
}

impl ColReader for Q8Cols<'_> {
    #[inline(always)]
    fn load(&self, _: usize, row0: usize, col: usize, x: &mut [[f32; 16]; 32]) {
        let (n, offs, d, at) = self.0.blocks::<34>(row0, col);
        for (e, r) in x.iter_mut().enumerate() {
            if e < n {
                let q = &self.0.data[offs[e] + 2 + at..][..16];
                for (o, &v) in r.iter_mut().zip(q) {
                    *o = (v as i8 as f32) * d[e];
                }
            } else {
                *r = [0.0; 16];
            }
        }
    }
}

impl ColReader for Q4Cols<'_> {
    #[inline(always)]
    fn load(&self, _: usize, row0: usize, col: usize, x: &mut [[f32; 16]; 32]) {
        let (n, offs, d, at) = self.0.blocks::<18>(row0, col);
        // Columns 0..16 of a block are the low nibbles, 16..32 the high ones.
        let sh = if at == 0 { 0 } else { 4 };
        for (e, r) in x.iter_mut().enumerate() {
            if e < n {
                let q = &self.0.data[offs[e] + 2..][..16];
                for (o, &v) in r.iter_mut().zip(q) {
                    *o = (((v >> sh) & 15) as i32 - 8) as f32 * d[e];
                }
            } else {
                *r = [0.0; 16];
            }
        }
    }
}

/// [`pack_cols_body`] over any reader of 16 consecutive columns of a row: columns in chunks
/// of 16 lanes, each gathered over its block's 32 rows, then quantized four rows at a time
/// into one little-endian word per lane.
#[inline(always)]
fn pack_cols_from(lay: Int8Layout, dst: PackTarget<'_>, src: impl ColReader) {
    let (nt, g) = (lay.nt, lay.group);
    let offset: i32 = if lay.unsigned_weights { 128 } else { 0 };
    let PackTarget {
        blocks,
        ld,
        total,
        b0,
        vals,
        d,
        corr,
    } = dst;
    for lb in 0..ld / nt {
        let at = lb * total + b0;
        let vb = &mut vals[at * 32 * nt..(at + blocks) * 32 * nt];
        let db = &mut d[at * nt..(at + blocks) * nt];
        let cb = &mut corr[at * nt..(at + blocks) * nt];
        for b in 0..blocks {
            for jc in (0..nt).step_by(16) {
                let col = lb * nt + jc;
                let mut x = [[0f32; 16]; 32];
                src.load(ld, 32 * b, col, &mut x);
                let mut amax = [0f32; 16];
                for r in &x {
                    for l in 0..16 {
                        // Compare-and-select: `f32::max`'s NaN rule costs two more ops.
                        let a = r[l].abs();
                        amax[l] = if a > amax[l] { a } else { amax[l] };
                    }
                }
                let mut id = [0f32; 16];
                for l in 0..16 {
                    let s = amax[l] / 127.0;
                    db[b * nt + jc + l] = s;
                    id[l] = if s > 0.0 { 1.0 / s } else { 0.0 };
                }
                let mut sum = [0i32; 16];
                for e4 in 0..8 {
                    let mut word = [0u32; 16];
                    for u in 0..4 {
                        let r = &x[4 * e4 + u];
                        for l in 0..16 {
                            let q =
                                crate::quant::reference::nearest_int(r[l] * id[l]).clamp(-127, 127);
                            sum[l] += q;
                            word[l] |= ((q as u32) & 0xff) << (8 * u);
                        }
                    }
                    // Byte e of lane j sits at ((e / g)·nt + j)·g + e % g.
                    let (grp, within) = ((4 * e4) / g, (4 * e4) % g);
                    let base = b * 32 * nt + (grp * nt + jc) * g + within;
                    if g == 4 {
                        // The 16 lanes' words are adjacent: one contiguous 64-byte store.
                        let dst = &mut vb[base..base + 64];
                        for (o, w) in dst.chunks_exact_mut(4).zip(&word) {
                            o.copy_from_slice(&w.to_le_bytes());
                        }
                    } else {
                        for (l, w) in word.iter().enumerate() {
                            vb[base + l * g..base + l * g + 4].copy_from_slice(&w.to_le_bytes());
                        }
                    }
                }
                for l in 0..16 {
                    cb[b * nt + jc + l] = -offset * sum[l];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn vals(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::util::rng::XorShift64::new(seed);
        (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                g == w || (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan()),
                "{what}: element {i}: {g} vs {w}"
            );
        }
    }

    const ODD: [usize; 6] = [0, 1, 31, 33, 255, 4097];

    /// Which paths a run exercises, pinned by CI (e.g. under qemu `-cpu max`):
    /// `POCKETLORA_EXPECT_LEVELS` names the supported levels (weakest first, comma-separated)
    /// and `POCKETLORA_EXPECT_LEVEL` the one [`kernels`] picks after `POCKETLORA_DISABLE`.
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

    #[test]
    fn detection_finds_the_levels_the_environment_expects() {
        let names: Vec<&str> = Level::available().iter().map(|l| l.name()).collect();
        let used = kernels().level;
        eprintln!("simd levels available: {names:?}; in use: {}", used.name());
        assert_eq!(names.first(), Some(&"scalar"));
        assert!(Level::available().contains(&used));
        for level in Level::available() {
            assert_eq!(Kernels::for_level(level).map(|k| k.level), Some(level));
        }
        if let Ok(want) = std::env::var("POCKETLORA_EXPECT_LEVELS") {
            assert_eq!(names.join(","), want, "POCKETLORA_EXPECT_LEVELS");
        }
        if let Ok(want) = std::env::var("POCKETLORA_EXPECT_LEVEL") {
            assert_eq!(used.name(), want, "POCKETLORA_EXPECT_LEVEL");
        }
    }

    #[test]
    fn interleave_rows_equals_the_scalar_twin_over_odd_shapes() {
        let twin = scalar::kernels();
        let x: Vec<f32> = (0..40 * 131).map(|i| i as f32 * 0.5 - 7.0).collect();
        for level in Level::available() {
            let k = Kernels::for_level(level).unwrap();
            for width in [1, 6, 8, 12, 16, 20, 32, 48] {
                for rows in [0, 1, 5, 11, 16, 17, 31, 32, 40] {
                    if rows > width {
                        continue;
                    }
                    for cols in [0, 1, 7, 16, 33, 100] {
                        let ldx = cols + 31;
                        let mut a = vec![f32::NAN; cols * width];
                        let mut b = a.clone();
                        k.interleave_rows(&x, rows, ldx, &mut a, width);
                        twin.interleave_rows(&x, rows, ldx, &mut b, width);
                        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&a), bits(&b), "{level:?} {rows}x{cols} width {width}");
                        // The definition, independently of either kernel.
                        for c in 0..cols {
                            for j in 0..width {
                                let want = if j < rows { x[j * ldx + c] } else { 0.0 };
                                assert_eq!(a[c * width + j].to_bits(), want.to_bits());
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sgemm_equals_the_scalar_twin_over_odd_shapes_strides_and_outputs() {
        let twin = scalar::kernels();
        for level in Level::available() {
            let k = Kernels::for_level(level).unwrap();
            for (m, n, kk) in [
                (0, 5, 3),
                (1, 1, 1),
                (13, 31, 7),
                (31, 33, 64),
                (25, 17, 255),
                (3, 4097, 2),
                (40, 64, 0),
                (12, 32, 50),
                (24, 40, 9),
                (8, 16, 33),
                (6, 16, 5),
            ] {
                // Row-major, column-major, and packed for the level's register tile (each
                // step's `mr` row values adjacent: the kernels' one-pointer path).
                let mr = k.f32_tile.0;
                for (rs, cs) in [(kk.max(1), 1), (1, m.max(1)), (1, mr)] {
                    let r = vals(m.max(1) * kk.max(1) + mr * kk + 3, 1);
                    let ldb = n + 5;
                    let l = vals(kk.max(1) * ldb, 2);
                    for (ors, ocs, acc) in [
                        (n + 2, 1, false),
                        (1, m + 1, true),
                        (1, m + 3, false),
                        (2, 2 * m + 1, true),
                    ] {
                        let len = m.max(1) * ors.max(1) + n.max(1) * ocs.max(1) + 8;
                        let mut want = vals(len, 3);
                        let mut got = want.clone();
                        let g = Sgemm {
                            m,
                            n,
                            k: kk,
                            r: &r,
                            rs,
                            cs,
                            l: &l,
                            ldb,
                            alpha: 0.75,
                        };
                        twin.sgemm(&g, &mut Out::new(&mut want, ors, ocs, acc));
                        k.sgemm(&g, &mut Out::new(&mut got, ors, ocs, acc));
                        close(
                            &format!("sgemm {level:?} {m}x{n}x{kk}"),
                            &got,
                            &want,
                            1e-5 * (kk as f32).max(1.0),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn i8gemm_equals_its_definition_for_every_operand_form() {
        for level in Level::available() {
            let k = Kernels::for_level(level).unwrap();
            let lay = k.int8;
            let nt = lay.nt;
            for (rows, blocks, n) in [
                (1usize, 1usize, 1usize),
                (7, 3, nt),
                (5, 2, nt - 1),
                (13, 9, 3),
                (3, 0, 2),
            ] {
                for unsigned_rows in [false, true] {
                    // The forms each level takes: signed × signed, or (VNNI) exactly one side
                    // unsigned.
                    let lanes_unsigned = lay.unsigned_weights && !unsigned_rows;
                    if (unsigned_rows || lanes_unsigned) != lay.unsigned_weights {
                        continue;
                    }
                    let stride = 32 * blocks + 4;
                    let rv: Vec<u8> = vals(rows * stride, 4)
                        .iter()
                        .map(|v| {
                            if unsigned_rows {
                                (v.abs() * 255.0) as u8
                            } else {
                                (v * 127.0) as i8 as u8
                            }
                        })
                        .collect();
                    let lv: Vec<u8> = vals(blocks * 32 * nt, 5)
                        .iter()
                        .map(|v| {
                            if lanes_unsigned {
                                (v.abs() * 255.0) as u8
                            } else {
                                (v * 127.0) as i8 as u8
                            }
                        })
                        .collect();
                    let rd = vals(rows * blocks.max(1), 6);
                    let ld = vals(blocks * nt, 7);
                    let ls = vals(blocks * nt, 8);
                    let rc: Vec<i32> = (0..rows * blocks.max(1))
                        .map(|i| i as i32 * 37 - 500)
                        .collect();
                    let lc: Vec<i32> = (0..blocks * nt).map(|i| 250 - i as i32 * 11).collect();
                    let rmin = vals(rows * blocks.max(1), 9);
                    for with_min in [false, true] {
                        let r = I8Rows {
                            rows,
                            blocks,
                            vals: &rv,
                            stride,
                            unsigned: unsigned_rows,
                            d: &rd,
                            d_stride: blocks.max(1),
                            corr: lanes_unsigned.then_some(&rc[..]),
                            min: with_min.then_some(&rmin[..]),
                        };
                        let l = I8Lanes {
                            blocks,
                            vals: &lv,
                            unsigned: lanes_unsigned,
                            d: &ld,
                            sum: &ls,
                            corr: unsigned_rows.then_some(&lc[..]),
                        };
                        // f64 definition; the tolerance is relative to the size of the terms
                        // (the integer sums reach 32·255·127 and the corrections cancel them).
                        let term = |i: usize, j: usize| -> (f64, f64) {
                            let (mut sum, mut mag) = (0f64, 0f64);
                            for b in 0..blocks {
                                let mut s = r.corr.map_or(0, |c| c[i * blocks + b]) as i64
                                    + l.corr.map_or(0, |c| c[b * nt + j]) as i64;
                                for e in 0..32 {
                                    let x = rv[i * stride + 32 * b + e];
                                    let y = lv[scalar::lane_byte(lay, b, e, j)];
                                    let x = if unsigned_rows {
                                        x as i64
                                    } else {
                                        x as i8 as i64
                                    };
                                    let y = if lanes_unsigned {
                                        y as i64
                                    } else {
                                        y as i8 as i64
                                    };
                                    s += x * y;
                                }
                                let t =
                                    s as f64 * rd[i * blocks + b] as f64 * ld[b * nt + j] as f64;
                                let mt = if with_min {
                                    rmin[i * blocks + b] as f64 * ls[b * nt + j] as f64
                                } else {
                                    0.0
                                };
                                sum += t - mt;
                                mag += t.abs() + mt.abs();
                            }
                            (sum, mag)
                        };
                        for (ors, ocs) in [(n + 1, 1), (1, rows + 2)] {
                            let len = rows * ors + n * ocs + 4;
                            let base = vals(len, 10);
                            let mut twin = base.clone();
                            let mut got = base.clone();
                            scalar::i8gemm_layout(
                                &r,
                                &l,
                                n,
                                &mut Out::new(&mut twin, ors, ocs, true),
                                lay,
                            );
                            k.i8gemm(&r, &l, n, &mut Out::new(&mut got, ors, ocs, true));
                            // Nothing outside the (rows × n) view is written.
                            let inside = |at: usize| {
                                (0..rows).any(|i| (0..n).any(|j| i * ors + j * ocs == at))
                            };
                            for (at, (&b, (&g, &tw))) in
                                base.iter().zip(got.iter().zip(&twin)).enumerate()
                            {
                                if !inside(at) {
                                    assert_eq!((g, tw), (b, b), "i8gemm {level:?} wrote at {at}");
                                }
                            }
                            for i in 0..rows {
                                for j in 0..n {
                                    let at = i * ors + j * ocs;
                                    let (want, mag) = term(i, j);
                                    let want = want + base[at] as f64;
                                    for (who, v) in [("twin", twin[at]), ("kernel", got[at])] {
                                        assert!(
                                            (v as f64 - want).abs() <= 1e-6 * (mag + 1.0),
                                            "i8gemm {who} {level:?} {rows}x{blocks}x{n} ({i},{j}): {v} vs {want}"
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fast_exp_is_within_its_documented_error_and_handles_the_limits() {
        let mut worst = 0f64;
        for i in 0..=1_750_000 {
            let x = -87.0 + i as f32 * 1e-4;
            let want = (x as f64).exp();
            let rel = (ew::exp_fast(x) as f64 - want).abs() / want;
            worst = worst.max(rel);
        }
        assert!(worst < 1.5e-7, "worst relative error {worst:e}");
        assert!(worst > 0.0, "the sweep compared nothing");
        for (x, want) in [
            (f32::NEG_INFINITY, 0.0),
            (-87.01, 0.0),
            (-1e30, 0.0),
            (88.01, f32::INFINITY),
            (f32::INFINITY, f32::INFINITY),
            (0.0, 1.0),
            (-0.0, 1.0),
        ] {
            assert_eq!(ew::exp_fast(x), want, "exp_fast({x})");
        }
        assert!(ew::exp_fast(f32::NAN).is_nan());
    }

    #[test]
    fn exp_is_within_one_ulp_of_f64_and_handles_special_values() {
        for level in Level::available() {
            let k = Kernels::for_level(level).unwrap();
            let mut x: Vec<f32> = (0..20001).map(|i| -110.0 + i as f32 * 0.01).collect();
            x.extend([
                f32::NEG_INFINITY,
                f32::INFINITY,
                f32::NAN,
                0.0,
                -0.0,
                88.72,
                88.73,
                -87.5,
                -103.0,
            ]);
            let mut y = x.clone();
            k.exp(&mut y);
            for (&a, &b) in x.iter().zip(&y) {
                let want = (a as f64).exp() as f32;
                if a.is_nan() {
                    assert!(b.is_nan());
                } else if want.is_infinite() || want == 0.0 {
                    assert_eq!(b, want, "exp({a}) on {level:?}");
                } else {
                    let ulps = (b.to_bits() as i64 - want.to_bits() as i64).abs();
                    assert!(ulps <= 1, "exp({a}) = {b} vs {want} on {level:?}");
                }
            }
        }
    }

    #[test]
    fn element_wise_kernels_equal_their_plain_twins_over_odd_lengths() {
        let twin = Ew::plain();
        for level in Level::available() {
            let e = Kernels::for_level(level).unwrap().ew;
            for n in ODD {
                let (g, u, dh) = (vals(n, 1), vals(n, 2), vals(n, 3));
                let g: Vec<f32> = g.iter().map(|v| v * 12.0).collect();
                for fast in [false, true] {
                    let (mut h1, mut h2) = (vec![0f32; n], vec![0f32; n]);
                    (twin.swiglu)(&mut h1, &g, &u, fast);
                    (e.swiglu)(&mut h2, &g, &u, fast);
                    close("swiglu", &h2, &h1, 1e-6);
                    let (mut dg1, mut du1) = (vals(n, 4), vals(n, 5));
                    let (mut dg2, mut du2) = (dg1.clone(), du1.clone());
                    (twin.swiglu_back)(&mut dg1, &mut du1, &dh, &g, &u, fast);
                    (e.swiglu_back)(&mut dg2, &mut du2, &dh, &g, &u, fast);
                    close("swiglu dg", &dg2, &dg1, 1e-6);
                    close("swiglu du", &du2, &du1, 1e-6);
                    (twin.geglu)(&mut h1, &g, &u, fast);
                    (e.geglu)(&mut h2, &g, &u, fast);
                    close("geglu", &h2, &h1, 1e-6);
                    (twin.geglu_back)(&mut dg1, &mut du1, &dh, &g, &u, fast);
                    (e.geglu_back)(&mut dg2, &mut du2, &dh, &g, &u, fast);
                    close("geglu dg", &dg2, &dg1, 1e-6);
                    close("geglu du", &du2, &du1, 1e-6);
                }
                let (mut p1, mut m1, mut v1) = (
                    vals(n, 6),
                    vals(n, 7),
                    vals(n, 8).iter().map(|x| x.abs()).collect::<Vec<_>>(),
                );
                let (mut p2, mut m2, mut v2) = (p1.clone(), m1.clone(), v1.clone());
                let kk = [0.9, 0.999, 0.01, 1.3, 1e-8, 0.999];
                (twin.adamw)(&mut p1, &g, &mut m1, &mut v1, kk);
                (e.adamw)(&mut p2, &g, &mut m2, &mut v2, kk);
                close("adamw", &p2, &p1, 1e-6);
                if n > 0 {
                    let w = vals(n, 9);
                    let (mut o1, mut o2) = (vec![0f32; n], vec![0f32; n]);
                    let r1 = (twin.rmsnorm_row)(&mut o1, &u, &w, 1e-5);
                    let r2 = (e.rmsnorm_row)(&mut o2, &u, &w, 1e-5);
                    close("rmsnorm", &o2, &o1, 1e-5);
                    close("rstd", &[r2], &[r1], 1e-5);
                    let (mut d1, mut d2) = (vals(n, 10), vals(n, 10));
                    (twin.rmsnorm_back_row)(&mut d1, &dh, &u, &w, r1);
                    (e.rmsnorm_back_row)(&mut d2, &dh, &u, &w, r1);
                    close("rmsnorm back", &d2, &d1, 1e-5);
                }
            }
            // Tiles: keys × queries with masked entries.
            for (rows, n) in [(1usize, 1usize), (31, 33), (64, 32), (33, 70)] {
                let ld = n + 3;
                let mut st: Vec<f32> = vals(rows * ld, 11).iter().map(|v| v * 8.0).collect();
                for (i, x) in st.iter_mut().enumerate() {
                    if i % 7 == 3 {
                        *x = f32::NEG_INFINITY;
                    }
                }
                let mk = || (vec![f32::NEG_INFINITY; n], vec![0f32; n], vec![0f32; n]);
                let lse = vals(n, 12);
                let mut p1 = st.clone();
                for fast in [true, false] {
                    let (mut a1, mut m1, mut l1, mut c1) = (st.clone(), mk().0, mk().1, mk().2);
                    let (mut a2, mut m2, mut l2, mut c2) = (st.clone(), mk().0, mk().1, mk().2);
                    for _ in 0..2 {
                        (twin.softmax_tile)(&mut a1, rows, n, ld, &mut m1, &mut l1, &mut c1, fast);
                        (e.softmax_tile)(&mut a2, rows, n, ld, &mut m2, &mut l2, &mut c2, fast);
                    }
                    close("softmax tile", &a2, &a1, 1e-6);
                    close("softmax sums", &l2, &l1, 1e-6);
                    close("softmax corr", &c2, &c1, 1e-6);
                    let mut p2 = st.clone();
                    p1.copy_from_slice(&st);
                    (twin.probs_tile)(&mut p1, rows, n, ld, &lse, fast);
                    (e.probs_tile)(&mut p2, rows, n, ld, &lse, fast);
                    close("probs", &p2, &p1, 1e-6);
                }
                let (mut d1, mut d2) = (vals(rows * ld, 13), vals(rows * ld, 13));
                (twin.dsoftmax_tile)(&mut d1, &p1, rows, n, ld, &lse);
                (e.dsoftmax_tile)(&mut d2, &p1, rows, n, ld, &lse);
                close("dsoftmax", &d2, &d1, 1e-6);
                (twin.scale_rows)(&mut d1, rows.min(n), n, ld, &lse);
                (e.scale_rows)(&mut d2, rows.min(n), n, ld, &lse);
                close("scale rows", &d2, &d1, 1e-6);
            }
            // Row-wise online softmax (two panels in a row, a running max that a later
            // panel raises), over odd widths and a padded row stride.
            for (rows, n) in [(1usize, 1usize), (3, 15), (5, 17), (2, 33), (7, 4097)] {
                let ld = n + 5;
                let x: Vec<f32> = vals(rows * ld, 15).iter().map(|v| v * 30.0).collect();
                let x2: Vec<f32> = vals(rows * ld, 16).iter().map(|v| v * 30.0 + 9.0).collect();
                for fast in [false, true] {
                    let mk = || {
                        (
                            vec![f32::NEG_INFINITY; rows],
                            vec![0f64; rows],
                            vec![0f32; rows],
                        )
                    };
                    let ((mut m1, mut s1, mut c1), (mut m2, mut s2, mut c2)) = (mk(), mk());
                    let mut m_first = Vec::new();
                    for x in [&x, &x2] {
                        let (mut p1, mut p2) = (x.clone(), x.clone());
                        (twin.lse_exp_rows)(&mut p1, rows, n, ld, &mut m1, &mut s1, &mut c1, fast);
                        (e.lse_exp_rows)(&mut p2, rows, n, ld, &mut m2, &mut s2, &mut c2, fast);
                        assert_eq!(m1, m2, "online softmax max on {level:?}");
                        close("online softmax values", &p2, &p1, 1e-6);
                        close("online softmax corrections", &c2, &c1, 1e-6);
                        for j in 0..rows {
                            assert_eq!(p2[j * ld + n..(j + 1) * ld], x[j * ld + n..(j + 1) * ld]);
                            let want = ((x[j * ld] - m2[j]) as f64).exp();
                            assert!((p2[j * ld] as f64 - want).abs() <= 1e-6 * want.max(1e-30));
                        }
                        if m_first.is_empty() {
                            m_first = m1.clone();
                        }
                    }
                    for j in 0..rows {
                        // Against the definition in f64, independently of either kernel.
                        let all = x[j * ld..j * ld + n].iter().chain(&x2[j * ld..j * ld + n]);
                        let want: f64 = all.map(|&v| (v as f64 - m1[j] as f64).exp()).sum();
                        for s in [s1[j], s2[j]] {
                            assert!((s / want - 1.0).abs() < 1e-6, "lse sum {s} vs {want}");
                        }
                        let c = (m_first[j] as f64 - m1[j] as f64).exp();
                        assert!((c2[j] as f64 - c).abs() <= 1e-6 * c.max(1e-30), "corr");
                    }
                }
            }
        }
    }

    #[test]
    fn dequantization_equals_the_reference_for_every_type_and_odd_row_lengths() {
        use crate::quant::{dequantize_row, quantize, GgmlType};
        for level in Level::available() {
            let k = Kernels::for_level(level).unwrap();
            for ty in [
                GgmlType::Q8_0,
                GgmlType::Q4_0,
                GgmlType::Q4_K,
                GgmlType::Q6_K,
                GgmlType::F16,
                GgmlType::BF16,
                GgmlType::F32,
            ] {
                for blocks in [1usize, 3, 33] {
                    let n = blocks * ty.block_size().max(32);
                    let bytes = quantize(ty, &vals(n, 14), n).unwrap();
                    let mut want = vec![0f32; n];
                    dequantize_row(ty, &bytes, &mut want).unwrap();
                    let mut got = vec![f32::NAN; n];
                    k.dequantize_row(ty, &bytes, &mut got);
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{ty} on {level:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_f16_block_scale_dequantizes_as_the_reference_on_every_level() {
        // One Q8_0 / Q4_0 block per binary16 pattern (subnormals, infinities and NaNs
        // included) with fixed values: the per-ISA scale conversion (F16C on x86) must give
        // the reference's value; a NaN stays a NaN.
        use crate::quant::{dequantize_row, GgmlType};
        let patterns = 1usize << 16;
        for (ty, bytes) in [(GgmlType::Q8_0, 34usize), (GgmlType::Q4_0, 18)] {
            let mut row = vec![0u8; patterns * bytes];
            for (h, blk) in row.chunks_exact_mut(bytes).enumerate() {
                blk[..2].copy_from_slice(&(h as u16).to_le_bytes());
                for (i, q) in blk[2..].iter_mut().enumerate() {
                    *q = (i * 37 + 11) as u8;
                }
            }
            let n = patterns * 32;
            let mut want = vec![0f32; n];
            dequantize_row(ty, &row, &mut want).unwrap();
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            for level in Level::available() {
                let k = Kernels::for_level(level).unwrap();
                let mut got = vec![0f32; n];
                k.dequantize_row(ty, &row, &mut got);
                for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
                    assert!(same(a, b), "{ty} on {level:?}: scale {:#06x}", i / 32);
                }
            }
        }
    }

    /// Checks one `pack_cols` result against `quantize_block` of each column's 32 rows of
    /// `panel` (blocks · 32 rows × ld, the dequantized source).
    fn check_packed(
        k: &Kernels,
        panel: &[f32],
        blocks: usize,
        ld: usize,
        got: (&[u8], &[f32], &[i32]),
        what: &str,
    ) {
        let lay = k.int8;
        let (v, d, corr) = got;
        for lb in 0..ld / lay.nt {
            for b in 0..blocks {
                for j in 0..lay.nt {
                    let col = lb * lay.nt + j;
                    let x: Vec<f32> = (0..32).map(|e| panel[(32 * b + e) * ld + col]).collect();
                    let mut q = [0i8; 32];
                    let (s, sum) = quantize_block(&x, &mut q);
                    let at = (lb * blocks + b) * lay.nt + j;
                    assert_eq!(d[at], s, "{what} scale of column {col} block {b}");
                    let want = if lay.unsigned_weights { -128 * sum } else { 0 };
                    assert_eq!(
                        corr[at], want,
                        "{what} correction of column {col} block {b}"
                    );
                    for (e, &qq) in q.iter().enumerate() {
                        let byte = lb * blocks * 32 * lay.nt + scalar::lane_byte(lay, b, e, j);
                        assert_eq!(v[byte], qq as u8, "{what} column {col} block {b} byte {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn pack_cols_puts_every_byte_where_the_layout_says() {
        for level in Level::available() {
            let k = Kernels::for_level(level).unwrap();
            let (blocks, ld) = (2usize, 2 * k.int8.nt);
            let panel = vals(blocks * 32 * ld, 15);
            let mut v = vec![0u8; blocks * 32 * ld];
            let mut d = vec![0f32; blocks * ld];
            let mut c = vec![7i32; blocks * ld];
            let dst = PackTarget {
                blocks,
                ld,
                total: blocks,
                b0: 0,
                vals: &mut v,
                d: &mut d,
                corr: &mut c,
            };
            k.pack_cols(ColSource::Panel(&panel), dst);
            check_packed(
                &k,
                &panel,
                blocks,
                ld,
                (&v, &d, &c),
                &format!("{level:?} panel"),
            );
        }
    }

    #[test]
    fn pack_cols_reads_q8_0_and_q4_0_blocks_as_their_dequantized_panel() {
        use crate::quant::{dequantize_row, quantize, GgmlType};
        // 70 rows (the last 32-row block partial) × 160 columns; the window starts at column
        // 32 and its width stops short of the padded lane blocks.
        let (rows, cols, c0) = (70usize, 160usize, 32usize);
        let w: Vec<f32> = vals(rows * cols, 16).iter().map(|x| x * 3.0).collect();
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0] {
            let bytes = quantize(ty, &w, cols).unwrap();
            let row_bytes = bytes.len() / rows;
            let mut deq = vec![0f32; rows * cols];
            dequantize_row(ty, &bytes, &mut deq).unwrap();
            for level in Level::available() {
                let k = Kernels::for_level(level).unwrap();
                let nt = k.int8.nt;
                let cw: usize = if nt == 16 { 48 } else { 96 };
                let ld = cw.div_ceil(nt) * nt + nt;
                let blocks = rows.div_ceil(32);
                // The expected panel: zero past the last row and past the window.
                let mut panel = vec![0f32; blocks * 32 * ld];
                for r in 0..rows {
                    panel[r * ld..r * ld + cw].copy_from_slice(&deq[r * cols + c0..][..cw]);
                }
                let mut v = vec![0u8; blocks * 32 * ld];
                let mut d = vec![0f32; blocks * ld];
                let mut c = vec![7i32; blocks * ld];
                // One block per call, as the backward packs them, then all at once.
                for b in 0..blocks {
                    let src = QuantCols {
                        ty,
                        data: &bytes[32 * b * row_bytes..],
                        row_bytes,
                        rows: rows - 32 * b,
                        c0,
                        cw,
                    };
                    let dst = PackTarget {
                        blocks: 1,
                        ld,
                        total: blocks,
                        b0: b,
                        vals: &mut v,
                        d: &mut d,
                        corr: &mut c,
                    };
                    k.pack_cols(ColSource::Quant(src), dst);
                }
                let what = format!("{level:?} {ty}");
                check_packed(&k, &panel, blocks, ld, (&v, &d, &c), &what);
                let all = QuantCols {
                    ty,
                    data: &bytes,
                    row_bytes,
                    rows,
                    c0,
                    cw,
                };
                let (mut v2, mut d2, mut c2) = (v.clone(), d.clone(), c.clone());
                v2.fill(1);
                d2.fill(1.0);
                c2.fill(1);
                let dst = PackTarget {
                    blocks,
                    ld,
                    total: blocks,
                    b0: 0,
                    vals: &mut v2,
                    d: &mut d2,
                    corr: &mut c2,
                };
                k.pack_cols(ColSource::Quant(all), dst);
                assert!(
                    v2 == v && d2 == d && c2 == c,
                    "{what}: one call differs from per-block calls"
                );
            }
        }
    }
}

#[cfg(test)]
mod perf_probe {
    use super::*;

    /// Not a check: single-thread f32 micro-gemm efficiency against the FMA loop, interleaved.
    /// `cargo test --release --lib perf_probe -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn sgemm_efficiency() {
        let k = kernels();
        let (m, n, kk) = (60usize, 32usize, 2048usize);
        let r: Vec<f32> = (0..m * kk).map(|i| (i % 7) as f32 * 0.1).collect();
        let l: Vec<f32> = (0..kk * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let reps = 200;
            for _ in 0..reps {
                let g = Sgemm {
                    m,
                    n,
                    k: kk,
                    r: &r,
                    rs: kk,
                    cs: 1,
                    l: &l,
                    ldb: n,
                    alpha: 1.0,
                };
                k.sgemm(&g, &mut Out::new(&mut c, 1, m, false));
            }
            let gf = (2 * m * n * kk * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
            let t = std::time::Instant::now();
            let iters = 5_000_000;
            std::hint::black_box(k.fma_peak(iters));
            let peak =
                (k.fma_peak_flops_per_iter() * iters) as f64 / t.elapsed().as_secs_f64() / 1e9;
            println!(
                "sgemm {gf:.1} GFLOP/s, fma peak {peak:.1} GFLOP/s, ratio {:.2}",
                gf / peak
            );
        }
    }
}
