//! Instruction-set levels: what this CPU supports, which level runs (the strongest one
//! `POCKETLORA_DISABLE` leaves on), and the one per-architecture hint the portable code
//! uses ([`prefetch`]).

#[cfg(target_arch = "aarch64")]
use super::aarch64;
#[cfg(target_arch = "x86_64")]
use super::x86;

/// A vector instruction-set level of the f32 kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    Scalar,
    /// x86-64 AVX2 + FMA (int8: `vpmaddubsw`/`vpmaddwd`).
    Avx2,
    /// x86-64 AVX-512 F/BW/VL/DQ (int8 as AVX2 unless VNNI is there).
    Avx512,
    /// AVX-512 with VNNI `vpdpbusd`.
    Avx512Vnni,
    /// ARM64 NEON (int8: `smull`/`sadalp`).
    Neon,
    /// NEON with the dot-product extension `sdot`.
    NeonDotprod,
    /// NEON with `sdot` and the int8 matrix multiply `smmla`.
    NeonI8mm,
}

impl Level {
    /// Every level, weakest first.
    pub const ALL: [Level; 7] = [
        Level::Scalar,
        Level::Avx2,
        Level::Avx512,
        Level::Avx512Vnni,
        Level::Neon,
        Level::NeonDotprod,
        Level::NeonI8mm,
    ];

    /// The feature names this level uses (as `POCKETLORA_DISABLE` spells them).
    pub fn features(self) -> &'static [&'static str] {
        match self {
            Level::Scalar => &[],
            Level::Avx2 => &["avx2", "fma"],
            Level::Avx512 => &["avx2", "fma", "avx512"],
            Level::Avx512Vnni => &["avx2", "fma", "avx512", "vnni"],
            Level::Neon => &["neon"],
            Level::NeonDotprod => &["neon", "dotprod"],
            Level::NeonI8mm => &["neon", "dotprod", "i8mm"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Avx512Vnni => "avx512-vnni",
            Level::Neon => "neon",
            Level::NeonDotprod => "neon-dotprod",
            Level::NeonI8mm => "neon-i8mm",
        }
    }

    /// Whether this CPU has every feature of the level (ignoring `POCKETLORA_DISABLE`).
    pub fn supported(self) -> bool {
        match self {
            Level::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 | Level::Avx512 | Level::Avx512Vnni => x86::supported(self),
            #[cfg(target_arch = "aarch64")]
            Level::Neon | Level::NeonDotprod | Level::NeonI8mm => aarch64::supported(self),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The levels this CPU supports, weakest first (for tests and `bench`).
    pub fn available() -> Vec<Level> {
        Level::ALL.into_iter().filter(|l| l.supported()).collect()
    }
}

/// Features switched off by `POCKETLORA_DISABLE` (lower-case names; `all` or `simd` means
/// every one).
fn disabled() -> Vec<String> {
    std::env::var("POCKETLORA_DISABLE")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The strongest supported level none of whose features is disabled.
pub(super) fn detect() -> Level {
    let off = disabled();
    if off.iter().any(|s| s == "all" || s == "simd") {
        return Level::Scalar;
    }
    Level::ALL
        .into_iter()
        .rev()
        .find(|l| l.supported() && !l.features().iter().any(|f| off.iter().any(|o| o == f)))
        .unwrap_or(Level::Scalar)
}

/// Hints that `bytes[at]` will be read soon (nothing past the end, or without a hint
/// instruction).
#[inline(always)]
pub(crate) fn prefetch(bytes: &[u8], at: usize) {
    if let Some(b) = bytes.get(at) {
        #[cfg(target_arch = "x86_64")]
        x86::prefetch(b);
        #[cfg(target_arch = "aarch64")]
        aarch64::prefetch(b);
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let _ = b;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{kernels, Kernels};
    use super::*;

    /// Which paths a run exercises, pinned by CI (e.g. under qemu `-cpu max`):
    /// `POCKETLORA_EXPECT_LEVELS` names the supported levels (weakest first, comma-separated)
    /// and `POCKETLORA_EXPECT_LEVEL` the one [`kernels`] picks after `POCKETLORA_DISABLE`.
    #[test]
    fn detection_finds_the_levels_the_environment_expects() {
        let names: Vec<&str> = Level::available().iter().map(|l| l.name()).collect();
        let used = kernels().level;
        eprintln!("simd levels available: {names:?}; in use: {}", used.name());
        assert_eq!(names.first(), Some(&"scalar"));
        assert!(Level::available().contains(&used));
        for level in Level::available() {
            assert_eq!(Kernels::for_level(level).map(|k| k.level), Some(level));
        }
        if let Ok(want) = std::env::var("POCKETLORA_EXPECT_LEVELS") {
            assert_eq!(names.join(","), want, "POCKETLORA_EXPECT_LEVELS");
        }
        if let Ok(want) = std::env::var("POCKETLORA_EXPECT_LEVEL") {
            assert_eq!(used.name(), want, "POCKETLORA_EXPECT_LEVEL");
        }
    }
}
