//! Bit-stable random draws for the toy world.
//!
//! [`KeyedRng::normal`] uses the standard library's `ln` / `sin_cos`, whose last bits may differ
//! between platforms' math libraries; the toy world promises identical bytes everywhere, so its
//! Gaussian draws go through `libm` (a pure-Rust port of musl's libm) instead.

use crate::rng::KeyedRng;

/// Uniform f32 in `[lo, hi)`.
#[inline]
pub fn uniform(rng: &mut KeyedRng, lo: f32, hi: f32) -> f32 {
    (lo as f64 + (hi as f64 - lo as f64) * rng.uniform()) as f32
}

/// Uniform f32 in `[-a, a)`.
#[inline]
pub fn symmetric(rng: &mut KeyedRng, a: f32) -> f32 {
    uniform(rng, -a, a)
}

/// Standard normal draw (Box–Muller with `libm`, one value per call).
pub fn normal(rng: &mut KeyedRng) -> f32 {
    let u1 = 1.0 - rng.uniform();
    let u2 = rng.uniform();
    (libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(std::f64::consts::TAU * u2)) as f32
}

/// Normal draw with mean 0 and deviation `sd`, clamped to `±3 sd`.
pub fn clamped_normal(rng: &mut KeyedRng, sd: f32) -> f32 {
    (normal(rng) * sd).clamp(-3.0 * sd, 3.0 * sd)
}

/// Index drawn with probability proportional to `weights`.
pub fn weighted(rng: &mut KeyedRng, weights: &[f32]) -> usize {
    let total: f32 = weights.iter().sum();
    let mut x = uniform(rng, 0.0, total);
    for (k, &w) in weights.iter().enumerate() {
        if x < w {
            return k;
        }
        x -= w;
    }
    weights.len().saturating_sub(1)
}
