//! The dataset metrics of `evaluate` over embedded rows: genuine pairs from the identity join,
//! keyed impostor pairs, pyeer's score statistics, DCFace's identity metrics and the
//! context consistency, as JSON and Markdown.

use super::pairs::{self, ImpostorSelection, PairSink, UnitRows};
use idflow_dataset::metrics::identity::{context_consistency, identity_metrics, IdentityMetrics};
use idflow_dataset::metrics::scores::{score_stats, ScoreStats};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// An embedded dataset, rows sorted by (identity, sample).
#[derive(Clone, Debug, Default)]
pub struct EmbeddedRows {
    /// Identity per row.
    pub identities: Vec<u32>,
    /// Row-major `[rows, dim]` embeddings.
    pub embeddings: Vec<f32>,
    /// Embedding width.
    pub dim: usize,
    /// Row-major `[rows, dim]` identity contexts, when the input has them.
    pub contexts: Option<Vec<f32>>,
}


/// Rearranges the `dim`-wide rows of `values` so that new row `i` is old row `order[i]`,
/// following the permutation's cycles with one spare row.
pub(super) fn permute_rows(values: &mut [f32], dim: usize, order: &[usize]) {
    let mut placed = vec![false; order.len()];
    let mut spare = vec![0f32; dim];
    for start in 0..order.len() {
        if placed[start] || order[start] == start {
            continue;
        }
        spare.copy_from_slice(&values[start * dim..(start + 1) * dim]);
        let mut i = start;
        loop {
            placed[i] = true;
            let src = order[i];
            if src == start {
                values[i * dim..(i + 1) * dim].copy_from_slice(&spare);
                break;
            }
            values.copy_within(src * dim..(src + 1) * dim, i * dim);
            i = src;
        }
    }
}

/// The dataset metrics and the scores they came from.
#[derive(Clone, Debug)]
pub struct DatasetEvaluation {
    /// Rows evaluated.
    pub n_rows: usize,
    /// Distinct identities.
    pub n_identities: usize,
    /// pyeer statistics of the genuine / impostor scores (+ FDR).
    pub stats: ScoreStats,
    /// DCFace's U_class and C_intra.
    pub identity: IdentityMetrics,
    /// Mean cos(embedding, context), when contexts are present.
    pub context_consistency: Option<f64>,
    /// How the impostor pairs were chosen.
    pub impostor_selection: ImpostorSelection,
    /// Genuine scores (join order).
    pub genuine: Vec<f64>,
    /// Impostor scores.
    pub impostor: Vec<f64>,
}

/// Scores the genuine pairs the join produces, as they arrive.
struct GenuineScores {
    rows: Arc<UnitRows>,
    scores: Vec<f64>,
}

impl PairSink for GenuineScores {
    fn pair(&mut self, _identity: u32, a: u32, b: u32) {
        self.scores.push(self.rows.cosine(a as usize, b as usize));
    }
}

/// Computes every dataset metric of the module doc on `rows`; `seed` keys the impostor draw.
pub fn evaluate_dataset(rows: EmbeddedRows, seed: u64, max_impostor_pairs: u64, r: f64) -> Result<DatasetEvaluation, String> {
    let EmbeddedRows { identities, embeddings, dim, contexts } = rows;
    let n = identities.len();
    if n == 0 {
        return Err("dataset metrics: the input has no rows".into());
    }
    let mut sizes = BTreeMap::<u32, u64>::new();
    for &id in &identities {
        *sizes.entry(id).or_default() += 1;
    }
    if sizes.len() < 2 {
        return Err(format!("dataset metrics need at least two identities, the input has {}", sizes.len()));
    }
    let n_genuine: u64 = sizes.values().map(|&k| k * (k - 1) / 2).sum();
    if n_genuine == 0 {
        return Err("dataset metrics: no identity has two samples, so there are no genuine pairs".into());
    }
    if let Some(i) = embeddings.iter().position(|v| !v.is_finite()) {
        return Err(format!("dataset metrics: the embedding of row {} has a non-finite value", i / dim.max(1)));
    }
    let unit = Arc::new(UnitRows::new(embeddings, dim));
    let sink = GenuineScores { rows: unit.clone(), scores: Vec::with_capacity(n_genuine as usize) };
    let genuine = pairs::join_genuine_pairs(&identities, sink).scores;
    if genuine.len() as u64 != n_genuine {
        return Err(format!("internal: the join produced {} genuine pairs, expected {n_genuine}", genuine.len()));
    }
    let mut impostor = Vec::new();
    let selection =
        pairs::impostor_pairs(&identities, seed, n_genuine, max_impostor_pairs, |a, b| impostor.push(unit.cosine(a as usize, b as usize)));
    let stats = score_stats(&genuine, &impostor).map_err(|e| format!("score statistics: {e}"))?;
    let identity = identity_metrics(unit.values(), dim, &identities, r).map_err(|e| format!("identity metrics: {e}"))?;
    let context_consistency = match contexts {
        Some(c) => Some(context_consistency(unit.values(), &c, dim).map_err(|e| format!("context consistency: {e}"))?),
        None => None,
    };
    Ok(DatasetEvaluation {
        n_rows: n,
        n_identities: sizes.len(),
        stats,
        identity,
        context_consistency,
        impostor_selection: selection,
        genuine,
        impostor,
    })
}

pub(super) fn dataset_json(ev: &DatasetEvaluation, max_impostor_pairs: u64) -> serde_json::Value {
    let s = &ev.stats;
    json!({
        "rows": ev.n_rows,
        "identities": ev.n_identities,
        "genuine_pairs": s.n_genuine,
        "impostor_pairs": s.n_impostor,
        "impostor_selection": ev.impostor_selection,
        "max_impostor_pairs": max_impostor_pairs,
        "eer": s.eer, "eer_low": s.eer_low, "eer_high": s.eer_high, "eer_threshold": s.eer_th,
        "fmr100": s.fmr100, "fmr100_threshold": s.fmr100_th,
        "fmr1000": s.fmr1000, "fmr1000_threshold": s.fmr1000_th,
        "fmr0": s.fmr0, "fmr0_threshold": s.fmr0_th,
        "fnmr0": s.fnmr0, "fnmr0_threshold": s.fnmr0_th,
        "auc": s.auc,
        "genuine_mean": s.gmean, "genuine_std": s.gstd,
        "impostor_mean": s.imean, "impostor_std": s.istd,
        "decidability": s.decidability,
        "fdr": s.fdr,
        "thresholds": s.n_thresholds,
        "r": ev.identity.r,
        "u_class": ev.identity.u_class,
        "c_intra": ev.identity.c_intra,
        "context_consistency": ev.context_consistency,
    })
}

/// The dataset metrics as a Markdown table.
pub fn dataset_markdown(ev: &DatasetEvaluation) -> String {
    let s = &ev.stats;
    let selection = match ev.impostor_selection {
        ImpostorSelection::All => "all cross-identity pairs",
        ImpostorSelection::Sampled => "seeded random draw",
    };
    let mut rows = vec![
        ("Rows / identities".to_string(), format!("{} / {}", ev.n_rows, ev.n_identities)),
        ("Genuine pairs".into(), s.n_genuine.to_string()),
        ("Impostor pairs".into(), format!("{} ({selection})", s.n_impostor)),
        ("EER (%)".into(), format!("{:.4} (threshold {:.6})", 100.0 * s.eer, s.eer_th)),
        ("FMR100 (%)".into(), format!("{:.4}", 100.0 * s.fmr100)),
        ("FMR1000 (%)".into(), format!("{:.4}", 100.0 * s.fmr1000)),
        ("AUC".into(), format!("{:.6}", s.auc)),
        ("Genuine mean ± std".into(), format!("{:.6} ± {:.6}", s.gmean, s.gstd)),
        ("Impostor mean ± std".into(), format!("{:.6} ± {:.6}", s.imean, s.istd)),
        ("FDR".into(), format!("{:.6}", s.fdr)),
        ("Decidability d'".into(), format!("{:.6}", s.decidability)),
        (format!("U_class (r = {})", ev.identity.r), format!("{:.4}", ev.identity.u_class)),
        (format!("C_intra (r = {})", ev.identity.r), format!("{:.4}", ev.identity.c_intra)),
    ];
    if let Some(c) = ev.context_consistency {
        rows.push(("Context consistency (mean cos)".into(), format!("{c:.6}")));
    }
    let mut md = String::from("| Metric | Value |\n|---|---:|\n");
    for (k, v) in rows {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use idflow_dataset::rng::KeyedRng;

    /// `ids` identities × `per` samples in `dim` dimensions: identity `i` points along a random
    /// direction, each sample adds noise of scale `noise`.
    fn clustered(ids: u32, per: usize, dim: usize, noise: f64, seed: u64) -> EmbeddedRows {
        let mut rows = EmbeddedRows { dim, ..Default::default() };
        for id in 0..ids {
            let mut rng = KeyedRng::new(&[seed, id as u64]);
            let centre: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
            for _ in 0..per {
                rows.identities.push(id);
                rows.embeddings.extend(centre.iter().map(|c| (c + noise * rng.normal()) as f32));
            }
        }
        rows
    }

    #[test]
    fn separable_scores_have_zero_eer_and_large_fdr() {
        let rows = clustered(12, 6, 64, 0.05, 1);
        let ev = evaluate_dataset(rows, 7, 1_000_000, 0.3).unwrap();
        assert_eq!(ev.stats.n_genuine, 12 * 15);
        assert_eq!(ev.impostor_selection, ImpostorSelection::All);
        assert_eq!(ev.stats.n_impostor, 72 * 71 / 2 - 12 * 15);
        let gmin = ev.genuine.iter().copied().fold(f64::INFINITY, f64::min);
        let imax = ev.impostor.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert!(gmin > imax, "the synthetic clusters separate: {gmin} vs {imax}");
        assert_eq!(ev.stats.eer, 0.0);
        assert_eq!(ev.stats.fmr100, 0.0);
        assert_eq!(ev.stats.fmr1000, 0.0);
        assert!(ev.stats.fdr > 50.0, "FDR {}", ev.stats.fdr);
        assert!((ev.stats.auc - 1.0).abs() < 1e-12);
        assert_eq!(ev.identity.u_class, 1.0);
        assert_eq!(ev.identity.c_intra, 1.0);
    }

    #[test]
    fn identical_distributions_have_eer_near_one_half() {
        // Every row an independent random vector: identity labels carry no information.
        let mut rows = EmbeddedRows { dim: 32, ..Default::default() };
        let mut rng = KeyedRng::new(&[3]);
        for id in 0..40u32 {
            for _ in 0..10 {
                rows.identities.push(id);
                rows.embeddings.extend((0..32).map(|_| rng.normal() as f32));
            }
        }
        let ev = evaluate_dataset(rows, 11, 1000, 0.3).unwrap();
        assert_eq!(ev.stats.n_genuine, 40 * 45);
        assert_eq!(ev.impostor_selection, ImpostorSelection::Sampled);
        assert_eq!(ev.stats.n_impostor, 40 * 45, "as many impostors as genuine pairs");
        assert!((ev.stats.eer - 0.5).abs() < 0.04, "EER {}", ev.stats.eer);
        assert!((ev.stats.auc - 0.5).abs() < 0.04, "AUC {}", ev.stats.auc);
        assert!(ev.stats.fdr < 0.01, "FDR {}", ev.stats.fdr);
    }

    #[test]
    fn scores_match_an_independent_enumeration() {
        let rows = clustered(5, 4, 16, 0.5, 9);
        let (ids, emb) = (rows.identities.clone(), rows.embeddings.clone());
        let ev = evaluate_dataset(rows, 1, 1_000_000, 0.3).unwrap();
        let norm = |i: usize| -> Vec<f64> {
            let r = &emb[i * 16..(i + 1) * 16];
            let n = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            r.iter().map(|&v| v as f64 / n).collect()
        };
        let cos = |a: usize, b: usize| norm(a).iter().zip(norm(b)).map(|(x, y)| x * y).sum::<f64>();
        let mut expected: Vec<f64> = idflow_dataset::metrics::scores::genuine_pairs(&ids).into_iter().map(|(a, b)| cos(a, b)).collect();
        let mut got = ev.genuine.clone();
        expected.sort_by(f64::total_cmp);
        got.sort_by(f64::total_cmp);
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-6);
        }
    }

    #[test]
    fn context_consistency_is_reported_when_contexts_are_given() {
        let mut rows = clustered(4, 3, 8, 0.01, 2);
        rows.contexts = Some(rows.embeddings.clone());
        let ev = evaluate_dataset(rows, 1, 1_000_000, 0.3).unwrap();
        assert!((ev.context_consistency.unwrap() - 1.0).abs() < 1e-6);
        let md = dataset_markdown(&ev);
        assert!(md.contains("Context consistency"));
        assert!(md.contains("| EER (%) | 0.0000"));
    }

    #[test]
    fn bad_datasets_are_refused_with_a_reason() {
        let one = clustered(1, 5, 4, 0.1, 1);
        assert!(evaluate_dataset(one, 1, 10, 0.3).unwrap_err().contains("at least two identities"));
        let singles = clustered(5, 1, 4, 0.1, 1);
        assert!(evaluate_dataset(singles, 1, 10, 0.3).unwrap_err().contains("no genuine pairs"));
        let mut nan = clustered(3, 2, 4, 0.1, 1);
        nan.embeddings[9] = f32::NAN;
        assert!(evaluate_dataset(nan, 1, 10, 0.3).unwrap_err().contains("row 2"));
    }

    #[test]
    fn rows_are_permuted_in_place() {
        let mut rng = KeyedRng::new(&[4]);
        let n = 50;
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut values: Vec<f32> = (0..n * 3).map(|v| v as f32).collect();
        permute_rows(&mut values, 3, &order);
        for (i, &src) in order.iter().enumerate() {
            assert_eq!(values[i * 3..i * 3 + 3], [(src * 3) as f32, (src * 3 + 1) as f32, (src * 3 + 2) as f32]);
        }
    }
}
