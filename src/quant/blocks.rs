//! ggml's quantized block layouts (`ggml-common.h`) as `#[repr(C)]` structs.
//!
//! Each struct has exactly ggml's field order and size, checked at compile time (size and
//! field offsets), so `BlockX::SIZE` bytes in a GGUF tensor are one `BlockX`. The structs are
//! built from and written to bytes with safe, copying constructors ([`BlockQ4_0::from_bytes`],
//! [`BlockQ4_0::to_bytes`], …): no transmutes, no alignment requirement on the source. All
//! multi-byte fields are little-endian in the file, as in ggml.
//!
//! f16 fields (`d`, `m`, `dmin`, `s`) hold the raw IEEE binary16 bits; convert them with
//! [`crate::quant::reference::f16_to_f32`].
//!
//! Geometry: the legacy formats (`Q4_0` … `Q8_1`) cover 32 elements per block; the K-quants
//! cover [`QK_K`] = 256 elements in a super-block split into 16 or 8 sub-blocks with their own
//! (quantized) scales.

use std::mem::{offset_of, size_of};

use super::types::QK_K;

/// Elements per block of the legacy formats.
pub const QK4_0: usize = 32;
/// Elements per block of `Q4_1`.
pub const QK4_1: usize = 32;
/// Elements per block of `Q5_0`.
pub const QK5_0: usize = 32;
/// Elements per block of `Q5_1`.
pub const QK5_1: usize = 32;
/// Elements per block of `Q8_0`.
pub const QK8_0: usize = 32;
/// Elements per block of `Q8_1`.
pub const QK8_1: usize = 32;
/// Bytes of packed 6-bit scales and mins in `Q4_K` and `Q5_K`.
pub const K_SCALE_SIZE: usize = 12;

/// Sequential little-endian reader over a block's bytes. Offsets are compile-time constants
/// after inlining, so the bounds checks fold away.
struct Rd<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Rd<'a> {
    #[inline(always)]
    fn new(b: &'a [u8]) -> Self {
        Rd { b, at: 0 }
    }
    #[inline(always)]
    fn arr<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.b[self.at..self.at + N]);
        self.at += N;
        out
    }
    #[inline(always)]
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.arr())
    }
    #[inline(always)]
    fn i8s<const N: usize>(&mut self) -> [i8; N] {
        self.arr::<N>().map(|v| v as i8)
    }
}

/// Sequential little-endian writer, the mirror of [`Rd`].
struct Wr<'a> {
    b: &'a mut [u8],
    at: usize,
}

impl<'a> Wr<'a> {
    #[inline(always)]
    fn new(b: &'a mut [u8]) -> Self {
        Wr { b, at: 0 }
    }
    #[inline(always)]
    fn put(&mut self, v: &[u8]) {
        self.b[self.at..self.at + v.len()].copy_from_slice(v);
        self.at += v.len();
    }
    #[inline(always)]
    fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }
    #[inline(always)]
    fn i8s(&mut self, v: &[i8]) {
        for &x in v {
            self.put(&[x as u8]);
        }
    }
}

/// Defines `SIZE`, `QK`, `from_bytes`, `to_bytes` for a block struct from its field list,
/// read and written in declaration order.
macro_rules! block_io {
    ($name:ident, $qk:expr, $size:expr, { $($field:ident : $kind:ident $(<$n:literal>)?),* $(,)? }) => {
        impl $name {
            /// Bytes per block.
            pub const SIZE: usize = $size;
            /// Elements per block.
            pub const QK: usize = $qk;

            /// Reads a block from its on-disk bytes (little-endian; no alignment needed).
            #[inline(always)]
            pub fn from_bytes(b: &[u8; $size]) -> Self {
                let mut r = Rd::new(b);
                $(let $field = block_io!(@read r, $kind $(<$n>)?);)*
                $name { $($field),* }
            }

            /// Writes the block in its on-disk layout.
            #[inline(always)]
            pub fn to_bytes(&self) -> [u8; $size] {
                let mut out = [0u8; $size];
                let mut w = Wr::new(&mut out);
                $(block_io!(@write w, self.$field, $kind $(<$n>)?);)*
                debug_assert_eq!(w.at, $size);
                out
            }
        }
        const _: () = assert!(size_of::<$name>() == $size);
    };
    (@read $r:ident, f16) => { $r.u16() };
    (@read $r:ident, u8s<$n:literal>) => { $r.arr::<{ $n }>() };
    (@read $r:ident, i8s<$n:literal>) => { $r.i8s::<{ $n }>() };
    (@write $w:ident, $v:expr, f16) => { $w.u16($v) };
    (@write $w:ident, $v:expr, u8s<$n:literal>) => { $w.put(&$v) };
    (@write $w:ident, $v:expr, i8s<$n:literal>) => { $w.i8s(&$v) };
}

// ---------------------------------------------------------------------------------------------
// Legacy 32-element blocks.

/// `Q4_0`: x = d · (q − 8), q ∈ 0..16. `qs[j]` holds element j (low nibble) and j+16 (high).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ4_0 {
    pub d: u16,
    pub qs: [u8; QK4_0 / 2],
}
block_io!(BlockQ4_0, QK4_0, 18, { d: f16, qs: u8s<16> });

/// `Q4_1`: x = d · q + m, q ∈ 0..16; nibble order as `Q4_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ4_1 {
    pub d: u16,
    pub m: u16,
    pub qs: [u8; QK4_1 / 2],
}
block_io!(BlockQ4_1, QK4_1, 20, { d: f16, m: f16, qs: u8s<16> });

/// `Q5_0`: x = d · (q − 16), q ∈ 0..32; low 4 bits as `Q4_0`, bit 4 of element j is bit j of
/// the little-endian u32 `qh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ5_0 {
    pub d: u16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_0 / 2],
}
block_io!(BlockQ5_0, QK5_0, 22, { d: f16, qh: u8s<4>, qs: u8s<16> });

/// `Q5_1`: x = d · q + m, q ∈ 0..32; bit layout as `Q5_0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ5_1 {
    pub d: u16,
    pub m: u16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_1 / 2],
}
block_io!(BlockQ5_1, QK5_1, 24, { d: f16, m: f16, qh: u8s<4>, qs: u8s<16> });

/// `Q8_0`: x = d · q, q ∈ −127..=127.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ8_0 {
    pub d: u16,
    pub qs: [i8; QK8_0],
}
block_io!(BlockQ8_0, QK8_0, 34, { d: f16, qs: i8s<32> });

/// `Q8_1`: as `Q8_0` plus `s` = d · Σq (an intermediate format for dot products).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ8_1 {
    pub d: u16,
    pub s: u16,
    pub qs: [i8; QK8_1],
}
block_io!(BlockQ8_1, QK8_1, 36, { d: f16, s: f16, qs: i8s<32> });

// ---------------------------------------------------------------------------------------------
// K-quants: 256-element super-blocks.

/// `Q2_K`: 16 sub-blocks of 16; x = d · (sc & 15) · q − dmin · (sc >> 4), q ∈ 0..4.
/// Within each 128-element half, `qs[32h + l]` bits 2k..2k+2 hold element 128h + 32k + l.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ2_K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: u16,
    pub dmin: u16,
}
block_io!(BlockQ2_K, QK_K, 84, { scales: u8s<16>, qs: u8s<64>, d: f16, dmin: f16 });

/// `Q3_K`: 16 sub-blocks of 16 with signed 6-bit scales packed into 12 bytes;
/// x = d · (sc − 32) · (q − 4·(1 − hbit)), low 2 bits of q laid out as `Q2_K`, the high bit of
/// element 32k + l (k = 0..8) is bit k of `hmask[l]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ3_K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: u16,
}
block_io!(BlockQ3_K, QK_K, 110, { hmask: u8s<32>, qs: u8s<64>, scales: u8s<12>, d: f16 });

/// `Q4_K`: 8 sub-blocks of 32 with 6-bit scales and mins packed into 12 bytes;
/// x = d · sc · q − dmin · m, q ∈ 0..16. `qs[32i + l]` holds element 64i + l (low nibble) and
/// 64i + 32 + l (high nibble).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ4_K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}
block_io!(BlockQ4_K, QK_K, 144, { d: f16, dmin: f16, scales: u8s<12>, qs: u8s<128> });

/// `Q5_K`: `Q4_K` plus a fifth bit: bit 2i (2i+1) of `qh[l]` is the high bit of element
/// 64i + l (64i + 32 + l).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ5_K {
    pub d: u16,
    pub dmin: u16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
block_io!(BlockQ5_K, QK_K, 176, {
    d: f16, dmin: f16, scales: u8s<12>, qh: u8s<32>, qs: u8s<128>
});

/// `Q6_K`: 16 sub-blocks of 16 with signed 8-bit scales; x = d · sc · (q − 32), q ∈ 0..64.
/// Per 128-element half h: `ql[64h + l]` low/high nibbles are elements 32·0 + l / 32·2 + l,
/// `ql[64h + 32 + l]` elements 32·1 + l / 32·3 + l; `qh[32h + l]` bits 2k..2k+2 are the top
/// two bits of element 32k + l.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ6_K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: u16,
}
block_io!(BlockQ6_K, QK_K, 210, { ql: u8s<128>, qh: u8s<64>, scales: i8s<16>, d: f16 });

/// `Q8_K`: the intermediate format of K-quant dot products: f32 scale, 256 int8 quants and
/// the sums of each group of 16 quants.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8_K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

impl BlockQ8_K {
    /// Bytes per block.
    pub const SIZE: usize = 292;
    /// Elements per block.
    pub const QK: usize = QK_K;

    /// Reads a block from its on-disk bytes.
    pub fn from_bytes(b: &[u8; 292]) -> Self {
        let mut r = Rd::new(b);
        let d = f32::from_le_bytes(r.arr());
        let qs = r.i8s::<QK_K>();
        let bsums = std::array::from_fn(|_| i16::from_le_bytes(r.arr()));
        BlockQ8_K { d, qs, bsums }
    }

    /// Writes the block in its on-disk layout.
    pub fn to_bytes(&self) -> [u8; 292] {
        let mut out = [0u8; 292];
        let mut w = Wr::new(&mut out);
        w.put(&self.d.to_le_bytes());
        w.i8s(&self.qs);
        for s in self.bsums {
            w.put(&s.to_le_bytes());
        }
        out
    }
}
const _: () = assert!(size_of::<BlockQ8_K>() == 292);

// Field offsets, as in ggml-common.h (the static_asserts there check only sizes; these make
// the byte layout explicit).
const _: () = {
    assert!(offset_of!(BlockQ4_0, qs) == 2);
    assert!(offset_of!(BlockQ4_1, qs) == 4);
    assert!(offset_of!(BlockQ5_0, qh) == 2 && offset_of!(BlockQ5_0, qs) == 6);
    assert!(offset_of!(BlockQ5_1, qh) == 4 && offset_of!(BlockQ5_1, qs) == 8);
    assert!(offset_of!(BlockQ8_0, qs) == 2);
    assert!(offset_of!(BlockQ8_1, s) == 2 && offset_of!(BlockQ8_1, qs) == 4);
    assert!(offset_of!(BlockQ2_K, qs) == 16 && offset_of!(BlockQ2_K, d) == 80);
    assert!(offset_of!(BlockQ2_K, dmin) == 82);
    assert!(offset_of!(BlockQ3_K, qs) == 32 && offset_of!(BlockQ3_K, scales) == 96);
    assert!(offset_of!(BlockQ3_K, d) == 108);
    assert!(offset_of!(BlockQ4_K, scales) == 4 && offset_of!(BlockQ4_K, qs) == 16);
    assert!(offset_of!(BlockQ5_K, qh) == 16 && offset_of!(BlockQ5_K, qs) == 48);
    assert!(offset_of!(BlockQ6_K, qh) == 128 && offset_of!(BlockQ6_K, scales) == 192);
    assert!(offset_of!(BlockQ6_K, d) == 208);
    assert!(offset_of!(BlockQ8_K, qs) == 4 && offset_of!(BlockQ8_K, bsums) == 260);
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::GgmlType;

    #[test]
    fn sizes_match_type_table() {
        let table: [(GgmlType, usize, usize); 12] = [
            (GgmlType::Q4_0, BlockQ4_0::SIZE, BlockQ4_0::QK),
            (GgmlType::Q4_1, BlockQ4_1::SIZE, BlockQ4_1::QK),
            (GgmlType::Q5_0, BlockQ5_0::SIZE, BlockQ5_0::QK),
            (GgmlType::Q5_1, BlockQ5_1::SIZE, BlockQ5_1::QK),
            (GgmlType::Q8_0, BlockQ8_0::SIZE, BlockQ8_0::QK),
            (GgmlType::Q8_1, BlockQ8_1::SIZE, BlockQ8_1::QK),
            (GgmlType::Q2_K, BlockQ2_K::SIZE, BlockQ2_K::QK),
            (GgmlType::Q3_K, BlockQ3_K::SIZE, BlockQ3_K::QK),
            (GgmlType::Q4_K, BlockQ4_K::SIZE, BlockQ4_K::QK),
            (GgmlType::Q5_K, BlockQ5_K::SIZE, BlockQ5_K::QK),
            (GgmlType::Q6_K, BlockQ6_K::SIZE, BlockQ6_K::QK),
            (GgmlType::Q8_K, BlockQ8_K::SIZE, BlockQ8_K::QK),
        ];
        for (ty, size, qk) in table {
            assert_eq!(ty.type_size(), size, "{ty}");
            assert_eq!(ty.block_size(), qk, "{ty}");
        }
    }

    fn pattern<const N: usize>() -> [u8; N] {
        std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
    }

    #[test]
    fn bytes_round_trip() {
        macro_rules! rt {
            ($($t:ident),*) => {$({
                let b = pattern::<{ $t::SIZE }>();
                assert_eq!($t::from_bytes(&b).to_bytes(), b, stringify!($t));
            })*};
        }
        rt!(BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1);
        rt!(BlockQ2_K, BlockQ3_K, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K);
    }

    #[test]
    fn fields_read_little_endian() {
        let mut b = [0u8; 144];
        b[0] = 0x34;
        b[1] = 0x12;
        b[2] = 0x78;
        b[3] = 0x56;
        b[16] = 0xab;
        let blk = BlockQ4_K::from_bytes(&b);
        assert_eq!((blk.d, blk.dmin, blk.qs[0]), (0x1234, 0x5678, 0xab));
        let mut b = [0u8; 210];
        b[192] = 0xff;
        b[208] = 1;
        let blk = BlockQ6_K::from_bytes(&b);
        assert_eq!((blk.scales[0], blk.d), (-1, 1));
    }
}
