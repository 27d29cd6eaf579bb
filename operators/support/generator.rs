//! The generator component: IDiff-Face's denoiser with its sampler settings, turning keyed
//! jobs (identity, noise index, context) into latents. The `diffuse` operator runs it over its
//! input rows; `filter` runs the same component to re-draw rejected samples.
//!
//! `reproducible: exact` runs every latent through its own denoiser calls (bytes independent of
//! batching); `batched` stacks `batch` latents per call (see the `diffuse` operator's docs).

use super::loading;
use super::model_ref::{self, Backend, Inference, ModelRef, Provider};
use crate::spec::{ConfigError, NodeSpec};
use candle_core::{Device, Tensor};
use idflow_dataset::rng::derive_seed;
use idflow_models::sampler::{batch_noise, sample, CpuStepMath, NoiseKey, SamplerConfig, SamplerKind, PRIOR_STEP};
use idflow_models::schedule::DdpmSchedule;
use idflow_models::traits::Denoiser;
use idflow_models::unet::UNetConfig;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// How latents share denoiser calls.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Reproducible {
    /// One latent per denoiser call: bytes depend only on (seed, identity, sample).
    Exact,
    /// `batch` latents per call.
    Batched,
}

/// Which reverse process.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Sampler {
    /// Ancestral DDPM.
    Ddpm,
    /// DDIM.
    Ddim,
}

/// Whether the denoiser sees the identity context.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Conditioned on the context column.
    Context,
    /// Unconditional.
    None,
}

/// The sampling parameters, shared with `filter` (which regenerates rejected samples).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    /// UNet weights and configuration.
    pub model: ModelRef,
    /// Backend (default `onnx`).
    #[serde(default)]
    pub backend: Backend,
    /// ONNX Runtime intra-op threads per worker (default cores / workers).
    #[serde(default)]
    pub threads: Option<usize>,
    /// ONNX Runtime execution providers, in priority order (default `[cpu]`).
    #[serde(default)]
    pub providers: Vec<Provider>,
    /// DDPM or DDIM.
    #[serde(default = "default_sampler")]
    pub sampler: Sampler,
    /// DDIM steps.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// DDIM η.
    #[serde(default)]
    pub eta: f64,
    /// ADMIS's DDIM variant.
    #[serde(default)]
    pub admis_compat: bool,
    /// CFG weight.
    #[serde(default = "default_guidance")]
    pub guidance: f64,
    /// Latents per call.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Exact or batched calls.
    #[serde(default = "default_reproducible")]
    pub reproducible: Reproducible,
    /// Latent shape.
    #[serde(default = "default_latent_shape")]
    pub latent_shape: [usize; 3],
    /// Conditional or not.
    #[serde(default = "default_condition")]
    pub condition: Condition,
    /// Context column.
    #[serde(default = "default_context_column")]
    pub context_column: String,
}

fn default_sampler() -> Sampler {
    Sampler::Ddpm
}
fn default_steps() -> usize {
    50
}
fn default_guidance() -> f64 {
    1.0
}
fn default_batch() -> usize {
    16
}
fn default_reproducible() -> Reproducible {
    Reproducible::Exact
}
fn default_latent_shape() -> [usize; 3] {
    [3, 32, 32]
}
fn default_condition() -> Condition {
    Condition::Context
}
fn default_context_column() -> String {
    "context".into()
}

/// Checks sampling parameters at plan time; returns the resolved UNet configuration.
/// `field` maps a parameter name to the YAML field it came from (for nested use in `filter`).
pub fn check_sampling(node: &NodeSpec, s: &SamplingParams, field: &dyn Fn(&str) -> String) -> Result<UNetConfig, ConfigError> {
    let cfg = model_ref::unet_config(s.model.config.as_ref()).map_err(|e| node.error(Some(&*field("model")), e))?;
    model_ref::check_inference(node, s.threads, field)?;
    model_ref::check_checkpoint(node, &field("model"), &s.model.checkpoint, model_ref::Network::Unet(&cfg))?;
    model_ref::check_unet(&cfg, s.latent_shape[0]).map_err(|e| node.error(Some(&*field("latent_shape")), e))?;
    if s.latent_shape.contains(&0) {
        return Err(node.error(Some(&*field("latent_shape")), "dimensions must be positive"));
    }
    let down = 1usize << (cfg.channel_multipliers.len() - 1);
    if !s.latent_shape[1].is_multiple_of(down) || !s.latent_shape[2].is_multiple_of(down) {
        return Err(node.error(
            Some(&*field("latent_shape")),
            format!("height and width must be multiples of {down} (the UNet downsamples {} times)", cfg.channel_multipliers.len() - 1),
        ));
    }
    if s.batch == 0 {
        return Err(node.error(Some(&*field("batch")), "must be at least 1"));
    }
    if s.sampler == Sampler::Ddim && s.steps == 0 {
        return Err(node.error(Some(&*field("steps")), "must be at least 1"));
    }
    if !(0.0..=10.0).contains(&s.eta) {
        return Err(node.error(Some(&*field("eta")), "must be within 0..10"));
    }
    if !s.guidance.is_finite() {
        return Err(node.error(Some(&*field("guidance")), "must be a finite number"));
    }
    match s.condition {
        Condition::None if s.guidance != 1.0 => {
            return Err(node.error(Some(&*field("guidance")), "classifier-free guidance needs `condition: context`"));
        }
        Condition::Context if !cfg.is_context_conditional => {
            return Err(
                node.error(Some(&*field("condition")), "the model is unconditional (is_context_conditional: false); set `condition: none`")
            );
        }
        _ => {}
    }
    Ok(cfg)
}

/// The rows' noise index for `sample` on draw `attempt` (0 = first draw; `filter` re-draws with
/// attempt 1, 2, …): `sample + attempt·2³²`.
pub fn noise_sample(sample: u32, attempt: u32) -> u64 {
    sample as u64 | ((attempt as u64) << 32)
}

/// One latent to generate.
#[derive(Clone, Copy, Debug)]
pub struct Job<'a> {
    /// Identity (noise key).
    pub identity: u64,
    /// Noise index ([`noise_sample`]).
    pub noise_sample: u64,
    /// Context, when conditional.
    pub context: Option<&'a [f32]>,
}

/// A loaded denoiser with its sampler settings: turns [`Job`]s into latents.
pub struct Generator {
    unet: Box<dyn Denoiser>,
    schedule: DdpmSchedule,
    sampler: SamplerConfig,
    latent_shape: [usize; 3],
    seed: u64,
    exact: bool,
    context_dim: usize,
}

impl Generator {
    /// Loads the checkpoint (on the node's backend, sized for `workers` local workers) and checks
    /// the sampler against its schedule.
    pub fn load(s: &SamplingParams, cfg: &UNetConfig, seed: u64, workers: usize) -> Result<Self, String> {
        let (unet, schedule) =
            loading::load_denoiser(&Inference::new(s.backend, s.threads, &s.providers, workers), &s.model.checkpoint, cfg)?;
        if s.sampler == Sampler::Ddim && s.steps > schedule.len() {
            return Err(format!("steps {} exceeds the model's T = {}", s.steps, schedule.len()));
        }
        let kind = match s.sampler {
            Sampler::Ddpm => SamplerKind::Ddpm,
            Sampler::Ddim => SamplerKind::Ddim { steps: s.steps, eta: s.eta, admis_compat: s.admis_compat },
        };
        Ok(Self {
            unet,
            schedule,
            sampler: SamplerConfig { kind, guidance_scale: (s.guidance != 1.0).then_some(s.guidance) },
            latent_shape: s.latent_shape,
            seed,
            exact: s.reproducible == Reproducible::Exact,
            context_dim: cfg.context_input_channels,
        })
    }

    /// The latent shape `[c, h, w]`.
    pub fn latent_shape(&self) -> [usize; 3] {
        self.latent_shape
    }

    /// Values per latent.
    pub fn latent_len(&self) -> usize {
        self.latent_shape.iter().product()
    }

    /// The `seed` column value of a job: the derived key of its noise stream.
    pub fn row_seed(&self, identity: u64, noise_sample: u64) -> u64 {
        derive_seed(&[self.seed, identity, noise_sample])
    }

    /// Latents for `jobs`, row-major (one call in `batched` mode, one call per job in `exact`).
    pub fn latents(&self, jobs: &[Job]) -> Result<Vec<f32>, String> {
        self.latents_timed(jobs, None)
    }

    /// [`Generator::latents`], adding the nanoseconds spent inside the denoiser calls to
    /// `model_ns` when given.
    pub fn latents_timed(&self, jobs: &[Job], model_ns: Option<&AtomicU64>) -> Result<Vec<f32>, String> {
        if self.exact {
            let mut out = Vec::with_capacity(jobs.len() * self.latent_len());
            for j in jobs {
                out.extend(self.run(std::slice::from_ref(j), model_ns)?);
            }
            Ok(out)
        } else {
            self.run(jobs, model_ns)
        }
    }

    fn run(&self, jobs: &[Job], model_ns: Option<&AtomicU64>) -> Result<Vec<f32>, String> {
        let err = |e: idflow_models::ModelError| e.to_string();
        let keys: Vec<NoiseKey> = jobs.iter().map(|j| NoiseKey { seed: self.seed, identity: j.identity, sample: j.noise_sample }).collect();
        let x_t = batch_noise(&keys, PRIOR_STEP, &self.latent_shape, &Device::Cpu).map_err(err)?;
        let context = match jobs.first().and_then(|j| j.context) {
            Some(_) => {
                let mut v = Vec::with_capacity(jobs.len() * self.context_dim);
                for j in jobs {
                    let c = j.context.ok_or("a job without context in a conditional batch")?;
                    if c.len() != self.context_dim {
                        return Err(format!(
                            "identity {}: context has {} values, the model expects {}",
                            j.identity,
                            c.len(),
                            self.context_dim
                        ));
                    }
                    v.extend_from_slice(c);
                }
                Some(Tensor::from_vec(v, (jobs.len(), self.context_dim), &Device::Cpu).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let timed;
        let unet: &dyn Denoiser = match model_ns {
            Some(ns) => {
                timed = TimedDenoiser { inner: self.unet.as_ref(), ns };
                &timed
            }
            None => self.unet.as_ref(),
        };
        let x0 = sample(unet, &self.schedule, &self.sampler, &CpuStepMath, &x_t, context.as_ref(), &keys).map_err(err)?;
        x0.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| e.to_string())
    }
}

/// A denoiser that adds the time spent in its calls to a counter (the report's `model_seconds`).
struct TimedDenoiser<'a> {
    inner: &'a dyn Denoiser,
    ns: &'a AtomicU64,
}

impl TimedDenoiser<'_> {
    fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let t0 = Instant::now();
        let out = f();
        self.ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
}

impl Denoiser for TimedDenoiser<'_> {
    fn eps(&self, x: &Tensor, t: &Tensor, context: Option<&Tensor>) -> idflow_models::Result<Tensor> {
        self.time(|| self.inner.eps(x, t, context))
    }

    fn eps_guided(&self, x: &Tensor, t: &Tensor, context: &Tensor, w: f64) -> idflow_models::Result<Tensor> {
        self.time(|| self.inner.eps_guided(x, t, context, w))
    }
}
