//! Operand packing: the int8 lane packing compiled per level, and the AVX-512 row
//! interleave (16 × 16 blocks through `transpose16`).

use std::arch::x86_64::*;

use super::zmm::{mask16, transpose16};
use crate::simd::{ColSource, Int8Layout, PackTarget};

pub(super) fn pack_cols_avx512(lay: Int8Layout, src: ColSource<'_>, dst: PackTarget<'_>) {
    // SAFETY: table built after AVX-512 was detected; sizes checked by `Kernels::pack_cols`.
    unsafe { pack_cols512(lay, src, dst) }
}

pub(super) fn pack_cols_avx2(lay: Int8Layout, src: ColSource<'_>, dst: PackTarget<'_>) {
    // SAFETY: table built after AVX2 was detected; sizes checked by `Kernels::pack_cols`.
    unsafe { pack_cols256(lay, src, dst) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn pack_cols512(lay: Int8Layout, src: ColSource<'_>, dst: PackTarget<'_>) {
    crate::simd::pack_cols_body(lay, src, dst)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn pack_cols256(lay: Int8Layout, src: ColSource<'_>, dst: PackTarget<'_>) {
    crate::simd::pack_cols_body(lay, src, dst)
}

pub(super) fn interleave_avx512(x: &[f32], rows: usize, ldx: usize, dst: &mut [f32], width: usize) {
    // SAFETY: table built after AVX-512 was detected; `Kernels::interleave_rows` checked the
    // shape and that every row j < rows holds the dst.len() / width columns.
    unsafe { interleave512(x, rows, ldx, dst, width) }
}

/// # Safety
/// AVX-512 available; `rows ≤ width`, `dst.len()` a multiple of `width`, and
/// `x[j·ldx .. j·ldx + dst.len() / width]` inside `x` for every `j < rows`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn interleave512(x: &[f32], rows: usize, ldx: usize, dst: &mut [f32], width: usize) {
    let cols = dst.len() / width;
    let (xp, dp) = (x.as_ptr(), dst.as_mut_ptr());
    for c0 in (0..cols).step_by(16) {
        let cw = (cols - c0).min(16);
        let mask = mask16(cw);
        for j0 in (0..width).step_by(16) {
            // A width that is not a multiple of 16 (the register tiles' packed rows) ends
            // with a part block.
            let store = mask16(width - j0);
            let r: [__m512; 16] = std::array::from_fn(|i| {
                let at = (j0 + i) * ldx + c0;
                if j0 + i >= rows {
                    _mm512_setzero_ps()
                } else if cw == 16 {
                    // SAFETY: row j0 + i < rows holds columns c0 .. c0 + 16.
                    unsafe { _mm512_loadu_ps(xp.add(at)) }
                } else {
                    // SAFETY: as above for the cw columns the mask lets through.
                    unsafe { _mm512_maskz_loadu_ps(mask, xp.add(at)) }
                }
            });
            for (cc, &v) in transpose16(&r).iter().enumerate().take(cw) {
                // SAFETY: column c0 + cc < cols; its values j0 .. min(j0 + 16, width) are in
                // dst, and the mask stores no others.
                unsafe { _mm512_mask_storeu_ps(dp.add((c0 + cc) * width + j0), store, v) }
            }
        }
    }
}
