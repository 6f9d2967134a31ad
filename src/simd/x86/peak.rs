//! The fp32 FMA-peak microbenchmark in AVX-512 and AVX2 registers: twelve independent FMA
//! chains per call, the numerator of every "fraction of peak" `pocketlora bench` reports.

use std::arch::x86_64::*;

pub(super) fn peak_avx512(iters: usize) -> f32 {
    // SAFETY: table built after AVX-512 F was detected.
    unsafe { peak512(iters) }
}

pub(super) fn peak_avx2(iters: usize) -> f32 {
    // SAFETY: table built after AVX2/FMA were detected.
    unsafe { peak256(iters) }
}

/// Twelve independent FMA chains (two FMA ports × four cycles of latency need eight).
macro_rules! peak_body {
    ($t:ty, $set1:ident, $fma:ident, $add:ident, $iters:ident) => {{
        let b = $set1(std::hint::black_box(0.999_999));
        let c = $set1(std::hint::black_box(1e-7));
        let (mut a0, mut a1, mut a2, mut a3) = ($set1(1.0), $set1(1.1), $set1(1.2), $set1(1.3));
        let (mut a4, mut a5, mut a6, mut a7) = ($set1(1.4), $set1(1.5), $set1(1.6), $set1(1.7));
        let (mut a8, mut a9, mut a10, mut a11) = ($set1(1.8), $set1(1.9), $set1(2.0), $set1(2.1));
        for _ in 0..$iters {
            a0 = $fma(a0, b, c);
            a1 = $fma(a1, b, c);
            a2 = $fma(a2, b, c);
            a3 = $fma(a3, b, c);
            a4 = $fma(a4, b, c);
            a5 = $fma(a5, b, c);
            a6 = $fma(a6, b, c);
            a7 = $fma(a7, b, c);
            a8 = $fma(a8, b, c);
            a9 = $fma(a9, b, c);
            a10 = $fma(a10, b, c);
            a11 = $fma(a11, b, c);
        }
        let s = $add(
            $add($add(a0, a1), $add(a2, a3)),
            $add($add(a4, a5), $add(a6, a7)),
        );
        let s: $t = $add(s, $add($add(a8, a9), $add(a10, a11)));
        s
    }};
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn peak512(iters: usize) -> f32 {
    let s = peak_body!(
        __m512,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_add_ps,
        iters
    );
    _mm512_reduce_add_ps(s)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn peak256(iters: usize) -> f32 {
    let s = peak_body!(
        __m256,
        _mm256_set1_ps,
        _mm256_fmadd_ps,
        _mm256_add_ps,
        iters
    );
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
    lanes.iter().sum()
}
