//! The latent-decoder component: the VQ first stage's decoder plus the image settings (resize,
//! PNG/JPEG encoding), turning latents into encoded face images. The `decode-latent` operator
//! runs it over its input rows; `filter` runs the same component on re-drawn latents.

use super::generator::Reproducible;
use super::images::Size;
use super::loading;
use super::model_ref::{self, Backend, Inference, ModelRef, Provider};
use crate::spec::{ConfigError, NodeSpec};
use candle_core::{Device, Tensor};
use idflow_models::traits::FirstStage;
use idflow_models::vq::VqConfig;
use image::{imageops, RgbImage};
use serde::Deserialize;

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
    let cfg = model_ref::vq_config(p.first_stage.config.as_ref()).map_err(|e| node.error(Some(&*field("first_stage")), e))?;
    if cfg.ch_mult.is_empty() {
        return Err(node.error(Some(&*field("first_stage")), "ch_mult must not be empty"));
    }
    model_ref::check_inference(node, p.threads, field)?;
    model_ref::check_checkpoint(node, &field("first_stage"), &p.first_stage.checkpoint, model_ref::Network::VqDecoder(&cfg))?;
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
        Ok(Self {
            decoder: loading::load_vq_decoder(
                &Inference::new(p.backend, p.threads, &p.providers, workers),
                &p.first_stage.checkpoint,
                cfg,
                p.quantize,
            )?,
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
                ResizeFilter::Area => super::images::area_resize(&img, w, h),
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
