//! The macros several `simd` files share (the per-ISA tables and the kernel table), defined
//! once; `mod.rs` declares this module first so that they are in scope in every other file.

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
