//! The scalar twins: plain loops with the same contracts as the vector kernels. They are the
//! reference in the tests and the fallback on CPUs without the vector features.

use super::{I8Lanes, I8Rows, Int8Layout, Kernels, Level, Out, Sgemm};
use crate::quant::GgmlType;

pub(super) fn kernels() -> Kernels {
    Kernels {
        level: Level::Scalar,
        int8: Int8Layout {
            nt: 16,
            group: 4,
            unsigned_weights: false,
        },
        f32_tile: (4, 8),
        sgemm,
        i8gemm,
        dot,
        dequant: |_: GgmlType, _: &[u8], _: &mut [f32]| false,
        pack_cols: super::pack_cols_body,
        interleave: interleave_rows,
        gemv: super::gemv::gemv_body,
        gemv_i8: super::gemv_i8::gemv_i8_body,
        peak: (peak, 2 * 8),
        ew: super::Ew::plain(),
    }
}

/// Reference row interleave ([`super::Kernels::interleave_rows`]): one value at a time.
pub fn interleave_rows(x: &[f32], rows: usize, ldx: usize, dst: &mut [f32], width: usize) {
    for (c, col) in dst.chunks_exact_mut(width).enumerate() {
        for (j, v) in col.iter_mut().enumerate() {
            *v = if j < rows { x[j * ldx + c] } else { 0.0 };
        }
    }
}

/// Reference f32 micro-gemm: every output a sequential sum over `p`.
pub fn sgemm(g: &Sgemm<'_>, out: &mut Out<'_>) {
    for i in 0..g.m {
        for j in 0..g.n {
            let mut s = 0f32;
            for p in 0..g.k {
                s += g.r[i * g.rs + p * g.cs] * g.l[p * g.ldb + j];
            }
            let idx = i * out.rs + j * out.cs;
            out.put(idx, g.alpha * s);
        }
    }
}

/// Reference int8 kernel for any lane block size (the lane layout's `nt` and `group` are
/// inferred: `nt = l.d.len() / blocks`, group 4 or 8 from the call's layout is not needed
/// because values are addressed through [`lane_byte`]).
pub fn i8gemm(r: &I8Rows<'_>, l: &I8Lanes<'_>, n: usize, out: &mut Out<'_>) {
    i8gemm_layout(r, l, n, out, kernels().int8)
}

/// The int8 kernel's definition for lane layout `layout`.
pub fn i8gemm_layout(
    r: &I8Rows<'_>,
    l: &I8Lanes<'_>,
    n: usize,
    out: &mut Out<'_>,
    layout: Int8Layout,
) {
    let nb = r.blocks;
    let nt = layout.nt;
    for i in 0..r.rows {
        for j in 0..n {
            let mut acc = 0f32;
            for b in 0..nb {
                let rv = &r.vals[i * r.stride + 32 * b..][..32];
                let mut s: i32 = r.corr.map_or(0, |c| c[i * r.d_stride + b])
                    + l.corr.map_or(0, |c| c[b * nt + j]);
                for (e, &rb) in rv.iter().enumerate() {
                    let lb = l.vals[lane_byte(layout, b, e, j)];
                    let x = if r.unsigned {
                        rb as i32
                    } else {
                        rb as i8 as i32
                    };
                    let y = if l.unsigned {
                        lb as i32
                    } else {
                        lb as i8 as i32
                    };
                    s += x * y;
                }
                let scale = r.d[i * r.d_stride + b] * l.d[b * nt + j];
                acc += s as f32 * scale;
                if let Some(m) = r.min {
                    acc -= m[i * r.d_stride + b] * l.sum[b * nt + j];
                }
            }
            let idx = i * out.rs + j * out.cs;
            out.put(idx, acc);
        }
    }
}

/// Index of byte `e` of lane `j` in block `b` of a packed lane operand.
#[inline]
pub fn lane_byte(layout: Int8Layout, b: usize, e: usize, j: usize) -> usize {
    let (nt, g) = (layout.nt, layout.group);
    b * 32 * nt + ((e / g) * nt + j) * g + e % g
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    crate::util::num::dot(a, b)
}

/// Eight independent multiply-add chains (the scalar FMA "peak").
pub fn peak(iters: usize) -> f32 {
    let mut a = [1.0f32, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7];
    let (b, c) = (
        std::hint::black_box(0.999_999f32),
        std::hint::black_box(1e-7f32),
    );
    for _ in 0..iters {
        for x in a.iter_mut() {
            *x = x.mul_add(b, c);
        }
    }
    a.iter().sum()
}
