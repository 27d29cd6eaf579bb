//! Genuine / impostor score statistics with pyeer's `get_eer_stats` semantics (similarity scores,
//! higher = more similar), plus the Fisher discriminant ratio the synthetic-data papers report.
//!
//! Definitions (pyeer 0.5.x):
//! * thresholds = the distinct values of all scores, ascending; at threshold `t`,
//!   `FMR(t) = #(impostor ≥ t) / N_i` and `FNMR(t) = #(genuine < t) / N_g`;
//! * EER: `t2` = first index with `FMR − FNMR ≤ 0`, `t1 = t2 − 1` unless that difference is exactly
//!   0 or `t2 = 0`; the one of `t1`, `t2` with the smaller `FMR + FNMR` (ties → `t1`) gives
//!   `EER = (FMR + FNMR) / 2`, `eer_low/high` = min/max of the two rates and `eer_th`; if the
//!   curves never cross pyeer returns EER = 1 at index 0;
//! * `fmr100`, `fmr1000`, `fmr0` = FNMR at the **first** index minimising `|FMR − op|`
//!   (op = 0.01, 0.001, 0); `fnmr0` = FMR at the **last** index minimising `FNMR`;
//! * `AUC = Σ (FMR[i] − FMR[i+1]) · (TPR[i] + (TPR[i+1] − TPR[i]) / 2)`, `TPR = 1 − FNMR`;
//! * means and population standard deviations as `np.mean` / `np.std`; decidability
//!   `|μG − μI| / sqrt((σG² + σI²) / 2)` (1 when both deviations are 0);
//! * `FDR = (μG − μI)² / (σG² + σI²)`.
//!
//! # Memory at scale
//! A 10 K × 50 synthetic set has ≈ 12 M genuine pairs (and as many sampled impostor pairs). No
//! curve is materialised: both score lists are copied and sorted once (8 bytes per score, so
//! 2 × 12 M × 8 B ≈ 192 MB), and every statistic — EER, operating points and the AUC, whose
//! numpy pairwise-summation order depends only on the number of terms — is accumulated in one
//! sorted merge of the two vectors. Means and deviations are pairwise sums over the caller's
//! slices in their original order, as numpy sums the Python lists. The result is identical to the
//! all-in-memory reference, so no histogram approximation is needed. [`roc_curve`] materialises
//! the curve only when a plot wants it.

use super::numeric::{mean, pairwise_sum_stream, std_population};
use super::{check_finite, MetricsError};

/// pyeer's statistics for one genuine / impostor score set.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreStats {
    /// Equal error rate.
    pub eer: f64,
    /// Lower end of the EER interval.
    pub eer_low: f64,
    /// Upper end of the EER interval.
    pub eer_high: f64,
    /// Threshold at which the EER was read.
    pub eer_th: f64,
    /// FNMR at FMR ≈ 1 % (pyeer `fmr100`).
    pub fmr100: f64,
    /// Threshold of `fmr100`.
    pub fmr100_th: f64,
    /// FNMR at FMR ≈ 0.1 % (pyeer `fmr1000`).
    pub fmr1000: f64,
    /// Threshold of `fmr1000`.
    pub fmr1000_th: f64,
    /// ZeroFMR: FNMR at the first threshold with the smallest FMR.
    pub fmr0: f64,
    /// Threshold of `fmr0`.
    pub fmr0_th: f64,
    /// ZeroFNMR: FMR at the last threshold with the smallest FNMR.
    pub fnmr0: f64,
    /// Threshold of `fnmr0`.
    pub fnmr0_th: f64,
    /// Area under the ROC curve (trapezoids between consecutive thresholds).
    pub auc: f64,
    /// Mean genuine score.
    pub gmean: f64,
    /// Population std of the genuine scores.
    pub gstd: f64,
    /// Mean impostor score.
    pub imean: f64,
    /// Population std of the impostor scores.
    pub istd: f64,
    /// Decidability d'.
    pub decidability: f64,
    /// Fisher discriminant ratio `(μG − μI)² / (σG² + σI²)`.
    pub fdr: f64,
    /// Number of distinct score values (= thresholds).
    pub n_thresholds: usize,
    /// Number of genuine scores.
    pub n_genuine: usize,
    /// Number of impostor scores.
    pub n_impostor: usize,
}

/// The FMR / FNMR curve over all distinct thresholds (for plots).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RocCurve {
    /// Distinct score values, ascending.
    pub thresholds: Vec<f64>,
    /// `#(impostor ≥ t) / N_i` per threshold.
    pub fmr: Vec<f64>,
    /// `#(genuine < t) / N_g` per threshold.
    pub fnmr: Vec<f64>,
}

/// One point of the merged sweep: threshold, FMR, FNMR.
#[derive(Clone, Copy, Debug)]
struct Point {
    thr: f64,
    fmr: f64,
    fnmr: f64,
}

/// Iterates the distinct thresholds of two sorted score lists with their error rates.
struct Sweep<'a> {
    genuine: &'a [f64],
    impostor: &'a [f64],
    g: usize,
    i: usize,
}

impl<'a> Sweep<'a> {
    fn new(genuine: &'a [f64], impostor: &'a [f64]) -> Self {
        Self { genuine, impostor, g: 0, i: 0 }
    }
}

impl Iterator for Sweep<'_> {
    type Item = Point;

    fn next(&mut self) -> Option<Point> {
        let t = match (self.genuine.get(self.g), self.impostor.get(self.i)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => return None,
        };
        let n_g = self.genuine.len() as f64;
        let n_i = self.impostor.len() as f64;
        let point = Point { thr: t, fmr: (self.impostor.len() - self.i) as f64 / n_i, fnmr: self.g as f64 / n_g };
        while self.g < self.genuine.len() && self.genuine[self.g] == t {
            self.g += 1;
        }
        while self.i < self.impostor.len() && self.impostor[self.i] == t {
            self.i += 1;
        }
        Some(point)
    }
}

fn sorted_copy(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn validate(genuine: &[f64], impostor: &[f64]) -> Result<(), MetricsError> {
    if genuine.is_empty() {
        return Err(MetricsError::Empty { what: "genuine scores" });
    }
    if impostor.is_empty() {
        return Err(MetricsError::Empty { what: "impostor scores" });
    }
    check_finite("genuine scores", genuine)?;
    check_finite("impostor scores", impostor)
}

/// The full FMR / FNMR curve (pyeer `calculate_roc`), for plotting DET / ROC curves.
pub fn roc_curve(genuine: &[f64], impostor: &[f64]) -> Result<RocCurve, MetricsError> {
    validate(genuine, impostor)?;
    let (g, i) = (sorted_copy(genuine), sorted_copy(impostor));
    let mut curve = RocCurve::default();
    for p in Sweep::new(&g, &i) {
        curve.thresholds.push(p.thr);
        curve.fmr.push(p.fmr);
        curve.fnmr.push(p.fnmr);
    }
    Ok(curve)
}

/// Tracks the first index minimising `|FMR − op|`.
struct FmrOp {
    op: f64,
    best: Option<(f64, Point)>,
}

impl FmrOp {
    fn new(op: f64) -> Self {
        Self { op, best: None }
    }

    fn push(&mut self, p: Point) {
        let d = (p.fmr - self.op).abs();
        if self.best.is_none_or(|(b, _)| d < b) {
            self.best = Some((d, p));
        }
    }
}

/// Running state of the statistics read off the sweep.
struct Tracker {
    /// FMR operating points 0.01, 0.001 and 0.
    ops: [FmrOp; 3],
    /// Last point minimising |FNMR|.
    fnmr0: Option<Point>,
    /// Previous point.
    prev: Option<Point>,
    /// The EER candidates `(t1, t2)` once FMR − FNMR first drops to ≤ 0.
    eer_pair: Option<(Point, Point)>,
}

impl Tracker {
    fn new() -> Self {
        Self { ops: [FmrOp::new(0.01), FmrOp::new(0.001), FmrOp::new(0.0)], fnmr0: None, prev: None, eer_pair: None }
    }

    fn visit(&mut self, p: Point) {
        for op in self.ops.iter_mut() {
            op.push(p);
        }
        if self.fnmr0.is_none_or(|b| p.fnmr.abs() <= b.fnmr.abs()) {
            self.fnmr0 = Some(p);
        }
        if self.eer_pair.is_none() && p.fmr - p.fnmr <= 0.0 {
            let t1 = match self.prev {
                Some(q) if p.fmr - p.fnmr != 0.0 => q,
                _ => p,
            };
            self.eer_pair = Some((t1, p));
        }
        self.prev = Some(p);
    }
}

/// pyeer `get_eer_stats(genuine, impostor)` for similarity scores, plus FDR.
pub fn score_stats(genuine: &[f64], impostor: &[f64]) -> Result<ScoreStats, MetricsError> {
    validate(genuine, impostor)?;
    let (g, i) = (sorted_copy(genuine), sorted_copy(impostor));
    let n_thresholds = Sweep::new(&g, &i).count();

    let mut tracker = Tracker::new();
    let mut sweep = Sweep::new(&g, &i);
    let mut last = sweep.next();
    if let Some(p) = last {
        tracker.visit(p);
    }
    // AUC terms of consecutive points, summed in numpy's pairwise order while the same sweep
    // feeds the other statistics.
    let mut terms = std::iter::from_fn(|| {
        let a = last?;
        let b = sweep.next()?;
        tracker.visit(b);
        last = Some(b);
        let (y1, y2) = (1.0 - a.fnmr, 1.0 - b.fnmr);
        Some((a.fmr - b.fmr) * (y1 + (y2 - y1) / 2.0))
    });
    let auc = pairwise_sum_stream(&mut terms, n_thresholds.saturating_sub(1));
    let Tracker { ops, fnmr0, eer_pair, .. } = tracker;

    let first_point = Sweep::new(&g, &i).next().ok_or(MetricsError::Empty { what: "scores" })?;
    let (eer_low, eer_high, eer, eer_th) = match eer_pair {
        Some((t1, t2)) => {
            if t1.fmr + t1.fnmr <= t2.fmr + t2.fnmr {
                (t1.fnmr, t1.fmr, (t1.fnmr + t1.fmr) / 2.0, t1.thr)
            } else {
                (t2.fmr, t2.fnmr, (t2.fnmr + t2.fmr) / 2.0, t2.thr)
            }
        }
        None => (1.0, 1.0, 1.0, first_point.thr),
    };
    let op = |k: usize| ops[k].best.map_or((f64::NAN, f64::NAN), |(_, p)| (p.fnmr, p.thr));
    let (fmr100, fmr100_th) = op(0);
    let (fmr1000, fmr1000_th) = op(1);
    let (fmr0, fmr0_th) = op(2);
    let (fnmr0, fnmr0_th) = fnmr0.map_or((f64::NAN, f64::NAN), |p| (p.fmr, p.thr));

    let (gmean, gstd) = (mean(genuine), std_population(genuine));
    let (imean, istd) = (mean(impostor), std_population(impostor));
    let decidability = if gstd == 0.0 && istd == 0.0 { 1.0 } else { (gmean - imean).abs() / (0.5 * (gstd * gstd + istd * istd)).sqrt() };
    let fdr = (gmean - imean) * (gmean - imean) / (gstd * gstd + istd * istd);
    Ok(ScoreStats {
        eer,
        eer_low,
        eer_high,
        eer_th,
        fmr100,
        fmr100_th,
        fmr1000,
        fmr1000_th,
        fmr0,
        fmr0_th,
        fnmr0,
        fnmr0_th,
        auc,
        gmean,
        gstd,
        imean,
        istd,
        decidability,
        fdr,
        n_thresholds,
        n_genuine: genuine.len(),
        n_impostor: impostor.len(),
    })
}

/// All within-identity pairs `(a, b)`, `a < b`, of items labelled by `identities` (n(n−1)/2 per
/// identity of n items), in ascending `(a, b)` order. Items of one identity need not be adjacent.
pub fn genuine_pairs(identities: &[u32]) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..identities.len()).collect();
    order.sort_by_key(|&k| (identities[k], k));
    let mut pairs = Vec::new();
    for group in order.chunk_by(|&a, &b| identities[a] == identities[b]) {
        for (x, &a) in group.iter().enumerate() {
            for &b in &group[x + 1..] {
                pairs.push((a, b));
            }
        }
    }
    pairs.sort_unstable();
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_counts_strictly_below_and_at_or_above() {
        let g = [0.5, 0.7, 0.7];
        let i = [0.1, 0.5];
        let pts: Vec<Point> = Sweep::new(&g, &i).collect();
        let thr: Vec<f64> = pts.iter().map(|p| p.thr).collect();
        assert_eq!(thr, vec![0.1, 0.5, 0.7]);
        // t = 0.5: impostor >= 0.5 → 1 of 2; genuine < 0.5 → 0 of 3.
        assert_eq!(pts[1].fmr, 0.5);
        assert_eq!(pts[1].fnmr, 0.0);
        assert_eq!(pts[2].fnmr, 1.0 / 3.0);
        assert_eq!(pts[2].fmr, 0.0);
    }

    #[test]
    fn single_value_sets_do_not_panic() {
        let s = score_stats(&[1.0], &[1.0]).unwrap();
        assert_eq!(s.n_thresholds, 1);
        assert_eq!(s.auc, 0.0);
        assert!(score_stats(&[], &[1.0]).is_err());
        assert!(score_stats(&[f64::NAN], &[1.0]).is_err());
    }
}
