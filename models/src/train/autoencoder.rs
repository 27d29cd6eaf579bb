//! One optimiser step of the VQ first stage (VQ-f4 layout of LDM / IDiff-Face) without the
//! adversarial term: `L1 + L2` reconstruction through the straight-through quantiser plus the
//! commitment loss `β·‖z − sg(e)‖²`; the codebook is not trained by gradients but by exponential
//! moving averages of the assigned encoder outputs (VQ-VAE-2 / `EMAVectorQuantizer`, Laplace
//! smoothed), which is stable on small data. Parameters use Adam.
//!
//! The codebook is applied here with the *live* codebook variable, because
//! [`VectorQuantizer`](crate::vq::VectorQuantizer) caches codeword norms when it is built.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};

use super::optim::{clip_grad_norm, params, Adam};
use super::state::{keyed_init, load_into, named_vars};
use crate::error::{input_error, Result};
use crate::vq::{VqConfig, VqDecoder, VqEncoder};

/// Key of the codebook in the official decoder file.
pub const CODEBOOK: &str = "quantize.embedding.weight";

/// Hyper-parameters of first-stage training.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoencoderTrainConfig {
    /// Architecture.
    pub vq: VqConfig,
    /// Codebook size.
    pub n_embed: usize,
    /// Commitment weight β (LDM: 0.25).
    pub beta: f64,
    /// EMA decay of the codebook statistics.
    pub codebook_decay: f64,
    /// Maximum global gradient norm, if any.
    pub clip_grad_norm: Option<f64>,
    /// Seed of the initialisation.
    pub seed: u64,
}

/// Losses of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AutoencoderStats {
    /// Total loss.
    pub loss: f64,
    /// Mean absolute reconstruction error.
    pub l1: f64,
    /// Commitment term (before β).
    pub commitment: f64,
    /// Share of codewords used in this batch.
    pub usage: f64,
}

/// Encoder + decoder + codebook statistics + Adam.
pub struct AutoencoderTrainer {
    config: AutoencoderTrainConfig,
    varmap: VarMap,
    encoder: VqEncoder,
    decoder: VqDecoder,
    adam: Adam,
    cluster_size: Tensor,
    embed_sum: Tensor,
    step: u64,
}

impl AutoencoderTrainer {
    /// A freshly initialised first stage (keyed by `config.seed`; codewords `U(±1/√embed_dim)`).
    pub fn new(config: AutoencoderTrainConfig) -> Result<Self> {
        if config.n_embed == 0 || !(0.0..1.0).contains(&config.codebook_decay) {
            return Err(input_error("autoencoder", "n_embed must be positive and codebook_decay within [0, 1)"));
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        // create the codebook first with a random init so that keyed_init redraws it
        let _ = vb.pp("quantize").pp("embedding").get_with_hints(
            (config.n_embed, config.vq.embed_dim),
            "weight",
            candle_nn::Init::Randn { mean: 0.0, stdev: 1.0 },
        )?;
        let encoder = VqEncoder::new(&config.vq, vb.clone())?;
        let decoder = VqDecoder::new(&config.vq, config.n_embed, vb)?;
        keyed_init(&varmap, config.seed)?;
        let adam = Adam::new(params(&varmap).into_iter().filter(|p| p.name != CODEBOOK).collect());
        let codebook = Self::codebook_of(&varmap)?;
        let cluster_size = Tensor::ones(config.n_embed, DType::F32, &Device::Cpu)?;
        let embed_sum = codebook.copy()?.detach();
        Ok(Self { config, varmap, encoder, decoder, adam, cluster_size, embed_sum, step: 0 })
    }

    fn codebook_of(varmap: &VarMap) -> Result<Tensor> {
        let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
        Ok(data.get(CODEBOOK).ok_or_else(|| input_error("autoencoder", "no codebook variable"))?.as_tensor().clone())
    }

    /// Optimiser steps taken.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// One step on images `[B, 3, H, W]` in `[−1, 1]` at rate `lr`.
    pub fn train_step(&mut self, images: &Tensor, lr: f64) -> Result<AutoencoderStats> {
        let z = self.encoder.encode(images)?;
        let (b, c, h, w) = z.dims4()?;
        let codebook = Self::codebook_of(&self.varmap)?.detach();
        let flat = z.permute((0, 2, 3, 1))?.reshape((b * h * w, c))?;
        let flat_d = flat.detach();
        let dist = flat_d
            .sqr()?
            .sum_keepdim(1)?
            .broadcast_add(&codebook.sqr()?.sum(1)?.unsqueeze(0)?)?
            .sub(&(flat_d.matmul(&codebook.t()?)? * 2.0)?)?;
        let idx = dist.argmin(1)?;
        let e = codebook.index_select(&idx, 0)?; // [N, C]
        let zq_flat = (&flat + (&e - &flat)?.detach())?;
        let zq = zq_flat.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?.contiguous()?;
        let rec = self.decoder.decode(&zq, true)?;
        let diff = (&rec - images)?;
        let l1 = diff.abs()?.mean_all()?;
        let l2 = diff.sqr()?.mean_all()?;
        let commitment = (&flat - &e)?.sqr()?.mean_all()?;
        let loss = ((&l1 + &l2)? + (&commitment * self.config.beta)?)?;
        let mut grads = loss.backward()?;
        if let Some(max) = self.config.clip_grad_norm {
            clip_grad_norm(self.adam.params(), &mut grads, max)?;
        }
        self.adam.step(&grads, lr)?;
        // EMA codebook update
        let k = self.config.n_embed;
        let idx_v: Vec<u32> = idx.to_vec1()?;
        let mut onehot = vec![0f32; idx_v.len() * k];
        for (row, &j) in idx_v.iter().enumerate() {
            onehot[row * k + j as usize] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (idx_v.len(), k), &Device::Cpu)?;
        let counts = onehot.sum(0)?;
        let sums = onehot.t()?.matmul(&flat_d)?; // [K, C]
        let decay = self.config.codebook_decay;
        // detached: the running statistics must not hold this step's graph (nor, through it, every
        // earlier step's)
        self.cluster_size = ((&self.cluster_size * decay)? + (&counts * (1.0 - decay))?)?.detach();
        self.embed_sum = ((&self.embed_sum * decay)? + (sums * (1.0 - decay))?)?.detach();
        let n: f64 = self.cluster_size.sum_all()?.to_scalar::<f32>()? as f64;
        let eps = 1e-5;
        let smoothed = ((&self.cluster_size + eps)? * (n / (n + k as f64 * eps)))?;
        let new_codebook = self.embed_sum.broadcast_div(&smoothed.unsqueeze(D::Minus1)?)?;
        {
            let data = self.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
            if let Some(var) = data.get(CODEBOOK) {
                var.set(&new_codebook)?;
            }
        }
        let used = counts.gt(0f32)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as f64;
        self.step += 1;
        Ok(AutoencoderStats {
            loss: loss.to_dtype(DType::F64)?.to_scalar()?,
            l1: l1.to_dtype(DType::F64)?.to_scalar()?,
            commitment: commitment.to_dtype(DType::F64)?.to_scalar()?,
            usage: used / k as f64,
        })
    }

    /// Reconstruction (quantised) of images, eval mode.
    pub fn reconstruct(&self, images: &Tensor) -> Result<Tensor> {
        let z = self.encoder.encode(images)?;
        let (b, c, h, w) = z.dims4()?;
        let codebook = Self::codebook_of(&self.varmap)?;
        let flat = z.permute((0, 2, 3, 1))?.reshape((b * h * w, c))?;
        let dist = flat
            .sqr()?
            .sum_keepdim(1)?
            .broadcast_add(&codebook.sqr()?.sum(1)?.unsqueeze(0)?)?
            .sub(&(flat.matmul(&codebook.t()?)? * 2.0)?)?;
        let e = codebook.index_select(&dist.argmin(1)?, 0)?;
        let zq = e.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?.contiguous()?;
        Ok(self.decoder.decode(&zq, true)?)
    }

    fn part(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, Tensor)> {
        named_vars(&self.varmap).into_iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k, v.as_tensor().clone())).collect()
    }

    /// The official encoder file: `encoder.*` + `quant_conv.*`.
    pub fn encoder_state(&self) -> Vec<(String, Tensor)> {
        self.part(|k| k.starts_with("encoder.") || k.starts_with("quant_conv."))
    }

    /// The official decoder file: `decoder.*` + `post_quant_conv.*` + `quantize.embedding.weight`.
    pub fn decoder_state(&self) -> Vec<(String, Tensor)> {
        self.part(|k| k.starts_with("decoder.") || k.starts_with("post_quant_conv.") || k == CODEBOOK)
    }

    /// Everything a resume needs: all variables, codebook statistics, Adam state.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = self.part(|_| true);
        out.push(("codebook_ema.cluster_size".into(), self.cluster_size.clone()));
        out.push(("codebook_ema.embed_sum".into(), self.embed_sum.clone()));
        out.extend(self.adam.state()?);
        Ok(out)
    }

    /// Restores [`state`](Self::state) and the step counter.
    pub fn load_state(&mut self, entries: &BTreeMap<String, Tensor>, step: u64, source: &str) -> Result<()> {
        load_into(&self.varmap, entries, "", source)?;
        let get = |k: &str| {
            entries
                .get(k)
                .cloned()
                .ok_or_else(|| crate::error::ModelError::Checkpoint { path: source.into(), reason: format!("missing `{k}`") })
        };
        self.cluster_size = get("codebook_ema.cluster_size")?;
        self.embed_sum = get("codebook_ema.embed_sum")?;
        self.adam.load_state(entries)?;
        self.step = step;
        Ok(())
    }
}
