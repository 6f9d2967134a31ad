//! ARM64 kernels: NEON, `sdot` (dotprod) and `smmla` (i8mm). All `unsafe` of the ARM64
//! vector code is in this file.

use super::{Kernels, Level};

/// Whether the CPU has the features of `level`.
pub(super) fn supported(level: Level) -> bool {
    match level {
        Level::Neon => std::arch::is_aarch64_feature_detected!("neon"),
        Level::NeonDotprod => {
            supported(Level::Neon) && std::arch::is_aarch64_feature_detected!("dotprod")
        }
        Level::NeonI8mm => {
            supported(Level::NeonDotprod) && std::arch::is_aarch64_feature_detected!("i8mm")
        }
        _ => false,
    }
}

/// The table of `level`.
pub(super) fn kernels(level: Level) -> Option<Kernels> {
    if !supported(level) {
        return None;
    }
    None
}
