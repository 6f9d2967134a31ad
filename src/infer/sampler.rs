//! Choosing the next token from a row of logits: greedy, or seeded sampling with top-k,
//! top-p (nucleus), min-p and temperature, applied in llama.cpp's default order
//! (top-k → top-p → min-p → temperature → draw).

use crate::util::rng::SplitMix64;

/// Sampling settings. `temperature <= 0` means greedy (argmax, first of equal maxima).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one (0 = none).
    pub min_p: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// llama.cpp's defaults.
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        }
    }

    /// Checks the ranges, naming the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        if !self.temperature.is_finite() {
            return Err(format!("temperature {} is not finite", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top-p {} must be in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min-p {} must be in [0, 1]", self.min_p));
        }
        Ok(())
    }
}

/// A sampler with its own generator and candidate buffer.
#[derive(Clone, Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: SplitMix64,
    cands: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Sampler {
        Sampler {
            cfg,
            rng: SplitMix64::new(cfg.seed),
            cands: Vec::new(),
        }
    }

    /// The next token for this row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.temperature <= 0.0 {
            return argmax(logits);
        }
        let c = &mut self.cands;
        c.clear();
        c.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, z)| !z.is_nan())
                .map(|(i, &z)| (z, i as u32)),
        );
        if c.is_empty() {
            return 0;
        }
        let by_logit_desc =
            |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if self.cfg.top_k > 0 && self.cfg.top_k < c.len() {
            c.select_nth_unstable_by(self.cfg.top_k - 1, by_logit_desc);
            c.truncate(self.cfg.top_k);
        }
        c.sort_unstable_by(by_logit_desc);
        let max = c[0].0;
        // Probabilities at temperature 1 decide top-p and min-p, as in llama.cpp.
        let total: f64 = c.iter().map(|&(z, _)| ((z - max) as f64).exp()).sum();
        if self.cfg.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = c.len();
            for (i, &(z, _)) in c.iter().enumerate() {
                cum += ((z - max) as f64).exp() / total;
                if cum >= self.cfg.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            c.truncate(keep);
        }
        if self.cfg.min_p > 0.0 {
            let floor = (self.cfg.min_p as f64).ln();
            let keep = c
                .iter()
                .take_while(|&&(z, _)| ((z - max) as f64) >= floor)
                .count();
            c.truncate(keep.max(1));
        }
        let inv_t = 1.0 / self.cfg.temperature as f64;
        let weights_total: f64 = c
            .iter()
            .map(|&(z, _)| ((z - max) as f64 * inv_t).exp())
            .sum();
        let mut r = self.rng.next_f64() * weights_total;
        for &(z, id) in c.iter() {
            r -= ((z - max) as f64 * inv_t).exp();
            if r < 0.0 {
                return id;
            }
        }
        c[c.len() - 1].1
    }
}

/// Index of the largest logit; the first one on ties; NaNs never win.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(cfg: SamplerConfig, logits: &[f32], n: usize) -> Vec<usize> {
        let mut s = Sampler::new(cfg);
        let mut c = vec![0; logits.len()];
        for _ in 0..n {
            c[s.sample(logits) as usize] += 1;
        }
        c
    }

    #[test]
    fn greedy_takes_first_maximum_and_ignores_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.1]), 1);
        let mut s = Sampler::new(SamplerConfig::greedy());
        assert_eq!(s.sample(&[0.0, -1.0, 5.0]), 2);
    }

    #[test]
    fn temperature_one_follows_softmax_frequencies() {
        let logits = [0.0f32, 1.0, 2.0];
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
        };
        let n = 60_000;
        let c = counts(cfg, &logits, n);
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        for i in 0..3 {
            let p = (logits[i] as f64).exp() / z;
            let got = c[i] as f64 / n as f64;
            assert!((got - p).abs() < 0.01, "token {i}: {got} vs {p}");
        }
    }

    #[test]
    fn filters_cut_the_tail() {
        let logits = [3.0f32, 2.9, 0.0, -5.0];
        let base = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 1,
        };
        let c = counts(SamplerConfig { top_k: 2, ..base }, &logits, 2000);
        assert_eq!(c[2] + c[3], 0);
        assert!(c[0] > 0 && c[1] > 0);
        // p = [.50, .46, .03, .0002]: top-p 0.9 needs the first two.
        let c = counts(SamplerConfig { top_p: 0.9, ..base }, &logits, 2000);
        assert_eq!(c[2] + c[3], 0);
        let c = counts(SamplerConfig { top_p: 0.3, ..base }, &logits, 500);
        assert_eq!(c[0], 500);
        // min-p 0.5: token 1 (ratio 0.905) stays, token 2 (0.05) goes.
        let c = counts(SamplerConfig { min_p: 0.5, ..base }, &logits, 2000);
        assert_eq!(c[2] + c[3], 0);
        assert!(c[1] > 0);
    }

    #[test]
    fn same_seed_same_tokens_and_low_temperature_sharpens() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let cfg = SamplerConfig {
            temperature: 0.9,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 42,
        };
        let (mut a, mut b) = (Sampler::new(cfg), Sampler::new(cfg));
        let sa: Vec<u32> = (0..100).map(|_| a.sample(&logits)).collect();
        let sb: Vec<u32> = (0..100).map(|_| b.sample(&logits)).collect();
        assert_eq!(sa, sb);
        let cold = counts(
            SamplerConfig {
                temperature: 0.01,
                ..cfg
            },
            &logits,
            300,
        );
        let top: usize = (0..50).filter(|i| i % 7 == 6).map(|i| cold[i]).sum();
        assert_eq!(top, 300);
    }

    #[test]
    fn validate_names_the_bad_setting() {
        let bad = SamplerConfig {
            top_p: 0.0,
            ..SamplerConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("top-p"));
        let bad = SamplerConfig {
            min_p: 2.0,
            ..SamplerConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("min-p"));
        assert!(SamplerConfig::default().validate().is_ok());
    }
}
