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
//! Kernels never allocate; all bounds are checked here, once per call, so the per-ISA code
//! only sees in-bounds addresses.

pub mod scalar;

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

    /// Runs `f(part_index, part)` in parallel for the column ranges `bounds[i]..bounds[i+1]`
    /// (increasing, ending at most at `ld`).
    pub fn par_parts<F>(&mut self, bounds: &[usize], f: F)
    where
        F: Fn(usize, ColumnPart<'_>) + Sync + Send,
    {
        assert!(
            bounds.windows(2).all(|w| w[0] <= w[1]) && bounds.last().is_none_or(|&b| b <= self.ld),
            "SharedColumns: bounds must increase within the row"
        );
        use rayon::prelude::*;
        let parts: Vec<ColumnPart<'_>> = bounds
            .windows(2)
            .map(|w| ColumnPart {
                ptr: self.ptr,
                len: self.len,
                ld: self.ld,
                c0: w[0],
                c1: w[1],
                _marker: PhantomData,
            })
            .collect();
        parts.into_par_iter().enumerate().for_each(|(i, p)| f(i, p));
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
/// In-place element-wise map.
pub(crate) type MapFn = fn(&mut [f32]);
/// [`pack_cols_body`] compiled for a level.
pub(crate) type PackColsFn =
    fn(Int8Layout, &[f32], usize, usize, usize, usize, &mut [u8], &mut [f32]);

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
    exp: MapFn,
    pack_cols: PackColsFn,
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

    /// Re-quantizes a zero-padded f32 panel of `blocks · 32` rows × `ld` columns (`ld` a
    /// multiple of the lane block `nt`) per 32 rows of each column into lane blocks of a
    /// buffer holding `total` blocks per lane block: block `b0 + b` of lane block `lb` at
    /// `vals[(lb · total + b0 + b) · 32 · nt ..]`, its scales at `d[(lb · total + b0 + b) · nt
    /// ..]`. Weights carry the +128 offset when the level wants unsigned weights.
    #[allow(clippy::too_many_arguments)]
    pub fn pack_cols(
        &self,
        panel: &[f32],
        blocks: usize,
        ld: usize,
        total: usize,
        b0: usize,
        vals: &mut [u8],
        d: &mut [f32],
    ) {
        let nt = self.int8.nt;
        assert!(ld % nt == 0 && nt % 16 == 0, "pack_cols: lane blocks");
        assert!(panel.len() >= blocks * 32 * ld, "pack_cols: panel");
        assert!(b0 + blocks <= total, "pack_cols: blocks");
        assert!(
            vals.len() >= total * 32 * ld && d.len() >= total * ld,
            "pack_cols: buffers"
        );
        (self.pack_cols)(self.int8, panel, blocks, ld, total, b0, vals, d)
    }

    /// `x ← exp(x)` element-wise (relative error ≤ 2e-7 over the f32 range; exp(−∞) = 0).
    pub fn exp(&self, x: &mut [f32]) {
        (self.exp)(x)
    }
}

/// Quantizes `rows` rows of `x` (each `k` values, `k` a multiple of 32, rows `ldx` apart)
/// into the lane operand of the int8 kernel for `layout` (i8, lane `j` = row `j`; lanes past
/// `rows` are zero): per 32 values, scale max|x|/127 and round half to even. `offset` is the
/// weights' value offset; the lane correction is `−offset · Σ q`.
#[allow(clippy::too_many_arguments)]
pub fn pack_lanes(
    layout: Int8Layout,
    x: &[f32],
    rows: usize,
    k: usize,
    ldx: usize,
    offset: i32,
    vals: &mut [u8],
    d: &mut [f32],
    sum: &mut [f32],
    corr: &mut [i32],
) {
    let (nt, g) = (layout.nt, layout.group);
    assert!(k % 32 == 0 && rows <= nt, "pack_lanes: shape");
    assert!(
        rows == 0 || (rows - 1) * ldx + k <= x.len(),
        "pack_lanes: x"
    );
    let nb = k / 32;
    assert!(
        vals.len() >= nb * 32 * nt
            && d.len() >= nb * nt
            && sum.len() >= nb * nt
            && corr.len() >= nb * nt,
        "pack_lanes: buffers"
    );
    let mut q = [0i8; 32];
    for b in 0..nb {
        let vb = &mut vals[b * 32 * nt..(b + 1) * 32 * nt];
        for j in 0..nt {
            let (scale, s) = if j < rows {
                quantize_block(&x[j * ldx + 32 * b..][..32], &mut q)
            } else {
                q = [0; 32];
                (0.0, 0)
            };
            for (e, &v) in q.iter().enumerate() {
                vb[((e / g) * nt + j) * g + e % g] = v as u8;
            }
            d[b * nt + j] = scale;
            sum[b * nt + j] = scale * s as f32;
            corr[b * nt + j] = -offset * s;
        }
    }
}

/// Quantizes 32 values to i8 with scale d = max|x|/127, q = round(x/d) (half to even, as
/// `cvtps2dq`); returns d and Σ q.
#[inline]
pub fn quantize_block(x: &[f32], q: &mut [i8; 32]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut s = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        let r = crate::quant::reference::nearest_int(v * id).clamp(-127, 127);
        *o = r as i8;
        s += r;
    }
    (d, s)
}

/// The body of [`Kernels::pack_cols`] (sizes checked), compiled per level: columns in
/// chunks of 16 lanes, rows in groups of the layout's byte group.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_cols_body(
    lay: Int8Layout,
    panel: &[f32],
    blocks: usize,
    ld: usize,
    total: usize,
    b0: usize,
    vals: &mut [u8],
    d: &mut [f32],
) {
    let (nt, g) = (lay.nt, lay.group);
    let flip: u32 = if lay.unsigned_weights { 0x8080_8080 } else { 0 };
    for lb in 0..ld / nt {
        let vb = &mut vals[(lb * total + b0) * 32 * nt..(lb * total + b0 + blocks) * 32 * nt];
        let db = &mut d[(lb * total + b0) * nt..(lb * total + b0 + blocks) * nt];
        for b in 0..blocks {
            for jc in (0..nt).step_by(16) {
                let col = lb * nt + jc;
                let row = |e: usize| -> &[f32; 16] {
                    match panel[(32 * b + e) * ld + col..][..16].try_into() {
                        Ok(r) => r,
                        Err(_) => unreachable!(),
                    }
                };
                let mut amax = [0f32; 16];
                for e in 0..32 {
                    let r = row(e);
                    for l in 0..16 {
                        amax[l] = amax[l].max(r[l].abs());
                    }
                }
                let mut id = [0f32; 16];
                for l in 0..16 {
                    let s = amax[l] / 127.0;
                    db[b * nt + jc + l] = s;
                    id[l] = if s > 0.0 { 1.0 / s } else { 0.0 };
                }
                // Four rows at a time into one little-endian u32 per lane.
                for e4 in 0..8 {
                    let mut word = [0u32; 16];
                    for u in 0..4 {
                        let r = row(4 * e4 + u);
                        for l in 0..16 {
                            let q =
                                crate::quant::reference::nearest_int(r[l] * id[l]).clamp(-127, 127);
                            word[l] |= ((q as u32) & 0xff) << (8 * u);
                        }
                    }
                    // Byte e of lane j sits at ((e / g)·nt + j)·g + e % g.
                    let (grp, within) = ((4 * e4) / g, (4 * e4) % g);
                    let base = b * 32 * nt + (grp * nt + jc) * g + within;
                    for (l, w) in word.iter().enumerate() {
                        vb[base + l * g..base + l * g + 4]
                            .copy_from_slice(&(w ^ flip).to_le_bytes());
                    }
                }
            }
        }
    }
}
