//! The float types the kernels run in. The engine computes in f32; every kernel is generic
//! over [`Real`] so that its gradient can be checked by central differences in f64.

use std::cell::RefCell;
use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

use crate::error::QuantError;
use crate::quant::{dequantize_row, GgmlType};

/// f32 or f64.
pub trait Real:
    Copy
    + Send
    + Sync
    + Default
    + Debug
    + PartialOrd
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    fn from_f64(x: f64) -> Self;
    fn from_f32(x: f32) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn max(self, other: Self) -> Self;
    fn is_finite(self) -> bool;
    /// Dequantizes one encoded row into this type.
    fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [Self]) -> Result<(), QuantError>;
    /// Runs `f` with this thread's grow-only scratch of at least `n` elements (`slot`
    /// selects one of two independent buffers, so a kernel can hold two at once).
    fn with_scratch<R>(slot: usize, n: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
    /// The slice as f32, when this type is f32 (the SIMD kernels' type).
    fn as_f32(x: &[Self]) -> Option<&[f32]>;
    /// The mutable slice as f32, when this type is f32.
    fn as_f32_mut(x: &mut [Self]) -> Option<&mut [f32]>;
}

thread_local! {
    static SCRATCH_F32: [RefCell<Vec<f32>>; 2] = const { [RefCell::new(Vec::new()), RefCell::new(Vec::new())] };
    static SCRATCH_F64: [RefCell<Vec<f64>>; 2] = const { [RefCell::new(Vec::new()), RefCell::new(Vec::new())] };
}

macro_rules! impl_real {
    ($t:ty, $scratch:ident, $dequantize:expr, $cast:expr, $cast_mut:expr) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            #[inline]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn from_f32(x: f32) -> Self {
                x as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [Self]) -> Result<(), QuantError> {
                $dequantize(ty, src, dst)
            }
            fn with_scratch<R>(slot: usize, n: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                $scratch.with(|cells| {
                    let mut buf = cells[slot].borrow_mut();
                    if buf.len() < n {
                        buf.resize(n, 0.0);
                    }
                    f(&mut buf[..n])
                })
            }
            #[inline]
            fn as_f32(x: &[Self]) -> Option<&[f32]> {
                $cast(x)
            }
            #[inline]
            fn as_f32_mut(x: &mut [Self]) -> Option<&mut [f32]> {
                $cast_mut(x)
            }
        }
    };
}

impl_real!(f32, SCRATCH_F32, dequantize_f32, Some, Some);
impl_real!(f64, SCRATCH_F64, dequantize_row_f64, none, none_mut);

fn none(_: &[f64]) -> Option<&[f32]> {
    None
}

fn none_mut(_: &mut [f64]) -> Option<&mut [f32]> {
    None
}

/// f32 rows through the dispatched (SIMD) dequantizer.
fn dequantize_f32(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    match ty.bytes_for(dst.len() as u64) {
        Some(b) if b == src.len() as u64 && crate::quant::can_dequantize(ty) => {
            crate::simd::kernels().dequantize_row(ty, src, dst);
            Ok(())
        }
        _ => dequantize_row(ty, src, dst),
    }
}

/// f64 rows (gradient checks): dequantize to f32, then widen.
fn dequantize_row_f64(ty: GgmlType, src: &[u8], dst: &mut [f64]) -> Result<(), QuantError> {
    let mut tmp = vec![0f32; dst.len()];
    dequantize_row(ty, src, &mut tmp)?;
    for (d, &s) in dst.iter_mut().zip(&tmp) {
        *d = s as f64;
    }
    Ok(())
}

/// `y += alpha · x`.
#[inline]
pub fn axpy<F: Real>(y: &mut [F], alpha: F, x: &[F]) {
    for (a, &b) in y.iter_mut().zip(x) {
        *a += alpha * b;
    }
}

/// `y += x`.
#[inline]
pub fn add_into<F: Real>(y: &mut [F], x: &[F]) {
    for (a, &b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_slots_are_independent_and_grow() {
        f32::with_scratch(0, 4, |a| {
            a.fill(1.0);
            f32::with_scratch(1, 8, |b| {
                b.fill(2.0);
                assert_eq!(b.len(), 8);
            });
            assert_eq!(a, &[1.0; 4]);
        });
    }
}
