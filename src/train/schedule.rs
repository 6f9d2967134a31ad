//! Learning-rate schedules with linear warmup, as Hugging Face's
//! `get_{constant,linear,cosine}_schedule_with_warmup` define them: the multiplier for
//! optimizer step `s` (0-based) is `s / warmup` during warmup, then 1 (constant), a linear
//! decay to 0 at `total`, or a half cosine to 0 at `total`.

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cosine" => Ok(Schedule::Cosine),
            "linear" => Ok(Schedule::Linear),
            "constant" => Ok(Schedule::Constant),
            other => Err(Error::InvalidArgument(format!(
                "--schedule {other:?}: expected cosine, linear or constant"
            ))),
        }
    }

    /// Learning rate of step `step` (0-based) of `total`, peaking at `lr` after `warmup`.
    pub fn lr(self, lr: f32, step: usize, warmup: usize, total: usize) -> f32 {
        if step < warmup {
            return lr * step as f32 / warmup.max(1) as f32;
        }
        let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
        let mult = match self {
            Schedule::Constant => 1.0,
            Schedule::Linear => (total.saturating_sub(step) as f64
                / (total.saturating_sub(warmup)).max(1) as f64)
                .max(0.0),
            Schedule::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
        };
        (lr as f64 * mult) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_hugging_face() {
        // warmup 2 of 10 steps at lr 1.
        let lrs = |s: Schedule| (0..10).map(|i| s.lr(1.0, i, 2, 10)).collect::<Vec<_>>();
        assert_eq!(
            lrs(Schedule::Constant),
            vec![0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
        );
        let lin = lrs(Schedule::Linear);
        for (i, want) in [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
            .iter()
            .enumerate()
        {
            assert!((lin[i] - want).abs() < 1e-6, "linear {i}");
        }
        let cos = lrs(Schedule::Cosine);
        for (i, &c) in cos.iter().enumerate().skip(2) {
            let want = 0.5 * (1.0 + (std::f64::consts::PI * (i - 2) as f64 / 8.0).cos());
            assert!((c as f64 - want).abs() < 1e-6, "cosine {i}");
        }
        assert_eq!(Schedule::Cosine.lr(2.0, 0, 0, 5), 2.0);
        assert!(Schedule::parse("step").is_err());
    }
}
