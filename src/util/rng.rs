//! The crate's pseudo-random generators, each written once. Small, seeded and identical on
//! every platform, so a run is reproducible from its seed without a dependency.
//!
//! Their sequences are part of the results: LoRA initialisation, the data and epoch
//! shuffles, dropout masks and sampling all draw from [`SplitMix64`] (or its mixing
//! function), so trained bits depend on every output. Never change what a generator returns
//! (the tests below pin the first outputs).
//!
//! Two generators, genuinely different (different state update and output), both kept:
//! - [`SplitMix64`] (Steele, Lea & Flood): the engine's generator. [`splitmix64_mix`] is its
//!   output function alone, a stateless hash (dropout draws one per key and index).
//! - [`XorShift64`] (Marsaglia's xorshift64, shifts 13, 7, 17, no output multiply): test
//!   and benchmark data (random weights and inputs).

/// 2⁶⁴ / φ, odd: SplitMix64's increment, also used to spread seeds and indices.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function: a bijective mix of the 64 bits of `z`.
#[inline]
pub fn splitmix64_mix(z: u64) -> u64 {
    let mut z = z;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1) from the top 53 bits of `bits`.
#[inline]
pub fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniform in [0, 1) from the top 24 bits of `bits`.
#[inline]
pub fn unit_f32(bits: u64) -> f32 {
    (bits >> 40) as f32 / (1u64 << 24) as f32
}

/// SplitMix64: the state advances by [`GOLDEN_GAMMA`] and each output is
/// [`splitmix64_mix`] of the new state. Every seed (zero included) is valid.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        splitmix64_mix(self.0)
    }

    /// Uniform in [0, 1) ([`unit_f64`]).
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }
}

/// Marsaglia's xorshift64 (shifts 13, 7, 17); outputs are the raw state, not multiplied
/// (so not xorshift64*). Seeded with `seed · GOLDEN_GAMMA | 1`, never zero.
#[derive(Clone, Debug)]
pub struct XorShift64(u64);

impl XorShift64 {
    pub fn new(seed: u64) -> XorShift64 {
        XorShift64(seed.wrapping_mul(GOLDEN_GAMMA) | 1)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut s = self.0;
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        self.0 = s;
        s
    }

    /// Uniform in [0, 1) ([`unit_f64`]).
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    /// Uniform in [0, 1) ([`unit_f32`]).
    #[inline]
    pub fn next_f32(&mut self) -> f32 {
        unit_f32(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generators_keep_their_sequences() {
        // The first outputs of the copies these replaced (infer::sampler, the test data,
        // the dropout mask), computed before they were moved here.
        let mut r = SplitMix64::new(42);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            [
                0xbdd7_3226_2feb_6e95,
                0x28ef_e333_b266_f103,
                0x4752_6757_130f_9f52
            ]
        );
        let mut x = XorShift64::new(7);
        let got: Vec<u64> = (0..3).map(|_| x.next_u64()).collect();
        assert_eq!(
            got,
            [
                0xf63f_752d_d400_329a,
                0xecce_e9dd_2109_d47f,
                0x7f59_6005_939f_3817
            ]
        );
        let key = 0x1234_5678_9abc_def0u64 ^ 5u64.wrapping_mul(GOLDEN_GAMMA);
        assert_eq!(splitmix64_mix(key), 0xe87d_554b_00ee_2983);
    }

    #[test]
    fn unit_floats_are_in_the_half_open_interval() {
        assert_eq!(unit_f64(0), 0.0);
        assert!(unit_f64(u64::MAX) < 1.0);
        assert_eq!(unit_f32(0), 0.0);
        assert!(unit_f32(u64::MAX) < 1.0);
        let mut r = SplitMix64::new(0);
        let mut x = XorShift64::new(0);
        for _ in 0..1000 {
            assert!((0.0..1.0).contains(&r.next_f64()));
            assert!((0.0..1.0).contains(&x.next_f64()));
            assert!((0.0..1.0).contains(&x.next_f32()));
        }
    }
}
