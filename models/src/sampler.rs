//! Reverse-diffusion samplers: IDiff-Face's ancestral DDPM step, DDIM (standard, plus an
//! ADMIS-compatible variant), classifier-free guidance, and keyed noise.
//!
//! The per-element step arithmetic lives behind [`StepMath`] on plain `&[f32]` slices so a GPU
//! implementation can replace [`CpuStepMath`] without touching the loop. Noise for
//! (seed, identity, sample, step) comes from `idflow_dataset::rng::KeyedRng`, so a sample's
//! pixels do not depend on batch composition or worker count.

use candle_core::{DType, Device, Tensor};
use idflow_dataset::rng::KeyedRng;
use serde::{Deserialize, Serialize};

use crate::error::{input_error, Result};
use crate::schedule::DdpmSchedule;
use crate::traits::Denoiser;

/// Step key of the initial noise x_T (the per-step noise uses the timestep t being left).
pub const PRIOR_STEP: u64 = u64::MAX;

/// Coefficients of one ancestral DDPM step at timestep t.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdpmCoefficients {
    /// 1/sqrt(α_t).
    pub sqrt_alpha_inv: f32,
    /// (1 − α_t)/sqrt(1 − ᾱ_t).
    pub eps_coef: f32,
    /// sqrt(β_t); multiplied by the noise when the step adds noise.
    pub sigma: f32,
}

impl DdpmCoefficients {
    /// Coefficients for timestep `t` (0-based) of `schedule`.
    pub fn at(schedule: &DdpmSchedule, t: usize) -> Self {
        Self {
            sqrt_alpha_inv: schedule.sqrt_alphas_inv[t],
            eps_coef: schedule.one_minus_alphas_over_sqrt_one_minus_alpha_bars[t],
            sigma: schedule.sigmas[t],
        }
    }
}

/// Whether the official ancestral step from `t` adds noise: only for `t > 1` (IDiff-Face uses
/// `z = 0` for t ∈ {1, 0}).
pub fn ddpm_adds_noise(t: usize) -> bool {
    t > 1
}

/// Coefficients of one DDIM step t → t_prev.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DdimCoefficients {
    /// ᾱ_t.
    pub alpha_bar_t: f64,
    /// ᾱ_prev (1 for the final "alpha-to-one" step).
    pub alpha_bar_prev: f64,
    /// σ = η·sqrt((1 − ᾱ_prev)/(1 − ᾱ_t))·sqrt(1 − ᾱ_t/ᾱ_prev).
    pub sigma: f64,
    /// Re-derive eps from the predicted x0 before the direction term (ADMIS / GLIDE style).
    pub rederive_eps: bool,
}

impl DdimCoefficients {
    /// Standard DDIM coefficients with `alpha_bar_prev` and `eta`.
    pub fn new(alpha_bar_t: f64, alpha_bar_prev: f64, eta: f64, rederive_eps: bool) -> Self {
        let sigma = eta * ((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)).sqrt() * (1.0 - alpha_bar_t / alpha_bar_prev).sqrt();
        Self { alpha_bar_t, alpha_bar_prev, sigma, rederive_eps }
    }

    /// Standard DDIM from `t` to `t_prev` (`None` = final step to ᾱ = 1).
    pub fn standard(schedule: &DdpmSchedule, t: usize, t_prev: Option<usize>, eta: f64) -> Self {
        let prev = t_prev.map_or(1.0, |p| schedule.alpha_bars[p] as f64);
        Self::new(schedule.alpha_bars[t] as f64, prev, eta, false)
    }

    /// ADMIS's `sample_ddim`: ᾱ_prev = `alpha_bars[t_prev − 1]` (one step off), 1 when
    /// `t_prev ≤ 0`; eps re-derived from x0.
    pub fn admis(schedule: &DdpmSchedule, t: usize, t_prev: Option<usize>, eta: f64) -> Self {
        let prev = match t_prev {
            Some(p) if p > 0 => schedule.alpha_bars[p - 1] as f64,
            _ => 1.0,
        };
        Self::new(schedule.alpha_bars[t] as f64, prev, eta, true)
    }
}

/// Element-wise step arithmetic on flat buffers (one latent batch, row-major).
pub trait StepMath: Send + Sync {
    /// `out = sqrt_alpha_inv·(x_t − eps_coef·eps) + sigma·z` (`z = None` → no noise term).
    fn ddpm_step(&self, x_t: &[f32], eps: &[f32], z: Option<&[f32]>, c: DdpmCoefficients, out: &mut [f32]);
    /// DDIM: `x0 = (x_t − sqrt(1−ᾱ_t)·eps)/sqrt(ᾱ_t)`,
    /// `out = sqrt(ᾱ_prev)·x0 + sqrt(1 − ᾱ_prev − σ²)·eps + σ·z`. Writes x0 to `pred_x0` when given.
    fn ddim_step(&self, x_t: &[f32], eps: &[f32], z: Option<&[f32]>, c: DdimCoefficients, out: &mut [f32], pred_x0: Option<&mut [f32]>);
    /// Classifier-free guidance `out = (1 − w)·eps_uncond + w·eps_cond`.
    fn guidance(&self, eps_uncond: &[f32], eps_cond: &[f32], w: f32, out: &mut [f32]);
}

/// The CPU implementation of [`StepMath`]. DDPM runs in f32 in the official operation order
/// (bit-identical to PyTorch); DDIM runs in f64 per element.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuStepMath;

impl StepMath for CpuStepMath {
    fn ddpm_step(&self, x_t: &[f32], eps: &[f32], z: Option<&[f32]>, c: DdpmCoefficients, out: &mut [f32]) {
        for (i, o) in out.iter_mut().enumerate() {
            let mean = c.sqrt_alpha_inv * (x_t[i] - eps[i] * c.eps_coef);
            *o = match z {
                Some(z) => mean + c.sigma * z[i],
                None => mean,
            };
        }
    }

    fn ddim_step(
        &self,
        x_t: &[f32],
        eps: &[f32],
        z: Option<&[f32]>,
        c: DdimCoefficients,
        out: &mut [f32],
        mut pred_x0: Option<&mut [f32]>,
    ) {
        let (sqrt_at, sqrt_1m_at) = (c.alpha_bar_t.sqrt(), (1.0 - c.alpha_bar_t).sqrt());
        let sqrt_prev = c.alpha_bar_prev.sqrt();
        let dir = (1.0 - c.alpha_bar_prev - c.sigma * c.sigma).max(0.0).sqrt();
        for (i, o) in out.iter_mut().enumerate() {
            let (x, e) = (x_t[i] as f64, eps[i] as f64);
            let x0 = (x - sqrt_1m_at * e) / sqrt_at;
            let e = if c.rederive_eps { (x - sqrt_at * x0) / sqrt_1m_at } else { e };
            let mut v = sqrt_prev * x0 + dir * e;
            if let Some(z) = z {
                v += c.sigma * z[i] as f64;
            }
            *o = v as f32;
            if let Some(p) = pred_x0.as_deref_mut() {
                p[i] = x0 as f32;
            }
        }
    }

    fn guidance(&self, eps_uncond: &[f32], eps_cond: &[f32], w: f32, out: &mut [f32]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = (1.0 - w) * eps_uncond[i] + w * eps_cond[i];
        }
    }
}

/// Identifies one generated sample for noise keying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoiseKey {
    /// Pipeline seed.
    pub seed: u64,
    /// Identity index.
    pub identity: u64,
    /// Sample index within the identity.
    pub sample: u64,
}

impl NoiseKey {
    /// `len` standard-normal values for `step` (a timestep, or [`PRIOR_STEP`] for x_T).
    pub fn noise(&self, step: u64, len: usize) -> Vec<f32> {
        let mut out = vec![0f32; len];
        KeyedRng::new(&[self.seed, self.identity, self.sample, step]).fill_normal_f32(&mut out);
        out
    }
}

/// Noise for a batch: row b uses `keys[b]`; shape `[B, dims...]`.
pub fn batch_noise(keys: &[NoiseKey], step: u64, sample_dims: &[usize], device: &Device) -> Result<Tensor> {
    let per: usize = sample_dims.iter().product();
    let mut data = Vec::with_capacity(per * keys.len());
    for k in keys {
        data.extend(k.noise(step, per));
    }
    let mut shape = vec![keys.len()];
    shape.extend_from_slice(sample_dims);
    Ok(Tensor::from_vec(data, shape, device)?)
}

/// Which reverse process to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SamplerKind {
    /// IDiff-Face's ancestral sampler over all T steps.
    Ddpm,
    /// DDIM with `steps` evenly spaced timesteps (stride T/steps) and noise scale `eta`.
    Ddim {
        /// Number of denoising steps.
        steps: usize,
        /// η (0 = deterministic).
        eta: f64,
        /// Reproduce ADMIS's off-by-one ᾱ_prev and eps re-derivation.
        #[serde(default)]
        admis_compat: bool,
    },
}

/// Full sampler settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplerConfig {
    /// DDPM or DDIM.
    pub kind: SamplerKind,
    /// Classifier-free guidance weight w (`None` or 1 = plain conditional).
    pub guidance_scale: Option<f64>,
}

/// The (t, t_prev) pairs DDIM visits: `t = (n−1)·k, …, k, 0` with `k = T / steps`, and
/// `t_prev = t − k` (`None` after 0).
pub fn ddim_timesteps(t_total: usize, steps: usize) -> Vec<(usize, Option<usize>)> {
    let skip = (t_total / steps.max(1)).max(1);
    (0..t_total).step_by(skip).rev().map(|t| (t, t.checked_sub(skip))).collect()
}

/// Runs the reverse process from `x_t` (usually [`batch_noise`] with [`PRIOR_STEP`]) and returns
/// the final latent. `keys[b]` keys the noise of row b; `context` is `[B, D]` or `None`.
pub fn sample(
    denoiser: &dyn Denoiser,
    schedule: &DdpmSchedule,
    config: &SamplerConfig,
    math: &dyn StepMath,
    x_t: &Tensor,
    context: Option<&Tensor>,
    keys: &[NoiseKey],
) -> Result<Tensor> {
    let dims = x_t.dims().to_vec();
    if dims.first() != Some(&keys.len()) {
        return Err(input_error("keys", format!("{} noise keys for a batch of shape {dims:?}", keys.len())));
    }
    let device = x_t.device().clone();
    let batch = keys.len();
    let mut x = x_t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; x.len()];
    let eps_at = |x: &[f32], t: usize| -> Result<Vec<f32>> {
        let xt = Tensor::from_slice(x, dims.as_slice(), &device)?;
        let tt = Tensor::from_vec(vec![t as i64; batch], batch, &device)?;
        let eps = match (context, config.guidance_scale) {
            (Some(c), Some(w)) if w != 1.0 => denoiser.eps_guided(&xt, &tt, c, w)?,
            _ => denoiser.eps(&xt, &tt, context)?,
        };
        Ok(eps.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let noise = |step: usize| -> Result<Vec<f32>> {
        Ok(batch_noise(keys, step as u64, &dims[1..], &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
    };
    match &config.kind {
        SamplerKind::Ddpm => {
            for t in (0..schedule.len()).rev() {
                let eps = eps_at(&x, t)?;
                let z = if ddpm_adds_noise(t) { Some(noise(t)?) } else { None };
                math.ddpm_step(&x, &eps, z.as_deref(), DdpmCoefficients::at(schedule, t), &mut out);
                std::mem::swap(&mut x, &mut out);
            }
        }
        SamplerKind::Ddim { steps, eta, admis_compat } => {
            for (t, t_prev) in ddim_timesteps(schedule.len(), *steps) {
                let eps = eps_at(&x, t)?;
                let c = if *admis_compat {
                    DdimCoefficients::admis(schedule, t, t_prev, *eta)
                } else {
                    DdimCoefficients::standard(schedule, t, t_prev, *eta)
                };
                let z = if c.sigma > 0.0 { Some(noise(t)?) } else { None };
                math.ddim_step(&x, &eps, z.as_deref(), c, &mut out, None);
                std::mem::swap(&mut x, &mut out);
            }
        }
    }
    Ok(Tensor::from_vec(x, dims.as_slice(), &device)?)
}
