//! The int8 kernel's operands and packing: the layout a level wants ([`Int8Layout`]), the
//! row and lane operands ([`I8Rows`], [`I8Lanes`]), and the packing of W's columns into
//! lane blocks ([`Kernels::pack_cols`]: [`ColSource`] → [`PackTarget`]), whose body
//! is compiled per level.

use super::prefetch;
#[cfg(doc)]
use super::Kernels;

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

/// Where [`Kernels::pack_cols`] reads W: row `e` of block `b` is row `32·b + e`.
#[derive(Clone, Copy, Debug)]
pub enum ColSource<'a> {
    /// A zero-padded f32 panel of `ld` floats per row.
    Panel(&'a [f32]),
    /// Q8_0 or Q4_0 rows, read straight from their blocks.
    Quant(QuantCols<'a>),
}

/// Rows of a Q8_0 or Q4_0 matrix as a [`ColSource`]: `rows` rows of `row_bytes` bytes from
/// `data` exist (later ones read as zero); panel column `j < cw` is column `c0 + j`
/// (`c0` a multiple of 32), later ones read as zero.
#[derive(Clone, Copy, Debug)]
pub struct QuantCols<'a> {
    pub ty: crate::quant::GgmlType,
    pub data: &'a [u8],
    pub row_bytes: usize,
    pub rows: usize,
    pub c0: usize,
    pub cw: usize,
}

/// Where [`Kernels::pack_cols`] writes: `blocks` blocks of `ld` columns into buffers of
/// `total` blocks per lane block, starting at block `b0`.
#[derive(Debug)]
pub struct PackTarget<'a> {
    pub blocks: usize,
    pub ld: usize,
    pub total: usize,
    pub b0: usize,
    pub vals: &'a mut [u8],
    pub d: &'a mut [f32],
    pub corr: &'a mut [i32],
}

/// The body of [`Kernels::pack_cols`] (sizes checked), compiled per level: each source
/// monomorphizes [`pack_cols_from`].
#[inline(always)]
pub(crate) fn pack_cols_body(lay: Int8Layout, src: ColSource<'_>, dst: PackTarget<'_>) {
    match src {
        ColSource::Panel(p) => pack_cols_from(lay, dst, PanelCols(p)),
        ColSource::Quant(q) if q.ty == crate::quant::GgmlType::Q8_0 => {
            pack_cols_from(lay, dst, Q8Cols(q))
        }
        ColSource::Quant(q) => pack_cols_from(lay, dst, Q4Cols(q)),
    }
}

/// Reads 16 consecutive columns of a block of 32 rows of W as f32 (inlined into each
/// level's body).
trait ColReader {
    /// Columns `col .. col + 16` of rows `row0 .. row0 + 32` into `x`.
    fn load(&self, ld: usize, row0: usize, col: usize, x: &mut [[f32; 16]; 32]);
}

struct PanelCols<'a>(&'a [f32]);
struct Q8Cols<'a>(QuantCols<'a>);
struct Q4Cols<'a>(QuantCols<'a>);

impl ColReader for PanelCols<'_> {
    #[inline(always)]
    fn load(&self, ld: usize, row0: usize, col: usize, x: &mut [[f32; 16]; 32]) {
        for (e, r) in x.iter_mut().enumerate() {
            r.copy_from_slice(&self.0[(row0 + e) * ld + col..][..16]);
        }
    }
}

impl QuantCols<'_> {
    /// For columns `c0 + col ..` of rows `row0 ..` in blocks of `BYTES` bytes: the number of
    /// rows that exist (0 past the valid columns), each row's block offset in `data`, the
    /// blocks' scales and the column's position in its block. Fetches the same blocks 32
    /// rows down (the next call's) while these are worked.
    #[inline(always)]
    fn blocks<const BYTES: usize>(
        &self,
        row0: usize,
        col: usize,
    ) -> (usize, [usize; 32], [f32; 32], usize) {
        let mut offs = [0usize; 32];
        let mut d = [0f32; 32];
        let n = if col < self.cw {
            self.rows.saturating_sub(row0).min(32)
        } else {
            0
        };
        let c = self.c0 + col;
        let mut h = [0u16; 32];
        for e in 0..n {
            let s = (row0 + e) * self.row_bytes + c / 32 * BYTES;
            offs[e] = s;
            h[e] = u16::from_le_bytes([self.data[s], self.data[s + 1]]);
            if c % 32 == 0 {
                let ahead = s + 32 * self.row_bytes;
                prefetch(self.data, ahead);
            }
        }
        // Branch-free: this loop vectorizes.
        for (o, &h) in d.iter_mut().zip(&h) {
            *o = crate::quant::reference::f16_to_f32(h);
        }
        (n, offs, d, c % 32)
    }
}

impl ColReader for Q8Cols<'_> {
    #[inline(always)]
    fn load(&self, _: usize, row0: usize, col: usize, x: &mut [[f32; 16]; 32]) {
        let (n, offs, d, at) = self.0.blocks::<34>(row0, col);
        for (e, r) in x.iter_mut().enumerate() {
            if e < n {
                let q = &self.0.data[offs[e] + 2 + at..][..16];
                for (o, &v) in r.iter_mut().zip(q) {
                    *o = (v as i8 as f32) * d[e];
                }
            } else {
                *r = [0.0; 16];
            }
        }
    }
}

impl ColReader for Q4Cols<'_> {
    #[inline(always)]
    fn load(&self, _: usize, row0: usize, col: usize, x: &mut [[f32; 16]; 32]) {
        let (n, offs, d, at) = self.0.blocks::<18>(row0, col);
        // Columns 0..16 of a block are the low nibbles, 16..32 the high ones.
        let sh = if at == 0 { 0 } else { 4 };
        for (e, r) in x.iter_mut().enumerate() {
            if e < n {
                let q = &self.0.data[offs[e] + 2..][..16];
                for (o, &v) in r.iter_mut().zip(q) {
                    *o = (((v >> sh) & 15) as i32 - 8) as f32 * d[e];
                }
            } else {
                *r = [0.0; 16];
            }
        }
    }
}

/// [`pack_cols_body`] over any reader of 16 consecutive columns of a row: columns in chunks
/// of 16 lanes, each gathered over its block's 32 rows, then quantized four rows at a time
/// into one little-endian word per lane.
#[inline(always)]
fn pack_cols_from(lay: Int8Layout, dst: PackTarget<'_>, src: impl ColReader) {
    let (nt, g) = (lay.nt, lay.group);
    let offset: i32 = if lay.unsigned_weights { 128 } else { 0 };
    let PackTarget {
        blocks,
        ld,
        total,
        b0,
        vals,
        d,
        corr,
    } = dst;
    for lb in 0..ld / nt {
        let at = lb * total + b0;
        let vb = &mut vals[at * 32 * nt..(at + blocks) * 32 * nt];
        let db = &mut d[at * nt..(at + blocks) * nt];
        let cb = &mut corr[at * nt..(at + blocks) * nt];
        for b in 0..blocks {
            for jc in (0..nt).step_by(16) {
                let col = lb * nt + jc;
                let mut x = [[0f32; 16]; 32];
                src.load(ld, 32 * b, col, &mut x);
                let mut amax = [0f32; 16];
                for r in &x {
                    for l in 0..16 {
                        // Compare-and-select: `f32::max`'s NaN rule costs two more ops.
                        let a = r[l].abs();
                        amax[l] = if a > amax[l] { a } else { amax[l] };
                    }
                }
                let mut id = [0f32; 16];
                for l in 0..16 {
                    let s = amax[l] / 127.0;
                    db[b * nt + jc + l] = s;
                    id[l] = if s > 0.0 { 1.0 / s } else { 0.0 };
                }
                let mut sum = [0i32; 16];
                for e4 in 0..8 {
                    let mut word = [0u32; 16];
                    for u in 0..4 {
                        let r = &x[4 * e4 + u];
                        for l in 0..16 {
                            let q =
                                crate::quant::reference::nearest_int(r[l] * id[l]).clamp(-127, 127);
                            sum[l] += q;
                            word[l] |= ((q as u32) & 0xff) << (8 * u);
                        }
                    }
                    // Byte e of lane j sits at ((e / g)·nt + j)·g + e % g.
                    let (grp, within) = ((4 * e4) / g, (4 * e4) % g);
                    let base = b * 32 * nt + (grp * nt + jc) * g + within;
                    if g == 4 {
                        // The 16 lanes' words are adjacent: one contiguous 64-byte store.
                        let dst = &mut vb[base..base + 64];
                        for (o, w) in dst.chunks_exact_mut(4).zip(&word) {
                            o.copy_from_slice(&w.to_le_bytes());
                        }
                    } else {
                        for (l, w) in word.iter().enumerate() {
                            vb[base + l * g..base + l * g + 4].copy_from_slice(&w.to_le_bytes());
                        }
                    }
                }
                for l in 0..16 {
                    cb[b * nt + jc + l] = -offset * sum[l];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{quantize_block, scalar, tests::vals, Kernels, Level, Out};
    use super::*;

    #[test]
    fn i8gemm_equals_its_definition_for_every_operand_form() {
        for level in Level::available() {
            let k = Kernels::for_level(level).unwrap();
            let lay = k.int8;
            let nt = lay.nt;
            for (rows, blocks, n) in [
                (1usize, 1usize, 1usize),
                (7, 3, nt),
                (5, 2, nt - 1),
                (13, 9, 3),
                (3, 0, 2),
            ] {
                for unsigned_rows in [false, true] {
                    // The forms each level takes: signed × signed, or (VNNI) exactly one side
                    // unsigned.
                    let lanes_unsigned = lay.unsigned_weights && !unsigned_rows;
                    if (unsigned_rows || lanes_unsigned) != lay.unsigned_weights {
                        continue;
                    }
                    let stride = 32 * blocks + 4;
                    let rv: Vec<u8> = vals(rows * stride, 4)
                        .iter()
                        .map(|v| {
                            if unsigned_rows {
                                (v.abs() * 255.0) as u8
                            } else {
                                (v * 127.0) as i8 as u8
                            }
                        })
                        .collect();
                    let lv: Vec<u8> = vals(blocks * 32 * nt, 5)
                        .iter()
                        .map(|v| {
                            if lanes_unsigned {
                                (v.abs() * 255.0) as u8
                            } else {
                                (v * 127.0) as i8 as u8
                            }
                        })
                        .collect();
                    let rd = vals(rows * blocks.max(1), 6);
                    let ld = vals(blocks * nt, 7);
                    let ls = vals(blocks * nt, 8);
                    let rc: Vec<i32> = (0..rows * blocks.max(1))
                        .map(|i| i as i32 * 37 - 500)
                        .collect();
                    let lc: Vec<i32> = (0..blocks * nt).map(|i| 250 - i as i32 * 11).collect();
                    let rmin = vals(rows * blocks.max(1), 9);
                    for with_min in [false, true] {
                        let r = I8Rows {
                            rows,
                            blocks,
                            vals: &rv,
                            stride,
                            unsigned: unsigned_rows,
                            d: &rd,
                            d_stride: blocks.max(1),
                            corr: lanes_unsigned.then_some(&rc[..]),
                            min: with_min.then_some(&rmin[..]),
                        };
                        let l = I8Lanes {
                            blocks,
                            vals: &lv,
                            unsigned: lanes_unsigned,
                            d: &ld,
                            sum: &ls,
                            corr: unsigned_rows.then_some(&lc[..]),
                        };
                        // f64 definition; the tolerance is relative to the size of the terms
                        // (the integer sums reach 32·255·127 and the corrections cancel them).
                        let term = |i: usize, j: usize| -> (f64, f64) {
                            let (mut sum, mut mag) = (0f64, 0f64);
                            for b in 0..blocks {
                                let mut s = r.corr.map_or(0, |c| c[i * blocks + b]) as i64
                                    + l.corr.map_or(0, |c| c[b * nt + j]) as i64;
                                for e in 0..32 {
                                    let x = rv[i * stride + 32 * b + e];
                                    let y = lv[scalar::lane_byte(lay, b, e, j)];
                                    let x = if unsigned_rows {
                                        x as i64
                                    } else {
                                        x as i8 as i64
                                    };
                                    let y = if lanes_unsigned {
                                        y as i64
                                    } else {
                                        y as i8 as i64
                                    };
                                    s += x * y;
                                }
                                let t =
                                    s as f64 * rd[i * blocks + b] as f64 * ld[b * nt + j] as f64;
                                let mt = if with_min {
                                    rmin[i * blocks + b] as f64 * ls[b * nt + j] as f64
                                } else {
                                    0.0
                                };
                                sum += t - mt;
                                mag += t.abs() + mt.abs();
                            }
                            (sum, mag)
                        };
                        for (ors, ocs) in [(n + 1, 1), (1, rows + 2)] {
                            let len = rows * ors + n * ocs + 4;
                            let base = vals(len, 10);
                            let mut twin = base.clone();
                            let mut got = base.clone();
                            scalar::i8gemm_layout(
                                &r,
                                &l,
                                n,
                                &mut Out::new(&mut twin, ors, ocs, true),
                                lay,
                            );
                            k.i8gemm(&r, &l, n, &mut Out::new(&mut got, ors, ocs, true));
                            // Nothing outside the (rows × n) view is written.
                            let inside = |at: usize| {
                                (0..rows).any(|i| (0..n).any(|j| i * ors + j * ocs == at))
                            };
                            for (at, (&b, (&g, &tw))) in
                                base.iter().zip(got.iter().zip(&twin)).enumerate()
                            {
                                if !inside(at) {
                                    assert_eq!((g, tw), (b, b), "i8gemm {level:?} wrote at {at}");
                                }
                            }
                            for i in 0..rows {
                                for j in 0..n {
                                    let at = i * ors + j * ocs;
                                    let (want, mag) = term(i, j);
                                    let want = want + base[at] as f64;
                                    for (who, v) in [("twin", twin[at]), ("kernel", got[at])] {
                                        assert!(
                                            (v as f64 - want).abs() <= 1e-6 * (mag + 1.0),
                                            "i8gemm {who} {level:?} {rows}x{blocks}x{n} ({i},{j}): {v} vs {want}"
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Checks one `pack_cols` result against `quantize_block` of each column's 32 rows of
    /// `panel` (blocks · 32 rows × ld, the dequantized source).
    fn check_packed(
        k: &Kernels,
        panel: &[f32],
        blocks: usize,
        ld: usize,
        got: (&[u8], &[f32], &[i32]),
        what: &str,
    ) {
        let lay = k.int8;
        let (v, d, corr) = got;
        for lb in 0..ld / lay.nt {
            for b in 0..blocks {
                for j in 0..lay.nt {
                    let col = lb * lay.nt + j;
                    let x: Vec<f32> = (0..32).map(|e| panel[(32 * b + e) * ld + col]).collect();
                    let mut q = [0i8; 32];
                    let (s, sum) = quantize_block(&x, &mut q);
                    let at = (lb * blocks + b) * lay.nt + j;
                    assert_eq!(d[at], s, "{what} scale of column {col} block {b}");
                    let want = if lay.unsigned_weights { -128 * sum } else { 0 };
                    assert_eq!(
                        corr[at], want,
                        "{what} correction of column {col} block {b}"
                    );
                    for (e, &qq) in q.iter().enumerate() {
                        let byte = lb * blocks * 32 * lay.nt + scalar::lane_byte(lay, b, e, j);
                        assert_eq!(v[byte], qq as u8, "{what} column {col} block {b} byte {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn pack_cols_puts_every_byte_where_the_layout_says() {
        for level in Level::available() {
            let k = Kernels::for_level(level).unwrap();
            let (blocks, ld) = (2usize, 2 * k.int8.nt);
            let panel = vals(blocks * 32 * ld, 15);
            let mut v = vec![0u8; blocks * 32 * ld];
            let mut d = vec![0f32; blocks * ld];
            let mut c = vec![7i32; blocks * ld];
            let dst = PackTarget {
                blocks,
                ld,
                total: blocks,
                b0: 0,
                vals: &mut v,
                d: &mut d,
                corr: &mut c,
            };
            k.pack_cols(ColSource::Panel(&panel), dst);
            check_packed(
                &k,
                &panel,
                blocks,
                ld,
                (&v, &d, &c),
                &format!("{level:?} panel"),
            );
        }
    }

    #[test]
    fn pack_cols_reads_q8_0_and_q4_0_blocks_as_their_dequantized_panel() {
        use crate::quant::{dequantize_row, quantize, GgmlType};
        // 70 rows (the last 32-row block partial) × 160 columns; the window starts at column
        // 32 and its width stops short of the padded lane blocks.
        let (rows, cols, c0) = (70usize, 160usize, 32usize);
        let w: Vec<f32> = vals(rows * cols, 16).iter().map(|x| x * 3.0).collect();
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0] {
            let bytes = quantize(ty, &w, cols).unwrap();
            let row_bytes = bytes.len() / rows;
            let mut deq = vec![0f32; rows * cols];
            dequantize_row(ty, &bytes, &mut deq).unwrap();
            for level in Level::available() {
                let k = Kernels::for_level(level).unwrap();
                let nt = k.int8.nt;
                let cw: usize = if nt == 16 { 48 } else { 96 };
                let ld = cw.div_ceil(nt) * nt + nt;
                let blocks = rows.div_ceil(32);
                // The expected panel: zero past the last row and past the window.
                let mut panel = vec![0f32; blocks * 32 * ld];
                for r in 0..rows {
                    panel[r * ld..r * ld + cw].copy_from_slice(&deq[r * cols + c0..][..cw]);
                }
                let mut v = vec![0u8; blocks * 32 * ld];
                let mut d = vec![0f32; blocks * ld];
                let mut c = vec![7i32; blocks * ld];
                // One block per call, as the backward packs them, then all at once.
                for b in 0..blocks {
                    let src = QuantCols {
                        ty,
                        data: &bytes[32 * b * row_bytes..],
                        row_bytes,
                        rows: rows - 32 * b,
                        c0,
                        cw,
                    };
                    let dst = PackTarget {
                        blocks: 1,
                        ld,
                        total: blocks,
                        b0: b,
                        vals: &mut v,
                        d: &mut d,
                        corr: &mut c,
                    };
                    k.pack_cols(ColSource::Quant(src), dst);
                }
                let what = format!("{level:?} {ty}");
                check_packed(&k, &panel, blocks, ld, (&v, &d, &c), &what);
                let all = QuantCols {
                    ty,
                    data: &bytes,
                    row_bytes,
                    rows,
                    c0,
                    cw,
                };
                let (mut v2, mut d2, mut c2) = (v.clone(), d.clone(), c.clone());
                v2.fill(1);
                d2.fill(1.0);
                c2.fill(1);
                let dst = PackTarget {
                    blocks,
                    ld,
                    total: blocks,
                    b0: 0,
                    vals: &mut v2,
                    d: &mut d2,
                    corr: &mut c2,
                };
                k.pack_cols(ColSource::Quant(all), dst);
                assert!(
                    v2 == v && d2 == d && c2 == c,
                    "{what}: one call differs from per-block calls"
                );
            }
        }
    }
}
