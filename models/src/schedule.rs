//! The DDPM noise schedule of IDiff-Face (`compute_beta_schedule` + `precompute_schedule_constants`).
//!
//! Official checkpoints carry the eight schedule buffers; [`DdpmSchedule::from_state_dict`]
//! prefers them. [`DdpmSchedule::linear`] recomputes them the way PyTorch does in float32:
//! `linspace` evaluated from both ends, `alpha_bars = exp(cumsum(log(alphas)))` with the
//! cumulative sum accumulated in f64 and stored per element as f32 (PyTorch's CPU `cumsum`
//! accumulates floats in double) — not `cumprod`, which differs by up to 9.4e-7 relative.

use candle_core::{DType, Tensor};

use crate::error::{ModelError, Result};
use crate::io::checkpoint::StateDict;

/// Names of the eight buffers, in the order the official wrapper registers them.
pub const SCHEDULE_KEYS: [&str; 8] = [
    "betas",
    "alphas",
    "sigmas",
    "sqrt_alphas_inv",
    "alpha_bars",
    "sqrt_alpha_bars",
    "sqrt_one_minus_alpha_bars",
    "one_minus_alphas_over_sqrt_one_minus_alpha_bars",
];

/// Per-timestep constants of a DDPM (index = 0-based timestep).
#[derive(Clone, Debug, PartialEq)]
pub struct DdpmSchedule {
    /// β_t.
    pub betas: Vec<f32>,
    /// α_t = 1 − β_t.
    pub alphas: Vec<f32>,
    /// σ_t = sqrt(β_t), the ancestral step's noise scale.
    pub sigmas: Vec<f32>,
    /// 1 / sqrt(α_t).
    pub sqrt_alphas_inv: Vec<f32>,
    /// ᾱ_t = Π_{s≤t} α_s.
    pub alpha_bars: Vec<f32>,
    /// sqrt(ᾱ_t).
    pub sqrt_alpha_bars: Vec<f32>,
    /// sqrt(1 − ᾱ_t).
    pub sqrt_one_minus_alpha_bars: Vec<f32>,
    /// (1 − α_t) / sqrt(1 − ᾱ_t), the eps coefficient of the ancestral step.
    pub one_minus_alphas_over_sqrt_one_minus_alpha_bars: Vec<f32>,
}

/// `torch.linspace(start, end, steps, dtype=float32)` on CPU: float32 step, the first half
/// counted from `start`, the second half from `end`.
fn linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps).map(|i| if i < half { start + step * i as f32 } else { end - step * (steps - i - 1) as f32 }).collect()
}

impl DdpmSchedule {
    /// The official linear schedule for `t` steps: β from `1e-4·1000/T` to `0.02·1000/T`.
    pub fn linear(t: usize) -> Self {
        let scale = 1000.0 / t as f64;
        Self::from_betas(linspace_f32(scale * 1e-4, scale * 0.02, t))
    }

    /// Derives all constants from β in float32 like `precompute_schedule_constants`.
    pub fn from_betas(betas: Vec<f32>) -> Self {
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let sqrt_alphas_inv = alphas.iter().map(|a| 1.0 / a.sqrt()).collect();
        let sigmas = betas.iter().map(|b| b.sqrt()).collect();
        let mut acc = 0f64;
        let alpha_bars: Vec<f32> = alphas
            .iter()
            .map(|a| {
                acc += a.ln() as f64;
                (acc as f32).exp()
            })
            .collect();
        let sqrt_alpha_bars = alpha_bars.iter().map(|a| a.sqrt()).collect();
        let sqrt_one_minus_alpha_bars: Vec<f32> = alpha_bars.iter().map(|a| (1.0 - a).sqrt()).collect();
        let one_minus_alphas_over_sqrt_one_minus_alpha_bars =
            alphas.iter().zip(&sqrt_one_minus_alpha_bars).map(|(a, s)| (1.0 - a) / s).collect();
        Self {
            betas,
            alphas,
            sigmas,
            sqrt_alphas_inv,
            alpha_bars,
            sqrt_alpha_bars,
            sqrt_one_minus_alpha_bars,
            one_minus_alphas_over_sqrt_one_minus_alpha_bars,
        }
    }

    /// Reads the eight buffers stored in a checkpoint (bare keys, as IDiff-Face saves them).
    /// Returns `Ok(None)` when the state dict has none of them.
    pub fn from_state_dict(dict: &StateDict) -> Result<Option<Self>> {
        let present = SCHEDULE_KEYS.iter().filter(|k| dict.get(k).is_some()).count();
        if present == 0 {
            return Ok(None);
        }
        let read = |key: &str| -> Result<Vec<f32>> {
            let t = dict.get(key).ok_or_else(|| ModelError::Checkpoint {
                path: dict.source().into(),
                reason: format!("schedule buffer `{key}` missing ({present} of 8 present)"),
            })?;
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        Self::from_buffers(read, |reason| ModelError::Checkpoint { path: dict.source().into(), reason }).map(Some)
    }

    /// The schedule of a checkpoint when it has one, else the linear schedule with `t` steps.
    pub fn from_state_dict_or_linear(dict: &StateDict, t: usize) -> Result<Self> {
        Ok(Self::from_state_dict(dict)?.unwrap_or_else(|| Self::linear(t)))
    }

    /// Number of diffusion steps T.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// True for an empty schedule.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// The eight buffers as one JSON object keyed by [`SCHEDULE_KEYS`] (how compiled ONNX
    /// denoisers record their schedule in the `idflow.schedule` metadata). Exact: `serde_json`
    /// writes each f32 with enough digits to read it back bit for bit.
    pub fn to_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> =
            SCHEDULE_KEYS.iter().zip(self.buffers()).map(|(k, b)| (k.to_string(), serde_json::json!(b))).collect();
        serde_json::Value::Object(map).to_string()
    }

    /// Reads [`DdpmSchedule::to_json`]'s output; `what` names the source in errors.
    pub fn from_json(text: &str, what: &str) -> Result<Self> {
        let bad = |reason: String| ModelError::Checkpoint { path: what.into(), reason };
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(format!("schedule metadata is not JSON: {e}")))?;
        let read = |key: &str| -> Result<Vec<f32>> {
            serde_json::from_value(v.get(key).cloned().unwrap_or(serde_json::Value::Null))
                .map_err(|e| bad(format!("schedule metadata `{key}`: {e}")))
        };
        Self::from_buffers(read, bad)
    }

    /// Builds a schedule from its eight buffers, read by name with `read`; all must be equally
    /// long and non-empty (`bad` turns the reason into the caller's error).
    fn from_buffers(read: impl Fn(&str) -> Result<Vec<f32>>, bad: impl Fn(String) -> ModelError) -> Result<Self> {
        let s = Self {
            betas: read("betas")?,
            alphas: read("alphas")?,
            sigmas: read("sigmas")?,
            sqrt_alphas_inv: read("sqrt_alphas_inv")?,
            alpha_bars: read("alpha_bars")?,
            sqrt_alpha_bars: read("sqrt_alpha_bars")?,
            sqrt_one_minus_alpha_bars: read("sqrt_one_minus_alpha_bars")?,
            one_minus_alphas_over_sqrt_one_minus_alpha_bars: read("one_minus_alphas_over_sqrt_one_minus_alpha_bars")?,
        };
        let n = s.betas.len();
        if s.buffers().iter().any(|b| b.len() != n) || n == 0 {
            return Err(bad("schedule buffers have different lengths".into()));
        }
        Ok(s)
    }

    /// The eight buffers in [`SCHEDULE_KEYS`] order.
    pub fn buffers(&self) -> [&Vec<f32>; 8] {
        [
            &self.betas,
            &self.alphas,
            &self.sigmas,
            &self.sqrt_alphas_inv,
            &self.alpha_bars,
            &self.sqrt_alpha_bars,
            &self.sqrt_one_minus_alpha_bars,
            &self.one_minus_alphas_over_sqrt_one_minus_alpha_bars,
        ]
    }

    /// The buffers as named `[T]` tensors (for saving next to idflow's own weights).
    pub fn to_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        SCHEDULE_KEYS
            .iter()
            .zip(self.buffers())
            .map(|(k, v)| Ok((k.to_string(), Tensor::new(v.as_slice(), &candle_core::Device::Cpu)?)))
            .collect()
    }
}
