//! `decode-latent`: latents → encoded face images with the VQ first stage, as IDiff-Face's
//! sampler does: quantise to the nearest codewords (optional), `post_quant_conv` + decoder,
//! clamp to [−1, 1], map to uint8 RGB as torchvision's `save_image` does
//! (`floor(((x + 1)/2)·255 + 0.5)`), optionally resize (e.g. 128 → 112, the training size), and
//! encode PNG or JPEG. Adds an `image` (Binary) column.
//!
//! As in `diffuse`, `reproducible: exact` (default) decodes one latent per call so the bytes do
//! not depend on batch composition; `batched` stacks `batch` latents per call.

use super::diffuse::Reproducible;
use super::model_spec::{self, field_shape, tensor_rows, Backend, Inference, ModelRef, Provider};
use super::{
    BuildContext, ColumnReq, ColumnType, Emit, OpError, OpResult, Operator, OperatorInfo, ParamDoc, Role, Started, Task, TaskContext,
};
use crate::spec::{ConfigError, NodeSpec};
use arrow_array::{ArrayRef, BinaryArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use candle_core::{Device, Tensor};
use idflow_models::traits::FirstStage;
use idflow_models::vq::VqConfig;
use image::{imageops, RgbImage};
use serde::Deserialize;
use std::sync::{Arc, OnceLock};

/// Registry entry.
pub fn info() -> OperatorInfo {
    OperatorInfo {
        name: "decode-latent",
        role: Role::Transform,
        summary: "Decode latents with the VQ first stage into PNG/JPEG face images",
        params: PARAMS,
        build,
    }
}

const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "first_stage",
        ty: "{checkpoint, config}",
        default: "required",
        doc: "decoder weights (first_stage_decoder_state_dict.pt); config: vq-f4 (default) | reference-tiny | JSON | inline",
    },
    model_spec::INFERENCE_PARAMS[0],
    model_spec::INFERENCE_PARAMS[1],
    model_spec::INFERENCE_PARAMS[2],
    ParamDoc { name: "column", ty: "string", default: "latent", doc: "input latent column (shape metadata [c,h,w])" },
    ParamDoc {
        name: "quantize",
        ty: "bool",
        default: "true",
        doc: "snap latents to the nearest codewords before decoding (IDiff-Face does)",
    },
    ParamDoc { name: "size", ty: "int or [h, w]", default: "decoder output", doc: "resize the decoded image (e.g. 112)" },
    ParamDoc { name: "resize", ty: "bilinear | area", default: "bilinear", doc: "resampling filter" },
    ParamDoc { name: "format", ty: "png | jpeg", default: "png", doc: "image encoding" },
    ParamDoc { name: "quality", ty: "integer", default: "95", doc: "JPEG quality 1-100" },
    ParamDoc { name: "batch", ty: "integer", default: "16", doc: "latents per decoder call (batched mode)" },
    ParamDoc {
        name: "reproducible",
        ty: "exact | batched",
        default: "exact",
        doc: "exact: one latent per call (bytes independent of batching)",
    },
];

/// Image size as written in YAML.
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(untagged)]
pub enum Size {
    /// Square.
    Square(u32),
    /// `[h, w]`.
    Rect([u32; 2]),
}

impl Size {
    fn hw(self) -> (u32, u32) {
        match self {
            Size::Square(s) => (s, s),
            Size::Rect([h, w]) => (h, w),
        }
    }
}

/// Resampling filter.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResizeFilter {
    /// `image`'s triangle filter (scaled support when downscaling).
    Bilinear,
    /// Box averaging (OpenCV INTER_AREA).
    Area,
}

/// Image encoding.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// Lossless PNG.
    Png,
    /// JPEG with `quality`.
    Jpeg,
}

/// Decoding parameters, shared with `filter`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct DecodeParams {
    /// Decoder weights and configuration.
    pub first_stage: ModelRef,
    /// Backend (default `onnx`).
    #[serde(default)]
    pub backend: Backend,
    /// ONNX Runtime intra-op threads per worker (default cores / workers).
    #[serde(default)]
    pub threads: Option<usize>,
    /// ONNX Runtime execution providers, in priority order (default `[cpu]`).
    #[serde(default)]
    pub providers: Vec<Provider>,
    /// Latent column.
    #[serde(default = "default_column")]
    pub column: String,
    /// Quantise before decoding.
    #[serde(default = "default_true")]
    pub quantize: bool,
    /// Output size.
    #[serde(default)]
    pub size: Option<Size>,
    /// Filter.
    #[serde(default = "default_filter")]
    pub resize: ResizeFilter,
    /// Encoding.
    #[serde(default = "default_format")]
    pub format: ImageFormat,
    /// JPEG quality.
    #[serde(default = "default_quality")]
    pub quality: u8,
    /// Latents per call.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Exact or batched.
    #[serde(default = "default_reproducible")]
    pub reproducible: Reproducible,
}

fn default_column() -> String {
    "latent".into()
}
fn default_true() -> bool {
    true
}
fn default_filter() -> ResizeFilter {
    ResizeFilter::Bilinear
}
fn default_format() -> ImageFormat {
    ImageFormat::Png
}
fn default_quality() -> u8 {
    95
}
fn default_batch() -> usize {
    16
}
fn default_reproducible() -> Reproducible {
    Reproducible::Exact
}

/// Plan-time checks; returns the resolved configuration. `field` maps parameter names to YAML fields.
pub fn check_decode(node: &NodeSpec, p: &DecodeParams, field: &dyn Fn(&str) -> String) -> Result<VqConfig, ConfigError> {
    let cfg = model_spec::vq_config(p.first_stage.config.as_ref()).map_err(|e| node.error(Some(&*field("first_stage")), e))?;
    if cfg.ch_mult.is_empty() {
        return Err(node.error(Some(&*field("first_stage")), "ch_mult must not be empty"));
    }
    model_spec::check_inference(node, p.threads, field)?;
    model_spec::check_checkpoint(node, &field("first_stage"), &p.first_stage.checkpoint, model_spec::Network::VqDecoder(&cfg))?;
    if let Some(s) = p.size {
        let (h, w) = s.hw();
        if h == 0 || w == 0 || h > 4096 || w > 4096 {
            return Err(node.error(Some(&*field("size")), "must be within 1..4096"));
        }
    }
    if !(1..=100).contains(&p.quality) {
        return Err(node.error(Some(&*field("quality")), "must be within 1..100"));
    }
    if p.batch == 0 {
        return Err(node.error(Some(&*field("batch")), "must be at least 1"));
    }
    Ok(cfg)
}

fn build(ctx: &BuildContext) -> Result<Arc<dyn Operator>, ConfigError> {
    let p: DecodeParams = ctx.node.parse_params()?;
    let cfg = check_decode(&ctx.node, &p, &|f| f.to_string())?;
    Ok(Arc::new(DecodeLatent { p, cfg, node: ctx.node.id.clone(), decoder: OnceLock::new() }))
}

/// A loaded first-stage decoder plus the image settings.
pub struct LatentDecoder {
    decoder: Box<dyn FirstStage>,
    p: DecodeParams,
    embed_dim: usize,
    /// Upsampling factor of the decoder (2^(levels − 1)).
    factor: usize,
}

impl LatentDecoder {
    /// Loads the decoder weights (on the node's backend, sized for `workers` local workers).
    pub fn load(p: &DecodeParams, cfg: &VqConfig, workers: usize) -> Result<Self, String> {
        let inference = Inference::new(p.backend, p.threads, &p.providers, workers);
        Ok(Self {
            decoder: model_spec::load_vq_decoder(&inference, &p.first_stage.checkpoint, cfg, p.quantize)?,
            p: p.clone(),
            embed_dim: cfg.embed_dim,
            factor: 1 << (cfg.ch_mult.len() - 1),
        })
    }

    /// Decodes `latents` (row-major, each of `shape` = `[c, h, w]`) into RGB images.
    pub fn images(&self, latents: &[f32], shape: [usize; 3]) -> Result<Vec<RgbImage>, String> {
        if shape[0] != self.embed_dim {
            return Err(format!("latents have {} channels, the first stage expects {}", shape[0], self.embed_dim));
        }
        let per: usize = shape.iter().product();
        let n = latents.len() / per.max(1);
        let chunk = if self.p.reproducible == Reproducible::Exact { 1 } else { self.p.batch };
        let mut out = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let end = (start + chunk).min(n);
            let run = || -> candle_core::Result<Vec<f32>> {
                let z = Tensor::from_slice(&latents[start * per..end * per], (end - start, shape[0], shape[1], shape[2]), &Device::Cpu)?;
                let x = self.decoder.decode(&z).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                x.flatten_all()?.to_vec1::<f32>()
            };
            let pixels = run().map_err(|e| format!("first-stage decode: {e}"))?;
            let (h, w) = (shape[1] * self.factor, shape[2] * self.factor);
            let img_len = 3 * h * w;
            if pixels.len() != img_len * (end - start) {
                return Err(format!("decoder produced {} values for {} latents of shape {shape:?}", pixels.len(), end - start));
            }
            for (j, img) in pixels.chunks(img_len).enumerate() {
                if let Some(what) = super::finite::first_non_finite(img) {
                    return Err(format!("latent {} of the batch decodes to a non-finite image ({what})", start + j));
                }
                out.push(to_rgb(img, h, w));
            }
            start = end;
        }
        Ok(out)
    }

    /// Resizes (if configured) and encodes one image.
    pub fn encode(&self, img: RgbImage) -> Result<Vec<u8>, String> {
        let img = match self.p.size.map(Size::hw) {
            Some((h, w)) if (h, w) != (img.height(), img.width()) => match self.p.resize {
                ResizeFilter::Bilinear => imageops::resize(&img, w, h, imageops::FilterType::Triangle),
                ResizeFilter::Area => super::decode::area_resize(&img, w, h),
            },
            _ => img,
        };
        let mut buf = Vec::new();
        let written = match self.p.format {
            ImageFormat::Png => img.write_with_encoder(image::codecs::png::PngEncoder::new(&mut buf)),
            ImageFormat::Jpeg => img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, self.p.quality)),
        };
        written.map_err(|e| format!("encoding image: {e}"))?;
        Ok(buf)
    }

    /// Latents → encoded images.
    pub fn encoded(&self, latents: &[f32], shape: [usize; 3]) -> Result<Vec<Vec<u8>>, String> {
        self.images(latents, shape)?.into_iter().map(|i| self.encode(i)).collect()
    }
}

/// CHW floats in −1..1 → RGB bytes, as torchvision's `save_image` rounds.
fn to_rgb(chw: &[f32], h: usize, w: usize) -> RgbImage {
    let plane = h * w;
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb([0, 1, 2].map(|c| {
            let v = chw[c * plane + i].clamp(-1.0, 1.0);
            (((v + 1.0) / 2.0) * 255.0 + 0.5).floor().clamp(0.0, 255.0) as u8
        }))
    })
}

/// The latent shape of a column, from its `shape` metadata (or `[3, s, s]` for a square width).
pub fn latent_shape(f: &Field) -> Result<[usize; 3], String> {
    if let Some(s) = field_shape(f) {
        if let [c, h, w] = s[..] {
            return Ok([c, h, w]);
        }
        return Err(format!("column `{}` has shape {s:?}, expected [c, h, w]", f.name()));
    }
    if let DataType::FixedSizeList(_, n) = f.data_type() {
        let side = ((*n as usize / 3) as f64).sqrt() as usize;
        if 3 * side * side == *n as usize {
            return Ok([3, side, side]);
        }
    }
    Err(format!("column `{}` has no `shape` metadata; cannot tell its latent shape", f.name()))
}

struct DecodeLatent {
    p: DecodeParams,
    cfg: VqConfig,
    node: String,
    decoder: OnceLock<Result<Arc<LatentDecoder>, String>>,
}

impl Operator for DecodeLatent {
    fn role(&self) -> Role {
        Role::Transform
    }

    fn required_columns(&self) -> Vec<ColumnReq> {
        vec![ColumnReq::new(&self.p.column, ColumnType::F32Tensor)]
    }

    fn output_schema(&self, inputs: &[SchemaRef]) -> Result<SchemaRef, String> {
        let input = inputs.first().ok_or("decode-latent needs an input")?;
        let f = input.field_with_name(&self.p.column).map_err(|e| e.to_string())?;
        let shape = latent_shape(f)?;
        if shape[0] != self.cfg.embed_dim {
            return Err(format!("latents have {} channels, the first stage expects {}", shape[0], self.cfg.embed_dim));
        }
        if input.field_with_name("image").is_ok() {
            return Err("input already has an `image` column".into());
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("image", DataType::Binary, false));
        Ok(Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())))
    }

    fn start(&self, ctx: &TaskContext) -> OpResult<Started> {
        let decoder = self
            .decoder
            .get_or_init(|| LatentDecoder::load(&self.p, &self.cfg, ctx.local_workers).map(Arc::new))
            .clone()
            .map_err(|e| OpError::new(format!("node `{}`: {e}", self.node)))?;
        Ok(Started::Task(Box::new(DecodeLatentTask { decoder, column: self.p.column.clone(), node: self.node.clone() })))
    }
}

struct DecodeLatentTask {
    decoder: Arc<LatentDecoder>,
    column: String,
    node: String,
}

impl Task for DecodeLatentTask {
    fn process(&mut self, _port: usize, batch: RecordBatch, out: &mut Emit) -> OpResult<()> {
        let err = |e: String| OpError::new(format!("node `{}`: {e}", self.node));
        let schema = batch.schema();
        let field = schema.field_with_name(&self.column).map_err(|e| err(e.to_string()))?;
        let shape = latent_shape(field).map_err(err)?;
        let (latents, _) = tensor_rows(&batch, &self.column).map_err(err)?;
        let first = super::filter::row_label(&batch, 0);
        let images = self.decoder.encoded(latents, shape).map_err(|e| err(format!("rows from {first}: {e}")))?;
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("image", DataType::Binary, false));
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        cols.push(Arc::new(BinaryArray::from_iter_values(images.iter().map(|b| b.as_slice()))));
        out.rows.push(RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())), cols)?);
        Ok(())
    }
}
