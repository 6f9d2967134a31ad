//! The kernel table: [`Kernels`], the function pointers of one ISA level (filled in by
//! `scalar.rs`, `x86/` and `aarch64.rs`) behind safe methods that check every bound once
//! per call, [`kernels`] (the detected level's table) and the element-wise table [`Ew`].

use std::sync::OnceLock;

#[cfg(target_arch = "aarch64")]
use super::aarch64;
#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{
    ew, gemv, gemv_i8, isa, scalar, ColSource, I8Lanes, I8Rows, Int8Layout, Level, Out, PackTarget,
};

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
    pub(super) sgemm: SgemmFn,
    pub(super) i8gemm: I8GemmFn,
    pub(super) dot: DotFn,
    pub(super) dequant: DequantFn,
    pub(super) pack_cols: PackColsFn,
    pub(super) interleave: InterleaveFn,
    pub(super) gemv: GemvFn,
    pub(super) gemv_i8: GemvI8Fn,
    /// FMA chains of the peak microbenchmark and FLOPs per iteration.
    pub(super) peak: (fn(usize) -> f32, usize),
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
    K.get_or_init(|| Kernels::for_level(isa::detect()).unwrap_or_else(scalar::kernels))
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

#[cfg(test)]
mod tests {
    use super::super::tests::vals;
    use super::*;

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
