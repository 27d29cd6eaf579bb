//! The first-stage half of `train` (`task: autoencoder`): a VQ autoencoder trained on face
//! images (L1 + L2 reconstruction, commitment, EMA codebook; no adversarial term), written as
//! IDiff-Face's split encoder / decoder files.

use super::data::{self, ResumePoint};
use super::driver::{StepLoss, TrainTask, TrainingSet};
use super::params::CommonParams;
use crate::operators::support::model_ref::{self as model_spec, ConfigRef};
use candle_core::Tensor;
use idflow_models::train::autoencoder::{AutoencoderTrainConfig, AutoencoderTrainer};
use idflow_models::train::schedule::LrSchedule;
use idflow_models::vq::VqConfig;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The parameters of `task: autoencoder` (besides the common ones).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderParams {
    /// Image side (default: the configuration's resolution).
    #[serde(default)]
    pub size: Option<u32>,
    /// VQ configuration.
    #[serde(default)]
    pub first_stage: Option<ConfigRef>,
    /// Codebook size.
    #[serde(default = "default_n_embed")]
    pub n_embed: usize,
    /// Commitment weight.
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Codebook EMA decay.
    #[serde(default = "default_codebook_decay")]
    pub codebook_decay: f64,
}

fn default_n_embed() -> usize {
    8192
}
fn default_beta() -> f64 {
    0.25
}
fn default_codebook_decay() -> f64 {
    0.99
}

/// Resolved autoencoder settings.
#[derive(Debug, Clone)]
pub struct AutoencoderSetup {
    /// The parameters as written.
    pub params: AutoencoderParams,
    /// Architecture.
    pub vq: VqConfig,
    /// Image side.
    pub size: u32,
    /// Learning-rate schedule.
    pub lr: LrSchedule,
}

/// The encoder file (`encoder.*`, `quant_conv.*`).
pub const ENCODER: &str = "first_stage_encoder_state_dict.safetensors";
/// The decoder file (`decoder.*`, `post_quant_conv.*`, `quantize.embedding.weight`).
pub const DECODER: &str = "first_stage_decoder_state_dict.safetensors";

/// [`ENCODER`] as a `torch.save` archive.
pub const ENCODER_PT: &str = "first_stage_encoder_state_dict.pt";

/// [`DECODER`] as a `torch.save` archive.
pub const DECODER_PT: &str = "first_stage_decoder_state_dict.pt";

/// First-stage training: the trainer and the settings of one run.
pub struct AutoencoderTask {
    setup: AutoencoderSetup,
    trainer: AutoencoderTrainer,
}

impl TrainTask for AutoencoderTask {
    type Params = AutoencoderParams;
    type Setup = AutoencoderSetup;
    const NAME: &'static str = "autoencoder";
    const ROW: &'static str = "image";

    fn resolve(common: &CommonParams, p: AutoencoderParams) -> Result<AutoencoderSetup, (&'static str, String)> {
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
        let lr = common.lr.clone().unwrap_or(LrSchedule::Constant { lr: 1e-4 });
        Ok(AutoencoderSetup { params: p, vq, size, lr })
    }

    fn row_shape(setup: &AutoencoderSetup) -> [usize; 3] {
        let s = setup.size as usize;
        [3, s, s]
    }

    fn new(setup: &AutoencoderSetup, common: &CommonParams, _set: &TrainingSet, seed: u64, _workers: usize) -> Result<Self, String> {
        let p = &setup.params;
        let trainer = AutoencoderTrainer::new(AutoencoderTrainConfig {
            vq: setup.vq.clone(),
            n_embed: p.n_embed,
            beta: p.beta,
            codebook_decay: p.codebook_decay,
            clip_grad_norm: common.clip_grad_norm,
            seed,
        })
        .map_err(|e| e.to_string())?;
        Ok(Self { setup: setup.clone(), trainer })
    }

    fn lr(&self) -> &LrSchedule {
        &self.setup.lr
    }

    fn step(&self) -> u64 {
        self.trainer.step()
    }

    fn train_step(&mut self, _set: &TrainingSet, _rows: &[usize], batch: &Tensor, lr: f64) -> Result<StepLoss, String> {
        let s = self.trainer.train_step(batch, lr).map_err(|e| e.to_string())?;
        Ok(StepLoss { loss: s.loss, correct: None, logged: Some(("L1", s.l1)) })
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>, String> {
        self.trainer.state().map_err(|e| e.to_string())
    }

    fn load_state(&mut self, r: &ResumePoint, path: &Path) -> Result<(), String> {
        self.trainer.load_state(&r.entries, r.step, &path.display().to_string()).map_err(|e| e.to_string())
    }

    fn write_outputs(&self, output: &Path) -> Result<(), String> {
        let meta = HashMap::from([("first_stage".to_string(), serde_json::to_string(&self.setup.vq).unwrap_or_default())]);
        let (encoder, decoder) = (self.trainer.encoder_state(), self.trainer.decoder_state());
        // the split files also as torch.save archives, as the official first stage ships them
        data::write_model_files(output, &[(ENCODER, ENCODER_PT, &encoder), (DECODER, DECODER_PT, &decoder)], &meta)
    }
}
