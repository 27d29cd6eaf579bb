//! Counter-based random numbers keyed by tuples such as (pipeline seed, identity, sample, step).
//!
//! Every random draw in idflow derives from such a key, so a value never depends on batch size,
//! worker count or the order in which work is scheduled. `rand`'s `StdRng` does not promise a
//! stable stream across releases, and none of the counter-based crates offers keying by an
//! arbitrary tuple plus a stable normal sampler, so this small module is written here: keys are
//! folded with SplitMix64's finaliser and the stream is SplitMix64 itself (passes BigCrush, one
//! multiply-xorshift chain per draw).

/// SplitMix64's finalising mix: a bijection on u64 with full avalanche.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Folds a tuple of integers into one 64-bit seed; order matters, `[a, b] != [b, a]`.
pub fn derive_seed(parts: &[u64]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64 ^ (parts.len() as u64);
    for &p in parts {
        h = mix64(h ^ mix64(p.wrapping_add(0x632b_e59b_d9b4_e019)));
    }
    h
}

/// A deterministic random stream (SplitMix64) started from a derived seed.
#[derive(Clone, Debug)]
pub struct KeyedRng {
    state: u64,
    spare_normal: Option<f64>,
}

impl KeyedRng {
    /// A stream for the key `parts` (see [`derive_seed`]).
    pub fn new(parts: &[u64]) -> Self {
        Self::from_seed(derive_seed(parts))
    }

    /// A stream started from an already derived seed.
    pub fn from_seed(seed: u64) -> Self {
        Self { state: seed, spare_normal: None }
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    #[inline]
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n); `n` must be > 0.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift; the tiny bias (< n / 2^64) is irrelevant here.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `p`.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal draw (Box–Muller, both values used).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare_normal = Some(r * s);
        r * c
    }

    /// Fills `out` with standard normal f32 draws.
    pub fn fill_normal_f32(&mut self, out: &mut [f32]) {
        for v in out {
            *v = self.normal() as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_order_sensitive_and_stable() {
        assert_ne!(derive_seed(&[1, 2]), derive_seed(&[2, 1]));
        assert_ne!(derive_seed(&[1]), derive_seed(&[1, 0]));
        let a: Vec<u64> = (0..4).map(|_| 0).scan(KeyedRng::new(&[7, 3]), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..4).map(|_| 0).scan(KeyedRng::new(&[7, 3]), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn normal_moments_are_standard() {
        let mut r = KeyedRng::new(&[42]);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = KeyedRng::new(&[1]);
        let mut seen = [0u32; 5];
        for _ in 0..10_000 {
            seen[r.below(5) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 1800));
    }
}
