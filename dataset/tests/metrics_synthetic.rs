//! Metric behaviour on synthetic score sets whose answers are known analytically.

use idflow_dataset::metrics::scores::{genuine_pairs, roc_curve, score_stats};
use idflow_dataset::metrics::verification::evaluate_distances;
use idflow_dataset::rng::KeyedRng;

#[test]
fn perfectly_separable_scores_have_zero_eer_and_large_fdr() {
    let mut rng = KeyedRng::new(&[1]);
    let genuine: Vec<f64> = (0..500).map(|_| rng.range(0.7, 0.9)).collect();
    let impostor: Vec<f64> = (0..800).map(|_| rng.range(-0.1, 0.1)).collect();
    let s = score_stats(&genuine, &impostor).unwrap();
    assert_eq!(s.eer, 0.0);
    assert_eq!(s.fmr100, 0.0);
    assert_eq!(s.fmr1000, 0.0);
    assert_eq!(s.fmr0, 0.0);
    assert_eq!(s.fnmr0, 0.0);
    assert!((s.auc - 1.0).abs() < 1e-12, "auc {}", s.auc);
    assert!(s.fdr > 50.0, "fdr {}", s.fdr);
    // The first threshold where FMR and FNMR are both 0 is the lowest genuine score.
    let lowest_genuine = genuine.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(s.eer_th, lowest_genuine);
}

#[test]
fn identical_distributions_have_eer_near_one_half() {
    let mut rng = KeyedRng::new(&[2]);
    let genuine: Vec<f64> = (0..20_000).map(|_| rng.normal()).collect();
    let impostor: Vec<f64> = (0..20_000).map(|_| rng.normal()).collect();
    let s = score_stats(&genuine, &impostor).unwrap();
    assert!((s.eer - 0.5).abs() < 0.02, "eer {}", s.eer);
    assert!((s.auc - 0.5).abs() < 0.02, "auc {}", s.auc);
    assert!(s.fdr < 0.01, "fdr {}", s.fdr);
    assert_eq!(s.n_thresholds, 40_000);
}

#[test]
fn roc_curve_is_monotone_and_spans_all_distinct_scores() {
    let g = [0.9, 0.8, 0.8, 0.3];
    let i = [0.1, 0.3, 0.5];
    let c = roc_curve(&g, &i).unwrap();
    assert_eq!(c.thresholds, vec![0.1, 0.3, 0.5, 0.8, 0.9]);
    assert_eq!(c.fmr, vec![1.0, 2.0 / 3.0, 1.0 / 3.0, 0.0, 0.0]);
    assert_eq!(c.fnmr, vec![0.0, 0.0, 0.25, 0.25, 0.75]);
}

#[test]
fn genuine_pairs_are_all_within_identity_pairs() {
    // Identity 7 has 4 items (6 pairs), identity 3 has 3 (3 pairs), identity 9 has 1 (0 pairs),
    // interleaved so the grouping cannot rely on adjacency.
    let ids = [7, 3, 7, 9, 3, 7, 3, 7];
    let pairs = genuine_pairs(&ids);
    assert_eq!(pairs.len(), 6 + 3);
    for &(a, b) in &pairs {
        assert!(a < b);
        assert_eq!(ids[a], ids[b]);
    }
    let mut dedup = pairs.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), pairs.len());
    // Larger: 50 identities × 12 images → 50 · 66 pairs.
    let ids: Vec<u32> = (0..600).map(|k| (k * 7 % 50) as u32).collect();
    assert_eq!(genuine_pairs(&ids).len(), 50 * 12 * 11 / 2);
}

#[test]
fn verification_protocol_on_separable_distances_is_perfect() {
    // 10 folds × (30 genuine at distance 0.5, 30 impostor at 1.5).
    let mut dist = Vec::new();
    let mut issame = Vec::new();
    for _ in 0..10 {
        for k in 0..60 {
            let same = k < 30;
            dist.push(if same { 0.5 + k as f64 * 1e-4 } else { 1.5 + k as f64 * 1e-4 });
            issame.push(same);
        }
    }
    let r = evaluate_distances(&dist, &issame, 10).unwrap();
    assert_eq!(r.accuracy_mean, 1.0);
    assert_eq!(r.accuracy_std, 0.0);
    // First maximum: the first grid threshold above every genuine distance (0.5029 → 0.51).
    assert!(r.best_threshold_index_per_fold.iter().all(|&k| k == 51));
    // No impostor ever reaches FAR 1e-3 below 1.5, so VAL is perfect.
    assert_eq!(r.val_mean, 1.0);
    assert_eq!(r.far_mean, 0.0);
}
