//! The face-verification protocol of insightface / ElasticFace `verification.evaluate`.
//!
//! Input: 2N embedding rows, pair `i` being rows `2i` and `2i + 1`, already flip-summed and
//! L2-normalised by the caller ([`l2_normalize_rows`] does the latter), and N `issame` labels.
//!
//! * Distance: squared L2, `Σ (e1 − e2)²`, computed in f64 with numpy's summation order.
//! * Folds: contiguous, as scikit-learn's `KFold(n_splits, shuffle=False)`: the first
//!   `N mod k` folds hold `⌊N/k⌋ + 1` pairs, the others `⌊N/k⌋`.
//! * Accuracy: for every fold, every threshold of `np.arange(0, 4, 0.01)` is scored on the
//!   training pairs with `same = dist < thr` (strict); the **first** best threshold is applied to
//!   the test pairs. Mean and population std over folds.
//! * VAL@FAR = 1e-3: thresholds `np.arange(0, 4, 0.001)`; `far_train(thr)` on the training pairs;
//!   if `max(far_train) ≥ 1e-3` the threshold is scipy's `interp1d(far_train, thresholds,
//!   kind='slinear')(1e-3)` (scipy ≤ 1.8, which tolerates the repeated x values), else 0. With
//!   repeated x the spline picks `j` = the last index with `far_train[j] ≤ 1e-3` (capped so that
//!   `j + 1` exists) and interpolates linearly between `j` and `j + 1`; when both ends have the same
//!   FAR scipy returns NaN, and a NaN threshold accepts no pair — both reproduced here.
//!
//! Counting is done on sorted per-fold distance lists with a moving cut, so the cost is
//! `O(N log N + thresholds)` per fold instead of `O(N × thresholds)`; the counts, hence every
//! ratio, are identical to the reference's.

use super::numeric::{arange, mean, pairwise_sum, std_population};
use super::{check_finite, MetricsError};

/// The FAR target of the VAL@FAR operating point.
pub const FAR_TARGET: f64 = 1e-3;

/// Everything `evaluate` reports for one benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct VerificationReport {
    /// Number of pairs.
    pub n_pairs: usize,
    /// Number of folds.
    pub n_folds: usize,
    /// Test accuracy of each fold at the threshold chosen on its training folds.
    pub accuracy_per_fold: Vec<f64>,
    /// `np.mean(accuracy_per_fold)`.
    pub accuracy_mean: f64,
    /// `np.std(accuracy_per_fold)` (population).
    pub accuracy_std: f64,
    /// Index into [`accuracy_thresholds`] of the threshold chosen for each fold.
    pub best_threshold_index_per_fold: Vec<usize>,
    /// The threshold (squared L2 distance) chosen for each fold.
    pub best_threshold_per_fold: Vec<f64>,
    /// VAL (true accept rate) of each test fold at its FAR = 1e-3 threshold.
    pub val_per_fold: Vec<f64>,
    /// FAR of each test fold at its FAR = 1e-3 threshold.
    pub far_per_fold: Vec<f64>,
    /// The interpolated FAR = 1e-3 threshold of each fold (0 when the training FAR never reaches
    /// 1e-3, NaN where scipy's interpolation degenerates).
    pub val_threshold_per_fold: Vec<f64>,
    /// `np.mean(val_per_fold)`: VAL@FAR=1e-3.
    pub val_mean: f64,
    /// `np.std(val_per_fold)`.
    pub val_std: f64,
    /// `np.mean(far_per_fold)`.
    pub far_mean: f64,
    /// TPR of the test folds at each of the 400 accuracy thresholds, averaged over folds.
    pub tpr_curve: Vec<f64>,
    /// FPR of the test folds at each of the 400 accuracy thresholds, averaged over folds.
    pub fpr_curve: Vec<f64>,
}

/// The accuracy threshold grid, `np.arange(0, 4, 0.01)` (400 values).
pub fn accuracy_thresholds() -> Vec<f64> {
    arange(0.0, 4.0, 0.01)
}

/// The VAL threshold grid, `np.arange(0, 4, 0.001)` (4000 values).
pub fn val_thresholds() -> Vec<f64> {
    arange(0.0, 4.0, 0.001)
}

/// L2-normalises each row of a row-major `[rows, dim]` buffer in place (norm accumulated in f64);
/// an all-zero row is left as is, like scikit-learn's `normalize`.
pub fn l2_normalize_rows(rows: &mut [f32], dim: usize) -> Result<(), MetricsError> {
    if dim == 0 || !rows.len().is_multiple_of(dim) {
        return Err(MetricsError::RaggedRows { what: "embeddings", len: rows.len(), dim });
    }
    for row in rows.chunks_exact_mut(dim) {
        let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        if norm > 0.0 {
            for v in row.iter_mut() {
                *v = (*v as f64 / norm) as f32;
            }
        }
    }
    Ok(())
}

/// Squared L2 distance of each consecutive row pair `(2i, 2i + 1)`, in f64, summed in numpy's
/// pairwise order (`np.sum(np.square(e1 - e2), 1)`).
pub fn pair_distances<T: Copy + Into<f64>>(embeddings: &[T], dim: usize) -> Result<Vec<f64>, MetricsError> {
    if dim == 0 || !embeddings.len().is_multiple_of(2 * dim) {
        return Err(MetricsError::RaggedRows { what: "embeddings (two rows per pair)", len: embeddings.len(), dim });
    }
    check_finite("embeddings", embeddings)?;
    let mut squares = vec![0.0f64; dim];
    Ok(embeddings
        .chunks_exact(2 * dim)
        .map(|pair| {
            let (a, b) = pair.split_at(dim);
            for ((s, &x), &y) in squares.iter_mut().zip(a).zip(b) {
                let d = x.into() - y.into();
                *s = d * d;
            }
            pairwise_sum(&squares)
        })
        .collect())
}

/// Runs the protocol on f32 embeddings (upcast to f64, like the reference's numpy arrays).
///
/// `embeddings` is row-major `[2N, dim]`, `issame` has N entries, `n_folds` is 10 for the standard
/// protocol.
pub fn evaluate(embeddings: &[f32], dim: usize, issame: &[bool], n_folds: usize) -> Result<VerificationReport, MetricsError> {
    let dist = pair_distances(embeddings, dim)?;
    evaluate_distances(&dist, issame, n_folds)
}

/// [`evaluate`] for f64 embeddings.
pub fn evaluate_f64(embeddings: &[f64], dim: usize, issame: &[bool], n_folds: usize) -> Result<VerificationReport, MetricsError> {
    let dist = pair_distances(embeddings, dim)?;
    evaluate_distances(&dist, issame, n_folds)
}

/// The contiguous `KFold(n_splits, shuffle=False)` test ranges over `n` items.
pub fn kfold_ranges(n: usize, n_folds: usize) -> Result<Vec<std::ops::Range<usize>>, MetricsError> {
    if n_folds < 2 || n_folds > n {
        return Err(MetricsError::BadFoldCount { n_pairs: n, n_folds });
    }
    let base = n / n_folds;
    let extra = n % n_folds;
    let mut start = 0;
    Ok((0..n_folds)
        .map(|k| {
            let len = base + usize::from(k < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect())
}

/// Sorted distances of the genuine and impostor pairs of one subset.
struct SortedSplit {
    genuine: Vec<f64>,
    impostor: Vec<f64>,
}

impl SortedSplit {
    fn new(dist: &[f64], issame: &[bool], keep: impl Fn(usize) -> bool) -> Self {
        let mut genuine = Vec::new();
        let mut impostor = Vec::new();
        for (i, (&d, &same)) in dist.iter().zip(issame).enumerate() {
            if keep(i) {
                if same {
                    genuine.push(d);
                } else {
                    impostor.push(d);
                }
            }
        }
        genuine.sort_by(f64::total_cmp);
        impostor.sort_by(f64::total_cmp);
        Self { genuine, impostor }
    }

    fn len(&self) -> usize {
        self.genuine.len() + self.impostor.len()
    }

    /// For ascending `thresholds`, the numbers of genuine and impostor distances `< thr`.
    fn counts_below(&self, thresholds: &[f64]) -> Vec<(usize, usize)> {
        let (mut g, mut i) = (0usize, 0usize);
        thresholds
            .iter()
            .map(|&t| {
                while g < self.genuine.len() && self.genuine[g] < t {
                    g += 1;
                }
                while i < self.impostor.len() && self.impostor[i] < t {
                    i += 1;
                }
                (g, i)
            })
            .collect()
    }

    /// Counts `< thr` for a single threshold (NaN accepts nothing, like `np.less`).
    fn count_below(&self, t: f64) -> (usize, usize) {
        (self.genuine.partition_point(|&d| d < t), self.impostor.partition_point(|&d| d < t))
    }
}

/// Runs the protocol on precomputed squared-L2 pair distances.
pub fn evaluate_distances(dist: &[f64], issame: &[bool], n_folds: usize) -> Result<VerificationReport, MetricsError> {
    if dist.len() != issame.len() {
        return Err(MetricsError::LengthMismatch { what: "issame labels vs embedding pairs", expected: dist.len(), got: issame.len() });
    }
    check_finite("pair distances", dist)?;
    let n = dist.len();
    let folds = kfold_ranges(n, n_folds)?;
    let acc_thr = accuracy_thresholds();
    let val_thr = val_thresholds();

    let mut report = VerificationReport {
        n_pairs: n,
        n_folds,
        accuracy_per_fold: Vec::with_capacity(n_folds),
        accuracy_mean: 0.0,
        accuracy_std: 0.0,
        best_threshold_index_per_fold: Vec::with_capacity(n_folds),
        best_threshold_per_fold: Vec::with_capacity(n_folds),
        val_per_fold: Vec::with_capacity(n_folds),
        far_per_fold: Vec::with_capacity(n_folds),
        val_threshold_per_fold: Vec::with_capacity(n_folds),
        val_mean: 0.0,
        val_std: 0.0,
        far_mean: 0.0,
        tpr_curve: vec![0.0; acc_thr.len()],
        fpr_curve: vec![0.0; acc_thr.len()],
    };

    for (fold, range) in folds.iter().enumerate() {
        let train = SortedSplit::new(dist, issame, |i| !range.contains(&i));
        let test = SortedSplit::new(dist, issame, |i| range.contains(&i));

        // Accuracy: first maximum of (tp + tn) on the training pairs.
        let train_counts = train.counts_below(&acc_thr);
        let correct = |(g, i): (usize, usize), s: &SortedSplit| g + (s.impostor.len() - i);
        let mut best = 0usize;
        let mut best_correct = correct(train_counts[0], &train);
        for (t, &c) in train_counts.iter().enumerate().skip(1) {
            let k = correct(c, &train);
            if k > best_correct {
                best = t;
                best_correct = k;
            }
        }
        let test_counts = test.counts_below(&acc_thr);
        for (t, &(g, i)) in test_counts.iter().enumerate() {
            let tpr = if test.genuine.is_empty() { 0.0 } else { g as f64 / test.genuine.len() as f64 };
            let fpr = if test.impostor.is_empty() { 0.0 } else { i as f64 / test.impostor.len() as f64 };
            report.tpr_curve[t] += tpr;
            report.fpr_curve[t] += fpr;
        }
        report.accuracy_per_fold.push(correct(test_counts[best], &test) as f64 / test.len() as f64);
        report.best_threshold_index_per_fold.push(best);
        report.best_threshold_per_fold.push(acc_thr[best]);

        // VAL@FAR: interpolated threshold on the training FAR curve.
        if train.impostor.is_empty() {
            return Err(MetricsError::EmptyClassInFold { fold, part: "train", kind: "impostor" });
        }
        let n_diff = train.impostor.len() as f64;
        let far_train: Vec<f64> = train.counts_below(&val_thr).iter().map(|&(_, i)| i as f64 / n_diff).collect();
        let threshold = far_threshold(&far_train, &val_thr, FAR_TARGET);
        if test.genuine.is_empty() {
            return Err(MetricsError::EmptyClassInFold { fold, part: "test", kind: "genuine" });
        }
        if test.impostor.is_empty() {
            return Err(MetricsError::EmptyClassInFold { fold, part: "test", kind: "impostor" });
        }
        let (ta, fa) = test.count_below(threshold);
        report.val_per_fold.push(ta as f64 / test.genuine.len() as f64);
        report.far_per_fold.push(fa as f64 / test.impostor.len() as f64);
        report.val_threshold_per_fold.push(threshold);
    }

    // np.mean(tprs, 0): rows are added one after another, then divided by the fold count.
    for v in report.tpr_curve.iter_mut().chain(report.fpr_curve.iter_mut()) {
        *v /= n_folds as f64;
    }
    report.accuracy_mean = mean(&report.accuracy_per_fold);
    report.accuracy_std = std_population(&report.accuracy_per_fold);
    report.val_mean = mean(&report.val_per_fold);
    report.val_std = std_population(&report.val_per_fold);
    report.far_mean = mean(&report.far_per_fold);
    Ok(report)
}

/// The threshold where the (non-decreasing) training FAR curve reaches `target`, as scipy 1.8's
/// `interp1d(far, thresholds, kind='slinear')(target)` computes it; 0 when `max(far) < target`.
pub fn far_threshold(far: &[f64], thresholds: &[f64], target: f64) -> f64 {
    let max = far.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if far.len() < 2 || max < target {
        return 0.0;
    }
    // scipy's find_interval: the interval [x_j, x_{j+1}] with j + 1 the first index >= 1 whose
    // x exceeds the target, or the last interval when none does.
    let upper = far.iter().skip(1).position(|&f| f > target).map_or(far.len() - 1, |p| p + 1);
    let j = upper - 1;
    let (x0, x1) = (far[j], far[j + 1]);
    if x1 == x0 {
        return f64::NAN;
    }
    thresholds[j] + (target - x0) * (thresholds[j + 1] - thresholds[j]) / (x1 - x0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kfold_matches_sklearn_sizes() {
        let r = kfold_ranges(23, 10).unwrap();
        let sizes: Vec<usize> = r.iter().map(|r| r.len()).collect();
        assert_eq!(sizes, vec![3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(r[9].end, 23);
        assert!(kfold_ranges(5, 10).is_err());
        assert!(kfold_ranges(5, 1).is_err());
    }

    #[test]
    fn far_threshold_interpolates_after_last_plateau_point() {
        let thr = [0.0, 1.0, 2.0, 3.0];
        let far = [0.0, 0.0, 0.0, 0.5];
        // j = 2 (last <= target), interpolate between thresholds 2 and 3.
        let t = far_threshold(&far, &thr, 1e-3);
        assert!((t - (2.0 + 1e-3 / 0.5)).abs() < 1e-15);
        assert_eq!(far_threshold(&[0.0, 0.0, 0.0, 0.0], &thr, 1e-3), 0.0);
        assert!(far_threshold(&[0.0, 0.0, 1e-3, 1e-3], &thr, 1e-3).is_nan());
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(matches!(evaluate(&[0.0; 10], 3, &[true], 10), Err(MetricsError::RaggedRows { .. })));
        assert!(matches!(evaluate(&[0.0; 12], 3, &[true], 10), Err(MetricsError::LengthMismatch { .. })));
        let mut v = vec![3.0f32, 4.0, 0.0, 0.0];
        l2_normalize_rows(&mut v, 2).unwrap();
        assert_eq!(v, vec![0.6, 0.8, 0.0, 0.0]);
    }
}
