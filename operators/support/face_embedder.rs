//! The face-embedder component: a frozen IResNet face encoder plus its preprocessing (decode,
//! resize to the encoder input, normalise, optional flip TTA, L2 norm). The `embed` operator runs
//! it over its input rows; `filter` embeds re-drawn images and `evaluate` decodes benchmark images
//! with it.

use super::generator::Reproducible;
use super::loading;
use super::model_ref::{self, Backend, Inference, ModelRef, Provider};
use crate::spec::{ConfigError, NodeSpec};
use candle_core::{Device, Tensor};
use idflow_dataset::formats::image_bytes::decode_complete;
use idflow_models::iresnet::IResNetConfig;
use idflow_models::traits::FaceEncoder;
use image::{imageops, RgbImage};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Embedding parameters, shared with `filter`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct EmbedParams {
    /// Encoder weights and configuration.
    pub encoder: ModelRef,
    /// Backend (default `onnx`).
    #[serde(default)]
    pub backend: Backend,
    /// ONNX Runtime intra-op threads per worker (default cores / workers).
    #[serde(default)]
    pub threads: Option<usize>,
    /// ONNX Runtime execution providers, in priority order (default `[cpu]`).
    #[serde(default)]
    pub providers: Vec<Provider>,
    /// Image column.
    #[serde(default = "default_column")]
    pub column: String,
    /// Output column.
    #[serde(default = "default_output")]
    pub output: String,
    /// Flip TTA.
    #[serde(default)]
    pub flip: bool,
    /// Normalisation mean.
    #[serde(default = "default_half")]
    pub mean: [f32; 3],
    /// Normalisation std.
    #[serde(default = "default_half")]
    pub std: [f32; 3],
    /// Images per pass.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Exact or batched.
    #[serde(default = "default_reproducible")]
    pub reproducible: Reproducible,
}

fn default_column() -> String {
    "image".into()
}
fn default_output() -> String {
    "embedding".into()
}
fn default_half() -> [f32; 3] {
    [0.5; 3]
}
fn default_batch() -> usize {
    32
}
fn default_reproducible() -> Reproducible {
    Reproducible::Exact
}

/// Plan-time checks; returns the resolved configuration.
pub fn check_embed(node: &NodeSpec, p: &EmbedParams, field: &dyn Fn(&str) -> String) -> Result<IResNetConfig, ConfigError> {
    let cfg = model_ref::iresnet_config(p.encoder.config.as_ref()).map_err(|e| node.error(Some(&*field("encoder")), e))?;
    if cfg.num_features == 0 {
        return Err(node.error(Some(&*field("encoder")), "num_features must be positive"));
    }
    model_ref::check_inference(node, p.threads, field)?;
    model_ref::check_checkpoint(node, &field("encoder"), &p.encoder.checkpoint, model_ref::Network::IResNet(&cfg))?;
    if p.std.contains(&0.0) {
        return Err(node.error(Some(&*field("std")), "must not contain 0"));
    }
    if p.batch == 0 {
        return Err(node.error(Some(&*field("batch")), "must be at least 1"));
    }
    Ok(cfg)
}

/// A loaded face encoder plus preprocessing settings.
pub struct FaceEmbedder {
    net: Box<dyn FaceEncoder>,
    p: EmbedParams,
    dim: usize,
    /// Input side of the encoder (the config's `input_size`).
    side: u32,
}

impl FaceEmbedder {
    /// Loads the encoder weights (on the node's backend, sized for `workers` local workers).
    pub fn load(p: &EmbedParams, cfg: &IResNetConfig, workers: usize) -> Result<Self, String> {
        let side = u32::try_from(cfg.input_size).map_err(|_| format!("input_size {} is too large", cfg.input_size))?;
        Ok(Self {
            net: loading::load_iresnet(&Inference::new(p.backend, p.threads, &p.providers, workers), &p.encoder.checkpoint, cfg)?,
            p: p.clone(),
            dim: cfg.num_features,
            side,
        })
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Decodes and resizes one encoded image to the encoder input.
    pub fn prepare(bytes: &[u8], side: u32) -> Result<RgbImage, String> {
        let img = decode_complete(bytes).map_err(|e| e.to_string())?.to_rgb8();
        Ok(if img.dimensions() == (side, side) { img } else { imageops::resize(&img, side, side, imageops::FilterType::Triangle) })
    }

    /// [`FaceEmbedder::prepare`] at this encoder's input size.
    pub fn prepare_for(&self, bytes: &[u8]) -> Result<RgbImage, String> {
        Self::prepare(bytes, self.side)
    }

    fn tensor(&self, imgs: &[&RgbImage], flip: bool) -> candle_core::Result<Tensor> {
        let s = self.side as usize;
        let plane = s * s;
        let mut v = vec![0f32; imgs.len() * 3 * plane];
        for (n, img) in imgs.iter().enumerate() {
            for (x, y, px) in img.enumerate_pixels() {
                let xx = if flip { s - 1 - x as usize } else { x as usize };
                let i = y as usize * s + xx;
                for c in 0..3 {
                    v[n * 3 * plane + c * plane + i] = (px.0[c] as f32 / 255.0 - self.p.mean[c]) / self.p.std[c];
                }
            }
        }
        Tensor::from_vec(v, (imgs.len(), 3, s, s), &Device::Cpu)
    }

    fn features(&self, imgs: &[&RgbImage], model_ns: Option<&AtomicU64>) -> Result<Vec<f32>, String> {
        let run = |flip: bool| -> Result<Vec<f32>, String> {
            let t = self.tensor(imgs, flip).map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            let f = self.net.embed(&t);
            if let Some(ns) = model_ns {
                ns.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            let f = f.map_err(|e| e.to_string())?;
            f.flatten_all().and_then(|f| f.to_vec1::<f32>()).map_err(|e| e.to_string())
        };
        let mut f = run(false)?;
        if self.p.flip {
            for (a, b) in f.iter_mut().zip(run(true)?) {
                *a += b;
            }
        }
        Ok(f)
    }

    /// L2-normalised embeddings of prepared 112×112 images, row-major.
    pub fn embed_images(&self, imgs: &[RgbImage]) -> Result<Vec<f32>, String> {
        self.embed_images_timed(imgs, None)
    }

    /// [`FaceEmbedder::embed_images`], adding the nanoseconds spent inside the encoder calls to
    /// `model_ns` when given.
    pub fn embed_images_timed(&self, imgs: &[RgbImage], model_ns: Option<&AtomicU64>) -> Result<Vec<f32>, String> {
        let chunk = if self.p.reproducible == Reproducible::Exact { 1 } else { self.p.batch };
        let mut out = Vec::with_capacity(imgs.len() * self.dim);
        for group in imgs.chunks(chunk) {
            let refs: Vec<&RgbImage> = group.iter().collect();
            out.extend(self.features(&refs, model_ns)?);
        }
        for row in out.chunks_mut(self.dim) {
            let norm = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v = (*v as f64 / norm) as f32);
            }
        }
        Ok(out)
    }
}
