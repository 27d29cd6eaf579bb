//! One-call loaders for the official checkpoints, as the engine's operators use them.

use std::path::Path;

use crate::error::{ModelError, Result};
use crate::io::checkpoint::{load_model, LoadOptions, LoadReport, StateDict};
use crate::iresnet::{IResNet, IResNetConfig, IrBackbone};
use crate::schedule::DdpmSchedule;
use crate::unet::{ConditionalUNet, UNetConfig};
use crate::vq::{VqConfig, VqDecoder, VqEncoder, VqModel};

/// IDiff-Face's denoiser with its schedule, from `ema_averaged_model.ckpt` / `model.ckpt`
/// (wrapper state dict: schedule buffers + `eps_model.*`) or bare `eps_model` weights (then
/// the linear T = 1000 schedule is computed).
pub fn load_idiff_face(
    path: impl AsRef<Path>,
    config: &UNetConfig,
    options: &LoadOptions,
) -> Result<(ConditionalUNet, DdpmSchedule, LoadReport)> {
    let dict = StateDict::from_file(path)?;
    let (unet, report) = load_model(&dict, options, |vb| ConditionalUNet::new(config, vb))?;
    let schedule = DdpmSchedule::from_state_dict_or_linear(&dict, 1000)?;
    Ok((unet, schedule, report))
}

/// The VQ first stage from IDiff-Face's split files (`first_stage_encoder_state_dict.pt`,
/// `first_stage_decoder_state_dict.pt`); the codebook size is read from the decoder file.
pub fn load_vq_first_stage(
    encoder_path: impl AsRef<Path>,
    decoder_path: impl AsRef<Path>,
    config: &VqConfig,
    options: &LoadOptions,
) -> Result<VqModel> {
    let enc = StateDict::from_file(encoder_path)?;
    let dec = StateDict::from_file(decoder_path)?;
    let codebook = ["quantize.embedding.weight", "first_stage_model.quantize.embedding.weight"]
        .iter()
        .find_map(|k| dec.get(k))
        .ok_or_else(|| ModelError::Checkpoint {
            path: dec.source().into(),
            reason: "no `quantize.embedding.weight` (codebook) in the decoder state dict".into(),
        })?;
    let n_embed = codebook.dim(0)?;
    let (encoder, _) = load_model(&enc, options, |vb| VqEncoder::new(config, vb))?;
    let (decoder, _) = load_model(&dec, options, |vb| VqDecoder::new(config, n_embed, vb))?;
    Ok(VqModel { encoder, decoder, force_not_quantize: false })
}

/// ElasticFace / insightface IResNet weights (e.g. `295672backbone.pth`).
pub fn load_iresnet(path: impl AsRef<Path>, config: &IResNetConfig, options: &LoadOptions) -> Result<IResNet> {
    let dict = StateDict::from_file(path)?;
    Ok(load_model(&dict, options, |vb| IResNet::new(config, vb))?.0)
}

/// TFace IR-`depth` weights (idflow's own training output, safetensors or torch zip).
pub fn load_tface_ir(path: impl AsRef<Path>, depth: usize, options: &LoadOptions) -> Result<IrBackbone> {
    let dict = StateDict::from_file(path)?;
    Ok(load_model(&dict, options, |vb| IrBackbone::new(depth, vb))?.0)
}
