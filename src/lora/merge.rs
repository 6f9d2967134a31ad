//! Merging an adapter into the base model file (the LoRA paper's "no extra latency") and
//! taking it out again (its task switch).
//!
//! For every adapted weight, W = W0 ± S·s·B·A (S the caller's scale, s the pair's α/r), in
//! f32, then re-encoded as the base's type or the one asked for; every other tensor and all
//! metadata are copied unchanged. The work is streamed: the output's header is written
//! first, then each tensor in file order, the adapted ones a band of rows at a time
//! (dequantize the band, add its B-rows · A with the gemm kernel, re-quantize, write), so
//! memory holds a few bands per thread and the adapter, never a whole matrix in f32.
//! Copied tensors go from the input's memory map straight to the output.
//!
//! Each merged tensor's report gives the re-quantization error ‖Q(W) − W‖/‖W‖ (relative RMS;
//! 0 for F32) next to the update's own size ‖ΔW‖/‖W0‖, so one can see whether the encoding
//! swallows the update. Subtraction (`unmerge`) is approximate even for F32/F16 bases
//! (W0 + ΔW − ΔW is not W0 in floating point, and F16 rounds twice): given the original
//! base, the report gives each tensor's largest difference from it.

use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use super::adapter::{Adapter, LoraPair};
use crate::error::{Error, GgufError, Result};
use crate::gguf::{GgufFile, GgufWriter};
use crate::kernels::gemm::{gemm_scaled, MatRef};
use crate::model::ModelConfig;
use crate::quant::{can_dequantize, can_quantize, dequantize_row, quantize, GgmlType};

/// f32 elements of one band of rows (1 MiB).
const BAND_ELEMS: usize = 1 << 18;

/// How to merge.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeOptions {
    /// S: multiplies every pair's α/r scale.
    pub scale: f32,
    /// Encoding of the merged tensors; `None` keeps each tensor's own type. A tensor whose
    /// rows are not a whole number of the type's blocks keeps its own type instead (as
    /// llama.cpp's quantizer falls back), which its report shows.
    pub out_type: Option<GgmlType>,
    /// Subtract S·s·B·A instead of adding it.
    pub unmerge: bool,
    /// Worker threads (0 = one per core).
    pub threads: usize,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            scale: 1.0,
            out_type: None,
            unmerge: false,
            threads: 0,
        }
    }
}

/// What happened to one adapted tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorReport {
    pub name: String,
    pub ty_in: GgmlType,
    pub ty_out: GgmlType,
    /// ‖Q(W) − W‖ / ‖W‖ over the tensor, W = W0 ± ΔW in f32 (0 when written as F32).
    pub requant_rel_rms: f64,
    /// ‖ΔW‖ / ‖W0‖: how large the update is next to the base weight.
    pub delta_rel_rms: f64,
    /// The largest |W_written − W_original| when an original base was given.
    pub max_abs_diff_original: Option<f64>,
}

/// What a merge wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeReport {
    /// One entry per adapted tensor, in file order.
    pub tensors: Vec<TensorReport>,
    /// Tensors copied unchanged.
    pub copied: usize,
}

impl MergeReport {
    /// The largest re-quantization error over all merged tensors.
    pub fn max_requant_rel_rms(&self) -> f64 {
        self.tensors
            .iter()
            .map(|t| t.requant_rel_rms)
            .fold(0.0, f64::max)
    }

    /// The largest difference from the original base, when one was given.
    pub fn max_abs_diff_original(&self) -> Option<f64> {
        self.tensors
            .iter()
            .filter_map(|t| t.max_abs_diff_original)
            .reduce(f64::max)
    }
}

/// An adapted tensor of the base: its pair and output type.
struct Job<'a> {
    pair: &'a LoraPair,
    ty_out: GgmlType,
}

/// Merges `adapter` into `base` and writes the result to `out` (atomically). With
/// `original` (for `unmerge`: the base the adapter was merged into), each tensor's largest
/// difference from it is reported.
pub fn merge_file(
    base: &GgufFile,
    adapter: &Adapter,
    opts: &MergeOptions,
    original: Option<&GgufFile>,
    out: &Path,
) -> Result<MergeReport> {
    let cfg = ModelConfig::from_gguf(base)?;
    adapter.check_fits(&cfg)?;
    if !opts.scale.is_finite() {
        return Err(Error::InvalidArgument(format!(
            "merge scale {} is not finite",
            opts.scale
        )));
    }
    // Everything that can be refused is refused before the first byte is written.
    let mut jobs: Vec<Option<Job>> = Vec::with_capacity(base.tensors().len());
    let mut w = GgufWriter::new();
    for (k, v) in base.metadata() {
        w.set(k.clone(), v.clone());
    }
    let arch = base
        .opt_str("general.architecture")?
        .and_then(crate::model::Arch::by_name)
        .unwrap_or(&crate::model::arch::LLAMA);
    for info in base.tensors() {
        let job = match adapted_pair(adapter, arch, &info.name) {
            Some(pair) => {
                let ty_out = match opts.out_type {
                    Some(t) if t.bytes_for(pair.in_dim as u64).is_some() => t,
                    _ => info.ty,
                };
                check_job(info, pair, ty_out, original)?;
                Some(Job { pair, ty_out })
            }
            None => None,
        };
        let ty = job.as_ref().map_or(info.ty, |j| j.ty_out);
        w.declare_tensor(info.name.clone(), ty, &info.dims)?;
        jobs.push(job);
    }
    let merged = jobs.iter().flatten().count();
    if merged != adapter.pairs().count() {
        let missing = adapter
            .entries()
            .map(|(i, t, _)| format!("blk.{i}.{}.weight", t.gguf_tensor()))
            .find(|n| base.tensor_info(n).is_none())
            .unwrap_or_default();
        return Err(GgufError::MissingTensor { name: missing }.into());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start threads: {e}")))?;
    let sign = if opts.unmerge { -1.0 } else { 1.0 };
    let mut report = MergeReport {
        tensors: Vec::new(),
        copied: 0,
    };
    w.write_file_streaming(out, |t, sink| {
        let info = &base.tensors()[t.index];
        let src = base.require_tensor(&info.name)?;
        match &jobs[t.index] {
            None => {
                sink.write_all(src.data).map_err(|e| Error::io(out, e))?;
                report.copied += 1;
            }
            Some(job) => {
                let orig = match original {
                    Some(o) => {
                        let t = o.require_tensor(&info.name)?;
                        Some((t.info.ty, t.data))
                    }
                    None => None,
                };
                let s = sign * opts.scale * job.pair.scale;
                let r = merge_tensor(&pool, info.ty, src.data, job, s, orig, sink).map_err(
                    |e| match e {
                        Error::Io { source, .. } => Error::io(out, source),
                        e => e,
                    },
                )?;
                report.tensors.push(TensorReport {
                    name: info.name.clone(),
                    ty_in: info.ty,
                    ty_out: job.ty_out,
                    requant_rel_rms: (r.err2 / r.w2.max(f64::MIN_POSITIVE)).sqrt(),
                    delta_rel_rms: (r.d2 / r.w0_2.max(f64::MIN_POSITIVE)).sqrt(),
                    max_abs_diff_original: orig.map(|_| r.max_orig),
                });
            }
        }
        Ok(())
    })?;
    Ok(report)
}

/// The pair adapting tensor `name` (`blk.N.<target>.weight`), if any.
fn adapted_pair<'a>(
    adapter: &'a Adapter,
    arch: &crate::model::Arch,
    name: &str,
) -> Option<&'a LoraPair> {
    let rest = name.strip_prefix("blk.")?;
    let (n, rest) = rest.split_once('.')?;
    let stem = rest.strip_suffix(".weight")?;
    let layer: usize = n.parse().ok()?;
    let t = arch.target_of_gguf(stem)?;
    adapter.layers.get(layer)?[t.index()].as_ref()
}

fn check_job(
    info: &crate::gguf::TensorInfo,
    pair: &LoraPair,
    ty_out: GgmlType,
    original: Option<&GgufFile>,
) -> Result<()> {
    let name = &info.name;
    if info.dims != [pair.in_dim as u64, pair.out_dim as u64] {
        return Err(Error::InvalidArgument(format!(
            "tensor {name}: dims {:?} do not fit the adapter's {}×{} pair — trained for another base model?",
            info.dims, pair.out_dim, pair.in_dim
        )));
    }
    if !can_dequantize(info.ty) {
        return Err(Error::InvalidArgument(format!(
            "tensor {name} is {}, which cannot be dequantized here",
            info.ty
        )));
    }
    if !can_quantize(ty_out) {
        return Err(Error::InvalidArgument(format!(
            "tensor {name} would be written as {ty_out}, which cannot be quantized here; choose --type f32, f16, q8_0 or q4_0"
        )));
    }
    if ty_out.bytes_for(pair.in_dim as u64).is_none() {
        return Err(Error::InvalidArgument(format!(
            "tensor {name}: rows of {} elements are not a whole number of {ty_out} blocks of {}",
            pair.in_dim,
            ty_out.block_size()
        )));
    }
    if let Some(o) = original {
        match o.tensor_info(name) {
            Some(t) if t.dims == info.dims && can_dequantize(t.ty) => {}
            Some(t) => {
                return Err(Error::InvalidArgument(format!(
                    "tensor {name} of the original base is {} {:?}, unlike the input's {:?}",
                    t.ty, t.dims, info.dims
                )))
            }
            None => return Err(GgufError::MissingTensor { name: name.clone() }.into()),
        }
    }
    Ok(())
}

/// Sums over a tensor (or a band of it).
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    /// Σ (Q(W) − W)²
    err2: f64,
    /// Σ W²
    w2: f64,
    /// Σ ΔW²
    d2: f64,
    /// Σ W0²
    w0_2: f64,
    /// max |Q(W) − W_original|
    max_orig: f64,
}

impl Stats {
    fn add(self, o: Stats) -> Stats {
        Stats {
            err2: self.err2 + o.err2,
            w2: self.w2 + o.w2,
            d2: self.d2 + o.d2,
            w0_2: self.w0_2 + o.w0_2,
            max_orig: self.max_orig.max(o.max_orig),
        }
    }
}

/// Streams one merged tensor into `sink`: bands of rows, one band per worker at a time,
/// written in order.
fn merge_tensor(
    pool: &rayon::ThreadPool,
    ty_in: GgmlType,
    src: &[u8],
    job: &Job,
    s: f32,
    orig: Option<(GgmlType, &[u8])>,
    sink: &mut dyn Write,
) -> Result<Stats> {
    let p = job.pair;
    let (rows, cols) = (p.out_dim, p.in_dim);
    let band = (BAND_ELEMS / cols.max(1)).clamp(1, rows.max(1));
    let row_in = ty_in.bytes_for(cols as u64).unwrap_or(0) as usize;
    let bands: Vec<usize> = (0..rows).step_by(band).collect();
    let mut total = Stats::default();
    for group in bands.chunks(pool.current_num_threads().max(1)) {
        let done: Vec<Result<(Vec<u8>, Stats)>> = pool.install(|| {
            group
                .par_iter()
                .map(|&r0| {
                    let n = band.min(rows - r0);
                    let band_src = &src[r0 * row_in..(r0 + n) * row_in];
                    merge_band(ty_in, band_src, job, s, r0, n, orig)
                })
                .collect()
        });
        for d in done {
            let (bytes, st) = d?;
            sink.write_all(&bytes)
                .map_err(|e| Error::io("<merged>", e))?;
            total = total.add(st);
        }
    }
    Ok(total)
}

/// Rows `r0 .. r0 + n` of W0 ± s·B·A, encoded, with their sums.
fn merge_band(
    ty_in: GgmlType,
    src: &[u8],
    job: &Job,
    s: f32,
    r0: usize,
    n: usize,
    orig: Option<(GgmlType, &[u8])>,
) -> Result<(Vec<u8>, Stats)> {
    let p = job.pair;
    let cols = p.in_dim;
    let mut w = vec![0f32; n * cols]; // (n, in)
    dequantize_row(ty_in, src, &mut w)?;
    let mut st = Stats::default();
    let w0_2: f64 = w.iter().map(|&x| (x as f64) * (x as f64)).sum();
    let mut d = vec![0f32; n * cols]; // (n, in) ← s · B[r0..r0+n] (n, r) · A (r, in)
    gemm_scaled(
        &mut d,
        cols,
        MatRef::rows(&p.b[r0 * p.r..(r0 + n) * p.r], p.r),
        MatRef::rows(&p.a, cols),
        n,
        cols,
        p.r,
        false,
        s,
    );
    st.w0_2 = w0_2;
    for (x, dx) in w.iter_mut().zip(&d) {
        *x += dx;
        st.d2 += (*dx as f64) * (*dx as f64);
        st.w2 += (*x as f64) * (*x as f64);
    }
    let bytes = quantize(job.ty_out, &w, cols)?;
    if job.ty_out != GgmlType::F32 || orig.is_some() {
        // What a reader of the output will see, into `d`.
        dequantize_row(job.ty_out, &bytes, &mut d)?;
        st.err2 = w
            .iter()
            .zip(&d)
            .map(|(&x, &q)| ((q - x) as f64).powi(2))
            .sum();
    }
    if let Some((ty_orig, o)) = orig {
        let row = ty_orig.bytes_for(cols as u64).unwrap_or(0) as usize;
        dequantize_row(ty_orig, &o[r0 * row..(r0 + n) * row], &mut w)?;
        st.max_orig = w
            .iter()
            .zip(&d)
            .map(|(&a, &b)| (a - b).abs() as f64)
            .fold(0.0, f64::max);
    }
    Ok((bytes, st))
}
