//! ggml tensor types and their block formats: layouts, scalar reference (de)quantization.
//!
//! - [`types`]: [`GgmlType`] and its block geometry (shared with the GGUF reader).
//! - [`blocks`]: `#[repr(C)]` block structs laid out exactly as ggml's, with size checks.
//! - [`reference`](mod@reference): the scalar reference kernels — the truth later SIMD kernels are tested
//!   against.
//!
//! The functions below are the checked entry points the rest of the crate uses: they validate
//! lengths and types (returning [`QuantError`], never panicking) and then run the kernel for
//! the type. Today that is always the reference kernel; a run-time dispatch table will slot
//! in here without changing these signatures.

pub mod blocks;
pub mod reference;
pub mod types;

pub use types::{GgmlType, QK_K};

use crate::error::QuantError;

/// Bytes that `n` elements of `ty` take, or `RowLength` if `n` is not a whole number of blocks.
fn row_bytes(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    let row_length = || QuantError::RowLength {
        ty,
        n,
        block: ty.block_size(),
    };
    let bytes = ty.bytes_for(n as u64).ok_or_else(row_length)?;
    usize::try_from(bytes).map_err(|_| row_length())
}

/// Checks that a byte buffer holds exactly `expected` bytes.
fn check_bytes(what: &'static str, expected: usize, found: usize) -> Result<(), QuantError> {
    if expected == found {
        Ok(())
    } else {
        Err(QuantError::BufferSize {
            what,
            expected,
            found,
        })
    }
}

/// Whether [`dequantize_row`] and [`vec_dot_row`] accept `ty` (F32, F16, BF16, Q4_0, Q4_1,
/// Q5_0, Q5_1, Q8_0, Q2_K … Q6_K).
pub fn can_dequantize(ty: GgmlType) -> bool {
    reference::dequantize_fn(ty).is_some()
}

/// Whether [`quantize_row`] and [`quantize`] accept `ty` (F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K,
/// Q6_K).
pub fn can_quantize(ty: GgmlType) -> bool {
    reference::quantize_fn(ty).is_some()
}

/// Dequantizes `dst.len()` elements; `src` must hold exactly `ty.bytes_for(dst.len())` bytes.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let f = reference::dequantize_fn(ty).ok_or(QuantError::Unsupported {
        ty,
        op: "dequantization",
    })?;
    check_bytes("quantized row", row_bytes(ty, dst.len())?, src.len())?;
    f(src, dst);
    Ok(())
}

/// Quantizes `src.len()` elements into `dst`, which must hold exactly
/// `ty.bytes_for(src.len())` bytes. Supported: F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K; other
/// types give [`QuantError::Unsupported`]. K-quants need a multiple of 256 elements.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    let f = reference::quantize_fn(ty).ok_or(QuantError::Unsupported {
        ty,
        op: "quantization",
    })?;
    check_bytes("quantized row", row_bytes(ty, src.len())?, dst.len())?;
    f(src, dst);
    Ok(())
}

/// Quantizes a whole `[n_rows, row_len]` matrix (row-major, `src.len() = n_rows · row_len`)
/// into a new buffer, row by row.
pub fn quantize(ty: GgmlType, src: &[f32], row_len: usize) -> Result<Vec<u8>, QuantError> {
    let f = reference::quantize_fn(ty).ok_or(QuantError::Unsupported {
        ty,
        op: "quantization",
    })?;
    if row_len == 0 || src.len() % row_len != 0 {
        if src.is_empty() {
            return Ok(Vec::new());
        }
        return Err(QuantError::MatrixShape {
            len: src.len(),
            row_len,
        });
    }
    let rb = row_bytes(ty, row_len)?;
    let n_rows = src.len() / row_len;
    let mut out = vec![0u8; n_rows * rb];
    for (x, q) in src.chunks_exact(row_len).zip(out.chunks_exact_mut(rb)) {
        f(x, q);
    }
    Ok(out)
}

/// Dot product of one quantized row (`ty.bytes_for(x.len())` bytes) with `x`. Does not
/// allocate.
pub fn vec_dot_row(ty: GgmlType, row: &[u8], x: &[f32]) -> Result<f32, QuantError> {
    let f = reference::dot_fn(ty).ok_or(QuantError::Unsupported {
        ty,
        op: "dot product",
    })?;
    check_bytes("quantized row", row_bytes(ty, x.len())?, row.len())?;
    Ok(f(row, x))
}
