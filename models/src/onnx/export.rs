//! `idflow compile`'s exporters: each builds the architecture's single definition on the
//! [`OnnxTrace`] backend, declares the graph's inputs, runs the forward pass (which emits the
//! nodes), and declares the outputs and metadata.
//!
//! * ConditionalUNet: inputs `x` `[batch, C, height, width]`, `t` `[batch]` (int64 or float32,
//!   see [`TimestepType`]), for conditional models `context` `[batch, context_input_channels]`
//!   and — unless disabled — `dropout_mask` `[batch]` uint8 (rows with 1 use the empty context,
//!   exactly the native `dropout_mask` / `context = None` path). Output `eps`, shaped like `x`.
//!   Metadata: `idflow.model`, `idflow.config` (the configuration as JSON),
//!   `idflow.dropout_mask_input`, and — when the checkpoint carries its diffusion schedule —
//!   [`SCHEDULE_METADATA`].
//! * VQ-f4 encoder (`image` → `latent`, including `quant_conv`) and decoder (`z` → `image`, with
//!   the nearest-codeword quantiser and its `indices` output unless `force_not_quantize`).
//! * IResNet / TFace IR: `image` `[batch, 3, S, S]` → `features` `[batch, D]` (raw), eval-mode
//!   BatchNorms (ONNX Runtime folds those after a convolution into its weights).

use super::builder::{Dim, ElemType};
use super::trace::{KeyPath, OnnxTrace, Sym};
use super::weights::Weights;
use super::{finish_model, CompileOptions, OnnxError};
use crate::io::checkpoint::StateDict;
use crate::iresnet::{IResNet, IResNetConfig, IrBackbone};
use crate::nn::NormMode;
use crate::schedule::DdpmSchedule;
use crate::unet::{ConditionalUNet, UNetConfig};
use crate::vq::{VqConfig, VqDecoder, VqEncoder};

/// Metadata key of the diffusion schedule a compiled denoiser carries.
pub const SCHEDULE_METADATA: &str = "idflow.schedule";

/// Element type of the `t` input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimestepType {
    /// int64 timesteps (0-based), as the official sampler passes them.
    #[default]
    Int64,
    /// float32 timesteps (e.g. fractional DDIM schedules).
    Float32,
}

/// UNet-specific export settings.
#[derive(Clone, Debug)]
pub struct UNetExport {
    /// Type of the `t` input.
    pub timestep: TimestepType,
    /// Add the `dropout_mask` input (needed for the empty-context pass of classifier-free
    /// guidance); ignored for unconditional models.
    pub dropout_mask: bool,
}

impl Default for UNetExport {
    fn default() -> Self {
        Self { timestep: TimestepType::Int64, dropout_mask: true }
    }
}

/// Declares a graph input of rank `dims.len()`.
fn input(trace: &OnnxTrace<'_, '_>, name: &str, elem: ElemType, dims: &[Dim]) -> Result<Sym, OnnxError> {
    Ok(Sym::new(trace.graph().input(name, elem, dims)?, dims.len()))
}

fn config_json(config: &impl serde::Serialize) -> Result<String, OnnxError> {
    serde_json::to_string(config).map_err(|e| OnnxError::Config(e.to_string()))
}

/// Compiles a `ConditionalUNet` state dict (`eps_model.*` inside IDiff-Face's wrapper checkpoint,
/// or bare keys) into ONNX bytes; see the module documentation for the graph's interface.
pub fn compile_unet(dict: &StateDict, cfg: &UNetConfig, export: &UNetExport, options: &CompileOptions) -> Result<Vec<u8>, OnnxError> {
    let w = Weights::new(dict, options.prefix.as_deref(), "image_proj.weight")?;
    let trace = OnnxTrace::new("conditional_unet", &w);
    let model = ConditionalUNet::build(cfg, &KeyPath::root())?;
    let batch = Dim::Symbol("batch");
    let xdims = [batch.clone(), Dim::Fixed(cfg.input_channels as i64), Dim::Symbol("height"), Dim::Symbol("width")];
    let x = input(&trace, "x", ElemType::F32, &xdims)?;
    let t_type = match export.timestep {
        TimestepType::Int64 => ElemType::I64,
        TimestepType::Float32 => ElemType::F32,
    };
    let t = input(&trace, "t", t_type, std::slice::from_ref(&batch))?;
    let (context, mask) = if cfg.is_context_conditional {
        let c = input(&trace, "context", ElemType::F32, &[batch.clone(), Dim::Fixed(cfg.context_input_channels as i64)])?;
        let m = if export.dropout_mask { Some(input(&trace, "dropout_mask", ElemType::U8, std::slice::from_ref(&batch))?) } else { None };
        (Some(c), m)
    } else {
        (None, None)
    };
    let eps = model.forward_with(&trace, &x, &t, context.as_ref(), mask.as_ref(), None)?;
    let mut g = trace.into_graph();
    g.output(eps.value(), "eps", ElemType::F32, &xdims)?;
    let mut metadata = vec![
        ("idflow.model", "conditional_unet".to_string()),
        ("idflow.config", config_json(cfg)?),
        ("idflow.dropout_mask_input", mask.is_some().to_string()),
    ];
    // The checkpoint's diffusion schedule, so a compiled file samples like its checkpoint.
    if let Some(schedule) = DdpmSchedule::from_state_dict(dict)? {
        metadata.push((SCHEDULE_METADATA, schedule.to_json()));
    }
    finish_model(g, &w, options, "IDiff-Face ConditionalUNet denoiser (eval mode): eps(x, t, context)", &metadata)
}

fn dims4(c: usize, latent: bool) -> [Dim; 4] {
    let (h, w) = if latent { ("latent_height", "latent_width") } else { ("height", "width") };
    [Dim::Symbol("batch"), Dim::Fixed(c as i64), Dim::Symbol(h), Dim::Symbol(w)]
}

/// Compiles the encoder file (`encoder.*` + `quant_conv.*`): input `image` `[batch, 3, H, W]`,
/// output `latent` `[batch, embed_dim, H/f, W/f]` (not quantised, like `VQEncoderInterface`).
pub fn compile_vq_encoder(dict: &StateDict, cfg: &VqConfig, options: &CompileOptions) -> Result<Vec<u8>, OnnxError> {
    let w = Weights::new(dict, options.prefix.as_deref(), "encoder.conv_in.weight")?;
    let trace = OnnxTrace::new("vq_encoder", &w);
    let model = VqEncoder::build(cfg, &KeyPath::root())?;
    let x = input(&trace, "image", ElemType::F32, &dims4(cfg.in_channels, false))?;
    let h = model.encode_with(&trace, &x)?;
    let mut g = trace.into_graph();
    g.output(h.value(), "latent", ElemType::F32, &dims4(cfg.embed_dim, true))?;
    finish_model(
        g,
        &w,
        options,
        "VQ-f4 encoder + quant_conv: image [B,3,H,W] in -1..1 -> latent [B,embed_dim,H/f,W/f]",
        &[("idflow.model", "vq_encoder".into()), ("idflow.config", config_json(cfg)?)],
    )
}

/// Compiles the decoder file (`decoder.*` + `post_quant_conv.*` + `quantize.embedding.weight`):
/// input `z` `[batch, embed_dim, h, w]`, output `image` `[batch, out_ch, h·f, w·f]`; with
/// `quantize = true` the latent is first snapped to the codebook and the code `indices` are a
/// second output (IDiff-Face's sampler decodes that way); `false` = `force_not_quantize`.
pub fn compile_vq_decoder(dict: &StateDict, cfg: &VqConfig, quantize_latent: bool, options: &CompileOptions) -> Result<Vec<u8>, OnnxError> {
    let w = Weights::new(dict, options.prefix.as_deref(), "decoder.conv_in.weight")?;
    let codebook_key = format!("{}quantize.embedding.weight", w.prefix());
    let n_embed = dict
        .get(&codebook_key)
        .ok_or_else(|| OnnxError::Weight {
            source_name: dict.source().into(),
            key: codebook_key.clone(),
            reason: "no codebook in the decoder state dict".into(),
        })?
        .dims()
        .first()
        .copied()
        .unwrap_or(0);
    let trace = OnnxTrace::new("vq_decoder", &w);
    let model = VqDecoder::build(cfg, n_embed, &KeyPath::root())?;
    let z = input(&trace, "z", ElemType::F32, &dims4(cfg.embed_dim, true))?;
    if !quantize_latent {
        w.touch("quantize.embedding.weight");
    }
    let (image, indices) = model.decode_with(&trace, &z, !quantize_latent)?;
    let mut g = trace.into_graph();
    g.output(image.value(), "image", ElemType::F32, &dims4(cfg.out_ch, false))?;
    if let Some(idx) = indices {
        g.output(
            idx.value(),
            "indices",
            ElemType::I64,
            &[Dim::Symbol("batch"), Dim::Symbol("latent_height"), Dim::Symbol("latent_width")],
        )?;
    }
    finish_model(
        g,
        &w,
        options,
        "VQ-f4 decoder: z [B,embed_dim,h,w] -> (quantise) -> post_quant_conv -> decoder -> image [B,3,h*f,w*f]",
        &[("idflow.model", "vq_decoder".into()), ("idflow.quantize", quantize_latent.to_string()), ("idflow.config", config_json(cfg)?)],
    )
}

fn image_input(trace: &OnnxTrace<'_, '_>, side: usize) -> Result<Sym, OnnxError> {
    let side = side as i64;
    input(trace, "image", ElemType::F32, &[Dim::Symbol("batch"), Dim::Fixed(3), Dim::Fixed(side), Dim::Fixed(side)])
}

fn features_output(trace: OnnxTrace<'_, '_>, h: &Sym, width: usize) -> Result<super::builder::GraphBuilder, OnnxError> {
    let mut g = trace.into_graph();
    g.output(h.value(), "features", ElemType::F32, &[Dim::Symbol("batch"), Dim::Fixed(width as i64)])?;
    Ok(g)
}

/// Compiles an ElasticFace `IResNet` state dict (e.g. `295672backbone.pth`) to ONNX bytes.
pub fn compile_iresnet(dict: &StateDict, config: &IResNetConfig, options: &CompileOptions) -> Result<Vec<u8>, OnnxError> {
    let w = Weights::new(dict, options.prefix.as_deref(), "conv1.weight")?;
    let trace = OnnxTrace::new("iresnet", &w);
    let model = IResNet::build(config, &KeyPath::root())?;
    let x = image_input(&trace, config.input_size)?;
    let h = model.forward_with(&trace, &x, NormMode::Running)?;
    let g = features_output(trace, &h, config.num_features)?;
    finish_model(
        g,
        &w,
        options,
        "ElasticFace IResNet face encoder (eval mode): image [B,3,112,112] -> raw features",
        &[("idflow.model", "iresnet".into()), ("idflow.config", config_json(config)?)],
    )
}

/// Compiles a TFace `IR-depth` backbone (18, 34, 50 or 100) to ONNX bytes; output width 512.
pub fn compile_tface_ir(dict: &StateDict, depth: usize, options: &CompileOptions) -> Result<Vec<u8>, OnnxError> {
    let w = Weights::new(dict, options.prefix.as_deref(), "input_layer.0.weight")?;
    let trace = OnnxTrace::new("tface_ir", &w);
    let model = IrBackbone::build(depth, &KeyPath::root())?;
    let x = image_input(&trace, 112)?;
    let h = model.forward_with(&trace, &x, NormMode::Running, None)?;
    let g = features_output(trace, &h, 512)?;
    finish_model(
        g,
        &w,
        options,
        "TFace IR backbone (eval mode): image [B,3,112,112] -> raw features",
        &[("idflow.model", "tface_ir".into()), ("idflow.depth", depth.to_string())],
    )
}
