//! The diffusion half of `train`: IDiff-Face denoiser training on latent (+ context) rows with
//! per-step CosineAnnealingWarmRestarts, EMA, keyed latent flips, checkpoints in the official
//! wrapper layout.
//!
//! Flip augmentation mirrors the *latent* along its width. The VQ-f4 encoder is convolutional,
//! so the latent of a mirrored face is close to (not exactly) the mirrored latent; IDiff-Face
//! flips the image before encoding — precomputed latents make that impossible here.

use super::data::{self, ResumePoint};
use super::driver::{StepLoss, TrainTask, TrainingSet};
use super::params::CommonParams;
use crate::operators::support::model_ref::{self as model_spec, ConfigRef};
use candle_core::Tensor;
use idflow_models::sampler::NoiseKey;
use idflow_models::train::diffusion::{DiffusionTrainConfig, DiffusionTrainer};
use idflow_models::train::schedule::{EmaConfig, LrSchedule};
use idflow_models::unet::UNetConfig;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The parameters of `task: diffusion` (besides the common ones).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct DiffusionParams {
    /// UNet configuration.
    #[serde(default)]
    pub unet: Option<ConfigRef>,
    /// Context column (`null`: unconditional).
    #[serde(default = "default_context")]
    pub context: Option<String>,
    /// Latent shape.
    #[serde(default)]
    pub latent_shape: Option<Vec<usize>>,
    /// CPD probability.
    #[serde(default)]
    pub cpd: Option<f64>,
    /// Whole-context dropout.
    #[serde(default)]
    pub uncond_probability: f64,
    /// Diffusion steps.
    #[serde(default = "default_timesteps")]
    pub timesteps: usize,
    /// EMA.
    #[serde(default)]
    pub ema: EmaConfig,
}

fn default_context() -> Option<String> {
    Some("context".into())
}
fn default_timesteps() -> usize {
    1000
}

/// Resolved diffusion settings.
#[derive(Debug, Clone)]
pub struct DiffusionSetup {
    /// The parameters as written.
    pub params: DiffusionParams,
    /// The UNet (CPD p already applied).
    pub unet: UNetConfig,
    /// Latent shape `[c, h, w]`.
    pub latent_shape: [usize; 3],
    /// Learning-rate schedule.
    pub lr: LrSchedule,
}

/// Current weights, official wrapper layout.
pub const MODEL: &str = "model.safetensors";
/// EMA weights, official wrapper layout.
pub const EMA_MODEL: &str = "ema_averaged_model.safetensors";

/// [`MODEL`] as a `torch.save` archive (what IDiff-Face's `main.py` writes).
pub const MODEL_CKPT: &str = "model.ckpt";

/// [`EMA_MODEL`] as a `torch.save` archive.
pub const EMA_MODEL_CKPT: &str = "ema_averaged_model.ckpt";

/// Denoiser training: the trainer and the settings of one run.
pub struct DiffusionTask {
    setup: DiffusionSetup,
    trainer: DiffusionTrainer,
    seed: u64,
}

impl TrainTask for DiffusionTask {
    type Params = DiffusionParams;
    type Setup = DiffusionSetup;
    const NAME: &'static str = "diffusion";
    const ROW: &'static str = "latent";
    const UNIT: &'static str = "latents";

    fn resolve(common: &CommonParams, p: DiffusionParams) -> Result<DiffusionSetup, (&'static str, String)> {
        let mut unet = model_spec::unet_config(p.unet.as_ref()).map_err(|e| ("unet", e))?;
        if let Some(cpd) = p.cpd {
            if !(0.0..1.0).contains(&cpd) {
                return Err(("cpd", "must be within [0, 1)".into()));
            }
            unet.context_dropout_probability = cpd;
        }
        let shape = p.latent_shape.clone().ok_or(("latent_shape", "required for task: diffusion, e.g. [3, 28, 28]".to_string()))?;
        let [c, h, w] = shape[..] else {
            return Err(("latent_shape", format!("must be [c, h, w], got {shape:?}")));
        };
        model_spec::check_unet(&unet, c).map_err(|e| ("unet", e))?;
        if p.context.is_some() != unet.is_context_conditional {
            return Err(("context", "set a context column exactly when the UNet is context-conditional".into()));
        }
        if !(0.0..1.0).contains(&p.uncond_probability) || (p.uncond_probability > 0.0 && !unet.learn_empty_context) {
            return Err(("uncond_probability", "must be within [0, 1) and needs learn_empty_context".into()));
        }
        if p.timesteps == 0 {
            return Err(("timesteps", "must be at least 1".into()));
        }
        let lr = common.lr.clone().unwrap_or(LrSchedule::WarmRestarts { lr: 1e-4, t0: 10_000, t_mult: 1, eta_min: 0.0 });
        Ok(DiffusionSetup { params: p, unet, latent_shape: [c, h, w], lr })
    }

    fn row_shape(setup: &DiffusionSetup) -> [usize; 3] {
        setup.latent_shape
    }

    fn new(setup: &DiffusionSetup, common: &CommonParams, set: &TrainingSet, seed: u64, _workers: usize) -> Result<Self, String> {
        let ctx_dim = setup.unet.context_input_channels;
        if setup.params.context.is_some() {
            if let Some(bad) = set.examples.iter().find(|e| e.extra.len() != ctx_dim) {
                return Err(format!(
                    "identity {} sample {}: context has {} values, the UNet takes {ctx_dim}",
                    bad.identity,
                    bad.sample,
                    bad.extra.len()
                ));
            }
        }
        let p = &setup.params;
        let trainer = DiffusionTrainer::new(DiffusionTrainConfig {
            unet: setup.unet.clone(),
            timesteps: p.timesteps,
            uncond_probability: p.uncond_probability,
            ema: p.ema,
            clip_grad_norm: common.clip_grad_norm,
            seed,
        })
        .map_err(|e| e.to_string())?;
        Ok(Self { setup: setup.clone(), trainer, seed })
    }

    fn lr(&self) -> &LrSchedule {
        &self.setup.lr
    }

    fn step(&self) -> u64 {
        self.trainer.step()
    }

    fn train_step(&mut self, set: &TrainingSet, rows: &[usize], batch: &Tensor, lr: f64) -> Result<StepLoss, String> {
        let context = if self.setup.params.context.is_some() {
            let crefs: Vec<&[f32]> = rows.iter().map(|&i| set.examples[i].extra.as_slice()).collect();
            Some(data::stack(&crefs, &[self.setup.unet.context_input_channels])?)
        } else {
            None
        };
        let keys: Vec<NoiseKey> = rows
            .iter()
            .map(|&i| NoiseKey { seed: self.seed, identity: set.examples[i].identity, sample: set.examples[i].sample })
            .collect();
        self.trainer.train_step(batch, context.as_ref(), &keys, lr).map(StepLoss::loss).map_err(|e| e.to_string())
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>, String> {
        self.trainer.state().map_err(|e| e.to_string())
    }

    fn load_state(&mut self, r: &ResumePoint, path: &Path) -> Result<(), String> {
        self.trainer.load_state(&r.entries, r.step, &path.display().to_string()).map_err(|e| e.to_string())
    }

    fn write_outputs(&self, output: &Path) -> Result<(), String> {
        let meta = HashMap::from([("unet".to_string(), serde_json::to_string(&self.setup.unet).unwrap_or_default())]);
        let (model, ema) = (self.trainer.model_state().map_err(|e| e.to_string())?, self.trainer.ema_state().map_err(|e| e.to_string())?);
        data::write_model_files(output, &[(MODEL, MODEL_CKPT, &model), (EMA_MODEL, EMA_MODEL_CKPT, &ema)], &meta)
    }
}
