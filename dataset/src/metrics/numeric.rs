//! The numpy primitives whose exact floating-point results the reference metrics depend on.
//!
//! `np.arange` with a float step, numpy's pairwise summation (used by `np.sum`, `np.mean` and
//! `np.std` on contiguous float64 data) and the two-pass population standard deviation. A plain
//! left-to-right sum differs from numpy's in the last bits; reproducing the summation order lets
//! the metric tests compare means and standard deviations without a tolerance.

/// Values of `np.arange(start, stop, step)` for float64 arguments.
///
/// numpy sizes the array as `ceil((stop - start) / step)` and fills it with
/// `start + i * delta`, where `delta = (start + step) - start`; this reproduces both steps, so
/// `arange(0.0, 4.0, 0.01)[135]` is the same double as numpy's `1.35000000000000008882`.
pub fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let delta = (start + step) - start;
    let mut out = Vec::with_capacity(len);
    out.push(start);
    if len > 1 {
        out.push(start + delta);
    }
    for i in 2..len {
        out.push(start + i as f64 * delta);
    }
    out
}

/// numpy's pairwise summation (`pairwise_sum_DOUBLE`): 8-way unrolled partial sums for blocks of
/// at most 128 values, recursive halving (rounded to a multiple of 8) above that.
pub fn pairwise_sum(values: &[f64]) -> f64 {
    pairwise_sum_in(values)
}

/// numpy's pairwise summation in the arithmetic of `T` (`f64` for `pairwise_sum_DOUBLE`, `f32`
/// for `pairwise_sum_FLOAT`, `numpy/_core/src/umath/loops_utils.h.src`): the same tree of
/// additions for either width, so each matches numpy bit for bit.
pub(crate) fn pairwise_sum_in<T>(values: &[T]) -> T
where
    T: Copy + Default + std::ops::Add<Output = T> + std::ops::AddAssign,
{
    let n = values.len();
    if n < 8 {
        let mut res = T::default();
        for &v in values {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [T::default(); 8];
        r.copy_from_slice(&values[..8]);
        let whole = n - n % 8;
        let mut i = 8;
        while i < whole {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += values[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &values[whole..] {
            res += v;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        pairwise_sum_in(&values[..half]) + pairwise_sum_in(&values[half..])
    }
}

/// numpy's pairwise summation over the next `n` values of a stream, consuming them in order.
///
/// The summation tree depends only on `n`, and numpy visits the values strictly left to right, so
/// a stream of known length is summed bit-identically to [`pairwise_sum`] on the materialised
/// slice without storing it. A stream shorter than `n` contributes zeros for the missing values.
pub fn pairwise_sum_stream(values: &mut impl Iterator<Item = f64>, n: usize) -> f64 {
    let mut next = || values.next().unwrap_or(0.0);
    if n < 8 {
        let mut res = 0.0;
        for _ in 0..n {
            res += next();
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        for acc in r.iter_mut() {
            *acc = next();
        }
        let whole = n - n % 8;
        let mut i = 8;
        while i < whole {
            for acc in r.iter_mut() {
                *acc += next();
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for _ in whole..n {
            res += next();
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        let left = pairwise_sum_stream(values, half);
        left + pairwise_sum_stream(values, n - half)
    }
}

/// `np.mean` of float64 values (pairwise sum divided by the count); NaN for an empty slice.
pub fn mean(values: &[f64]) -> f64 {
    pairwise_sum(values) / values.len() as f64
}

/// `np.std` with `ddof = 0`: `sqrt(mean((x - mean(x))²))`, both means pairwise-summed.
pub fn std_population(values: &[f64]) -> f64 {
    let m = mean(values);
    let mut squares = values.iter().map(|&v| (v - m) * (v - m));
    (pairwise_sum_stream(&mut squares, values.len()) / values.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arange_matches_numpy_lengths_and_values() {
        let t = arange(0.0, 4.0, 0.01);
        assert_eq!(t.len(), 400);
        assert_eq!(t[135], 135.0 * 0.01);
        let t = arange(0.0, 4.0, 0.001);
        assert_eq!(t.len(), 4000);
        assert_eq!(t[3999], 3999.0 * 0.001);
        assert_eq!(arange(1.0, 2.0, 0.5), vec![1.0, 1.5]);
        assert!(arange(1.0, 1.0, 0.5).is_empty());
    }

    #[test]
    fn pairwise_sum_is_exact_on_integers_and_blocks_large_inputs() {
        for n in [0usize, 1, 7, 8, 9, 127, 128, 129, 1000, 4097] {
            let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let expect = (n * n.saturating_sub(1) / 2) as f64;
            assert_eq!(pairwise_sum(&v), expect, "n = {n}");
            let w: Vec<f64> = (0..n).map(|i| 1.0 / (i as f64 + 1.0)).collect();
            assert_eq!(pairwise_sum(&w).to_bits(), pairwise_sum_stream(&mut w.iter().copied(), n).to_bits());
        }
    }

    #[test]
    fn std_is_population_std() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!((std_population(&v) - 1.25f64.sqrt()).abs() < 1e-15);
        assert_eq!(mean(&v), 2.5);
    }
}
