//! Timing helper shared by the model benchmarks (not an example itself).

use std::time::Instant;

/// Runs `f` once to warm up, then `iters` times; the median wall time in milliseconds and the
/// last result.
pub fn median_ms<T, E>(iters: usize, mut f: impl FnMut() -> Result<T, E>) -> Result<(f64, T), E> {
    let mut out = f()?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        out = f()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], out))
}
