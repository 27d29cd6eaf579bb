//! DCFace's identity metrics for a synthetic dataset, and identity consistency to the context.
//!
//! All inputs are embeddings from a face encoder, row-major `[n, dim]`; rows are L2-normalised
//! here before use, so raw features are fine.
//!
//! * **Class centre**: the mean of a class's normalised embeddings, normalised again.
//! * **Class uniqueness `U_class`** (DCFace, Kim et al. 2023, "uniqueness"): DCFace counts a class
//!   as a duplicate when its centre is more similar than `r` (0.3) to another class's centre.
//!   Interpretation used here: `U_class` = share of classes whose **maximum** cosine similarity to
//!   any *other* class centre is `< r`. A dataset of well-separated identities scores 1; every
//!   class that has a near-twin counts as not unique (both members of the pair).
//! * **Intra-class consistency `C_intra`** (DCFace "consistency"): share of samples whose cosine
//!   similarity to their own class centre is `> r`, i.e. that an FR model would still match to
//!   their identity.
//! * **Context consistency**: mean `cos(embedding_i, context_i)` between each generated sample and
//!   the identity context it was generated from (IDiff-Face's identity-consistency check).
//!
//! Uniqueness compares all centre pairs: `O(C² · dim)` multiply-adds (10 K classes × 512 dims
//! ≈ 5·10¹⁰, a few minutes on one core) with `O(C · dim)` memory.

use std::collections::BTreeMap;

use super::MetricsError;

/// The default similarity threshold `r` of DCFace.
pub const DEFAULT_R: f64 = 0.3;

/// DCFace's dataset-level identity metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityMetrics {
    /// Share of classes whose centre stays under `r` cosine to every other centre.
    pub u_class: f64,
    /// Share of samples above `r` cosine to their class centre.
    pub c_intra: f64,
    /// Number of classes.
    pub n_classes: usize,
    /// Number of samples.
    pub n_samples: usize,
    /// The threshold used.
    pub r: f64,
}

fn check_rows(what: &'static str, values: &[f32], dim: usize) -> Result<usize, MetricsError> {
    if dim == 0 || !values.len().is_multiple_of(dim) {
        return Err(MetricsError::RaggedRows { what, len: values.len(), dim });
    }
    super::check_finite(what, values)?;
    Ok(values.len() / dim)
}

fn normalized(row: &[f32]) -> Vec<f64> {
    let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    row.iter().map(|&v| v as f64 * scale).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Class centres: for each distinct label (ascending), the normalised mean of its normalised
/// embeddings. Returns the labels and the centres (row-major `[classes, dim]`, f64).
pub fn class_centres(embeddings: &[f32], dim: usize, labels: &[u32]) -> Result<(Vec<u32>, Vec<f64>), MetricsError> {
    let n = check_rows("embeddings", embeddings, dim)?;
    if labels.len() != n {
        return Err(MetricsError::LengthMismatch { what: "labels vs embedding rows", expected: n, got: labels.len() });
    }
    let mut sums: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for (row, &label) in embeddings.chunks_exact(dim).zip(labels) {
        let acc = sums.entry(label).or_insert_with(|| vec![0.0; dim]);
        for (a, v) in acc.iter_mut().zip(normalized(row)) {
            *a += v;
        }
    }
    let mut ids = Vec::with_capacity(sums.len());
    let mut centres = Vec::with_capacity(sums.len() * dim);
    for (label, sum) in sums {
        ids.push(label);
        let norm = sum.iter().map(|v| v * v).sum::<f64>().sqrt();
        let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        centres.extend(sum.iter().map(|v| v * scale));
    }
    Ok((ids, centres))
}

/// `U_class` from normalised class centres (`[classes, dim]`): share of centres whose maximum
/// cosine to any other centre is `< r`. Needs at least two classes.
pub fn class_uniqueness(centres: &[f64], dim: usize, r: f64) -> Result<f64, MetricsError> {
    if dim == 0 || !centres.len().is_multiple_of(dim) {
        return Err(MetricsError::RaggedRows { what: "class centres", len: centres.len(), dim });
    }
    let c = centres.len() / dim;
    if c < 2 {
        return Err(MetricsError::BadParameter { what: "class centres", message: format!("uniqueness needs at least 2 classes, got {c}") });
    }
    let rows: Vec<&[f64]> = centres.chunks_exact(dim).collect();
    let mut max_sim = vec![f64::NEG_INFINITY; c];
    for a in 0..c {
        for b in a + 1..c {
            let s = dot(rows[a], rows[b]);
            max_sim[a] = max_sim[a].max(s);
            max_sim[b] = max_sim[b].max(s);
        }
    }
    Ok(max_sim.iter().filter(|&&s| s < r).count() as f64 / c as f64)
}

/// `C_intra`: share of samples whose cosine to their class centre is `> r`.
pub fn intra_class_consistency(embeddings: &[f32], dim: usize, labels: &[u32], r: f64) -> Result<f64, MetricsError> {
    let (ids, centres) = class_centres(embeddings, dim, labels)?;
    let n = labels.len();
    if n == 0 {
        return Err(MetricsError::Empty { what: "embeddings" });
    }
    let consistent = embeddings
        .chunks_exact(dim)
        .zip(labels)
        .filter(|(row, label)| {
            // Every label has a centre: `ids` was built from these very labels.
            let k = ids.binary_search(label).unwrap_or(0);
            dot(&normalized(row), &centres[k * dim..(k + 1) * dim]) > r
        })
        .count();
    Ok(consistent as f64 / n as f64)
}

/// Both DCFace metrics at threshold `r`.
pub fn identity_metrics(embeddings: &[f32], dim: usize, labels: &[u32], r: f64) -> Result<IdentityMetrics, MetricsError> {
    let (_, centres) = class_centres(embeddings, dim, labels)?;
    Ok(IdentityMetrics {
        u_class: class_uniqueness(&centres, dim, r)?,
        c_intra: intra_class_consistency(embeddings, dim, labels, r)?,
        n_classes: centres.len() / dim,
        n_samples: labels.len(),
        r,
    })
}

/// Mean cosine similarity between row `i` of `embeddings` and row `i` of `contexts`.
pub fn context_consistency(embeddings: &[f32], contexts: &[f32], dim: usize) -> Result<f64, MetricsError> {
    let n = check_rows("embeddings", embeddings, dim)?;
    let m = check_rows("contexts", contexts, dim)?;
    if n != m {
        return Err(MetricsError::LengthMismatch { what: "context rows vs embedding rows", expected: n, got: m });
    }
    if n == 0 {
        return Err(MetricsError::Empty { what: "embeddings" });
    }
    let total: f64 = embeddings.chunks_exact(dim).zip(contexts.chunks_exact(dim)).map(|(e, c)| dot(&normalized(e), &normalized(c))).sum();
    Ok(total / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonal_classes_are_unique_and_consistent() {
        // Three classes along the axes, two samples each, slightly tilted.
        let emb = [1.0, 0.1, 0.0, 1.0, -0.1, 0.0, 0.0, 1.0, 0.1, 0.0, 1.0, -0.1, 0.1, 0.0, 1.0, -0.1, 0.0, 1.0];
        let labels = [0, 0, 1, 1, 2, 2];
        let m = identity_metrics(&emb, 3, &labels, DEFAULT_R).unwrap();
        assert_eq!(m.u_class, 1.0);
        assert_eq!(m.c_intra, 1.0);
        assert_eq!(m.n_classes, 3);
    }

    #[test]
    fn twin_classes_are_not_unique() {
        let emb = [1.0, 0.0, 0.0, 0.9, 0.1, 0.0, 0.0, 0.0, 1.0];
        let m = identity_metrics(&emb, 3, &[5, 6, 7], 0.3).unwrap();
        assert!((m.u_class - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn inconsistent_samples_are_counted() {
        // Class 0: two opposite samples plus one along the mean → centre is the third direction.
        let emb = [1.0, 1.0, -1.0, 1.0, 0.0, 1.0];
        let c = intra_class_consistency(&emb, 2, &[0, 0, 0], 0.8).unwrap();
        assert!((c - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn context_consistency_is_mean_cosine() {
        let e = [1.0, 0.0, 0.0, 2.0];
        let c = [1.0, 0.0, 1.0, 1.0];
        let v = context_consistency(&e, &c, 2).unwrap();
        assert!((v - (1.0 + 0.5f64.sqrt()) / 2.0).abs() < 1e-12);
        assert!(context_consistency(&e, &c[..2], 2).is_err());
    }
}
