//! The first-stage half of `train` (`task: autoencoder`): a VQ autoencoder trained on face
//! images (L1 + L2 reconstruction, commitment, EMA codebook; no adversarial term), written as
//! IDiff-Face's split encoder / decoder files.

use super::data::{self, Example};
use super::{EpochStats, TrainParams};
use crate::operators::support::model_ref as model_spec;
use idflow_models::train_loop::autoencoder::{AutoencoderTrainConfig, AutoencoderTrainer};
use idflow_models::train_loop::schedule::LrSchedule;
use idflow_models::vq::VqConfig;
use std::collections::HashMap;
use std::time::Instant;

/// Resolved autoencoder settings.
#[derive(Debug, Clone)]
pub struct AutoencoderSetup {
    /// Architecture.
    pub vq: VqConfig,
    /// Image side.
    pub size: u32,
    /// Learning-rate schedule.
    pub lr: LrSchedule,
}

/// Checkpoint file name inside `output`.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// The encoder file (`encoder.*`, `quant_conv.*`).
pub const ENCODER: &str = "first_stage_encoder_state_dict.safetensors";
/// The decoder file (`decoder.*`, `post_quant_conv.*`, `quantize.embedding.weight`).
pub const DECODER: &str = "first_stage_decoder_state_dict.safetensors";

/// [`ENCODER`] as a `torch.save` archive.
pub const ENCODER_PT: &str = "first_stage_encoder_state_dict.pt";

/// [`DECODER`] as a `torch.save` archive.
pub const DECODER_PT: &str = "first_stage_decoder_state_dict.pt";

impl AutoencoderSetup {
    /// Resolves the parameters; errors name the field.
    pub fn resolve(p: &TrainParams) -> Result<Self, (&'static str, String)> {
        let vq = model_spec::vq_config(p.first_stage.as_ref()).map_err(|e| ("first_stage", e))?;
        let f = 1u32 << vq.ch_mult.len().saturating_sub(1);
        let size = p.size.unwrap_or(vq.resolution as u32);
        if size == 0 || !size.is_multiple_of(f) {
            return Err(("size", format!("must be a positive multiple of the downsampling factor {f}")));
        }
        if p.n_embed == 0 {
            return Err(("n_embed", "must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&p.codebook_decay) {
            return Err(("codebook_decay", "must be within [0, 1)".into()));
        }
        let lr = p.lr.clone().unwrap_or(LrSchedule::Constant { lr: 1e-4 });
        Ok(Self { vq, size, lr })
    }
}

/// Trains on `examples` and writes the checkpoints; returns the statistics of the epochs run.
pub fn run(setup: &AutoencoderSetup, p: &TrainParams, seed: u64, examples: Vec<Example>) -> Result<Vec<EpochStats>, String> {
    let (examples, _, _) = data::canonical(examples);
    let n = examples.len();
    let s = setup.size as usize;
    if n < 1 {
        return Err("autoencoder training got no rows".into());
    }
    if let Some(bad) = examples.iter().find(|e| e.values.len() != 3 * s * s) {
        return Err(format!("identity {} sample {}: image has {} values, expected 3×{s}×{s}", bad.identity, bad.sample, bad.values.len()));
    }
    let mut trainer = AutoencoderTrainer::new(AutoencoderTrainConfig {
        vq: setup.vq.clone(),
        n_embed: p.n_embed,
        beta: p.beta,
        codebook_decay: p.codebook_decay,
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
    let last_epoch = p.stop_after_epochs.map_or(p.epochs, |e| e.min(p.epochs));
    for epoch in start_epoch..last_epoch {
        let t0 = Instant::now();
        let order = data::epoch_order(n, seed, epoch);
        let (mut loss_sum, mut l1_sum, mut seen, mut lr) = (0.0, 0.0, 0usize, 0.0);
        for chunk in order.chunks(bs) {
            let rows: Vec<Vec<f32>> = chunk
                .iter()
                .map(|&i| {
                    let mut v = examples[i].values.clone();
                    if p.flip && data::flipped(seed, epoch, i) {
                        data::flip_chw(&mut v, s);
                    }
                    v
                })
                .collect();
            let refs: Vec<&[f32]> = rows.iter().map(|v| v.as_slice()).collect();
            lr = setup.lr.lr(trainer.step(), epoch, total_steps);
            let st = trainer.train_step(&data::stack(&refs, &[3, s, s])?, lr).map_err(|e| e.to_string())?;
            if !st.loss.is_finite() {
                return Err(format!("epoch {}: loss became {} at step {}", epoch + 1, st.loss, trainer.step()));
            }
            loss_sum += st.loss * chunk.len() as f64;
            l1_sum += st.l1 * chunk.len() as f64;
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
            "train: epoch {}/{} step {} loss {:.5} L1 {:.5} lr {:.2e} {:.1} images/s",
            stats.epoch,
            p.epochs,
            stats.step,
            stats.loss,
            l1_sum / seen.max(1) as f64,
            lr,
            stats.images_per_s
        );
        let meta = HashMap::from([
            ("task".to_string(), "autoencoder".to_string()),
            ("epoch".to_string(), (epoch + 1).to_string()),
            ("step".to_string(), trainer.step().to_string()),
        ]);
        out.push(stats);
        data::write_checkpoint(&ckpt_path, &trainer.state().map_err(|e| e.to_string())?, data::with_history(meta, &out))?;
    }
    let meta = HashMap::from([("first_stage".to_string(), serde_json::to_string(&setup.vq).unwrap_or_default())]);
    data::write_checkpoint(&p.output.join(ENCODER), &trainer.encoder_state(), meta.clone())?;
    data::write_checkpoint(&p.output.join(DECODER), &trainer.decoder_state(), meta)?;
    // the same split files as torch.save archives, as the official first stage ships them
    data::write_torch_state_dict(&p.output.join(ENCODER_PT), &trainer.encoder_state())?;
    data::write_torch_state_dict(&p.output.join(DECODER_PT), &trainer.decoder_state())?;
    Ok(out)
}
