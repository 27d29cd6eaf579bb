//! One optimiser step of IDiff-Face's denoiser: eps-MSE on first-stage latents with
//! training-mode contextual partial dropout (CPD, element-wise on the projected context) and
//! optional whole-context dropout to the learned empty context, Adam, EMA with warm-up; plus
//! checkpoint tensors in the official layout (`eps_model.*` + the 8 schedule buffers).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use idflow_dataset::rng::KeyedRng;

use super::loss::ddpm_training_loss;
use super::optim::{clip_grad_norm, params, Adam};
use super::schedule::{ema_decay, EmaConfig};
use super::state::{keyed_init, load_into, named_vars, Ema};
use crate::error::{input_error, Result};
use crate::sampler::NoiseKey;
use crate::schedule::DdpmSchedule;
use crate::unet::{ConditionalUNet, UNetConfig};

/// Key prefix of the denoiser in the official wrapper state dict.
pub const EPS_PREFIX: &str = "eps_model.";
/// Key prefix of the EMA copy in idflow's resume checkpoint.
pub const EMA_PREFIX: &str = "ema.";

/// Hyper-parameters of denoiser training.
#[derive(Clone, Debug, PartialEq)]
pub struct DiffusionTrainConfig {
    /// The UNet (its `context_dropout_probability` is the CPD p).
    pub unet: UNetConfig,
    /// Diffusion steps T of the linear schedule.
    pub timesteps: usize,
    /// Probability of replacing a row's whole context with the empty context.
    pub uncond_probability: f64,
    /// EMA warm-up.
    pub ema: EmaConfig,
    /// Maximum global gradient norm, if any.
    pub clip_grad_norm: Option<f64>,
    /// Seed of initialisation, noise, timesteps and dropout.
    pub seed: u64,
}

/// UNet + schedule + Adam + EMA.
pub struct DiffusionTrainer {
    config: DiffusionTrainConfig,
    varmap: VarMap,
    unet: ConditionalUNet,
    schedule: DdpmSchedule,
    adam: Adam,
    ema: Ema,
    step: u64,
}

impl DiffusionTrainer {
    /// A freshly initialised denoiser (keyed by `config.seed`).
    pub fn new(config: DiffusionTrainConfig) -> Result<Self> {
        if !(0.0..1.0).contains(&config.uncond_probability) {
            return Err(input_error("uncond_probability", "must be within [0, 1)"));
        }
        if config.uncond_probability > 0.0 && !config.unet.learn_empty_context {
            return Err(input_error("uncond_probability", "needs a UNet with learn_empty_context"));
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let unet = ConditionalUNet::new(&config.unet, vb)?;
        keyed_init(&varmap, config.seed)?;
        let adam = Adam::new(params(&varmap));
        let ema = Ema::new(&varmap)?;
        let schedule = DdpmSchedule::linear(config.timesteps);
        Ok(Self { config, varmap, unet, schedule, adam, ema, step: 0 })
    }

    /// Optimiser steps taken.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The configuration.
    pub fn config(&self) -> &DiffusionTrainConfig {
        &self.config
    }

    /// One Adam step on latents `[B, C, H, W]` with contexts `[B, D]` (if conditional); `keys`
    /// key each row's timestep and noise (with the step counter), returns the loss.
    pub fn train_step(&mut self, latents: &Tensor, context: Option<&Tensor>, keys: &[NoiseKey], lr: f64) -> Result<f64> {
        let b = latents.dim(0)?;
        let mut rng = KeyedRng::new(&[self.config.seed, 0xc9d, self.step]);
        let mask = if self.config.uncond_probability > 0.0 && context.is_some() {
            let m: Vec<u8> = (0..b).map(|_| u8::from(rng.chance(self.config.uncond_probability))).collect();
            Some(Tensor::from_vec(m, b, &Device::Cpu)?)
        } else {
            None
        };
        let loss = ddpm_training_loss(&self.unet, &self.schedule, latents, context, mask.as_ref(), keys, self.step, &mut rng)?;
        let mut grads = loss.backward()?;
        if let Some(max) = self.config.clip_grad_norm {
            clip_grad_norm(self.adam.params(), &mut grads, max)?;
        }
        self.adam.step(&grads, lr)?;
        let decay = ema_decay(&self.config.ema, self.ema.updates());
        self.ema.update(&self.varmap, decay)?;
        self.step += 1;
        Ok(loss.to_dtype(DType::F64)?.to_scalar()?)
    }

    fn with_buffers(&self, model: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>> {
        let mut out = self.schedule.to_tensors()?;
        out.extend(model.into_iter().map(|(k, t)| (format!("{EPS_PREFIX}{k}"), t)));
        Ok(out)
    }

    /// The current weights in the official wrapper layout (schedule buffers + `eps_model.*`).
    pub fn model_state(&self) -> Result<Vec<(String, Tensor)>> {
        self.with_buffers(named_vars(&self.varmap).into_iter().map(|(k, v)| (k, v.as_tensor().clone())).collect())
    }

    /// The EMA weights in the official wrapper layout (`ema_averaged_model`).
    pub fn ema_state(&self) -> Result<Vec<(String, Tensor)>> {
        self.with_buffers(self.ema.tensors().iter().map(|(k, t)| (k.clone(), t.clone())).collect())
    }

    /// Everything a resume needs: model (`eps_model.*`), EMA (`ema.eps_model.*`), Adam moments.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> =
            named_vars(&self.varmap).into_iter().map(|(k, v)| (format!("{EPS_PREFIX}{k}"), v.as_tensor().clone())).collect();
        out.extend(self.ema.tensors().iter().map(|(k, t)| (format!("{EMA_PREFIX}{EPS_PREFIX}{k}"), t.clone())));
        out.extend(self.adam.state()?);
        Ok(out)
    }

    /// Restores [`state`](Self::state) and the step counter (the EMA saw one update per step).
    pub fn load_state(&mut self, entries: &BTreeMap<String, Tensor>, step: u64, source: &str) -> Result<()> {
        load_into(&self.varmap, entries, EPS_PREFIX, source)?;
        self.ema.load(entries, &format!("{EMA_PREFIX}{EPS_PREFIX}"), step, source)?;
        self.adam.load_state(entries)?;
        self.step = step;
        Ok(())
    }
}
