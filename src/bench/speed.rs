//! What speeds are measured against: the fp32 FMA peak microbenchmark (once, or in short
//! bursts between the passes of a measurement) and the FLOP counts of the passes.

use std::time::Instant;

use crate::model::ModelConfig;
use crate::simd::{Kernels, Level};

/// The fp32 FMA peak of this machine in GFLOP/s with `threads` threads: independent
/// fused-multiply-add chains in the widest vector registers the CPU has (whatever
/// `POCKETLORA_DISABLE` says), the best of a few runs of about `seconds` each.
pub fn fp32_peak_gflops(threads: usize, seconds: f64) -> (f64, Level) {
    let burst = PeakBurst::calibrated(seconds / 3.0);
    let threads = threads.max(1);
    let best = (0..3)
        .map(|_| burst.on_threads(threads))
        .fold(0f64, f64::max);
    (best, burst.k.level)
}

/// One short run of the FMA peak microbenchmark, to repeat between the passes a speed is
/// measured on: a fraction of the peak then compares two speeds taken under the same
/// machine conditions. (On a shared VM the cores' speed drifts for seconds at a time, e.g.
/// when the host runs both virtual CPUs on one core, so a peak taken once, earlier, can be
/// twice or half the one the passes saw.)
#[derive(Clone, Copy, Debug)]
pub struct PeakBurst {
    k: Kernels,
    iters: usize,
}

impl PeakBurst {
    /// Calibrated to take about `seconds` on one thread, in the widest registers the CPU has.
    pub fn calibrated(seconds: f64) -> PeakBurst {
        let level = Level::available().last().copied().unwrap_or(Level::Scalar);
        let k = Kernels::for_level(level).unwrap_or_else(|| *crate::simd::kernels());
        let mut iters = 1usize << 12;
        loop {
            let t = Instant::now();
            k.fma_peak(iters);
            let dt = t.elapsed().as_secs_f64();
            if dt > 0.005 || iters > 1 << 30 {
                let iters = ((seconds / (dt / iters as f64)) as usize).max(1);
                return PeakBurst { k, iters };
            }
            iters *= 4;
        }
    }

    /// One burst on the calling thread.
    pub fn once(&self) {
        std::hint::black_box(self.k.fma_peak(self.iters));
    }

    /// One burst on each of `threads` new threads at once, in GFLOP/s.
    pub fn on_threads(&self, threads: usize) -> f64 {
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| self.once());
            }
        });
        self.gflops(threads, t.elapsed().as_secs_f64())
    }

    /// One burst on every thread of `pool` at once, in GFLOP/s.
    pub fn on_pool(&self, pool: &rayon::ThreadPool) -> f64 {
        let t = Instant::now();
        pool.broadcast(|_| self.once());
        self.gflops(pool.current_num_threads(), t.elapsed().as_secs_f64())
    }

    /// GFLOP/s of `threads` bursts that took `seconds` together.
    pub fn gflops(&self, threads: usize, seconds: f64) -> f64 {
        (self.k.fma_peak_flops_per_iter() * self.iters * threads) as f64 / seconds / 1e9
    }
}

/// FLOP counts of one sequence of `t` tokens through a model (multiply-adds count 2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flops {
    /// Forward over the blocks (no output head).
    pub forward: f64,
    /// One training step as this engine runs it: forward, the checkpointed blocks' forward
    /// again from their checkpoints (not the blocks whose activations are kept), the input gradients,
    /// the head twice (its logits and their gradient, one pass over the vocabulary), the LoRA
    /// products (forward and the backward ones).
    pub train: f64,
}

/// FLOP counts for `t` tokens of `cfg` with LoRA rank `r` on all seven targets of every
/// block; the training plan keeps the activations of the top `kept` blocks (they are not
/// recomputed in backward).
pub fn flops(cfg: &ModelConfig, t: usize, r: usize, kept: usize) -> Flops {
    let (c, q, kv, ff) = (
        cfg.n_embd as f64,
        cfg.q_dim() as f64,
        cfg.kv_dim() as f64,
        cfg.n_ff as f64,
    );
    let t = t as f64;
    let layers = cfg.n_layer as f64;
    let lin = c * q + 2.0 * c * kv + q * c + 3.0 * c * ff;
    let lora_io = (c + q) + 2.0 * (c + kv) + (q + c) + 2.0 * (c + ff) + (ff + c);
    // Query-key pairs per layer: causal, or within a sliding window.
    let tn = t as usize;
    let pairs = |l: usize| match cfg.window_of(l) {
        Some(w) => (0..tn).map(|i| (i + 1).min(w)).sum::<usize>() as f64,
        None => t * (t + 1.0) / 2.0,
    };
    let unit = 2.0 * cfg.n_head as f64 * cfg.head_dim as f64;
    let attn: f64 = (0..cfg.n_layer).map(|l| unit * pairs(l)).sum();
    let lora_fwd = 2.0 * t * r as f64 * lora_io;
    let forward = layers * 2.0 * t * lin + 2.0 * attn;
    let head = 2.0 * t * cfg.n_vocab as f64 * c;
    let recomputed = layers - kept.min(cfg.n_layer) as f64;
    // A checkpointed block's backward recomputes its MLP's down projection too when the
    // recipe post-norms the MLP output.
    let post_down = if cfg.arch.post_norms {
        2.0 * t * c * ff
    } else {
        0.0
    };
    let per_layer_attn = attn / layers.max(1.0);
    let train = layers * (2.0 * t * lin + 2.0 * t * lin + 3.0 * lora_fwd)
        + 7.0 * attn
        + recomputed * (2.0 * t * lin + 2.0 * per_layer_attn + lora_fwd + post_down)
        + 2.0 * head;
    Flops { forward, train }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fma_peak_and_a_burst_on_a_pool_measure_positive_speeds() {
        let (g, _) = fp32_peak_gflops(1, 0.01);
        assert!(g > 0.0 && g.is_finite());
        let burst = PeakBurst::calibrated(0.002);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = (0..5).map(|_| burst.on_pool(&pool)).fold(0f64, f64::max);
        assert!(b > 0.0 && b.is_finite());
        // Two threads' bursts in the same time are twice the work.
        assert_eq!(burst.gflops(2, 0.5), 4.0 * burst.gflops(1, 1.0));
    }
}
