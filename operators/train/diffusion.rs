//! The diffusion half of `train`: IDiff-Face denoiser training on latent (+ context) rows with
//! per-step CosineAnnealingWarmRestarts, EMA, keyed latent flips, checkpoints in the official
//! wrapper layout.
//!
//! Flip augmentation mirrors the *latent* along its width. The VQ-f4 encoder is convolutional,
//! so the latent of a mirrored face is close to (not exactly) the mirrored latent; IDiff-Face
//! flips the image before encoding — precomputed latents make that impossible here.

use super::data::{self, Example};
use super::{EpochStats, TrainParams};
use crate::operators::support::model_ref as model_spec;
use idflow_models::sampler::NoiseKey;
use idflow_models::train_loop::diffusion::{DiffusionTrainConfig, DiffusionTrainer};
use idflow_models::train_loop::schedule::LrSchedule;
use idflow_models::unet::UNetConfig;
use std::collections::HashMap;
use std::time::Instant;

/// Resolved diffusion settings.
#[derive(Debug, Clone)]
pub struct DiffusionSetup {
    /// The UNet (CPD p already applied).
    pub unet: UNetConfig,
    /// Latent shape `[c, h, w]`.
    pub latent_shape: [usize; 3],
    /// Learning-rate schedule.
    pub lr: LrSchedule,
}

/// Checkpoint file name inside `output`.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// Current weights, official wrapper layout.
pub const MODEL: &str = "model.safetensors";
/// EMA weights, official wrapper layout.
pub const EMA_MODEL: &str = "ema_averaged_model.safetensors";

/// [`MODEL`] as a `torch.save` archive (what IDiff-Face's `main.py` writes).
pub const MODEL_CKPT: &str = "model.ckpt";

/// [`EMA_MODEL`] as a `torch.save` archive.
pub const EMA_MODEL_CKPT: &str = "ema_averaged_model.ckpt";

impl DiffusionSetup {
    /// Resolves the parameters; errors name the field.
    pub fn resolve(p: &TrainParams) -> Result<Self, (&'static str, String)> {
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
        let lr = p.lr.clone().unwrap_or(LrSchedule::WarmRestarts { lr: 1e-4, t0: 10_000, t_mult: 1, eta_min: 0.0 });
        Ok(Self { unet, latent_shape: [c, h, w], lr })
    }
}

/// Trains on `examples` and writes the checkpoints; returns the statistics of the epochs run.
pub fn run(setup: &DiffusionSetup, p: &TrainParams, seed: u64, examples: Vec<Example>) -> Result<Vec<EpochStats>, String> {
    let (examples, _, _) = data::canonical(examples);
    let n = examples.len();
    let [c, h, w] = setup.latent_shape;
    if n < 1 {
        return Err("diffusion training got no rows".into());
    }
    if let Some(bad) = examples.iter().find(|e| e.values.len() != c * h * w) {
        return Err(format!(
            "identity {} sample {}: latent has {} values, latent_shape is {:?}",
            bad.identity,
            bad.sample,
            bad.values.len(),
            setup.latent_shape
        ));
    }
    let ctx_dim = setup.unet.context_input_channels;
    if p.context.is_some() {
        if let Some(bad) = examples.iter().find(|e| e.extra.len() != ctx_dim) {
            return Err(format!(
                "identity {} sample {}: context has {} values, the UNet takes {ctx_dim}",
                bad.identity,
                bad.sample,
                bad.extra.len()
            ));
        }
    }
    let mut trainer = DiffusionTrainer::new(DiffusionTrainConfig {
        unet: setup.unet.clone(),
        timesteps: p.timesteps,
        uncond_probability: p.uncond_probability,
        ema: p.ema,
        clip_grad_norm: p.clip_grad_norm,
        seed,
    })
    .map_err(|e| e.to_string())?;
    let ckpt_path = p.output.join(CHECKPOINT);
    let (mut start_epoch, mut out) = (0, Vec::new());
    if let Some(r) = data::resume_point(&ckpt_path, p.resume)? {
        trainer.load_state(&r.entries, r.step, &ckpt_path.display().to_string()).map_err(|e| e.to_string())?;
        start_epoch = r.epoch;
        out = r.history;
    }
    let bs = p.batch_size;
    let total_steps = n.div_ceil(bs) as u64 * p.epochs;
    let last_epoch = p.stop_after_epochs.map_or(p.epochs, |s| s.min(p.epochs));
    for epoch in start_epoch..last_epoch {
        let t0 = Instant::now();
        let order = data::epoch_order(n, seed, epoch);
        let (mut loss_sum, mut seen, mut lr) = (0.0, 0usize, 0.0);
        for chunk in order.chunks(bs) {
            let mut rows = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let mut v = examples[i].values.clone();
                if p.flip && data::flipped(seed, epoch, i) {
                    data::flip_chw(&mut v, w);
                }
                rows.push(v);
            }
            let refs: Vec<&[f32]> = rows.iter().map(|v| v.as_slice()).collect();
            let latents = data::stack(&refs, &[c, h, w])?;
            let context = if p.context.is_some() {
                let crefs: Vec<&[f32]> = chunk.iter().map(|&i| examples[i].extra.as_slice()).collect();
                Some(data::stack(&crefs, &[ctx_dim])?)
            } else {
                None
            };
            let keys: Vec<NoiseKey> =
                chunk.iter().map(|&i| NoiseKey { seed, identity: examples[i].identity, sample: examples[i].sample }).collect();
            lr = setup.lr.lr(trainer.step(), epoch, total_steps);
            let loss = trainer.train_step(&latents, context.as_ref(), &keys, lr).map_err(|e| e.to_string())?;
            if !loss.is_finite() {
                return Err(format!("epoch {}: loss became {loss} at step {}", epoch + 1, trainer.step()));
            }
            loss_sum += loss * chunk.len() as f64;
            seen += chunk.len();
        }
        let stats = EpochStats {
            epoch: epoch + 1,
            step: trainer.step(),
            loss: loss_sum / seen.max(1) as f64,
            accuracy: None,
            lr,
            images_per_s: seen as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            evals: Vec::new(),
        };
        tracing::info!(
            "train: epoch {}/{} step {} loss {:.5} lr {:.2e} {:.1} latents/s",
            stats.epoch,
            p.epochs,
            stats.step,
            stats.loss,
            lr,
            stats.images_per_s
        );
        let meta = HashMap::from([
            ("task".to_string(), "diffusion".to_string()),
            ("epoch".to_string(), (epoch + 1).to_string()),
            ("step".to_string(), trainer.step().to_string()),
        ]);
        out.push(stats);
        data::write_checkpoint(&ckpt_path, &trainer.state().map_err(|e| e.to_string())?, data::with_history(meta, &out))?;
    }
    let meta = HashMap::from([("unet".to_string(), serde_json::to_string(&setup.unet).unwrap_or_default())]);
    let (model, ema) = (trainer.model_state().map_err(|e| e.to_string())?, trainer.ema_state().map_err(|e| e.to_string())?);
    data::write_checkpoint(&p.output.join(MODEL), &model, meta.clone())?;
    data::write_checkpoint(&p.output.join(EMA_MODEL), &ema, meta)?;
    // the same weights as torch.save archives, for the official PyTorch code
    data::write_torch_state_dict(&p.output.join(MODEL_CKPT), &model)?;
    data::write_torch_state_dict(&p.output.join(EMA_MODEL_CKPT), &ema)?;
    Ok(out)
}
