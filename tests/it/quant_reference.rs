//! The scalar quant reference against independent truth:
//! - dequantization of every readable type, bit-exact with the Python `gguf` package
//!   (golden files written by tests/golden/quant/make_quant_goldens.py);
//! - quantization of Q8_0, Q4_0, F16, BF16, bit-exact with `gguf.quants.quantize`;
//! - Q4_K / Q6_K quantizers at llama.cpp's error level on Gaussian data;
//! - round trips, `vec_dot_row` against dequantize-then-dot in f64, and errors (never panics)
//!   for every bad length and type.

use std::path::PathBuf;

use pocketlora::internals::error::QuantError;
use pocketlora::internals::quant::{
    can_dequantize, can_quantize, dequantize_row, quantize, quantize_row, vec_dot_row, GgmlType,
};
use serde_json::Value;

// ------------------------------------------------------------------------------------------
// Helpers: a seeded RNG, hex, golden files.

/// xorshift64* with Box–Muller normals: small, seeded, good enough for test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    fn normals(&mut self, n: usize, sigma: f64) -> Vec<f32> {
        (0..n).map(|_| (self.normal() * sigma) as f32).collect()
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0);
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex digit"))
        .collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn golden(name: &str) -> Value {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/golden/quant", name]
        .iter()
        .collect();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with make_quant_goldens.py)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("golden JSON")
}

fn ty(name: &str) -> GgmlType {
    GgmlType::from_name(name).expect("type name")
}

/// The types `dequantize_row` reads (all the weight types a GGUF model uses).
const DEQUANT_TYPES: [&str; 13] = [
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K",
];

/// Byte offsets of the f16 scale fields (d, m, dmin) inside a block.
fn f16_fields(t: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match t {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// A packed row of `n` elements of type `t` with finite, moderate values: float types from
/// Gaussian data, block types from random bytes with sane f16 scales.
fn random_row(rng: &mut Rng, t: GgmlType, n: usize) -> Vec<u8> {
    match t {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            quantize(t, &rng.normals(n, 1.0), n.max(1)).expect("float row")
        }
        _ => {
            let ts = t.type_size();
            let mut row = rng.bytes(n / t.block_size() * ts);
            for block in row.chunks_exact_mut(ts) {
                for &at in f16_fields(t) {
                    let v = (rng.normal() * 0.05) as f32;
                    block[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
                }
            }
            row
        }
    }
}

fn dequantized(t: GgmlType, row: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    dequantize_row(t, row, &mut out).expect("dequantize");
    out
}

/// sqrt(Σ(x−y)² / Σx²), in f64.
fn rel_rms(x: &[f32], y: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in x.iter().zip(y) {
        num += (a as f64 - b as f64).powi(2);
        den += (a as f64).powi(2);
    }
    (num / den).sqrt()
}

// ------------------------------------------------------------------------------------------
// Bit-exactness with gguf.quants.

#[test]
fn dequantization_is_bit_exact_with_gguf() {
    for name in DEQUANT_TYPES.iter().filter(|&&n| n != "F32") {
        let g = golden(&format!("dequant_{name}.json"));
        let t = ty(g["type"].as_str().expect("type"));
        assert_eq!(t.name(), *name);
        let n = g["n"].as_u64().expect("n") as usize;
        let bytes = unhex(g["bytes"].as_str().expect("bytes"));
        let want = f32s(&unhex(g["values"].as_str().expect("values")));
        assert_eq!(want.len(), n);
        let got = dequantized(t, &bytes, n);
        let bad: Vec<usize> = (0..n)
            .filter(|&i| got[i].to_bits() != want[i].to_bits())
            .collect();
        assert!(
            bad.is_empty(),
            "{name}: {} of {n} values differ; first at {}: got {:e} ({:#010x}), gguf {:e} ({:#010x})",
            bad.len(),
            bad[0],
            got[bad[0]],
            got[bad[0]].to_bits(),
            want[bad[0]],
            want[bad[0]].to_bits()
        );
        println!("{name}: {n} values bit-exact");
    }
}

#[test]
fn quantization_is_bit_exact_with_gguf() {
    for name in ["Q8_0", "Q4_0", "F16", "BF16"] {
        let g = golden(&format!("quant_{name}.json"));
        let t = ty(name);
        let row_len = g["row_len"].as_u64().expect("row_len") as usize;
        let rows = g["rows"].as_array().expect("rows");
        let (mut all_in, mut all_out) = (Vec::new(), Vec::new());
        for row in rows {
            let label = row["label"].as_str().unwrap_or("?");
            let x = f32s(&unhex(row["input"].as_str().expect("input")));
            let want = unhex(row["bytes"].as_str().expect("bytes"));
            assert_eq!(x.len(), row_len);
            let mut got = vec![0u8; want.len()];
            quantize_row(t, &x, &mut got).expect("quantize_row");
            if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
                panic!(
                    "{name} row {label:?}: byte {i} (block {}) is {:#04x}, gguf wrote {:#04x}",
                    i / t.type_size(),
                    got[i],
                    want[i]
                );
            }
            all_in.extend_from_slice(&x);
            all_out.extend_from_slice(&want);
        }
        // The matrix entry point is the same thing row by row.
        assert_eq!(
            quantize(t, &all_in, row_len).expect("quantize"),
            all_out,
            "{name}"
        );
        println!("{name}: {} rows of {row_len} bit-exact", rows.len());
    }
}

// ------------------------------------------------------------------------------------------
// K-quant error levels and round trips.

/// Quantize→dequantize relative RMS error over 64 rows of N(0, 0.1) data, row lengths
/// cycling 256, 512, 1024, 2048, 4096.
fn kquant_error(t: GgmlType, seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for r in 0..64 {
        let n = 256 << (r % 5);
        let x = rng.normals(n, 0.1);
        let q = quantize(t, &x, n).expect("quantize");
        assert_eq!(q.len(), t.type_size() * n / 256);
        ys.extend(dequantized(t, &q, n));
        xs.extend(x);
    }
    rel_rms(&xs, &ys)
}

#[test]
fn q4_k_error_is_at_llama_cpp_level() {
    let e = kquant_error(GgmlType::Q4_K, 1);
    println!("Q4_K relative RMS error on N(0, 0.1): {e:.5} (llama.cpp 0.072, limit 0.0792)");
    assert!(e <= 0.0792, "Q4_K error {e}");
}

#[test]
fn q6_k_error_is_at_llama_cpp_level() {
    let e = kquant_error(GgmlType::Q6_K, 2);
    println!("Q6_K relative RMS error on N(0, 0.1): {e:.5} (llama.cpp 0.018, limit 0.0198)");
    assert!(e <= 0.0198, "Q6_K error {e}");
}

#[test]
fn round_trips_of_every_quantizable_type() {
    // (type, bound on one row's relative RMS error, whether re-quantizing the dequantized
    // values must reproduce the bytes). K-quant bounds are 1.25× the aggregate limits above:
    // a single 256-element row is one super-block, so its error scatters more.
    let cases = [
        ("F32", 0.0, true),
        ("F16", 5e-4, true),
        ("BF16", 4e-3, true),
        ("Q8_0", 0.01, true),
        ("Q4_0", 0.15, true),
        ("Q4_K", 0.099, false),
        ("Q6_K", 0.025, false),
    ];
    let mut rng = Rng::new(3);
    for (name, bound, idempotent) in cases {
        let t = ty(name);
        assert!(can_quantize(t) && can_dequantize(t), "{name}");
        for n in [256, 512, 4096] {
            // Not much below 0.01: there the f16 super-scales of the K-quants go subnormal
            // and lose precision — a property of the format (see print_error_by_magnitude).
            for sigma in [0.01, 1.0, 300.0] {
                let x = rng.normals(n, sigma);
                let q = quantize(t, &x, n).expect("quantize");
                let y = dequantized(t, &q, n);
                let e = rel_rms(&x, &y);
                assert!(e <= bound, "{name} n={n} sigma={sigma}: relative error {e}");
                if idempotent {
                    let q2 = quantize(t, &y, n).expect("quantize");
                    assert!(
                        q2 == q,
                        "{name} n={n} sigma={sigma}: re-quantizing changed bytes"
                    );
                }
            }
        }
        // Degenerate rows: all zero, constant, one outlier, non-finite: no panic, and exact
        // zeros where the input is zero.
        let zeros = vec![0.0f32; 512];
        let y = dequantized(t, &quantize(t, &zeros, 512).expect("q"), 512);
        assert!(y.iter().all(|&v| v == 0.0), "{name}: zeros");
        for x in [
            vec![0.25f32; 512],
            (0..512).map(|i| if i == 77 { 1e4 } else { 1e-4 }).collect(),
            (0..512)
                .map(|i| [f32::NAN, f32::INFINITY, -1.0, 0.0][i % 4])
                .collect(),
        ] {
            let q = quantize(t, &x, 512).expect("degenerate rows quantize");
            let _ = dequantized(t, &q, 512);
        }
    }
}

// ------------------------------------------------------------------------------------------
// vec_dot_row.

#[test]
fn vec_dot_matches_dequantize_then_dot() {
    let mut rng = Rng::new(4);
    for name in DEQUANT_TYPES {
        let t = ty(name);
        let lens: Vec<usize> = if t.block_size() == 1 {
            vec![1, 7, 31, 33, 255, 4097]
        } else {
            [1, 3, 5, 17].iter().map(|b| b * t.block_size()).collect()
        };
        for n in lens {
            let row = random_row(&mut rng, t, n);
            let x = rng.normals(n, 1.0);
            let y = dequantized(t, &row, n);
            let (mut want, mut mag) = (0.0f64, 0.0f64);
            for (&a, &b) in y.iter().zip(&x) {
                want += a as f64 * b as f64;
                mag += (a as f64 * b as f64).abs();
            }
            let got = vec_dot_row(t, &row, &x).expect("vec_dot_row") as f64;
            let tol = 1e-5 * mag + 1e-30;
            assert!(
                (got - want).abs() <= tol,
                "{name} n={n}: dot {got} vs f64 reference {want} (tolerance {tol})"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// Errors, never panics.

#[test]
fn bad_lengths_and_types_are_errors() {
    use GgmlType::*;
    let mut out = [0.0f32; 64];
    let bytes = [0u8; 300];
    assert!(matches!(
        dequantize_row(Q4_0, &bytes[..17], &mut out[..32]),
        Err(QuantError::BufferSize {
            expected: 18,
            found: 17,
            ..
        })
    ));
    assert!(matches!(
        dequantize_row(Q4_0, &bytes[..18], &mut out[..31]),
        Err(QuantError::RowLength {
            n: 31,
            block: 32,
            ..
        })
    ));
    assert!(matches!(
        dequantize_row(Q8_K, &bytes[..292], &mut [0.0; 256]),
        Err(QuantError::Unsupported { .. })
    ));
    assert!(matches!(
        quantize_row(Q4_1, &out[..32], &mut [0u8; 20]),
        Err(QuantError::Unsupported { .. })
    ));
    assert!(matches!(
        quantize_row(Q4_K, &out[..64], &mut [0u8; 36]),
        Err(QuantError::RowLength {
            n: 64,
            block: 256,
            ..
        })
    ));
    assert!(matches!(
        quantize_row(Q8_0, &out[..64], &mut [0u8; 67]),
        Err(QuantError::BufferSize {
            expected: 68,
            found: 67,
            ..
        })
    ));
    assert!(matches!(
        quantize(Q8_0, &out[..48], 32),
        Err(QuantError::MatrixShape {
            len: 48,
            row_len: 32
        })
    ));
    assert!(matches!(
        quantize(Q8_0, &out[..48], 0),
        Err(QuantError::MatrixShape { .. })
    ));
    assert!(matches!(
        quantize(Q8_0, &out[..48], 48),
        Err(QuantError::RowLength { .. })
    ));
    assert_eq!(quantize(Q8_0, &[], 0).expect("empty"), Vec::<u8>::new());
    assert!(matches!(
        vec_dot_row(Q8_0, &bytes[..34], &out[..33]),
        Err(QuantError::RowLength { .. })
    ));
    assert!(matches!(
        vec_dot_row(Q8_0, &bytes[..35], &out[..32]),
        Err(QuantError::BufferSize { .. })
    ));
    assert!(matches!(
        vec_dot_row(I32, &bytes[..4], &out[..1]),
        Err(QuantError::Unsupported { .. })
    ));
    // Empty rows are fine.
    assert!(dequantize_row(Q4_K, &[], &mut []).is_ok());
    assert_eq!(vec_dot_row(Q6_K, &[], &[]).expect("empty dot"), 0.0);
}

#[test]
fn every_type_and_length_combination_returns_instead_of_panicking() {
    let bytes = vec![0x5au8; 4 * 292 + 8];
    let floats = vec![0.5f32; 1100];
    let mut out = vec![0.0f32; 1100];
    let mut qout = vec![0u8; 4 * 292 + 8];
    for t in GgmlType::ALL {
        for n in [0usize, 1, 2, 31, 32, 33, 255, 256, 257, 512, 1024] {
            let expected = t.bytes_for(n as u64).map(|b| b as usize);
            for nb in [0usize, 1, 17, 18, 34, 144, 210, 292, 512, 1024, 1168] {
                let ok = expected == Some(nb);
                let r = dequantize_row(t, &bytes[..nb], &mut out[..n]);
                assert_eq!(
                    r.is_ok(),
                    ok && can_dequantize(t),
                    "dequantize {t} n={n} bytes={nb}"
                );
                let r = vec_dot_row(t, &bytes[..nb], &floats[..n]);
                assert_eq!(
                    r.is_ok(),
                    ok && can_dequantize(t),
                    "dot {t} n={n} bytes={nb}"
                );
                let r = quantize_row(t, &floats[..n], &mut qout[..nb]);
                assert_eq!(
                    r.is_ok(),
                    ok && can_quantize(t),
                    "quantize {t} n={n} bytes={nb}"
                );
            }
        }
    }
}

/// Diagnostic, not a check: relative error against the data's magnitude. Below σ ≈ 1e-3 the
/// f16 scales become subnormal and the error grows (Q6_K first: its d is ≈ max|x| / 4096).
/// Run with `cargo test --test it -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_error_by_magnitude() {
    let mut rng = Rng::new(9);
    for name in ["Q4_K", "Q6_K", "Q8_0", "Q4_0"] {
        let t = ty(name);
        for sigma in [1e-4, 1e-3, 1e-2, 0.1, 1.0, 300.0] {
            let x = rng.normals(64 * 256, sigma);
            let y = dequantized(t, &quantize(t, &x, 256).expect("quantize"), x.len());
            println!("{name} sigma={sigma:e}: {:.5}", rel_rms(&x, &y));
        }
    }
}
