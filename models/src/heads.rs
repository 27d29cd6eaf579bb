//! Margin-based classification heads for face-recognition training: ArcFace (ElasticFace's plain
//! form and TFace's form with the `th`/`mm` fallback or easy margin), CosFace, and ElasticFace's
//! ElasticArcFace / ElasticCosFace with per-sample margins drawn from N(m, σ).
//!
//! All heads share `cos = clamp(normalize_rows(emb) · normalize_cols(kernel), −1, 1)` with the
//! `kernel` parameter laid out `[in_features, out_features]` as in both original code bases, and
//! change only the target-class entry; rows labelled −1 are left unmodified. `cos(θ + m)` is
//! evaluated as `cos θ·cos m − sin θ·sin m` with `sin θ = sqrt(1 − cos²θ)` (exact for θ ∈ [0, π],
//! and candle has no `acos`).

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;
use idflow_dataset::rng::KeyedRng;
use serde::{Deserialize, Serialize};

/// Which margin the target logit receives.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Margin {
    /// Additive angular margin `cos(θ + m)`. `threshold` adds TFace's fallback
    /// `cos θ − sin(π − m)·m` when `cos θ ≤ cos(π − m)`; `easy_margin` instead keeps `cos θ`
    /// when `cos θ ≤ 0` (takes precedence over `threshold`).
    ArcFace {
        /// m (radians).
        m: f64,
        /// TFace's `th`/`mm` branch.
        threshold: bool,
        /// TFace's `easy_margin`.
        easy_margin: bool,
    },
    /// Additive cosine margin `cos θ − m`.
    CosFace {
        /// m.
        m: f64,
    },
    /// ElasticFace-Arc: `cos(θ + m_i)` with `m_i ~ N(m, std)` per sample.
    ElasticArc {
        /// Mean margin.
        m: f64,
        /// Standard deviation of the margin.
        std: f64,
        /// ElasticFace+: the largest target cosine gets the smallest margin.
        plus: bool,
    },
    /// ElasticFace-Cos: `cos θ − m_i` with `m_i ~ N(m, std)`.
    ElasticCos {
        /// Mean margin.
        m: f64,
        /// Standard deviation of the margin.
        std: f64,
        /// ElasticFace+ margin ordering.
        plus: bool,
    },
}

/// A margin head with its class-centre matrix.
#[derive(Clone, Debug)]
pub struct MarginHead {
    kernel: Tensor,
    scale: f64,
    margin: Margin,
}

impl MarginHead {
    /// Loads/initialises `kernel` `[in_features, out_features]` from `vb`.
    pub fn new(in_features: usize, out_features: usize, scale: f64, margin: Margin, vb: VarBuilder) -> Result<Self> {
        let kernel = vb.get_with_hints((in_features, out_features), "kernel", candle_nn::Init::Randn { mean: 0.0, stdev: 0.01 })?;
        Ok(Self { kernel, scale, margin })
    }

    /// A head around an existing kernel `[in_features, out_features]`.
    pub fn from_kernel(kernel: Tensor, scale: f64, margin: Margin) -> Self {
        Self { kernel, scale, margin }
    }

    /// The class-centre matrix.
    pub fn kernel(&self) -> &Tensor {
        &self.kernel
    }

    /// `clamp(normalize_rows(emb) · normalize_cols(kernel), −1, 1)`, `[B, classes]`.
    pub fn cos_theta(&self, embeddings: &Tensor) -> Result<Tensor> {
        let e = embeddings.broadcast_div(&embeddings.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?;
        let k = self.kernel.broadcast_div(&self.kernel.sqr()?.sum_keepdim(0)?.sqrt()?)?;
        e.matmul(&k)?.clamp(-1f32, 1f32)
    }

    /// Logits `s·cos` with the margin applied to each row's target class. Elastic margins are
    /// drawn from `rng` (required for the elastic variants).
    pub fn logits(&self, embeddings: &Tensor, labels: &Tensor, rng: Option<&mut KeyedRng>) -> Result<Tensor> {
        let b = embeddings.dim(0)?;
        let margins = match (self.margin, rng) {
            (Margin::ElasticArc { m, std, .. } | Margin::ElasticCos { m, std, .. }, Some(rng)) => {
                (0..b).map(|_| m + std * rng.normal()).collect()
            }
            (Margin::ElasticArc { .. } | Margin::ElasticCos { .. }, None) => {
                candle_core::bail!("elastic margin heads need a random source")
            }
            (Margin::ArcFace { m, .. } | Margin::CosFace { m }, _) => vec![m; b],
        };
        self.logits_with_margins(embeddings, labels, &margins)
    }

    /// [`logits`](Self::logits) with explicit per-row margins (for the elastic variants these
    /// are the N(m, σ) draws; `plus` reorders them by target cosine here).
    pub fn logits_with_margins(&self, embeddings: &Tensor, labels: &Tensor, margins: &[f64]) -> Result<Tensor> {
        let cos = self.cos_theta(embeddings)?;
        let (b, classes) = cos.dims2()?;
        let labels: Vec<i64> = labels.to_dtype(DType::I64)?.to_vec1()?;
        if labels.len() != b || margins.len() != b {
            candle_core::bail!("{} labels / {} margins for a batch of {b}", labels.len(), margins.len());
        }
        if let Some(bad) = labels.iter().find(|&&l| l >= classes as i64) {
            candle_core::bail!("label {bad} out of range for {classes} classes");
        }
        let valid: Vec<usize> = (0..b).filter(|&i| labels[i] >= 0).collect();
        let gather_idx: Vec<i64> = labels.iter().map(|&l| l.max(0)).collect();
        let gather_idx = Tensor::from_vec(gather_idx, (b, 1), cos.device())?;
        let target = cos.gather(&gather_idx, 1)?; // [B, 1]

        let mut m_row = margins.to_vec();
        if let Margin::ElasticArc { plus: true, .. } | Margin::ElasticCos { plus: true, .. } = self.margin {
            let tv: Vec<f32> = target.flatten_all()?.to_vec1()?;
            let mut by_cos = valid.clone();
            by_cos.sort_by(|&i, &j| tv[j].total_cmp(&tv[i])); // descending target cosine
            let mut sorted: Vec<f64> = valid.iter().map(|&i| margins[i]).collect();
            sorted.sort_by(f64::total_cmp); // ascending margins
            for (rank, &row) in by_cos.iter().enumerate() {
                m_row[row] = sorted[rank];
            }
        }
        let dev = cos.device();
        let dtype = cos.dtype();
        let m_t = Tensor::from_vec(m_row.iter().map(|&m| m as f32).collect::<Vec<_>>(), (b, 1), dev)?.to_dtype(dtype)?;
        let new_target = match self.margin {
            Margin::CosFace { .. } | Margin::ElasticCos { .. } => (&target - &m_t)?,
            Margin::ArcFace { .. } | Margin::ElasticArc { .. } => {
                let sin = (1.0 - target.sqr()?)?.clamp(0f32, 1f32)?.sqrt()?;
                let phi = ((&target * m_t.cos()?)? - (sin * m_t.sin()?)?)?;
                match self.margin {
                    Margin::ArcFace { easy_margin: true, .. } => target.gt(0f64)?.where_cond(&phi, &target)?,
                    Margin::ArcFace { m, threshold: true, .. } => {
                        let th = (std::f64::consts::PI - m).cos();
                        let mm = (std::f64::consts::PI - m).sin() * m;
                        target.gt(th)?.where_cond(&phi, &(&target - mm)?)?
                    }
                    _ => phi,
                }
            }
        };
        let mut onehot = vec![0f32; b * classes];
        for &i in &valid {
            onehot[i * classes + labels[i] as usize] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (b, classes), dev)?.to_dtype(dtype)?;
        let delta = onehot.broadcast_mul(&(new_target - target)?)?;
        (cos + delta)? * self.scale
    }
}
